// tenantfs_sqlclient: the SQLite client the integration tests fork/exec, one subcommand
// per workload. Plain SQLite (the system libsqlite3), so it behaves like any app.
//
// Every connection sets busy_timeout (10 s unless --busy-ms), so SQLITE_BUSY surfacing
// here is an error. Exit status: 0 ok, 1 SQLite error or failed check (one line on
// stderr saying what and where), 2 usage, 3 "should have been killed by now".
//
//   exec [--mode M] [--persist-wal] [--busy-ms N] DB SQL
//        run SQL (several statements allowed); print rows '|'-separated
//   bank-init DB MODE ACCOUNTS INITIAL
//   bank-write DB MODE WRITER TXNS ACCOUNTS [THINK_US]
//        TXNS transfers in BEGIN IMMEDIATE transactions, each also inserting a log row
//        (writer, seq); prints "committed N" after every successful COMMIT
//   bank-read DB MODE ACCOUNTS TOTAL STOPFILE MAXREADS
//        reads until STOPFILE exists (or MAXREADS / 300 s); every read checks the
//        account count and total in one snapshot and that the log never shrinks
//   hold-tx DB MODE ROWS READYFILE
//        BEGIN IMMEDIATE, rewrite a third of t's rows, insert ROWS big rows with a tiny
//        page cache (so pages spill into the db file / WAL), create READYFILE, then
//        wait to be killed
//   hold-open DB STOPFILE
//        open, read once (prints "open"), keep the connection until STOPFILE exists
//   digest DB TABLE
//        "rows N digest HEX" over every row of TABLE in rowid order
//   tenants-work ROOT WORKER STEP NT DBS TXNS ROWS
//        for tenants t = WORKER % STEP, +STEP, ... < NT: mkdir ROOT/tenant-t (EEXIST ok);
//        TXNS rounds over all those tenants' DBS databases, each round opening the
//        database, inserting ROWS rows in one transaction and closing it
//   tenants-check ROOT NT DBS WORKERS STEP TXNS ROWS
//        checks what tenants-work wrote (all workers): integrity, rows, values,
//        WAL databases still in WAL mode
#include <errno.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int g_busy_ms = 10000;
const char* const kModes[] = {"delete", "truncate", "persist", "wal"};

[[noreturn]] void Fail(const std::string& msg) {
  fprintf(stderr, "sqlclient: %s\n", msg.c_str());
  fflush(stderr);
  _exit(1);
}

[[noreturn]] void Usage(const char* what) {
  fprintf(stderr, "sqlclient: usage: %s\n", what);
  _exit(2);
}

[[noreturn]] void FailDb(sqlite3* db, const std::string& what) {
  Fail(what + ": " + sqlite3_errmsg(db) + " (extended code " +
       std::to_string(sqlite3_extended_errcode(db)) + ")");
}

bool FileExists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

sqlite3* Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    Fail("open " + path + ": " + msg + " (code " + std::to_string(rc) + ", errno " +
         std::to_string(db ? sqlite3_system_errno(db) : 0) + ")");
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, g_busy_ms);
  return db;
}

void Close(sqlite3* db, const std::string& path) {
  if (sqlite3_close(db) != SQLITE_OK) FailDb(db, "close " + path);
}

void Exec(sqlite3* db, const std::string& sql, const std::string& where) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "?";
    sqlite3_free(err);
    Fail(where + ": " + sql.substr(0, 120) + ": " + m + " (extended code " +
         std::to_string(sqlite3_extended_errcode(db)) + ", errno " +
         std::to_string(sqlite3_system_errno(db)) + ")");
  }
}

std::string QueryText(sqlite3* db, const std::string& sql, const std::string& where) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    FailDb(db, where + ": prepare " + sql);
  }
  std::string out;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    out = t ? reinterpret_cast<const char*>(t) : "";
    rc = sqlite3_step(st);
  }
  if (rc != SQLITE_DONE) {
    sqlite3_finalize(st);
    FailDb(db, where + ": " + sql);
  }
  sqlite3_finalize(st);
  return out;
}

// Sets the journal mode and checks that it took: a file system that cannot do WAL
// makes SQLite silently stay in a rollback mode.
void SetMode(sqlite3* db, const std::string& mode, const std::string& where) {
  std::string got = QueryText(db, "PRAGMA journal_mode=" + mode, where);
  for (char& c : got) c = static_cast<char>(tolower(c));
  if (got != mode) Fail(where + ": PRAGMA journal_mode=" + mode + " gave '" + got + "'");
  Exec(db, "PRAGMA synchronous=FULL", where);
}

sqlite3_stmt* Prepare(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    FailDb(db, "prepare " + sql);
  }
  return st;
}

// Steps a statement that returns no rows; returns the result code.
int StepDone(sqlite3_stmt* st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc;
}

long long ToLL(const char* s, const char* what) {
  char* end = nullptr;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || !end || *end) Fail(std::string("bad number for ") + what + ": " + s);
  return v;
}

void Touch(const std::string& path) {
  std::string tmp = path + ".tmp";
  FILE* f = fopen(tmp.c_str(), "w");
  if (!f) Fail("cannot create " + tmp);
  fputs("ready\n", f);
  fclose(f);
  if (rename(tmp.c_str(), path.c_str()) != 0) Fail("cannot rename to " + path);
}

// ------------------------------------------------------------------ exec

int CmdExec(std::vector<std::string> args) {
  std::string mode;
  bool persist_wal = false;
  while (!args.empty() && args[0].rfind("--", 0) == 0) {
    if (args[0] == "--mode" && args.size() > 1) {
      mode = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else if (args[0] == "--persist-wal") {
      persist_wal = true;
      args.erase(args.begin());
    } else if (args[0] == "--busy-ms" && args.size() > 1) {
      g_busy_ms = static_cast<int>(ToLL(args[1].c_str(), "--busy-ms"));
      args.erase(args.begin(), args.begin() + 2);
    } else {
      Usage("exec [--mode M] [--persist-wal] [--busy-ms N] DB SQL");
    }
  }
  if (args.size() != 2) Usage("exec [--mode M] [--persist-wal] [--busy-ms N] DB SQL");
  const std::string& path = args[0];
  sqlite3* db = Open(path);
  if (persist_wal) {
    int on = 1;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &on) != SQLITE_OK) {
      FailDb(db, "SQLITE_FCNTL_PERSIST_WAL");
    }
  }
  if (!mode.empty()) SetMode(db, mode, path);
  const char* sql = args[1].c_str();
  while (sql && *sql) {
    sqlite3_stmt* st = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) FailDb(db, path + ": prepare");
    sql = tail;
    if (!st) continue;  // whitespace or comment
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      int n = sqlite3_column_count(st);
      for (int i = 0; i < n; ++i) {
        const unsigned char* t = sqlite3_column_text(st, i);
        printf("%s%s", i ? "|" : "", t ? reinterpret_cast<const char*>(t) : "");
      }
      printf("\n");
    }
    if (rc != SQLITE_DONE) {
      std::string text = sqlite3_sql(st) ? sqlite3_sql(st) : "";
      sqlite3_finalize(st);
      FailDb(db, path + ": " + text.substr(0, 120));
    }
    sqlite3_finalize(st);
  }
  fflush(stdout);
  Close(db, path);
  return 0;
}

// ------------------------------------------------------------------ bank

int CmdBankInit(const std::vector<std::string>& a) {
  if (a.size() != 4) Usage("bank-init DB MODE ACCOUNTS INITIAL");
  const std::string& path = a[0];
  long long accounts = ToLL(a[2].c_str(), "ACCOUNTS");
  long long initial = ToLL(a[3].c_str(), "INITIAL");
  sqlite3* db = Open(path);
  SetMode(db, a[1], path);
  Exec(db,
       "BEGIN IMMEDIATE;"
       "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
       "CREATE TABLE log(id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT NULL,"
       " amount INTEGER NOT NULL, pad BLOB);"
       "CREATE INDEX log_writer ON log(writer, seq);",
       path);
  sqlite3_stmt* ins = Prepare(db, "INSERT INTO accounts(id, balance) VALUES(?, ?)");
  for (long long i = 0; i < accounts; ++i) {
    sqlite3_bind_int64(ins, 1, i);
    sqlite3_bind_int64(ins, 2, initial);
    if (StepDone(ins) != SQLITE_DONE) FailDb(db, path + ": insert account");
  }
  sqlite3_finalize(ins);
  Exec(db, "COMMIT", path);
  Close(db, path);
  printf("ok\n");
  return 0;
}

int CmdBankWrite(const std::vector<std::string>& a) {
  if (a.size() != 5 && a.size() != 6) Usage("bank-write DB MODE WRITER TXNS ACCOUNTS [THINK_US]");
  const std::string& path = a[0];
  long long writer = ToLL(a[2].c_str(), "WRITER");
  long long txns = ToLL(a[3].c_str(), "TXNS");
  long long accounts = ToLL(a[4].c_str(), "ACCOUNTS");
  long long think_us = a.size() == 6 ? ToLL(a[5].c_str(), "THINK_US") : 2000;
  sqlite3* db = Open(path);
  SetMode(db, a[1], path);
  std::mt19937_64 rng(static_cast<uint64_t>(writer) * 7919 + 17);
  sqlite3_stmt* begin = Prepare(db, "BEGIN IMMEDIATE");
  sqlite3_stmt* upd = Prepare(db, "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1");
  sqlite3_stmt* ins =
      Prepare(db, "INSERT INTO log(writer, seq, amount, pad) VALUES(?1, ?2, ?3, randomblob(?4))");
  sqlite3_stmt* commit = Prepare(db, "COMMIT");
  for (long long i = 1; i <= txns; ++i) {
    std::string where = path + ": writer " + std::to_string(writer) + " tx " + std::to_string(i);
    if (StepDone(begin) != SQLITE_DONE) FailDb(db, where + ": BEGIN IMMEDIATE");
    long long from = static_cast<long long>(rng() % accounts);
    long long to = (from + 1 + static_cast<long long>(rng() % (accounts - 1))) % accounts;
    long long amount = 1 + static_cast<long long>(rng() % 100);
    sqlite3_bind_int64(upd, 1, from);
    sqlite3_bind_int64(upd, 2, -amount);
    if (StepDone(upd) != SQLITE_DONE) FailDb(db, where + ": debit");
    sqlite3_bind_int64(upd, 1, to);
    sqlite3_bind_int64(upd, 2, amount);
    if (StepDone(upd) != SQLITE_DONE) FailDb(db, where + ": credit");
    sqlite3_bind_int64(ins, 1, writer);
    sqlite3_bind_int64(ins, 2, i);
    sqlite3_bind_int64(ins, 3, amount);
    sqlite3_bind_int64(ins, 4, static_cast<long long>(rng() % 1500));
    if (StepDone(ins) != SQLITE_DONE) FailDb(db, where + ": log insert");
    if (StepDone(commit) != SQLITE_DONE) FailDb(db, where + ": COMMIT");
    printf("committed %lld\n", i);
    fflush(stdout);
    if (think_us > 0) usleep(static_cast<useconds_t>(rng() % static_cast<uint64_t>(think_us)));
  }
  sqlite3_finalize(begin);
  sqlite3_finalize(upd);
  sqlite3_finalize(ins);
  sqlite3_finalize(commit);
  Close(db, path);
  return 0;
}

int CmdBankRead(const std::vector<std::string>& a) {
  if (a.size() != 6) Usage("bank-read DB MODE ACCOUNTS TOTAL STOPFILE MAXREADS");
  const std::string& path = a[0];
  long long accounts = ToLL(a[2].c_str(), "ACCOUNTS");
  long long total = ToLL(a[3].c_str(), "TOTAL");
  const std::string& stop = a[4];
  long long max_reads = ToLL(a[5].c_str(), "MAXREADS");
  sqlite3* db = Open(path);
  SetMode(db, a[1], path);
  sqlite3_stmt* q = Prepare(db,
                            "SELECT (SELECT count(*) FROM accounts), (SELECT sum(balance) FROM "
                            "accounts), (SELECT count(*) FROM log)");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  long long reads = 0, last_log = 0;
  while (reads < max_reads && std::chrono::steady_clock::now() < deadline) {
    if (reads > 0 && FileExists(stop)) break;
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
      sqlite3_reset(q);
      FailDb(db, path + ": read " + std::to_string(reads + 1));
    }
    long long n = sqlite3_column_int64(q, 0), sum = sqlite3_column_int64(q, 1),
              log = sqlite3_column_int64(q, 2);
    sqlite3_reset(q);
    ++reads;
    if (n != accounts || sum != total) {
      Fail(path + ": read " + std::to_string(reads) + " saw " + std::to_string(n) +
           " accounts totalling " + std::to_string(sum) + ", expected " + std::to_string(accounts) +
           " totalling " + std::to_string(total));
    }
    if (log < last_log) {
      Fail(path + ": read " + std::to_string(reads) + " saw " + std::to_string(log) +
           " log rows after an earlier read saw " + std::to_string(last_log) +
           " (went back in time)");
    }
    last_log = log;
    usleep(500);
  }
  sqlite3_finalize(q);
  Close(db, path);
  printf("reads %lld\n", reads);
  return 0;
}

// ------------------------------------------------------------------ crash helpers

int CmdHoldTx(const std::vector<std::string>& a) {
  if (a.size() != 4) Usage("hold-tx DB MODE ROWS READYFILE");
  const std::string& path = a[0];
  long long rows = ToLL(a[2].c_str(), "ROWS");
  sqlite3* db = Open(path);
  SetMode(db, a[1], path);
  Exec(db, "PRAGMA cache_size=8", path);  // tiny cache: dirty pages spill before COMMIT
  Exec(db, "BEGIN IMMEDIATE", path);
  Exec(db, "UPDATE t SET v = randomblob(length(v)) WHERE id % 3 = 0", path);
  sqlite3_stmt* ins = Prepare(db, "INSERT INTO t(v) VALUES(randomblob(3000))");
  for (long long i = 0; i < rows; ++i) {
    if (StepDone(ins) != SQLITE_DONE) FailDb(db, path + ": insert uncommitted row");
  }
  Exec(db, "DELETE FROM t WHERE id % 7 = 1 AND id < 1000000", path);
  Touch(a[3]);
  printf("holding\n");
  fflush(stdout);
  for (int i = 0; i < 1200; ++i) usleep(100000);  // 120 s, then give up
  fprintf(stderr, "sqlclient: hold-tx was not killed within 120 s\n");
  return 3;
}

int CmdHoldOpen(const std::vector<std::string>& a) {
  if (a.size() != 2) Usage("hold-open DB STOPFILE");
  const std::string& path = a[0];
  sqlite3* db = Open(path);
  QueryText(db, "SELECT count(*) FROM sqlite_master", path);
  printf("open\n");
  fflush(stdout);
  for (int i = 0; i < 3000 && !FileExists(a[1]); ++i) usleep(100000);  // <= 300 s
  QueryText(db, "SELECT count(*) FROM sqlite_master", path);
  Close(db, path);
  printf("closed\n");
  return 0;
}

int CmdDigest(const std::vector<std::string>& a) {
  if (a.size() != 2) Usage("digest DB TABLE");
  const std::string& path = a[0];
  sqlite3* db = Open(path);
  sqlite3_stmt* st = Prepare(db, "SELECT * FROM \"" + a[1] + "\" ORDER BY rowid");
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  auto mix = [&h](const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ULL;
    }
  };
  long long rows = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    ++rows;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      int type = sqlite3_column_type(st, i);
      mix(&type, sizeof type);
      const void* blob = sqlite3_column_blob(st, i);
      int n = sqlite3_column_bytes(st, i);
      mix(&n, sizeof n);
      if (blob) mix(blob, static_cast<size_t>(n));
    }
  }
  if (rc != SQLITE_DONE) FailDb(db, path + ": digest scan");
  sqlite3_finalize(st);
  Close(db, path);
  printf("rows %lld digest %016llx\n", rows, static_cast<unsigned long long>(h));
  return 0;
}

// ------------------------------------------------------------------ many tenants

std::string TenantName(long long t) {
  char b[32];
  snprintf(b, sizeof b, "tenant-%03lld", t);
  return b;
}
std::string DbName(long long d) { return "db-" + std::to_string(d) + ".sqlite"; }
long long Value(long long t, long long d, long long w, long long tx, long long k) {
  return ((t * 7 + d) * 13 + w) * 1000003 + tx * 1009 + k;
}

int CmdTenantsWork(const std::vector<std::string>& a) {
  if (a.size() != 7) Usage("tenants-work ROOT WORKER STEP NT DBS TXNS ROWS");
  const std::string& root = a[0];
  long long worker = ToLL(a[1].c_str(), "WORKER"), step = ToLL(a[2].c_str(), "STEP"),
            nt = ToLL(a[3].c_str(), "NT"), dbs = ToLL(a[4].c_str(), "DBS"),
            txns = ToLL(a[5].c_str(), "TXNS"), rows = ToLL(a[6].c_str(), "ROWS");
  std::vector<long long> tenants;
  for (long long t = worker % step; t < nt; t += step) tenants.push_back(t);
  for (long long t : tenants) {
    std::string dir = root + "/" + TenantName(t);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      Fail("mkdir " + dir + ": " + strerror(errno));
    }
  }
  long long done = 0;
  for (long long tx = 0; tx < txns; ++tx) {
    for (long long t : tenants) {
      for (long long d = 0; d < dbs; ++d) {
        std::string path = root + "/" + TenantName(t) + "/" + DbName(d);
        std::string where =
            path + " worker " + std::to_string(worker) + " round " + std::to_string(tx);
        sqlite3* db = Open(path);  // open per request, like the apps tenantfs serves
        SetMode(db, kModes[d % 4], where);
        Exec(db,
             "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, worker INTEGER, tx INTEGER,"
             " k INTEGER, v INTEGER, note TEXT)",
             where);
        Exec(db, "BEGIN IMMEDIATE", where);
        sqlite3_stmt* ins = Prepare(
            db,
            "INSERT INTO items(worker, tx, k, v, note) VALUES(?, ?, ?, ?, printf('%s/%d', ?, ?))");
        for (long long k = 0; k < rows; ++k) {
          sqlite3_bind_int64(ins, 1, worker);
          sqlite3_bind_int64(ins, 2, tx);
          sqlite3_bind_int64(ins, 3, k);
          sqlite3_bind_int64(ins, 4, Value(t, d, worker, tx, k));
          std::string tn = TenantName(t);
          sqlite3_bind_text(ins, 5, tn.c_str(), -1, SQLITE_TRANSIENT);
          sqlite3_bind_int64(ins, 6, d);
          if (StepDone(ins) != SQLITE_DONE) FailDb(db, where + ": insert");
        }
        sqlite3_finalize(ins);
        Exec(db, "COMMIT", where);
        Close(db, where);
        ++done;
      }
    }
  }
  printf("done %lld transactions\n", done);
  return 0;
}

int CmdTenantsCheck(const std::vector<std::string>& a) {
  if (a.size() != 7) Usage("tenants-check ROOT NT DBS WORKERS STEP TXNS ROWS");
  const std::string& root = a[0];
  long long nt = ToLL(a[1].c_str(), "NT"), dbs = ToLL(a[2].c_str(), "DBS"),
            workers = ToLL(a[3].c_str(), "WORKERS"), step = ToLL(a[4].c_str(), "STEP"),
            txns = ToLL(a[5].c_str(), "TXNS"), rows = ToLL(a[6].c_str(), "ROWS");
  int problems = 0;
  auto problem = [&problems](const std::string& m) {
    if (++problems <= 20) fprintf(stderr, "sqlclient: %s\n", m.c_str());
  };
  long long checked = 0;
  for (long long t = 0; t < nt; ++t) {
    for (long long d = 0; d < dbs; ++d) {
      std::string path = root + "/" + TenantName(t) + "/" + DbName(d);
      if (!FileExists(path)) {
        problem(path + ": missing");
        continue;
      }
      sqlite3* db = Open(path);
      std::string ic = QueryText(db, "PRAGMA integrity_check", path);
      if (ic != "ok") problem(path + ": integrity_check: " + ic);
      std::string mode = QueryText(db, "PRAGMA journal_mode", path);
      if ((d % 4 == 3) != (mode == "wal")) problem(path + ": journal_mode is " + mode);
      for (long long w = 0; w < workers; ++w) {
        bool touches = (w % step) == (t % step);
        long long want_n = touches ? txns * rows : 0, want_sum = 0;
        if (touches) {
          for (long long tx = 0; tx < txns; ++tx) {
            for (long long k = 0; k < rows; ++k) want_sum += Value(t, d, w, tx, k);
          }
        }
        std::string got = QueryText(db,
                                    "SELECT count(*) || '|' || coalesce(sum(v), 0) FROM items "
                                    "WHERE worker = " +
                                        std::to_string(w),
                                    path);
        std::string want = std::to_string(want_n) + "|" + std::to_string(want_sum);
        if (got != want) {
          problem(path + ": worker " + std::to_string(w) + " rows|sum " + got + ", expected " +
                  want);
        }
      }
      std::string total = QueryText(db, "SELECT count(*) FROM items", path);
      long long touching = 0;
      for (long long w = 0; w < workers; ++w) touching += (w % step) == (t % step);
      if (total != std::to_string(touching * txns * rows)) {
        problem(path + ": " + total + " rows in all, expected " +
                std::to_string(touching * txns * rows));
      }
      Close(db, path);
      ++checked;
    }
  }
  printf("checked %lld databases, %d problems\n", checked, problems);
  return problems ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("sqlclient SUBCOMMAND ARGS... (see sqlclient.cc)");
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "exec") return CmdExec(args);
  if (cmd == "bank-init") return CmdBankInit(args);
  if (cmd == "bank-write") return CmdBankWrite(args);
  if (cmd == "bank-read") return CmdBankRead(args);
  if (cmd == "hold-tx") return CmdHoldTx(args);
  if (cmd == "hold-open") return CmdHoldOpen(args);
  if (cmd == "digest") return CmdDigest(args);
  if (cmd == "tenants-work") return CmdTenantsWork(args);
  if (cmd == "tenants-check") return CmdTenantsCheck(args);
  Usage(("unknown subcommand " + cmd).c_str());
}

// tenantfs_capture_client: the seeded random SQLite workload the capture tests
// (capture_test.cc) run in several processes at once. Plain system SQLite.
//
// Exit status: 0 ok, 1 SQLite error (one line on stderr saying what and where),
// 2 usage. Every connection waits for locks (a busy handler with short sleeps, up to
// ~60 s), so SQLITE_BUSY surfacing is an error.
//
//   init DB MODE [--incremental] [--page-size N]
//        set the journal mode (and auto_vacuum=INCREMENTAL / a page size before the
//        first table), create the tables acks(client, seq) and data(...); prints "ok"
//   work DB MODE CLIENT SEED TXNS SECONDS [--incremental] [--page-size-changes]
//        [--sync full|normal] [--no-maintenance] [--pos-check] [--default-cache]
//        random transactions until TXNS counted commits or SECONDS have passed:
//          * counted write transactions (BEGIN IMMEDIATE ... COMMIT). Each inserts the
//            row acks(CLIENT, n) for its number n, so it always changes the database,
//            plus random inserts (small rows and multi-page randomblob(5000..20000)
//            rows), updates, deletes, big deletes, bulk inserts, CREATE/DROP TABLE and
//            INDEX. After its COMMIT returned SQLITE_OK the client prints
//            "committed n" (flushed): acknowledged.
//          * explicit ROLLBACKs of transactions that wrote (sometimes with a tiny page
//            cache, so pages spill to the database file / WAL before the rollback).
//            "risky" ones (rollback mode, spilling, free-list pages present) may leave
//            reused free-list pages with new bytes (SQLite does not journal them)
//          * read-only transactions (BEGIN; SELECTs; COMMIT)
//          * maintenance, not counted ("maint m"): VACUUM, PRAGMA incremental_vacuum
//            (with --incremental), `PRAGMA page_size=X; VACUUM` (--page-size-changes,
//            rollback modes). Each may or may not change bytes.
//          * checkpoints in WAL mode ("ckpt k"): never a change of the database
//          * closing and reopening the connection
//        ends with "done counted=N maint=M ckpt=K rollbacks=R reads=Q reopens=O risky=S".
//        --pos-check (a single client only): reads DB-pos after every operation and
//        prints "posjump op=KIND txid A -> B (expected ...)" whenever the TXID did not
//        move by exactly one for a counted commit, by at most one for maintenance, and
//        not at all for anything else; then "posjumps N" at the end.
//        --default-cache: keep SQLite's default page cache (no spilling transactions),
//        to look at other behaviour past a known spill problem.
#include <errno.h>
#include <sqlite3.h>
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

std::string g_where = "capture_client";

[[noreturn]] void Fail(const std::string& msg) {
  fflush(stdout);
  fprintf(stderr, "capture_client: %s: %s\n", g_where.c_str(), msg.c_str());
  fflush(stderr);
  _exit(1);
}

[[noreturn]] void Usage(const char* what) {
  fprintf(stderr, "capture_client: usage: %s\n", what);
  _exit(2);
}

long long ToLL(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  long long v = strtoll(s.c_str(), &end, 10);
  if (errno || !end || *end || s.empty()) Fail(std::string("bad number for ") + what + ": " + s);
  return v;
}

std::string ErrText(sqlite3* db) {
  return std::string(sqlite3_errmsg(db)) + " (extended code " +
         std::to_string(sqlite3_extended_errcode(db)) + ", errno " +
         std::to_string(sqlite3_system_errno(db)) + ")";
}

// CAPTURE_CLIENT_TRACE=1: every statement on stderr with the wall-clock time (to line
// up with the daemon's log when hunting a capture bug).
void Trace(const std::string& sql) {
  static const bool on = getenv("CAPTURE_CLIENT_TRACE") && *getenv("CAPTURE_CLIENT_TRACE") == '1';
  if (!on) return;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch()).count();
  fprintf(stderr, "%lld.%03lld %d %s\n", static_cast<long long>(ms / 1000), static_cast<long long>(ms % 1000),
          static_cast<int>(getpid()), sql.substr(0, 200).c_str());
}

void Exec(sqlite3* db, const std::string& sql) {
  Trace(sql);
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "?";
    sqlite3_free(err);
    Fail(sql.substr(0, 160) + ": " + m + " (extended code " +
         std::to_string(sqlite3_extended_errcode(db)) + ", errno " +
         std::to_string(sqlite3_system_errno(db)) + ")");
  }
}

std::string Query(sqlite3* db, const std::string& sql) {
  Trace(sql);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    Fail("prepare " + sql + ": " + ErrText(db));
  }
  std::string out;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    if (!out.empty()) out += "\n";
    out += t ? reinterpret_cast<const char*>(t) : "";
  }
  if (rc != SQLITE_DONE) {
    std::string e = ErrText(db);
    sqlite3_finalize(st);
    Fail(sql + ": " + e);
  }
  sqlite3_finalize(st);
  return out;
}

// A fair busy handler: SQLite's default one sleeps up to 100 ms between tries, so with
// three processes committing back to back one of them can starve past any timeout.
// Short, jittered sleeps; gives up (SQLITE_BUSY) after 60 s.
int BusyHandler(void*, int tries) {
  static thread_local std::mt19937 jitter(static_cast<unsigned>(getpid()));
  if (tries >= 60000) return 0;
  usleep(200 + jitter() % 1000);
  return 1;
}

sqlite3* Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    Fail("open " + path + ": " + msg + " (code " + std::to_string(rc) + ")");
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_handler(db, BusyHandler, nullptr);
  return db;
}

void SetMode(sqlite3* db, const std::string& mode) {
  std::string got = Query(db, "PRAGMA journal_mode=" + mode);
  for (char& c : got) c = static_cast<char>(tolower(c));
  if (got != mode) Fail("PRAGMA journal_mode=" + mode + " gave '" + got + "'");
}

void Close(sqlite3* db) {
  if (sqlite3_close(db) != SQLITE_OK) Fail("close: " + ErrText(db));
}

// "WITH RECURSIVE c(value) AS (1..n) ": the prefix of a statement reading c.
std::string Series(uint64_t n) {
  return "WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM c WHERE value < " +
         std::to_string(n) + ") ";
}

// ------------------------------------------------------------------ init

int CmdInit(std::vector<std::string> a) {
  bool incremental = false;
  long long page_size = 0;
  std::vector<std::string> pos;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--incremental") {
      incremental = true;
    } else if (a[i] == "--page-size" && i + 1 < a.size()) {
      page_size = ToLL(a[++i], "--page-size");
    } else {
      pos.push_back(a[i]);
    }
  }
  if (pos.size() != 2) Usage("init DB MODE [--incremental] [--page-size N]");
  const std::string& path = pos[0];
  g_where = "init " + path;
  sqlite3* db = Open(path);
  if (page_size) Exec(db, "PRAGMA page_size=" + std::to_string(page_size));
  if (incremental) Exec(db, "PRAGMA auto_vacuum=INCREMENTAL");
  SetMode(db, pos[1]);
  Exec(db, "PRAGMA synchronous=FULL");
  Exec(db,
       "BEGIN IMMEDIATE;"
       "CREATE TABLE IF NOT EXISTS acks(client INTEGER NOT NULL, seq INTEGER NOT NULL,"
       " PRIMARY KEY(client, seq)) WITHOUT ROWID;"
       "CREATE TABLE IF NOT EXISTS data(id INTEGER PRIMARY KEY, client INTEGER NOT NULL,"
       " k INTEGER NOT NULL, v BLOB, s TEXT);"
       "COMMIT;");
  if (incremental && Query(db, "PRAGMA auto_vacuum") != "2") {
    Fail("auto_vacuum did not become INCREMENTAL");
  }
  Close(db);
  printf("ok\n");
  return 0;
}

// ------------------------------------------------------------------ work

struct Work {
  std::string path, mode;
  long long client = 0;
  uint64_t seed = 0;
  long long txns = 0;
  double seconds = 0;
  bool incremental = false;
  bool page_size_changes = false;
  bool maintenance = true;
  bool default_cache = false;  // --default-cache: never shrink the page cache (no spills)
  std::string sync = "full";

  std::mt19937_64 rng;
  sqlite3* db = nullptr;
  long long counted = 0, maint = 0, ckpt = 0, rollbacks = 0, reads = 0, reopens = 0;
  long long risky_rollbacks = 0;
  bool last_rollback_risky = false;
  int small_cache = 0;

  uint64_t R(uint64_t n) { return n ? rng() % n : 0; }
  bool P(int percent) { return static_cast<int>(R(100)) < percent; }
  std::string C() const { return std::to_string(client); }

  void OpenDb() {
    Trace("open");
    db = Open(path);
    SetMode(db, mode);
    Exec(db, "PRAGMA synchronous=" + sync);
    small_cache = !default_cache && P(30);
    Exec(db, small_cache ? "PRAGMA cache_size=8" : "PRAGMA cache_size=-2000");
    if (P(50)) Exec(db, "PRAGMA journal_size_limit=65536");
  }

  // One random data-changing statement of this client's own rows (never acks).
  void RandomWrite() {
    std::string c = C();
    switch (R(12)) {
      case 0:
      case 1:
      case 2:  // a small row
        Exec(db, "INSERT INTO data(client, k, v, s) VALUES(" + c + ", " + std::to_string(R(1000)) +
                     ", randomblob(" + std::to_string(R(300)) + "), 'small-' || hex(randomblob(8)))");
        break;
      case 3:
      case 4:  // a multi-page row
        Exec(db, "INSERT INTO data(client, k, v, s) VALUES(" + c + ", " + std::to_string(R(1000)) +
                     ", randomblob(" + std::to_string(5000 + R(15001)) + "), 'big')");
        break;
      case 5:
      case 6:  // updates, some growing a row across pages
        Exec(db, "UPDATE data SET v = randomblob(" + std::to_string(R(2) ? R(400) : 5000 + R(15001)) +
                     "), s = 'u' || hex(randomblob(4)) WHERE client = " + c + " AND k % 7 = " +
                     std::to_string(R(7)));
        break;
      case 7:  // deletes
        Exec(db, "DELETE FROM data WHERE client = " + c + " AND k % 11 = " + std::to_string(R(11)));
        break;
      case 8: {  // schema: a table of this client's, with an index
        std::string t = "tmp_" + c + "_" + std::to_string(R(3));
        Exec(db, "CREATE TABLE IF NOT EXISTS " + t + "(x INTEGER, y BLOB);" + Series(1 + R(40)) +
                     "INSERT INTO " + t + " SELECT value, randomblob(100 + value) FROM c;"
                     "CREATE INDEX IF NOT EXISTS " + t + "_x ON " + t + "(x)");
        break;
      }
      case 9: {  // schema: drop a table / an index of this client's
        std::string t = "tmp_" + c + "_" + std::to_string(R(3));
        Exec(db, P(50) ? "DROP TABLE IF EXISTS " + t : "DROP INDEX IF EXISTS " + t + "_x");
        break;
      }
      case 10:  // an index on the shared table, per client
        Exec(db, P(50) ? "CREATE INDEX IF NOT EXISTS data_k_" + c + " ON data(k, s)"
                       : "DROP INDEX IF EXISTS data_k_" + c);
        break;
      case 11:  // bulk insert: grow the file
        Exec(db, Series(5 + R(20)) + "INSERT INTO data(client, k, v, s) SELECT " + c +
                     ", value, randomblob(" + std::to_string(200 + R(3000)) + "), 'bulk' FROM c");
        break;
    }
  }

  void CountedWrite() {
    Exec(db, "BEGIN IMMEDIATE");
    long long n = counted + 1;
    Exec(db, "INSERT INTO acks(client, seq) VALUES(" + C() + ", " + std::to_string(n) + ")");
    int ops = static_cast<int>(R(5));
    for (int i = 0; i < ops; ++i) RandomWrite();
    // Keep the file from growing without bound: a big delete once this client holds much.
    long long mine = ToLL(Query(db, "SELECT coalesce(sum(length(v)), 0) FROM data WHERE client = " + C()),
                          "bytes");
    if (mine > 400000 || P(3)) Exec(db, "DELETE FROM data WHERE client = " + C() + " AND k % 4 != 0");
    Exec(db, "COMMIT");
    counted = n;
    printf("committed %lld\n", counted);
    fflush(stdout);
  }

  // A rollback-mode transaction that spills pages to the database file before its
  // ROLLBACK may have written free-list pages it reused: SQLite does not journal their
  // (meaningless) old content, so the rollback leaves them with new bytes. Such a
  // rollback changes the file, so it may take a TXID; it is counted as "risky".
  void RolledBack() {
    Exec(db, "BEGIN IMMEDIATE");
    bool tiny = !default_cache && P(50);
    if (tiny) Exec(db, "PRAGMA cache_size=4");  // spill pages before the rollback
    bool risky = (tiny || small_cache) && mode != "wal" && Query(db, "PRAGMA freelist_count") != "0";
    int ops = 1 + static_cast<int>(R(4));
    for (int i = 0; i < ops; ++i) RandomWrite();
    if (P(50)) {
      Exec(db, Series(40) + "INSERT INTO data(client, k, v, s) SELECT " + C() +
                   ", value, randomblob(9000), 'doomed' FROM c");
    }
    Exec(db, "ROLLBACK");
    Exec(db, small_cache ? "PRAGMA cache_size=8" : "PRAGMA cache_size=-2000");
    ++rollbacks;
    if (risky) ++risky_rollbacks;
    last_rollback_risky = risky;
  }

  void ReadOnly() {
    Exec(db, "BEGIN");
    Query(db, "SELECT count(*), coalesce(sum(length(v)), 0) FROM data");
    Query(db, "SELECT count(*) FROM acks WHERE client = " + C());
    Query(db, "SELECT name FROM sqlite_schema ORDER BY name");
    Exec(db, "COMMIT");
    ++reads;
  }

  void Maintenance() {
    uint64_t what = R(10);
    if (incremental && what < 5) {
      Exec(db, "PRAGMA incremental_vacuum(" + std::to_string(R(2) ? 0 : 1 + R(50)) + ")");
    } else if (page_size_changes && mode != "wal" && what < 8) {
      static const int kSizes[] = {1024, 2048, 4096, 8192};
      Exec(db, "PRAGMA page_size=" + std::to_string(kSizes[R(4)]));
      Exec(db, "VACUUM");
    } else {
      Exec(db, "VACUUM");
    }
    ++maint;
    printf("maint %lld\n", maint);
    fflush(stdout);
  }

  void Checkpoint() {
    static const char* kKinds[] = {"PASSIVE", "FULL", "RESTART", "TRUNCATE"};
    Query(db, std::string("PRAGMA wal_checkpoint(") + kKinds[R(4)] + ")");
    ++ckpt;
    printf("ckpt %lld\n", ckpt);
    fflush(stdout);
  }

  // --pos-check (one client only): the TXID in DB-pos after every operation must have
  // moved by exactly one for a counted commit, by zero or one for maintenance, and not at
  // all otherwise; a violation is printed as "posjump ..." (and counted).
  bool pos_check = false;
  long long pos_jumps = 0;
  unsigned long long last_txid = 0;
  unsigned long long ReadTxid() {
    FILE* f = fopen((path + "-pos").c_str(), "r");
    if (!f) Fail("open " + path + "-pos: " + strerror(errno));
    unsigned long long txid = 0, sum = 0;
    if (fscanf(f, "%16llx/%16llx", &txid, &sum) != 2) Fail("bad " + path + "-pos");
    fclose(f);
    return txid;
  }
  void CheckPos(const char* op, unsigned long long min_move, unsigned long long max_move) {
    if (!pos_check) return;
    unsigned long long now = ReadTxid();
    if (now < last_txid + min_move || now > last_txid + max_move) {
      ++pos_jumps;
      printf("posjump op=%s txid %llu -> %llu (expected +%llu..+%llu)\n", op, last_txid, now, min_move, max_move);
      fflush(stdout);
    }
    last_txid = now;
  }

  int Run() {
    rng.seed(seed * 1000003 + static_cast<uint64_t>(client));
    g_where = "work " + path + " client " + C() + " seed " + std::to_string(seed);
    OpenDb();
    if (pos_check) last_txid = ReadTxid();
    auto end = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
    while (counted < txns && std::chrono::steady_clock::now() < end) {
      uint64_t r = R(1000);
      if (r < 760) {
        CountedWrite();
        CheckPos("write", 1, 1);
      } else if (r < 840) {
        RolledBack();
        CheckPos(last_rollback_risky ? "risky-rollback" : "rollback", 0, last_rollback_risky ? 1 : 0);
      } else if (r < 940) {
        ReadOnly();
        CheckPos("read", 0, 0);
      } else if (r < 955) {
        if (maintenance) {
          Maintenance();
          CheckPos("maintenance", 0, 1);
        } else {
          CountedWrite();
          CheckPos("write", 1, 1);
        }
      } else if (r < 975 && mode == "wal") {
        Checkpoint();
        CheckPos("checkpoint", 0, 0);
      } else {
        Trace("close");
        Close(db);
        ++reopens;
        OpenDb();
        CheckPos("reopen", 0, 0);
      }
    }
    Close(db);
    printf("done counted=%lld maint=%lld ckpt=%lld rollbacks=%lld reads=%lld reopens=%lld risky=%lld\n",
           counted, maint, ckpt, rollbacks, reads, reopens, risky_rollbacks);
    if (pos_check) printf("posjumps %lld\n", pos_jumps);
    fflush(stdout);
    return 0;
  }
};

int CmdWork(std::vector<std::string> a) {
  const char* usage =
      "work DB MODE CLIENT SEED TXNS SECONDS [--incremental] [--page-size-changes] "
      "[--sync full|normal] [--no-maintenance] [--pos-check] [--default-cache]";
  Work w;
  std::vector<std::string> pos;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--incremental") {
      w.incremental = true;
    } else if (a[i] == "--page-size-changes") {
      w.page_size_changes = true;
    } else if (a[i] == "--default-cache") {
      w.default_cache = true;
    } else if (a[i] == "--pos-check") {
      w.pos_check = true;
    } else if (a[i] == "--no-maintenance") {
      w.maintenance = false;
    } else if (a[i] == "--sync" && i + 1 < a.size()) {
      w.sync = a[++i];
    } else if (a[i].rfind("--", 0) == 0) {
      Usage(usage);
    } else {
      pos.push_back(a[i]);
    }
  }
  if (pos.size() != 6) Usage(usage);
  w.path = pos[0];
  w.mode = pos[1];
  w.client = ToLL(pos[2], "CLIENT");
  w.seed = static_cast<uint64_t>(ToLL(pos[3], "SEED"));
  w.txns = ToLL(pos[4], "TXNS");
  w.seconds = static_cast<double>(ToLL(pos[5], "SECONDS"));
  return w.Run();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("capture_client init|work ...");
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "init") return CmdInit(args);
  if (cmd == "work") return CmdWork(args);
  Usage(("unknown subcommand " + cmd).c_str());
}

// tenantfs_many_dbs_client: the SQLite client of many_dbs_test, one subcommand per role.
// Plain SQLite (the system libsqlite3), like any app. Databases are
// ROOT/tenant-TTT/db-DDDD.sqlite; database d is in WAL mode when d % 4 == 3, else DELETE.
// Each holds kv(1, "<tenant>/<db>") -- its known row -- and a hits table written by
// `work`. Exit status: 0 ok, 1 SQLite error or failed check (stderr says what and
// where), 2 usage.
//
//   create ROOT NT NDB
//        natively (ROOT is not the mount): make the tenants and databases
//   work ROOT NT NDB CLIENT REQUESTS WRITE_PCT HOLD DEADLINE_S
//        REQUESTS requests on random databases, each checking the known row; WRITE_PCT %
//        of them also insert hits(client, seq) in a BEGIN IMMEDIATE transaction. HOLD = 0:
//        every request opens and closes its database. HOLD > 0: the client also keeps HOLD
//        connections open across requests, serves every other request on one of them and
//        replaces one every 16 requests. Stops early at DEADLINE_S. Prints
//        "requests R writes W held H".
//   check ROOT NT NDB CLIENTS
//        every database: integrity_check, the known row, and per client the count and
//        sum of seq of its hits; prints "client C count N sum S" per client, then
//        "checked N databases, P problems"
//   hold-write DB ROWS READYFILE GOFILE
//        BEGIN IMMEDIATE, insert ROWS 2016-byte rows into big (a tiny page cache, so pages
//        spill to the database file or WAL before COMMIT), create READYFILE, wait for
//        GOFILE (<= 120 s), insert one more row, COMMIT; prints "committed"
#include <errno.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Fail(const std::string& msg) {
  fprintf(stderr, "many_dbs_client: %s\n", msg.c_str());
  fflush(stderr);
  _exit(1);
}

[[noreturn]] void Usage(const char* what) {
  fprintf(stderr, "many_dbs_client: usage: %s\n", what);
  _exit(2);
}

[[noreturn]] void FailDb(sqlite3* db, const std::string& what) {
  Fail(what + ": " + sqlite3_errmsg(db) + " (extended code " +
       std::to_string(sqlite3_extended_errcode(db)) + ", errno " +
       std::to_string(sqlite3_system_errno(db)) + ")");
}

long long ToLL(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  long long v = strtoll(s.c_str(), &end, 10);
  if (errno || !end || *end) Fail(std::string("bad number for ") + what + ": " + s);
  return v;
}

bool FileExists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string TenantName(long long t) {
  char b[32];
  snprintf(b, sizeof b, "tenant-%03lld", t);
  return b;
}
std::string DbName(long long d) {
  char b[32];
  snprintf(b, sizeof b, "db-%04lld.sqlite", d);
  return b;
}
std::string Known(long long t, long long d) { return TenantName(t) + "/" + DbName(d); }

sqlite3* Open(const std::string& path, int flags = SQLITE_OPEN_READWRITE) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    Fail("open " + path + ": " + msg + " (code " + std::to_string(rc) + ", errno " +
         std::to_string(db ? sqlite3_system_errno(db) : 0) + ")");
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 10000);
  return db;
}

void Close(sqlite3* db, const std::string& where) {
  if (sqlite3_close(db) != SQLITE_OK) FailDb(db, "close " + where);
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

// First column of the first row as text ("" when there is no row).
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

void Touch(const std::string& path) {
  std::string tmp = path + ".tmp";
  FILE* f = fopen(tmp.c_str(), "w");
  if (!f) Fail("cannot create " + tmp);
  fputs("ready\n", f);
  fclose(f);
  if (rename(tmp.c_str(), path.c_str()) != 0) Fail("cannot rename to " + path);
}

// ------------------------------------------------------------------ create

int CmdCreate(const std::vector<std::string>& a) {
  if (a.size() != 3) Usage("create ROOT NT NDB");
  const std::string& root = a[0];
  long long nt = ToLL(a[1], "NT"), ndb = ToLL(a[2], "NDB");
  long long made = 0;
  for (long long t = 0; t < nt; ++t) {
    std::string dir = root + "/" + TenantName(t);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      Fail("mkdir " + dir + ": " + strerror(errno));
    }
    for (long long d = 0; d < ndb; ++d) {
      std::string path = dir + "/" + DbName(d);
      sqlite3* db = Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
      // Native files in a scratch dir: durability does not matter here, speed does.
      Exec(db, "PRAGMA synchronous=OFF", path);
      if (d % 4 == 3) {
        std::string mode = QueryText(db, "PRAGMA journal_mode=WAL", path);
        if (mode != "wal") Fail(path + ": journal_mode=WAL gave " + mode);
      }
      Exec(db,
           "BEGIN;"
           "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL);"
           "CREATE TABLE hits(id INTEGER PRIMARY KEY, client INTEGER NOT NULL,"
           " seq INTEGER NOT NULL);"
           "INSERT INTO kv VALUES(1, '" +
               Known(t, d) + "');COMMIT",
           path);
      Close(db, path);
      ++made;
    }
  }
  printf("created %lld\n", made);
  return 0;
}

// ------------------------------------------------------------------ work

struct Conn {
  sqlite3* db = nullptr;
  long long t = 0, d = 0;
  std::string path;
};

class Worker {
 public:
  Worker(std::string root, long long nt, long long ndb, long long client, long long write_pct)
      : root_(std::move(root)),
        nt_(nt),
        ndb_(ndb),
        client_(client),
        write_pct_(write_pct),
        rng_(static_cast<uint64_t>(client) * 1000003 + 7) {}

  Conn OpenRandom() {
    Conn c;
    c.t = static_cast<long long>(rng_() % static_cast<uint64_t>(nt_));
    c.d = static_cast<long long>(rng_() % static_cast<uint64_t>(ndb_));
    c.path = root_ + "/" + TenantName(c.t) + "/" + DbName(c.d);
    c.db = Open(c.path);
    return c;
  }

  // One request on an open connection: the known row, and maybe a write.
  void Serve(Conn& c) {
    std::string where =
        c.path + " client " + std::to_string(client_) + " request " + std::to_string(requests_ + 1);
    std::string got = QueryText(c.db, "SELECT v FROM kv WHERE k = 1", where);
    if (got != Known(c.t, c.d)) {
      Fail(where + ": known row is '" + got + "', expected '" + Known(c.t, c.d) + "'");
    }
    if (static_cast<long long>(rng_() % 100) < write_pct_) {
      Exec(c.db, "BEGIN IMMEDIATE", where);
      Exec(c.db,
           "INSERT INTO hits(client, seq) VALUES(" + std::to_string(client_) + ", " +
               std::to_string(writes_ + 1) + ")",
           where);
      Exec(c.db, "COMMIT", where);
      ++writes_;  // acknowledged: COMMIT returned OK
    }
    ++requests_;
  }

  uint64_t Next() { return rng_(); }
  long long requests() const { return requests_; }
  long long writes() const { return writes_; }

 private:
  const std::string root_;
  const long long nt_, ndb_, client_, write_pct_;
  std::mt19937_64 rng_;
  long long requests_ = 0, writes_ = 0;
};

int CmdWork(const std::vector<std::string>& a) {
  const char* usage = "work ROOT NT NDB CLIENT REQUESTS WRITE_PCT HOLD DEADLINE_S";
  if (a.size() != 8) Usage(usage);
  long long nt = ToLL(a[1], "NT"), ndb = ToLL(a[2], "NDB"), client = ToLL(a[3], "CLIENT"),
            requests = ToLL(a[4], "REQUESTS"), write_pct = ToLL(a[5], "WRITE_PCT"),
            hold = ToLL(a[6], "HOLD"), deadline_s = ToLL(a[7], "DEADLINE_S");
  Worker w(a[0], nt, ndb, client, write_pct);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  std::vector<Conn> held;
  for (long long i = 0; i < hold; ++i) held.push_back(w.OpenRandom());
  long long held_served = 0;
  for (long long i = 0; i < requests && std::chrono::steady_clock::now() < deadline; ++i) {
    if (!held.empty() && i % 2 == 1) {
      Conn& c = held[w.Next() % held.size()];
      w.Serve(c);
      ++held_served;
      if (i % 16 == 15) {  // the app drops one long-lived connection and opens another
        size_t k = w.Next() % held.size();
        Close(held[k].db, held[k].path);
        held[k] = w.OpenRandom();
      }
    } else {
      Conn c = w.OpenRandom();  // open per request
      w.Serve(c);
      Close(c.db, c.path);
    }
  }
  for (Conn& c : held) Close(c.db, c.path);
  printf("requests %lld writes %lld held %lld\n", w.requests(), w.writes(), held_served);
  return 0;
}

// ------------------------------------------------------------------ check

int CmdCheck(const std::vector<std::string>& a) {
  if (a.size() != 4) Usage("check ROOT NT NDB CLIENTS");
  const std::string& root = a[0];
  long long nt = ToLL(a[1], "NT"), ndb = ToLL(a[2], "NDB"), clients = ToLL(a[3], "CLIENTS");
  std::map<long long, std::pair<long long, long long>> per_client;  // count, sum(seq)
  int problems = 0;
  auto problem = [&problems](const std::string& m) {
    if (++problems <= 20) fprintf(stderr, "many_dbs_client: %s\n", m.c_str());
  };
  long long checked = 0;
  for (long long t = 0; t < nt; ++t) {
    for (long long d = 0; d < ndb; ++d) {
      std::string path = root + "/" + TenantName(t) + "/" + DbName(d);
      if (!FileExists(path)) {
        problem(path + ": missing");
        continue;
      }
      sqlite3* db = Open(path);
      std::string ic = QueryText(db, "PRAGMA integrity_check", path);
      if (ic != "ok") problem(path + ": integrity_check: " + ic);
      std::string v = QueryText(db, "SELECT v FROM kv WHERE k = 1", path);
      if (v != Known(t, d)) problem(path + ": known row '" + v + "'");
      std::string mode = QueryText(db, "PRAGMA journal_mode", path);
      if ((d % 4 == 3) != (mode == "wal")) problem(path + ": journal_mode is " + mode);
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT client, count(*), sum(seq) FROM hits GROUP BY client", -1,
                             &st, nullptr) != SQLITE_OK) {
        FailDb(db, path + ": prepare hits summary");
      }
      int rc;
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        long long c = sqlite3_column_int64(st, 0);
        if (c < 0 || c >= clients)
          problem(path + ": hits from unknown client " + std::to_string(c));
        per_client[c].first += sqlite3_column_int64(st, 1);
        per_client[c].second += sqlite3_column_int64(st, 2);
      }
      if (rc != SQLITE_DONE) FailDb(db, path + ": hits summary");
      sqlite3_finalize(st);
      Close(db, path);
      ++checked;
    }
  }
  for (long long c = 0; c < clients; ++c) {
    printf("client %lld count %lld sum %lld\n", c, per_client[c].first, per_client[c].second);
  }
  printf("checked %lld databases, %d problems\n", checked, problems);
  return problems ? 1 : 0;
}

// ------------------------------------------------------------------ hold-write

int CmdHoldWrite(const std::vector<std::string>& a) {
  if (a.size() != 4) Usage("hold-write DB ROWS READYFILE GOFILE");
  const std::string& path = a[0];
  long long rows = ToLL(a[1], "ROWS");
  sqlite3* db = Open(path);
  Exec(db, "PRAGMA synchronous=FULL; PRAGMA cache_size=4", path);
  Exec(db, "CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, tag TEXT, v BLOB)", path);
  Exec(db, "BEGIN IMMEDIATE", path);
  for (long long i = 0; i < rows; ++i) {
    Exec(db, "INSERT INTO big(tag, v) VALUES('before-" + std::to_string(i) + "', randomblob(2016))",
         path);
  }
  Touch(a[2]);
  printf("holding\n");
  fflush(stdout);
  bool go = false;
  for (int i = 0; i < 1200 && !(go = FileExists(a[3])); ++i) usleep(100000);  // <= 120 s
  if (!go) Fail(path + ": " + a[3] + " did not appear within 120 s");
  Exec(db, "INSERT INTO big(tag, v) VALUES('after', randomblob(100))", path);
  Exec(db, "COMMIT", path);
  printf("committed\n");
  fflush(stdout);
  Close(db, path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("many_dbs_client SUBCOMMAND ARGS... (see many_dbs_client.cc)");
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "create") return CmdCreate(args);
  if (cmd == "work") return CmdWork(args);
  if (cmd == "check") return CmdCheck(args);
  if (cmd == "hold-write") return CmdHoldWrite(args);
  Usage(("unknown subcommand " + cmd).c_str());
}

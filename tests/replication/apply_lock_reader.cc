// apply_lock_reader: the SQLite reader process apply_lock_test runs against a database
// whose pages the test replaces under an ApplyLock. Plain system libsqlite3, like any app;
// busy_timeout on every connection, so SQLITE_BUSY reaching here is an error.
//
//   bank DB ACCOUNTS TOTAL FINAL MAXREADS REOPEN STARTED
//        read transactions until the counter reaches FINAL (or MAXREADS, or 120 s); each
//        checks count(accounts) = ACCOUNTS, sum(balance) = TOTAL and that the counter never
//        goes back. REOPEN 1 opens a new connection for every read. Creates STARTED after
//        the first good read. Keeps going after a
//        broken read or an SQLite error and counts it. Prints
//        "reads R broken B errors E counter C versions V"; exit 0 only if B = E = 0 and
//        the counter reached FINAL.
//   hold DB READY RELEASE
//        BEGIN; SELECT (a read transaction), create READY, wait for RELEASE, COMMIT,
//        create READY.done, keep the connection open until RELEASE.exit exists.
//   read DB BUSY_MS
//        one read transaction; prints "accounts N sum S counter C".
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& msg) {
  fprintf(stderr, "apply_lock_reader: %s\n", msg.c_str());
  _exit(1);
}

bool Exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

void Touch(const std::string& p) {
  FILE* f = fopen(p.c_str(), "w");
  if (f == nullptr) Die("create " + p);
  fclose(f);
}

// Waits (bounded) for a file the test creates.
void AwaitFile(const std::string& p) {
  auto end = Clock::now() + std::chrono::seconds(120);
  while (!Exists(p)) {
    if (Clock::now() > end) Die("timed out waiting for " + p);
    usleep(2000);
  }
}

sqlite3* Open(const std::string& path, int busy_ms) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    Die("open " + path + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, busy_ms);
  return db;
}

struct Snapshot {
  long long accounts = -1, sum = -1, counter = -1;
};

// One read transaction. Returns the SQLite error text, or "" on success.
std::string ReadOnce(sqlite3* db, Snapshot* s) {
  std::string err;
  auto fail = [&](const char* what) {
    err = std::string(what) + ": " + sqlite3_errmsg(db) + " (extended code " +
          std::to_string(sqlite3_extended_errcode(db)) + ")";
  };
  if (sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail("BEGIN");
    return err;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT count(*), sum(balance) FROM accounts", -1, &st, nullptr) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    fail("SELECT accounts");
  } else {
    s->accounts = sqlite3_column_int64(st, 0);
    s->sum = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  st = nullptr;
  if (err.empty()) {
    if (sqlite3_prepare_v2(db, "SELECT n FROM counter WHERE id = 1", -1, &st, nullptr) !=
            SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
      fail("SELECT counter");
    } else {
      s->counter = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  if (err.empty() && sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail("COMMIT");
  }
  if (!err.empty()) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  return err;
}

int Bank(int argc, char** argv) {
  if (argc != 9) Die("usage: bank DB ACCOUNTS TOTAL FINAL MAXREADS REOPEN STARTED");
  const std::string path = argv[2];
  const long long accounts = atoll(argv[3]), total = atoll(argv[4]), final_n = atoll(argv[5]);
  const long long max_reads = atoll(argv[6]);
  const bool reopen = atoi(argv[7]) != 0;
  const std::string started = argv[8];
  long long reads = 0, broken = 0, errors = 0, versions = 0, last = -1;
  auto end = Clock::now() + std::chrono::seconds(120);
  sqlite3* db = nullptr;
  while (reads < max_reads && last < final_n && Clock::now() < end) {
    if (db == nullptr) db = Open(path, 10000);
    Snapshot s;
    std::string err = ReadOnce(db, &s);
    ++reads;
    if (!err.empty()) {
      if (++errors <= 5) fprintf(stderr, "read %lld: %s\n", reads, err.c_str());
      sqlite3_close(db);  // a fresh connection after any error
      db = nullptr;
      continue;
    }
    if (s.accounts != accounts || s.sum != total || s.counter < last) {
      if (++broken <= 5) {
        fprintf(stderr, "read %lld: broken: accounts %lld sum %lld counter %lld (last %lld)\n",
                reads, s.accounts, s.sum, s.counter, last);
      }
    }
    if (reads - errors == 1) Touch(started);
    if (s.counter != last) ++versions;
    if (s.counter > last) last = s.counter;
    if (reopen) {
      sqlite3_close(db);
      db = nullptr;
    }
  }
  if (db != nullptr) sqlite3_close(db);
  printf("reads %lld broken %lld errors %lld counter %lld versions %lld\n", reads, broken, errors,
         last, versions);
  fflush(stdout);
  return broken == 0 && errors == 0 && last == final_n ? 0 : 1;
}

int Hold(int argc, char** argv) {
  if (argc != 5) Die("usage: hold DB READY RELEASE");
  const std::string ready = argv[3], release = argv[4];
  sqlite3* db = Open(argv[2], 10000);
  if (sqlite3_exec(db, "BEGIN; SELECT count(*) FROM accounts;", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    Die(std::string("BEGIN; SELECT: ") + sqlite3_errmsg(db));
  }
  Touch(ready);
  AwaitFile(release);
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Die(std::string("COMMIT: ") + sqlite3_errmsg(db));
  }
  Touch(ready + ".done");
  AwaitFile(release + ".exit");
  sqlite3_close(db);
  return 0;
}

int Read(int argc, char** argv) {
  if (argc != 4) Die("usage: read DB BUSY_MS");
  sqlite3* db = Open(argv[2], atoi(argv[3]));
  Snapshot s;
  std::string err = ReadOnce(db, &s);
  if (!err.empty()) Die(err);
  sqlite3_close(db);
  printf("accounts %lld sum %lld counter %lld\n", s.accounts, s.sum, s.counter);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "bank") return Bank(argc, argv);
  if (cmd == "hold") return Hold(argc, argv);
  if (cmd == "read") return Read(argc, argv);
  Die("usage: apply_lock_reader bank|hold|read ...");
}

// Many processes on one database in each journal mode SQLite uses on disk (SPEC "The
// mount"): writers move money between accounts in BEGIN IMMEDIATE transactions and log
// each commit, readers check the total on every read. With busy_timeout = 10 s no
// client may ever see SQLITE_BUSY; afterwards integrity_check is ok, the total is intact
// and every acknowledged commit is there. The `native_*` cases are the baseline.
#include <unistd.h>

#include <thread>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

constexpr int kAccounts = 50;
constexpr long long kInitial = 1000;
constexpr long long kTotal = kAccounts * kInitial;

struct Case {
  std::string mode;
  bool native;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& i) {
  return std::string(i.param.native ? "native_" : "") + i.param.mode;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (bool native : {false, true}) {
    for (const char* m : it::kJournalModes) cases.push_back({m, native});
  }
  return cases;
}

class Bank : public it::MountTest, public ::testing::WithParamInterface<Case> {
 protected:
  bool UseDaemon() override { return !GetParam().native; }
};

TEST_P(Bank, WritersAndReadersInSeparateProcesses) {
  constexpr int kWriters = 4, kReaders = 4, kTxns = 150;
  const std::string mode = GetParam().mode;
  MakeTenant("bank");
  const std::string db = Root("bank/ledger.db");
  it::Result init =
      it::SqlClient({"bank-init", db, mode, std::to_string(kAccounts), std::to_string(kInitial)});
  ASSERT_TRUE(init.Ok()) << init.Describe();

  const std::string stop = scratch_->WorkPath("stop-readers");
  std::vector<it::Child> readers, writers;
  for (int r = 0; r < kReaders; ++r) {
    readers.push_back(
        it::Spawn({it::kSqlClientBin, "bank-read", db, mode, std::to_string(kAccounts),
                   std::to_string(kTotal), stop, "1000000"}));
  }
  for (int w = 1; w <= kWriters; ++w) {
    writers.push_back(it::Spawn({it::kSqlClientBin, "bank-write", db, mode, std::to_string(w),
                                 std::to_string(kTxns), std::to_string(kAccounts), "3000"}));
  }
  std::map<int, long long> committed;
  for (int w = 1; w <= kWriters; ++w) {
    it::Result r = writers[w - 1].Wait(400s);
    EXPECT_TRUE(r.Ok()) << "writer " << w << " failed (SQLITE_BUSY here means locking is broken: "
                        << "busy_timeout is 10 s)" << r.Describe();
    committed[w] = std::max(0LL, it::LastCommitted(r.out));
    EXPECT_EQ(committed[w], kTxns) << "writer " << w << r.Describe();
  }
  it::WriteFile(stop, "stop\n");
  for (int r = 0; r < kReaders; ++r) {
    it::Result res = readers[r].Wait(60s);
    EXPECT_TRUE(res.Ok()) << "reader " << r << " saw a broken invariant or failed"
                          << res.Describe();
    EXPECT_NE(res.out.find("reads "), std::string::npos) << res.Describe();
  }
  it::ExpectBankIntact(db, kAccounts, kTotal, committed, mode);
}

INSTANTIATE_TEST_SUITE_P(Modes, Bank, ::testing::ValuesIn(Cases()), CaseName);

// The same through the sqlite3 shell: a few shells writing at once (.timeout 10000,
// -bail: any error, "database is locked" included, ends the shell with a non-zero
// status), then a shell checking.
class Shell : public it::MountTest, public ::testing::WithParamInterface<Case> {
 protected:
  bool UseDaemon() override { return !GetParam().native; }

  it::Result RunShell(const std::string& db, const std::string& script, const std::string& name) {
    std::string path = scratch_->WorkPath(name + ".sql");
    it::WriteFile(path, script);
    it::SpawnOptions o;
    o.stdin_path = path;
    return it::Run({it::kSqlite3ShellBin, "-bail", db}, 300s, o);
  }
};

TEST_P(Shell, ConcurrentShellWriters) {
  constexpr int kShells = 3, kTxns = 60;
  const std::string mode = GetParam().mode;
  MakeTenant("shop");
  const std::string db = Root("shop/orders.db");
  it::Result init =
      RunShell(db,
               ".timeout 10000\n"
               "PRAGMA journal_mode=" +
                   mode +
                   ";\n"
                   "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);\n"
                   "CREATE TABLE log(id INTEGER PRIMARY KEY, writer INTEGER NOT NULL,"
                   " seq INTEGER NOT NULL, amount INTEGER NOT NULL, pad BLOB);\n"
                   "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < " +
                   std::to_string(kAccounts - 1) + ") INSERT INTO accounts SELECT i, " +
                   std::to_string(kInitial) + " FROM c;\n",
               "init");
  ASSERT_TRUE(init.Ok()) << init.Describe();
  ASSERT_EQ(it::Trim(init.out), mode) << "PRAGMA journal_mode did not take" << init.Describe();

  std::vector<it::Child> shells;
  for (int s = 1; s <= kShells; ++s) {
    std::string script =
        ".timeout 10000\nPRAGMA journal_mode=" + mode + ";\nPRAGMA synchronous=FULL;\n";
    for (int i = 1; i <= kTxns; ++i) {
      int from = (s * 31 + i * 7) % kAccounts, to = (from + 1 + i % (kAccounts - 1)) % kAccounts;
      int amount = 1 + (s * i) % 97;
      script += "BEGIN IMMEDIATE;\nUPDATE accounts SET balance = balance - " +
                std::to_string(amount) + " WHERE id = " + std::to_string(from) +
                ";\nUPDATE accounts SET balance = balance + " + std::to_string(amount) +
                " WHERE id = " + std::to_string(to) +
                ";\nINSERT INTO log(writer, seq, amount, pad) VALUES(" + std::to_string(s) + ", " +
                std::to_string(i) + ", " + std::to_string(amount) + ", randomblob(" +
                std::to_string(100 + 37 * i % 700) + "));\nCOMMIT;\n";
    }
    script += "SELECT 'done';\n";
    std::string path = scratch_->WorkPath("shell" + std::to_string(s) + ".sql");
    it::WriteFile(path, script);
    it::SpawnOptions o;
    o.stdin_path = path;
    shells.push_back(it::Spawn({it::kSqlite3ShellBin, "-bail", db}, o));
  }
  std::map<int, long long> committed;
  for (int s = 1; s <= kShells; ++s) {
    it::Result r = shells[s - 1].Wait(300s);
    EXPECT_TRUE(r.Ok() && r.err.empty())
        << "sqlite3 shell " << s << " failed (\"database is locked\" here means locking is "
        << "broken: .timeout is 10 s)" << r.Describe();
    EXPECT_EQ(it::Join(it::SplitLines(r.out), ","), mode + ",done") << r.Describe();
    if (r.Ok()) committed[s] = kTxns;
  }

  it::Result check = RunShell(db,
                              ".timeout 10000\n"
                              "PRAGMA integrity_check;\n"
                              "SELECT count(*), sum(balance) FROM accounts;\n"
                              "SELECT writer, count(*), count(DISTINCT seq) FROM log "
                              "GROUP BY writer ORDER BY writer;\n",
                              "check");
  ASSERT_TRUE(check.Ok()) << check.Describe();
  std::string want = "ok\n" + std::to_string(kAccounts) + "|" + std::to_string(kTotal) + "\n";
  for (int s = 1; s <= kShells; ++s) {
    want += std::to_string(s) + "|" + std::to_string(kTxns) + "|" + std::to_string(kTxns) + "\n";
  }
  EXPECT_EQ(check.out, want) << "the shells' data is not intact" << check.Describe();
  it::ExpectBankIntact(db, kAccounts, kTotal, committed, "shell/" + mode);
}

INSTANTIATE_TEST_SUITE_P(Modes, Shell, ::testing::ValuesIn(Cases()), CaseName);

}  // namespace

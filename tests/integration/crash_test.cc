// A client SIGKILLed in the middle of a write transaction (pages already spilled to the
// database file or the WAL): the next opener must see exactly the committed state,
// integrity_check ok, and be able to write again -- as with native SQLite. The
// `native_*` cases run the same steps on a plain directory as the baseline.
#include <signal.h>
#include <unistd.h>

#include <thread>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

struct CrashCase {
  std::string mode;
  bool holder;  // another process keeps the database open across the crash
  bool native;  // baseline on a plain directory
};

class ClientCrash : public it::MountTest, public ::testing::WithParamInterface<CrashCase> {
 protected:
  bool UseDaemon() override { return !GetParam().native; }
};

std::string Digest(const std::string& db) {
  it::Result r = it::SqlClient({"digest", db, "t"});
  EXPECT_TRUE(r.Ok()) << r.Describe();
  return it::Trim(r.out);
}

TEST_P(ClientCrash, NextOpenerSeesOnlyCommittedRows) {
  const CrashCase& c = GetParam();
  MakeTenant("acme");
  const std::string db = Root("acme/app.db");

  // Two committed transactions: 300 rows, then 100 more.
  it::Result init =
      it::SqlClient({"exec", "--mode", c.mode, db,
                     "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
                     "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)"
                     " INSERT INTO t(v) SELECT randomblob(1000 + i) FROM c;"});
  ASSERT_TRUE(init.Ok()) << init.Describe();
  it::Result more =
      it::SqlClient({"exec", "--mode", c.mode, db,
                     "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100)"
                     " INSERT INTO t(v) SELECT randomblob(500) FROM c;"});
  ASSERT_TRUE(more.Ok()) << more.Describe();
  const std::string committed = Digest(db);
  ASSERT_EQ(committed.rfind("rows 400 ", 0), 0u) << committed;

  std::optional<it::Child> holder;
  const std::string stop = scratch_->WorkPath("stop");
  if (c.holder) {
    holder.emplace(it::Spawn({it::kSqlClientBin, "hold-open", db, stop}));
    auto deadline = it::Clock::now() + 20s;
    while (holder->Stdout().find("open") == std::string::npos && holder->Running() &&
           it::Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_NE(holder->Stdout().find("open"), std::string::npos)
        << "holder did not open the database" << holder->Wait(1s).Describe();
  }

  // The victim: one open transaction rewriting and adding ~2 MB with a tiny cache.
  const std::string ready = scratch_->WorkPath("ready");
  it::Child victim = it::Spawn({it::kSqlClientBin, "hold-tx", db, c.mode, "600", ready});
  auto deadline = it::Clock::now() + 90s;
  while (!it::Exists(ready) && victim.Running() && it::Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(it::Exists(ready)) << "the victim never reached the middle of its transaction"
                                 << victim.Wait(1s).Describe();
  victim.Signal(SIGKILL);
  it::Result killed = victim.Wait(20s);
  ASSERT_EQ(killed.signal, SIGKILL) << killed.Describe();

  // Evidence that uncommitted pages reached the files (so the next opener has to roll
  // back or ignore them), checked before anyone opens the database again.
  const std::string journal = db + (c.mode == "wal" ? "-wal" : "-journal");
  EXPECT_GT(it::FileSize(journal), 0) << journal << " should hold the interrupted transaction";

  // The next opener: the committed state exactly, nothing of the killed transaction.
  EXPECT_EQ(Digest(db), committed) << "the killed client's uncommitted rows are visible, or "
                                      "committed rows were lost";
  EXPECT_EQ(it::SqlOk(db, "PRAGMA integrity_check"), "ok");
  EXPECT_EQ(it::SqlOk(db, "SELECT count(*) FROM t"), "400");

  // Locks of the dead client are gone: a new writer gets in within busy_timeout.
  it::Result write = it::SqlClient(
      {"exec", "--mode", c.mode, db,
       "BEGIN IMMEDIATE; INSERT INTO t(v) VALUES(x'00'); COMMIT; SELECT count(*) FROM t;"});
  EXPECT_TRUE(write.Ok()) << "writing after the crash failed" << write.Describe();
  EXPECT_EQ(it::Trim(write.out), "401");
  EXPECT_EQ(it::SqlOk(db, "PRAGMA journal_mode"), c.mode == "wal" ? "wal" : "delete");

  if (holder) {
    it::WriteFile(stop, "stop\n");
    it::Result h = holder->Wait(30s);
    EXPECT_TRUE(h.Ok()) << "the process holding the database open failed" << h.Describe();
  }
  EXPECT_EQ(it::SqlOk(db, "PRAGMA integrity_check"), "ok");
}

std::vector<CrashCase> Cases() {
  std::vector<CrashCase> cases;
  for (bool native : {false, true}) {
    for (const char* m : it::kJournalModes) cases.push_back({m, false, native});
    cases.push_back({"delete", true, native});
    cases.push_back({"wal", true, native});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Modes, ClientCrash, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<CrashCase>& i) {
                           return std::string(i.param.native ? "native_" : "") + i.param.mode +
                                  (i.param.holder ? "_with_open_reader" : "");
                         });

}  // namespace

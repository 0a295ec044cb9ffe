// Restarts (SPEC "Command line": SIGTERM unmounts cleanly after in-flight writes are
// durable): data survives a clean stop; after `kill -9` of the daemon under write load,
// whether or not someone cleaned up the dead mount, a new daemon on the same data dir
// serves every database with integrity_check ok, the bank total intact and every
// acknowledged commit present.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <thread>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

constexpr int kAccounts = 20;
constexpr long long kInitial = 1000;
constexpr long long kTotal = kAccounts * kInitial;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

class Restart : public it::MountTest {
 protected:
  std::string Digest(const std::string& rel, const std::string& table) {
    it::Result r = it::SqlClient({"digest", Mnt(rel), table});
    EXPECT_TRUE(r.Ok()) << r.Describe();
    return it::Trim(r.out);
  }
};

TEST_F(Restart, CleanStopAndStartKeepsEverything) {
  MakeTenant("alpha");
  MakeTenant("beta");
  std::map<std::string, std::string> digests;
  for (const char* mode : it::kJournalModes) {
    for (const char* tenant : {"alpha", "beta"}) {
      std::string rel = std::string(tenant) + "/" + mode + ".db";
      it::Result r = it::SqlClient(
          {"exec", "--mode", mode, Mnt(rel),
           "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, s TEXT);"
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500)"
           " INSERT INTO t(v, s) SELECT randomblob(i * 3), printf('%s-%d', '" +
               rel +
               "', i) FROM c;"
               "DELETE FROM t WHERE id % 5 = 0;"
               "UPDATE t SET s = s || '!' WHERE id % 7 = 0;"});
      ASSERT_TRUE(r.Ok()) << r.Describe();
      digests[rel] = Digest(rel, "t");
    }
  }

  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE("restart round " + std::to_string(round));
    StopDaemon();
    ASSERT_FALSE(HasFailure());
    std::string why;
    ASSERT_TRUE(RestartDaemon(&why)) << why;
    auto tenants = it::ListDir(Mnt());
    ASSERT_TRUE(tenants) << it::ErrnoName(errno);
    EXPECT_EQ(it::Join(*tenants, " "), "alpha beta");
    for (auto& [rel, digest] : digests) {
      EXPECT_EQ(Digest(rel, "t"), digest) << rel << " changed across a clean restart";
      EXPECT_EQ(it::SqlOk(Mnt(rel), "PRAGMA integrity_check"), "ok") << rel;
    }
    EXPECT_EQ(it::SqlOk(Mnt("alpha/wal.db"), "PRAGMA journal_mode"), "wal");
    // Still writable after the restart.
    it::Result w = it::SqlClient({"exec", "--mode", "wal", Mnt("alpha/wal.db"),
                                  "INSERT INTO t(v, s) VALUES(x'01', 'after restart')"});
    ASSERT_TRUE(w.Ok()) << w.Describe();
    digests["alpha/wal.db"] = Digest("alpha/wal.db", "t");
  }
}

// kill -9 of the daemon while 8 writers (2 per journal mode) are committing, three times
// over on the same data dir.
class DaemonKill : public Restart, public ::testing::WithParamInterface<bool> {};

// Per-writer log row counts of a bank database.
std::map<int, long long> LogCounts(const std::string& db) {
  std::map<int, long long> counts;
  for (const std::string& line :
       it::SplitLines(it::SqlOk(db, "SELECT writer, count(*) FROM log GROUP BY writer"))) {
    int w = 0;
    long long n = 0;
    if (sscanf(line.c_str(), "%d|%lld", &w, &n) == 2) counts[w] = n;
  }
  return counts;
}

TEST_P(DaemonKill, Kill9UnderWriteLoadThenRestart) {
  constexpr int kRounds = 3;
  const bool test_cleans_up = GetParam();
  MakeTenant("bank");
  std::vector<std::string> dbs;
  for (const char* mode : it::kJournalModes) {
    std::string db = Mnt(std::string("bank/") + mode + ".db");
    it::Result r =
        it::SqlClient({"bank-init", db, mode, std::to_string(kAccounts), std::to_string(kInitial)});
    ASSERT_TRUE(r.Ok()) << r.Describe();
    dbs.push_back(db);
  }
  // Per database: what each writer (of every round so far) must have in the log.
  std::vector<std::map<int, long long>> acked(4), upper(4);

  for (int round = 1; round <= kRounds; ++round) {
    SCOPED_TRACE("kill -9 round " + std::to_string(round));
    struct Writer {
      int db_index;
      int id;
      it::Child child;
    };
    std::vector<Writer> writers;
    for (int d = 0; d < 4; ++d) {
      for (int id = round * 10 + 1; id <= round * 10 + 2; ++id) {
        writers.push_back(
            {d, id,
             it::Spawn({it::kSqlClientBin, "bank-write", dbs[d], it::kJournalModes[d],
                        std::to_string(id), "1000000", std::to_string(kAccounts), "2000"})});
      }
    }
    // Wait until every writer has committed a few transactions.
    auto deadline = it::Clock::now() + 90s;
    for (Writer& w : writers) {
      while (it::LastCommitted(w.child.Stdout()) < 5 && w.child.Running() &&
             it::Clock::now() < deadline) {
        std::this_thread::sleep_for(20ms);
      }
      ASSERT_GE(it::LastCommitted(w.child.Stdout()), 5)
          << "writer " << w.id << " on " << dbs[w.db_index] << " is not committing"
          << w.child.Wait(1s).Describe() << daemon_->Describe();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 * round));

    it::Result killed = daemon_->Kill9();
    stopped_on_purpose_ = true;
    ASSERT_EQ(killed.signal, SIGKILL) << killed.Describe();

    // Clients now fail (ENOTCONN and friends): expected. What each had acknowledged
    // before that must survive.
    for (Writer& w : writers) {
      it::Result r = w.child.Wait(30s);
      EXPECT_FALSE(r.Ok()) << "a writer finished 1000000 transactions?" << r.Describe();
      long long n = std::max(0LL, it::LastCommitted(r.out));
      acked[w.db_index][w.id] = n;
      upper[w.db_index][w.id] = n + 1;  // its last COMMIT may have landed unacknowledged
    }

    // The dead mount is still there until someone removes it.
    ASSERT_FALSE(it::MountTypesAt(Mnt()).empty()) << "expected the dead mount to remain";
    if (test_cleans_up) {
      ASSERT_TRUE(it::LazyUnmount(Mnt())) << "could not remove the dead mount";
    }

    std::string why;
    ASSERT_TRUE(RestartDaemon(&why)) << why;
    EXPECT_EQ(it::Join(it::MountTypesAt(Mnt()), ","), "fuse.tenantfs")
        << "expected exactly one live tenantfs mount at " << Mnt();
    if (!test_cleans_up) {
      std::string log = Lower(daemon_->Log());
      EXPECT_NE(log.find("stale"), std::string::npos)
          << "tenantfs did not log that it cleaned a stale mount" << daemon_->Describe();
      EXPECT_NE(log.find(Lower(Mnt())), std::string::npos)
          << "the stale-mount log line should name the mount dir" << daemon_->Describe();
    }

    for (int d = 0; d < 4; ++d) {
      it::ExpectBankIntact(dbs[d], kAccounts, kTotal, acked[d], upper[d],
                           std::string("after kill -9, ") + it::kJournalModes[d]);
      // From now on each writer's count is what survived.
      for (auto& [w, n] : LogCounts(dbs[d])) acked[d][w] = upper[d][w] = n;
      // And the database takes new writes.
      int id = round * 10 + 9;
      it::Result more = it::SqlClient({"bank-write", dbs[d], it::kJournalModes[d],
                                       std::to_string(id), "20", std::to_string(kAccounts), "0"});
      EXPECT_TRUE(more.Ok()) << "writing after the restart" << more.Describe();
      acked[d][id] = upper[d][id] = 20;
      EXPECT_EQ(it::SqlOk(dbs[d], "PRAGMA integrity_check"), "ok");
    }
    ASSERT_FALSE(HasFailure());
  }
}

INSTANTIATE_TEST_SUITE_P(Cleanup, DaemonKill, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "TestUnmountsDeadMount"
                                                      : "DaemonCleansStaleMount");
                         });

}  // namespace

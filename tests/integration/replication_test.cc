// Replication end to end: separate tenantfs processes on loopback, each with its
// own mount and data dir; real SQLite writers on the primary and real SQLite
// readers (other processes) on the replicas.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace it {
namespace {

struct Node {
  std::unique_ptr<Scratch> scratch = std::make_unique<Scratch>();
  std::unique_ptr<Daemon> daemon;
  std::string config;
  std::string Mnt(const std::string& rel = "") const {
    return rel.empty() ? scratch->mnt() : scratch->mnt() + "/" + rel;
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(daemon->port()); }
};

class ReplicationTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto* n : {&replica2_, &replica1_, &primary_}) {
      if (n->daemon && n->daemon->Running()) {
        Result r = n->daemon->Stop();
        EXPECT_TRUE(r.Ok()) << "stop: " << r.Describe() << n->daemon->Describe();
      }
    }
  }

  // yaml: extra config lines (top-level keys).
  void StartPrimary(const std::string& yaml = "") {
    primary_.config = primary_.scratch->WorkPath("primary.yaml");
    WriteFile(primary_.config, "node: {id: primary}\nlease: {candidate: true}\n" + yaml);
    primary_.daemon = std::make_unique<Daemon>(primary_.scratch->mnt(), primary_.scratch->data());
    Start(primary_);
  }
  void StartReplica(Node& n, const std::string& id, const std::string& yaml = "") {
    n.config = n.scratch->WorkPath(id + ".yaml");
    WriteFile(n.config, "node: {id: " + id + "}\nlease: {candidate: false, primary-url: \"" +
                            primary_.Url() + "\"}\n" + yaml);
    n.daemon = std::make_unique<Daemon>(n.scratch->mnt(), n.scratch->data());
    Start(n);
  }
  void Start(Node& n, std::map<std::string, std::string> env = {}) {
    DaemonOptions o;
    o.config_path = n.config;
    std::string why;
    ASSERT_TRUE(n.daemon->Start(o, &why)) << why;
  }

  static std::string Pos(const Node& n, const std::string& db) {
    return Trim(ReadFile(n.Mnt(db + "-pos")));
  }

  // Waits until every db's -pos on `replica` equals the primary's.
  bool WaitConverged(const Node& replica, const std::vector<std::string>& dbs,
                     std::chrono::seconds timeout, std::string* why) {
    auto deadline = Clock::now() + timeout;
    while (true) {
      std::string first_diff;
      for (const auto& db : dbs) {
        std::string p = Pos(primary_, db), r = Pos(replica, db);
        if (p.empty() || p != r) {
          first_diff = db + ": primary " + p + " replica " + r;
          break;
        }
      }
      if (first_diff.empty()) return true;
      if (Clock::now() > deadline) {
        *why = first_diff;
        return false;
      }
      std::this_thread::sleep_for(50ms);
    }
  }

  // The exported bytes of a database from a node (tenantfs export over HTTP).
  std::string Export(const Node& n, const std::string& db, const std::string& name) {
    std::string out = n.scratch->WorkPath(name);
    Result r = it::Run({kTenantfsBin, "export", "--url", n.Url(), db, out}, 60s);
    EXPECT_TRUE(r.Ok()) << r.Describe();
    return ReadFile(out);
  }

  void ExpectIdentical(const Node& replica, const std::vector<std::string>& dbs) {
    for (const auto& db : dbs) {
      std::string tag = db;
      for (char& c : tag) c = c == '/' ? '_' : c;
      std::string a = Export(primary_, db, "p-" + tag), b = Export(replica, db, "r-" + tag);
      EXPECT_FALSE(a.empty()) << db;
      EXPECT_TRUE(a == b) << db << ": exported bytes differ (" << a.size() << " vs " << b.size()
                          << ")";
      EXPECT_EQ(Trim(SqlOk(replica.Mnt(db), "PRAGMA integrity_check")), "ok") << db;
    }
  }

  // N single-row autocommit transactions in one client run.
  void Inserts(const std::string& db, int n, int from = 0) {
    std::string sql;
    for (int i = 0; i < n; ++i) sql += "INSERT INTO t VALUES(" + std::to_string(from + i) + ", randomblob(64));";
    Result r = Sql(primary_.Mnt(db), sql, 300s);
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }

  void MakeDb(const std::string& db, const std::string& mode) {
    Result r = Sql(primary_.Mnt(db), "PRAGMA journal_mode=" + mode + "; CREATE TABLE t(k INTEGER, v BLOB);");
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }

  Node primary_, replica1_, replica2_;
};

// A primary, two replicas; bank writers over 52 databases in all four journal
// modes; bank readers on both replicas checking the invariant on every read.
TEST_F(ReplicationTest, WritersAndReplicaReadersConvergeInEveryMode) {
  StartPrimary();
  StartReplica(replica1_, "replica1");
  StartReplica(replica2_, "replica2");
  constexpr int kTenants = 4, kPerTenant = 13, kAccounts = 10, kInitial = 100;
  std::vector<std::string> dbs;
  for (int t = 0; t < kTenants; ++t) {
    ASSERT_EQ(::mkdir(primary_.Mnt("t" + std::to_string(t)).c_str(), 0755), 0);
    for (int d = 0; d < kPerTenant; ++d) {
      std::string db = "t" + std::to_string(t) + "/db" + std::to_string(d);
      std::string mode = kJournalModes[d % 4];
      Result r = SqlClient({"bank-init", primary_.Mnt(db), mode, std::to_string(kAccounts),
                            std::to_string(kInitial)});
      ASSERT_TRUE(r.Ok()) << r.Describe();
      dbs.push_back(db);
    }
  }
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 60s, &why)) << why << primary_.daemon->Describe()
                                                        << replica1_.daemon->Describe();
  ASSERT_TRUE(WaitConverged(replica2_, dbs, 60s, &why)) << why << replica2_.daemon->Describe();

  // Readers on the replicas (one per journal mode per replica), writers on the primary.
  std::string stop = primary_.scratch->WorkPath("stop");
  std::vector<Child> readers, writers;
  for (Node* n : {&replica1_, &replica2_}) {
    for (int m = 0; m < 4; ++m) {
      readers.push_back(Spawn({kSqlClientBin, "bank-read", n->Mnt(dbs[m]), kJournalModes[m],
                               std::to_string(kAccounts), std::to_string(kAccounts * kInitial),
                               stop, "100000"}));
    }
  }
  const int kTxns = 15;
  for (size_t i = 0; i < dbs.size(); ++i) {
    writers.push_back(Spawn({kSqlClientBin, "bank-write", primary_.Mnt(dbs[i]),
                             kJournalModes[i % 4], "1", std::to_string(kTxns),
                             std::to_string(kAccounts), "200"}));
    if (writers.size() >= 8) {  // bounded concurrency on 2 cores
      Result r = writers.front().Wait(300s);
      EXPECT_TRUE(r.Ok()) << r.Describe();
      writers.erase(writers.begin());
    }
  }
  for (auto& w : writers) {
    Result r = w.Wait(300s);
    EXPECT_TRUE(r.Ok()) << r.Describe();
  }
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 60s, &why)) << why << replica1_.daemon->Describe();
  ASSERT_TRUE(WaitConverged(replica2_, dbs, 60s, &why)) << why << replica2_.daemon->Describe();
  WriteFile(stop, "");
  for (auto& r : readers) {
    Result res = r.Wait(120s);
    EXPECT_TRUE(res.Ok()) << res.Describe();
  }
  for (const auto& db : dbs) {
    EXPECT_EQ(Trim(SqlOk(replica1_.Mnt(db), "SELECT count(*) FROM log")), std::to_string(kTxns))
        << db;
  }
  ExpectIdentical(replica1_, dbs);
  ExpectIdentical(replica2_, {dbs[0], dbs[1], dbs[2], dbs[3]});
  // The primary knows its replicas.
  Result info = it::Run({"/usr/bin/curl", "-sf", primary_.Url() + "/v1/info"}, 10s);
  EXPECT_NE(info.out.find("replica1"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("replica2"), std::string::npos) << info.out;
  Result m = it::Run({"/usr/bin/curl", "-sf", primary_.Url() + "/metrics"}, 10s);
  EXPECT_NE(m.out.find("\ntenantfs_replicas_connected 2\n"), std::string::npos) << m.out;
  Result rm = it::Run({"/usr/bin/curl", "-sf", replica1_.Url() + "/metrics"}, 10s);
  EXPECT_NE(rm.out.find("\ntenantfs_replication_databases_behind 0\n"), std::string::npos) << rm.out;
  EXPECT_NE(rm.out.find("\ntenantfs_replication_lag_seconds 0\n"), std::string::npos) << rm.out;
  EXPECT_EQ(rm.out.find("tenantfs_stream_bytes_total{direction=\"received\"} 0\n"), std::string::npos)
      << rm.out;
}

// Replicas are read-only, and refuse cleanly; deletions replicate.
TEST_F(ReplicationTest, ReplicaRefusesWritesAndFollowsDeletes) {
  StartPrimary();
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  MakeDb("acme/a.db", "wal");
  MakeDb("acme/b.db", "delete");
  Inserts("acme/a.db", 5);
  Inserts("acme/b.db", 5);
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, {"acme/a.db", "acme/b.db"}, 30s, &why)) << why;
  EXPECT_EQ(Trim(ReadFile(replica1_.Mnt(".primary"))), primary_.Url());
  EXPECT_EQ(::open(replica1_.Mnt(".primary").c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EROFS);
  std::string before = Pos(primary_, "acme/a.db");
  for (const char* db : {"acme/a.db", "acme/b.db"}) {
    Result r = Sql(replica1_.Mnt(db), "INSERT INTO t VALUES(99, 'x')");
    EXPECT_FALSE(r.Ok());
    EXPECT_NE(r.err.find("attempt to write a readonly database"), std::string::npos) << r.Describe();
  }
  EXPECT_EQ(Pos(primary_, "acme/a.db"), before);
  EXPECT_EQ(Pos(replica1_, "acme/a.db"), before);
  EXPECT_EQ(::unlink(replica1_.Mnt("acme/b.db").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  // A delete on the primary reaches the replica.
  ASSERT_EQ(::unlink(primary_.Mnt("acme/b.db").c_str()), 0);
  auto deadline = Clock::now() + 20s;
  while (Exists(replica1_.Mnt("acme/b.db")) && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(Exists(replica1_.Mnt("acme/b.db")));
  EXPECT_TRUE(Exists(replica1_.Mnt("acme/a.db")));
  // Read-your-writes: wait for the primary's TXID on the replica.
  Inserts("acme/a.db", 1, 100);
  std::string txid_hex = Pos(primary_, "acme/a.db").substr(0, 16);
  unsigned long long txid = std::stoull(txid_hex, nullptr, 16);
  Result w = it::Run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                  replica1_.Url() + "/v1/dbs/acme/a.db/wait?txid=" + std::to_string(txid) +
                      "&timeout_ms=10000"},
                 20s);
  EXPECT_EQ(w.out, "200");
  EXPECT_EQ(Trim(SqlOk(replica1_.Mnt("acme/a.db"), "SELECT count(*) FROM t WHERE k=100")), "1");
  Result late = it::Run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     replica1_.Url() + "/v1/dbs/acme/a.db/wait?txid=" + std::to_string(txid + 1000) +
                         "&timeout_ms=200"},
                    20s);
  EXPECT_EQ(late.out, "504");
}

// A replica stopped cleanly, then killed -9, while the primary commits thousands
// of transactions: it catches up from the log when it comes back.
TEST_F(ReplicationTest, ReplicaRestartCatchesUp) {
  StartPrimary();
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  std::vector<std::string> dbs;
  for (int i = 0; i < 4; ++i) {
    dbs.push_back("acme/d" + std::to_string(i));
    MakeDb(dbs.back(), kJournalModes[i]);
  }
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 30s, &why)) << why;
  for (bool kill9 : {false, true}) {
    if (kill9) {
      replica1_.daemon->Kill9();
      LazyUnmount(replica1_.Mnt());
    } else {
      Result r = replica1_.daemon->Stop();
      ASSERT_TRUE(r.Ok()) << r.Describe();
    }
    for (const auto& db : dbs) Inserts(db, 600, kill9 ? 1000 : 0);
    Start(replica1_);
    if (kill9) {  // and once more in the middle of applying the catch-up
      std::this_thread::sleep_for(150ms);
      replica1_.daemon->Kill9();
      LazyUnmount(replica1_.Mnt());
      Start(replica1_);
    }
    auto started = Clock::now();
    ASSERT_TRUE(WaitConverged(replica1_, dbs, 60s, &why)) << why << replica1_.daemon->Describe();
    std::cout << (kill9 ? "after kill -9" : "after a clean stop") << ": 2,400 transactions caught up in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()
              << " ms\n";
  }
  ExpectIdentical(replica1_, dbs);
}

// Out of retention: the replica was away while the primary's log moved past
// it; it converges through a snapshot (only the pages that differ are sent).
TEST_F(ReplicationTest, OutOfRetentionConvergesThroughSnapshot) {
  StartPrimary("data: {retention: 1s}\n");
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  std::vector<std::string> dbs = {"acme/w.db", "acme/r.db"};
  MakeDb(dbs[0], "wal");
  MakeDb(dbs[1], "delete");
  Inserts(dbs[0], 20);
  Inserts(dbs[1], 20);
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 30s, &why)) << why;
  Result r = replica1_.daemon->Stop();
  ASSERT_TRUE(r.Ok()) << r.Describe();
  // More than a log segment (4 MiB) of incompressible change sets per database,
  // then time for the retention pass to drop the old segments.
  for (const auto& db : dbs) {
    for (int i = 0; i < 6; ++i) {
      Result w = Sql(primary_.Mnt(db), "INSERT INTO t VALUES(" + std::to_string(1000 + i) +
                                           ", randomblob(1000000))", 60s);
      ASSERT_TRUE(w.Ok()) << w.Describe();
    }
    Inserts(db, 5, 2000);
  }
  std::this_thread::sleep_for(3500ms);
  Start(replica1_);
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 60s, &why)) << why << replica1_.daemon->Describe()
                                                        << primary_.daemon->Describe();
  EXPECT_NE(primary_.daemon->Log().find("sending snapshot"), std::string::npos)
      << primary_.daemon->Describe();
  ExpectIdentical(replica1_, dbs);
}

// The primary killed -9 mid-stream and restarted: replicas reconnect and converge.
TEST_F(ReplicationTest, PrimaryKilledAndRestarted) {
  StartPrimary();
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  std::vector<std::string> dbs = {"acme/a", "acme/b"};
  MakeDb(dbs[0], "wal");
  MakeDb(dbs[1], "truncate");
  for (int i = 0; i < 400; ++i) {
    Result r = Sql(primary_.Mnt(dbs[i % 2]), "INSERT INTO t VALUES(" + std::to_string(i) + ", 'x')");
    ASSERT_TRUE(r.Ok()) << r.Describe();
    if (i == 200) {
      primary_.daemon->Kill9();
      LazyUnmount(primary_.Mnt());
      std::string why;
      ASSERT_TRUE(primary_.daemon->Start(DaemonOptions{primary_.config, {}, true}, &why)) << why;
    }
  }
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, dbs, 60s, &why)) << why << replica1_.daemon->Describe();
  ExpectIdentical(replica1_, dbs);
}

// Authentication: a replica with the wrong token gets 401, says so, and receives nothing.
TEST_F(ReplicationTest, WrongTokenIsRefused) {
  StartPrimary("http: {token: right-token}\n");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  MakeDb("acme/a.db", "wal");
  StartReplica(replica1_, "replica1", "http: {token: wrong-token}\n");
  std::this_thread::sleep_for(1500ms);
  EXPECT_NE(replica1_.daemon->Log().find("401"), std::string::npos) << replica1_.daemon->Describe();
  EXPECT_FALSE(Exists(replica1_.Mnt("acme/a.db")));
  Result r = it::Run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                  "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                  "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", primary_.Url() + "/v1/stream"},
                 10s);
  EXPECT_EQ(r.out, "401");
}

// A replica belongs to the cluster of the first primary it followed: pointed at
// the primary of another cluster, it refuses its stream and says why.
TEST_F(ReplicationTest, ReplicaRefusesAPrimaryOfAnotherCluster) {
  StartPrimary();
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  MakeDb("acme/a.db", "wal");
  StartReplica(replica1_, "replica1");
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, {"acme/a.db"}, 30s, &why)) << why;
  std::string cluster = Trim(ReadFile(replica1_.scratch->data() + "/CLUSTER"));
  EXPECT_EQ(cluster, Trim(ReadFile(primary_.scratch->data() + "/CLUSTER")));
  EXPECT_EQ(cluster.size(), 32u);
  Result r = replica1_.daemon->Stop();
  ASSERT_TRUE(r.Ok()) << r.Describe();
  // Another primary (its own data dir: a new cluster) with a database of its own.
  Node other;
  other.config = other.scratch->WorkPath("other.yaml");
  WriteFile(other.config, "node: {id: other}\nlease: {candidate: true}\n");
  other.daemon = std::make_unique<Daemon>(other.scratch->mnt(), other.scratch->data());
  Start(other);
  ASSERT_EQ(::mkdir(other.Mnt("zeta").c_str(), 0755), 0);
  ASSERT_TRUE(Sql(other.Mnt("zeta/z.db"), "CREATE TABLE t(x); INSERT INTO t VALUES(1);").Ok());
  WriteFile(replica1_.config, "node: {id: replica1}\nlease: {candidate: false, primary-url: \"" +
                                  other.Url() + "\"}\n");
  Start(replica1_);
  auto deadline = Clock::now() + 10s;
  while (replica1_.daemon->Log().find("cluster id mismatch") == std::string::npos &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(replica1_.daemon->Log().find("cluster id mismatch"), std::string::npos)
      << replica1_.daemon->Describe();
  EXPECT_FALSE(Exists(replica1_.Mnt("zeta")));
  EXPECT_TRUE(Exists(replica1_.Mnt("acme/a.db")));  // what it had stays
  EXPECT_EQ(Trim(ReadFile(replica1_.scratch->data() + "/CLUSTER")), cluster);
  Result ro = other.daemon->Stop();
  EXPECT_TRUE(ro.Ok()) << ro.Describe();
}

// A corrupted change-set frame is detected by the replica, which re-syncs.
TEST_F(ReplicationTest, CorruptFrameIsDetectedAndResynced) {
  primary_.config = primary_.scratch->WorkPath("primary.yaml");
  WriteFile(primary_.config, "node: {id: primary}\nlease: {candidate: true}\n");
  primary_.daemon = std::make_unique<Daemon>(primary_.scratch->mnt(), primary_.scratch->data());
  DaemonOptions o;
  o.config_path = primary_.config;
  std::string why;
  ::setenv("TENANTFS_TEST_CORRUPT_EVERY", "5", 1);  // inherited by the daemon
  bool ok = primary_.daemon->Start(o, &why);
  ::unsetenv("TENANTFS_TEST_CORRUPT_EVERY");
  ASSERT_TRUE(ok) << why;
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  MakeDb("acme/a.db", "wal");
  for (int i = 0; i < 12; ++i) Inserts("acme/a.db", 1, i);
  ASSERT_TRUE(WaitConverged(replica1_, {"acme/a.db"}, 60s, &why)) << why << replica1_.daemon->Describe();
  EXPECT_NE(replica1_.daemon->Log().find("corrupt change set"), std::string::npos)
      << replica1_.daemon->Describe();
  ExpectIdentical(replica1_, {"acme/a.db"});
}

// Local damage on a replica (a page changed behind its back) is caught by the
// post-apply checksum of the next change set touching it, and that database
// is re-synced from the primary (a snapshot of the pages that differ).
TEST_F(ReplicationTest, DamagedReplicaPageIsDetectedAndResynced) {
  StartPrimary();
  StartReplica(replica1_, "replica1");
  ASSERT_EQ(::mkdir(primary_.Mnt("acme").c_str(), 0755), 0);
  MakeDb("acme/a.db", "delete");
  Inserts("acme/a.db", 3);
  std::string why;
  ASSERT_TRUE(WaitConverged(replica1_, {"acme/a.db"}, 30s, &why)) << why;
  // Page 2 (the table's only leaf) is written by every insert.
  std::string backing = replica1_.scratch->data() + "/tenants/acme/a.db";
  int fd = ::open(backing.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  std::string junk(100, '\x5a');
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 4096 + 2000), 100);
  ::close(fd);
  Inserts("acme/a.db", 1, 50);
  ASSERT_TRUE(WaitConverged(replica1_, {"acme/a.db"}, 30s, &why)) << why << replica1_.daemon->Describe();
  std::string log = replica1_.daemon->Log();
  EXPECT_NE(log.find("the checksum is"), std::string::npos) << replica1_.daemon->Describe();
  EXPECT_NE(primary_.daemon->Log().find("sending snapshot"), std::string::npos);
  ExpectIdentical(replica1_, {"acme/a.db"});
}

}  // namespace
}  // namespace it

// Transaction capture, end to end (SPEC "The mount": `<db>-pos`; tenancy/FORMAT.md;
// tenancy/capture.h; host/replay_command.cc): a real daemon, real SQLite clients in
// several processes, and `tenantfs replay` of the retention log.
//
//  * CaptureWorkload: per journal mode, 3 processes x ~800 random transactions
//    (tests/integration/capture_client.cc). Afterwards the log replays to the backing
//    file byte for byte, replay prints the `-pos` position, the `-pos` checksum equals
//    the test's own recomputation, the TXID counts exactly the data-changing commits
//    (plus at most one per VACUUM-like statement or spilling rollback), integrity ok.
//  * CapturePos: `-pos` of a missing / empty / new database, TXID per single-row
//    commit, nothing for rollbacks, read-only or no-op transactions; a rollback that
//    leaves reused free-list pages changed moves it exactly when the bytes changed.
//  * CaptureSpill: a transaction that spills and then rewrites a spilled page (in WAL
//    mode: frames written with zero salts, fixed after the commit frame) is captured.
//  * CaptureKill: kill -9 of the daemon at random points of a multi-process workload,
//    then restart: every acknowledged commit is there, `-pos` matches the file, the
//    log replays to the file.
//  * CaptureCorruptLog: a flipped bit, a cut, a rewritten checksum in a copy of a log
//    make `tenantfs replay` fail (exit 1, one clear line), never succeed with a wrong
//    file; a daemon restarted on a damaged log keeps it (or refuses the database loudly).
//
// The whole binary is labelled slow (the workload cases take ~2 minutes each).
//
// Every daemon runs with TENANTFS_VERIFY_CHECKSUMS=1 (it recomputes the full checksum
// after each commit and logs "verify: checksum mismatch" on disagreement); every test
// asserts its logs never say "checksum mismatch".
//
// Seeds: TENANTFS_CAPTURE_SEED fixes the workload and kill-time seeds (default: from
// the clock, printed). TENANTFS_CAPTURE_TXNS (per client, default 800) and
// TENANTFS_CAPTURE_KILL_TRIALS (per mode, default 6) scale the workload.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <random>
#include <thread>

#include "capture_util.h"
#include "harness.h"
#include "tenancy/changeset.h"
#include "tenancy/crc64.h"

namespace {

using namespace std::chrono_literals;

constexpr const char* kCaptureClient = CAPTURE_CLIENT_BIN;

long long EnvInt(const char* name, long long dflt) {
  const char* v = getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}

uint64_t BaseSeed() {
  static const uint64_t seed = [] {
    uint64_t s = static_cast<uint64_t>(EnvInt("TENANTFS_CAPTURE_SEED", 0));
    if (s == 0) {
      s = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007ull;
    }
    std::cerr << "[capture] seed " << s << " (TENANTFS_CAPTURE_SEED=" << s << " repeats it)\n";
    return s;
  }();
  return seed;
}

double Seconds(it::Clock::time_point since) {
  return std::chrono::duration<double>(it::Clock::now() - since).count();
}

// The counters a `capture_client work` prints last.
struct Done {
  bool ok = false;
  long long counted = 0, maint = 0, ckpt = 0, rollbacks = 0, reads = 0, reopens = 0, risky = 0;
};

Done ParseDone(const std::string& out) {
  Done d;
  for (const std::string& line : it::SplitLines(out)) {
    if (sscanf(line.c_str(),
               "done counted=%lld maint=%lld ckpt=%lld rollbacks=%lld reads=%lld reopens=%lld risky=%lld",
               &d.counted, &d.maint, &d.ckpt, &d.rollbacks, &d.reads, &d.reopens, &d.risky) == 7) {
      d.ok = true;
    }
  }
  return d;
}

// The last "committed N" (acknowledged commits); 0 if none.
long long LastCommitted(const std::string& out) {
  long long last = 0;
  for (const std::string& line : it::SplitLines(out)) {
    long long n;
    if (sscanf(line.c_str(), "committed %lld", &n) == 1) last = n;
  }
  return last;
}

long long LastMaint(const std::string& out) {
  long long last = 0;
  for (const std::string& line : it::SplitLines(out)) {
    long long n;
    if (sscanf(line.c_str(), "maint %lld", &n) == 1) last = n;
  }
  return last;
}

// The lines of `log` that contain `needle` (the first 10, then how many more).
std::string Grep(const std::string& log, const std::string& needle) {
  std::string out;
  int n = 0;
  for (const std::string& line : it::SplitLines(log)) {
    if (line.find(needle) == std::string::npos) continue;
    if (++n <= 10) out += line + "\n";
  }
  if (n > 10) out += "... and " + std::to_string(n - 10) + " more such lines\n";
  return out;
}

class CaptureBase : public it::MountTest {
 protected:
  void SetUp() override {
    // The harness passes its own environment on to the daemon.
    setenv("TENANTFS_VERIFY_CHECKSUMS", "1", 1);
    it::MountTest::SetUp();
  }
  void TearDown() override {
    it::MountTest::TearDown();
    if (daemon_) ExpectNoChecksumMismatch("at the end");
    unsetenv("TENANTFS_VERIFY_CHECKSUMS");
  }

  // Every log of this test's daemons so far (earlier runs were saved before restarts).
  std::string AllLogs() const { return earlier_logs_ + (daemon_ ? daemon_->Log() : ""); }
  void SaveLogBeforeRestart() { earlier_logs_ += daemon_->Log(); }
  void ExpectNoChecksumMismatch(const std::string& when) {
    std::string bad = Grep(AllLogs(), "checksum mismatch");
    EXPECT_EQ(bad, "") << "the daemon (TENANTFS_VERIFY_CHECKSUMS=1) reported checksum mismatches "
                       << when << ":\n" << bad;
    if (!allow_capture_failed_) {
      std::string failed = Grep(AllLogs(), "capture failed");
      EXPECT_EQ(failed, "") << "capture failed " << when << ":\n" << failed;
    }
  }

  cap::Pos ReadPos(const std::string& rel) { return cap::ParsePos(it::ReadFile(Mnt(rel) + "-pos")); }

  it::Result Replay(const std::string& rel, const std::string& out, const std::string& data_dir = "") {
    return it::Run({it::kTenantfsBin, "replay", "--data-dir", data_dir.empty() ? scratch_->data() : data_dir,
                    rel, out},
                   300s);
  }

  // The whole check of a database at rest (no client has it open): its WAL is gone,
  // integrity_check ok, `-pos` equals the test's own checksum of the backing file, and
  // replay of the log gives the same bytes and prints the same position.
  void ExpectCapturedExactly(const std::string& rel, const std::string& what) {
    SCOPED_TRACE(what + ": " + rel);
    const std::string db = Mnt(rel);
    const std::string backing = Backing(rel);
    it::Result ic = it::Sql(db, "PRAGMA integrity_check");
    EXPECT_TRUE(ic.Ok() && it::Trim(ic.out) == "ok") << "integrity_check" << ic.Describe();
    for (int i = 0; i < 3 && it::Exists(backing + "-wal"); ++i) {
      it::Result c = it::Sql(db, "SELECT count(*) FROM sqlite_schema");  // open + close: checkpoint
      EXPECT_TRUE(c.Ok()) << c.Describe();
    }
    EXPECT_FALSE(it::Exists(backing + "-wal")) << "the WAL was not checkpointed away by the last close";
    cap::Pos pos = ReadPos(rel);
    ASSERT_TRUE(pos.ok) << "-pos reads '" << pos.text << "'";
    cap::Sum own = cap::ChecksumOf(backing);
    ASSERT_TRUE(own.ok) << own.error;
    EXPECT_EQ(cap::Hex16(pos.checksum), cap::Hex16(own.checksum))
        << "-pos checksum differs from the checksum of the backing file (" << own.pages << " pages of "
        << own.page_size << ")";
    const std::string out = scratch_->WorkPath("replay-" + std::to_string(++replays_) + ".db");
    it::Result r = Replay(rel, out);
    ASSERT_TRUE(r.Ok()) << "replay of the log failed" << r.Describe();
    EXPECT_EQ(r.out, pos.text) << "replay's position differs from -pos";
    EXPECT_EQ(cap::CompareFiles(out, backing), "") << "replay does not reproduce the backing file";
    std::error_code ec;
    std::filesystem::remove(out, ec);
  }

  std::string earlier_logs_;
  int replays_ = 0;
  bool allow_capture_failed_ = false;  // a test that damages a log on purpose
};

// Sanity of the test's own CRC against the library and the catalogue check value.
TEST(CaptureChecksum, OwnCrcMatchesTheLibrary) {
  EXPECT_EQ(cap::Crc64("123456789", 9), 0xB90956C775A41001ull);
  EXPECT_EQ(tenancy::Crc64("123456789", 9), 0xB90956C775A41001ull);
  std::mt19937_64 rng(7);
  std::string page(4096, '\0');
  for (char& c : page) c = static_cast<char>(rng());
  for (uint32_t pgno : {1u, 2u, 262145u, 0xffffffffu}) {
    EXPECT_EQ(cap::PageCrc(pgno, page.data(), page.size()), tenancy::PageCrc(pgno, page.data(), page.size()));
  }
  EXPECT_EQ(cap::kEmpty, tenancy::kEmptyChecksum);
  EXPECT_EQ(cap::LockPage(4096), tenancy::LockPage(4096));
}

// ============================================================== 1. random workload

struct WorkloadCase {
  const char* name;
  const char* mode;
  bool incremental;        // auto_vacuum=INCREMENTAL + PRAGMA incremental_vacuum
  bool page_size_changes;  // PRAGMA page_size=X; VACUUM
  int page_size;           // at creation (0: SQLite's default)
};

class CaptureWorkload : public CaptureBase, public ::testing::WithParamInterface<WorkloadCase> {};

TEST_P(CaptureWorkload, ReplayReproducesTheDatabaseAndPosCountsCommits) {
  const WorkloadCase& c = GetParam();
  const auto started = it::Clock::now();
  MakeTenant("w");
  const std::string rel = "w/work.db";
  const std::string db = Mnt(rel);
  std::vector<std::string> init{kCaptureClient, "init", db, c.mode};
  if (c.incremental) init.push_back("--incremental");
  if (c.page_size) {
    init.push_back("--page-size");
    init.push_back(std::to_string(c.page_size));
  }
  it::Result ir = it::Run(init, 60s);
  ASSERT_TRUE(ir.Ok()) << ir.Describe() << daemon_->Describe();
  cap::Pos base = ReadPos(rel);
  ASSERT_TRUE(base.ok) << base.text;

  const int kClients = 3;
  const long long txns = EnvInt("TENANTFS_CAPTURE_TXNS", 800);
  const uint64_t seed = BaseSeed() + std::hash<std::string>{}(c.name) % 1000;
  std::vector<it::Child> clients;
  for (int i = 1; i <= kClients; ++i) {
    std::vector<std::string> argv{kCaptureClient, "work", db, c.mode, std::to_string(i),
                                  std::to_string(seed), std::to_string(txns), "150"};
    if (c.incremental) argv.push_back("--incremental");
    if (c.page_size_changes) argv.push_back("--page-size-changes");
    clients.push_back(it::Spawn(argv));
  }
  Done total;
  std::map<int, long long> per_client;
  for (int i = 0; i < kClients; ++i) {
    it::Result r = clients[i].Wait(300s);
    ASSERT_TRUE(r.Ok()) << "client " << i + 1 << " failed" << r.Describe() << daemon_->Describe();
    Done d = ParseDone(r.out);
    ASSERT_TRUE(d.ok) << r.Describe();
    per_client[i + 1] = d.counted;
    total.counted += d.counted;
    total.maint += d.maint;
    total.ckpt += d.ckpt;
    total.rollbacks += d.rollbacks;
    total.reads += d.reads;
    total.reopens += d.reopens;
    total.risky += d.risky;
  }
  const double work_s = Seconds(started);
  std::cerr << "[capture] " << c.name << ": " << total.counted << " counted commits, " << total.maint
            << " VACUUM-like, " << total.ckpt << " checkpoints, " << total.rollbacks << " rollbacks, "
            << " (" << total.risky << " of them spilling with free pages around), " << total.reads
            << " read-only tx, " << total.reopens << " reopens in " << work_s << " s\n";
  // A time-bounded run must still be a real workload.
  EXPECT_GE(total.counted, 600) << "too few transactions for a meaningful run";

  // Every counted commit is there, exactly once (acks rows are never deleted).
  std::string acks = it::SqlOk(db, "SELECT client, count(*), max(seq) FROM acks GROUP BY client ORDER BY client");
  std::string want;
  for (auto& [client, n] : per_client) {
    if (n > 0) want += std::to_string(client) + "|" + std::to_string(n) + "|" + std::to_string(n) + "\n";
  }
  EXPECT_EQ(acks + "\n", want) << "committed transactions missing or extra";

  ExpectCapturedExactly(rel, "after the workload");
  cap::Pos pos = ReadPos(rel);
  ASSERT_TRUE(pos.ok);
  // TXID counts committed write transactions: each counted one changed the database;
  // VACUUM / incremental_vacuum may or may not have; checkpoints, read-only
  // transactions and rollbacks never do -- except a rollback-mode rollback that spilled
  // reused free-list pages to the file: SQLite does not restore those, the file's bytes
  // changed, and the daemon records that as a change set of its own (see
  // CapturePos.RollbackThatReusedFreePages).
  uint64_t moved = pos.txid - base.txid;
  EXPECT_GE(moved, static_cast<uint64_t>(total.counted)) << "TXID moved less than the commits counted";
  EXPECT_LE(moved, static_cast<uint64_t>(total.counted + total.maint + total.risky))
      << "TXID moved more than commits + VACUUM-like statements + spilling rollbacks (base "
      << it::Trim(base.text) << ", now " << it::Trim(pos.text) << ")";
  ExpectNoChecksumMismatch("during the workload");

  // A clean restart changes nothing: same position, still replayable.
  StopDaemon();
  SaveLogBeforeRestart();
  std::string why;
  ASSERT_TRUE(RestartDaemon(&why)) << why;
  EXPECT_EQ(ReadPos(rel).text, pos.text) << "-pos changed across a clean restart";
  ExpectCapturedExactly(rel, "after a clean restart");
  std::cerr << "[capture] " << c.name << ": total " << Seconds(started) << " s\n";
}

INSTANTIATE_TEST_SUITE_P(Modes, CaptureWorkload,
                         ::testing::Values(WorkloadCase{"delete", "delete", false, true, 1024},
                                           WorkloadCase{"truncate", "truncate", false, false, 0},
                                           WorkloadCase{"persist_incremental", "persist", true, false, 0},
                                           WorkloadCase{"wal", "wal", false, false, 0},
                                           WorkloadCase{"wal_incremental", "wal", true, false, 0}),
                         [](const ::testing::TestParamInfo<WorkloadCase>& i) { return std::string(i.param.name); });

// ============================================================== 2. -pos

class CapturePos : public CaptureBase, public ::testing::WithParamInterface<const char*> {
 protected:
  // Runs SQL through a fresh connection in `mode` (the rollback modes are
  // per-connection settings), asserting success.
  void Exec(const std::string& db, const std::string& sql) {
    it::Result r = it::SqlClient({"exec", "--mode", GetParam(), db, sql});
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }
  // -pos equals (txid, own checksum of the backing file [+ its WAL]).
  void ExpectPos(const std::string& rel, uint64_t txid, const std::string& what, bool with_wal = false) {
    cap::Pos p = ReadPos(rel);
    ASSERT_TRUE(p.ok) << what << ": -pos reads '" << p.text << "'";
    EXPECT_EQ(p.txid, txid) << what << ": -pos is " << p.text;
    cap::Sum own = cap::ChecksumOf(Backing(rel), with_wal ? Backing(rel) + "-wal" : "");
    ASSERT_TRUE(own.ok) << own.error;
    EXPECT_EQ(cap::Hex16(p.checksum), cap::Hex16(own.checksum))
        << what << ": -pos checksum differs from the backing file's (" << own.pages << " pages of "
        << own.page_size << (own.from_wal ? ", with WAL frames" : "") << ")";
  }
};

TEST_P(CapturePos, CountsCommittedWriteTransactionsOnly) {
  const std::string mode = GetParam();
  MakeTenant("p");
  const std::string rel = "p/pos.db";
  const std::string db = Mnt(rel);

  // No database: no -pos either.
  errno = 0;
  int fd = ::open((db + "-pos").c_str(), O_RDONLY);
  int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_LT(fd, 0) << "-pos of a database that does not exist opened";
  EXPECT_EQ(err, ENOENT) << it::ErrnoName(err);

  // Opened by SQLite but never written: an empty file; -pos is TXID 0 and the empty checksum.
  {
    it::Result r = it::SqlClient({"exec", db, "SELECT 1"});
    ASSERT_TRUE(r.Ok()) << r.Describe();
    ASSERT_EQ(it::FileSize(Backing(rel)), 0) << "SQLite wrote to a database it only opened";
    EXPECT_EQ(it::ReadFile(db + "-pos"), "0000000000000000/8000000000000000\n");
  }

  // Setting the mode: nothing in a rollback mode (a per-connection setting); WAL mode
  // writes the header (file format 2) in one transaction.
  Exec(db, "SELECT 1");
  cap::Pos p0 = ReadPos(rel);
  ASSERT_TRUE(p0.ok) << p0.text;
  uint64_t txid = p0.txid;
  if (mode == "wal") {
    EXPECT_EQ(txid, 1u) << "switching an empty database to WAL is one write transaction";
  } else {
    EXPECT_EQ(p0.text, "0000000000000000/8000000000000000\n");
  }
  ExpectPos(rel, txid, "after setting journal_mode=" + mode);

  Exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)");
  ExpectPos(rel, ++txid, "after CREATE TABLE");

  // N single-row INSERT transactions: from separate processes, then in one connection.
  for (int i = 0; i < 10; ++i) {
    Exec(db, "INSERT INTO t(v, b) VALUES('row " + std::to_string(i) + "', randomblob(" +
                 std::to_string(i % 3 == 0 ? 9000 : 50) + "))");
    ExpectPos(rel, ++txid, "after INSERT #" + std::to_string(i + 1));
  }
  std::string many;
  for (int i = 0; i < 15; ++i) many += "INSERT INTO t(v) VALUES('one connection " + std::to_string(i) + "');";
  Exec(db, many);
  txid += 15;
  ExpectPos(rel, txid, "after 15 autocommit INSERTs in one connection");
  EXPECT_EQ(it::SqlOk(db, "SELECT count(*) FROM t"), "25");

  // Nothing of these moves it.
  Exec(db, "BEGIN; INSERT INTO t(v) VALUES('rolled back'); ROLLBACK;");
  ExpectPos(rel, txid, "after BEGIN; INSERT; ROLLBACK");
  Exec(db,
       "PRAGMA cache_size=4; BEGIN IMMEDIATE;"
       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200)"
       " INSERT INTO t(v, b) SELECT 'spilled', randomblob(3000) FROM c;"
       "UPDATE t SET b = randomblob(5000) WHERE id <= 25; ROLLBACK;");
  ExpectPos(rel, txid, "after a rolled-back transaction that spilled pages");
  Exec(db, "BEGIN; SELECT count(*) FROM t; SELECT sum(length(b)) FROM t; COMMIT;");
  ExpectPos(rel, txid, "after a read-only transaction");
  Exec(db, "UPDATE t SET v = 'never' WHERE 0");
  ExpectPos(rel, txid, "after UPDATE ... WHERE 0");
  Exec(db, "DELETE FROM t WHERE id < 0; BEGIN IMMEDIATE; COMMIT;");
  ExpectPos(rel, txid, "after a DELETE of nothing and an empty BEGIN IMMEDIATE; COMMIT");
  // A transaction whose statements were all rolled back to a savepoint still commits,
  // and SQLite then rewrites page 1 (the change counter): TXID moves exactly when the
  // bytes of the database did.
  {
    std::string before = it::ReadFile(Backing(rel));
    Exec(db, "SAVEPOINT a; INSERT INTO t(v) VALUES('x'); ROLLBACK TO a; RELEASE a;");
    bool changed = it::ReadFile(Backing(rel)) != before;
    ExpectPos(rel, changed ? ++txid : txid,
              std::string("after a savepoint rolled back to its start (the file ") +
                  (changed ? "changed" : "did not change") + ")");
  }
  EXPECT_EQ(it::SqlOk(db, "SELECT count(*) FROM t"), "25");

  // One more of each kind that does change something.
  Exec(db, "BEGIN; INSERT INTO t(v) VALUES('a'); INSERT INTO t(v) VALUES('b'); COMMIT;");
  ExpectPos(rel, ++txid, "after a two-statement transaction");
  Exec(db, "DELETE FROM t WHERE v = 'a'");
  ExpectPos(rel, ++txid, "after a DELETE of one row");
  Exec(db, "CREATE INDEX t_v ON t(v)");
  ExpectPos(rel, ++txid, "after CREATE INDEX");

  // In WAL mode, while another connection keeps the WAL from being checkpointed away,
  // -pos follows the WAL: the checksum is that of the database SQLite reads.
  if (mode == "wal") {
    const std::string stop = scratch_->WorkPath("stop-holder");
    it::Child holder = it::Spawn({it::kSqlClientBin, "hold-open", db, stop});
    auto deadline = it::Clock::now() + 20s;
    while (holder.Stdout().find("open") == std::string::npos && holder.Running() && it::Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_NE(holder.Stdout().find("open"), std::string::npos) << holder.Wait(1s).Describe();
    for (int i = 0; i < 5; ++i) {
      Exec(db, "INSERT INTO t(v, b) VALUES('held " + std::to_string(i) + "', randomblob(6000))");
      ExpectPos(rel, ++txid, "WAL held open: after INSERT #" + std::to_string(i + 1), /*with_wal=*/true);
    }
    Exec(db, "BEGIN; DELETE FROM t WHERE v LIKE 'held%'; ROLLBACK;");
    ExpectPos(rel, txid, "WAL held open: after a rollback", true);
    it::WriteFile(stop, "stop\n");
    it::Result h = holder.Wait(30s);
    EXPECT_TRUE(h.Ok()) << h.Describe();
  }
  ExpectCapturedExactly(rel, "at the end");
  ExpectPos(rel, txid, "at the end");
}

// A ROLLBACK that changes the file. A transaction takes pages from the free list and,
// with a tiny page cache, writes them to the database file before its ROLLBACK. SQLite
// does not journal a reused free-list page's old content (it is meaningless), so the
// rollback leaves those pages with the new bytes: the database is logically unchanged
// but its file is not. SPEC says TXID counts committed write transactions; the
// checksum must still be the file's. What the daemon must do: -pos checksum == the
// file's, the log replays to the file, and TXID moves exactly when the bytes did (by
// one at most). In WAL mode the rollback never touches the database file.
TEST_P(CapturePos, RollbackThatReusedFreePages) {
  const std::string mode = GetParam();
  MakeTenant("p");
  const std::string rel = "p/free.db";
  const std::string db = Mnt(rel);
  Exec(db,
       "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200)"
       " INSERT INTO t(v) SELECT randomblob(3000) FROM c;"
       "DELETE FROM t WHERE id > 20;");
  ASSERT_NE(it::SqlOk(db, "PRAGMA freelist_count"), "0");
  it::Sql(db, "SELECT 1");  // WAL: checkpoint away, so the backing file is the database
  cap::Pos before = ReadPos(rel);
  ASSERT_TRUE(before.ok);
  const std::string bytes_before = it::ReadFile(Backing(rel));
  Exec(db,
       "PRAGMA cache_size=4; BEGIN IMMEDIATE;"
       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100)"
       " INSERT INTO t(v) SELECT randomblob(3000) FROM c;"
       "ROLLBACK;");
  it::Sql(db, "SELECT 1");
  const std::string bytes_after = it::ReadFile(Backing(rel));
  int changed_pages = 0;
  for (size_t off = 0; off < std::max(bytes_before.size(), bytes_after.size()); off += 4096) {
    if (bytes_before.substr(std::min(off, bytes_before.size()), 4096) !=
        bytes_after.substr(std::min(off, bytes_after.size()), 4096)) {
      ++changed_pages;
    }
  }
  EXPECT_EQ(it::SqlOk(db, "SELECT count(*) FROM t"), "20");
  cap::Pos after = ReadPos(rel);
  ASSERT_TRUE(after.ok);
  std::cerr << "[capture] " << mode << ": the ROLLBACK changed " << changed_pages << " pages of the file; -pos "
            << it::Trim(before.text) << " -> " << it::Trim(after.text) << "\n";
  EXPECT_EQ(after.txid, before.txid + (changed_pages > 0 ? 1 : 0))
      << "the rollback changed " << changed_pages << " pages of the file; -pos went from " << it::Trim(before.text)
      << " to " << it::Trim(after.text);
  if (mode == "wal") {
    EXPECT_EQ(changed_pages, 0) << "a WAL rollback wrote to the database file";
  }
  ExpectCapturedExactly(rel, "after the rollback");
}

INSTANTIATE_TEST_SUITE_P(Modes, CapturePos, ::testing::ValuesIn(it::kJournalModes),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// A transaction whose dirty pages overflow the page cache writes them to the
// database file (rollback modes) or the WAL before COMMIT; when it then changes a page
// it already spilled, SQLite rewrites that page in place. In WAL mode it then writes
// the following frames, the commit frame included, with zero salts and checksums and
// fixes their headers only after the commit frame is written (walRewriteChecksums).
// One such transaction, then the last connection closes (checkpoint, WAL deleted):
// exactly one more TXID, and -pos and the log still describe the file.
class CaptureSpill : public CaptureBase, public ::testing::WithParamInterface<const char*> {};

TEST_P(CaptureSpill, TransactionRewritingSpilledPagesIsCaptured) {
  const std::string mode = GetParam();
  MakeTenant("s");
  const std::string rel = "s/spill.db";
  const std::string db = Mnt(rel);
  it::Result r = it::SqlClient({"exec", "--mode", mode, db,
                                "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
                                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)"
                                " INSERT INTO t(v) SELECT randomblob(300) FROM c;"});
  ASSERT_TRUE(r.Ok()) << r.Describe();
  cap::Pos before = ReadPos(rel);
  ASSERT_TRUE(before.ok) << before.text;
  r = it::SqlClient({"exec", "--mode", mode, db,
                     "PRAGMA cache_size=2; BEGIN;"
                     "UPDATE t SET v = randomblob(300);"
                     "UPDATE t SET v = randomblob(300);"
                     "COMMIT;"});
  ASSERT_TRUE(r.Ok()) << r.Describe();
  cap::Pos after = ReadPos(rel);
  ASSERT_TRUE(after.ok) << after.text;
  EXPECT_EQ(after.txid, before.txid + 1) << "one committed transaction: -pos went from " << it::Trim(before.text)
                                         << " to " << it::Trim(after.text);
  ExpectCapturedExactly(rel, "after the spilling transaction");
}

INSTANTIATE_TEST_SUITE_P(Modes, CaptureSpill, ::testing::ValuesIn(it::kJournalModes),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ============================================================== 3. kill -9 of the daemon

class CaptureKill : public CaptureBase, public ::testing::WithParamInterface<const char*> {};

TEST_P(CaptureKill, Kill9AtRandomPointsThenRestart) {
  const std::string mode = GetParam();
  const bool incremental = mode == "persist";
  const bool page_size_changes = mode == "delete";
  const int trials = static_cast<int>(EnvInt("TENANTFS_CAPTURE_KILL_TRIALS", 6));
  const uint64_t seed = BaseSeed() + std::hash<std::string>{}(mode) % 1000;
  std::mt19937_64 rng(seed);
  MakeTenant("k");
  const std::string rel = "k/kill.db";
  const std::string db = Mnt(rel);
  std::vector<std::string> init{kCaptureClient, "init", db, mode};
  if (incremental) init.push_back("--incremental");
  it::Result ir = it::Run(init, 60s);
  ASSERT_TRUE(ir.Ok()) << ir.Describe();

  const int kClients = 3;
  std::map<long long, long long> acked;  // client id -> acknowledged commits
  for (int trial = 1; trial <= trials; ++trial) {
    const auto t0 = it::Clock::now();
    const int delay_ms = static_cast<int>(rng() % 2500);
    SCOPED_TRACE("trial " + std::to_string(trial) + " (" + mode + ", seed " + std::to_string(seed) +
                 ", kill " + std::to_string(delay_ms) + " ms after every client committed)");
    std::vector<it::Child> clients;
    std::vector<long long> ids;
    for (int i = 1; i <= kClients; ++i) {
      long long id = trial * 10 + i;
      ids.push_back(id);
      std::vector<std::string> argv{kCaptureClient, "work", db, mode, std::to_string(id),
                                    std::to_string(seed + static_cast<uint64_t>(trial)), "1000000", "60",
                                    "--sync", "full"};
      if (incremental) argv.push_back("--incremental");
      if (page_size_changes) argv.push_back("--page-size-changes");
      clients.push_back(it::Spawn(argv));
    }
    auto deadline = it::Clock::now() + 30s;
    for (int i = 0; i < kClients; ++i) {
      while (LastCommitted(clients[i].Stdout()) < 1 && clients[i].Running() && it::Clock::now() < deadline) {
        std::this_thread::sleep_for(5ms);
      }
      ASSERT_GE(LastCommitted(clients[i].Stdout()), 1)
          << "client " << ids[i] << " is not committing" << clients[i].Wait(1s).Describe() << daemon_->Describe();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    it::Result killed = daemon_->Kill9();
    stopped_on_purpose_ = true;
    ASSERT_EQ(killed.signal, SIGKILL) << killed.Describe();
    long long maint = 0;
    for (int i = 0; i < kClients; ++i) {
      it::Result r = clients[i].Wait(30s);
      EXPECT_FALSE(r.timed_out) << "client hung after the daemon died" << r.Describe();
      acked[ids[i]] = LastCommitted(r.out);
      maint += LastMaint(r.out);
    }
    SaveLogBeforeRestart();
    ExpectNoChecksumMismatch("before the kill");

    std::string why;
    ASSERT_TRUE(RestartDaemon(&why)) << why;

    // integrity_check first: this open rolls back a hot journal or recovers the WAL,
    // and its close checkpoints the WAL away.
    it::Result ic = it::Sql(db, "PRAGMA integrity_check");
    ASSERT_TRUE(ic.Ok() && it::Trim(ic.out) == "ok") << "integrity_check after restart" << ic.Describe()
                                                     << daemon_->Describe();
    // Every acknowledged commit of every trial so far, and at most one more per client.
    std::string got = it::SqlOk(db, "SELECT client, count(*), max(seq) FROM acks GROUP BY client ORDER BY client");
    std::map<long long, std::pair<long long, long long>> rows;
    for (const std::string& line : it::SplitLines(got)) {
      long long cl, n, mx;
      if (sscanf(line.c_str(), "%lld|%lld|%lld", &cl, &n, &mx) == 3) rows[cl] = {n, mx};
    }
    for (auto& [client, n] : acked) {
      auto [count, max] = rows.count(client) ? rows[client] : std::make_pair(0LL, 0LL);
      EXPECT_GE(count, n) << "client " << client << ": acknowledged " << n << " commits, " << count
                          << " are there (max seq " << max << ")";
      EXPECT_EQ(count, max) << "client " << client << ": gaps in its commits";
      EXPECT_LE(max, n + 1) << "client " << client << ": more commits than it made";
    }
    ExpectCapturedExactly(rel, "trial " + std::to_string(trial) + " after kill -9 and restart");
    ExpectNoChecksumMismatch("after the restart");
    if (HasFatalFailure()) return;
    std::cerr << "[capture] kill " << mode << " trial " << trial << ": killed after " << delay_ms << " ms, acked "
              << [&] {
                   std::string s;
                   for (long long id : ids) s += std::to_string(acked[id]) + " ";
                   return s;
                 }()
              << "(+" << maint << " VACUUM-like), -pos " << it::Trim(ReadPos(rel).text) << ", " << Seconds(t0)
              << " s\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, CaptureKill, ::testing::ValuesIn(it::kJournalModes),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ============================================================== 4. corrupt logs

class CaptureCorruptLog : public CaptureBase {
 protected:
  std::string LogDir(const std::string& data, const std::string& rel) { return data + "/log/" + rel; }

  // A fresh copy of the log of `rel` as the only content of a new data dir.
  std::string CopyLog(const std::string& rel, const std::string& name) {
    std::string data = scratch_->WorkPath("corrupt-" + name);
    std::filesystem::create_directories(LogDir(data, rel));
    for (const auto& e : std::filesystem::directory_iterator(LogDir(scratch_->data(), rel))) {
      std::filesystem::copy_file(e.path(), LogDir(data, rel) + "/" + e.path().filename().string());
    }
    return data;
  }
};

std::string Slurp(const std::string& path) { return it::ReadFile(path); }
void Spit(const std::string& path, const std::string& bytes) { it::WriteFile(path, bytes); }

void FlipBit(const std::string& path, uint64_t offset, int bit) {
  std::string b = Slurp(path);
  ASSERT_LT(offset, b.size());
  b[offset] = static_cast<char>(b[offset] ^ (1 << bit));
  Spit(path, b);
}

void Cut(const std::string& path, uint64_t size) { std::filesystem::resize_file(path, size); }

// Replaces record `k` of a segment by `fn(decoded)` re-encoded: a self-consistent
// record (valid CRC) that lies.
void Rewrite(const cap::Segment& seg, size_t k, const std::function<void(tenancy::ChangeSet&)>& fn) {
  std::string b = Slurp(seg.path);
  const cap::Record& r = seg.records.at(k);
  auto cs = tenancy::DecodeChangeSet(std::string_view(b).substr(r.offset + 4, r.len));
  ASSERT_TRUE(cs.ok()) << cs.status().ToString();
  tenancy::ChangeSet c = cs.value();
  fn(c);
  std::string enc = tenancy::EncodeChangeSet(c);
  uint32_t len = static_cast<uint32_t>(enc.size());
  std::string framed(4, '\0');
  std::memcpy(framed.data(), &len, 4);
  framed += enc;
  b.replace(r.offset, 4 + r.len, framed);
  Spit(seg.path, b);
}

// Removes records [k, k + n) of a segment.
void DropRecords(const cap::Segment& seg, size_t k, size_t n) {
  std::string b = Slurp(seg.path);
  uint64_t from = seg.records.at(k).offset;
  uint64_t to = k + n < seg.records.size() ? seg.records[k + n].offset : b.size();
  b.erase(from, to - from);
  Spit(seg.path, b);
}

void SwapRecords(const cap::Segment& seg, size_t k) {
  std::string b = Slurp(seg.path);
  const cap::Record& x = seg.records.at(k);
  const cap::Record& y = seg.records.at(k + 1);
  std::string rx = b.substr(x.offset, 4 + x.len), ry = b.substr(y.offset, 4 + y.len);
  b.replace(x.offset, rx.size() + ry.size(), ry + rx);
  Spit(seg.path, b);
}

// The offset (in the segment) of the first page-image byte of record k's first block.
uint64_t FirstImageByte(const cap::Segment& seg, size_t k) {
  std::string b = Slurp(seg.path);
  const cap::Record& r = seg.records.at(k);
  const char* rec = b.data() + r.offset + 4;
  uint16_t header_len;
  uint32_t page_count;
  std::memcpy(&header_len, rec + 6, 2);
  std::memcpy(&page_count, rec + 20, 4);
  return r.offset + 4 + header_len + uint64_t{page_count} * 4 + 8;
}

TEST_F(CaptureCorruptLog, ReplayRejectsCorruptChangeSets) {
  MakeTenant("c");
  // small.db: one segment, 42 records.
  const std::string small = "c/small.db";
  {
    it::Result r = it::SqlClient({"exec", "--mode", "delete", Mnt(small), "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"});
    ASSERT_TRUE(r.Ok()) << r.Describe();
    for (int i = 0; i < 41; ++i) {
      r = it::SqlClient({"exec", "--mode", "delete", Mnt(small),
                         "BEGIN; INSERT INTO t(v) VALUES(randomblob(" + std::to_string(i % 4 == 0 ? 9000 : 300) +
                             ")); UPDATE t SET v = zeroblob(100) || v WHERE id = " + std::to_string(i / 2 + 1) +
                             "; COMMIT;"});
      ASSERT_TRUE(r.Ok()) << r.Describe();
    }
  }
  // big.db: several 4 MiB segments (incompressible rows).
  const std::string big = "c/big.db";
  {
    it::Result r = it::SqlClient({"exec", "--mode", "wal", Mnt(big),
                                  "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"});
    ASSERT_TRUE(r.Ok()) << r.Describe();
    std::string sql;
    for (int i = 0; i < 110; ++i) sql += "INSERT INTO t(v) VALUES(randomblob(120000));";
    r = it::SqlClient({"exec", "--mode", "wal", Mnt(big), sql});
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }
  cap::Pos small_pos = ReadPos(small), big_pos = ReadPos(big);
  ASSERT_TRUE(small_pos.ok && big_pos.ok);
  ExpectCapturedExactly(small, "before corrupting copies");
  ExpectCapturedExactly(big, "before corrupting copies");
  StopDaemon();  // the logs are at rest from here on
  SaveLogBeforeRestart();

  auto small_log = cap::ReadLog(LogDir(scratch_->data(), small));
  auto big_log = cap::ReadLog(LogDir(scratch_->data(), big));
  ASSERT_EQ(small_log.size(), 1u);
  ASSERT_TRUE(small_log[0].clean);
  ASSERT_EQ(small_log[0].records.size(), 42u);
  ASSERT_GE(big_log.size(), 3u) << "expected several segments";
  for (auto& s : big_log) ASSERT_TRUE(s.clean) << s.path;

  enum Expect { kMustFail, kTornTailTolerated };
  struct Case {
    std::string name;
    std::string rel;
    Expect expect;
    std::function<void(const std::vector<cap::Segment>&)> corrupt;  // gets the copy's segments
  };
  const size_t mid = 21;
  std::vector<Case> cases = {
      // A single segment (the active one), corruption in the middle: later records exist,
      // so this is no torn tail.
      {"flip_bit_in_page_image_of_middle_record", small, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, FirstImageByte(s[0], mid) + 100, 3); }},
      {"flip_bit_in_header_of_middle_record", small, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, s[0].records[mid].offset + 4 + 48, 0); }},  // max_txid
      {"flip_bit_in_crc_of_middle_record", small, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, s[0].records[mid].offset + 4 + s[0].records[mid].len - 16, 5); }},
      {"flip_bit_in_length_frame_of_middle_record", small, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, s[0].records[mid].offset, 2); }},
      {"cut_in_the_middle_of_a_middle_record_then_later_records", small, kMustFail,
       [&](auto& s) {
         std::string b = Slurp(s[0].path);
         const cap::Record& r = s[0].records[mid];
         b.erase(r.offset + 4 + r.len / 2, r.len / 4);  // a hole inside it; later records stay
         Spit(s[0].path, b);
       }},
      {"rewrite_post_checksum_of_middle_record_with_valid_crc", small, kMustFail,
       [&](auto& s) { Rewrite(s[0], mid, [](tenancy::ChangeSet& c) { c.post_checksum ^= 0x10; }); }},
      {"rewrite_pre_checksum_of_middle_record_with_valid_crc", small, kMustFail,
       [&](auto& s) { Rewrite(s[0], mid, [](tenancy::ChangeSet& c) { c.pre_checksum ^= 0x4000; }); }},
      {"rewrite_page_image_of_middle_record_with_valid_crc", small, kMustFail,
       [&](auto& s) { Rewrite(s[0], mid, [](tenancy::ChangeSet& c) { c.pages[c.pages.size() / 2] ^= 1; }); }},
      {"rewrite_post_checksum_of_last_record_with_valid_crc", small, kMustFail,
       [&](auto& s) { Rewrite(s[0], 41, [](tenancy::ChangeSet& c) { c.post_checksum ^= 0x2; }); }},
      {"drop_a_middle_record", small, kMustFail, [&](auto& s) { DropRecords(s[0], mid, 1); }},
      {"swap_two_middle_records", small, kMustFail, [&](auto& s) { SwapRecords(s[0], mid); }},
      // Damage of the newest record only looks like a crash mid-append: it may be cut
      // off, as long as replay then says where it stopped.
      {"flip_bit_in_page_image_of_last_record", small, kTornTailTolerated,
       [&](auto& s) { FlipBit(s[0].path, FirstImageByte(s[0], 41) + 10, 1); }},
      {"cut_inside_the_last_record", small, kTornTailTolerated,
       [&](auto& s) { Cut(s[0].path, s[0].bytes - 100); }},
      // Several segments: damage to an older one.
      {"flip_bit_in_first_segment", big, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, FirstImageByte(s[0], s[0].records.size() / 2) + 7, 6); }},
      {"cut_first_segment_inside_a_record", big, kMustFail,
       [&](auto& s) { Cut(s[0].path, s[0].bytes - 1000); }},
      {"cut_first_segment_at_a_record_boundary", big, kMustFail,
       [&](auto& s) { Cut(s[0].path, s[0].records.back().offset); }},
      {"flip_bit_in_last_record_of_first_segment", big, kMustFail,
       [&](auto& s) { FlipBit(s[0].path, FirstImageByte(s[0], s[0].records.size() - 1) + 3, 0); }},
      {"delete_a_middle_segment", big, kMustFail, [&](auto& s) { std::filesystem::remove(s[1].path); }},
      {"delete_the_first_segment", big, kMustFail, [&](auto& s) { std::filesystem::remove(s[0].path); }},
  };

  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string data = CopyLog(c.rel, c.name);
    auto segs = cap::ReadLog(LogDir(data, c.rel));
    c.corrupt(segs);
    if (HasFatalFailure()) return;
    const cap::Pos& orig = c.rel == small ? small_pos : big_pos;
    const std::string out = scratch_->WorkPath("out-" + c.name + ".db");
    it::Result r = Replay(c.rel, out, data);
    if (c.expect == kMustFail || !r.Ok()) {
      EXPECT_TRUE(r.exited && r.exit_code == 1)
          << "replay of a corrupt log must fail with exit status 1" << r.Describe();
      EXPECT_EQ(r.out, "") << "a failed replay must not print a position";
      std::vector<std::string> lines = it::SplitLines(r.err);
      EXPECT_EQ(lines.size(), 1u) << "expected one line on stderr" << r.Describe();
      EXPECT_EQ(r.err.rfind("tenantfs: replay: ", 0), 0u) << r.Describe();
      EXPECT_GT(r.err.size(), std::string("tenantfs: replay: \n").size() + 10) << r.Describe();
    } else {
      // Cut off as a torn tail: then the printed position says so, and the file is
      // what that position claims.
      cap::Pos p = cap::ParsePos(r.out);
      ASSERT_TRUE(p.ok) << r.Describe();
      EXPECT_LT(p.txid, orig.txid) << "replay claims the full position " << orig.text
                                   << " from a log whose last record is damaged";
      cap::Sum s = cap::ChecksumOf(out);
      ASSERT_TRUE(s.ok) << s.error;
      EXPECT_EQ(cap::Hex16(s.checksum), cap::Hex16(p.checksum)) << "the output is not at the printed position";
      std::cerr << "[capture] " << c.name << ": replay cut the damaged newest record off: exit 0, " << r.out;
    }
    std::cerr << "[capture] " << c.name << ": exit " << r.exit_code << ": " << it::Trim(r.err) << "\n";
  }

  // And the undamaged logs still replay exactly.
  std::string why;
  ASSERT_TRUE(RestartDaemon(&why)) << why;
  ExpectCapturedExactly(small, "after the corruption cases (originals untouched)");
  ExpectCapturedExactly(big, "after the corruption cases (originals untouched)");
}

// The daemon itself, restarted (cleanly) on a log with a damaged record in the middle of
// its active segment: it must not cut the valid records after it away as if they were a
// torn tail, and it must not publish (or build on) a position the database is not at.
// Either it carries on with a correct position, or it refuses the database loudly (an
// ERROR naming the damage, -pos unreadable, writes fail and change nothing).
TEST_F(CaptureCorruptLog, DaemonRestartKeepsRecordsAfterACorruptOne) {
  MakeTenant("c");
  const std::string rel = "c/live.db";
  it::Result r = it::SqlClient({"exec", "--mode", "delete", Mnt(rel), "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"});
  ASSERT_TRUE(r.Ok()) << r.Describe();
  for (int i = 0; i < 19; ++i) {
    r = it::SqlClient({"exec", "--mode", "delete", Mnt(rel), "INSERT INTO t(v) VALUES(randomblob(700))"});
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }
  cap::Pos before = ReadPos(rel);
  ASSERT_EQ(before.txid, 20u) << before.text;
  StopDaemon();
  SaveLogBeforeRestart();

  auto segs = cap::ReadLog(LogDir(scratch_->data(), rel));
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(segs[0].records.size(), 20u);
  const cap::Record damaged = segs[0].records[10];  // TXID 11 of 20
  FlipBit(segs[0].path, FirstImageByte(segs[0], 10) + 50, 4);
  const std::string after_damage = Slurp(segs[0].path);

  std::string why;
  ASSERT_TRUE(RestartDaemon(&why)) << why;
  cap::Pos pos = ReadPos(rel);
  std::string now = Slurp(segs[0].path);
  EXPECT_EQ(now.size(), after_damage.size())
      << "the daemon cut its log at the damaged record (offset " << damaged.offset << "): "
      << after_damage.size() - std::min(after_damage.size(), now.size())
      << " bytes of valid later change sets (TXIDs 12..20) are gone" << daemon_->Describe();
  const std::string file_before_write = it::ReadFile(Backing(rel));
  if (!pos.ok) {
    // Refusing the database is fine, if it is loud and complete: an ERROR naming the
    // damage, no position, and no write gets through unrecorded.
    std::string errors = Grep(AllLogs(), "corrupt");
    EXPECT_NE(errors, "") << "-pos is unreadable ('" << pos.text << "') but the log names no corruption"
                          << daemon_->Describe();
    allow_capture_failed_ = true;
    r = it::SqlClient({"exec", "--mode", "delete", Mnt(rel), "INSERT INTO t(v) VALUES(randomblob(700))"});
    EXPECT_FALSE(r.Ok()) << "a write to a database whose log is damaged went through" << daemon_->Describe();
    EXPECT_EQ(it::ReadFile(Backing(rel)) == file_before_write, true) << "the refused write changed the file";
    EXPECT_EQ(Slurp(segs[0].path), after_damage) << "the damaged log was modified";
    std::cerr << "[capture] daemon restart on a damaged log: the database is refused; -pos unreadable; "
              << "the write failed: " << it::Trim(r.err) << "\n  daemon: " << errors;
    return;
  }
  cap::Sum own = cap::ChecksumOf(Backing(rel));
  ASSERT_TRUE(own.ok) << own.error;
  EXPECT_EQ(cap::Hex16(pos.checksum), cap::Hex16(own.checksum))
      << "-pos (" << it::Trim(pos.text) << ", was " << it::Trim(before.text)
      << " before the restart) is not the position of the database file" << daemon_->Describe();
  EXPECT_GE(pos.txid, before.txid) << "TXID went backwards across a clean restart";

  // Writing on: whatever the daemon did about the damage, -pos must follow the file.
  r = it::SqlClient({"exec", "--mode", "delete", Mnt(rel), "INSERT INTO t(v) VALUES(randomblob(700))"});
  ASSERT_TRUE(r.Ok()) << r.Describe() << daemon_->Describe();
  cap::Pos next = ReadPos(rel);
  cap::Sum own2 = cap::ChecksumOf(Backing(rel));
  ASSERT_TRUE(next.ok && own2.ok);
  EXPECT_EQ(cap::Hex16(next.checksum), cap::Hex16(own2.checksum))
      << "-pos after one more commit (" << it::Trim(next.text) << ") is not the database's" << daemon_->Describe();
  EXPECT_GT(next.txid, pos.txid);
  std::cerr << "[capture] daemon restart on a damaged log: -pos " << it::Trim(before.text) << " -> "
            << it::Trim(pos.text) << " -> " << it::Trim(next.text) << "; segment " << after_damage.size()
            << " -> " << now.size() << " bytes\n";
}

}  // namespace

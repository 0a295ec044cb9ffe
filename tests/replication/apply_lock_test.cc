// ApplyLock against real SQLite readers in other processes (apply_lock_reader, plain
// libsqlite3) on a plain temp directory: no FUSE needed, the kernel's lock table is the
// same one a tenantfs mount uses (fuse/README.md "Locks").
//
// The bank: a source database the test writes (accounts whose balances always sum to a
// constant, and a counter row), and a target that starts as its copy. Readers loop over
// the target checking the sum and the counter in one read transaction each, while the test
// repeatedly commits to the source and applies every page of it to the target under an
// ApplyLock, the way a replica applies a primary's pages.
//
// Built twice (tests/replication/CMakeLists.txt): apply_lock_test, and
// apply_lock_nolock_check with TENANTFS_APPLY_LOCK_SKIP_LOCKS_FOR_TEST, where ApplyLock
// takes no locks at all and the same bank must break (shows the test can fail).
#include "replication/apply_lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using replication::ApplyLock;
using tenancy::Status;
using Clock = std::chrono::steady_clock;

constexpr const char* kReader = APPLY_LOCK_READER_BIN;
constexpr int kAccounts = 1000;
constexpr long long kInitialBalance = 1000;
constexpr long long kTotal = kAccounts * kInitialBalance;

// ------------------------------------------------------------------ files and processes

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool Exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

[[maybe_unused]] void Touch(const std::string& p) { std::ofstream(p).put('\n'); }

bool AwaitFile(const std::string& p, Clock::duration limit) {
  auto end = Clock::now() + limit;
  while (!Exists(p)) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// OFD locks on `path` right now, from /proc/locks. SQLite takes classic POSIX locks, so
// every OFDLCK line on our files is ApplyLock's.
[[maybe_unused]] int OfdLocksOn(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  char id[64];
  snprintf(id, sizeof(id), " %02x:%02x:%lu ", major(st.st_dev), minor(st.st_dev),
           static_cast<unsigned long>(st.st_ino));
  std::ifstream f("/proc/locks");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    if (line.find("OFDLCK") != std::string::npos && line.find(id) != std::string::npos) ++n;
  }
  return n;
}

// Child processes of one test; whatever is still running at the end is killed.
class Children {
 public:
  ~Children() {
    for (pid_t pid : pids_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }

  // stdout to out_path, stderr to out_path + ".err".
  pid_t Spawn(const std::vector<std::string>& args, const std::string& out_path) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const std::string err_path = out_path + ".err";
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || err < 0) _exit(126);
      dup2(out, 1);
      dup2(err, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid > 0) pids_.push_back(pid);
    return pid;
  }

  // Exit code, or -1 if it did not exit within `limit` (then it is killed) or died of a
  // signal.
  int Wait(pid_t pid, Clock::duration limit) {
    auto end = Clock::now() + limit;
    int status = 0;
    for (;;) {
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      if (r < 0 || Clock::now() > end) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        status = -1;
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    std::erase(pids_, pid);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  std::vector<pid_t> pids_;
};

// ------------------------------------------------------------------ SQLite on the source

void Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  ASSERT_EQ(rc, SQLITE_OK) << sql << ": " << msg;
}

// The first column of the first row, as text ("" if none).
std::string QueryText(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    out = t ? reinterpret_cast<const char*>(t) : "";
  } else {
    out = std::string("error: ") + sqlite3_errmsg(db);
  }
  sqlite3_finalize(st);
  return out;
}

// The database the test commits to: the primary's side of the bank.
class Source {
 public:
  Source(const std::string& path, const std::string& mode) : wal_(mode == "wal") {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 10000);
    Exec(db_, "PRAGMA synchronous=OFF");  // the test needs commits, not durability
    Exec(db_, "PRAGMA journal_mode=" + mode);
    EXPECT_EQ(QueryText(db_, "PRAGMA journal_mode"), mode);
    Exec(db_,
         "BEGIN;"
         "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);"
         "CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
         "INSERT INTO counter VALUES (1, 0);"
         "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < " +
             std::to_string(kAccounts) + ") INSERT INTO accounts SELECT x, " +
             std::to_string(kInitialBalance) +
             ", randomblob(200) FROM i;"
             "COMMIT;");
  }
  ~Source() { sqlite3_close(db_); }

  // n transactions, each moving money between three random pairs of accounts (spread over
  // the table's pages) and bumping the counter.
  void Commit(int n, std::mt19937& rng) {
    std::uniform_int_distribution<int> id(1, kAccounts), amount(1, 100);
    for (int t = 0; t < n; ++t) {
      std::string sql = "BEGIN IMMEDIATE;";
      for (int k = 0; k < 3; ++k) {
        std::string a = std::to_string(amount(rng));
        sql += "UPDATE accounts SET balance = balance - " + a +
               " WHERE id = " + std::to_string(id(rng)) + ";";
        sql += "UPDATE accounts SET balance = balance + " + a +
               " WHERE id = " + std::to_string(id(rng)) + ";";
      }
      sql += "UPDATE counter SET n = n + 1 WHERE id = 1; COMMIT;";
      Exec(db_, sql);
    }
  }

  // WAL: everything committed into the database file, the WAL truncated.
  void Checkpoint() {
    if (wal_) {
      EXPECT_EQ(QueryText(db_, "PRAGMA wal_checkpoint(TRUNCATE)"), "0");
    }
  }

 private:
  sqlite3* db_ = nullptr;
  bool wal_;
};

uint32_t Get16(const uint8_t* p) { return (p[0] << 8) | p[1]; }

// Writes every page of the source database file into the target through `target_fd` (the
// applier's own fd, not the lock's) and truncates the target to the source's size.
// Returns the page count, or 0 on failure.
uint32_t CopyPages(const std::string& src_path, int target_fd) {
  int src = open(src_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) return 0;
  uint8_t hdr[100];
  uint32_t pages = 0;
  if (pread(src, hdr, sizeof(hdr), 0) == sizeof(hdr)) {
    uint32_t page_size = Get16(hdr + 16) == 1 ? 65536 : Get16(hdr + 16);
    off_t size = lseek(src, 0, SEEK_END);
    std::vector<uint8_t> page(page_size);
    pages = static_cast<uint32_t>(size / page_size);
    for (uint32_t i = 0; i < pages; ++i) {
      off_t off = static_cast<off_t>(i) * page_size;
      if (pread(src, page.data(), page_size, off) != page_size ||
          pwrite(target_fd, page.data(), page_size, off) != page_size) {
        pages = 0;
        break;
      }
    }
    if (pages != 0 && ftruncate(target_fd, size) != 0) pages = 0;
  }
  close(src);
  return pages;
}

// ------------------------------------------------------------------ -shm inspection

uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

// The test's own reading of SQLite's wal-index header checksum (wal.c walChecksumBytes,
// native byte order, first 40 bytes), checked below against headers SQLite itself wrote.
[[maybe_unused]] bool ChecksumHolds(const uint8_t* hdr) {
  uint32_t s1 = 0, s2 = 0;
  for (int i = 0; i < 40; i += 8) {
    s1 += Load32(hdr + i) + s2;
    s2 += Load32(hdr + i + 4) + s1;
  }
  return s1 == Load32(hdr + 40) && s2 == Load32(hdr + 44);
}

[[maybe_unused]] std::vector<uint8_t> ShmHeader(const std::string& shm_path) {
  std::vector<uint8_t> buf(136);
  int fd = open(shm_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || pread(fd, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) {
    buf.clear();
  }
  if (fd >= 0) close(fd);
  return buf;
}

// ------------------------------------------------------------------ fixture

class ApplyLockTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "apply_lock_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(mkdir((dir_ + "/primary").c_str(), 0755), 0);
    ASSERT_EQ(mkdir((dir_ + "/replica").c_str(), 0755), 0);
    src_ = dir_ + "/primary/bank.db";
    dst_ = dir_ + "/replica/bank.db";
  }
  void TearDown() override {
    children_.reset();  // kill stragglers before removing their files
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // The source with its first contents, and the target as its copy.
  std::unique_ptr<Source> MakeSourceAndCopy(const std::string& mode) {
    auto src = std::make_unique<Source>(src_, mode);
    src->Checkpoint();
    int fd = open(dst_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_GT(CopyPages(src_, fd), 0u);
    close(fd);
    return src;
  }

  // One replica apply: lock, write every page, reset the wal-index, unlock.
  void Apply(int target_fd, const std::string& mode) {
    auto lock = ApplyLock::Acquire(dst_, 5000ms);
    ASSERT_TRUE(lock.ok()) << lock.status().ToString();
    EXPECT_EQ((*lock)->wal(), mode == "wal");
    uint32_t pages = CopyPages(src_, target_fd);
    ASSERT_GT(pages, 0u);
    if ((*lock)->wal()) {
      Status st = (*lock)->ResetWalIndex(pages);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    (*lock)->Release();
  }

  struct ReaderResult {
    int exit_code = -1;
    long long reads = 0, broken = 0, errors = 0, counter = -1, versions = 0;
    std::string out, err;
  };

  // The bank: 3 readers on the target (two keep their connection, one reconnects for every
  // read) while `rounds` applies of `txns` source commits each run.
  std::vector<ReaderResult> RunBank(const std::string& mode, int rounds, int txns) {
    std::mt19937 rng(12345);
    auto src = MakeSourceAndCopy(mode);
    int target_fd = open(dst_.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(target_fd, 0);
    const long long final_n = static_cast<long long>(rounds) * txns;
    std::vector<pid_t> pids;
    for (int i = 0; i < 3; ++i) {
      std::string base = dir_ + "/reader" + std::to_string(i);
      pids.push_back(children_->Spawn(
          {kReader, "bank", dst_, std::to_string(kAccounts), std::to_string(kTotal),
           std::to_string(final_n), "1000000", i == 2 ? "1" : "0", base + ".started"},
          base + ".out"));
    }
    // Every reader is reading before the first apply, so they overlap all of them.
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(AwaitFile(dir_ + "/reader" + std::to_string(i) + ".started", 30s))
          << Slurp(dir_ + "/reader" + std::to_string(i) + ".out.err");
    }
    for (int r = 0; r < rounds && !HasFatalFailure(); ++r) {
      src->Commit(txns, rng);
      src->Checkpoint();
      Apply(target_fd, mode);
      std::this_thread::sleep_for(2ms);  // let readers in between applies
    }
    close(target_fd);
    std::vector<ReaderResult> results;
    for (int i = 0; i < 3; ++i) {
      ReaderResult res;
      std::string base = dir_ + "/reader" + std::to_string(i);
      res.exit_code = children_->Wait(pids[i], 150s);
      res.out = Slurp(base + ".out");
      res.err = Slurp(base + ".out.err");
      sscanf(res.out.c_str(), "reads %lld broken %lld errors %lld counter %lld versions %lld",
             &res.reads, &res.broken, &res.errors, &res.counter, &res.versions);
      results.push_back(res);
    }
    return results;
  }

  std::string dir_, src_, dst_;
  std::unique_ptr<Children> children_ = std::make_unique<Children>();
};

#ifndef TENANTFS_APPLY_LOCK_SKIP_LOCKS_FOR_TEST
INSTANTIATE_TEST_SUITE_P(Modes, ApplyLockTest,
                         ::testing::Values("delete", "truncate", "persist", "wal"),
                         [](const auto& info) { return info.param; });
#else
INSTANTIATE_TEST_SUITE_P(Modes, ApplyLockTest, ::testing::Values("wal"),
                         [](const auto& info) { return info.param; });
#endif

#ifndef TENANTFS_APPLY_LOCK_SKIP_LOCKS_FOR_TEST

TEST_P(ApplyLockTest, ReadersNeverSeeAHalfAppliedDatabase) {
  const std::string mode = GetParam();
  constexpr int kRounds = 150, kTxns = 3;
  auto results = RunBank(mode, kRounds, kTxns);
  for (size_t i = 0; i < results.size(); ++i) {
    const ReaderResult& r = results[i];
    SCOPED_TRACE("reader " + std::to_string(i) + ": " + r.out + r.err);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.broken, 0);
    EXPECT_EQ(r.errors, 0);
    EXPECT_EQ(r.counter, kRounds * kTxns);  // saw the newest commit
    EXPECT_GE(r.versions, 2);               // and changes while it was reading
    printf("[ %s reader %zu ] %s", mode.c_str(), i, r.out.c_str());
  }
  ASSERT_FALSE(HasFatalFailure());
  // The replica is sound and holds exactly the primary's data.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dst_.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(QueryText(db, "PRAGMA integrity_check"), "ok");
  EXPECT_EQ(QueryText(db, "SELECT sum(balance) FROM accounts"), std::to_string(kTotal));
  EXPECT_EQ(QueryText(db, "SELECT n FROM counter"), std::to_string(kRounds * kTxns));
  sqlite3_close(db);
  EXPECT_EQ(Slurp(dst_), Slurp(src_)) << "target file differs from the source";
}

TEST_P(ApplyLockTest, TimesOutWhileAReaderHoldsATransaction) {
  const std::string mode = GetParam();
  auto src = MakeSourceAndCopy(mode);
  const std::string ready = dir_ + "/ready", release = dir_ + "/release";
  pid_t holder = children_->Spawn({kReader, "hold", dst_, ready, release}, dir_ + "/hold.out");
  ASSERT_TRUE(AwaitFile(ready, 30s)) << Slurp(dir_ + "/hold.out.err");
  const std::vector<uint8_t> shm_before = ShmHeader(dst_ + "-shm");
  EXPECT_EQ(shm_before.empty(), mode != "wal");

  auto t0 = Clock::now();
  auto r = ApplyLock::Acquire(dst_, 300ms);
  auto waited = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kDeadlineExceeded);
  EXPECT_GE(waited, 300ms);
  const std::string msg = r.status().message();
  EXPECT_NE(msg.find(mode == "wal" ? "WAL_READ_LOCK" : "EXCLUSIVE lock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(holder)), std::string::npos) << msg;
  printf("[ %s ] %s\n", mode.c_str(), msg.c_str());

  auto once = ApplyLock::Acquire(dst_, 0ms);
  ASSERT_FALSE(once.ok());
  EXPECT_EQ(once.status().code(), Status::Code::kUnavailable) << once.status().ToString();

  // Nothing of ours is left: no OFD lock on the files, the wal-index header as it was (the
  // gate undone), and another reader gets in at once.
  EXPECT_EQ(OfdLocksOn(dst_) + OfdLocksOn(dst_ + "-shm"), 0);
  EXPECT_EQ(ShmHeader(dst_ + "-shm"), shm_before);
  pid_t other = children_->Spawn({kReader, "read", dst_, "1000"}, dir_ + "/other.out");
  EXPECT_EQ(children_->Wait(other, 30s), 0) << Slurp(dir_ + "/other.out.err");

  // The transaction ends (the connection stays open): now it succeeds.
  Touch(release);
  ASSERT_TRUE(AwaitFile(ready + ".done", 30s)) << Slurp(dir_ + "/hold.out.err");
  auto ok = ApplyLock::Acquire(dst_, 5000ms);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_GT(OfdLocksOn(dst_) + OfdLocksOn(dst_ + "-shm"), 0);  // the check above can see ours
  (*ok)->Release();
  EXPECT_EQ(OfdLocksOn(dst_) + OfdLocksOn(dst_ + "-shm"), 0);
  Touch(release + ".exit");
  EXPECT_EQ(children_->Wait(holder, 30s), 0) << Slurp(dir_ + "/hold.out.err");
}

// The header ApplyLock writes is one SQLite accepts as is (a wrong checksum would make the
// next reader run recovery, which rebuilds the header with iChange 0), and readers that
// keep their connection see the new pages.
TEST(ApplyLockWal, ResetWalIndexIsAcceptedBySqlite) {
  std::string tmpl = ::testing::TempDir() + "apply_lock_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl, src_path = dir + "/src.db", dst = dir + "/dst.db";
  const std::string shm = dst + "-shm";
  Children children;
  std::mt19937 rng(7);
  {
    Source src(src_path, "wal");
    src.Checkpoint();
    int fd = open(dst.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GT(CopyPages(src_path, fd), 0u);

    // A reader that keeps its connection (and so -shm) open between transactions.
    const std::string ready = dir + "/ready", release = dir + "/release";
    Touch(release);  // its transaction ends at once; it then waits for release.exit
    pid_t idle = children.Spawn({kReader, "hold", dst, ready, release}, dir + "/idle.out");
    ASSERT_TRUE(AwaitFile(ready + ".done", 30s)) << Slurp(dir + "/idle.out.err");

    std::vector<uint8_t> before = ShmHeader(shm);
    ASSERT_EQ(before.size(), 136u);
    ASSERT_TRUE(ChecksumHolds(before.data())) << "the test's checksum disagrees with SQLite's";
    ASSERT_EQ(memcmp(before.data(), before.data() + 48, 48), 0);

    src.Commit(5, rng);
    src.Checkpoint();
    auto lock = ApplyLock::Acquire(dst, 5000ms);
    ASSERT_TRUE(lock.ok()) << lock.status().ToString();
    ASSERT_TRUE((*lock)->wal());
    uint32_t pages = CopyPages(src_path, fd);
    ASSERT_GT(pages, 0u);
    ASSERT_TRUE((*lock)->ResetWalIndex(pages).ok());
    (*lock)->Release();
    close(fd);

    std::vector<uint8_t> after = ShmHeader(shm);
    ASSERT_EQ(after.size(), 136u);
    EXPECT_EQ(memcmp(after.data(), after.data() + 48, 48), 0);  // both copies
    EXPECT_TRUE(ChecksumHolds(after.data()));
    EXPECT_EQ(Load32(&after[0]), 3007000u);                // iVersion
    EXPECT_EQ(Load32(&after[8]), Load32(&before[8]) + 1);  // iChange
    EXPECT_EQ(after[12], 1);                               // isInit
    EXPECT_EQ(memcmp(&after[13], &before[13], 3), 0);      // bigEndCksum, szPage
    EXPECT_EQ(Load32(&after[16]), 0u);                     // mxFrame
    EXPECT_EQ(Load32(&after[20]), pages);                  // nPage
    EXPECT_EQ(memcmp(&after[24], &before[24], 16), 0);     // frame cksum, salts
    EXPECT_EQ(Load32(&after[96]), 0u);                     // nBackfill
    EXPECT_EQ(Load32(&after[100]), 0u);                    // aReadMark[0]
    EXPECT_EQ(Load32(&after[104]), 0u);                    // aReadMark[1]
    for (int i = 2; i < 5; ++i) EXPECT_EQ(Load32(&after[100 + 4 * i]), 0xffffffffu);
    EXPECT_EQ(Load32(&after[128]), 0u);  // nBackfillAttempted

    // A new reader sees the new counter, and reads with the header as written.
    pid_t q = children.Spawn({kReader, "read", dst, "5000"}, dir + "/q.out");
    EXPECT_EQ(children.Wait(q, 30s), 0) << Slurp(dir + "/q.out.err");
    EXPECT_NE(Slurp(dir + "/q.out").find("counter 5\n"), std::string::npos)
        << Slurp(dir + "/q.out");
    std::vector<uint8_t> later = ShmHeader(shm);
    EXPECT_EQ(later, after) << "SQLite rewrote the header: it did not accept ours";

    Touch(release + ".exit");
    EXPECT_EQ(children.Wait(idle, 30s), 0) << Slurp(dir + "/idle.out.err");
  }
  std::filesystem::remove_all(dir);
}

// A -shm whose header was never initialised is left for SQLite's recovery.
TEST(ApplyLockWal, UninitialisedHeaderIsLeftAlone) {
  std::string tmpl = ::testing::TempDir() + "apply_lock_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl, src_path = dir + "/src.db", dst = dir + "/dst.db";
  Children children;
  {
    Source src(src_path, "wal");
    src.Checkpoint();
    int fd = open(dst.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GT(CopyPages(src_path, fd), 0u);
    close(fd);
    std::ofstream(dst + "-shm") << std::string(32768, '\0');
    auto lock = ApplyLock::Acquire(dst, 5000ms);
    ASSERT_TRUE(lock.ok()) << lock.status().ToString();
    EXPECT_TRUE((*lock)->ResetWalIndex(7).ok());
    (*lock)->Release();
    EXPECT_EQ(ShmHeader(dst + "-shm"), std::vector<uint8_t>(136, 0));
    pid_t q = children.Spawn({kReader, "read", dst, "5000"}, dir + "/q.out");
    EXPECT_EQ(children.Wait(q, 30s), 0) << Slurp(dir + "/q.out.err");
  }
  std::filesystem::remove_all(dir);
}

// A WAL database without -shm has no WAL reader: the database file is held EXCLUSIVE, so
// no connection can even start until the apply is done.
TEST(ApplyLockWal, WithoutShmHoldsTheDatabaseExclusive) {
  std::string tmpl = ::testing::TempDir() + "apply_lock_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl, src_path = dir + "/src.db", dst = dir + "/dst.db";
  Children children;
  {
    Source src(src_path, "wal");
    src.Checkpoint();
    int fd = open(dst.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GT(CopyPages(src_path, fd), 0u);
    close(fd);
    ASSERT_FALSE(Exists(dst + "-shm"));
    auto lock = ApplyLock::Acquire(dst, 5000ms);
    ASSERT_TRUE(lock.ok()) << lock.status().ToString();
    EXPECT_TRUE((*lock)->wal());
    EXPECT_TRUE((*lock)->ResetWalIndex(7).ok());  // nothing to reset
    pid_t q = children.Spawn({kReader, "read", dst, "200"}, dir + "/q.out");
    EXPECT_EQ(children.Wait(q, 30s), 1) << "a reader got in while the database was held";
    EXPECT_NE(Slurp(dir + "/q.out.err").find("locked"), std::string::npos)
        << Slurp(dir + "/q.out.err");
    (*lock)->Release();
    q = children.Spawn({kReader, "read", dst, "5000"}, dir + "/q2.out");
    EXPECT_EQ(children.Wait(q, 30s), 0) << Slurp(dir + "/q2.out.err");
  }
  std::filesystem::remove_all(dir);
}

TEST(ApplyLock, MissingDatabaseIsNotFound) {
  auto r = ApplyLock::Acquire(::testing::TempDir() + "apply_lock_test.none/x.db", 10ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kNotFound) << r.status().ToString();
}

#else  // TENANTFS_APPLY_LOCK_SKIP_LOCKS_FOR_TEST

// Same bank, but ApplyLock takes no locks: readers must see a half-applied database at
// least once (a broken sum, a counter going back, or SQLite reporting corruption).
TEST_P(ApplyLockTest, WithoutLocksReadersBreak) {
  const std::string mode = GetParam();
  auto results = RunBank(mode, 1500, 1);
  long long bad = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    printf("[ %s reader %zu, no locks ] %s%s", mode.c_str(), i, results[i].out.c_str(),
           results[i].err.c_str());
    bad += results[i].broken + results[i].errors;
  }
  EXPECT_GT(bad, 0) << "readers never noticed the missing locks: the bank test could not fail";
}

#endif

}  // namespace

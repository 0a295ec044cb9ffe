// Capture driven through the Store's data path with hand-made SQLite file
// traffic (rollback journals and WAL frames), on a real temp directory and an
// inline executor: deterministic, and every expectation is checked against a
// full recomputation and a replay of the log.
#include "tenancy/capture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tenancy/crc64.h"
#include "tenancy/replay.h"
#include "tenancy/store.h"

namespace tenancy {
namespace {

namespace fs = std::filesystem;
constexpr uint32_t kPs = 512;
constexpr unsigned char kMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};

void PutBe32(std::string& s, size_t at, uint32_t v) {
  s[at] = static_cast<char>(v >> 24);
  s[at + 1] = static_cast<char>(v >> 16);
  s[at + 2] = static_cast<char>(v >> 8);
  s[at + 3] = static_cast<char>(v);
}

// Page 1 with a SQLite header saying `pages` pages and change counter `counter`.
std::string HeaderPage(uint32_t pages, uint32_t counter, char fill = 'h') {
  std::string p(kPs, fill);
  std::memcpy(p.data(), "SQLite format 3", 16);
  p[16] = static_cast<char>(kPs >> 8);
  p[17] = static_cast<char>(kPs & 0xff);
  PutBe32(p, 24, counter);
  PutBe32(p, 28, pages);
  PutBe32(p, 92, counter);
  return p;
}

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tenantfs-capture-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    OpenStore();
    tenant_ = store_->CreateTenant("acme", 0755).value();
  }
  void TearDown() override {
    ReleaseAll();
    store_.reset();
    fs::remove_all(dir_);
  }
  void OpenStore() {
    Store::Options o;
    o.data_dir = dir_;
    o.executor = executor_.get();
    o.verify_each_commit = true;
    o.now_ms = [this] { return now_; };
    store_ = std::move(Store::Open(o).value());
  }
  // Reopens the store with every log record in its own segment (retention tests).
  void ReopenWithOneRecordPerSegment() {
    ReleaseAll();
    store_.reset();
    Store::Options o;
    o.data_dir = dir_;
    o.executor = executor_.get();
    o.now_ms = [this] { return now_; };
    o.log_options.segment_bytes = 1;
    store_ = std::move(Store::Open(o).value());
    tenant_ = store_->LookupTenant("acme").value();
  }
  void ReleaseAll() {
    for (auto& f : held_) f->Release();
    held_.clear();
  }
  std::shared_ptr<File> Create(const std::string& name) {
    std::shared_ptr<File> out;
    store_->CreateFile(tenant_, name, 0644, false, [&](Result<std::shared_ptr<File>> f) {
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      out = f.value();
    });
    EXPECT_TRUE(out->Acquire().ok());
    held_.push_back(out);
    return out;
  }
  void Write(const std::shared_ptr<File>& f, off_t off, const std::string& data) {
    Status st;
    store_->Write(f, data, off, [&](Result<size_t> n) { st = n.status(); });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void Truncate(const std::shared_ptr<File>& f, off_t size) {
    Status st;
    store_->Truncate(f, size, [&](Status s) { st = s; });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void Unlink(const std::string& name) {
    Status st;
    store_->Unlink(tenant_, name, [&](Status s) { st = s; });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void Fsync(const std::shared_ptr<File>& f) {
    Status st;
    store_->Fsync(f, false, [&](Status s) { st = s; });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  Position Pos(const std::string& db) {
    Position out;
    auto d = store_->LookupPos(tenant_, db + "-pos");
    EXPECT_TRUE(d.ok());
    store_->ReadPosition(d.value(), [&](Result<Position> p) { out = p.value(); });
    return out;
  }
  // Whether the database's capture state is loaded (without loading it).
  bool Loaded(const std::string& db) {
    auto d = store_->LookupPos(tenant_, db + "-pos");
    EXPECT_TRUE(d.ok());
    return d.ok() && d.value()->capture().loaded();
  }
  // Lets every database go idle past handles.idle-timeout and sweeps: the handle
  // cache closes them, dropping what their capture can rebuild.
  size_t IdleAll() {
    now_ += 120'000;
    return store_->SweepIdle();
  }
  // Full checksum of the first `pages` pages of the backing file.
  uint64_t FileChecksum(const std::string& db, uint32_t pages) {
    int fd = ::open((dir_ + "/tenants/acme/" + db).c_str(), O_RDONLY);
    Status s;
    uint64_t sum = ChecksumFile(fd, kPs, pages, &s);
    ::close(fd);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return sum;
  }
  // Replays the log of `db` from empty into a file; returns it.
  std::string Replay(const std::string& db, Position* at) {
    ChangeLog::Options ro;
    ro.read_only = true;
    auto log = ChangeLog::Open(dir_ + "/log/acme/" + db, ro);
    EXPECT_TRUE(log.ok());
    std::string out = dir_ + "/replay-" + db;
    fs::remove(out);
    auto r = Replayer::Open(out, 0);
    EXPECT_TRUE(r.ok());
    Status bad;
    EXPECT_TRUE(log.value()
                    ->ForEach(1,
                              [&](const ChangeSet& cs) {
                                bad = r.value()->Apply(cs);
                                return bad.ok();
                              })
                    .ok());
    EXPECT_TRUE(bad.ok()) << bad.ToString();
    at->txid = r.value()->txid();
    at->checksum = r.value()->checksum();
    std::ifstream in(out, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string Backing(const std::string& db, size_t bytes) {
    std::ifstream in(dir_ + "/tenants/acme/" + db, std::ios::binary);
    std::string all(std::istreambuf_iterator<char>(in), {});
    return all.substr(0, bytes);
  }
  // One rollback-journal transaction: journal header, page writes, commit by `how`.
  void RollbackTx(const std::shared_ptr<File>& db, const std::vector<std::pair<uint32_t, std::string>>& pages,
                  const std::string& how = "delete") {
    const std::string journal = db->db().name() + "-journal";
    auto j = Create(journal);
    std::string hdr(28, '\0');
    Write(j, 0, hdr);  // SQLite writes the header with a zero magic first,
    Fsync(j);
    Write(j, 0, std::string(reinterpret_cast<const char*>(kMagic), 8) + std::string(4, '\1'));  // then the magic
    for (auto& [pgno, data] : pages) Write(db, static_cast<off_t>(pgno - 1) * kPs, data);
    Fsync(db);
    if (how == "delete") {
      Unlink(journal);
    } else if (how == "truncate") {
      Truncate(j, 0);
    } else {
      Write(j, 0, std::string(28, '\0'));
    }
  }

  std::unique_ptr<Executor> executor_ = MakeInlineExecutor();
  std::string dir_;
  int64_t now_ = 1'700'000'000'000;
  std::unique_ptr<Store> store_;
  std::shared_ptr<Tenant> tenant_;
  std::vector<std::shared_ptr<File>> held_;
};

TEST_F(CaptureTest, RollbackJournalCommitsInEveryFinishingStyle) {
  auto db = Create("app.db");
  EXPECT_EQ(Pos("app.db").txid, 0u);
  EXPECT_EQ(Pos("app.db").checksum, kEmptyChecksum);

  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}}, "delete");
  EXPECT_EQ(Pos("app.db").txid, 1u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 2));

  RollbackTx(db, {{1, HeaderPage(3, 2)}, {3, std::string(kPs, 'b')}}, "truncate");
  EXPECT_EQ(Pos("app.db").txid, 2u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 3));

  RollbackTx(db, {{1, HeaderPage(3, 3)}, {2, std::string(kPs, 'c')}}, "persist");
  EXPECT_EQ(Pos("app.db").txid, 3u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 3));

  Position replayed;
  std::string bytes = Replay("app.db", &replayed);
  EXPECT_EQ(replayed.txid, 3u);
  EXPECT_EQ(replayed.checksum, Pos("app.db").checksum);
  EXPECT_EQ(bytes, Backing("app.db", 3 * kPs));
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
}

TEST_F(CaptureTest, RolledBackTransactionYieldsNothing) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  Position before = Pos("app.db");
  // Pages scribbled, then restored from the journal (what a rollback does).
  RollbackTx(db, {{2, std::string(kPs, 'X')}, {3, std::string(kPs, 'Y')}, {2, std::string(kPs, 'a')}});
  // The file grew by a page SQLite will ignore: the header still says 2 pages.
  EXPECT_EQ(Pos("app.db").txid, before.txid);
  EXPECT_EQ(Pos("app.db").checksum, before.checksum);
}

TEST_F(CaptureTest, ShrinkAfterCommitPointCountsInHeaderSize) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(4, 1)}, {2, std::string(kPs, 'a')}, {3, std::string(kPs, 'b')},
                  {4, std::string(kPs, 'c')}});
  // VACUUM-like: the header shrinks to 2 pages at the commit point; the file is
  // cut only afterwards, outside any transaction.
  RollbackTx(db, {{1, HeaderPage(2, 2)}});
  EXPECT_EQ(Pos("app.db").txid, 2u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 2));
  Truncate(db, 2 * kPs);
  EXPECT_EQ(Pos("app.db").txid, 2u);
  Position replayed;
  EXPECT_EQ(Replay("app.db", &replayed), Backing("app.db", 2 * kPs));
  EXPECT_EQ(replayed.checksum, Pos("app.db").checksum);
}

TEST_F(CaptureTest, IdleDatabaseDropsItsStateAndReloadsWhereItLeftOff) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  const Position p1 = Pos("app.db");
  ASSERT_TRUE(Loaded("app.db"));
  EXPECT_EQ(IdleAll(), 1u);
  EXPECT_FALSE(Loaded("app.db"));
  // The position outlives the state, for readers on any thread.
  auto d = store_->LookupPos(tenant_, "app.db-pos").value();
  EXPECT_EQ(d->capture().position().txid, p1.txid);
  EXPECT_EQ(d->capture().position().checksum, p1.checksum);
  const int64_t bytes = store_->retention_bytes();
  // The next transaction reloads from the log tail and continues the history.
  RollbackTx(db, {{1, HeaderPage(3, 2)}, {3, std::string(kPs, 'b')}}, "truncate");
  EXPECT_TRUE(Loaded("app.db"));
  EXPECT_EQ(Pos("app.db").txid, 2u);
  EXPECT_EQ(Pos("app.db").db_id, p1.db_id);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 3));
  EXPECT_GT(store_->retention_bytes(), bytes);  // the reload did not count the log twice
  IdleAll();
  Position replayed;
  EXPECT_EQ(Replay("app.db", &replayed), Backing("app.db", 3 * kPs));
  EXPECT_EQ(replayed.checksum, Pos("app.db").checksum);
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
  // Unloaded or not, a clean close makes the log durable.
  IdleAll();
  EXPECT_TRUE(store_->Close().ok());
}

// What SQLite readers of a WAL database change -- the wal-index (-shm), and the
// -wal and -shm files the last one removes -- is nothing capture tracks, so it
// does not load an idle database; a write to the WAL does.
TEST_F(CaptureTest, ReaderTrafficDoesNotLoadAnIdleDatabase) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  ReleaseAll();
  IdleAll();
  ASSERT_FALSE(Loaded("app.db"));
  auto shm = Create("app.db-shm");
  auto wal = Create("app.db-wal");
  Write(shm, 0, std::string(136, 'i'));
  Truncate(shm, 32768);
  Fsync(shm);
  Unlink("app.db-wal");
  Unlink("app.db-shm");
  EXPECT_FALSE(Loaded("app.db"));
  ReleaseAll();
  auto wal2 = Create("app.db-wal");
  Write(wal2, 0, std::string(32, '\0'));  // not a valid header: no WAL yet, but loaded
  EXPECT_TRUE(Loaded("app.db"));
  EXPECT_EQ(Pos("app.db").txid, 1u);
}

TEST_F(CaptureTest, OpenTransactionKeepsItsStateThroughEviction) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  // A transaction in progress: journal hot, a page written (its pre-image CRC is
  // known only in memory).
  auto j = Create("app.db-journal");
  Write(j, 0, std::string(reinterpret_cast<const char*>(kMagic), 8) + std::string(20, '\1'));
  Write(db, kPs, std::string(kPs, 'z'));
  EXPECT_EQ(IdleAll(), 1u);       // its fds are closed ...
  EXPECT_TRUE(Loaded("app.db"));  // ... but not what the commit will need
  Write(db, 0, HeaderPage(2, 2));
  Fsync(db);
  Unlink("app.db-journal");
  EXPECT_EQ(Pos("app.db").txid, 2u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 2));
  Position replayed;
  EXPECT_EQ(Replay("app.db", &replayed), Backing("app.db", 2 * kPs));
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
}

// Verification after an unclean start is once per database and process: a reload
// after an eviction trusts what the first load checked and capture saw since.
TEST_F(CaptureTest, UncleanStartVerifiesOnFirstLoadOnly) {
  {
    auto db = Create("app.db");
    RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  }
  ReleaseAll();
  store_.reset();  // no Close(): an unclean shutdown
  OpenStore();
  ASSERT_TRUE(store_->unclean_start());
  tenant_ = store_->LookupTenant("acme").value();
  EXPECT_EQ(Pos("app.db").txid, 1u);  // verified: the log matches, no repair
  EXPECT_EQ(store_->stats().repairs.load(), 0u);
  IdleAll();
  ASSERT_FALSE(Loaded("app.db"));
  // A change behind the daemon's back (not something it can see or verification
  // is for while it runs) shows the reload does not scan the file again.
  {
    std::fstream f(dir_ + "/tenants/acme/app.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kPs + 7);
    f.put('Q');
  }
  EXPECT_EQ(Pos("app.db").txid, 1u);
  EXPECT_TRUE(Loaded("app.db"));
  EXPECT_EQ(store_->stats().repairs.load(), 0u);
}

// --- WAL

struct Frame {
  uint32_t pgno;
  uint32_t commit_pages;  // 0 for a non-commit frame
  std::string page;
};

class WalWriter {
 public:
  WalWriter(CaptureTest* t, std::shared_ptr<File> wal, uint32_t salt1)
      : t_(t), wal_(std::move(wal)), salt1_(salt1) {}
  // SQLite's WAL checksum (native byte order: magic 0x377f0682 on little-endian).
  static void Cksum(const std::string& d, size_t n, uint32_t s[2]) {
    for (size_t i = 0; i + 8 <= n; i += 8) {
      uint32_t a, b;
      std::memcpy(&a, d.data() + i, 4);
      std::memcpy(&b, d.data() + i + 4, 4);
      s[0] += a + s[1];
      s[1] += b + s[0];
    }
  }
  void Header() {
    std::string h(32, '\0');
    PutBe32(h, 0, 0x377f0682);
    PutBe32(h, 4, 3007000);
    PutBe32(h, 8, kPs);
    PutBe32(h, 16, salt1_);
    PutBe32(h, 20, salt1_ ^ 0x5a5a5a5a);
    uint32_t c[2] = {0, 0};
    Cksum(h, 24, c);
    PutBe32(h, 24, c[0]);
    PutBe32(h, 28, c[1]);
    Write(0, h);
    next_ = 0;
    chain_ = {{c[0], c[1]}};
  }
  void Append(const Frame& f) {
    std::string h(24, '\0');
    PutBe32(h, 0, f.pgno);
    PutBe32(h, 4, f.commit_pages);
    PutBe32(h, 8, salt1_);
    PutBe32(h, 12, salt1_ ^ 0x5a5a5a5a);
    uint32_t c[2] = {chain_[next_][0], chain_[next_][1]};
    Cksum(h, 8, c);
    Cksum(f.page, f.page.size(), c);
    PutBe32(h, 16, c[0]);
    PutBe32(h, 20, c[1]);
    chain_.resize(next_ + 1);
    chain_.push_back({c[0], c[1]});
    off_t off = 32 + static_cast<off_t>(next_) * (24 + kPs);
    Write(off, h);  // SQLite writes the frame header and the page separately
    Write(off + 24, f.page);
    ++next_;
  }
  void Rewind(uint64_t frame) { next_ = frame; }

 private:
  void Write(off_t off, const std::string& d);
  CaptureTest* t_;
  std::shared_ptr<File> wal_;
  uint32_t salt1_;
  uint64_t next_ = 0;
  std::vector<std::array<uint32_t, 2>> chain_;  // checksum chain before each frame
  friend class CaptureTest;
};

class WalCaptureTest : public CaptureTest {
 public:
  void WalWrite(const std::shared_ptr<File>& f, off_t off, const std::string& d) { Write(f, off, d); }
};

void WalWriter::Write(off_t off, const std::string& d) {
  static_cast<WalCaptureTest*>(t_)->WalWrite(wal_, off, d);
}

TEST_F(WalCaptureTest, CommitFramesAreTransactionsAndCheckpointsAreNot) {
  auto db = Create("app.db");
  auto walf = Create("app.db-wal");
  WalWriter wal(this, walf, 0x1234);
  wal.Header();
  wal.Append({1, 0, HeaderPage(2, 1)});
  EXPECT_EQ(Pos("app.db").txid, 0u);  // no commit frame yet
  wal.Append({2, 2, std::string(kPs, 'a')});
  EXPECT_EQ(Pos("app.db").txid, 1u);

  // A transaction whose frames were overwritten before commit (a rollback in WAL).
  wal.Append({2, 0, std::string(kPs, 'Z')});
  wal.Rewind(2);
  wal.Append({2, 0, std::string(kPs, 'b')});
  wal.Append({3, 3, std::string(kPs, 'c')});
  EXPECT_EQ(Pos("app.db").txid, 2u);

  // An identical rewrite commits nothing.
  wal.Append({3, 3, std::string(kPs, 'c')});
  EXPECT_EQ(Pos("app.db").txid, 2u);

  // Checkpoint: the committed pages land in the main file; no change set.
  Write(db, 0, HeaderPage(2, 1));
  Write(db, kPs, std::string(kPs, 'b'));
  Write(db, 2 * kPs, std::string(kPs, 'c'));
  EXPECT_EQ(Pos("app.db").txid, 2u);
  EXPECT_EQ(Pos("app.db").checksum, FileChecksum("app.db", 3));

  // WAL restart with new salts: the main file holds everything; new frames follow.
  WalWriter wal2(this, walf, 0x9999);
  wal2.Header();
  wal2.Append({2, 0, std::string(kPs, 'd')});
  wal2.Append({1, 2, HeaderPage(2, 2)});  // shrink to 2 pages
  EXPECT_EQ(Pos("app.db").txid, 3u);

  Position replayed;
  std::string bytes = Replay("app.db", &replayed);
  EXPECT_EQ(replayed.txid, 3u);
  EXPECT_EQ(replayed.checksum, Pos("app.db").checksum);
  std::string expect = HeaderPage(2, 2) + std::string(kPs, 'd');
  EXPECT_EQ(bytes, expect);
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
}

TEST_F(WalCaptureTest, IdleDatabaseReloadsItsWalGeneration) {
  auto db = Create("app.db");
  auto walf = Create("app.db-wal");
  WalWriter wal(this, walf, 0x7777);
  wal.Header();
  wal.Append({1, 0, HeaderPage(2, 1)});
  wal.Append({2, 2, std::string(kPs, 'a')});
  EXPECT_EQ(Pos("app.db").txid, 1u);
  EXPECT_EQ(IdleAll(), 1u);
  EXPECT_FALSE(Loaded("app.db"));
  // Frames written past the last commit: the state stays through an eviction
  // (which of them are whole in this generation is known only in memory).
  wal.Append({2, 0, std::string(kPs, 'b')});
  EXPECT_TRUE(Loaded("app.db"));
  IdleAll();
  EXPECT_TRUE(Loaded("app.db"));
  wal.Append({3, 3, std::string(kPs, 'c')});
  EXPECT_EQ(Pos("app.db").txid, 2u);
  IdleAll();
  EXPECT_FALSE(Loaded("app.db"));
  // Reloaded from the WAL: page 2's newest committed image is in frame 2, so
  // rewriting it with the same bytes commits nothing and a new image does.
  wal.Append({2, 3, std::string(kPs, 'b')});
  EXPECT_EQ(Pos("app.db").txid, 2u);
  wal.Append({2, 3, std::string(kPs, 'd')});
  EXPECT_EQ(Pos("app.db").txid, 3u);
  Position replayed;
  std::string bytes = Replay("app.db", &replayed);
  EXPECT_EQ(replayed.checksum, Pos("app.db").checksum);
  EXPECT_EQ(bytes, HeaderPage(2, 1) + std::string(kPs, 'd') + std::string(kPs, 'c'));
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
}

TEST_F(WalCaptureTest, CommitHeaderOverStaleFrameWaitsForItsPage) {
  auto db = Create("app.db");
  auto walf = Create("app.db-wal");
  WalWriter wal(this, walf, 0x4242);
  wal.Header();
  wal.Append({1, 1, HeaderPage(1, 1)});
  EXPECT_EQ(Pos("app.db").txid, 1u);
  // A transaction that spilled frame 1 and was rolled back: its bytes stay.
  wal.Append({2, 0, std::string(kPs, 'X')});
  wal.Rewind(1);
  // The next transaction commits at frame 1, header first over the stale page:
  // the header alone must not be taken for the commit.
  wal.Append({2, 2, std::string(kPs, 'n')});
  EXPECT_EQ(Pos("app.db").txid, 2u);
  Position replayed;
  std::string bytes = Replay("app.db", &replayed);
  EXPECT_EQ(bytes, HeaderPage(1, 1) + std::string(kPs, 'n'));
  EXPECT_EQ(store_->stats().verify_failures.load(), 0u);
}

TEST_F(CaptureTest, UncleanRestartRepairsWithSnapshotRecord) {
  {
    auto db = Create("app.db");
    RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  }
  ReleaseAll();
  store_.reset();  // no Close(): an unclean shutdown
  // Bytes changed behind the log's back (a commit whose change set was lost).
  {
    std::fstream f(dir_ + "/tenants/acme/app.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kPs + 7);
    f.put('Q');
  }
  OpenStore();
  ASSERT_TRUE(store_->unclean_start());
  tenant_ = store_->LookupTenant("acme").value();
  Position p = Pos("app.db");
  EXPECT_EQ(p.txid, 2u);  // the repair is one snapshot record
  EXPECT_EQ(p.checksum, FileChecksum("app.db", 2));
  EXPECT_EQ(store_->stats().repairs.load(), 1u);
  Position replayed;
  EXPECT_EQ(Replay("app.db", &replayed), Backing("app.db", 2 * kPs));
  EXPECT_EQ(replayed.checksum, p.checksum);
}

TEST_F(CaptureTest, CleanRestartTrustsTheLogWithoutScanning) {
  {
    auto db = Create("app.db");
    RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  }
  ReleaseAll();
  ASSERT_TRUE(store_->Close().ok());
  store_.reset();
  OpenStore();
  EXPECT_FALSE(store_->unclean_start());
  tenant_ = store_->LookupTenant("acme").value();
  EXPECT_EQ(Pos("app.db").txid, 1u);
  EXPECT_EQ(store_->stats().repairs.load(), 0u);
}

TEST_F(CaptureTest, UnlinkDropsTheLog) {
  auto db = Create("app.db");
  RollbackTx(db, {{1, HeaderPage(2, 1)}, {2, std::string(kPs, 'a')}});
  EXPECT_TRUE(fs::exists(dir_ + "/log/acme/app.db"));
  ReleaseAll();
  Unlink("app.db");
  EXPECT_FALSE(fs::exists(dir_ + "/log/acme/app.db"));
  EXPECT_EQ(store_->retention_bytes(), 0);
}

// Retention reaches logs whose database was evicted (state dropped) without
// loading the database, and skips the others without touching them.
TEST_F(CaptureTest, RetentionPassTrimsLogsOfUnloadedDatabases) {
  ReopenWithOneRecordPerSegment();
  auto db = Create("app.db");
  for (uint32_t i = 1; i <= 6; ++i) {
    RollbackTx(db, {{1, HeaderPage(2, i)}, {2, std::string(kPs, static_cast<char>('a' + i))}});
    now_ += 1000;
  }
  ReleaseAll();
  IdleAll();
  ASSERT_FALSE(Loaded("app.db"));
  const std::string log_dir = dir_ + "/log/acme/app.db";
  auto log_bytes = [&] {
    int64_t n = 0;
    for (auto& e : fs::directory_iterator(log_dir)) n += static_cast<int64_t>(e.file_size());
    return n;
  };
  EXPECT_EQ(store_->retention_bytes(), log_bytes());
  // Nothing older than a day: skipped without opening anything.
  EXPECT_EQ(store_->EnforceRetention(86'400'000, 0), 0u);
  // A byte bound below one record: only the newest record survives, the log
  // opened on its own for it.
  EXPECT_GT(store_->EnforceRetention(INT64_MAX / 4, 1), 0u);
  EXPECT_FALSE(Loaded("app.db"));
  EXPECT_EQ(store_->retention_bytes(), log_bytes());
  ChangeLog::Options ro;
  ro.read_only = true;
  auto log = ChangeLog::Open(log_dir, ro);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log.value()->first_txid(), 6u);
  EXPECT_EQ(log.value()->tail().txid, 6u);
  EXPECT_EQ(Pos("app.db").txid, 6u);
}

TEST_F(CaptureTest, RetentionPassTrimsOldSegmentsAndBoundsBytes) {
  ReopenWithOneRecordPerSegment();
  auto db = Create("app.db");
  for (uint32_t i = 1; i <= 10; ++i) {
    RollbackTx(db, {{1, HeaderPage(2, i)}, {2, std::string(kPs, static_cast<char>('a' + i))}});
    now_ += 1000;
  }
  EXPECT_EQ(Pos("app.db").txid, 10u);
  int64_t all = store_->retention_bytes();
  // Keep the last 3.5 s: records 7..10 stay (newest-record times), older go.
  uint64_t freed = store_->EnforceRetention(3500, 0);
  EXPECT_GT(freed, 0u);
  EXPECT_EQ(store_->retention_bytes(), all - static_cast<int64_t>(freed));
  // A byte bound smaller than one record: only the newest record survives.
  store_->EnforceRetention(INT64_MAX / 4, 1);
  ChangeLog::Options ro;
  ro.read_only = true;
  auto log = ChangeLog::Open(dir_ + "/log/acme/app.db", ro);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log.value()->first_txid(), 10u);
  EXPECT_EQ(log.value()->tail().txid, 10u);
}

// The retention pass visits only databases whose logs hold a segment to trim (an
// index kept as logs change), not every database known: its cost follows the
// databases written, not those touched.
TEST_F(CaptureTest, RetentionPassVisitsOnlyDatabasesWithSomethingToTrim) {
  ReopenWithOneRecordPerSegment();
  EXPECT_EQ(store_->trimmable_databases(), 0u);
  // 40 databases with one transaction: one segment each, nothing to trim.
  for (int d = 0; d < 40; ++d) {
    auto db = Create("one" + std::to_string(d) + ".db");
    RollbackTx(db, {{1, HeaderPage(1, 1)}});
  }
  EXPECT_EQ(store_->trimmable_databases(), 0u);
  // 3 databases with 4 transactions: old segments to trim.
  for (int d = 0; d < 3; ++d) {
    auto db = Create("many" + std::to_string(d) + ".db");
    for (uint32_t i = 1; i <= 4; ++i) {
      RollbackTx(db, {{1, HeaderPage(2, i)}, {2, std::string(kPs, static_cast<char>('a' + i))}});
      now_ += 1000;
    }
  }
  EXPECT_EQ(store_->trimmable_databases(), 3u);
  // Unloading keeps them indexed (their logs still hold old segments).
  ReleaseAll();
  IdleAll();
  EXPECT_EQ(store_->trimmable_databases(), 3u);
  // Deleting one drops its log, and it leaves the index.
  Status st;
  store_->Unlink(tenant_, "many2.db", [&](Status s) { st = s; });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(store_->trimmable_databases(), 2u);
  // Trimmed to their newest records: nothing left to visit.
  EXPECT_GT(store_->EnforceRetention(INT64_MAX / 4, 1), 0u);
  EXPECT_EQ(store_->trimmable_databases(), 0u);
  EXPECT_EQ(Pos("many0.db").txid, 4u);
  EXPECT_EQ(Pos("one0.db").txid, 1u);
}

}  // namespace
}  // namespace tenancy

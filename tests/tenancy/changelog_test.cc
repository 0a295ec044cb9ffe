#include "tenancy/changelog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tenancy/crc64.h"

namespace tenancy {
namespace {

namespace fs = std::filesystem;

ChangeSet MakeCs(uint64_t txid, int64_t ts, uint64_t pre, uint64_t post) {
  ChangeSet cs;
  cs.db_id = 42;
  cs.tenant = "acme";
  cs.db = "app.db";
  cs.min_txid = cs.max_txid = txid;
  cs.page_size = 512;
  cs.commit_pages = 1;
  cs.timestamp_ms = ts;
  cs.pre_checksum = pre;
  cs.post_checksum = post;
  cs.pgnos = {1};
  cs.pages = std::string(512, static_cast<char>('a' + txid % 26));
  return cs;
}

Position PosOf(const ChangeSet& cs) {
  Position p;
  p.txid = cs.max_txid;
  p.checksum = cs.post_checksum;
  p.page_size = cs.page_size;
  p.pages = cs.commit_pages;
  p.timestamp_ms = cs.timestamp_ms;
  p.db_id = cs.db_id;
  return p;
}

class ChangeLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tenantfs-log-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    dir_ += "/log/acme/app.db";
  }
  void TearDown() override { fs::remove_all(fs::path(dir_).parent_path().parent_path().parent_path()); }

  std::unique_ptr<ChangeLog> Open(ChangeLog::Options o = {}) {
    auto log = ChangeLog::Open(dir_, o);
    EXPECT_TRUE(log.ok()) << log.status().ToString();
    return log.ok() ? std::move(log.value()) : nullptr;
  }
  // Appends txids [from, to] with timestamps ts0 + txid.
  void AppendRange(ChangeLog& log, uint64_t from, uint64_t to, int64_t ts0 = 1000) {
    for (uint64_t t = from; t <= to; ++t) {
      uint64_t pre = t == 1 ? kEmptyChecksum : (kEmptyChecksum | (t - 1));
      ChangeSet cs = MakeCs(t, ts0 + static_cast<int64_t>(t), pre, kEmptyChecksum | t);
      ASSERT_TRUE(log.Append(EncodeChangeSet(cs), PosOf(cs), cs.timestamp_ms).ok());
    }
  }
  std::vector<uint64_t> Txids(const ChangeLog& log, uint64_t from = 0) {
    std::vector<uint64_t> out;
    EXPECT_TRUE(log.ForEach(from, [&](const ChangeSet& cs) {
                     out.push_back(cs.max_txid);
                     return true;
                   }).ok());
    return out;
  }
  std::string dir_;
};

TEST_F(ChangeLogTest, EmptyLogIsAtTxidZero) {
  auto log = Open();
  EXPECT_EQ(log->tail().txid, 0u);
  EXPECT_EQ(log->tail().checksum, kEmptyChecksum);
  EXPECT_EQ(log->first_txid(), 0u);
}

TEST_F(ChangeLogTest, AppendReopenTail) {
  {
    auto log = Open();
    AppendRange(*log, 1, 10);
    EXPECT_EQ(log->tail().txid, 10u);
    ASSERT_TRUE(log->Sync().ok());
  }
  auto log = Open();
  EXPECT_EQ(log->tail().txid, 10u);
  EXPECT_EQ(log->tail().checksum, kEmptyChecksum | 10);
  EXPECT_EQ(log->tail().db_id, 42u);
  EXPECT_EQ(Txids(*log, 4), (std::vector<uint64_t>{4, 5, 6, 7, 8, 9, 10}));
  AppendRange(*log, 11, 12);
  EXPECT_EQ(Txids(*log).size(), 12u);
}

TEST_F(ChangeLogTest, TornTailIsCutOnOpen) {
  uint64_t good_size;
  {
    auto log = Open();
    AppendRange(*log, 1, 3);
    good_size = log->bytes();
  }
  std::string seg = dir_ + "/0000000000000001.seg";
  {
    // A crash mid-append: a frame length promising more than was written.
    std::ofstream out(seg, std::ios::app | std::ios::binary);
    uint32_t len = 5000;
    out.write(reinterpret_cast<const char*>(&len), 4);
    out << "partial record";
  }
  auto log = Open();
  EXPECT_EQ(log->tail().txid, 3u);
  EXPECT_EQ(fs::file_size(seg), good_size);
  AppendRange(*log, 4, 4);
  EXPECT_EQ(Txids(*log), (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST_F(ChangeLogTest, ReadOnlyNeverCuts) {
  {
    auto log = Open();
    AppendRange(*log, 1, 2);
  }
  std::string seg = dir_ + "/0000000000000001.seg";
  {
    std::ofstream out(seg, std::ios::app | std::ios::binary);
    out << "xx";
  }
  uint64_t size = fs::file_size(seg);
  ChangeLog::Options ro;
  ro.read_only = true;
  auto log = Open(ro);
  EXPECT_EQ(log->tail().txid, 2u);
  EXPECT_EQ(fs::file_size(seg), size);
}

TEST_F(ChangeLogTest, DropLastRewindsTail) {
  auto log = Open();
  AppendRange(*log, 1, 5);
  ASSERT_TRUE(log->DropLast().ok());
  EXPECT_EQ(log->tail().txid, 4u);
  EXPECT_EQ(Txids(*log).back(), 4u);
  AppendRange(*log, 5, 6);
  EXPECT_EQ(Txids(*log), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
}

TEST_F(ChangeLogTest, SegmentsRollAndRetentionKeepsNewest) {
  ChangeLog::Options o;
  o.segment_bytes = 200;  // a few records per segment
  auto log = Open(o);
  AppendRange(*log, 1, 30, /*ts0=*/1000);
  size_t segments = log->segments();
  EXPECT_GT(segments, 3u);
  // Everything is "old" by the clock, but the active segment always stays.
  uint64_t before = log->bytes();
  uint64_t freed = log->TrimByAge(/*now_ms=*/10'000'000, /*retention_ms=*/1000);
  EXPECT_GT(freed, 0u);
  EXPECT_EQ(log->bytes(), before - freed);
  EXPECT_EQ(log->segments(), 1u);
  EXPECT_EQ(log->tail().txid, 30u);
  auto left = Txids(*log);
  ASSERT_FALSE(left.empty());
  EXPECT_EQ(left.back(), 30u);
  EXPECT_EQ(log->first_txid(), left.front());
  // Reopen: the same segments are found.
  log.reset();
  log = Open(o);
  EXPECT_EQ(log->tail().txid, 30u);
  EXPECT_EQ(Txids(*log), left);
}

TEST_F(ChangeLogTest, TrimByAgeKeepsRecentSegments) {
  ChangeLog::Options o;
  o.segment_bytes = 2000;
  auto log = Open(o);
  AppendRange(*log, 1, 30, /*ts0=*/1000);
  // Retention reaching back past every record: nothing goes.
  EXPECT_EQ(log->TrimByAge(/*now_ms=*/2000, /*retention_ms=*/10'000), 0u);
  EXPECT_EQ(Txids(*log).size(), 30u);
  // Oldest-first trimming stops at the active segment.
  while (log->TrimOldest() > 0) {
  }
  EXPECT_EQ(log->segments(), 1u);
  EXPECT_EQ(log->tail().txid, 30u);
}

TEST_F(ChangeLogTest, CorruptMiddleRecordIsReported) {
  ChangeLog::Options o;
  o.segment_bytes = 2000;
  {
    auto log = Open(o);
    AppendRange(*log, 1, 20);
  }
  // Flip a byte in the first (not active) segment.
  std::string seg = dir_ + "/0000000000000001.seg";
  std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(100);
  char c;
  f.seekg(100);
  f.get(c);
  f.seekp(100);
  f.put(static_cast<char>(c ^ 0x10));
  f.close();
  auto log = Open(o);
  Status s = log->ForEach(0, [](const ChangeSet&) { return true; });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("corrupt"), std::string::npos) << s.ToString();
}

TEST_F(ChangeLogTest, CorruptRecordInActiveSegmentIsNotATornTail) {
  {
    auto log = Open();
    AppendRange(*log, 1, 5);
  }
  std::string seg = dir_ + "/0000000000000001.seg";
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(150);
    char c;
    f.get(c);
    f.seekp(150);
    f.put(static_cast<char>(c ^ 0x01));
  }
  uint64_t size = fs::file_size(seg);
  // Valid records follow the damage: opening for writing refuses instead of cutting them.
  auto rw = ChangeLog::Open(dir_, {});
  ASSERT_FALSE(rw.ok());
  EXPECT_NE(rw.status().message().find("corrupt"), std::string::npos) << rw.status().ToString();
  EXPECT_EQ(fs::file_size(seg), size);
  // A reader sees the damage too.
  ChangeLog::Options ro;
  ro.read_only = true;
  auto log = Open(ro);
  ASSERT_TRUE(log);
  EXPECT_FALSE(log->ForEach(0, [](const ChangeSet&) { return true; }).ok());
}

TEST_F(ChangeLogTest, ZeroFilledTailIsTorn) {
  {
    auto log = Open();
    AppendRange(*log, 1, 3);
  }
  std::string seg = dir_ + "/0000000000000001.seg";
  {
    std::ofstream out(seg, std::ios::app | std::ios::binary);
    out << std::string(700, '\0');  // a crash can leave an extended size and no data
  }
  auto log = Open();
  EXPECT_EQ(log->tail().txid, 3u);
  AppendRange(*log, 4, 4);
  EXPECT_EQ(Txids(*log), (std::vector<uint64_t>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace tenancy

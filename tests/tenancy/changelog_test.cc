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

// ReadRaw: the records as stored, from any TXID, across segments, resumable
// through its cursor; every record it passes decodes to the one appended.
TEST(ChangeLogReadRaw, FromAnyTxidAcrossSegmentsWithCursor) {
  char tmpl[] = "/tmp/tenantfs-lograw-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  std::string dir = root + "/log/acme/app.db";
  ChangeLog::Options o;
  o.segment_bytes = 300;  // a few records per segment
  auto opened = ChangeLog::Open(dir, o);
  ASSERT_TRUE(opened.ok());
  auto& log = *opened.value();
  for (uint64_t t = 1; t <= 40; ++t) {
    uint64_t pre = t == 1 ? kEmptyChecksum : (kEmptyChecksum | (t - 1));
    ChangeSet cs = MakeCs(t, 1000 + static_cast<int64_t>(t), pre, kEmptyChecksum | t);
    ASSERT_TRUE(log.Append(EncodeChangeSet(cs), PosOf(cs), cs.timestamp_ms).ok());
  }
  ASSERT_GT(log.segments(), 4u);
  auto read = [&](ChangeLog::Cursor* cur, uint64_t from, size_t max_bytes) {
    std::vector<uint64_t> txids;
    Status s = log.ReadRaw(cur, from, max_bytes, [&](std::string_view raw, const ChangeSetHeader& h) {
      auto cs = DecodeChangeSet(raw);
      EXPECT_TRUE(cs.ok()) << cs.status().ToString();
      if (cs.ok()) {
        EXPECT_EQ(cs->max_txid, h.max_txid);
        EXPECT_EQ(cs->pre_checksum, h.pre_checksum);
        EXPECT_EQ(cs->post_checksum, h.post_checksum);
        EXPECT_EQ(cs->timestamp_ms, h.timestamp_ms);
      }
      txids.push_back(h.max_txid);
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return txids;
  };
  ChangeLog::Cursor cur;
  auto all = read(&cur, 1, SIZE_MAX);
  ASSERT_EQ(all.size(), 40u);
  for (uint64_t i = 0; i < 40; ++i) EXPECT_EQ(all[i], i + 1);
  EXPECT_EQ(cur.next_txid, 41u);
  // From the middle, in small batches that resume through the cursor.
  ChangeLog::Cursor c2;
  std::vector<uint64_t> got;
  for (uint64_t next = 17; next <= 40;) {
    auto part = read(&c2, next, 1);  // one record per call
    ASSERT_EQ(part.size(), 1u);
    got.push_back(part[0]);
    next = part[0] + 1;
    EXPECT_EQ(c2.next_txid, next);
  }
  ASSERT_EQ(got.size(), 24u);
  EXPECT_EQ(got.front(), 17u);
  EXPECT_EQ(got.back(), 40u);
  // A stale cursor (pointing at another TXID) is ignored, not trusted.
  ChangeLog::Cursor stale = c2;
  auto again = read(&stale, 5, SIZE_MAX);
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(again.front(), 5u);
  // New records are found from where the cursor stopped.
  ChangeSet cs41 = MakeCs(41, 2000, kEmptyChecksum | 40, kEmptyChecksum | 41);
  ASSERT_TRUE(log.Append(EncodeChangeSet(cs41), PosOf(cs41), 2000).ok());
  auto tail = read(&cur, 41, SIZE_MAX);
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail[0], 41u);
  fs::remove_all(root);
}

// A record damaged on disk is reported by ReadRaw (its CRC), never passed on.
TEST(ChangeLogReadRaw, DamagedRecordIsReportedNotForwarded) {
  char tmpl[] = "/tmp/tenantfs-lograw-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  std::string dir = root + "/log/acme/app.db";
  ChangeLog::Options o;
  o.segment_bytes = 2000;
  {
    auto log = ChangeLog::Open(dir, o);
    ASSERT_TRUE(log.ok());
    for (uint64_t t = 1; t <= 20; ++t) {
      uint64_t pre = t == 1 ? kEmptyChecksum : (kEmptyChecksum | (t - 1));
      ChangeSet cs = MakeCs(t, 1000 + static_cast<int64_t>(t), pre, kEmptyChecksum | t);
      ASSERT_TRUE(log.value()->Append(EncodeChangeSet(cs), PosOf(cs), cs.timestamp_ms).ok());
    }
  }
  std::string seg = dir + "/0000000000000001.seg";
  std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
  char c;
  f.seekg(100);
  f.get(c);
  f.seekp(100);
  f.put(static_cast<char>(c ^ 0x10));
  f.close();
  auto log = ChangeLog::Open(dir, o);
  ASSERT_TRUE(log.ok());
  ChangeLog::Cursor cur;
  int passed = 0;
  Status s = log.value()->ReadRaw(&cur, 1, SIZE_MAX, [&](std::string_view, const ChangeSetHeader&) {
    ++passed;
    return true;
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(passed, 0);
  fs::remove_all(root);
}

}  // namespace
}  // namespace tenancy

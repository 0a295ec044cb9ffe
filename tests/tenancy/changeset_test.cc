#include "tenancy/changeset.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "tenancy/crc64.h"

// Largest single allocation while g_track_allocs is set: proves hostile headers are
// rejected before anything is sized from them.
namespace {
std::atomic<bool> g_track_allocs{false};
std::atomic<size_t> g_largest_alloc{0};
}  // namespace

void* operator new(size_t n) {
  if (g_track_allocs.load(std::memory_order_relaxed)) {
    size_t cur = g_largest_alloc.load(std::memory_order_relaxed);
    while (n > cur && !g_largest_alloc.compare_exchange_weak(cur, n)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace tenancy {
namespace {

constexpr uint64_t kPre = 0x8000000000001234ull;
constexpr uint64_t kPost = 0x8765432100005678ull;

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Text-like pages: compress well but are not all one byte.
std::string CompressibleBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static constexpr std::string_view kWords[] = {"alpha ", "beta ", "gamma ", "row ", "42 "};
  std::string s;
  while (s.size() < n) s += kWords[rng() % 5];
  s.resize(n);
  return s;
}

ChangeSet MakeChangeSet(std::vector<uint32_t> pgnos, uint32_t page_size, std::string pages,
                        uint32_t commit_pages) {
  ChangeSet cs;
  cs.db_id = 0x0123456789ABCDEFull;
  cs.tenant = "acme";
  cs.db = "orders.db";
  cs.min_txid = 7;
  cs.max_txid = 9;
  cs.page_size = page_size;
  cs.commit_pages = commit_pages;
  cs.timestamp_ms = 1700000000123;
  cs.pre_checksum = kPre;
  cs.post_checksum = kPost;
  cs.pgnos = std::move(pgnos);
  cs.pages = std::move(pages);
  return cs;
}

ChangeSet Sequential(uint32_t n, uint32_t page_size, std::string pages) {
  std::vector<uint32_t> pgnos;
  for (uint32_t i = 1; i <= n; ++i) pgnos.push_back(i);
  return MakeChangeSet(std::move(pgnos), page_size, std::move(pages), n);
}

void ExpectRoundTrip(const ChangeSet& cs) {
  ASSERT_TRUE(ValidateChangeSet(cs).ok()) << ValidateChangeSet(cs).ToString();
  const std::string enc = EncodeChangeSet(cs);
  Result<ChangeSet> dec = DecodeChangeSet(enc);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_TRUE(*dec == cs);  // not EXPECT_EQ: a failure would print megabytes
}

void ExpectRejected(std::string_view bytes, std::string_view needle) {
  Result<ChangeSet> dec = DecodeChangeSet(bytes);
  ASSERT_FALSE(dec.ok()) << "decoded although it should not";
  EXPECT_EQ(dec.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(dec.status().message().find(needle), std::string::npos)
      << "message: " << dec.status().message() << "\nwanted: " << needle;
  EXPECT_EQ(dec.status().message().rfind("change set: ", 0), 0u) << dec.status().message();
}

void PutLe(std::string* s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) (*s)[at + i] = static_cast<char>(v >> (8 * i));
}

// Recomputes the trailer CRC after a test edits the body, so the edit reaches the
// semantic checks instead of stopping at "checksum mismatch".
void Reseal(std::string* rec) {
  const size_t body = rec->size() - kChangeSetTrailerSize;
  PutLe(rec, body, Crc64(rec->data(), body), 8);
}

// A record built field by field, for headers the encoder would refuse to write.
struct Craft {
  uint16_t version = 1;
  uint32_t flags = 0;
  uint32_t page_size = 4096;
  uint32_t page_count = 0;
  uint32_t commit_pages = 0;
  std::string tenant = "t", db = "d";
  std::string tail;  // page numbers and blocks

  std::string Build() const {
    std::string r(kChangeSetHeaderSize, '\0');
    std::memcpy(r.data(), "TFCS", 4);
    PutLe(&r, 4, version, 2);
    PutLe(&r, 6, kChangeSetHeaderSize + tenant.size() + db.size(), 2);
    PutLe(&r, 8, flags, 4);
    PutLe(&r, 12, page_size, 4);
    PutLe(&r, 20, page_count, 4);
    PutLe(&r, 24, commit_pages, 4);
    r[28] = static_cast<char>(tenant.size());
    r[29] = static_cast<char>(db.size());
    PutLe(&r, 40, 1, 8);  // min_txid
    PutLe(&r, 48, 1, 8);  // max_txid
    PutLe(&r, 64, kEmptyChecksum, 8);
    PutLe(&r, 72, kEmptyChecksum, 8);
    r += tenant + db + tail;
    const size_t len = r.size() + kChangeSetTrailerSize;
    PutLe(&r, 16, len, 4);
    r.append(8, '\0');
    r.append("\0\0\0\0TFCE", 8);
    PutLe(&r, len - 8, len, 4);
    Reseal(&r);
    return r;
  }
};

std::string U32s(std::initializer_list<uint32_t> vs) {
  std::string s;
  for (uint32_t v : vs) {
    s.append(4, '\0');
    PutLe(&s, s.size() - 4, v, 4);
  }
  return s;
}

TEST(ChangeSetTest, RoundTripEmptyPageList) {
  ExpectRoundTrip(MakeChangeSet({}, 4096, "", 0));
  ExpectRoundTrip(MakeChangeSet({}, 4096, "", 12));  // e.g. a transaction that only truncated
  const std::string enc = EncodeChangeSet(MakeChangeSet({}, 4096, "", 0));
  EXPECT_EQ(enc.size(), kChangeSetHeaderSize + 4 + 9 + kChangeSetTrailerSize);
}

TEST(ChangeSetTest, RoundTripOnePage) {
  ExpectRoundTrip(MakeChangeSet({3}, 512, RandomBytes(512, 1), 3));
  ExpectRoundTrip(MakeChangeSet({1}, 65536, CompressibleBytes(65536, 2), 1));
  ExpectRoundTrip(MakeChangeSet({1}, 4096, std::string(4096, '\0'), 5));
}

TEST(ChangeSetTest, RoundTripThousandRandomPages) {
  ChangeSet cs = Sequential(1000, 4096, RandomBytes(1000 * 4096, 3));
  ExpectRoundTrip(cs);
  // Incompressible blocks are stored raw: the record is barely larger than the pages.
  const size_t size = EncodeChangeSet(cs).size();
  EXPECT_GE(size, cs.pages.size());
  EXPECT_LT(size, cs.pages.size() + 4 * 1000 + 16 * 8 + 200);
}

TEST(ChangeSetTest, RoundTripThousandCompressiblePages) {
  ChangeSet cs = Sequential(1000, 4096, CompressibleBytes(1000 * 4096, 4));
  ExpectRoundTrip(cs);
  EXPECT_LT(EncodeChangeSet(cs).size(), cs.pages.size() / 2);  // LZ4 gets about 2.6:1 here
}

TEST(ChangeSetTest, RoundTripMixedBlocksAndSparsePages) {
  // Block 0 compressible, block 1 random, block 2 a partial block of zeros.
  std::string pages =
      CompressibleBytes(64 * 1024, 5) + RandomBytes(64 * 1024, 6) + std::string(10 * 1024, '\0');
  std::vector<uint32_t> pgnos;
  for (uint32_t i = 0; i < 138; ++i) pgnos.push_back(2 + i * 3);
  ExpectRoundTrip(MakeChangeSet(pgnos, 1024, pages, 5000));
}

TEST(ChangeSetTest, RoundTripSnapshotAndExtremes) {
  ChangeSet cs = Sequential(20, 512, CompressibleBytes(20 * 512, 7));
  cs.flags = ChangeSet::kFlagSnapshot;
  ExpectRoundTrip(cs);
  cs.tenant = std::string(64, 't');
  cs.db = std::string(64, 'd');
  cs.db_id = ~0ull;
  cs.min_txid = cs.max_txid = ~0ull;
  cs.timestamp_ms = -1;
  cs.pre_checksum = cs.post_checksum = ~0ull;
  ExpectRoundTrip(cs);
  // A snapshot of an empty database.
  ChangeSet empty = MakeChangeSet({}, 4096, "", 0);
  empty.flags = ChangeSet::kFlagSnapshot;
  ExpectRoundTrip(empty);
}

TEST(ChangeSetTest, EverySingleBitFlipIsRejected) {
  // One compressed block and one raw block, small enough to flip every bit.
  for (const ChangeSet& cs : {MakeChangeSet({2, 5}, 512, CompressibleBytes(1024, 8), 6),
                              MakeChangeSet({1}, 512, RandomBytes(512, 9), 1)}) {
    const std::string enc = EncodeChangeSet(cs);
    ASSERT_TRUE(DecodeChangeSet(enc).ok());
    for (size_t i = 0; i < enc.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = enc;
        bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
        Result<ChangeSet> dec = DecodeChangeSet(bad);
        ASSERT_FALSE(dec.ok()) << "byte " << i << " bit " << bit;
        ASSERT_EQ(dec.status().code(), Status::Code::kInvalidArgument);
      }
    }
  }
}

TEST(ChangeSetTest, EveryTruncationIsRejected) {
  const std::string enc = EncodeChangeSet(MakeChangeSet({1, 2, 3}, 512, RandomBytes(1536, 10), 3));
  for (size_t n = 0; n < enc.size(); ++n) {
    ASSERT_FALSE(DecodeChangeSet(std::string_view(enc).substr(0, n)).ok()) << "length " << n;
  }
  ExpectRejected(std::string_view(enc).substr(0, 79), "truncated header");
  ExpectRejected(std::string_view(enc).substr(0, enc.size() - 1), "truncated");
}

TEST(ChangeSetTest, TrailingGarbageIsRejected) {
  const std::string enc = EncodeChangeSet(MakeChangeSet({1}, 512, RandomBytes(512, 11), 1));
  ExpectRejected(enc + '\0', "trailing garbage");
  ExpectRejected(enc + enc, "trailing garbage");
}

TEST(ChangeSetTest, CorruptionIsAChecksumMismatch) {
  std::string enc = EncodeChangeSet(MakeChangeSet({1}, 512, RandomBytes(512, 12), 1));
  enc[200] ^= 1;
  ExpectRejected(enc, "checksum mismatch");
}

TEST(ChangeSetTest, FramingErrorsAreNamed) {
  const std::string enc = EncodeChangeSet(MakeChangeSet({1}, 512, RandomBytes(512, 13), 1));
  std::string bad = enc;
  bad[0] = 'X';
  ExpectRejected(bad, "bad magic");
  bad = enc;
  PutLe(&bad, 4, 2, 2);
  ExpectRejected(bad, "unknown version 2");
  bad = enc;
  bad[bad.size() - 1] = 'X';
  ExpectRejected(bad, "bad end magic");
  bad = enc;
  PutLe(&bad, bad.size() - 8, enc.size() - 1, 4);
  ExpectRejected(bad, "trailer length");
}

// Semantic errors behind a valid CRC: what a buggy or hostile writer could produce.
TEST(ChangeSetTest, FieldErrorsAreNamed) {
  const ChangeSet cs = MakeChangeSet({2, 7, 9}, 512, RandomBytes(3 * 512, 14), 9);
  const std::string enc = EncodeChangeSet(cs);
  const size_t names = kChangeSetHeaderSize;
  const size_t pgnos = names + cs.tenant.size() + cs.db.size();
  auto patched = [&](size_t at, uint64_t v, int n) {
    std::string s = enc;
    PutLe(&s, at, v, n);
    Reseal(&s);
    return s;
  };
  ExpectRejected(patched(pgnos + 4, 1, 4), "page 1 out of order");
  ExpectRejected(patched(pgnos + 8, 7, 4), "page 7 out of order");
  ExpectRejected(patched(pgnos, 0, 4), "page 0 out of range");
  ExpectRejected(patched(pgnos + 8, 10, 4), "page 10 out of range (commit_pages 9)");
  ExpectRejected(patched(24, 8, 4), "page 9 out of range (commit_pages 8)");
  ExpectRejected(patched(8, 2, 4), "unknown flags 2");
  ExpectRejected(patched(8, ChangeSet::kFlagSnapshot, 4), "snapshot has 3 pages, database has 9");
  ExpectRejected(patched(12, 1000, 4), "bad page size 1000");
  ExpectRejected(patched(12, 256, 4), "bad page size 256");
  ExpectRejected(patched(12, 1024, 4), "page block 0 raw length 1536, expected 3072");
  ExpectRejected(patched(30, 1, 2), "reserved header bytes not zero");
  ExpectRejected(patched(40, 0, 8), "min_txid is 0");
  ExpectRejected(patched(40, 10, 8), "min_txid 10 > max_txid 9");
  ExpectRejected(patched(64, 5, 8), "pre_checksum without bit 63");
  ExpectRejected(patched(72, ~kChecksumFlag, 8), "post_checksum without bit 63");
  ExpectRejected(patched(6, 81, 2), "header length 81, expected 93");
  ExpectRejected(patched(names, '/', 1), "invalid tenant name");
  ExpectRejected(patched(names + cs.tenant.size(), '.', 1), "invalid db name");
  // A wrong page count reads a block header as a page number, or a page number as one.
  ExpectRejected(patched(20, 4, 4), "page 1536 out of range");
  ExpectRejected(patched(20, 2, 4), "page block 0 raw length 9, expected 1024");

  // The lock page (16385 at 64 KiB pages) may never appear.
  ChangeSet big = MakeChangeSet({16384}, 65536, RandomBytes(65536, 15), 20000);
  std::string lock = EncodeChangeSet(big);
  PutLe(&lock, pgnos, 16385, 4);
  Reseal(&lock);
  ExpectRejected(lock, "page 16385 is the lock page");
}

TEST(ChangeSetTest, CorruptCompressedBlockIsRejected) {
  const ChangeSet cs = MakeChangeSet({1, 2}, 4096, CompressibleBytes(8192, 16), 2);
  const std::string enc = EncodeChangeSet(cs);
  const size_t block = kChangeSetHeaderSize + cs.tenant.size() + cs.db.size() + 8;
  const uint32_t comp_len =
      static_cast<unsigned char>(enc[block + 4]) | static_cast<unsigned char>(enc[block + 5]) << 8;
  ASSERT_LT(comp_len, 8192u);  // really compressed
  ASSERT_EQ(enc[block + 6] | enc[block + 7], 0);
  // Overwrite the LZ4 stream with a match that points before the start of the output.
  std::string bad = enc;
  const size_t data = block + 8;
  bad[data] = 0x0F;      // token: no literals, match length 4+15+
  bad[data + 1] = 0x10;  // offset 16 at output position 0
  bad[data + 2] = 0x00;
  Reseal(&bad);
  ExpectRejected(bad, "page block 0 does not decompress");
}

TEST(ChangeSetTest, HugeCountsAreRejectedWithoutLargeAllocations) {
  std::vector<std::pair<std::string, std::string>> cases;  // record, expected message
  Craft c;
  c.page_size = 65536;
  c.page_count = 0xFFFFFFFF;
  cases.emplace_back(c.Build(), "page count 4294967295 too large");
  c.page_size = 512;
  c.page_count = 2000000;  // 1 GB of pages: allowed, but 8 MB of page numbers are not here
  c.commit_pages = 2000000;
  c.tail = U32s({1, 2, 3});
  cases.emplace_back(c.Build(), "truncated page numbers");
  // 64 pages of 64 KiB claimed from 16 bytes of LZ4: past LZ4's 255:1 ceiling.
  c = Craft();
  c.page_size = 65536;
  c.page_count = 64;
  c.commit_pages = 64;
  for (uint32_t i = 1; i <= 64; ++i) c.tail += U32s({i});
  const std::string pgnos = c.tail;
  c.tail += U32s({64 * 65536, 16}) + std::string(16, '\0');
  cases.emplace_back(c.Build(), "page block 0 compressed length 16 too small for raw length");
  c.tail = pgnos + U32s({0xFFFFFFFF, 16}) + std::string(16, '\0');
  cases.emplace_back(c.Build(), "page block 0 raw length 4294967295, expected 4194304");
  c.tail = pgnos + U32s({64 * 65536, 0xFFFFFFF0}) + std::string(16, '\0');
  cases.emplace_back(c.Build(), "exceeds raw length");
  c.tail = pgnos + U32s({64 * 65536, 4000000}) + std::string(16, '\0');
  cases.emplace_back(c.Build(), "truncated page block 0");
  c.tail = pgnos;
  cases.emplace_back(c.Build(), "truncated page block 0");
  c.tail = pgnos + U32s({64 * 65536, 4194304}) + std::string(16, '\0');
  cases.emplace_back(c.Build(), "truncated page block 0");
  c = Craft();
  c.tail = "xyz";
  cases.emplace_back(c.Build(), "3 unexpected bytes after the page blocks");
  c = Craft();
  c.version = 9;
  cases.emplace_back(c.Build(), "unknown version 9");

  for (const auto& [record, message] : cases) {
    g_largest_alloc = 0;
    g_track_allocs = true;
    Result<ChangeSet> dec = DecodeChangeSet(record);
    g_track_allocs = false;
    ASSERT_FALSE(dec.ok()) << message;
    EXPECT_NE(dec.status().message().find(message), std::string::npos)
        << dec.status().message() << "\nwanted: " << message;
    EXPECT_LT(g_largest_alloc.load(), 4096u) << message;
  }

  // The largest allocation of a record that does decode is its pages, no more.
  ChangeSet zeros = Sequential(64, 65536, std::string(64 * 65536, '\0'));
  const std::string enc = EncodeChangeSet(zeros);
  EXPECT_LT(enc.size(), 64 * 65536 / 200);
  g_largest_alloc = 0;
  g_track_allocs = true;
  Result<ChangeSet> dec = DecodeChangeSet(enc);
  g_track_allocs = false;
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_TRUE(*dec == zeros);
  EXPECT_LE(g_largest_alloc.load(), 64 * 65536 + 1u);
}

TEST(ChangeSetTest, ValidateEnforcesTheDecoderRules) {
  const ChangeSet good = MakeChangeSet({1, 3}, 512, RandomBytes(1024, 17), 3);
  ASSERT_TRUE(ValidateChangeSet(good).ok());
  auto expect_invalid = [](const ChangeSet& cs, std::string_view needle) {
    Status s = ValidateChangeSet(cs);
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  ChangeSet cs = good;
  cs.pgnos = {3, 1};
  expect_invalid(cs, "page 1 out of order");
  cs = good;
  cs.pgnos = {1, 1};
  expect_invalid(cs, "page 1 out of order");
  cs = good;
  cs.pgnos = {0, 3};
  expect_invalid(cs, "page 0 out of range");
  cs = good;
  cs.commit_pages = 2;
  expect_invalid(cs, "page 3 out of range");
  cs = good;
  cs.pages.pop_back();
  expect_invalid(cs, "pages holds 1023 bytes, expected 1024");
  cs = good;
  cs.page_size = 768;
  expect_invalid(cs, "bad page size 768");
  cs = good;
  cs.tenant = "";
  expect_invalid(cs, "invalid tenant name");
  cs = good;
  cs.db = std::string(65, 'x');
  expect_invalid(cs, "invalid db name");
  cs = good;
  cs.min_txid = 0;
  cs.max_txid = 0;
  expect_invalid(cs, "min_txid is 0");
  cs = good;
  cs.min_txid = 10;
  expect_invalid(cs, "min_txid 10 > max_txid 9");
  cs = good;
  cs.pre_checksum = 0;
  expect_invalid(cs, "pre_checksum without bit 63");
  cs = good;
  cs.post_checksum = 1;
  expect_invalid(cs, "post_checksum without bit 63");
  cs = good;
  cs.flags = 4;
  expect_invalid(cs, "unknown flags 4");
  cs = good;
  cs.flags = ChangeSet::kFlagSnapshot;
  expect_invalid(cs, "snapshot has 2 pages, database has 3");
  // A snapshot never counts the lock page: 16386 pages of 64 KiB hold 16385 real ones.
  cs = MakeChangeSet({}, 65536, "", 16386);
  cs.flags = ChangeSet::kFlagSnapshot;
  expect_invalid(cs, "snapshot has 0 pages, database has 16385");
  cs = MakeChangeSet({16385}, 65536, std::string(65536, 'x'), 16386);
  expect_invalid(cs, "page 16385 is the lock page");
}

TEST(ChangeSetTest, LogCanBeWalkedFromEitherEnd) {
  std::vector<ChangeSet> sets = {
      MakeChangeSet({1}, 512, RandomBytes(512, 18), 1),
      MakeChangeSet({}, 4096, "", 0),
      Sequential(70, 1024, CompressibleBytes(70 * 1024, 19)),
  };
  std::string log;
  for (const auto& cs : sets) log += EncodeChangeSet(cs);

  // Backwards, from the trailer of the last record.
  std::string_view rest = log;
  for (size_t i = sets.size(); i-- > 0;) {
    Result<uint32_t> n = ChangeSetSizeFromTrailer(rest.substr(rest.size() - kChangeSetTrailerSize));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_LE(*n, rest.size());
    Result<ChangeSet> dec = DecodeChangeSet(rest.substr(rest.size() - *n));
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    EXPECT_TRUE(*dec == sets[i]) << i;
    rest.remove_suffix(*n);
  }
  EXPECT_TRUE(rest.empty());

  // Forwards, from the header of the first.
  rest = log;
  for (size_t i = 0; i < sets.size(); ++i) {
    Result<uint32_t> n = ChangeSetSizeFromHeader(rest.substr(0, kChangeSetHeaderSize));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    Result<ChangeSet> dec = DecodeChangeSet(rest.substr(0, *n));
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    EXPECT_TRUE(*dec == sets[i]) << i;
    rest.remove_prefix(*n);
  }
  EXPECT_TRUE(rest.empty());

  // Errors.
  EXPECT_FALSE(ChangeSetSizeFromTrailer(std::string_view(log).substr(0, 15)).ok());
  EXPECT_FALSE(ChangeSetSizeFromTrailer(std::string(16, '\0')).ok());
  std::string small_len(16, '\0');
  std::memcpy(small_len.data() + 12, "TFCE", 4);
  PutLe(&small_len, 8, 50, 4);
  Result<uint32_t> too_small = ChangeSetSizeFromTrailer(small_len);
  ASSERT_FALSE(too_small.ok());
  EXPECT_NE(too_small.status().message().find("record length 50 too small"), std::string::npos);
  EXPECT_FALSE(ChangeSetSizeFromHeader(std::string_view(log).substr(0, 79)).ok());
  EXPECT_FALSE(ChangeSetSizeFromHeader(std::string(80, 'x')).ok());
}

}  // namespace
}  // namespace tenancy

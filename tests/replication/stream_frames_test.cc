#include "replication/stream_frames.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "tenancy/changeset.h"
#include "tenancy/crc64.h"

// Largest single allocation while g_track_allocs is set: proves hostile counts are
// rejected before anything is sized from them.
namespace {
std::atomic<bool> g_track_allocs{false};
std::atomic<size_t> g_largest_alloc{0};
}  // namespace

// GCC 12 warns that free() gets a pointer from operator new: here that operator
// new is the malloc just below, so the pairing is right.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
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

namespace replication {
namespace {

using tenancy::Result;
using tenancy::Status;

constexpr uint64_t kSum = 0x8123456789ABCDEFull;
const std::string kLongName(64, 'n');  // the longest valid name

// Type codes as PROTOCOL.md lists them.
enum Type : uint8_t {
  kHello = 1,
  kPositions,
  kReady,
  kAck,
  kHashes,
  kWelcome,
  kChunk,
  kSnapBegin,
  kSnapPages,
  kSnapEnd,
  kHashesReq,
  kDrop,
  kHeartbeat,
  kError,
};

// A frame body written by hand from PROTOCOL.md, independent of the codec, so the
// tests pin the documented layout and can build frames the encoder refuses to.
class Body {
 public:
  Body& U8(uint8_t v) { return Le(v, 1); }
  Body& U16(uint16_t v) { return Le(v, 2); }
  Body& U32(uint32_t v) { return Le(v, 4); }
  Body& U64(uint64_t v) { return Le(v, 8); }
  Body& Str(std::string_view s) {
    U16(static_cast<uint16_t>(s.size()));
    b_.append(s);
    return *this;
  }
  Body& Blob(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    b_.append(s);
    return *this;
  }
  Body& Raw(std::string_view s) {
    b_.append(s);
    return *this;
  }
  Body& Pos(std::string_view tenant, std::string_view db, uint64_t id, uint64_t txid,
            uint64_t sum) {
    return Str(tenant).Str(db).U64(id).U64(txid).U64(sum);
  }
  const std::string& bytes() const { return b_; }

 private:
  Body& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  std::string b_;
};

void PutLe(std::string* s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) (*s)[at + i] = static_cast<char>(v >> (8 * i));
}

// Rewrites frame_len and CRC so they fit the bytes, whatever else is wrong.
void Reseal(std::string* f) {
  PutLe(f, 8, f->size(), 4);
  PutLe(f, 12, tenancy::Crc64(f->data() + 16, f->size() - 16), 4);
}

std::string Wire(uint8_t type, const Body& body) {
  std::string f = "TFSF";
  f.push_back(static_cast<char>(type));
  f.push_back(1);
  f.append(10, '\0');
  f += body.bytes();
  Reseal(&f);
  return f;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string TextBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static constexpr std::string_view kWords[] = {"alpha ", "beta ", "gamma ", "row ", "42 "};
  std::string s;
  while (s.size() < n) s += kWords[rng() % 5];
  s.resize(n);
  return s;
}

DbPosition Pos(std::string tenant, std::string db, uint64_t txid) {
  return DbPosition{std::move(tenant), std::move(db), 0xD0D0ull, txid, kSum};
}

// Validates, encodes, decodes; the result must equal the input.
void ExpectRoundTrip(const Frame& f) {
  SCOPED_TRACE(FrameName(f));
  ASSERT_TRUE(ValidateFrame(f).ok()) << ValidateFrame(f).ToString();
  const std::string bytes = EncodeFrame(f);
  EXPECT_LE(bytes.size(), kMaxFrameBytes);
  Result<Frame> dec = DecodeFrame(bytes);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(dec->index(), f.index());
  EXPECT_TRUE(*dec == f);
}

// DecodeFrame must fail with kInvalidArgument and a message naming `field`.
void ExpectRejected(const std::string& bytes, const std::string& field) {
  Result<Frame> dec = DecodeFrame(bytes);
  ASSERT_FALSE(dec.ok()) << "decoded a " << FrameName(*dec) << "; expected an error naming "
                         << field;
  EXPECT_EQ(dec.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(dec.status().message().rfind("stream frame: ", 0), 0u) << dec.status().message();
  EXPECT_NE(dec.status().message().find(field), std::string::npos)
      << "message \"" << dec.status().message() << "\" does not name " << field;
}

// ValidateFrame must refuse `f` naming `field`.
void ExpectInvalid(const Frame& f, const std::string& field) {
  Status s = ValidateFrame(f);
  ASSERT_FALSE(s.ok()) << FrameName(f) << " validated; expected an error naming " << field;
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find(field), std::string::npos)
      << "message \"" << s.message() << "\" does not name " << field;
}

// One valid frame of every type, with a bit of everything.
std::vector<Frame> Samples() {
  SnapshotPages pages{"acme", "orders.db", 1024, {1, 2, 5}, TextBytes(3 * 1024, 1)};
  return {
      Hello{kStreamVersion, "cluster-1", "node-b"},
      Positions{{Pos("acme", "orders.db", 7), Pos("acme", "users.db", 0)}},
      Ready{},
      Ack{{Pos("t", "d", 1)}},
      Hashes{"acme", "orders.db", 4096, 1, {1, 2, 3, 0}, true},
      Welcome{"cluster-1", "node-a", "http://10.0.0.1:20202"},
      ChangeSetChunk{"acme", "orders.db", 1000, 100, RandomBytes(300, 2)},
      SnapshotBegin{"acme", "orders.db", 42, 4096, 17},
      pages,
      SnapshotEnd{"acme", "orders.db", 42, 20, kSum, 3},
      HashesRequest{"acme", "orders.db"},
      Drop{"acme", "orders.db", 42},
      Heartbeat{1700000000123},
      Error{"cluster id mismatch"},
  };
}

// ---- round trips ----

TEST(StreamFrames, EverySampleRoundTripsAndIsNamed) {
  const char* names[] = {"hello",          "positions",    "ready",           "ack",
                         "hashes",         "welcome",      "changeset-chunk", "snapshot-begin",
                         "snapshot-pages", "snapshot-end", "hashes-request",  "drop",
                         "heartbeat",      "error"};
  std::vector<Frame> samples = Samples();
  ASSERT_EQ(samples.size(), std::variant_size_v<Frame>);
  for (size_t i = 0; i < samples.size(); ++i) {
    EXPECT_EQ(samples[i].index(), i);
    EXPECT_STREQ(FrameName(samples[i]), names[i]);
    ExpectRoundTrip(samples[i]);
    // The type byte is the variant index + 1 (PROTOCOL.md's table).
    EXPECT_EQ(static_cast<uint8_t>(EncodeFrame(samples[i])[4]), i + 1);
  }
}

// A message carries several whole frames back to back; DecodeMessage yields
// them in order and rejects a message whose frames do not fill it exactly.
TEST(StreamFrames, MessageOfSeveralFramesDecodesInOrder) {
  std::vector<Frame> samples = Samples();
  std::string message;
  for (const Frame& f : samples) message += EncodeFrame(f);
  std::vector<Frame> got;
  tenancy::Status s = DecodeMessage(message, [&](const Frame& f) {
    got.push_back(f);
    return tenancy::Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(got.size(), samples.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == samples[i]) << FrameName(samples[i]);
  // Cut anywhere inside the last frame: an error, after the whole frames before it.
  for (size_t cut : {size_t{1}, size_t{15}, size_t{16}, size_t{17}}) {
    size_t n = 0;
    tenancy::Status t = DecodeMessage(std::string_view(message).substr(0, message.size() - cut),
                                      [&](const Frame&) {
                                        ++n;
                                        return tenancy::Status::Ok();
                                      });
    EXPECT_FALSE(t.ok()) << "cut " << cut;
    EXPECT_EQ(n, samples.size() - 1) << "cut " << cut;
  }
  EXPECT_FALSE(DecodeMessage("", [](const Frame&) { return tenancy::Status::Ok(); }).ok());
  // The callback's error stops the walk and is returned.
  size_t calls = 0;
  tenancy::Status stop = DecodeMessage(message, [&](const Frame&) {
    ++calls;
    return tenancy::Status::Unavailable("enough");
  });
  EXPECT_EQ(calls, 1u);
  EXPECT_EQ(stop.code(), tenancy::Status::Code::kUnavailable);
}

TEST(StreamFrames, HeaderLayout) {
  const std::string f = EncodeFrame(Heartbeat{0x0102030405060708});
  ASSERT_EQ(f.size(), 16u + 8u);
  EXPECT_EQ(f.substr(0, 4), "TFSF");
  EXPECT_EQ(f[4], kHeartbeat);
  EXPECT_EQ(f[5], 1);
  EXPECT_EQ(f.substr(6, 2), std::string(2, '\0'));
  EXPECT_EQ(f.substr(8, 4), std::string("\x18\0\0\0", 4));  // frame_len 24
  const uint64_t crc = tenancy::Crc64(f.data() + 16, 8);
  std::string want_crc(4, '\0');
  PutLe(&want_crc, 0, crc, 4);
  EXPECT_EQ(f.substr(12, 4), want_crc);
  EXPECT_EQ(f.substr(16), "\x08\x07\x06\x05\x04\x03\x02\x01");
}

// The encoder writes exactly the bytes PROTOCOL.md describes, field by field.
TEST(StreamFrames, FieldLayoutMatchesProtocolDoc) {
  EXPECT_EQ(EncodeFrame(Hello{3, "", "node-b"}), Wire(kHello, Body().U32(3).Str("").Str("node-b")));
  EXPECT_EQ(EncodeFrame(Positions{{Pos("a", "b", 9)}}),
            Wire(kPositions, Body().U32(1).Pos("a", "b", 0xD0D0, 9, kSum)));
  EXPECT_EQ(EncodeFrame(Ready{}), Wire(kReady, Body()));
  EXPECT_EQ(EncodeFrame(Ack{{}}), Wire(kAck, Body().U32(0)));
  EXPECT_EQ(EncodeFrame(Hashes{"a", "b", 512, 3, {7, 8}, true}),
            Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(3).U32(2).U64(7).U64(8).U8(1)));
  EXPECT_EQ(EncodeFrame(Welcome{"c", "n", "http://x"}),
            Wire(kWelcome, Body().Str("c").Str("n").Str("http://x")));
  EXPECT_EQ(EncodeFrame(ChangeSetChunk{"a", "b", 500, 10, "xyz"}),
            Wire(kChunk, Body().Str("a").Str("b").U64(500).U64(10).Blob("xyz")));
  EXPECT_EQ(EncodeFrame(SnapshotBegin{"a", "b", 5, 1024, 6}),
            Wire(kSnapBegin, Body().Str("a").Str("b").U64(5).U32(1024).U64(6)));
  const std::string noise = RandomBytes(512, 3);  // incompressible: stored raw
  EXPECT_EQ(EncodeFrame(SnapshotPages{"a", "b", 512, {4}, noise}),
            Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(1).U32(4).Blob(noise)));
  EXPECT_EQ(EncodeFrame(SnapshotEnd{"a", "b", 5, 6, kSum, 7}),
            Wire(kSnapEnd, Body().Str("a").Str("b").U64(5).U64(6).U64(kSum).U32(7)));
  EXPECT_EQ(EncodeFrame(HashesRequest{"a", "b"}), Wire(kHashesReq, Body().Str("a").Str("b")));
  EXPECT_EQ(EncodeFrame(Drop{"a", "", 0}), Wire(kDrop, Body().Str("a").Str("").U64(0)));
  EXPECT_EQ(EncodeFrame(Heartbeat{5}), Wire(kHeartbeat, Body().U64(5)));
  EXPECT_EQ(EncodeFrame(Error{"boom"}), Wire(kError, Body().Str("boom")));
}

TEST(StreamFrames, EdgeValuesRoundTrip) {
  ExpectRoundTrip(Hello{UINT32_MAX, kLongName, kLongName});
  ExpectRoundTrip(Hello{1, "", "n"});
  ExpectRoundTrip(Positions{});
  std::vector<DbPosition> many;
  for (size_t i = 0; i < kMaxPositionsPerFrame; ++i) {
    many.push_back(DbPosition{kLongName, kLongName, UINT64_MAX, UINT64_MAX, UINT64_MAX});
  }
  ExpectRoundTrip(Positions{many});
  ExpectRoundTrip(Ack{many});
  ExpectRoundTrip(Ack{{DbPosition{"t", "d", 0, 0, tenancy::kEmptyChecksum}}});
  // No copy at all; a run ending at the last u32 page; one covering the lock page (0).
  ExpectRoundTrip(Hashes{"t", "d", 0, 1, {}, true});
  ExpectRoundTrip(Hashes{"t", "d", 65536, UINT32_MAX, {UINT64_MAX}, false});
  const uint32_t lock = tenancy::LockPage(65536);
  ExpectRoundTrip(Hashes{"t", "d", 65536, lock - 1, {1, 0, 3}, false});
  ExpectRoundTrip(Hashes{"t", "d", 512, 1, {}, false});
  ExpectRoundTrip(Welcome{kLongName, kLongName, std::string(kMaxUrlBytes, 'u')});
  ExpectRoundTrip(ChangeSetChunk{"t", "d", UINT32_MAX, UINT32_MAX - 1, "z"});
  ExpectRoundTrip(ChangeSetChunk{"t", "d", 98, 0, std::string(98, 'x')});
  ExpectRoundTrip(ChangeSetChunk{"t", "d", kMaxChunkBytes, 0, RandomBytes(kMaxChunkBytes, 4)});
  ExpectRoundTrip(SnapshotBegin{"t", "d", UINT64_MAX, 65536, UINT64_MAX});
  ExpectRoundTrip(SnapshotBegin{"t", "d", 0, 512, 0});
  ExpectRoundTrip(SnapshotEnd{"t", "d", UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT32_MAX});
  ExpectRoundTrip(SnapshotEnd{"t", "d", 0, 0, tenancy::kEmptyChecksum, 0});
  ExpectRoundTrip(Drop{kLongName, kLongName, UINT64_MAX});
  ExpectRoundTrip(Drop{"t", "", 0});
  ExpectRoundTrip(Heartbeat{0});
  ExpectRoundTrip(Heartbeat{INT64_MAX});
  ExpectRoundTrip(Error{std::string(kMaxErrorBytes, '\xff')});
  ExpectRoundTrip(Error{std::string(1, '\0')});
}

TEST(StreamFrames, SnapshotPagesAtTheLimitsRoundTrip) {
  // 512 pages of 512 bytes and 4 of 64 KiB: both exactly kMaxChunkBytes.
  std::vector<uint32_t> small;
  for (uint32_t i = 1; i <= 512; ++i) small.push_back(i * 3);
  ExpectRoundTrip(SnapshotPages{"t", "d", 512, small, TextBytes(kMaxChunkBytes, 5)});
  ExpectRoundTrip(
      SnapshotPages{"t", "d", 65536, {1, 2, 3, UINT32_MAX}, TextBytes(kMaxChunkBytes, 6)});
  // Pages on both sides of the lock page; all-zero pages (LZ4's best case).
  const uint32_t lock = tenancy::LockPage(4096);
  ExpectRoundTrip(SnapshotPages{"t", "d", 4096, {lock - 1, lock + 1}, std::string(8192, '\0')});
  ExpectRoundTrip(SnapshotPages{"t", "d", 512, small, std::string(kMaxChunkBytes, '\0')});
}

TEST(StreamFrames, IncompressibleSnapshotPagesAreStoredRaw) {
  for (uint32_t page_size : {512u, 4096u, 65536u}) {
    SCOPED_TRACE(page_size);
    const uint32_t n = kMaxChunkBytes / page_size;
    std::vector<uint32_t> pgnos;
    for (uint32_t i = 1; i <= n; ++i) pgnos.push_back(i);
    SnapshotPages f{"acme", "big.db", page_size, pgnos, RandomBytes(n * page_size, page_size)};
    ExpectRoundTrip(f);
    const std::string bytes = EncodeFrame(f);
    // Header, names, page_size, count, pgnos, comp_len == raw length, raw images: no
    // LZ4 worst-case expansion.
    const size_t raw = n * page_size;
    const size_t want = 16 + (2 + 4) + (2 + 6) + 4 + 4 + 4 * n + 4 + raw;
    EXPECT_EQ(bytes.size(), want);
    std::string comp_len(4, '\0');
    PutLe(&comp_len, 0, raw, 4);
    EXPECT_EQ(bytes.substr(want - raw - 4, 4), comp_len);
    EXPECT_EQ(bytes.substr(want - raw), f.images);
  }
  // Compressible pages do shrink.
  SnapshotPages text{"acme", "big.db", 4096, {1, 2}, TextBytes(8192, 9)};
  EXPECT_LT(EncodeFrame(text).size(), 4000u);
}

// A change-set record sent as chunks reassembles to the same record.
TEST(StreamFrames, ChangeSetRecordTravelsAsChunks) {
  tenancy::ChangeSet cs;
  cs.db_id = 77;
  cs.tenant = "acme";
  cs.db = "orders.db";
  cs.min_txid = cs.max_txid = 5;
  cs.page_size = 4096;
  cs.commit_pages = 200;
  cs.timestamp_ms = 1700000000000;
  cs.pre_checksum = kSum;
  cs.post_checksum = kSum | 1;
  for (uint32_t i = 1; i <= 200; ++i) cs.pgnos.push_back(i);
  cs.pages = RandomBytes(200 * 4096, 10);
  const std::string record = tenancy::EncodeChangeSet(cs);
  ASSERT_GT(record.size(), 3 * kMaxChunkBytes);

  std::string rebuilt;
  for (size_t off = 0; off < record.size(); off += kMaxChunkBytes) {
    ChangeSetChunk c{"acme", "orders.db", record.size(), off, record.substr(off, kMaxChunkBytes)};
    Result<Frame> dec = DecodeFrame(EncodeFrame(c));
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    const auto& got = std::get<ChangeSetChunk>(*dec);
    ASSERT_EQ(got.offset, rebuilt.size());
    rebuilt += got.bytes;
  }
  Result<tenancy::ChangeSet> again = tenancy::DecodeChangeSet(rebuilt);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == cs);
}

// ---- the size limit ----

// Hashes is the one frame that can reach kMaxFrameBytes: 33 fixed bytes plus the
// names plus 8 per CRC. Names of 7 bytes and 131067 CRCs make exactly 1 MiB.
Hashes HashesOfSize(size_t frame_bytes) {
  const size_t crcs = (kMaxFrameBytes - 40) / 8;  // 131067
  const size_t names = frame_bytes - 33 - 8 * crcs;
  Hashes h{"t", std::string(names - 1, 'd'), 4096, 1, std::vector<uint64_t>(crcs, 0x55), true};
  return h;
}

TEST(StreamFrames, FrameOfExactlyMaxBytesIsAccepted) {
  Hashes h = HashesOfSize(kMaxFrameBytes);
  ASSERT_TRUE(ValidateFrame(h).ok()) << ValidateFrame(h).ToString();
  const std::string bytes = EncodeFrame(h);
  EXPECT_EQ(bytes.size(), kMaxFrameBytes);
  Result<Frame> dec = DecodeFrame(bytes);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_TRUE(*dec == Frame(h));
}

TEST(StreamFrames, FrameOneByteOverMaxIsRejected) {
  Hashes h = HashesOfSize(kMaxFrameBytes + 1);
  ExpectInvalid(h, "exceeds kMaxFrameBytes");
  EXPECT_NE(ValidateFrame(h).message().find("hashes"), std::string::npos);
  // The same frame built by hand does not decode either.
  Body b;
  b.Str(h.tenant)
      .Str(h.db)
      .U32(h.page_size)
      .U32(h.first_pgno)
      .U32(static_cast<uint32_t>(h.crcs.size()));
  for (uint64_t c : h.crcs) b.U64(c);
  b.U8(1);
  const std::string bytes = Wire(kHashes, b);
  ASSERT_EQ(bytes.size(), kMaxFrameBytes + 1);
  ExpectRejected(bytes, "frame_len");
}

// ---- header rejections ----

TEST(StreamFrames, RejectsShortHeader) {
  const std::string f = EncodeFrame(Ready{});
  ExpectRejected("", "header");
  ExpectRejected(f.substr(0, 15), "header");
}

TEST(StreamFrames, RejectsBadMagic) {
  std::string f = EncodeFrame(Ready{});
  f[3] = 'X';
  ExpectRejected(f, "magic");
}

TEST(StreamFrames, RejectsUnknownType) {
  for (uint8_t type : {0, 15, 255}) {
    std::string f = EncodeFrame(Ready{});
    f[4] = static_cast<char>(type);
    ExpectRejected(f, "type");
  }
}

TEST(StreamFrames, RejectsUnknownVersion) {
  for (uint8_t version : {0, 2}) {
    std::string f = EncodeFrame(Ready{});
    f[5] = static_cast<char>(version);
    ExpectRejected(f, "version");
  }
}

TEST(StreamFrames, RejectsNonzeroReserved) {
  std::string f = EncodeFrame(Ready{});
  f[7] = 1;
  ExpectRejected(f, "reserved");
}

TEST(StreamFrames, RejectsFrameLenNotEqualToInput) {
  const std::string f = EncodeFrame(Heartbeat{1});
  ExpectRejected(f + "x", "frame_len");                    // input longer than frame_len
  ExpectRejected(f.substr(0, f.size() - 1), "frame_len");  // shorter
  std::string g = f;
  PutLe(&g, 8, 0xFFFFFFFF, 4);
  ExpectRejected(g, "frame_len");
}

TEST(StreamFrames, RejectsCrcMismatch) {
  std::string f = EncodeFrame(Heartbeat{1});
  f[16] ^= 1;
  ExpectRejected(f, "crc");
  std::string g = EncodeFrame(Heartbeat{1});
  g[12] ^= 0x80;
  ExpectRejected(g, "crc");
}

// ---- field rejections ----

TEST(StreamFrames, RejectsTrailingBytes) {
  ExpectRejected(Wire(kReady, Body().U8(0)), "ready: 1 unexpected bytes");
  ExpectRejected(Wire(kHeartbeat, Body().U64(1).U32(0)), "heartbeat: 4 unexpected bytes");
  ExpectRejected(Wire(kDrop, Body().Str("a").Str("b").U64(1).U8(0)), "drop: 1 unexpected bytes");
}

// Every proper prefix of every sample's body, resealed, fails as truncated and
// names the field where the bytes ran out.
TEST(StreamFrames, RejectsEveryTruncation) {
  for (const Frame& f : Samples()) {
    SCOPED_TRACE(FrameName(f));
    const std::string full = EncodeFrame(f);
    for (size_t n = 16; n < full.size(); ++n) {
      std::string cut = full.substr(0, n);
      Reseal(&cut);
      Result<Frame> dec = DecodeFrame(cut);
      ASSERT_FALSE(dec.ok()) << "prefix of " << n << " bytes decoded";
      const std::string& m = dec.status().message();
      EXPECT_EQ(m.rfind(std::string("stream frame: ") + FrameName(f) + ".", 0), 0u) << m;
      // Cuts inside the LZ4 images may instead fail to decompress.
      EXPECT_TRUE(m.find("truncated") != std::string::npos ||
                  m.find("snapshot-pages.images") != std::string::npos)
          << m;
    }
  }
  // The field is named, with the list index where there is one.
  ExpectRejected(Wire(kHello, Body().U32(1).Str("c").U16(5).Raw("ab")), "hello.node_id: truncated");
  ExpectRejected(Wire(kPositions, Body()
                                      .U32(3)
                                      .Pos("a", "b", 1, 1, kSum)
                                      .Pos("a", "c", 1, 1, kSum)
                                      .Str("a")
                                      .Str("b")
                                      .U64(1)),
                 "positions.dbs: truncated");
  ExpectRejected(Wire(kPositions, Body().U32(1).Str(std::string(20, 'a')).Str("b").U64(1)),
                 "positions.dbs[0].txid: truncated");
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(500).U64(0).U32(10).Raw("abc")),
                 "changeset-chunk.bytes: truncated");
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(1).U32(1).U64(5)),
                 "hashes.last: truncated");
}

TEST(StreamFrames, RejectsBadNames) {
  ExpectRejected(Wire(kHello, Body().U32(1).Str("").Str("")), "hello.node_id: invalid name");
  ExpectRejected(Wire(kHello, Body().U32(1).Str(".hidden").Str("n")),
                 "hello.cluster_id: invalid name");
  ExpectRejected(
      Wire(kPositions, Body().U32(2).Pos("a", "b", 1, 1, kSum).Pos("a/b", "c", 1, 1, kSum)),
      "positions.dbs[1].tenant: invalid name");
  ExpectRejected(Wire(kAck, Body().U32(1).Pos("a", std::string(65, 'x'), 1, 1, kSum)),
                 "ack.dbs[0].db: invalid name");
  ExpectRejected(Wire(kWelcome, Body().Str("").Str("n").Str("http://x")),
                 "welcome.cluster_id: invalid name");
  ExpectRejected(Wire(kHashesReq, Body().Str("a").Str("..")), "hashes-request.db: invalid name");
  ExpectRejected(Wire(kDrop, Body().Str("").Str("").U64(0)), "drop.tenant: invalid name");
  ExpectRejected(Wire(kDrop, Body().Str("a").Str("b c").U64(0)), "drop.db: invalid name");
  ExpectRejected(Wire(kChunk, Body().Str("a\n").Str("b").U64(500).U64(0).Blob("x")),
                 "changeset-chunk.tenant: invalid name");
  ExpectRejected(Wire(kSnapBegin, Body().Str("a").Str("").U64(1).U32(4096).U64(1)),
                 "snapshot-begin.db: invalid name");
  ExpectRejected(Wire(kSnapEnd, Body().Str("-").Str("\xc3\xa9").U64(1).U64(1).U64(kSum).U32(1)),
                 "snapshot-end.db: invalid name");
  ExpectInvalid(Hello{1, "", "no/slash"}, "hello.node_id");
  ExpectInvalid(Positions{{Pos("a", "", 1)}}, "positions.dbs[0].db");
}

TEST(StreamFrames, RejectsOutOfRangeValues) {
  ExpectRejected(Wire(kHello, Body().U32(0).Str("").Str("n")), "hello.version");
  ExpectRejected(Wire(kPositions, Body().U32(1).Pos("a", "b", 1, 1, 0x7FFFFFFFFFFFFFFF)),
                 "positions.dbs[0].checksum");
  // Hashes: page size, first page, run past the last page, lock page, no-copy form, flag.
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(1000).U32(1).U32(0).U8(1)),
                 "hashes.page_size");
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(0).U32(0).U8(1)),
                 "hashes.first_pgno");
  ExpectRejected(
      Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(UINT32_MAX).U32(2).U64(1).U64(2).U8(1)),
      "hashes.crcs");
  const uint32_t lock = tenancy::LockPage(65536);
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(65536).U32(lock).U32(1).U64(9).U8(0)),
                 "hashes.crcs[0]");
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(0).U32(1).U32(1).U64(9).U8(1)),
                 "hashes.page_size");
  ExpectRejected(Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(1).U32(0).U8(2)),
                 "hashes.last");
  // Welcome's URL.
  ExpectRejected(Wire(kWelcome, Body().Str("c").Str("n").Str("")), "welcome.primary_url");
  ExpectRejected(Wire(kWelcome, Body().Str("c").Str("n").Str("http://a b")), "welcome.primary_url");
  ExpectRejected(Wire(kWelcome, Body().Str("c").Str("n").Str(std::string(kMaxUrlBytes + 1, 'u'))),
                 "welcome.primary_url");
  // ChangeSetChunk: record length, piece length, piece placement.
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(97).U64(0).Blob("x")),
                 "changeset-chunk.record_len");
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(1ull << 32).U64(0).Blob("x")),
                 "changeset-chunk.record_len");
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(500).U64(0).Blob("")),
                 "changeset-chunk.bytes");
  ExpectRejected(Wire(kChunk, Body()
                                  .Str("a")
                                  .Str("b")
                                  .U64(kMaxChunkBytes * 2)
                                  .U64(0)
                                  .Blob(std::string(kMaxChunkBytes + 1, 'x'))),
                 "changeset-chunk.bytes");
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(500).U64(498).Blob("xyz")),
                 "changeset-chunk.offset");
  ExpectRejected(Wire(kChunk, Body().Str("a").Str("b").U64(500).U64(UINT64_MAX).Blob("x")),
                 "changeset-chunk.offset");
  // SnapshotBegin and SnapshotEnd.
  ExpectRejected(Wire(kSnapBegin, Body().Str("a").Str("b").U64(1).U32(131072).U64(1)),
                 "snapshot-begin.page_size");
  ExpectRejected(Wire(kSnapEnd, Body().Str("a").Str("b").U64(1).U64(1).U64(5).U32(1)),
                 "snapshot-end.checksum");
  ExpectRejected(Wire(kSnapEnd, Body().Str("a").Str("b").U64(1).U64(1).U64(kSum).U32(0)),
                 "snapshot-end.checksum");
  // Drop of a tenant carries no db_id; heartbeats are not negative; errors say something.
  ExpectRejected(Wire(kDrop, Body().Str("a").Str("").U64(3)), "drop.db_id");
  ExpectRejected(Wire(kHeartbeat, Body().U64(static_cast<uint64_t>(-1))),
                 "heartbeat.primary_time_ms");
  ExpectRejected(Wire(kError, Body().Str("")), "error.message");
  ExpectRejected(Wire(kError, Body().Str(std::string(kMaxErrorBytes + 1, 'e'))), "error.message");
  // The encoder side refuses the same.
  ExpectInvalid(SnapshotEnd{"a", "b", 1, 1, 5, 1}, "snapshot-end.checksum");
  ExpectInvalid(ChangeSetChunk{"a", "b", 500, 499, "xy"}, "changeset-chunk.offset");
  ExpectInvalid(Heartbeat{-5}, "heartbeat.primary_time_ms");
  ExpectInvalid(Hashes{"a", "b", 0, 1, {}, false}, "hashes.page_size");
}

TEST(StreamFrames, RejectsTooManyPositions) {
  Body b;
  b.U32(kMaxPositionsPerFrame + 1);
  for (size_t i = 0; i <= kMaxPositionsPerFrame; ++i) b.Pos("a", "b", 1, 1, kSum);
  ExpectRejected(Wire(kPositions, b), "positions.dbs: count 4097 exceeds 4096");
  ExpectInvalid(Ack{std::vector<DbPosition>(kMaxPositionsPerFrame + 1, Pos("a", "b", 1))},
                "ack.dbs");
}

TEST(StreamFrames, RejectsBadSnapshotPages) {
  const std::string page(512, 'p');
  auto pages = [&](uint32_t page_size, std::vector<uint32_t> pgnos, std::string images) {
    Body b;
    b.Str("a").Str("b").U32(page_size).U32(static_cast<uint32_t>(pgnos.size()));
    for (uint32_t p : pgnos) b.U32(p);
    b.Blob(images);  // stored raw: comp_len == raw length
    return Wire(kSnapPages, b);
  };
  EXPECT_TRUE(DecodeFrame(pages(512, {1, 2}, page + page)).ok());
  ExpectRejected(pages(768, {1}, std::string(768, 'p')), "snapshot-pages.page_size");
  ExpectRejected(pages(512, {}, ""), "snapshot-pages.pgnos: empty");
  ExpectRejected(pages(512, {0}, page), "snapshot-pages.pgnos[0]: 0");
  ExpectRejected(pages(512, {3, 3}, page + page), "snapshot-pages.pgnos[1]: 3 not ascending");
  ExpectRejected(pages(512, {4, 2}, page + page), "snapshot-pages.pgnos[1]: 2 not ascending");
  const uint32_t lock = tenancy::LockPage(512);
  ExpectRejected(pages(512, {1, lock}, page + page), "snapshot-pages.pgnos[1]");
  // More than kMaxChunkBytes of pages.
  std::vector<uint32_t> five{1, 2, 3, 4, 5};
  ExpectRejected(pages(65536, five, std::string(5 * 65536, 'p')), "snapshot-pages.pgnos");
  // comp_len above the raw length, too small for LZ4 to reach it, or garbage.
  ExpectRejected(Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(1).U32(1).Blob(page + "x")),
                 "snapshot-pages.images");
  ExpectRejected(Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(1).U32(1).Blob("x")),
                 "snapshot-pages.images");
  ExpectRejected(
      Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(1).U32(1).Blob(RandomBytes(100, 1))),
      "snapshot-pages.images");
  ExpectRejected(Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(1).U32(1).U32(512)),
                 "snapshot-pages.images: truncated");
  // The encoder side.
  ExpectInvalid(SnapshotPages{"a", "b", 512, {1, 2}, page}, "snapshot-pages.images");
  ExpectInvalid(SnapshotPages{"a", "b", 512, {2, 1}, page + page}, "snapshot-pages.pgnos[1]");
  ExpectInvalid(SnapshotPages{"a", "b", 65536, five, std::string(5 * 65536, 'p')},
                "snapshot-pages.pgnos");
}

// ---- hostile input ----

TEST(StreamFrames, HostileCountsAllocateNothingBig) {
  const std::vector<std::string> hostile = {
      Wire(kPositions, Body().U32(4096).Pos("a", "b", 1, 1, kSum)),
      Wire(kHashes, Body().Str("a").Str("b").U32(512).U32(1).U32(UINT32_MAX).U64(1)),
      Wire(kSnapPages, Body().Str("a").Str("b").U32(512).U32(512).U32(1)),
      Wire(kChunk, Body().Str("a").Str("b").U64(UINT32_MAX).U64(0).U32(kMaxChunkBytes).Raw("x")),
      Wire(kError, Body().U16(UINT16_MAX).Raw("x")),
  };
  for (const std::string& f : hostile) {
    g_largest_alloc = 0;
    g_track_allocs = true;
    Result<Frame> dec = DecodeFrame(f);
    g_track_allocs = false;
    EXPECT_FALSE(dec.ok());
    EXPECT_LT(g_largest_alloc.load(), 1024u) << dec.status().message();
  }
  // A tiny LZ4 block claiming 256 KiB: refused by the 255:1 rule before the buffer exists.
  Body b;
  b.Str("a").Str("b").U32(512).U32(512);
  for (uint32_t i = 1; i <= 512; ++i) b.U32(i);
  b.Blob("\x1f\x00");
  const std::string f = Wire(kSnapPages, b);
  g_largest_alloc = 0;
  g_track_allocs = true;
  Result<Frame> dec = DecodeFrame(f);
  g_track_allocs = false;
  ASSERT_FALSE(dec.ok());
  EXPECT_NE(dec.status().message().find("snapshot-pages.images"), std::string::npos);
  EXPECT_LT(g_largest_alloc.load(), 4 * f.size());
}

// A decoded frame is valid and survives encode + decode unchanged; anything else is
// a clean kInvalidArgument. Mutations are applied as-is (exercising the header and
// CRC checks) and resealed (reaching the field checks behind the CRC).
void CheckMutant(const std::string& bytes, size_t* decoded) {
  Result<Frame> dec = DecodeFrame(bytes);
  if (!dec.ok()) {
    ASSERT_EQ(dec.status().code(), Status::Code::kInvalidArgument);
    ASSERT_EQ(dec.status().message().rfind("stream frame: ", 0), 0u) << dec.status().message();
    return;
  }
  ++*decoded;
  ASSERT_TRUE(ValidateFrame(*dec).ok()) << ValidateFrame(*dec).ToString();
  Result<Frame> again = DecodeFrame(EncodeFrame(*dec));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(*again == *dec);
}

TEST(StreamFrames, RandomMutationsNeverCrash) {
  std::mt19937_64 rng(20240601);
  size_t tried = 0, decoded = 0;
  std::vector<Frame> samples = Samples();
  samples.push_back(SnapshotPages{"t", "d", 512, {1, 2, 3}, std::string(1536, '\0')});
  samples.push_back(SnapshotPages{"t", "d", 512, {7}, RandomBytes(512, 11)});
  for (const Frame& f : samples) {
    SCOPED_TRACE(FrameName(f));
    const std::string valid = EncodeFrame(f);
    for (int iter = 0; iter < 3000; ++iter) {
      std::string m = valid;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t at = rng() % m.size();
        switch (rng() % 6) {
          case 0:
            m[at] ^= static_cast<char>(1u << (rng() % 8));
            break;
          case 1:
            m[at] = static_cast<char>(rng());
            break;
          case 2:
            m[at] = static_cast<char>(rng() % 2 ? 0 : 0xFF);
            break;
          case 3:
            m.resize(std::max<size_t>(at, 1));
            break;
          case 4:
            m.insert(at, 1 + rng() % 8, static_cast<char>(rng()));
            break;
          case 5:
            m.erase(at, 1 + rng() % 8);
            break;
        }
      }
      CheckMutant(m, &decoded);
      if (m.size() >= 16 && m.compare(0, 4, "TFSF") == 0) {
        Reseal(&m);
        CheckMutant(m, &decoded);
      }
      ++tried;
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GT(tried, 40000u);
  EXPECT_GT(decoded, 0u);  // some mutants are valid frames (e.g. a changed TXID)
}

}  // namespace
}  // namespace replication

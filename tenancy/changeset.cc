#include "tenancy/changeset.h"

#include <lz4.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include "tenancy/crc64.h"
#include "tenancy/names.h"

namespace tenancy {

namespace {

constexpr char kMagic[4] = {'T', 'F', 'C', 'S'};
constexpr char kEndMagic[4] = {'T', 'F', 'C', 'E'};
constexpr uint16_t kVersion = 1;
constexpr size_t kBlockHeaderSize = 8;  // raw_len u32, comp_len u32
// Smallest record: header, two 1-byte names, no pages, trailer.
constexpr size_t kMinRecordSize = kChangeSetHeaderSize + 2 + kChangeSetTrailerSize;
// An LZ4 block expands at most 255:1 (a match-length byte of 255 adds 255 bytes);
// the slack covers the short literal runs at a block's end.
constexpr uint64_t kLz4MaxRatio = 255;
constexpr uint64_t kLz4RatioSlack = 64;

// Header field offsets (FORMAT.md).
constexpr size_t kOffVersion = 4;
constexpr size_t kOffHeaderLen = 6;
constexpr size_t kOffFlags = 8;
constexpr size_t kOffPageSize = 12;
constexpr size_t kOffRecordLen = 16;
constexpr size_t kOffPageCount = 20;
constexpr size_t kOffCommitPages = 24;
constexpr size_t kOffTenantLen = 28;
constexpr size_t kOffDbLen = 29;
constexpr size_t kOffReserved = 30;
constexpr size_t kOffDbId = 32;
constexpr size_t kOffMinTxid = 40;
constexpr size_t kOffMaxTxid = 48;
constexpr size_t kOffTimestamp = 56;
constexpr size_t kOffPreChecksum = 64;
constexpr size_t kOffPostChecksum = 72;

void PutU16(std::string* out, uint16_t v) {
  const char b[2] = {static_cast<char>(v), static_cast<char>(v >> 8)};
  out->append(b, 2);
}
void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 4);
}
void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 8);
}
void SetU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

uint64_t GetLe(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint16_t GetU16(const char* p) { return static_cast<uint16_t>(GetLe(p, 2)); }
uint32_t GetU32(const char* p) { return static_cast<uint32_t>(GetLe(p, 4)); }
uint64_t GetU64(const char* p) { return GetLe(p, 8); }

Status Bad(const std::string& what) { return Status::InvalidArgument("change set: " + what); }

std::string Str(uint64_t v) { return std::to_string(v); }

uint64_t BlockCount(uint64_t page_count) {
  return (page_count + kChangeSetPagesPerBlock - 1) / kChangeSetPagesPerBlock;
}

// The header rules: everything except the page numbers and images.
Status CheckFields(const ChangeSet& cs) {
  if ((cs.flags & ~ChangeSet::kFlagSnapshot) != 0) {
    return Bad("unknown flags " + Str(cs.flags));
  }
  if (!IsValidPageSize(cs.page_size)) return Bad("bad page size " + Str(cs.page_size));
  if (!IsValidName(cs.tenant)) return Bad("invalid tenant name");
  if (!IsValidName(cs.db)) return Bad("invalid db name");
  if (cs.min_txid == 0) return Bad("min_txid is 0");
  if (cs.min_txid > cs.max_txid) {
    return Bad("min_txid " + Str(cs.min_txid) + " > max_txid " + Str(cs.max_txid));
  }
  if ((cs.pre_checksum & kChecksumFlag) == 0) return Bad("pre_checksum without bit 63");
  if ((cs.post_checksum & kChecksumFlag) == 0) return Bad("post_checksum without bit 63");
  return Status::Ok();
}

// Checked before any page-number array or image buffer is sized from it.
Status CheckPageCount(uint64_t page_count, uint32_t page_size) {
  if (page_count * page_size > kChangeSetMaxPageBytes) {
    return Bad("page count " + Str(page_count) + " too large");
  }
  return Status::Ok();
}

Status CheckPgnos(const ChangeSet& cs) {
  const uint32_t lock_page = LockPage(cs.page_size);
  uint32_t prev = 0;
  for (uint32_t pgno : cs.pgnos) {
    if (pgno == 0 || pgno > cs.commit_pages) {
      return Bad("page " + Str(pgno) + " out of range (commit_pages " + Str(cs.commit_pages) + ")");
    }
    if (pgno == lock_page) return Bad("page " + Str(pgno) + " is the lock page");
    if (pgno <= prev) return Bad("page " + Str(pgno) + " out of order");
    prev = pgno;
  }
  if ((cs.flags & ChangeSet::kFlagSnapshot) != 0) {
    // Ascending, in range and without the lock page: the right count means every page.
    const uint64_t all = cs.commit_pages - (lock_page <= cs.commit_pages ? 1 : 0);
    if (cs.pgnos.size() != all) {
      return Bad("snapshot has " + Str(cs.pgnos.size()) + " pages, database has " + Str(all));
    }
  }
  return Status::Ok();
}

// The decompressed size of block `block`: 64 pages, or what is left for the last.
uint32_t BlockRawLen(uint64_t page_count, uint64_t block, uint32_t page_size) {
  const uint64_t first = block * kChangeSetPagesPerBlock;
  const uint64_t n = std::min<uint64_t>(kChangeSetPagesPerBlock, page_count - first);
  return static_cast<uint32_t>(n * page_size);
}

}  // namespace

Status ValidateChangeSet(const ChangeSet& cs) {
  if (Status s = CheckFields(cs); !s.ok()) return s;
  if (Status s = CheckPageCount(cs.pgnos.size(), cs.page_size); !s.ok()) return s;
  if (Status s = CheckPgnos(cs); !s.ok()) return s;
  if (cs.pages.size() != cs.pgnos.size() * cs.page_size) {
    return Bad("pages holds " + Str(cs.pages.size()) + " bytes, expected " +
               Str(cs.pgnos.size() * cs.page_size));
  }
  return Status::Ok();
}

std::string EncodeChangeSet(const ChangeSet& cs) {
  assert(ValidateChangeSet(cs).ok());
  const uint64_t page_count = cs.pgnos.size();
  const size_t header_len = kChangeSetHeaderSize + cs.tenant.size() + cs.db.size();

  std::string out;
  out.reserve(header_len + 4 * page_count + kChangeSetTrailerSize +
              std::min<uint64_t>(cs.pages.size(), 1 << 20));
  out.append(kMagic, 4);
  PutU16(&out, kVersion);
  PutU16(&out, static_cast<uint16_t>(header_len));
  PutU32(&out, cs.flags);
  PutU32(&out, cs.page_size);
  PutU32(&out, 0);  // record_len, filled in at the end
  PutU32(&out, static_cast<uint32_t>(page_count));
  PutU32(&out, cs.commit_pages);
  out.push_back(static_cast<char>(cs.tenant.size()));
  out.push_back(static_cast<char>(cs.db.size()));
  PutU16(&out, 0);  // reserved
  PutU64(&out, cs.db_id);
  PutU64(&out, cs.min_txid);
  PutU64(&out, cs.max_txid);
  PutU64(&out, static_cast<uint64_t>(cs.timestamp_ms));
  PutU64(&out, cs.pre_checksum);
  PutU64(&out, cs.post_checksum);
  assert(out.size() == kChangeSetHeaderSize);
  out += cs.tenant;
  out += cs.db;
  for (uint32_t pgno : cs.pgnos) PutU32(&out, pgno);

  const uint64_t blocks = BlockCount(page_count);
  size_t src = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint32_t raw_len = BlockRawLen(page_count, b, cs.page_size);
    const size_t at = out.size();
    out.resize(at + kBlockHeaderSize + raw_len);
    char* dst = out.data() + at + kBlockHeaderSize;
    // Capacity raw_len - 1: LZ4 gives up (returns 0) unless the block shrinks, so
    // comp_len == raw_len is free to mean "stored raw".
    int comp_len = LZ4_compress_default(cs.pages.data() + src, dst, static_cast<int>(raw_len),
                                        static_cast<int>(raw_len - 1));
    if (comp_len <= 0 ||
        raw_len > static_cast<uint64_t>(comp_len) * kLz4MaxRatio + kLz4RatioSlack) {
      std::memcpy(dst, cs.pages.data() + src, raw_len);
      comp_len = static_cast<int>(raw_len);
    }
    SetU32(out.data() + at, raw_len);
    SetU32(out.data() + at + 4, static_cast<uint32_t>(comp_len));
    out.resize(at + kBlockHeaderSize + static_cast<size_t>(comp_len));
    src += raw_len;
  }

  const uint64_t record_len = out.size() + kChangeSetTrailerSize;
  assert(record_len <= UINT32_MAX);
  SetU32(out.data() + kOffRecordLen, static_cast<uint32_t>(record_len));
  PutU64(&out, Crc64(out.data(), out.size()));
  PutU32(&out, static_cast<uint32_t>(record_len));
  out.append(kEndMagic, 4);
  return out;
}

Result<uint32_t> ChangeSetSizeFromHeader(std::string_view first_bytes) {
  if (first_bytes.size() < kChangeSetHeaderSize) {
    return Bad("truncated header (" + Str(first_bytes.size()) + " bytes)");
  }
  const char* p = first_bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Bad("bad magic");
  const uint16_t version = GetU16(p + kOffVersion);
  if (version != kVersion) return Bad("unknown version " + Str(version));
  const uint32_t record_len = GetU32(p + kOffRecordLen);
  if (record_len < kMinRecordSize) return Bad("record length " + Str(record_len) + " too small");
  return record_len;
}

Result<uint32_t> ChangeSetSizeFromTrailer(std::string_view last_bytes) {
  if (last_bytes.size() < kChangeSetTrailerSize) {
    return Bad("truncated trailer (" + Str(last_bytes.size()) + " bytes)");
  }
  const char* t = last_bytes.data() + last_bytes.size() - kChangeSetTrailerSize;
  if (std::memcmp(t + 12, kEndMagic, 4) != 0) return Bad("bad end magic");
  const uint32_t record_len = GetU32(t + 8);
  if (record_len < kMinRecordSize) return Bad("record length " + Str(record_len) + " too small");
  return record_len;
}

Result<ChangeSet> DecodeChangeSet(std::string_view bytes) {
  // 1. Lengths and framing, before any field is trusted.
  Result<uint32_t> header_size = ChangeSetSizeFromHeader(bytes);
  if (!header_size.ok()) return header_size.status();
  const uint32_t record_len = *header_size;
  if (record_len > bytes.size()) {
    return Bad("truncated (record is " + Str(record_len) + " bytes, have " + Str(bytes.size()) +
               ")");
  }
  if (record_len < bytes.size()) {
    return Bad("trailing garbage (record is " + Str(record_len) + " bytes, have " +
               Str(bytes.size()) + ")");
  }
  Result<uint32_t> trailer_size = ChangeSetSizeFromTrailer(bytes);
  if (!trailer_size.ok()) return trailer_size.status();
  if (*trailer_size != record_len) {
    return Bad("trailer length " + Str(*trailer_size) + " does not match header length " +
               Str(record_len));
  }

  // 2. Integrity, before anything is decompressed or sized from the contents.
  const char* p = bytes.data();
  const size_t body_end = bytes.size() - kChangeSetTrailerSize;
  if (Crc64(p, body_end) != GetU64(p + body_end)) return Bad("checksum mismatch");

  // 3. Header fields.
  ChangeSet cs;
  const uint16_t header_len = GetU16(p + kOffHeaderLen);
  cs.flags = GetU32(p + kOffFlags);
  cs.page_size = GetU32(p + kOffPageSize);
  const uint32_t page_count = GetU32(p + kOffPageCount);
  cs.commit_pages = GetU32(p + kOffCommitPages);
  const uint8_t tenant_len = static_cast<uint8_t>(p[kOffTenantLen]);
  const uint8_t db_len = static_cast<uint8_t>(p[kOffDbLen]);
  if (GetU16(p + kOffReserved) != 0) return Bad("reserved header bytes not zero");
  cs.db_id = GetU64(p + kOffDbId);
  cs.min_txid = GetU64(p + kOffMinTxid);
  cs.max_txid = GetU64(p + kOffMaxTxid);
  cs.timestamp_ms = static_cast<int64_t>(GetU64(p + kOffTimestamp));
  cs.pre_checksum = GetU64(p + kOffPreChecksum);
  cs.post_checksum = GetU64(p + kOffPostChecksum);
  const size_t want_header_len = kChangeSetHeaderSize + tenant_len + db_len;
  if (header_len != want_header_len) {
    return Bad("header length " + Str(header_len) + ", expected " + Str(want_header_len));
  }
  if (header_len > body_end) return Bad("truncated names");
  cs.tenant.assign(p + kChangeSetHeaderSize, tenant_len);
  cs.db.assign(p + kChangeSetHeaderSize + tenant_len, db_len);
  if (Status s = CheckFields(cs); !s.ok()) return s;

  // 4. Page numbers: sized only once the input is known to hold them.
  if (Status s = CheckPageCount(page_count, cs.page_size); !s.ok()) return s;
  size_t pos = header_len;
  if (static_cast<uint64_t>(page_count) * 4 > body_end - pos) {
    return Bad("truncated page numbers (" + Str(page_count) + " pages)");
  }
  cs.pgnos.resize(page_count);
  for (uint32_t i = 0; i < page_count; ++i, pos += 4) cs.pgnos[i] = GetU32(p + pos);
  if (Status s = CheckPgnos(cs); !s.ok()) return s;

  // 5. Page blocks. First walk the block headers: every length must be the expected
  // one, fit the input, and be reachable by LZ4 from its compressed size, so the
  // image buffer allocated below is bounded by 255 * bytes.size().
  const uint64_t blocks = BlockCount(page_count);
  const size_t blocks_start = pos;
  for (uint64_t b = 0; b < blocks; ++b) {
    if (body_end - pos < kBlockHeaderSize) return Bad("truncated page block " + Str(b));
    const uint32_t raw_len = GetU32(p + pos);
    const uint32_t comp_len = GetU32(p + pos + 4);
    const uint32_t want_raw = BlockRawLen(page_count, b, cs.page_size);
    if (raw_len != want_raw) {
      return Bad("page block " + Str(b) + " raw length " + Str(raw_len) + ", expected " +
                 Str(want_raw));
    }
    if (comp_len > raw_len) {
      return Bad("page block " + Str(b) + " compressed length " + Str(comp_len) +
                 " exceeds raw length " + Str(raw_len));
    }
    if (raw_len > static_cast<uint64_t>(comp_len) * kLz4MaxRatio + kLz4RatioSlack) {
      return Bad("page block " + Str(b) + " compressed length " + Str(comp_len) +
                 " too small for raw length " + Str(raw_len));
    }
    pos += kBlockHeaderSize;
    if (body_end - pos < comp_len) return Bad("truncated page block " + Str(b));
    pos += comp_len;
  }
  if (pos != body_end) return Bad(Str(body_end - pos) + " unexpected bytes after the page blocks");

  cs.pages.resize(static_cast<size_t>(page_count) * cs.page_size);
  pos = blocks_start;
  size_t dst = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint32_t raw_len = GetU32(p + pos);
    const uint32_t comp_len = GetU32(p + pos + 4);
    pos += kBlockHeaderSize;
    if (comp_len == raw_len) {
      std::memcpy(cs.pages.data() + dst, p + pos, raw_len);
    } else {
      const int n = LZ4_decompress_safe(p + pos, cs.pages.data() + dst, static_cast<int>(comp_len),
                                        static_cast<int>(raw_len));
      if (n < 0 || static_cast<uint32_t>(n) != raw_len) {
        return Bad("page block " + Str(b) + " does not decompress");
      }
    }
    pos += comp_len;
    dst += raw_len;
  }
  return cs;
}

Result<ChangeSetHeader> PeekChangeSetHeader(std::string_view record) {
  auto len = ChangeSetSizeFromHeader(record);
  if (!len.ok()) return len.status();
  if (record.size() < len.value()) return Status::InvalidArgument("change set: truncated record");
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, record.data() + off, 4);
    return v;
  };
  auto u64 = [&](size_t off) {
    uint64_t v;
    std::memcpy(&v, record.data() + off, 8);
    return v;
  };
  ChangeSetHeader h;
  h.flags = u32(8);
  h.page_size = u32(12);
  h.record_len = u32(16);
  h.page_count = u32(20);
  h.commit_pages = u32(24);
  h.db_id = u64(32);
  h.min_txid = u64(40);
  h.max_txid = u64(48);
  h.timestamp_ms = static_cast<int64_t>(u64(56));
  h.pre_checksum = u64(64);
  h.post_checksum = u64(72);
  return h;
}

}  // namespace tenancy

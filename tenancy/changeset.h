// The change-set codec: one committed write transaction of one database (or a
// snapshot of the whole database) as a self-checking byte string.
//
// Change sets are what the retention log stores and the replication stream sends.
// The byte layout, and why it is so, is in tenancy/FORMAT.md. A record carries its
// length at both ends (header and trailer), so a log of concatenated records can be
// walked forwards (ChangeSetSizeFromHeader) or backwards (ChangeSetSizeFromTrailer).
//
// Thread safety: pure functions on values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tenancy/status.h"

namespace tenancy {

struct ChangeSet {
  static constexpr uint32_t kFlagSnapshot = 1;  // the pages are the whole database

  uint64_t db_id = 0;      // database incarnation id (random, fixed when the database is created)
  std::string tenant, db;  // names, each valid per IsValidName (1..64 bytes)
  uint64_t min_txid = 0;   // TXID range covered: 1 <= min_txid <= max_txid
  uint64_t max_txid = 0;
  uint32_t page_size = 0;     // power of two, 512..65536
  uint32_t commit_pages = 0;  // database size in pages after commit
  int64_t timestamp_ms = 0;   // unix ms of the commit
  // Database checksum (crc64.h) before and after applying; both have bit 63 set.
  // For a snapshot, pre_checksum is the checksum of the database it replaces.
  uint64_t pre_checksum = 0;
  uint64_t post_checksum = 0;
  uint32_t flags = 0;  // kFlagSnapshot or 0
  // Strictly ascending, each in 1..commit_pages, never LockPage(page_size). A
  // snapshot lists every page 1..commit_pages except the lock page.
  std::vector<uint32_t> pgnos;
  std::string pages;  // pgnos.size() * page_size bytes: the post-commit images, in pgno order

  bool operator==(const ChangeSet&) const = default;
};

// Fixed sizes of the layout (FORMAT.md).
inline constexpr size_t kChangeSetHeaderSize = 80;   // before the two names
inline constexpr size_t kChangeSetTrailerSize = 16;  // crc64 u64, record length u32, "TFCE"
inline constexpr uint32_t kChangeSetPagesPerBlock = 64;
// Cap on pgnos.size() * page_size (3.75 GiB). With it, the worst-case record
// (every block stored raw) still fits the u32 record length.
inline constexpr uint64_t kChangeSetMaxPageBytes = 0xF0000000ull;
// A larger snapshot has to be sent some other way (e.g. as several change sets
// covering page ranges); ValidateChangeSet rejects it.

// OK if `cs` satisfies every rule above and its encoding fits a u32 length;
// otherwise kInvalidArgument naming the field. The decoder enforces the same rules.
Status ValidateChangeSet(const ChangeSet& cs);

// The record for `cs`: header, page numbers, LZ4 page blocks, trailer.
// REQUIRES: ValidateChangeSet(cs).ok() (asserted in debug builds).
std::string EncodeChangeSet(const ChangeSet& cs);

// Parses exactly one record: `bytes` must hold it and nothing else. Lengths are
// checked before anything is read and the trailer CRC before anything is
// decompressed; allocations are bounded by a small multiple of bytes.size()
// (LZ4's maximum ratio). Every malformed, truncated or over-long input gives
// kInvalidArgument with a message naming the field, e.g.
// "change set: page 7 out of order", "change set: checksum mismatch".
Result<ChangeSet> DecodeChangeSet(std::string_view bytes);

// The fixed-header fields of a record, read without verifying the record (no
// CRC, no decompression): for code that forwards records as they are (the
// replication stream) and only needs to know which TXIDs they cover. The
// receiver decodes and verifies. kInvalidArgument when `record` is shorter
// than its header or its magic, version or lengths are wrong.
struct ChangeSetHeader {
  uint32_t flags = 0, page_size = 0, record_len = 0, page_count = 0, commit_pages = 0;
  uint64_t db_id = 0, min_txid = 0, max_txid = 0;
  int64_t timestamp_ms = 0;
  uint64_t pre_checksum = 0, post_checksum = 0;
};
Result<ChangeSetHeader> PeekChangeSetHeader(std::string_view record);

// The record length stored in a trailer. `last_bytes` ends where a record ends and
// holds at least kChangeSetTrailerSize bytes (only the last ones are read). Bad
// end magic or an impossible length gives kInvalidArgument. The record is not
// verified; DecodeChangeSet does that.
Result<uint32_t> ChangeSetSizeFromTrailer(std::string_view last_bytes);

// The record length stored in a header. `first_bytes` starts where a record starts
// and holds at least kChangeSetHeaderSize bytes. Bad magic, unknown version or an
// impossible length gives kInvalidArgument. The record is not verified.
Result<uint32_t> ChangeSetSizeFromHeader(std::string_view first_bytes);

}  // namespace tenancy

// The replication stream's frames: what a replica and its primary send each other
// over `GET /v1/stream`, one frame per binary WebSocket message.
//
// The byte layout, the conversation and why it is so are in replication/PROTOCOL.md.
// Every frame carries a 16-byte header (magic, type, version, length, CRC) and then
// the type's fields. Change sets travel as pieces of their FORMAT.md records
// (ChangeSetChunk) so no frame exceeds kMaxFrameBytes and one big record never
// holds up other databases.
//
// Thread safety: pure functions on values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tenancy/status.h"

namespace replication {

inline constexpr uint32_t kStreamVersion = 1;
inline constexpr size_t kMaxFrameBytes = 1u << 20;    // whole encoded frame, 1 MiB
inline constexpr size_t kMaxChunkBytes = 256u << 10;  // payload piece of a record or page batch
inline constexpr size_t kMaxMessageBytes = 4u << 20;  // frames batched into one WebSocket message
inline constexpr size_t kFrameHeaderSize = 16;
inline constexpr size_t kMaxPositionsPerFrame = 4096;  // Positions.dbs, Ack.dbs
inline constexpr size_t kMaxUrlBytes = 2048;           // Welcome.primary_url
inline constexpr size_t kMaxErrorBytes = 4096;         // Error.message

// One database's position: its incarnation, TXID and checksum (tenancy/crc64.h,
// bit 63 always set).
struct DbPosition {
  std::string tenant, db;
  uint64_t db_id = 0, txid = 0, checksum = 0;
  bool operator==(const DbPosition&) const = default;
};

// ---- replica -> primary ----

// First frame of a connection. `version` is the conversation version the replica
// speaks (>= 1); the primary refuses one it does not.
struct Hello {
  uint32_t version = kStreamVersion;
  std::string cluster_id;  // empty: never joined a cluster
  std::string node_id;
  bool operator==(const Hello&) const = default;
};
// After Hello, any number of these (each <= kMaxPositionsPerFrame entries).
struct Positions {
  std::vector<DbPosition> dbs;
  bool operator==(const Positions&) const = default;
};
// The positions are complete.
struct Ready {
  bool operator==(const Ready&) const = default;
};
// What the replica has applied durably.
struct Ack {
  std::vector<DbPosition> dbs;
  bool operator==(const Ack&) const = default;
};
// Answer to HashesRequest: tenancy::PageCrc of each page of the replica's copy,
// pages first_pgno, first_pgno + 1, ... in order; 0 for a page it lacks and for the
// lock page. page_size 0 (with no CRCs) means the replica has no copy. Long lists
// span several frames; `last` marks the final one.
struct Hashes {
  std::string tenant, db;
  uint32_t page_size = 0;
  uint32_t first_pgno = 1;
  std::vector<uint64_t> crcs;
  bool last = false;
  bool operator==(const Hashes&) const = default;
};

// ---- primary -> replica ----

struct Welcome {
  std::string cluster_id;
  std::string node_id;
  std::string primary_url;
  bool operator==(const Welcome&) const = default;
};
// A piece of one encoded change-set record (tenancy/FORMAT.md): pieces of one record
// come in order, offset 0..record_len, and may interleave with other databases'
// pieces. 1..kMaxChunkBytes bytes, offset + bytes.size() <= record_len.
struct ChangeSetChunk {
  std::string tenant, db;
  uint64_t record_len = 0;
  uint64_t offset = 0;
  std::string bytes;
  bool operator==(const ChangeSetChunk&) const = default;
};
struct SnapshotBegin {
  std::string tenant, db;
  uint64_t db_id = 0;
  uint32_t page_size = 0;
  uint64_t base_txid = 0;
  bool operator==(const SnapshotBegin&) const = default;
};
// 1.. pages, pgnos strictly ascending, never the lock page,
// pgnos.size() * page_size <= kMaxChunkBytes. Sent LZ4-compressed.
struct SnapshotPages {
  std::string tenant, db;
  uint32_t page_size = 0;
  std::vector<uint32_t> pgnos;
  std::string images;  // pgnos.size() * page_size bytes
  bool operator==(const SnapshotPages&) const = default;
};
// commit_pages == 0 requires checksum == tenancy::kEmptyChecksum.
struct SnapshotEnd {
  std::string tenant, db;
  uint64_t db_id = 0, txid = 0, checksum = 0;
  uint32_t commit_pages = 0;
  bool operator==(const SnapshotEnd&) const = default;
};
struct HashesRequest {
  std::string tenant, db;
  bool operator==(const HashesRequest&) const = default;
};
// Database deleted; db empty (and db_id 0) = tenant removed.
struct Drop {
  std::string tenant, db;
  uint64_t db_id = 0;
  bool operator==(const Drop&) const = default;
};
struct Heartbeat {
  int64_t primary_time_ms = 0;  // unix ms, >= 0
  bool operator==(const Heartbeat&) const = default;
};

// ---- either direction, then close ----

struct Error {
  std::string message;  // 1..kMaxErrorBytes bytes
  bool operator==(const Error&) const = default;
};

using Frame =
    std::variant<Hello, Positions, Ready, Ack, Hashes, Welcome, ChangeSetChunk, SnapshotBegin,
                 SnapshotPages, SnapshotEnd, HashesRequest, Drop, Heartbeat, Error>;

// The frame's bytes: header, then its fields.
// REQUIRES: ValidateFrame(f).ok() (asserted in debug builds).
std::string EncodeFrame(const Frame& f);

// OK if `f` satisfies every rule above and in PROTOCOL.md and its encoding fits
// kMaxFrameBytes; otherwise kInvalidArgument naming the field, e.g.
// "stream frame: positions.dbs[3].tenant: invalid name". Senders split what
// would not fit.
tenancy::Status ValidateFrame(const Frame& f);

// Parses exactly one frame: `bytes` must hold it and nothing else. Header, length
// and CRC are checked before any field is read; counts are checked against the
// bytes present before anything is sized from them, so allocations stay within a
// small multiple of bytes.size() (LZ4's maximum ratio for SnapshotPages). Every
// malformed, truncated or over-long input gives kInvalidArgument with a message
// "stream frame: ..." naming the field. A decoded frame passes ValidateFrame.
tenancy::Result<Frame> DecodeFrame(std::string_view bytes);
// Splits a WebSocket message into its frames (by each header's frame_len) and
// decodes each; stops at the first bad one. fn returns false to stop early.
tenancy::Status DecodeMessage(std::string_view message,
                              const std::function<tenancy::Status(const Frame&)>& fn);

// "hello", "positions", "changeset-chunk", ...: for logs and messages.
const char* FrameName(const Frame& f);

}  // namespace replication

// ChangeLog: the retention log of one database — its change sets, appended in
// TXID order to segment files under <data.dir>/log/<tenant>/<db>/.
//
// A segment is named by the first TXID it holds (%016x.seg) and is a plain
// concatenation of encoded change sets (tenancy/FORMAT.md); each record ends in
// a trailer giving its length, so the tail is found by reading backwards. A torn
// record at the tail (a crash mid-append) is cut off when the log is opened.
// Retention deletes whole segments, oldest first, never the newest record.
//
// Thread safety: not thread-safe; the owning database calls it from its serial
// queue only (and the store-wide retention pass under the same queue).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tenancy/changeset.h"
#include "tenancy/status.h"

namespace tenancy {

// A database's position: what its last change set left it at.
struct Position {
  uint64_t txid = 0;
  uint64_t checksum = 1ull << 63;  // the checksum of an empty database
  uint32_t page_size = 0;
  uint32_t pages = 0;
  int64_t timestamp_ms = 0;
  uint64_t db_id = 0;
};

class ChangeLog {
 public:
  struct Options {
    uint64_t segment_bytes = 4 << 20;  // roll the active segment past this size
    int64_t segment_age_ms = 3600 * 1000;  // ... or once its first record is this old
    bool read_only = false;  // readers beside a running node: never cut, create or delete
  };

  // Opens (creating the directory) and recovers the tail.
  static Result<std::unique_ptr<ChangeLog>> Open(const std::string& dir, const Options& options);
  ~ChangeLog();

  const std::string& dir() const { return dir_; }
  // The position after the last record (txid 0 when the log is empty).
  const Position& tail() const { return tail_; }
  uint64_t bytes() const { return bytes_; }
  size_t segments() const { return segments_.size(); }

  // Appends one encoded change set whose resulting position is `pos`.
  Status Append(const std::string& encoded, const Position& pos, int64_t now_ms);
  // Makes every appended record durable (fdatasync; no-op when nothing is new).
  Status Sync();
  // Closes the active segment's fd (the handle cache evicting); the next Append
  // or Sync reopens it. Unsynced appends stay pending: Sync still covers them.
  void CloseActive();
  bool fd_open() const { return active_fd_ >= 0; }
  // Removes the last record (reconciliation after a commit that did not happen).
  Status DropLast();

  // Calls fn for every record with max_txid >= from_txid, in order, until fn
  // returns false. Records are decoded and verified.
  Status ForEach(uint64_t from_txid, const std::function<bool(const ChangeSet&)>& fn) const;
  // Where a reader left off: the record for next_txid starts at `offset` in the
  // segment named `segment` (its first TXID). A stale cursor (another TXID, a
  // segment since deleted) is simply not used.
  struct Cursor {
    uint64_t segment = 0, offset = 0, next_txid = 0;
  };
  // Calls fn(raw record, its header) for records with max_txid >= from_txid, in
  // order, without verifying or decoding them (the receiver does), until
  // max_bytes have been passed or fn returns false; continues from *cursor when
  // it points at from_txid, else finds the record by reading headers from the
  // segment holding from_txid. Leaves *cursor after the last record passed.
  // A torn record at the end of the newest segment ends the read quietly.
  Status ReadRaw(Cursor* cursor, uint64_t from_txid, size_t max_bytes,
                 const std::function<bool(std::string_view, const ChangeSetHeader&)>& fn) const;
  // The first TXID still retained (0 when empty).
  uint64_t first_txid() const;

  // Deletes whole segments whose newest record is older than now - retention_ms,
  // keeping the active one. Returns bytes freed.
  uint64_t TrimByAge(int64_t now_ms, int64_t retention_ms);
  // Deletes the oldest segment if there is more than one. Returns bytes freed.
  uint64_t TrimOldest();
  // Newest-record time of the oldest segment (INT64_MAX when only one).
  int64_t OldestSegmentTime() const;

  // Deletes every segment and the directory (the database was deleted).
  Status Destroy();

 private:
  struct Segment {
    uint64_t first_txid = 0;
    uint64_t bytes = 0;
    int64_t first_ms = 0;  // time of its first record (0 if unknown)
    int64_t last_ms = 0;   // time of its newest record
  };
  ChangeLog(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}
  std::string SegmentPath(uint64_t first_txid) const;
  Status Recover();
  Status OpenActive(bool create, uint64_t first_txid);
  Status EnsureActive();  // reopens the active segment after CloseActive

  const std::string dir_;
  const Options options_;
  std::vector<Segment> segments_;  // oldest first; back() is active
  int active_fd_ = -1;
  bool dirty_ = false;
  uint64_t bytes_ = 0;
  Position tail_;
  std::vector<uint64_t> active_offsets_;  // record start offsets in the active segment
};

}  // namespace tenancy

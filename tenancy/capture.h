// Capture: turns the writes one database's files receive into change sets.
//
// The daemon sees every write to a database and its companions, in order (they
// all pass through the database's SerialQueue). Capture watches them:
//
//  * Rollback journals (DELETE, TRUNCATE, PERSIST): a transaction starts when a
//    journal header with SQLite's magic is written; the first write to each
//    database page after that records the CRC of the page as it was (a pread of
//    that page: cost proportional to the pages written, never to the file). The
//    commit point is the journal being deleted, truncated to zero, or its header
//    zeroed: the pages whose bytes changed become one change set. A rolled-back
//    transaction restores the old bytes, so it yields nothing.
//  * WAL: a write that completes a frame whose header carries a non-zero
//    "database size after commit" is a commit; the frames since the previous
//    commit, latest image per page, become one change set. The CRC of the newest
//    committed image of every page in the current WAL generation is kept (8 bytes
//    per page in the WAL, dropped at WAL restart) so the checksum can be updated
//    without reading old images. Checkpoints copy committed pages and change nothing.
//
// The database checksum (SPEC.md) is kept incrementally: XOR out the old page
// CRC, XOR in the new one. Nothing scans a database in proportion to its size
// except: a database with no log yet (one snapshot record), and verification
// after an unclean shutdown or when asked (verify mode).
//
// Thread safety: every method except position() REQUIRES the caller to be on
// the database's SerialQueue. position() may be called from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "metrics/metrics.h"
#include "tenancy/changelog.h"
#include "tenancy/names.h"
#include "tenancy/status.h"

namespace tenancy {

// Counters the store exports as metrics. Thread-safe.
struct CaptureStats {
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> commit_nanos{0};
  std::atomic<uint64_t> repairs{0};
  std::atomic<uint64_t> verify_failures{0};
  std::atomic<int64_t> log_bytes{0};
};


class Capture {
 public:
  struct Env {
    std::string tenant;
    std::string db;
    std::string main_path, journal_path, wal_path;
    std::string log_dir;
    ChangeLog::Options log_options;
    bool verify_each_commit = false;  // recompute the full checksum after every commit
    bool unclean_start = false;       // last shutdown was not clean: verify on load
    std::function<int64_t()> now_ms;  // injected clock
    CaptureStats* stats = nullptr;    // may be null
    metrics::Metrics* metrics = nullptr;  // commit durations; may be null
    // The database's backing fd for a file (main or WAL), opened if needed;
    // NotFound when the file does not exist.
    std::function<Result<int>(FileKind)> fd_of;
    // Called on the queue after every new position (commit, apply, repair).
    std::function<void(const Position&)> on_commit;
  };

  explicit Capture(Env env);
  ~Capture();

  // Loads the position from the log and the files (idempotent; cheap after the first call).
  Status Load();
  // Thread-safe snapshot of the current position.
  Position position() const;
  // Non-ok once capture failed in a way that leaves the log unsure; every later
  // write to the database fails with it until a restart verifies and repairs.
  const Status& broken() const { return broken_; }

  // Hooks around the operations on the database's files (kind: which file).
  Status BeforeWrite(FileKind kind, off_t offset, std::string_view data);
  Status AfterWrite(FileKind kind, off_t offset, std::string_view data);
  Status BeforeTruncate(FileKind kind, off_t size);
  Status AfterTruncate(FileKind kind, off_t size);
  Status BeforeUnlink(FileKind kind);
  Status AfterUnlink(FileKind kind);
  Status AfterFsync(FileKind kind);

  // Makes appended change sets durable (clean shutdown).
  Status Sync();
  // Closes the fds capture keeps (file readers, log segment); they reopen on
  // next use. REQUIRES: on the queue, or nothing of the database in flight.
  void CloseFds();
  // Whether the log segment's fd is open (for the handle cache's fd count; any thread).
  bool log_fd_open() const;
  bool loaded() const { return loaded_; }
  // Retention (the store-wide pass): drop whole log segments older than
  // retention_ms, or the oldest one. The newest record always stays. Bytes freed.
  uint64_t TrimByAge(int64_t now_ms, int64_t retention_ms);
  uint64_t TrimOldest();
  // Newest-record time of the oldest trimmable segment; INT64_MAX when none.
  int64_t OldestTrimmable() const;
  ChangeLog* log() { return log_.get(); }

  // The full checksum of the database as SQLite would read it now (file plus
  // committed WAL frames). O(size): verification only.
  Result<uint64_t> ComputeChecksum();

  // Replication, primary side. A rollback-journal transaction is open: the
  // main file holds pages that are not committed.
  bool in_transaction() const { return journal_hot_; }
  // Appends to `pgnos`/`images` the committed images of pages first..first+max-1
  // (clipped to the committed size, the lock page skipped; WAL frames included),
  // and sets *next to the page after the last one considered (0 past the end).
  // REQUIRES: loaded, !in_transaction().
  Status ReadCommitted(uint32_t first, uint32_t max, std::vector<uint32_t>* pgnos,
                       std::string* images, uint32_t* next);

  // Replication, replica side (the database is written by nothing else).
  // Applies a change set received from the primary to the main file: checks it
  // follows the current position (same db_id, min_txid = txid + 1, pre_checksum
  // = checksum; a snapshot record replaces whatever is there), writes the pages,
  // sets the size, syncs, checks post_checksum, appends the record to the log.
  // kFailedPrecondition when it does not follow (nothing written); kDataLoss
  // when the result does not match (the file is changed: the position keeps
  // the old TXID with the checksum actually reached, so the primary sees the
  // divergence and sends a snapshot).
  Status ApplyRemote(const ChangeSet& cs);
  // Installs a snapshot: write_pages(main fd) writes the pages that differ,
  // then the file is cut to pos.pages, synced, and its checksum must equal
  // pos.checksum; the log restarts with one snapshot record at pos.txid.
  // kDataLoss on a mismatch (the position keeps the checksum reached).
  Status InstallSnapshot(const Position& pos, const std::function<Status(int fd)>& write_pages);
  // Page CRCs (PageCrc) of the main file's pages first.. up to max of them, 0 past the end.
  Status PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size, std::vector<uint64_t>* crcs);

 private:
  struct WalPage {
    uint64_t crc;
    uint64_t frame;  // index of the frame holding the newest committed image
  };
  struct PreImage {
    uint64_t crc;
    bool present;  // false: the page did not exist before the transaction
  };

  Status Commit();                   // rollback-journal commit point
  Status CommitWal(uint64_t upto);   // frames [wal_next_frame_, upto] hold new commits
  Status TrackMainPages(off_t offset, size_t length);
  Status Emit(std::vector<uint32_t> pgnos, std::string pages, uint32_t new_pages,
              uint64_t new_checksum, uint32_t flags);
  Status WriteSnapshot(const char* why);
  Status VerifyOrRepair(const char* when);
  Status LoadWal();
  void ResetWal();
  Status Fail(Status s);
  Status SyncLog();
  void RecordCommitTime(std::chrono::steady_clock::time_point started);
  void Publish();

  Result<int> MainFd();
  Result<int> WalFd();
  Status ReadMainPage(uint32_t pgno, char* buf);
  Status ReadLogicalPage(uint32_t pgno, char* buf);
  Result<uint64_t> MainSize();
  struct Header {
    uint32_t page_size = 0;  // 0: no valid SQLite header (yet)
    uint32_t pages = 0;      // the database size SQLite would use
  };
  Result<Header> ReadHeader();
  uint64_t FrameOffset(uint64_t frame) const { return 32 + frame * (24 + uint64_t{page_size_}); }

  const Env env_;
  bool loaded_ = false;
  Status broken_;
  std::unique_ptr<ChangeLog> log_;
  std::atomic<bool> log_fd_open_{false};

  uint32_t page_size_ = 0;  // 0 until the database has a header
  uint32_t pages_ = 0;      // committed size in pages
  uint64_t checksum_ = 1ull << 63;
  uint64_t txid_ = 0;
  uint64_t db_id_ = 0;

  // Rollback-journal transaction in progress.
  bool journal_hot_ = false;
  bool sync_seen_ = false;
  bool verify_pending_ = false;
  std::unordered_map<uint32_t, PreImage> pre_crc_;  // pages written since the tx began

  // WAL generation.
  bool wal_active_ = false;
  uint32_t wal_salt1_ = 0, wal_salt2_ = 0;
  uint64_t wal_next_frame_ = 0;
  uint64_t wal_written_end_ = 0;  // end of the bytes written in this WAL generation
  bool wal_big_endian_ = false;   // checksum byte order (the WAL magic's low bit)
  uint32_t wal_cks_[2] = {0, 0};  // checksum chain after the last committed frame
  std::unordered_map<uint32_t, WalPage> wal_pages_;

  mutable std::mutex pos_mu_;  // leaf; guards published_
  Position published_;
};

}  // namespace tenancy

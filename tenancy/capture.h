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
// Memory: what capture needs between writes is loaded on first use and can be
// dropped again (Unload) once the database is idle with no transaction open, so
// a known, idle database keeps only its position and a few counters (this
// object: 88 bytes).
//
// Thread safety: every method except position(), log_fd_open() and
// OldestTrimmable() REQUIRES the caller to be on the database's SerialQueue
// (or, for Unload and CloseFds, nothing of the database in flight); those three
// may be called from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "metrics/metrics.h"
#include "tenancy/changelog.h"
#include "tenancy/names.h"
#include "tenancy/small_mutex.h"
#include "tenancy/status.h"

namespace tenancy {

// Counters the store exports as metrics. Thread-safe.
struct CaptureStats {
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> commit_nanos{0};
  std::atomic<uint64_t> repairs{0};
  std::atomic<uint64_t> verify_failures{0};
  std::atomic<int64_t> log_bytes{0};
  std::atomic<int64_t> loaded{0};  // captures holding their state now (Load .. Unload)
};

class Capture {
 public:
  class Owner;
  // Store-wide settings and sinks every database's Capture shares (one per Store;
  // it outlives every Capture).
  struct Shared {
    std::string log_root;  // <data.dir>/log; a database's log is <log_root>/<tenant>/<db>
    ChangeLog::Options log_options;
    bool verify_each_commit = false;  // recompute the full checksum after every commit
    bool unclean_start = false;       // last shutdown was not clean: verify on first load
    std::function<int64_t()> now_ms;  // injected clock
    CaptureStats* stats = nullptr;    // may be null
    metrics::Metrics* metrics = nullptr;  // commit durations; may be null
    // Called on the queue after every new position (commit, apply, repair, delete).
    std::function<void(const std::string& tenant, const std::string& db)> on_position;
    // Called when OldestTrimmable() becomes finite (true) or INT64_MAX again
    // (false), also from the destructor, so the store's retention pass can visit
    // only databases with something to trim. Must be quick and take no lock but
    // its own leaf.
    std::function<void(Owner& owner, bool trimmable)> on_trimmable;
  };

  // The database a Capture belongs to: its names and its backing files. Capture
  // reads through the database's own fds (one per file for the whole daemon).
  class Owner {
   public:
    virtual const std::string& tenant_name() const = 0;
    virtual const std::string& name() const = 0;
    virtual std::string BackingPath(FileKind kind) const = 0;
    // The backing fd of a file (main or WAL), opened if needed; NotFound when the
    // file does not exist. Never cached across calls: the handle cache may close it.
    virtual Result<int> FdOf(FileKind kind) = 0;
    // Called before Capture opens an fd it keeps (its log segment), so the handle
    // cache can make room first.
    virtual void ReserveFd() = 0;

   protected:
    ~Owner() = default;
  };

  // REQUIRES: shared and owner outlive the Capture.
  Capture(const Shared& shared, Owner& owner);
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // Loads the position from the log tail and the files (idempotent; cheap when
  // loaded). After an unclean start the first load in this process verifies the
  // database against its log (and repairs it); later reloads do not.
  Status Load();
  // Load() as an operation on `kind` needs it: not at all while unloaded when
  // its hooks would have nothing to do -- writes, truncates and fsyncs of -shm
  // (capture ignores the wal-index) and unlinking -wal or -shm (no WAL
  // generation is tracked while unloaded) -- so readers' traffic (wal-index
  // updates, the last reader removing -wal and -shm) never loads an idle
  // database. Ok then; the hooks for those accept an unloaded capture.
  Status LoadFor(FileKind kind, bool unlink = false);
  bool loaded() const;
  // Drops the loaded state (the log, WAL page table, transaction bookkeeping),
  // keeping the published position, when nothing in it is needed to understand
  // the next write: no rollback transaction in progress, no WAL frames written
  // past the last commit, capture not broken. Load() rebuilds it from the log
  // tail and the files. Returns whether it did. REQUIRES: nothing of the
  // database in flight (the handle cache evicting an idle database).
  bool Unload();
  // Thread-safe snapshot of the current position (kept while unloaded).
  Position position() const;
  // Non-ok once capture failed in a way that leaves the log unsure; every later
  // write to the database fails with it until a restart verifies and repairs.
  // (A broken capture is never unloaded.)
  Status broken() const;

  // Hooks around the operations on the database's files (kind: which file).
  // REQUIRES: LoadFor(kind) ok since the last Unload (FailedPrecondition
  // otherwise); the unlink hooks also run after a Load() that failed.
  Status BeforeWrite(FileKind kind, off_t offset, std::string_view data);
  Status AfterWrite(FileKind kind, off_t offset, std::string_view data);
  Status BeforeTruncate(FileKind kind, off_t size);
  Status AfterTruncate(FileKind kind, off_t size);
  Status BeforeUnlink(FileKind kind);
  Status AfterUnlink(FileKind kind);
  Status AfterFsync(FileKind kind);

  // Makes appended change sets durable (clean shutdown), loaded or not.
  Status Sync();
  // Closes the fds capture keeps (log segment); they reopen on next use.
  // REQUIRES: on the queue, or nothing of the database in flight.
  void CloseFds();
  // Whether the log segment's fd is open (for the handle cache's fd count; any thread).
  bool log_fd_open() const { return log_fd_open_.load(std::memory_order_relaxed); }
  // Retention (the store-wide pass): drop whole log segments older than
  // retention_ms, or the oldest one. The newest record always stays. Bytes freed.
  // Work unloaded too (on the log alone).
  uint64_t TrimByAge(int64_t now_ms, int64_t retention_ms);
  uint64_t TrimOldest();
  // Newest-record time of the oldest trimmable segment; INT64_MAX when none or
  // when the log was never loaded in this process. Any thread (the retention
  // pass skips databases with nothing to trim without touching them).
  int64_t OldestTrimmable() const { return oldest_trimmable_ms_.load(std::memory_order_relaxed); }
  // REQUIRES: loaded (null otherwise).
  ChangeLog* log();

  // The full checksum of the database as SQLite would read it now (file plus
  // committed WAL frames). O(size): verification only. REQUIRES: loaded.
  Result<uint64_t> ComputeChecksum();

  // Replication, primary side. A rollback-journal transaction is open: the
  // main file holds pages that are not committed.
  bool in_transaction() const;
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
  // Page CRCs (PageCrc) of the main file's pages first.. up to max of them, 0 past
  // the end. REQUIRES: loaded.
  Status PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size, std::vector<uint64_t>* crcs);

 private:
  // Everything a loaded capture needs: the log, the committed size and checksum,
  // the transaction in progress, the WAL generation (capture.cc).
  class State;

  std::string LogDir() const;
  // fdatasync of the log's newest segment when an unload left appends unsynced.
  Status SyncUnloaded();
  // Sets the position readers see; tells on_position when notify.
  void Publish(const Position& p, bool notify);
  // Bookkeeping after anything changed the log: the bytes counted in stats, the
  // oldest trimmable segment, whether its fd is open. REQUIRES: on the queue.
  void NoteLog(const ChangeLog& log);
  // Runs fn on the log: the loaded one, or one opened for the call.
  template <typename Fn>
  uint64_t OnLog(Fn fn);

  const Shared& shared_;
  Owner& owner_;
  std::unique_ptr<State> state_;  // null while unloaded
  // Kept across unloads (on the queue, or by the evicting cache with nothing in flight):
  int64_t log_bytes_counted_ = 0;  // this log's bytes in shared_.stats->log_bytes
  std::atomic<int64_t> oldest_trimmable_ms_{INT64_MAX};
  mutable SmallMutex pos_mu_;  // leaf; guards published_
  bool verified_ = false;      // loaded once in this process (after an unclean start: verified)
  // An unload left appends not yet fdatasync'ed in the newest segment; synced by
  // the next sync or before the next append (not at reload: a read-only database
  // would pay an fsync per reload for a record nobody asked to be durable yet).
  bool log_unsynced_ = false;
  std::atomic<bool> log_fd_open_{false};
  Position published_;
};

}  // namespace tenancy

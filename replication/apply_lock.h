// ApplyLock: SQLite's own locks on one database, held so that a replica's applier can
// replace pages underneath live SQLite readers (any process) without any of them seeing
// a mix of two commits.
//
// The locks are OFD fcntl locks (F_OFD_SETLK) on the same bytes SQLite uses, taken
// through the path the readers open (on a replica MOUNT/<tenant>/<db>, which the kernel
// keeps the locks of, see fuse/README.md "Locks"). They conflict with SQLite's classic
// POSIX locks of other processes exactly as another SQLite connection's would.
//
//   rollback modes  PENDING, RESERVED and the SHARED range as write locks on the database
//                   file: SQLite's EXCLUSIVE. New readers get SQLITE_BUSY (busy handler).
//   WAL with -shm   a SHARED read lock on the database (nobody can close-checkpoint and
//                   unlink -wal/-shm meanwhile), a read lock on -shm's DMS byte (nobody
//                   re-initialises -shm), write locks on -shm bytes 120..122 (WRITE, CKPT,
//                   RECOVER), then the gate: header copy 0's checksum is spoiled, so the
//                   two copies differ, which readers take for a header being written, and
//                   new read transactions get SQLITE_BUSY_RECOVERY (busy handler) instead
//                   of taking a read mark; last, write locks on 123..127 (READ0..READ4)
//                   once the transactions already running are done. Without the gate,
//                   overlapping readers keep READ0 read-locked forever and a try-lock
//                   starves.
//   WAL, no -shm    no WAL reader exists: PENDING first (no new connection can start),
//                   then EXCLUSIVE as in rollback mode; if -shm appears meanwhile, the
//                   -shm locks instead.
//
// Only open/fcntl/pread/pwrite/close touch the path. Never mmap: a page fault on a mapping
// of our own FUSE mount from the daemon deadlocks it. Never F_OFD_SETLKW: waits poll
// with short sleeps, so no thread sleeps in the kernel on a lock a FUSE worker might need.
// On a replica mount the calling thread must be allowed to open the database O_RDWR
// (see FuseServer::RegisterApplierThread).
//
// Thread safety: one owner; not for concurrent use. Costs two fds while held.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "tenancy/status.h"

namespace replication {

class ApplyLock {
 public:
  // Opens `db_path` O_RDWR, reads page 1's bytes 18/19 (2/2 = WAL) and takes the locks
  // above, retrying with short sleeps until `timeout` (0 = one try).
  // Errors: kDeadlineExceeded (timeout > 0) or kUnavailable (timeout 0) naming the lock
  // and, when the kernel says, the pid holding it; kNotFound etc. from open; kIOError
  // from fcntl/pread. Nothing is held and no fd stays open on failure.
  static tenancy::Result<std::unique_ptr<ApplyLock>> Acquire(const std::string& db_path,
                                                             std::chrono::milliseconds timeout);

  ~ApplyLock();
  ApplyLock(const ApplyLock&) = delete;
  ApplyLock& operator=(const ApplyLock&) = delete;

  // True if the database was in WAL mode when locked.
  bool wal() const { return wal_; }

  // WAL only; REQUIRES: held, and the new pages are already in the database file (written
  // by the caller through its own fd) and the database is `db_pages` pages long.
  // Rewrites the wal-index header in -shm so that every reader drops its page cache and
  // reads the database file with an empty WAL: both header copies with mxFrame 0,
  // nPage = db_pages, iChange + 1, isInit 1, iVersion 3007000, the rest kept, checksum
  // recomputed as walIndexWriteHdr does; checkpoint info nBackfill 0, read marks as after
  // a WAL restart (0, 0, then unused), nBackfillAttempted 0. The lock bytes 120..127 are
  // never written. A header that is not initialised (isInit 0, or no copy with a valid
  // checksum) is left alone: the next reader runs recovery, which reads the database
  // file (the caller keeps the replica's -wal free of frames). No -shm: nothing to do.
  // Errors: kFailedPrecondition (not held, or not WAL), kIOError from pread/pwrite.
  tenancy::Status ResetWalIndex(uint32_t db_pages);

  // Releases every lock and closes the fds. Idempotent; also done by the destructor.
  // In WAL mode without a ResetWalIndex, first puts back the header copy the gate spoiled
  // (for an apply that wrote nothing; after writing pages, call ResetWalIndex).
  void Release();

 private:
  ApplyLock(std::string db_path, int db_fd);
  void RestoreHeader();

  std::string db_path_;
  int db_fd_ = -1;   // the database, O_RDWR; carries the database-file locks
  int shm_fd_ = -1;  // "<db>-shm" when WAL readers may exist; carries the -shm locks
  bool wal_ = false;
  bool gated_ = false;           // header copy 0 spoiled by the gate (see apply_lock.cc)
  uint8_t saved_hdr0_[48] = {};  // what copy 0 was
};

}  // namespace replication

// Whole-database transfers done as an ordinary SQLite client.
//
// Export and import go through the mount (MOUNT/<tenant>/<db>) like any
// application would, so SQLite's own locking gives a consistent snapshot, and
// an import reaches the backing file through the normal write path, where
// capture records it as one transaction. Nothing here knows the store.
//
// REQUIRES: called from a thread that is not a FUSE worker of the same process
// (the FUSE requests these calls cause must be answered by someone else), with
// no lock held that a FUSE handler could need. Every call blocks.
// Thread safety: the functions are thread-safe; each uses its own connections.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace replication {

// What went wrong, with the HTTP status that fits it (0 = success).
struct TransferError {
  int http_status = 0;
  std::string message;
  bool ok() const { return http_status == 0; }
};

// Stop: set when the server shuts down; a transfer in progress gives up soon
// after (its busy waits and page-copy loop look at it) and leaves the target as
// it was.
using StopFlag = std::atomic<bool>;

// Copies the database at `source` (opened read-only) into `dest` (an existing
// empty file or a missing path) inside one read transaction, so `dest` is one
// committed state of the source. Errors: 404 when the source does not exist,
// 503 when it stayed locked, 500 otherwise.
TransferError SnapshotDatabase(const std::string& source, const std::string& dest,
                               const StopFlag& stop);

// Checks that `path` holds a complete SQLite database: the header magic, then
// PRAGMA integrity_check = ok. A WAL-mode header is turned into a rollback one
// in place (the file has no -wal beside it; its pages are the whole database).
// Errors: 400 "not a SQLite database: <why>"; 503 when `stop` cut the check short.
TransferError ValidateDatabaseFile(const std::string& path, const StopFlag& stop);

// Replaces the content of the database at `dest` (created when missing) with
// the one at `source` using the backup API: one write transaction on `dest`.
// `source` must have passed ValidateDatabaseFile. Errors: 503 when the
// destination stayed locked, 409 when SQLite refused (e.g. a WAL database with
// another page size), 507 when the disk or quota is full, 500 otherwise; the
// destination is left as it was.
TransferError ReplaceDatabase(const std::string& source, const std::string& dest,
                              const StopFlag& stop);

}  // namespace replication

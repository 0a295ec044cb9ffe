// Whole-database transfers done as an ordinary SQLite client.
//
// Export and import go through the mount (MOUNT/<tenant>/<db>) like any
// application would, so SQLite's own locking gives a consistent snapshot, and
// an import reaches the backing file through the normal write path, where
// capture records it as one transaction. Nothing here knows the store.
//
// The daemon never opens a database of its own mount in its own process: it
// runs SnapshotDatabase / ReplaceDatabase in a helper process
// (RunTransferProcess). SQLite maps a WAL database's -shm into memory; a page
// fault on a mapping of our own FUSE mount holds the process's mmap lock while
// it waits for a FUSE reply, and the FUSE threads that must send that reply
// need the same lock for their own allocations (so does anything reading
// /proc/<pid>): the whole daemon hangs. A child has its own address space.
//
// REQUIRES (SnapshotDatabase, ReplaceDatabase on a mount path): a process that
// is not the FUSE daemon of that mount. Every call blocks.
// Thread safety: the functions are thread-safe; each uses its own connections.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

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

// The hidden command that runs one transfer in a helper process:
//   <exe> __sqlite-transfer snapshot SOURCE DEST
//   <exe> __sqlite-transfer replace SOURCE DEST
inline constexpr const char* kTransferCommand = "__sqlite-transfer";

// Runs `op` ("snapshot" or "replace") in a helper process started from
// `helper_exe` (e.g. /proc/self/exe, whose main dispatches kTransferCommand to
// TransferHelperMain). When `stop` is set the helper gets SIGTERM (it rolls
// back and exits), then SIGKILL. Errors are the helper's, or 500 when it could
// not run or died.
TransferError RunTransferProcess(const std::string& helper_exe, const std::string& op,
                                 const std::string& source, const std::string& dest,
                                 const StopFlag& stop);

// The helper's main (`args` follow the command name): runs the transfer and
// prints "<http status, 0 = ok> <message>" on stdout. Returns the exit status:
// 0 when it reported a result, 2 for bad arguments. Dies with its parent.
int TransferHelperMain(const std::vector<std::string>& args);

}  // namespace replication

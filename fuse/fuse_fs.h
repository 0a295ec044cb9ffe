// FuseServer: the kernel-facing adapter. Translates libfuse low-level requests
// into tenancy::Store calls and Status into errno (fuse/errno.h); no domain logic.
//
// Threads: libfuse's worker threads receive requests and answer cheap ones
// inline; work that may block on disk runs on the core's executor (a TBB arena)
// through each database's serialized queue, and replies from there.
// Caching and locking choices are explained in fuse/README.md.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>
#include <string_view>

#include "metrics/metrics.h"
#include "tenancy/executor.h"
#include "tenancy/status.h"
#include "tenancy/store.h"

struct fuse_session;

namespace fuse {

class FuseServer {
 public:
  struct Options {
    std::string mount_dir;
    bool allow_other = false;
    int max_threads = 16;  // libfuse workers
    metrics::Metrics* metrics = nullptr;  // request counts and durations (optional)
    // A replica: applications' writes fail with EROFS, except what SQLite readers
    // of a WAL database need (-wal/-shm created and opened read-write, -shm
    // written and truncated); registered applier threads may open anything
    // read-write. Negative entries are not cached. See fuse/README.md.
    bool read_only = false;
    // Replica: the primary's URL, or "" while unknown; <mount>/.primary shows it.
    // Called on FUSE workers at every lookup, getattr, open and read of .primary
    // and readdir of the root: must be quick and thread-safe. May be null.
    std::function<std::string()> primary_url;
  };

  // Mounts. REQUIRES: store and executor outlive the server.
  static tenancy::Result<std::unique_ptr<FuseServer>> Mount(tenancy::Store* store,
                                                            tenancy::Executor* executor,
                                                            const Options& options);
  ~FuseServer();  // unmounts if still mounted

  // Serves requests until Exit(); then waits for in-flight work. Call from the
  // thread that called Mount (it is woken by SIGUSR1, which Run unblocks for it).
  tenancy::Status Run();
  // Asks Run to return. Thread-safe; safe from a signal-waiting thread.
  void Exit();
  // Unmounts (idempotent).
  void Unmount();

  // ---- Replica apply (fuse/README.md "Replicas") ----
  // The calling thread of this process becomes an applier: on a read-only mount
  // its opens may take write access to any existing file (to take SQLite's
  // fcntl locks through the mount). Process-wide, lock-free, at most
  // kMaxApplierThreads at once (false when full). The thread must never mmap a
  // file of the mount. Unregister before the thread exits (its id is reused).
  static constexpr int kMaxApplierThreads = 16;
  static bool RegisterApplierThread();
  static void UnregisterApplierThread();

  // Drop what the kernel caches about a file changed behind its back: its
  // attributes and every cached page (fuse_lowlevel_notify_inval_inode(ino, 0, 0)).
  // A no-op when the kernel holds no inode for it. Dirty -shm pages are written
  // back first, through a FUSE WRITE that runs on the database's queue.
  // InvalidateEntry drops the kernel's name `name` (positive or negative) in
  // tenant `tenant`; with an empty name, the tenant's own name in the root.
  //
  // Both block until the kernel has done it (and so may wait for FUSE requests
  // to be answered). REQUIRES: the caller is not a FUSE worker, not a task on a
  // database's queue (not inside Store::RunOn), and holds no lock any FUSE
  // handler or queue task may take — else the mount deadlocks (LiteFS PR #206).
  // Thread-safe. REQUIRES: stop calling before Unmount() (after it they do
  // nothing, but one racing with it may write to a closed session).
  void InvalidateData(const tenancy::File* file);
  // Only the byte ranges (offset, length) given, and the attributes; empty = the
  // whole file. Same rules as above.
  void InvalidateData(const tenancy::File* file,
                      const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
  void InvalidateEntry(std::string_view tenant, std::string_view name);

  struct Impl;

 private:
  explicit FuseServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuse

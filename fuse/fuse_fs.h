// FuseServer: the kernel-facing adapter. Translates libfuse low-level requests
// into tenancy::Store calls and Status into errno (fuse/errno.h); no domain logic.
//
// Threads: libfuse's worker threads receive requests and answer cheap ones
// inline; work that may block on disk runs on the core's executor (a TBB arena)
// through each database's serialized queue, and replies from there.
// Caching and locking choices are explained in fuse/README.md.
#pragma once

#include <memory>
#include <string>

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

  struct Impl;

 private:
  explicit FuseServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuse

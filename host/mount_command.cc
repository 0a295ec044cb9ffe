#include "host/mount_command.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "fuse/fuse_fs.h"
#include "host/node_http.h"  // HTTP API and metrics
#include "metrics/log.h"
#include "replication/stream_client.h"
#include "replication/stream_server.h"
#include "tenancy/executor.h"
#include "tenancy/file_io.h"
#include "tenancy/store.h"

namespace host {

namespace {

int Fail(int code, const std::string& msg) {
  LOG_ERROR(msg);
  return code;
}

// The fstype of the mount at exactly `dir`, or "" when dir is not a mount point.
std::string MountTypeAt(const std::string& dir) {
  char resolved[PATH_MAX];
  std::string want = ::realpath(dir.c_str(), resolved) ? resolved : dir;
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt;
    ls >> id >> parent >> devno >> root >> mnt;
    if (mnt != want) continue;
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    rest >> found;  // the last matching line is the top mount
  }
  return found;
}

// A mount left behind by a killed daemon answers ENOTCONN: detach it. statfs,
// not stat: the kernel may answer stat from its attribute cache even when the
// daemon behind the mount is gone.
int PrepareMountDir(const std::string& dir) {
  struct statfs sfs;
  if (::statfs(dir.c_str(), &sfs) != 0) {
    if (errno == ENOTCONN || errno == ECONNABORTED) {
      if (::umount2(dir.c_str(), MNT_DETACH) != 0) {
        return Fail(2, "fuse.dir " + dir + ": stale mount and lazy unmount failed: " +
                           std::strerror(errno));
      }
      LOG_WARN("cleaned up a stale mount left by a previous tenantfs", {{"dir", dir}});
    } else if (errno != ENOENT) {
      return Fail(2, "fuse.dir " + dir + ": " + std::strerror(errno));
    }
  } else {
    std::string type = MountTypeAt(dir);
    if (!type.empty() && type.rfind("fuse", 0) == 0) {
      return Fail(2, "fuse.dir " + dir + " is already mounted (" + type +
                         "); is another tenantfs running?");
    }
  }
  if (tenancy::Status s = tenancy::MakeDirs(dir); !s.ok()) {
    return Fail(2, "fuse.dir: " + s.ToString());
  }
  return 0;
}

// Raises the soft fd limit to the hard one and returns the soft limit now (0 if
// unknown).
rlim_t RaiseFdLimit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0 || ::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  }
  return rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur;
}

// handles.max-open as the fd limit allows: the budget plus the daemon's own fds
// (FUSE, HTTP connections, replication streams, logs: up to 64, or a quarter of a
// small limit) must fit under RLIMIT_NOFILE, else opens would fail with EMFILE
// however well the budget is kept.
size_t FdBudget(size_t max_open, rlim_t limit) {
  if (limit == 0) return max_open;
  rlim_t own = std::min<rlim_t>(64, limit / 4);
  size_t room = static_cast<size_t>(limit - own);
  if (max_open <= room) return max_open;
  LOG_WARN("handles.max-open is more than the fd limit allows; lowering it",
           {{"max_open", std::to_string(max_open)},
            {"rlimit_nofile", std::to_string(limit)},
            {"kept_for_the_daemon", std::to_string(own)},
            {"using", std::to_string(room)}});
  return room;
}

}  // namespace

int RunMount(const Config& config) {
  auto started = std::chrono::steady_clock::now();
  // Signals are taken by one thread with sigwait; every other thread (libfuse's
  // workers, TBB's) inherits them blocked.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const rlim_t fd_limit = RaiseFdLimit();

  if (tenancy::Status s = tenancy::MakeDirs(config.data_dir); !s.ok()) {
    return Fail(2, "data.dir: " + s.ToString());
  }
  // One daemon per data dir.
  std::string lock_path = config.data_dir + "/LOCK";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return Fail(2, "data.dir: cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return Fail(2, "data.dir " + config.data_dir + " is in use by another tenantfs");
  }
  if (int rc = PrepareMountDir(config.fuse_dir); rc != 0) return rc;

  // ---- HTTP API and metrics (begin) ----
  // Metrics exist before the store and the mount, which report into them. The
  // HTTP port is bound before anything opens or mounts: a taken port stops
  // start-up with exit 2 and nothing mounted. Served once the mount is up;
  // stopped first at shutdown (its exports/imports are clients of the mount).
  metrics::Metrics node_metrics;
  auto http = NodeHttp::Listen(config, &node_metrics);
  if (!http.ok()) return Fail(2, http.status().message());
  NodeHttp* node_http = http.value().get();
  // ---- HTTP API and metrics (end) ----

  auto executor = tenancy::MakeTbbExecutor(
      std::max(8, static_cast<int>(std::thread::hardware_concurrency()) * 4));
  tenancy::Store::Options sopts;
  sopts.data_dir = config.data_dir;
  sopts.executor = executor.get();
  // Tests and operators checking a suspicion: recompute full checksums after commits.
  const char* verify = std::getenv("TENANTFS_VERIFY_CHECKSUMS");
  sopts.verify_each_commit = verify != nullptr && std::string(verify) == "1";
  sopts.max_open = FdBudget(static_cast<size_t>(config.max_open), fd_limit);
  sopts.metrics = &node_metrics;
  sopts.idle_timeout_ms = config.idle_timeout.count();
  auto store = tenancy::Store::Open(sopts);
  if (!store.ok()) return Fail(1, "open store: " + store.status().ToString());
  if (store.value()->unclean_start()) {
    LOG_WARN("last shutdown was not clean; each database verifies its change log when first used",
             {{"data", config.data_dir}});
  }

  fuse::FuseServer::Options fopts;
  fopts.mount_dir = config.fuse_dir;
  fopts.allow_other = config.allow_other;
  fopts.metrics = &node_metrics;
  const bool replica = !config.lease_candidate;  // static lease: a non-candidate is a replica
  fopts.read_only = replica;
  // .primary: the primary's URL while the stream is connected, absent otherwise.
  std::atomic<replication::StreamClient*> client_ptr{nullptr};
  fopts.primary_url = [&client_ptr]() -> std::string {
    replication::StreamClient* c = client_ptr.load();
    return c == nullptr ? std::string() : c->connected_primary();
  };
  auto server = fuse::FuseServer::Mount(store.value().get(), executor.get(), fopts);
  if (!server.ok()) return Fail(1, server.status().ToString());

  // ---- replication ----
  std::unique_ptr<replication::StreamHub> hub;
  std::unique_ptr<replication::StreamClient> client;
  if (!replica) {
    auto cluster = replication::EnsureClusterId(config.data_dir);
    if (!cluster.ok()) return Fail(1, "cluster id: " + cluster.status().ToString());
    replication::StreamHub::Options ho;
    ho.store = store.value().get();
    ho.metrics = &node_metrics;
    ho.cluster_id = cluster.value();
    ho.node_id = config.node_id;
    ho.advertise_url = config.advertise_url;
    // Test hook (fault tests): corrupt every Nth change-set piece sent.
    if (const char* every = std::getenv("TENANTFS_TEST_CORRUPT_EVERY")) {
      ho.corrupt_every = std::strtoull(every, nullptr, 10);
    }
    hub = std::make_unique<replication::StreamHub>(ho);
    replication::StreamHub* h = hub.get();
    store.value()->SetChangeListener(
        [h](const std::string& t, const std::string& d) { h->Notify(t, d); });
  } else {
    fuse::FuseServer* fs = server.value().get();
    replication::StreamClient::Options co;
    co.store = store.value().get();
    co.metrics = &node_metrics;
    co.primary_url = config.primary_url;
    co.token = config.http_token;
    co.node_id = config.node_id;
    co.data_dir = config.data_dir;
    co.mount_dir = config.fuse_dir;
    co.invalidate_data = [fs](const tenancy::File* f,
                              const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
      fs->InvalidateData(f, ranges);
    };
    co.invalidate_entry = [fs](const std::string& t, const std::string& n) {
      fs->InvalidateEntry(t, n);
    };
    co.applier_thread_started = [] { fuse::FuseServer::RegisterApplierThread(); };
    auto started_client = replication::StreamClient::Start(co);
    if (!started_client.ok()) return Fail(2, started_client.status().ToString());
    client = std::move(started_client.value());
    client_ptr.store(client.get());
  }
  node_http->Start(store.value().get(), hub.get(), client.get());  // HTTP: serve once the mount is up

  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started).count();
  LOG_INFO("serving", {{"mount", config.fuse_dir},
                       {"data", config.data_dir},
                       {"node", config.node_id},
                       {"startup_ms", std::to_string(ms)}});

  // Housekeeping: one thread for the node, no per-database timers. It closes
  // databases idle past handles.idle-timeout (a walk over open databases only)
  // and runs the store-wide retention pass over databases used since start.
  std::mutex hk_mu;
  std::condition_variable hk_cv;
  bool hk_stop = false;
  int64_t retention_ms = config.retention.count();
  using Ms = std::chrono::milliseconds;
  Ms retention_every(std::clamp<int64_t>(retention_ms / 10, 1000, 60000));
  Ms sweep_every(std::clamp<int64_t>(config.idle_timeout.count() / 4, 250, 15000));
  std::thread housekeeping([&] {
    auto next_retention = std::chrono::steady_clock::now() + retention_every;
    std::unique_lock lock(hk_mu);
    while (!hk_cv.wait_for(lock, std::min(sweep_every, retention_every), [&] { return hk_stop; })) {
      lock.unlock();
      size_t closed = store.value()->SweepIdle();
      if (closed > 0) LOG_DEBUG("closed idle databases", {{"count", std::to_string(closed)}});
      if (std::chrono::steady_clock::now() >= next_retention) {
        uint64_t freed = store.value()->EnforceRetention(retention_ms, config.retention_max_bytes);
        if (freed > 0) LOG_DEBUG("retention pass", {{"freed_bytes", std::to_string(freed)}});
        next_retention = std::chrono::steady_clock::now() + retention_every;
      }
      lock.lock();
    }
  });

  fuse::FuseServer* srv = server.value().get();
  std::atomic<bool> loop_done{false};
  std::thread signal_thread([srv, sigs, &loop_done, node_http] {
    int sig = 0;
    sigset_t wait_set = sigs;
    sigdelset(&wait_set, SIGUSR1);
    sigwait(&wait_set, &sig);
    if (loop_done.load()) return;
    LOG_INFO("stopping", {{"signal", strsignal(sig)}});
    node_http->Stop();  // HTTP first: transfers in flight are clients of the mount
    srv->Exit();
  });

  tenancy::Status run = srv->Run();
  // The signal thread may still wait if the loop ended on its own (e.g. an
  // external umount): wake it so it can be joined.
  loop_done.store(true);
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  node_http->Stop();  // HTTP: when the loop ended on its own (idempotent)
  {
    std::lock_guard lock(hk_mu);
    hk_stop = true;
  }
  hk_cv.notify_all();
  housekeeping.join();
  srv->Unmount();
  server.value().reset();
  executor->Drain();
  if (tenancy::Status closed = store.value()->Close(); !closed.ok()) {
    LOG_ERROR("could not make change logs durable", {{"error", closed.ToString()}});
    if (run.ok()) run = closed;
  }
  ::close(lock_fd);
  if (!run.ok()) return Fail(1, run.ToString());
  LOG_INFO("unmounted", {{"mount", config.fuse_dir}});
  return 0;
}

}  // namespace host

// Metrics: every SPEC.md metric, built once at start-up, exposed as Prometheus text.
//
// Wraps prometheus-cpp. The families and their metrics are created in the
// constructor and never change afterwards; callers keep references.
//
// Hot path (ObserveFuse, ObserveCommit, AddStreamBytes): lock-free. Histogram
// observations land in our own relaxed atomic buckets (prometheus-cpp's
// Histogram::Observe takes a mutex, one per histogram, which every FUSE worker
// doing the same op would contend on); Serialize() moves what accumulated since
// the last scrape into the prometheus-cpp histograms with ObserveMultiple.
//
// Scrape path (Serialize): serialized by a mutex. It refreshes the process
// gauges (fds, fd limit, RSS), runs the collector the host installed (gauges
// and core-owned counters), folds in the histogram deltas and renders the
// registry with prometheus::TextSerializer.
//
// Thread safety: all methods are thread-safe. Gauge/Counter references may be
// used from any thread (prometheus-cpp metrics are atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace metrics {

// The FUSE operations timed per op (label `op`). kCount is not an op.
enum class FuseOp {
  kLookup,
  kGetattr,
  kSetattr,
  kOpen,
  kCreate,
  kRead,
  kWrite,
  kFsync,
  kUnlink,
  kMkdir,
  kRmdir,
  kReaddir,
  kRelease,
  kStatfs,
  kOther,
  kCount
};
inline constexpr int kFuseOpCount = static_cast<int>(FuseOp::kCount);
// "lookup", "getattr", ...: the `op` label value.
std::string_view FuseOpName(FuseOp op);

enum class StreamDirection { kSent = 0, kReceived = 1 };

// Process figures, read from /proc and getrlimit at the time of the call.
// -1 when they cannot be read.
int64_t CountOpenFds();   // entries in /proc/self/fd (excluding the one used to list it)
int64_t MaxFds();         // RLIMIT_NOFILE soft limit
int64_t ResidentBytes();  // /proc/self/statm resident pages * page size

// Histogram bucket upper bounds (seconds) shared by the duration histograms:
// 10 µs to 10 s.
inline constexpr double kDurationBuckets[] = {1e-5,   2.5e-5, 5e-5, 1e-4,   2.5e-4, 5e-4, 1e-3,
                                              2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2,   0.1,  0.25,
                                              0.5,    1,      2.5,  5,      10};
inline constexpr int kDurationBucketCount = sizeof(kDurationBuckets) / sizeof(double);

class Metrics {
 public:
  // Builds the registry and every family and metric. Throws only on a programming
  // error (a bad metric name), so it is called once at start-up.
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // ---- hot path: lock-free, any thread
  // One FUSE request of `op` took `seconds` (counts it and times it).
  void ObserveFuse(FuseOp op, double seconds);
  // One commit took `seconds` from being detected to its change set durable.
  void ObserveCommit(double seconds);
  void AddStreamBytes(StreamDirection direction, uint64_t bytes);

  // ---- gauges, normally set by the collector at scrape time
  prometheus::Gauge& databases() { return *databases_; }
  prometheus::Gauge& databases_open() { return *databases_open_; }
  prometheus::Gauge& open_fds() { return *open_fds_; }
  prometheus::Gauge& max_fds() { return *max_fds_; }
  prometheus::Gauge& resident_memory_bytes() { return *resident_memory_bytes_; }
  prometheus::Gauge& write_queue_depth() { return *write_queue_depth_; }
  prometheus::Gauge& retention_bytes() { return *retention_bytes_; }
  prometheus::Gauge& is_primary() { return *is_primary_; }
  prometheus::Gauge& replicas_connected() { return *replicas_connected_; }
  prometheus::Gauge& replication_lag_seconds() { return *replication_lag_seconds_; }
  prometheus::Gauge& replication_databases_behind() { return *replication_databases_behind_; }

  // ---- counters the core keeps as its own monotonic totals: the collector
  // advances the exported counter to the core's total (never backwards).
  void SetEvictionsTotal(uint64_t total);
  void SetCommitsTotal(uint64_t total);
  void SetFdExhaustionsTotal(uint64_t total);

  // Runs right before every serialization, on the scraping thread, with the
  // scrape mutex held: it must not call Serialize() or SetCollector().
  void SetCollector(std::function<void(Metrics&)> collector);

  // The Prometheus text exposition (format 0.0.4) of every metric.
  std::string Serialize();

  prometheus::Registry& registry() { return *registry_; }

 private:
  // Our own lock-free histogram; folded into `target` at scrape time.
  struct alignas(64) AtomicHistogram {
    std::atomic<uint64_t> buckets[kDurationBucketCount + 1] = {};  // last one: +Inf
    std::atomic<uint64_t> sum_nanos{0};
    // Values already folded into the prometheus-cpp metrics (scrape mutex).
    uint64_t folded_buckets[kDurationBucketCount + 1] = {};
    uint64_t folded_sum_nanos = 0;
    prometheus::Histogram* target = nullptr;
    prometheus::Counter* count_target = nullptr;  // may be null
    void Observe(double seconds);
    void Fold();
  };

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* databases_ = nullptr;
  prometheus::Gauge* databases_open_ = nullptr;
  prometheus::Gauge* open_fds_ = nullptr;
  prometheus::Gauge* max_fds_ = nullptr;
  prometheus::Gauge* resident_memory_bytes_ = nullptr;
  prometheus::Gauge* write_queue_depth_ = nullptr;
  prometheus::Gauge* retention_bytes_ = nullptr;
  prometheus::Gauge* is_primary_ = nullptr;
  prometheus::Gauge* replicas_connected_ = nullptr;
  prometheus::Gauge* replication_lag_seconds_ = nullptr;
  prometheus::Gauge* replication_databases_behind_ = nullptr;
  prometheus::Counter* evictions_total_ = nullptr;
  prometheus::Counter* fd_exhaustions_total_ = nullptr;
  prometheus::Counter* commits_total_ = nullptr;
  prometheus::Counter* stream_bytes_[2] = {};

  AtomicHistogram fuse_[kFuseOpCount];
  AtomicHistogram commit_;

  std::mutex scrape_mu_;  // leaf; serializes scrapes and guards collector_ and folds
  std::function<void(Metrics&)> collector_;
};

}  // namespace metrics

#include "metrics/metrics.h"

#include <dirent.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace metrics {

namespace {

constexpr std::string_view kFuseOpNames[kFuseOpCount] = {
    "lookup", "getattr", "setattr", "open",    "create",  "read",   "write", "fsync",
    "unlink", "mkdir",   "rmdir",   "readdir", "release", "statfs", "other"};

prometheus::Gauge* AddGauge(prometheus::Registry& r, const std::string& name,
                            const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram::BucketBoundaries DurationBuckets() {
  return {std::begin(kDurationBuckets), std::end(kDurationBuckets)};
}

void AdvanceCounter(prometheus::Counter& counter, uint64_t total) {
  double now = counter.Value();
  double want = static_cast<double>(total);
  if (want > now) counter.Increment(want - now);
}

}  // namespace

std::string_view FuseOpName(FuseOp op) {
  int i = static_cast<int>(op);
  if (i < 0 || i >= kFuseOpCount) return "other";
  return kFuseOpNames[i];
}

int64_t CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int64_t n = 0;
  while (struct dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n > 0 ? n - 1 : 0;  // the directory stream's own fd is not ours
}

int64_t MaxFds() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  if (rl.rlim_cur == RLIM_INFINITY) return INT64_MAX;
  return static_cast<int64_t>(rl.rlim_cur);
}

int64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "re");
  if (f == nullptr) return -1;
  unsigned long long size = 0, resident = 0;
  int got = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (got != 2) return -1;
  return static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE);
}

void Metrics::AtomicHistogram::Observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // also catches NaN
  // First bound >= value: Prometheus buckets are "le" (inclusive upper bounds).
  const double* end = std::end(kDurationBuckets);
  int i = static_cast<int>(std::lower_bound(std::begin(kDurationBuckets), end, seconds) -
                           std::begin(kDurationBuckets));
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  double nanos = std::min(seconds * 1e9, 1.8e19);
  sum_nanos.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
}

void Metrics::AtomicHistogram::Fold() {
  std::vector<double> increments(kDurationBucketCount + 1);
  uint64_t count = 0;
  for (int i = 0; i <= kDurationBucketCount; ++i) {
    uint64_t now = buckets[i].load(std::memory_order_relaxed);
    increments[i] = static_cast<double>(now - folded_buckets[i]);
    count += now - folded_buckets[i];
    folded_buckets[i] = now;
  }
  uint64_t sum = sum_nanos.load(std::memory_order_relaxed);
  double sum_delta = static_cast<double>(sum - folded_sum_nanos) / 1e9;
  folded_sum_nanos = sum;
  if (count == 0) return;
  target->ObserveMultiple(increments, sum_delta);
  if (count_target != nullptr) count_target->Increment(static_cast<double>(count));
}

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  databases_ = AddGauge(r, "tenantfs_databases", "Databases known to this node.");
  databases_open_ = AddGauge(r, "tenantfs_databases_open", "Backing databases open now.");
  open_fds_ = AddGauge(r, "tenantfs_open_fds", "File descriptors the process has open.");
  max_fds_ = AddGauge(r, "tenantfs_max_fds", "RLIMIT_NOFILE: the process's fd limit.");
  resident_memory_bytes_ =
      AddGauge(r, "tenantfs_resident_memory_bytes", "Resident set size of the process in bytes.");
  write_queue_depth_ =
      AddGauge(r, "tenantfs_write_queue_depth", "Writes waiting in the queues, all databases.");
  retention_bytes_ =
      AddGauge(r, "tenantfs_retention_bytes", "Change-set bytes kept on disk for catch-up.");
  is_primary_ = AddGauge(r, "tenantfs_is_primary", "1 when this node is the primary, else 0.");
  replicas_connected_ =
      AddGauge(r, "tenantfs_replicas_connected", "Replicas streaming from this primary.");
  replication_lag_seconds_ = AddGauge(r, "tenantfs_replication_lag_seconds",
                                      "Replica: replication lag of the worst database in seconds.");
  replication_databases_behind_ = AddGauge(r, "tenantfs_replication_databases_behind",
                                           "Replica: databases behind the primary.");

  evictions_total_ = &prometheus::BuildCounter()
                          .Name("tenantfs_database_evictions_total")
                          .Help("Backing databases closed because idle or by the LRU.")
                          .Register(r)
                          .Add({});
  fd_exhaustions_total_ = &prometheus::BuildCounter()
                              .Name("tenantfs_fd_exhaustions_total")
                              .Help("Opens of a backing file that failed with EMFILE or ENFILE "
                                    "(the least recently used database was closed to retry).")
                              .Register(r)
                              .Add({});
  commits_total_ = &prometheus::BuildCounter()
                        .Name("tenantfs_commits_total")
                        .Help("Committed write transactions.")
                        .Register(r)
                        .Add({});
  auto& stream = prometheus::BuildCounter()
                     .Name("tenantfs_stream_bytes_total")
                     .Help("Replication stream bytes, by direction.")
                     .Register(r);
  stream_bytes_[0] = &stream.Add({{"direction", "sent"}});
  stream_bytes_[1] = &stream.Add({{"direction", "received"}});

  auto& fuse_count = prometheus::BuildCounter()
                         .Name("tenantfs_fuse_requests_total")
                         .Help("FUSE requests handled, by operation.")
                         .Register(r);
  auto& fuse_duration = prometheus::BuildHistogram()
                            .Name("tenantfs_fuse_request_duration_seconds")
                            .Help("Time to answer a FUSE request, by operation.")
                            .Register(r);
  for (int i = 0; i < kFuseOpCount; ++i) {
    prometheus::Labels labels{{"op", std::string(kFuseOpNames[i])}};
    fuse_[i].count_target = &fuse_count.Add(labels);
    fuse_[i].target = &fuse_duration.Add(labels, DurationBuckets());
  }
  commit_.target = &prometheus::BuildHistogram()
                        .Name("tenantfs_commit_duration_seconds")
                        .Help("Time from a commit detected to its change set durable.")
                        .Register(r)
                        .Add({}, DurationBuckets());
}

Metrics::~Metrics() = default;

void Metrics::ObserveFuse(FuseOp op, double seconds) {
  int i = static_cast<int>(op);
  if (i < 0 || i >= kFuseOpCount) i = static_cast<int>(FuseOp::kOther);
  fuse_[i].Observe(seconds);
}

void Metrics::ObserveCommit(double seconds) { commit_.Observe(seconds); }

void Metrics::AddStreamBytes(StreamDirection direction, uint64_t bytes) {
  stream_bytes_[static_cast<int>(direction) & 1]->Increment(static_cast<double>(bytes));
}

void Metrics::SetEvictionsTotal(uint64_t total) { AdvanceCounter(*evictions_total_, total); }
void Metrics::SetCommitsTotal(uint64_t total) { AdvanceCounter(*commits_total_, total); }
void Metrics::SetFdExhaustionsTotal(uint64_t total) {
  AdvanceCounter(*fd_exhaustions_total_, total);
}

void Metrics::SetCollector(std::function<void(Metrics&)> collector) {
  std::lock_guard lock(scrape_mu_);
  collector_ = std::move(collector);
}

std::string Metrics::Serialize() {
  std::lock_guard lock(scrape_mu_);
  if (int64_t n = CountOpenFds(); n >= 0) open_fds_->Set(static_cast<double>(n));
  if (int64_t n = MaxFds(); n >= 0) max_fds_->Set(static_cast<double>(n));
  if (int64_t n = ResidentBytes(); n >= 0) resident_memory_bytes_->Set(static_cast<double>(n));
  if (collector_) collector_(*this);
  for (auto& h : fuse_) h.Fold();
  commit_.Fold();
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace metrics

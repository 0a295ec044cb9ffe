#include "metrics/metrics.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <prometheus/gauge.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace metrics {
namespace {

// The sample line `name value` (exact series text, labels included), or "".
std::string Sample(const std::string& text, const std::string& series) {
  size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      size_t end = text.find('\n', pos);
      return text.substr(pos + series.size() + 1, end - pos - series.size() - 1);
    }
    pos += series.size();
  }
  return "";
}

TEST(MetricsTest, EverySpecNameIsExposed) {
  Metrics m;
  std::string text = m.Serialize();
  for (const char* name :
       {"tenantfs_databases", "tenantfs_databases_open", "tenantfs_database_evictions_total",
        "tenantfs_open_fds", "tenantfs_max_fds", "tenantfs_resident_memory_bytes",
        "tenantfs_fuse_requests_total", "tenantfs_fuse_request_duration_seconds",
        "tenantfs_commits_total", "tenantfs_commit_duration_seconds", "tenantfs_write_queue_depth",
        "tenantfs_retention_bytes", "tenantfs_is_primary", "tenantfs_replicas_connected",
        "tenantfs_replication_lag_seconds", "tenantfs_replication_databases_behind",
        "tenantfs_stream_bytes_total"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
  EXPECT_NE(text.find("tenantfs_stream_bytes_total{direction=\"sent\"}"), std::string::npos);
  EXPECT_NE(text.find("tenantfs_fuse_requests_total{op=\"statfs\"}"), std::string::npos);
}

TEST(MetricsTest, FuseObservationsFoldIntoCounterAndHistogram) {
  Metrics m;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < 1000; ++i) m.ObserveFuse(FuseOp::kRead, 0.0002);
    });
  }
  for (auto& t : threads) t.join();
  m.ObserveFuse(FuseOp::kWrite, 3.0);
  m.ObserveFuse(static_cast<FuseOp>(99), 0.1);  // out of range counts as other
  std::string text = m.Serialize();
  EXPECT_EQ(Sample(text, "tenantfs_fuse_requests_total{op=\"read\"}"), "4000");
  EXPECT_EQ(Sample(text, "tenantfs_fuse_request_duration_seconds_count{op=\"read\"}"), "4000");
  EXPECT_EQ(
      Sample(text, "tenantfs_fuse_request_duration_seconds_bucket{op=\"read\",le=\"0.0001\"}"),
      "0");
  EXPECT_EQ(
      Sample(text, "tenantfs_fuse_request_duration_seconds_bucket{op=\"read\",le=\"0.00025\"}"),
      "4000");
  EXPECT_EQ(Sample(text, "tenantfs_fuse_request_duration_seconds_bucket{op=\"write\",le=\"2.5\"}"),
            "0");
  EXPECT_EQ(Sample(text, "tenantfs_fuse_request_duration_seconds_bucket{op=\"write\",le=\"5\"}"),
            "1");
  EXPECT_EQ(Sample(text, "tenantfs_fuse_requests_total{op=\"other\"}"), "1");
  // A second scrape adds only what happened since the first.
  m.ObserveFuse(FuseOp::kRead, 0.0002);
  text = m.Serialize();
  EXPECT_EQ(Sample(text, "tenantfs_fuse_requests_total{op=\"read\"}"), "4001");
  EXPECT_EQ(Sample(text, "tenantfs_fuse_request_duration_seconds_count{op=\"read\"}"), "4001");
}

TEST(MetricsTest, CollectorRunsBeforeEachScrapeAndCountersNeverGoBack) {
  Metrics m;
  uint64_t commits = 5;
  int runs = 0;
  m.SetCollector([&](Metrics& mm) {
    ++runs;
    mm.databases().Set(42);
    mm.SetCommitsTotal(commits);
  });
  std::string text = m.Serialize();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(Sample(text, "tenantfs_databases"), "42");
  EXPECT_EQ(Sample(text, "tenantfs_commits_total"), "5");
  commits = 3;  // a total going backwards (cannot happen) must not make the counter drop
  text = m.Serialize();
  EXPECT_EQ(Sample(text, "tenantfs_commits_total"), "5");
  commits = 9;
  m.ObserveCommit(0.004);
  text = m.Serialize();
  EXPECT_EQ(Sample(text, "tenantfs_commits_total"), "9");
  EXPECT_EQ(Sample(text, "tenantfs_commit_duration_seconds_count"), "1");
  EXPECT_EQ(runs, 3);
}

TEST(MetricsTest, ProcessFiguresFollowTheProcess) {
  int64_t before = CountOpenFds();
  ASSERT_GT(before, 0);
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(CountOpenFds(), before + 1);
  ::close(fd);
  EXPECT_EQ(CountOpenFds(), before);
  EXPECT_GT(MaxFds(), 0);
  EXPECT_GT(ResidentBytes(), 1 << 20);
  Metrics m;
  std::string text = m.Serialize();
  EXPECT_NE(Sample(text, "tenantfs_open_fds"), "0");
  EXPECT_NE(Sample(text, "tenantfs_resident_memory_bytes"), "0");
}

}  // namespace
}  // namespace metrics

#include "host/node_http.h"

#include <prometheus/gauge.h>

#include <chrono>

#include "metrics/log.h"
#include "replication/stream_client.h"
#include "replication/stream_server.h"
#include "tenancy/store.h"

namespace host {

namespace {
// How long requests in flight (an export of a big database, say) may take to
// finish once shutdown begins; then they are abandoned and roll back.
constexpr std::chrono::seconds kShutdownGrace{10};
// How stale tenantfs_databases may be: it is recounted at most this often.
constexpr std::chrono::seconds kDatabaseCountTtl{5};
}  // namespace

tenancy::Result<std::unique_ptr<NodeHttp>> NodeHttp::Listen(const Config& config,
                                                            metrics::Metrics* metrics) {
  replication::HttpServer::Options o;
  o.addr = config.http_addr;
  o.node.metrics = metrics;
  o.node.mount_dir = config.fuse_dir;
  o.node.data_dir = config.data_dir;
  o.node.node_id = config.node_id;
  o.node.token = config.http_token;
  // Static leases only for now: the candidate is the primary.
  o.node.primary = config.lease_type == "static" && config.lease_candidate;
  o.node.primary_url = o.node.primary ? config.advertise_url : config.primary_url;
  const bool primary = o.node.primary;
  auto server = replication::HttpServer::Listen(std::move(o));
  if (!server.ok()) {
    return tenancy::Status::InvalidArgument("http.addr " + config.http_addr + ": " +
                                            server.status().message());
  }
  return std::unique_ptr<NodeHttp>(new NodeHttp(metrics, std::move(server.value()), primary));
}

NodeHttp::~NodeHttp() { Stop(); }

void NodeHttp::Start(tenancy::Store* store, replication::StreamHub* hub,
                     replication::StreamClient* client) {
  hub_ = hub;
  client_ = client;
  {
    // The collector runs on the scraping thread (the HTTP work pool), never on
    // a FUSE worker; everything it reads is an atomic or a directory listing.
    // Counting databases lists every tenant directory, O(databases): with
    // 10,000 databases that made a scrape take 5-7 ms instead of under 1 ms, so
    // the count is reused for kDatabaseCountTtl (the collector runs under the
    // scrape mutex, so the lambda's state needs no lock of its own).
    metrics_->SetCollector([store, primary = primary_, hub, client,
                            counted = std::chrono::steady_clock::time_point{},
                            databases = uint64_t{0}](metrics::Metrics& m) mutable {
      auto now = std::chrono::steady_clock::now();
      if (counted == std::chrono::steady_clock::time_point{} ||
          now - counted >= kDatabaseCountTtl) {
        databases = replication::CountDatabases(*store).databases;
        counted = now;
      }
      m.databases().Set(static_cast<double>(databases));
      m.databases_open().Set(static_cast<double>(store->databases_open()));
      m.SetEvictionsTotal(store->evictions());
      m.SetFdExhaustionsTotal(store->fd_exhaustions());
      m.write_queue_depth().Set(static_cast<double>(store->queue_depth()));
      m.retention_bytes().Set(static_cast<double>(store->retention_bytes()));
      m.is_primary().Set(primary ? 1 : 0);
      m.SetCommitsTotal(store->stats().commits.load());
      if (hub != nullptr) m.replicas_connected().Set(static_cast<double>(hub->Replicas().size()));
      if (client != nullptr) {
        m.replication_lag_seconds().Set(client->lag_seconds());
        m.replication_databases_behind().Set(static_cast<double>(client->databases_behind()));
      }
    });
  }
  server_->Start(store, hub, client);
}

void NodeHttp::Stop() {
  std::lock_guard lock(stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (client_ != nullptr) client_->Stop();  // its appliers lock files on the mount
  if (hub_ != nullptr) hub_->Stop();        // replica connections live on the server's threads
  server_->Stop(kShutdownGrace);
  metrics_->SetCollector(nullptr);
  LOG_INFO("http stopped");
}

}  // namespace host

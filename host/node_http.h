// The node's HTTP side, as `tenantfs mount` runs it: the HTTP API server and
// the metrics collector that fills the gauges at scrape time.
//
// Life cycle (host/mount_command.cc): Listen() before the store opens (a taken
// port stops start-up with nothing mounted), Start() once the mount is up,
// Stop() first at shutdown, before the FUSE loop ends: exports and imports in
// flight are SQLite clients of the mount and need it to finish.
// Thread safety: Stop() may be called from any thread, more than once.
#pragma once

#include <memory>
#include <mutex>

#include "host/config.h"
#include "metrics/metrics.h"
#include "replication/http_server.h"
#include "tenancy/status.h"

namespace tenancy {
class Store;
}

namespace host {

class NodeHttp {
 public:
  // Binds config.http_addr. The error message is ready for the log, e.g.
  // "http.addr 127.0.0.1:20202: address in use". `metrics` must outlive this.
  static tenancy::Result<std::unique_ptr<NodeHttp>> Listen(const Config& config,
                                                           metrics::Metrics* metrics);
  ~NodeHttp();  // Stop()

  // Installs the metrics collector and starts serving. REQUIRES: the mount is
  // up; `store` outlives Stop().
  // `hub` (primary) or `client` (replica) may be null; they must outlive Stop(),
  // which stops them first (the client's appliers are clients of the mount).
  void Start(tenancy::Store* store, replication::StreamHub* hub = nullptr,
             replication::StreamClient* client = nullptr);
  // Stops accepting, gives requests in flight a bounded time to finish, closes
  // the rest and removes the collector. Idempotent.
  void Stop();

 private:
  NodeHttp(metrics::Metrics* metrics, std::unique_ptr<replication::HttpServer> server, bool primary)
      : metrics_(metrics), server_(std::move(server)), primary_(primary) {}
  metrics::Metrics* const metrics_;
  std::unique_ptr<replication::HttpServer> server_;
  const bool primary_;
  replication::StreamHub* hub_ = nullptr;
  replication::StreamClient* client_ = nullptr;
  std::mutex stop_mu_;    // held across the server's Stop; nothing else takes it
  bool stopped_ = false;  // guarded by stop_mu_
};

}  // namespace host

// HttpServer: the node's HTTP/1.1 API on http.addr (SPEC.md "HTTP"), Boost.Beast.
//
// One io_context run by a few threads, a strand per connection, async
// accept/read/write (do_x/on_x). Limits: request headers 8 KiB (431 beyond);
// only PUT .../import carries a body, streamed to a temp file under
// <data.dir>/tmp with a hard cap (413 beyond), never held in memory; every read
// and write is bounded by an idle timeout; keep-alive. Work that blocks (SQLite
// through the mount, positions, /metrics) runs on a small separate pool so a
// long export never stalls /healthz. Malformed requests get a 4xx and the
// connection closes; they never take the server down.
//
// Thread safety: Listen/Start/Stop from one thread (host's); port() anywhere.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "replication/http_api.h"
#include "tenancy/status.h"

namespace replication {

class HttpServer {
 public:
  struct Options {
    NodeContext node;
    std::string addr;  // HOST:PORT or [V6]:PORT; port 0 picks a free one
    uint64_t max_import_bytes = uint64_t{64} << 30;
    std::chrono::milliseconds idle_timeout{30000};  // per read or write
    size_t header_limit = 8 * 1024;
    int io_threads = 2;
    int work_threads = 2;  // SQLite transfers, views, /metrics
    size_t max_connections = 1024;
  };

  // Binds and listens on options.addr and prepares <data_dir>/tmp (removing
  // temp files a killed daemon left); serves nothing until Start(). It may run
  // before the store exists (options.node.store is then set by Start), so a
  // taken port stops a node before it opens or mounts anything.
  // Errors: AlreadyExists("address in use") when the port is taken,
  // InvalidArgument for an address that does not resolve, IOError otherwise.
  static tenancy::Result<std::unique_ptr<HttpServer>> Listen(Options options);
  ~HttpServer();  // Stop(0) if still running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts the threads and accepting. `store` (when not null) replaces
  // options.node.store. REQUIRES: called once; a store is set by now.
  // `hub` (primary) serves /v1/stream; `client` (replica) feeds /v1/info.
  void Start(tenancy::Store* store = nullptr, StreamHub* hub = nullptr,
             StreamClient* client = nullptr);
  // Stops accepting and closes idle connections; requests in flight get up to
  // `grace` to finish (transfers still running then are abandoned and leave
  // their database as it was); then every connection is closed and the
  // threads joined. Idempotent.
  void Stop(std::chrono::milliseconds grace);
  // The bound port.
  uint16_t port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace replication

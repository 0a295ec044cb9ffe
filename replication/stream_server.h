// StreamHub: the primary's side of the replication stream (PROTOCOL.md).
//
// Each replica holds one WebSocket connection (GET /v1/stream). For each one the
// hub runs a sender thread that walks the databases the replica is behind on,
// round-robin, one bounded step at a time: a batch of retained change sets read
// from the database's log at the replica's position, or one chunk of a snapshot.
// Nothing is buffered per replica beyond a small outbound window (kWindowBytes):
// a slow replica only falls behind, and is caught up from the log later. Commits
// reach the senders through Notify() (the store's change listener), which marks
// the database dirty for every replica: a set, so its size is bounded by the
// number of databases, however many commits happen.
//
// Threads: the socket lives on the HTTP server's io_context (reads and writes
// are async, on a strand); the sender thread blocks on the store (RunOn) and on
// the window. Notify is cheap and callable from any thread (it runs on database
// queues).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace metrics {
class Metrics;
}
namespace tenancy {
class Store;
}

namespace replication {

class ReplicaConn;

struct ReplicaInfo {
  std::string node_id;
  std::string peer;        // address:port
  uint64_t databases = 0;  // databases it reported or was sent
  uint64_t behind = 0;     // databases whose acked TXID is below the primary's
  double lag_seconds = 0;  // age of the oldest commit it has not acknowledged
};

class StreamHub {
 public:
  struct Options {
    tenancy::Store* store = nullptr;
    metrics::Metrics* metrics = nullptr;  // may be null
    std::string cluster_id;
    std::string node_id;
    std::string advertise_url;
    int heartbeat_ms = 1000;
    size_t snapshot_chunk_pages = 64;   // pages read per step between transactions
    size_t batch_bytes = 1u << 20;      // change-set bytes read per step
    // Test hook: flip one bit in every Nth change-set chunk sent (0 = never).
    uint64_t corrupt_every = 0;
  };
  explicit StreamHub(Options options);
  ~StreamHub();  // Stop()
  StreamHub(const StreamHub&) = delete;
  StreamHub& operator=(const StreamHub&) = delete;

  // Takes over an upgraded connection (the bearer token was checked by the
  // HTTP server). `buffer` holds bytes already read past the request.
  void Accept(boost::asio::ip::tcp::socket socket,
              boost::beast::http::request<boost::beast::http::empty_body> request,
              boost::beast::flat_buffer buffer);
  // A database's position changed or it was deleted. Any thread; cheap.
  void Notify(const std::string& tenant, const std::string& db);
  std::vector<ReplicaInfo> Replicas();
  // Closes every connection and joins the senders. Idempotent.
  void Stop();

  const Options& options() const { return options_; }
  void Remove(ReplicaConn* conn);

 private:
  const Options options_;
  std::mutex mu_;  // guards conns_, stopped_
  std::vector<std::shared_ptr<ReplicaConn>> conns_;
  bool stopped_ = false;
};

}  // namespace replication

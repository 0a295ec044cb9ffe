// StreamClient: the replica's side of the replication stream (PROTOCOL.md).
//
// One connection thread: connect to the primary's /v1/stream, announce every
// local database's position, then receive frames until the connection ends;
// reconnect with capped exponential backoff plus jitter. Received change sets
// go to per-database apply queues served by a few applier threads, so a reader
// holding one database's lock never stalls the others. Snapshots are staged in
// <data.dir>/tmp and applied in one step at SnapshotEnd.
//
// Applying one batch of a database (replication/README.md, "Applying"):
// take SQLite's locks through the mount (ApplyLock), write the pages to the
// backing file through the store (Capture::ApplyRemote: checksums verified,
// the record appended to this node's own log), drop the kernel's cached pages
// and attributes, reset the WAL index for WAL databases, release. Any failure
// (a gap, a checksum mismatch, a corrupt frame) drops that connection: the
// next one announces the positions actually reached and the primary re-sends
// or snapshots what differs. Nothing is applied twice: a change set applies
// only on top of the TXID and checksum it was made from.
//
// Thread safety: Start/Stop from one thread; the accessors from any.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tenancy/status.h"

namespace metrics {
class Metrics;
}
namespace tenancy {
class File;
class Store;
}  // namespace tenancy

namespace replication {

class StreamClient {
 public:
  struct Options {
    tenancy::Store* store = nullptr;
    metrics::Metrics* metrics = nullptr;  // may be null
    std::string primary_url;              // http://host:port
    std::string token;                    // presented as a bearer token
    std::string node_id;
    std::string data_dir;   // <data_dir>/CLUSTER, <data_dir>/tmp
    std::string mount_dir;  // the applier locks MOUNT/<tenant>/<db>
    // Hooks into the FUSE adapter (host wires them; replication never includes fuse/).
    // Drop the kernel's cached pages of (offset, length) ranges and the
    // attributes of a file; no ranges = the whole file.
    std::function<void(const tenancy::File*, const std::vector<std::pair<uint64_t, uint64_t>>&)>
        invalidate_data;
    std::function<void(const std::string& tenant, const std::string& name)> invalidate_entry;
    std::function<void()> applier_thread_started;  // e.g. FuseServer::RegisterApplierThread
    int appliers = 2;
    std::chrono::milliseconds lock_timeout{5000};
    std::chrono::milliseconds min_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
    std::chrono::milliseconds idle_timeout{5000};  // no frame (heartbeats are 1 s) = lost
  };
  static tenancy::Result<std::unique_ptr<StreamClient>> Start(Options options);
  ~StreamClient();  // Stop()
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;
  void Stop();

  // The primary's URL while connected (and accepted), else empty.
  std::string connected_primary() const;
  // Worst database lag in seconds (oldest received, unapplied commit; while
  // disconnected, the time since the primary was last heard from).
  double lag_seconds() const;
  // Databases with received work not yet applied, or a snapshot in progress.
  uint64_t databases_behind() const;

  struct Impl;

 private:
  explicit StreamClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The cluster identity in <data_dir>/CLUSTER: read it (empty if absent), or
// make one (primary, first start). The file is written atomically.
tenancy::Result<std::string> ReadClusterId(const std::string& data_dir);
tenancy::Status WriteClusterId(const std::string& data_dir, const std::string& id);
tenancy::Result<std::string> EnsureClusterId(const std::string& data_dir);

}  // namespace replication

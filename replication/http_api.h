// The HTTP API's routing and read-only views, apart from the Beast plumbing
// (http_server.h) so they can be read and tested on their own.
//
// Thread safety: pure functions, or calls into the thread-safe Store. The
// view builders (InfoJson, DbsJson) block on the store (positions are read on
// each database's queue): call them from the server's work pool, never from a
// FUSE worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "replication/sqlite_transfer.h"

namespace metrics {
class Metrics;
}
namespace tenancy {
class Database;
class Store;
}  // namespace tenancy

namespace replication {

class StreamHub;
class StreamClient;

// What the API needs from the node; host fills it in. Pointers must outlive
// the server.
struct NodeContext {
  tenancy::Store* store = nullptr;
  metrics::Metrics* metrics = nullptr;  // /metrics
  std::string mount_dir;                // SQLite clients open MOUNT/<tenant>/<db>
  std::string data_dir;                 // temp files live in <data_dir>/tmp
  // The executable whose main runs kTransferCommand: SQLite work on the mount
  // happens in a child process (see sqlite_transfer.h for why).
  std::string helper_exe = "/proc/self/exe";
  std::string node_id;
  std::string token;        // http.token; empty = no authentication
  bool primary = true;      // role
  std::string primary_url;  // the primary's URL; empty = unknown (JSON null)
  StreamHub* hub = nullptr;        // primary: serves /v1/stream (null on a replica)
  StreamClient* client = nullptr;  // replica: its stream (primary URL while connected)
};

struct Route {
  enum class Kind {
    kHealthz,
    kMetrics,
    kInfo,
    kDbs,
    kExport,
    kImport,
    kWait,
    kStream,
    kPromote,
    kBadName,   // a /v1/dbs/... path with an invalid tenant or database name
    kNotFound,  // no such endpoint
  };
  Kind kind = Kind::kNotFound;
  bool v1 = false;             // under /v1/: needs the token
  const char* method = "GET";  // the one method the endpoint takes
  std::string tenant, db;      // kExport, kImport, kWait
  std::string error;           // kBadName: why
};

// Parses a request target ("/v1/dbs/acme/app.db/export?x=1"). The query is
// ignored. Names are checked with tenancy::IsValidName (a database name must
// also not read as a companion, e.g. "app.db-wal").
Route ParseRoute(std::string_view target);

// True when `authorization` is "Bearer <token>". Compares in time that depends
// only on the lengths, never on where the first difference is.
bool BearerMatches(std::string_view authorization, std::string_view token);

// JSON string literal, quotes included.
std::string JsonString(std::string_view s);
// {"error": "..."}
std::string JsonError(std::string_view message);

struct Counts {
  uint64_t tenants = 0;
  uint64_t databases = 0;
};
// Tenants and databases in the store, by listing its directories: O(databases).
Counts CountDatabases(tenancy::Store& store);

// GET /v1/info and GET /v1/dbs bodies.
std::string InfoJson(const NodeContext& ctx);
std::string DbsJson(const NodeContext& ctx, const StopFlag& stop);

// The position of tenant/db after an import, as JSON {"tenant","db","txid","checksum"}.
// Errors go into *error (then "" is returned).
std::string PositionJson(const NodeContext& ctx, const std::string& tenant, const std::string& db,
                         std::string* error);

}  // namespace replication

#include "replication/http_api.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <future>
#include <memory>
#include <vector>

#include "replication/stream_client.h"
#include "replication/stream_server.h"
#include "tenancy/names.h"
#include "tenancy/store.h"

namespace replication {

namespace {

using namespace std::chrono_literals;

// How long a view waits for one database's queue to report its position.
constexpr auto kPositionWait = 10s;

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 1;  // past the leading '/'
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

bool IsDatabaseName(std::string_view name) {
  auto parsed = tenancy::ParseFileName(name);
  return parsed && parsed->kind == tenancy::FileKind::kMain && parsed->db == name;
}

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// Blocks (bounded) for the store's asynchronous ReadPosition.
tenancy::Result<tenancy::Position> ReadPositionNow(tenancy::Store& store,
                                                   std::shared_ptr<tenancy::Database> db) {
  auto promise = std::make_shared<std::promise<tenancy::Result<tenancy::Position>>>();
  auto future = promise->get_future();
  store.ReadPosition(std::move(db), [promise](tenancy::Result<tenancy::Position> r) {
    promise->set_value(std::move(r));
  });
  if (future.wait_for(kPositionWait) != std::future_status::ready) {
    return tenancy::Status::FromErrno(ETIMEDOUT, "reading the position");
  }
  return future.get();
}

// "wal" when the header says WAL (bytes 18/19 = 2), else "delete": the other
// journal modes are per connection and not kept in the file, so "delete" is
// what a new connection's PRAGMA journal_mode reports.
std::string JournalMode(const std::string& backing_path) {
  int fd = ::open(backing_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "delete";
  unsigned char v[2] = {0, 0};
  ssize_t n = ::pread(fd, v, 2, 18);
  ::close(fd);
  return n == 2 && (v[0] == 2 || v[1] == 2) ? "wal" : "delete";
}

template <typename F>
void ForEachDatabase(tenancy::Store& store, F&& f) {
  auto tenants = store.ListTenants();
  if (!tenants.ok()) return;
  std::vector<std::string> names = tenants.value();
  std::sort(names.begin(), names.end());
  for (const std::string& t : names) {
    auto tenant = store.LookupTenant(t);
    if (!tenant.ok()) continue;
    auto files = store.ListFiles(*tenant.value());
    std::vector<std::string> dbs;
    if (files.ok()) {
      for (auto& n : files.value()) {
        if (IsDatabaseName(n)) dbs.push_back(n);
      }
    }
    std::sort(dbs.begin(), dbs.end());
    if (!f(t, tenant.value(), dbs)) return;
  }
}

}  // namespace

Route ParseRoute(std::string_view target) {
  Route r;
  std::string_view path = target.substr(0, target.find('?'));
  if (path.empty() || path[0] != '/') return r;
  if (path == "/healthz") {
    r.kind = Route::Kind::kHealthz;
    return r;
  }
  if (path == "/metrics") {
    r.kind = Route::Kind::kMetrics;
    return r;
  }
  if (path != "/v1" && path.substr(0, 4) != "/v1/") return r;
  r.v1 = true;
  auto parts = SplitPath(path);  // {"v1", ...}
  if (parts.size() == 2 && parts[1] == "info") {
    r.kind = Route::Kind::kInfo;
  } else if (parts.size() == 2 && parts[1] == "dbs") {
    r.kind = Route::Kind::kDbs;
  } else if (parts.size() == 2 && parts[1] == "stream") {
    r.kind = Route::Kind::kStream;
  } else if (parts.size() == 2 && parts[1] == "promote") {
    r.kind = Route::Kind::kPromote;
    r.method = "POST";
  } else if (parts.size() == 5 && parts[1] == "dbs") {
    if (parts[4] == "export") {
      r.kind = Route::Kind::kExport;
    } else if (parts[4] == "import") {
      r.kind = Route::Kind::kImport;
      r.method = "PUT";
    } else if (parts[4] == "wait") {
      r.kind = Route::Kind::kWait;
    } else {
      return r;
    }
    r.tenant = std::string(parts[2]);
    r.db = std::string(parts[3]);
    if (!tenancy::IsValidName(r.tenant)) {
      r.kind = Route::Kind::kBadName;
      r.error = "bad tenant name '" + r.tenant + "'";
    } else if (!IsDatabaseName(r.db)) {
      r.kind = Route::Kind::kBadName;
      r.error = "bad database name '" + r.db + "'";
    }
  }
  return r;
}

bool BearerMatches(std::string_view authorization, std::string_view token) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return false;
  }
  std::string_view given = authorization.substr(kScheme.size());
  // Every byte of the longer one is looked at; the result is folded, not branched on.
  size_t n = std::max(given.size(), token.size());
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    unsigned char a = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    unsigned char b = i < token.size() ? static_cast<unsigned char>(token[i]) : 0;
    diff |= static_cast<unsigned char>(a ^ b);
  }
  return diff == 0 && !token.empty();
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

std::string JsonError(std::string_view message) {
  return "{\"error\": " + JsonString(message) + "}\n";
}

Counts CountDatabases(tenancy::Store& store) {
  Counts c;
  ForEachDatabase(store, [&c](const std::string&, const std::shared_ptr<tenancy::Tenant>&,
                              const std::vector<std::string>& dbs) {
    ++c.tenants;
    c.databases += dbs.size();
    return true;
  });
  return c;
}

std::string InfoJson(const NodeContext& ctx) {
  Counts c = CountDatabases(*ctx.store);
  uint64_t open = ctx.store->databases_open();
  std::string out = "{\"node\": " + JsonString(ctx.node_id);
  out += ", \"role\": ";
  out += ctx.primary ? "\"primary\"" : "\"replica\"";
  out += ", \"primary\": ";
  out += ctx.primary_url.empty() ? "null" : JsonString(ctx.primary_url);
  out += ", \"tenants\": " + std::to_string(c.tenants);
  out += ", \"databases\": " + std::to_string(c.databases);
  out += ", \"databases_open\": " + std::to_string(open);
  out += ", \"max_open\": " + std::to_string(ctx.store->max_open());
  out += ", \"backing_fds\": " + std::to_string(ctx.store->handle_fds());
  out += ", \"fd_exhaustions\": " + std::to_string(ctx.store->fd_exhaustions());
  out += ", \"captures_loaded\": " + std::to_string(ctx.store->stats().loaded.load());
  if (ctx.hub != nullptr) {
    out += ", \"replicas\": [";
    bool first = true;
    for (const ReplicaInfo& r : ctx.hub->Replicas()) {
      out += first ? "" : ", ";
      first = false;
      char lag[32];
      std::snprintf(lag, sizeof(lag), "%.3f", r.lag_seconds);
      out += "{\"node\": " + JsonString(r.node_id) + ", \"peer\": " + JsonString(r.peer) +
             ", \"databases\": " + std::to_string(r.databases) +
             ", \"behind\": " + std::to_string(r.behind) + ", \"lag_seconds\": " + lag + "}";
    }
    out += "]";
  }
  if (ctx.client != nullptr) {
    std::string connected = ctx.client->connected_primary();
    out += ", \"connected\": ";
    out += connected.empty() ? "false" : "true";
    char lag[32];
    std::snprintf(lag, sizeof(lag), "%.3f", ctx.client->lag_seconds());
    out += ", \"lag_seconds\": " + std::string(lag);
    out += ", \"databases_behind\": " + std::to_string(ctx.client->databases_behind());
  }
  out += "}\n";
  return out;
}

std::string DbsJson(const NodeContext& ctx, const StopFlag& stop) {
  tenancy::Store& store = *ctx.store;
  std::string out = "[";
  bool first = true;
  ForEachDatabase(store, [&](const std::string& t, const std::shared_ptr<tenancy::Tenant>& tenant,
                             const std::vector<std::string>& dbs) {
    for (const std::string& name : dbs) {
      if (stop.load()) return false;
      auto db = store.LookupPos(tenant, name + "-pos");
      if (!db.ok()) continue;  // deleted since the listing
      auto pos = ReadPositionNow(store, db.value());
      if (!pos.ok() && pos.status().code() == tenancy::Status::Code::kNotFound) continue;
      int64_t size = 0;
      if (auto file = store.LookupFile(tenant, name); file.ok()) {
        if (auto st = store.StatFile(*file.value()); st.ok()) size = st.value().st_size;
      }
      out += first ? "\n  " : ",\n  ";
      first = false;
      out += "{\"tenant\": " + JsonString(t) + ", \"db\": " + JsonString(name);
      if (pos.ok()) {
        out += ", \"txid\": " + std::to_string(pos.value().txid);
        out += ", \"checksum\": \"" + Hex16(pos.value().checksum) + "\"";
      } else {
        out += ", \"txid\": null, \"checksum\": null, \"error\": " +
               JsonString(pos.status().ToString());
      }
      out += ", \"size_bytes\": " + std::to_string(size);
      out += ", \"open\": ";
      out += store.IsOpen(*db.value()) ? "true" : "false";
      out += ", \"journal_mode\": \"" +
             JournalMode(db.value()->BackingPath(tenancy::FileKind::kMain)) + "\"}";
    }
    return true;
  });
  out += first ? "]\n" : "\n]\n";
  return out;
}

std::string PositionJson(const NodeContext& ctx, const std::string& tenant_name,
                         const std::string& db_name, std::string* error) {
  tenancy::Store& store = *ctx.store;
  auto tenant = store.LookupTenant(tenant_name);
  if (!tenant.ok()) {
    *error = tenant.status().ToString();
    return "";
  }
  auto db = store.LookupPos(tenant.value(), db_name + "-pos");
  if (!db.ok()) {
    *error = db.status().ToString();
    return "";
  }
  auto pos = ReadPositionNow(store, db.value());
  if (!pos.ok()) {
    *error = pos.status().ToString();
    return "";
  }
  return "{\"tenant\": " + JsonString(tenant_name) + ", \"db\": " + JsonString(db_name) +
         ", \"txid\": " + std::to_string(pos.value().txid) + ", \"checksum\": \"" +
         Hex16(pos.value().checksum) + "\"}\n";
}

}  // namespace replication

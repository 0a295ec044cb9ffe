// `tenantfs status`, `import` and `export`: clients of a node's HTTP API.
//
// Each returns the process exit status (SPEC "Command line"): 0 success, 1 a
// runtime failure (cannot connect, an HTTP error, a local file problem), 2 a
// usage problem (a malformed URL or TENANT/DB). The reason goes to stderr in
// one line naming the thing: "tenantfs: import acme/app.db: 400 not a SQLite
// database: file is not a database". Memory stays bounded whatever the size
// of the database: bodies are streamed in chunks.
#pragma once

#include <string>

namespace host {

struct ClientOptions {
  std::string url;    // http://HOST:PORT
  std::string token;  // sent as "Authorization: Bearer TOKEN" when not empty
};

// The default URL for a node listening on `http_addr` (HOST:PORT): a wildcard
// or loopback host becomes 127.0.0.1, any other host is kept.
std::string DefaultUrl(const std::string& http_addr);

// Prints role, primary and a table of databases with their positions.
int RunStatus(const ClientOptions& options);
// PUT FILE to TENANT/DB's import; progress on stderr when it is a terminal.
int RunImport(const ClientOptions& options, const std::string& tenant_db, const std::string& file);
// GET TENANT/DB's export into FILE.tmp, then renames it to FILE.
int RunExport(const ClientOptions& options, const std::string& tenant_db, const std::string& file);

}  // namespace host

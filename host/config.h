// Node configuration: SPEC.md's YAML file, defaults, and command-line overrides.
// Pure data plus parsing; no side effects except reading the config file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace host {

struct Config {
  std::string node_id;  // node.id; default: hostname

  std::string fuse_dir = "/mnt/tenantfs";  // fuse.dir
  bool allow_other = false;                // fuse.allow-other

  std::string data_dir = "/var/lib/tenantfs";        // data.dir
  std::chrono::milliseconds retention{24 * 3600 * 1000};  // data.retention
  uint64_t retention_max_bytes = 0;                  // data.retention-max-bytes (0 = unbounded)

  int max_open = 256;                            // handles.max-open
  std::chrono::milliseconds idle_timeout{60000};  // handles.idle-timeout

  std::string http_addr = "127.0.0.1:20202";  // http.addr
  std::string http_token;                     // http.token, or read from http.token-file

  std::string lease_type = "static";                      // lease.type: static | etcd
  bool lease_candidate = true;                            // lease.candidate
  std::string advertise_url = "http://127.0.0.1:20202";  // lease.advertise-url
  std::string primary_url;                                // lease.primary-url

  std::string log_level = "info";   // log.level: debug | info | warn | error
  std::string log_format = "text";  // log.format: text | json

  friend bool operator==(const Config&, const Config&) = default;
};

// Flags that override the file (SPEC: --mount-dir, --data-dir, --http-addr).
struct Overrides {
  std::optional<std::string> mount_dir;
  std::optional<std::string> data_dir;
  std::optional<std::string> http_addr;
};

// Why a config was rejected: one line naming the key (e.g. "data.retention: bad
// duration 'abc' (use ms, s, m, h)").
struct ConfigError {
  std::string message;
};

// Parses YAML text. Unknown keys, wrong types, bad durations/sizes and impossible
// combinations are errors. Relative paths are kept as given.
// Starts from the defaults; an empty node.id becomes the hostname; http.token-file
// is read here (trailing newline trimmed). *out is left untouched on error.
// Messages are one line and carry the YAML line number where there is one.
std::optional<ConfigError> ParseConfig(const std::string& yaml_text, Config* out);

// Loads `path` (empty: defaults only), applies overrides, validates.
std::optional<ConfigError> LoadConfig(const std::string& path, const Overrides& overrides,
                                      Config* out);

// Checks combinations that no single key shows: data dir inside the mount dir,
// replica without primary URL, bad http.addr, bad enum values.
std::optional<ConfigError> ValidateConfig(const Config& config);

// "250ms", "30s", "5m", "24h" -> milliseconds. nullopt when malformed.
std::optional<std::chrono::milliseconds> ParseDuration(const std::string& text);
// "0", "512", "10KiB", "64MiB", "2GiB" -> bytes. nullopt when malformed.
std::optional<uint64_t> ParseSize(const std::string& text);

// The default config as YAML (used by scripts/run and `tenantfs mount --print-default-config`).
std::string DefaultConfigYaml();

}  // namespace host

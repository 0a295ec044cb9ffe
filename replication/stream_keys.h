// Small helpers both ends of the stream share: a database's key in the
// per-database maps ("tenant/db": names never contain '/') and wall-clock
// milliseconds (change-set timestamps and lag are unix milliseconds).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace replication {

inline std::string Key(const std::string& tenant, const std::string& db) {
  return tenant + "/" + db;
}

inline std::pair<std::string, std::string> SplitKey(const std::string& key) {
  size_t slash = key.find('/');
  return {key.substr(0, slash), key.substr(slash + 1)};
}

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace replication

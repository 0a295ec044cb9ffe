// `tenantfs replay`: rebuild a database file from its retained change sets.
#pragma once

#include <cstdint>
#include <string>

namespace host {

struct ReplayOptions {
  std::string data_dir;
  std::string tenant, db;
  std::string out;
  std::string base_file;  // empty: start from an empty database
  uint64_t base_txid = 0;
};

// Returns the exit status: 0 verified and written, 1 a change set failed to
// verify or the log is missing what is needed, 2 bad arguments.
int RunReplay(const ReplayOptions& options);

}  // namespace host

#include "host/replay_command.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "tenancy/changelog.h"
#include "tenancy/names.h"
#include "tenancy/replay.h"
#include "tenancy/store.h"

namespace host {

namespace {
int Fail(int code, const std::string& msg) {
  std::fprintf(stderr, "tenantfs: replay: %s\n", msg.c_str());
  return code;
}
}  // namespace

int RunReplay(const ReplayOptions& o) {
  if (!tenancy::IsValidName(o.tenant)) return Fail(2, "bad tenant name '" + o.tenant + "'");
  if (!tenancy::IsValidName(o.db)) return Fail(2, "bad database name '" + o.db + "'");
  std::string log_dir = o.data_dir + "/log/" + o.tenant + "/" + o.db;
  std::error_code ec;
  if (!std::filesystem::is_directory(log_dir, ec)) {
    return Fail(1, "no change log for " + o.tenant + "/" + o.db + " in " + o.data_dir);
  }
  tenancy::ChangeLog::Options lopts;
  lopts.read_only = true;
  auto log = tenancy::ChangeLog::Open(log_dir, lopts);
  if (!log.ok()) return Fail(1, log.status().ToString());

  std::filesystem::remove(o.out, ec);
  if (!o.base_file.empty()) {
    std::filesystem::copy_file(o.base_file, o.out, ec);
    if (ec) return Fail(1, "copy " + o.base_file + ": " + ec.message());
  }
  auto target = tenancy::Replayer::Open(o.out, o.base_txid);
  if (!target.ok()) return Fail(1, target.status().ToString());
  tenancy::Replayer& r = *target.value();

  uint64_t first = log.value()->first_txid();
  if (first > o.base_txid + 1) {
    return Fail(1, "the log starts at TXID " + std::to_string(first) + ", past the base at TXID " +
                       std::to_string(o.base_txid) + "; replay from a newer base");
  }
  uint64_t applied = 0;
  tenancy::Status failure;
  bool tty = ::isatty(STDERR_FILENO);
  tenancy::Status s = log.value()->ForEach(o.base_txid + 1, [&](const tenancy::ChangeSet& cs) {
    failure = r.Apply(cs);
    if (!failure.ok()) return false;
    if (tty && ++applied % 1000 == 0) std::fprintf(stderr, "\rapplied %llu change sets", (unsigned long long)applied);
    return true;
  });
  if (tty && applied >= 1000) std::fprintf(stderr, "\n");
  if (!s.ok()) return Fail(1, s.ToString());
  if (!failure.ok()) return Fail(1, failure.ToString());
  if (tenancy::Status synced = r.Sync(); !synced.ok()) return Fail(1, synced.ToString());
  tenancy::Position pos;
  pos.txid = r.txid();
  pos.checksum = r.checksum();
  std::fputs(tenancy::Store::FormatPosition(pos).c_str(), stdout);
  return 0;
}

}  // namespace host

// Hundreds of databases: 50 tenants x 6 databases (all four journal modes), created and
// written concurrently by 6 processes that open a database per transaction (each tenant
// is shared by two of them), with a handle limit far below the database count so the
// LRU has to close and reopen backing databases under load. Afterwards every database is
// complete through the mount and, after a clean stop, as plain files in the data dir.
#include <unistd.h>

#include <set>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

constexpr int kTenants = 50, kDbs = 6, kWorkers = 6, kStep = 3, kTxns = 3, kRows = 5;

class ManyTenants : public it::MountTest {
 protected:
  it::DaemonOptions Options() override {
    std::string path = scratch_->WorkPath("tenantfs.yaml");
    it::WriteFile(path,
                  "handles:\n"
                  "  max-open: 16\n"
                  "  idle-timeout: 1s\n");
    it::DaemonOptions o;
    o.config_path = path;
    return o;
  }
};

std::string TenantName(int t) {
  char b[32];
  snprintf(b, sizeof b, "tenant-%03d", t);
  return b;
}

std::vector<std::string> CheckArgs(const std::string& root) {
  return {"tenants-check",          root,
          std::to_string(kTenants), std::to_string(kDbs),
          std::to_string(kWorkers), std::to_string(kStep),
          std::to_string(kTxns),    std::to_string(kRows)};
}

TEST_F(ManyTenants, FiftyTenantsTimesSixDatabasesConcurrently) {
  std::vector<it::Child> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.push_back(
        it::Spawn({it::kSqlClientBin, "tenants-work", Mnt(), std::to_string(w),
                   std::to_string(kStep), std::to_string(kTenants), std::to_string(kDbs),
                   std::to_string(kTxns), std::to_string(kRows)}));
  }
  for (int w = 0; w < kWorkers; ++w) {
    it::Result r = workers[w].Wait(450s);
    EXPECT_TRUE(r.Ok()) << "worker " << w << " failed" << r.Describe();
  }
  ASSERT_FALSE(HasFailure());

  // The namespace: exactly the tenants, each with its databases (and, for rollback and
  // WAL modes, at most their companions).
  auto top = it::ListDir(Mnt());
  ASSERT_TRUE(top) << it::ErrnoName(errno);
  std::vector<std::string> want_tenants;
  for (int t = 0; t < kTenants; ++t) want_tenants.push_back(TenantName(t));
  EXPECT_EQ(*top, want_tenants);
  for (int t = 0; t < kTenants; ++t) {
    auto names = it::ListDir(Mnt(TenantName(t)));
    ASSERT_TRUE(names) << TenantName(t) << ": " << it::ErrnoName(errno);
    std::set<std::string> allowed, required;
    for (int d = 0; d < kDbs; ++d) {
      std::string db = "db-" + std::to_string(d) + ".sqlite";
      required.insert(db);
      for (const char* suffix : {"", "-journal", "-wal", "-shm", "-pos"})
        allowed.insert(db + suffix);
    }
    for (const std::string& n : *names) {
      EXPECT_TRUE(allowed.count(n)) << TenantName(t) << " lists unexpected '" << n << "'";
      required.erase(n);
    }
    EXPECT_TRUE(required.empty()) << TenantName(t) << " is missing " << *required.begin();
  }

  it::Result through_mount = it::SqlClient(CheckArgs(Mnt()), 300s);
  EXPECT_TRUE(through_mount.Ok()) << "data through the mount" << through_mount.Describe();

  // After a clean stop the backing files are plain SQLite databases with the same data.
  StopDaemon();
  auto backing = it::ListDir(scratch_->data() + "/tenants");
  ASSERT_TRUE(backing) << it::ErrnoName(errno);
  EXPECT_EQ(*backing, want_tenants);
  it::Result native = it::SqlClient(CheckArgs(scratch_->data() + "/tenants"), 300s);
  EXPECT_TRUE(native.Ok()) << "backing files read natively after a clean stop" << native.Describe();
}

}  // namespace

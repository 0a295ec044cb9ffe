#include "tenancy/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace tenancy {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tenantfs-store-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    executor_ = MakeInlineExecutor();
    Store::Options o;
    o.data_dir = dir_;
    o.executor = executor_.get();
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s.value());
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  std::shared_ptr<File> Create(const std::shared_ptr<Tenant>& t, const std::string& name,
                               bool exclusive = false) {
    std::shared_ptr<File> out;
    Status st;
    store_->CreateFile(t, name, 0644, exclusive, [&](Result<std::shared_ptr<File>> f) {
      if (f.ok()) out = f.value();
      else st = f.status();
    });
    last_ = st;
    return out;
  }
  Status Unlink(const std::shared_ptr<Tenant>& t, const std::string& name) {
    Status out;
    store_->Unlink(t, name, [&](Status s) { out = s; });
    return out;
  }

  std::string dir_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Store> store_;
  Status last_;
};

TEST_F(StoreTest, TenantLifecycle) {
  EXPECT_EQ(store_->LookupTenant("acme").status().code(), Status::Code::kNotFound);
  auto t = store_->CreateTenant("acme", 0755);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(fs::is_directory(dir_ + "/tenants/acme"));
  EXPECT_EQ(store_->CreateTenant("acme", 0755).status().code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(store_->CreateTenant(".bad", 0755).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateTenant(std::string(65, 'x'), 0755).status().code(),
            Status::Code::kInvalidArgument);
  auto names = store_->ListTenants();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names.value(), std::vector<std::string>{"acme"});
  ASSERT_TRUE(Create(t.value(), "app.db"));
  EXPECT_EQ(store_->RemoveTenant("acme").code(), Status::Code::kNotEmpty);
  EXPECT_TRUE(Unlink(t.value(), "app.db").ok());
  EXPECT_TRUE(store_->RemoveTenant("acme").ok());
  EXPECT_FALSE(fs::exists(dir_ + "/tenants/acme"));
}

TEST_F(StoreTest, TenantsOnDiskAreFoundLazily) {
  fs::create_directories(dir_ + "/tenants/old");
  // A fresh store knows nothing until asked.
  auto t = store_->LookupTenant("old");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value()->name(), "old");
}

TEST_F(StoreTest, WriteReadTruncateFsync) {
  auto t = store_->CreateTenant("acme", 0755).value();
  auto f = Create(t, "app.db");
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->Acquire().ok());
  size_t wrote = 0;
  store_->Write(f, "hello world", 0, [&](Result<size_t> n) { wrote = n.ok() ? n.value() : 0; });
  EXPECT_EQ(wrote, 11u);
  char buf[32] = {};
  auto n = store_->Read(*f, buf, sizeof(buf), 6);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, n.value()), "world");
  Status ts;
  store_->Truncate(f, 5, [&](Status s) { ts = s; });
  EXPECT_TRUE(ts.ok());
  EXPECT_EQ(store_->StatFile(*f).value().st_size, 5);
  Status fsr = Status::NotFound("not called");
  store_->Fsync(f, false, [&](Status s) { fsr = s; });
  EXPECT_TRUE(fsr.ok()) << fsr.ToString();
  f->Release();
  EXPECT_EQ(store_->queue_depth(), 0);
}

TEST_F(StoreTest, CompanionsNeedTheirDatabase) {
  auto t = store_->CreateTenant("acme", 0755).value();
  EXPECT_FALSE(Create(t, "app.db-wal"));
  EXPECT_EQ(last_.code(), Status::Code::kNotSupported);
  EXPECT_FALSE(Create(t, "bad name"));
  EXPECT_EQ(last_.code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(Create(t, "app.db-pos"));
  EXPECT_EQ(last_.code(), Status::Code::kNotSupported);
  ASSERT_TRUE(Create(t, "app.db"));
  EXPECT_TRUE(Create(t, "app.db-wal"));
  EXPECT_TRUE(Create(t, "app.db-shm"));
  EXPECT_FALSE(Create(t, "app.db", /*exclusive=*/true));
  EXPECT_EQ(last_.code(), Status::Code::kAlreadyExists);
}

TEST_F(StoreTest, UnlinkDatabaseTakesCompanions) {
  auto t = store_->CreateTenant("acme", 0755).value();
  ASSERT_TRUE(Create(t, "app.db"));
  ASSERT_TRUE(Create(t, "app.db-journal"));
  ASSERT_TRUE(Create(t, "app.db-wal"));
  ASSERT_TRUE(Create(t, "other.db"));
  EXPECT_TRUE(Unlink(t, "app.db").ok());
  EXPECT_FALSE(fs::exists(dir_ + "/tenants/acme/app.db-journal"));
  EXPECT_FALSE(fs::exists(dir_ + "/tenants/acme/app.db-wal"));
  EXPECT_TRUE(fs::exists(dir_ + "/tenants/acme/other.db"));
  EXPECT_EQ(store_->LookupFile(t, "app.db").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(Unlink(t, "app.db").code(), Status::Code::kNotFound);
}

TEST_F(StoreTest, UnlinkedFileKeepsItsDataForOpenHandles) {
  auto t = store_->CreateTenant("acme", 0755).value();
  ASSERT_TRUE(Create(t, "app.db"));
  auto j1 = Create(t, "app.db-journal");
  ASSERT_TRUE(j1);
  ASSERT_TRUE(j1->Acquire().ok());
  store_->Write(j1, "old", 0, [](Result<size_t>) {});
  ASSERT_TRUE(Unlink(t, "app.db-journal").ok());
  EXPECT_TRUE(j1->unlinked());
  auto j2 = Create(t, "app.db-journal");
  ASSERT_TRUE(j2);
  EXPECT_NE(j1.get(), j2.get());  // a new incarnation, a new kernel inode
  char buf[8] = {};
  auto n = store_->Read(*j1, buf, sizeof(buf), 0);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, n.value()), "old");
  j1->Release();
  auto again = store_->LookupFile(t, "app.db-journal");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value().get(), j2.get());  // lookups agree on one identity
}

TEST_F(StoreTest, ListFilesHidesForeignNames) {
  auto t = store_->CreateTenant("acme", 0755).value();
  ASSERT_TRUE(Create(t, "app.db"));
  std::FILE* junk = std::fopen((dir_ + "/tenants/acme/.junk").c_str(), "w");
  std::fclose(junk);
  auto names = store_->ListFiles(*t);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names.value(), std::vector<std::string>{"app.db"});
}

}  // namespace
}  // namespace tenancy

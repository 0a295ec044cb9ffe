// The handle cache through the Store: backing fds stay within handles.max-open
// while applications keep any number of logical handles.
#include "tenancy/handle_cache.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tenancy/store.h"

namespace tenancy {
namespace {

namespace fs = std::filesystem;

int CountProcessFds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the DIR itself
}

class HandleCacheTest : public ::testing::Test {
 protected:
  void Open(size_t max_open, int64_t idle_ms = 60000) {
    char tmpl[] = "/tmp/tenantfs-cache-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    Store::Options o;
    o.data_dir = dir_;
    o.executor = executor_.get();
    o.max_open = max_open;
    o.idle_timeout_ms = idle_ms;
    o.now_ms = [this] { return now_; };
    store_ = std::move(Store::Open(o).value());
    tenant_ = store_->CreateTenant("acme", 0755).value();
  }
  void TearDown() override {
    for (auto& f : handles_) f->Release();
    handles_.clear();
    store_.reset();
    fs::remove_all(dir_);
  }
  std::shared_ptr<File> CreateAndWrite(const std::string& name, const std::string& data) {
    std::shared_ptr<File> out;
    store_->CreateFile(tenant_, name, 0644, false, [&](Result<std::shared_ptr<File>> f) {
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      out = f.value();
    });
    EXPECT_TRUE(out->Acquire().ok());
    handles_.push_back(out);
    Status st;
    store_->Write(out, data, 0, [&](Result<size_t> n) { st = n.status(); });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return out;
  }
  std::string ReadAll(File& f, size_t n) {
    std::string buf(n, '\0');
    auto got = store_->Read(f, buf.data(), n, 0);
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    buf.resize(got.ok() ? got.value() : 0);
    return buf;
  }

  std::unique_ptr<Executor> executor_ = MakeInlineExecutor();
  std::string dir_;
  int64_t now_ = 1000;
  std::unique_ptr<Store> store_;
  std::shared_ptr<Tenant> tenant_;
  std::vector<std::shared_ptr<File>> handles_;
};

TEST_F(HandleCacheTest, ManyLogicalHandlesFewFds) {
  Open(/*max_open=*/8);
  int base = CountProcessFds();
  std::vector<std::shared_ptr<File>> files;
  for (int i = 0; i < 200; ++i) {
    files.push_back(CreateAndWrite("db" + std::to_string(i), "content of " + std::to_string(i)));
    ASSERT_LE(CountProcessFds() - base, 8 + 1) << "after database " << i;
  }
  EXPECT_LE(store_->databases_open(), 8u);
  EXPECT_GT(store_->evictions(), 150u);
  // Every handle still works: evicted databases reopen on use.
  for (int i = 0; i < 200; ++i) {
    std::string want = "content of " + std::to_string(i);
    EXPECT_EQ(ReadAll(*files[i], want.size()), want);
    ASSERT_LE(CountProcessFds() - base, 8 + 1);
  }
}

// Room is made before an fd is opened, not when the operation ends: while an
// operation of a database that was not open runs, the daemon's fds stay within
// the budget (the other databases are unpinned, so they can make room).
TEST_F(HandleCacheTest, BudgetHoldsWhileAnOperationRuns) {
  Open(/*max_open=*/4);
  int base = CountProcessFds();
  for (int i = 0; i < 4; ++i) CreateAndWrite("db" + std::to_string(i), "content");
  ASSERT_EQ(CountProcessFds() - base, 4);  // each holds its main file
  auto fresh = CreateAndWrite("fresh", "fresh content");
  auto other = store_->OpenDatabase("acme", "db0", false);
  ASSERT_TRUE(other.ok());
  int during = -1;
  size_t open_during = 0;
  Status s = store_->RunOn(other.value(), [&](Capture&) {  // pinned; loading opened its main file
    during = CountProcessFds() - base;
    open_during = store_->databases_open();
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_LE(during, 4);
  EXPECT_LE(open_during, 4u);
  EXPECT_EQ(ReadAll(*fresh, 13), "fresh content");
  EXPECT_LE(CountProcessFds() - base, 4);
}

// A pinned database is never closed to make room, and nothing waits for room:
// with every open database pinned the budget is exceeded, then restored.
TEST_F(HandleCacheTest, PinnedDatabasesOvershootWithoutWaiting) {
  Open(/*max_open=*/1);
  int base = CountProcessFds();
  auto a = CreateAndWrite("a", "first");
  auto b = CreateAndWrite("b", "second");
  auto da = store_->OpenDatabase("acme", "a", false).value();
  auto db = store_->OpenDatabase("acme", "b", false).value();
  int during = -1;
  Status s = store_->RunOn(da, [&](Capture&) {  // a pinned and open ...
    // ... while an operation of b opens b (nested only here: the executor is inline)
    return store_->RunOn(db, [&](Capture&) {
      during = CountProcessFds() - base;
      return Status::Ok();
    });
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(during, 2);
  EXPECT_EQ(ReadAll(*b, 6), "second");
  EXPECT_LE(CountProcessFds() - base, 1);
  EXPECT_EQ(ReadAll(*a, 5), "first");
}

TEST_F(HandleCacheTest, IdleDatabasesAreClosedBySweep) {
  Open(/*max_open=*/64, /*idle_ms=*/5000);
  int base = CountProcessFds();
  auto a = CreateAndWrite("a", "x");
  auto b = CreateAndWrite("b", "y");
  EXPECT_EQ(store_->databases_open(), 2u);
  now_ += 3000;
  EXPECT_EQ(ReadAll(*b, 1), "y");  // b used again: not idle
  now_ += 3000;
  EXPECT_EQ(store_->SweepIdle(), 1u);  // a: idle 6 s
  EXPECT_EQ(store_->databases_open(), 1u);
  EXPECT_EQ(CountProcessFds() - base, 1);
  now_ += 6000;
  EXPECT_EQ(store_->SweepIdle(), 1u);
  EXPECT_EQ(store_->databases_open(), 0u);
  EXPECT_EQ(CountProcessFds(), base);
  EXPECT_EQ(ReadAll(*a, 1), "x");
}

TEST_F(HandleCacheTest, UnlinkedOpenFileSurvivesEviction) {
  Open(/*max_open=*/2);
  CreateAndWrite("main", "m");
  auto j = CreateAndWrite("main-journal", "journal bytes");
  Status st;
  store_->Unlink(tenant_, "main-journal", [&](Status s) { st = s; });
  ASSERT_TRUE(st.ok());
  for (int i = 0; i < 10; ++i) CreateAndWrite("other" + std::to_string(i), "o");
  // Its name is gone, so it could not be reopened: its fd was kept.
  EXPECT_EQ(ReadAll(*j, 13), "journal bytes");
}

}  // namespace
}  // namespace tenancy

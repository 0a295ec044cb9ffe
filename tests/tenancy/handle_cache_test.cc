// The handle cache through the Store: backing fds stay within handles.max-open
// while applications keep any number of logical handles.
#include "tenancy/handle_cache.h"

#include <dirent.h>
#include <sys/resource.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

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
  // Each holds its main file, but a pin reserves kFdsPerPinnedDb (more than this
  // budget of 4), so each creation closed the others first.
  ASSERT_GE(CountProcessFds() - base, 1);
  ASSERT_LE(CountProcessFds() - base, 4);
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

// The budget is strict: pinning reserves what a database may hold
// (kFdsPerPinnedDb), so with max-open 12 two databases may be in use at once and a
// third waits until one is done -- it does not open its files over budget. Old
// behaviour (a pinned database never waited) ran the third at once, with every
// database's fds open.
TEST_F(HandleCacheTest, ThirdDatabaseWaitsForRoomInsteadOfExceedingTheBudget) {
  constexpr size_t kMaxOpen = 2 * HandleCache::kFdsPerPinnedDb;
  Open(kMaxOpen);
  const int base = CountProcessFds();
  std::shared_ptr<Database> dbs[3];
  for (int i = 0; i < 3; ++i) {
    CreateAndWrite("db" + std::to_string(i), "content " + std::to_string(i));
    dbs[i] = store_->OpenDatabase("acme", "db" + std::to_string(i), false).value();
  }
  EXPECT_EQ(store_->max_pinned(), 2u);
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0;
  bool release = false, third_ran = false;
  int fds_in_third = -1;
  auto hold = [&](int i) {
    Status s = store_->RunOn(dbs[i], [&](Capture&) {
      std::unique_lock lock(mu);
      ++inside;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
  };
  std::thread a(hold, 0), b(hold, 1);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return inside == 2; }));
  }
  std::thread c([&] {
    Status s = store_->RunOn(dbs[2], [&](Capture&) {
      fds_in_third = CountProcessFds() - base;
      std::lock_guard lock(mu);
      third_ran = true;
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    std::lock_guard lock(mu);
    EXPECT_FALSE(third_ran) << "a third database was pinned over a budget of two";
    EXPECT_LE(store_->pinned_databases(), 2u);
    release = true;
    cv.notify_all();
  }
  a.join();
  b.join();
  c.join();
  EXPECT_TRUE(third_ran);
  EXPECT_GE(fds_in_third, 1);
  EXPECT_LE(fds_in_third, static_cast<int>(kMaxOpen));
  EXPECT_GE(store_->admission_waits(), 1u);
  EXPECT_EQ(store_->admission_overruns(), 0u);
  for (int i = 0; i < 3; ++i) {
    std::string want = "content " + std::to_string(i);
    EXPECT_EQ(ReadAll(*handles_[i], want.size()), want);
  }
}

// An operation may pin its own database again (a read while its write runs): that
// never waits, even with the budget full.
TEST_F(HandleCacheTest, RepinningTheSameDatabaseNeverWaits) {
  Open(/*max_open=*/1);  // one database at a time
  auto a = CreateAndWrite("a", "first");
  auto da = store_->OpenDatabase("acme", "a", false).value();
  std::string during;
  Status s = store_->RunOn(da, [&](Capture&) {  // a pinned ...
    during = ReadAll(*a, 5);                     // ... and pinned again by the read
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(during, "first");
  EXPECT_EQ(store_->admission_waits(), 0u);
}

// Many threads over many databases with a small budget: the counted fds never pass
// max-open, the process's fds never pass it by more than the unlinked-file slack
// (none here), every read is right, and no pin gave up waiting.
TEST_F(HandleCacheTest, ManyThreadsManyDatabasesStayWithinTheBudget) {
  constexpr size_t kMaxOpen = 3 * HandleCache::kFdsPerPinnedDb;
  Open(kMaxOpen);
  const int base = CountProcessFds();
  constexpr int kDbs = 40, kThreads = 8, kOps = 150;
  std::vector<std::shared_ptr<Database>> dbs;
  for (int i = 0; i < kDbs; ++i) {
    CreateAndWrite("db" + std::to_string(i), "content " + std::to_string(i));
    dbs.push_back(store_->OpenDatabase("acme", "db" + std::to_string(i), false).value());
  }
  std::atomic<int> max_fds{0}, max_pinned{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kOps; ++k) {
        int i = (t * 7919 + k * 104729) % kDbs;
        Status s = store_->RunOn(dbs[i], [&](Capture&) {
          int fds = CountProcessFds() - base;
          int prev = max_fds.load();
          while (fds > prev && !max_fds.compare_exchange_weak(prev, fds)) {}
          int pinned = static_cast<int>(store_->pinned_databases());
          prev = max_pinned.load();
          while (pinned > prev && !max_pinned.compare_exchange_weak(prev, pinned)) {}
          return Status::Ok();
        });
        if (!s.ok()) ++wrong;
        std::string want = "content " + std::to_string(i);
        std::string buf(want.size(), '\0');
        auto got = store_->Read(*handles_[i], buf.data(), buf.size(), 0);
        if (!got.ok() || buf != want) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(max_fds.load(), static_cast<int>(kMaxOpen));
  EXPECT_LE(max_pinned.load(), 3);
  EXPECT_LE(store_->handle_fds(), kMaxOpen);
  EXPECT_EQ(store_->admission_overruns(), 0u);
  EXPECT_GT(store_->evictions(), 0u);
  // Every capture state still loaded belongs to an open database: one closed while its
  // queue was busy dropped its state after the last task.
  EXPECT_LE(static_cast<size_t>(store_->stats().loaded.load()), store_->databases_open());
}

// Out of fds (here the process limit, set just above what the test holds): the
// open that fails with EMFILE is counted, the least recently used idle database is
// closed, and the open is retried -- the operation succeeds, nothing crashes.
TEST_F(HandleCacheTest, EmfileClosesAnIdleDatabaseAndRetries) {
  Open(/*max_open=*/256, /*idle_ms=*/1000);  // a budget the process limit cannot hold
  std::vector<std::shared_ptr<File>> files;
  for (int i = 0; i < 6; ++i) files.push_back(CreateAndWrite("db" + std::to_string(i), "data " + std::to_string(i)));
  now_ += 5000;
  ASSERT_EQ(store_->SweepIdle(), 6u);  // all closed: every read below opens an fd
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  int probe = ::dup(0);  // the lowest free fd
  ASSERT_GE(probe, 0);
  ::close(probe);
  struct rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(probe + 2);  // room for two more fds
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<std::string> got;
  for (int i = 0; i < 6; ++i) got.push_back(ReadAll(*files[i], 6));
  // A new database too: its create hits the limit and makes room the same way.
  std::shared_ptr<File> fresh;
  Status created;
  store_->CreateFile(tenant_, "fresh", 0644, false, [&](Result<std::shared_ptr<File>> f) {
    created = f.status();
    if (f.ok()) fresh = f.value();
  });
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(got[i], "data " + std::to_string(i));
  EXPECT_TRUE(created.ok()) << created.ToString();
  EXPECT_GE(store_->fd_exhaustions(), 5u);  // the 3rd..6th read and the create
  EXPECT_GE(store_->evictions(), 5u);
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

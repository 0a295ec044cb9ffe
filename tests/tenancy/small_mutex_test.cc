#include "tenancy/small_mutex.h"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <vector>

namespace tenancy {
namespace {

TEST(SmallMutexTest, TryLockFailsWhileHeldAndSucceedsAfter) {
  SmallMutex mu;
  ASSERT_TRUE(mu.try_lock());
  bool other = true;
  std::thread([&] { other = mu.try_lock(); }).join();
  EXPECT_FALSE(other);
  mu.unlock();
  std::thread([&] {
    other = mu.try_lock();
    if (other) mu.unlock();
  }).join();
  EXPECT_TRUE(other);
}

// Non-atomic read-modify-writes under the lock from several threads: any two
// critical sections overlapping lose increments (and TSan reports the race).
TEST(SmallMutexTest, ContendingThreadsNeverOverlap) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 100000;
  SmallMutex mu;
  uint64_t counter = 0;   // guarded by mu
  int inside = 0;         // guarded by mu: threads in the critical section
  int max_inside = 0;     // guarded by mu
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIterations; ++i) {
        std::lock_guard lock(mu);
        ++inside;
        if (inside > max_inside) max_inside = inside;
        // Read, yield now and then to invite another thread in, write back.
        uint64_t v = counter;
        if (i % 1024 == 0) std::this_thread::yield();
        counter = v + 1;
        --inside;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, uint64_t{kThreads} * kIterations);
  EXPECT_EQ(max_inside, 1);
}

// Sleepers are woken: a thread holds the lock long enough for the others to
// reach the futex wait, and every one of them still gets in.
TEST(SmallMutexTest, SleepingWaitersAreWoken) {
  SmallMutex mu;
  int entered = 0;  // guarded by mu
  std::unique_lock hold(mu);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      std::lock_guard lock(mu);
      ++entered;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(entered, 0);
  hold.unlock();
  for (auto& t : threads) t.join();
  std::lock_guard lock(mu);
  EXPECT_EQ(entered, 3);
}

}  // namespace
}  // namespace tenancy

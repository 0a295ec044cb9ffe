#include "tenancy/serial_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tenancy/executor.h"

namespace tenancy {
namespace {

// An executor that parks tasks until the test runs them: deterministic order.
class ManualExecutor : public Executor {
 public:
  void Run(std::function<void()> task) override { tasks_.push_back(std::move(task)); }
  void Drain() override {
    while (!tasks_.empty()) {
      auto t = std::move(tasks_.front());
      tasks_.erase(tasks_.begin());
      t();
    }
  }
  size_t pending() const { return tasks_.size(); }

 private:
  std::vector<std::function<void()>> tasks_;
};

TEST(SerialQueueTest, IdleQueueRunsInline) {
  ManualExecutor ex;
  auto q = SerialQueue::Create(&ex);
  int ran = 0;
  q->Submit([&] { ++ran; }, /*inline_ok=*/true, q);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(ex.pending(), 0u);
}

TEST(SerialQueueTest, BlockingTaskGoesToExecutorAndLaterTasksWait) {
  ManualExecutor ex;
  auto q = SerialQueue::Create(&ex);
  std::vector<int> order;
  q->Submit([&] { order.push_back(1); }, /*inline_ok=*/false, q);
  EXPECT_TRUE(order.empty());
  // The queue is busy: even an inline-capable task must wait its turn.
  q->Submit([&] { order.push_back(2); }, /*inline_ok=*/true, q);
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(q->depth(), 2u);
  EXPECT_FALSE(q->idle());
  ex.Drain();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(q->depth(), 0u);
  EXPECT_TRUE(q->idle());
  // Idle again: inline.
  q->Submit([&] { order.push_back(3); }, true, q);
  EXPECT_EQ(order.back(), 3);
}

TEST(SerialQueueTest, TasksParkedDuringInlineRunAreRunByTheDrainer) {
  ManualExecutor ex;
  auto q = SerialQueue::Create(&ex);
  std::vector<int> order;
  q->Submit(
      [&] {
        order.push_back(1);
        q->Submit([&] { order.push_back(2); }, true, q);  // arrives while 1 runs
        EXPECT_EQ(order.size(), 1u);                     // parked, not run re-entrantly
      },
      true, q);
  // Run on this thread after task 1, without a hand-off to the executor.
  EXPECT_EQ(ex.pending(), 0u);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(SerialQueueTest, NeverTwoAtOnceUnderThreads) {
  auto ex = MakeTbbExecutor(8);
  auto q = SerialQueue::Create(ex.get());
  std::atomic<int> running{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        q->Submit(
            [&] {
              if (running.fetch_add(1) != 0) overlaps.fetch_add(1);
              running.fetch_sub(1);
              done.fetch_add(1);
            },
            (i + t) % 3 != 0, q);
      }
    });
  }
  for (auto& th : threads) th.join();
  ex->Drain();
  EXPECT_EQ(done.load(), 8000);
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(SerialQueueTest, PerSubmitterOrderIsKept) {
  auto ex = MakeTbbExecutor(8);
  auto q = SerialQueue::Create(ex.get());
  std::vector<int> seen;  // touched only by queue tasks, which never overlap
  for (int i = 0; i < 5000; ++i) q->Submit([&seen, i] { seen.push_back(i); }, i % 2 == 0, q);
  ex->Drain();
  ASSERT_EQ(seen.size(), 5000u);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(seen[i], i);
}

// A queue embedded in another object (as in a database): a task handed to the
// executor keeps the owner alive until the drain is over, and no longer.
TEST(SerialQueueTest, HandOffKeepsTheEmbeddingOwnerAlive) {
  ManualExecutor ex;
  struct Owner {
    explicit Owner(Executor* e) : queue(e) {}
    SerialQueue queue;
  };
  auto owner = std::make_shared<Owner>(&ex);
  std::weak_ptr<Owner> weak = owner;
  int ran = 0;
  owner->queue.Submit([&] { ++ran; }, /*inline_ok=*/false, owner);
  owner.reset();
  EXPECT_FALSE(weak.expired());  // the pending drain holds it
  ex.Drain();
  EXPECT_EQ(ran, 1);
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace tenancy

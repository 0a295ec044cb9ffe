#include "tenancy/executor.h"

#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

namespace tenancy {

namespace {

class TbbExecutor : public Executor {
 public:
  explicit TbbExecutor(int threads)
      : control_(tbb::global_control::max_allowed_parallelism, threads + 1), arena_(threads, 0) {}
  ~TbbExecutor() override { Drain(); }

  void Run(std::function<void()> task) override {
    arena_.execute([&] { group_->run(std::move(task)); });
  }
  void Drain() override {
    arena_.execute([&] { group_->wait(); });
  }

 private:
  tbb::global_control control_;
  tbb::task_arena arena_;
  // Held by pointer: task_group's destructor may throw, ours must not.
  std::unique_ptr<tbb::task_group> group_ = std::make_unique<tbb::task_group>();
};

class InlineExecutor : public Executor {
 public:
  void Run(std::function<void()> task) override { task(); }
  void Drain() override {}
};

}  // namespace

std::unique_ptr<Executor> MakeTbbExecutor(int threads) {
  return std::make_unique<TbbExecutor>(threads);
}
std::unique_ptr<Executor> MakeInlineExecutor() { return std::make_unique<InlineExecutor>(); }

}  // namespace tenancy

// Executor: where the core runs work that may block on disk. The daemon's is a
// TBB arena (MakeTbbExecutor); unit tests may run tasks inline. Thread-safe.
#pragma once

#include <functional>
#include <memory>

namespace tenancy {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs task soon, on some thread of the executor. Never blocks.
  virtual void Run(std::function<void()> task) = 0;
  // Waits until every task run so far (and those they started) has finished.
  virtual void Drain() = 0;
};

// A TBB task arena of `threads` slots. Tasks may block on I/O, so threads may
// exceed the core count.
std::unique_ptr<Executor> MakeTbbExecutor(int threads);

// Runs each task on the calling thread (deterministic unit tests).
std::unique_ptr<Executor> MakeInlineExecutor();

}  // namespace tenancy

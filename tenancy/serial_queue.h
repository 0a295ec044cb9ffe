// SerialQueue: runs the tasks given to it one at a time, in submission order.
//
// Each database owns one; every mutating operation on the database's files goes
// through it, so the core sees one total order of writes per database while two
// databases never wait for each other. A task submitted to an idle queue runs on
// the submitting thread (no hand-off); a task submitted to a busy queue is parked
// and run, in order, by the thread that is draining it. Tasks must not block on
// another queue. Thread-safe.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "tenancy/executor.h"

namespace tenancy {

class SerialQueue : public std::enable_shared_from_this<SerialQueue> {
 public:
  // REQUIRES: executor outlives the queue and every task it runs.
  static std::shared_ptr<SerialQueue> Create(Executor* executor);

  // Runs task after every task submitted before it. With inline_ok and an idle
  // queue, runs it on this thread before returning; otherwise on the executor.
  void Submit(std::function<void()> task, bool inline_ok);

  // Tasks waiting (not counting the one running).
  size_t depth() const;

 private:
  explicit SerialQueue(Executor* executor) : executor_(executor) {}
  void Drain();

  Executor* const executor_;
  mutable std::mutex mu_;  // leaf lock: nothing is called while it is held
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool running_ = false;                     // guarded by mu_
};

}  // namespace tenancy

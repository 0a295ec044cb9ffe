// SerialQueue: runs the tasks given to it one at a time, in submission order.
//
// Each database owns one; every mutating operation on the database's files goes
// through it, so the core sees one total order of writes per database while two
// databases never wait for each other. A task submitted to an idle queue runs on
// the submitting thread (no hand-off); a task submitted to a busy queue is parked
// and run, in order, by the thread that is draining it. Tasks must not block on
// another queue. An idle queue holds no heap memory (one per database: the
// container of parked tasks exists only while some are parked). Thread-safe.
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
  // Nothing running and nothing waiting (a snapshot: it may change right after).
  bool idle() const;

 private:
  explicit SerialQueue(Executor* executor) : executor_(executor) {}
  void Drain();
  void Park(std::function<void()> task);  // REQUIRES: mu_ held

  Executor* const executor_;
  mutable std::mutex mu_;  // leaf lock: nothing is called while it is held
  // Parked tasks, guarded by mu_; null when none (an empty std::deque allocates).
  std::unique_ptr<std::deque<std::function<void()>>> tasks_;
  bool running_ = false;  // guarded by mu_
};

}  // namespace tenancy

// SerialQueue: runs the tasks given to it one at a time, in submission order.
//
// Each database owns one; every mutating operation on the database's files goes
// through it, so the core sees one total order of writes per database while two
// databases never wait for each other. A task submitted to an idle queue runs on
// the submitting thread (no hand-off); a task submitted to a busy queue is parked
// and run, in order, by the thread that is draining it. Tasks must not block on
// another queue. An idle queue holds no heap memory (one per database: the
// container of parked tasks exists only while some are parked) and is 24 bytes,
// embedded in the object that owns it. Thread-safe.
#pragma once

#include <deque>
#include <functional>
#include <memory>

#include "tenancy/executor.h"
#include "tenancy/small_mutex.h"

namespace tenancy {

class SerialQueue {
 public:
  // REQUIRES: executor outlives the queue and every task it runs.
  explicit SerialQueue(Executor* executor) : executor_(executor) {}
  SerialQueue(const SerialQueue&) = delete;
  SerialQueue& operator=(const SerialQueue&) = delete;
  // A queue owned on its own (one allocation); Submit it with itself as owner.
  static std::shared_ptr<SerialQueue> Create(Executor* executor);

  // Runs task after every task submitted before it. With inline_ok and an idle
  // queue, runs it on this thread before returning; otherwise on the executor.
  // owner keeps the queue alive: a pointer to it or to the object embedding it
  // (the database); a hand-off to the executor holds a copy while it drains.
  // REQUIRES: owner valid until Submit returns (the task itself may hold it).
  template <typename Owner>
  void Submit(std::function<void()> task, bool inline_ok, const std::shared_ptr<Owner>& owner) {
    switch (Enqueue(task, inline_ok)) {
      case Next::kParked:
        return;
      case Next::kHandOff:
        executor_->Run([this, keep = std::shared_ptr<const void>(owner)] { Drain(); });
        return;
      case Next::kRunHere:
        task();
        // Tasks parked meanwhile are run here too (combining): handing them to
        // another thread costs a wake-up and, with TBB, a spinning worker --
        // measured at about a fifth of the daemon's CPU on two cores. libfuse
        // starts another worker if every one is busy.
        Drain();
        return;
    }
  }

  // Tasks waiting (not counting the one running).
  size_t depth() const;
  // Nothing running and nothing waiting (a snapshot: it may change right after).
  bool idle() const;

 private:
  enum class Next { kParked, kHandOff, kRunHere };
  // Parks task behind a running drainer (kParked), or makes this thread the
  // drainer: parking task for the executor (kHandOff) or leaving it to be run
  // here (kRunHere, task untouched).
  Next Enqueue(std::function<void()>& task, bool inline_ok);
  void Drain();
  void Park(std::function<void()> task);  // REQUIRES: mu_ held

  Executor* const executor_;
  mutable SmallMutex mu_;  // leaf lock: nothing is called while it is held
  bool running_ = false;   // guarded by mu_
  // Parked tasks, guarded by mu_; null when none (an empty std::deque allocates).
  std::unique_ptr<std::deque<std::function<void()>>> tasks_;
};

}  // namespace tenancy

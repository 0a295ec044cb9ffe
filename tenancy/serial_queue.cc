#include "tenancy/serial_queue.h"

namespace tenancy {

std::shared_ptr<SerialQueue> SerialQueue::Create(Executor* executor) {
  return std::shared_ptr<SerialQueue>(new SerialQueue(executor));
}

void SerialQueue::Submit(std::function<void()> task, bool inline_ok) {
  {
    std::lock_guard lock(mu_);
    if (running_) {  // the running drainer will take it
      tasks_.push_back(std::move(task));
      return;
    }
    running_ = true;
    if (!inline_ok) tasks_.push_back(std::move(task));
  }
  if (!inline_ok) {
    executor_->Run([self = shared_from_this()] { self->Drain(); });
    return;
  }
  task();
  // Tasks parked meanwhile are run here too (combining): handing them to another
  // thread costs a wake-up and, with TBB, a spinning worker — measured at about a
  // fifth of the daemon's CPU on two cores. libfuse starts another worker if
  // every one is busy.
  Drain();
}

void SerialQueue::Drain() {
  for (;;) {
    std::function<void()> task;
    {
      std::lock_guard lock(mu_);
      if (tasks_.empty()) {
        running_ = false;
        return;
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

size_t SerialQueue::depth() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

}  // namespace tenancy

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
  // Anything parked meanwhile is handed to the executor, so the submitting
  // thread (a FUSE worker) goes back to serving requests.
  {
    std::lock_guard lock(mu_);
    if (tasks_.empty()) {
      running_ = false;
      return;
    }
  }
  executor_->Run([self = shared_from_this()] { self->Drain(); });
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

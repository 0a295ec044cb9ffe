#include "tenancy/serial_queue.h"

namespace tenancy {

std::shared_ptr<SerialQueue> SerialQueue::Create(Executor* executor) {
  return std::make_shared<SerialQueue>(executor);
}

void SerialQueue::Park(std::function<void()> task) {
  if (!tasks_) tasks_ = std::make_unique<std::deque<std::function<void()>>>();
  tasks_->push_back(std::move(task));
}

SerialQueue::Next SerialQueue::Enqueue(std::function<void()>& task, bool inline_ok) {
  std::lock_guard lock(mu_);
  if (running_) {  // the running drainer will take it
    Park(std::move(task));
    return Next::kParked;
  }
  running_ = true;
  if (inline_ok) return Next::kRunHere;
  Park(std::move(task));
  return Next::kHandOff;
}

void SerialQueue::Drain() {
  for (;;) {
    std::function<void()> task;
    std::unique_ptr<std::deque<std::function<void()>>> drained;  // freed outside the lock
    {
      std::lock_guard lock(mu_);
      if (!tasks_ || tasks_->empty()) {
        drained = std::move(tasks_);
        running_ = false;
        return;
      }
      task = std::move(tasks_->front());
      tasks_->pop_front();
    }
    task();
  }
}

size_t SerialQueue::depth() const {
  std::lock_guard lock(mu_);
  return tasks_ ? tasks_->size() : 0;
}

bool SerialQueue::idle() const {
  std::lock_guard lock(mu_);
  return !running_ && (!tasks_ || tasks_->empty());
}

}  // namespace tenancy

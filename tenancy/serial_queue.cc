#include "tenancy/serial_queue.h"

namespace tenancy {

std::shared_ptr<SerialQueue> SerialQueue::Create(Executor* executor) {
  // One allocation for the queue and its control block (the constructor is private).
  struct Made : SerialQueue {
    explicit Made(Executor* e) : SerialQueue(e) {}
  };
  return std::make_shared<Made>(executor);
}

void SerialQueue::Park(std::function<void()> task) {
  if (!tasks_) tasks_ = std::make_unique<std::deque<std::function<void()>>>();
  tasks_->push_back(std::move(task));
}

void SerialQueue::Submit(std::function<void()> task, bool inline_ok) {
  {
    std::lock_guard lock(mu_);
    if (running_) {  // the running drainer will take it
      Park(std::move(task));
      return;
    }
    running_ = true;
    if (!inline_ok) Park(std::move(task));
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

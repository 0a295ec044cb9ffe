#include "tenancy/handle_cache.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "metrics/log.h"

namespace tenancy {

HandleCache::HandleCache(size_t max_open, int64_t idle_ms, std::function<int64_t()> now_ms,
                         std::function<void(Database&)> close_fds,
                         std::function<int(Database&)> count_fds)
    : max_open_(max_open == 0 ? 1 : max_open),
      max_pinned_(std::max<size_t>(1, max_open_ / kFdsPerPinnedDb)),
      idle_ms_(idle_ms),
      now_ms_(std::move(now_ms)),
      close_fds_(std::move(close_fds)),
      count_fds_(std::move(count_fds)) {
  head_.next = head_.prev = &head_;
}

void HandleCache::Unlink(CacheEntry& e) {
  e.prev->next = e.next;
  e.next->prev = e.prev;
  e.prev = e.next = nullptr;
  e.listed = false;
  open_.fetch_sub(1, std::memory_order_relaxed);
  fds_.fetch_sub(e.fds, std::memory_order_relaxed);
  e.fds = 0;
}

void HandleCache::PushFront(CacheEntry& e) {
  e.next = head_.next;
  e.prev = &head_;
  head_.next->prev = &e;
  head_.next = &e;
  e.listed = true;
  open_.fetch_add(1, std::memory_order_relaxed);
}

bool HandleCache::EvictLocked(CacheEntry& e) {
  if (e.pins > 0 || !e.listed) return false;
  Unlink(e);
  close_fds_(*e.db);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void HandleCache::RecountLocked(CacheEntry& e, uint32_t extra) {
  uint32_t now_fds = static_cast<uint32_t>(count_fds_(*e.db)) + extra;
  if (e.pins > 0) now_fds = std::max(now_fds, kFdsPerPinnedDb);
  fds_.fetch_add(now_fds, std::memory_order_relaxed);
  fds_.fetch_sub(e.fds, std::memory_order_relaxed);
  e.fds = now_fds;
}

void HandleCache::EnforceLocked() {
  CacheEntry* victim = head_.prev;
  while ((fds_.load(std::memory_order_relaxed) > max_open_ ||
          open_.load(std::memory_order_relaxed) > max_open_) &&
         victim != &head_) {
    CacheEntry* prev = victim->prev;
    EvictLocked(*victim);  // skips pinned databases
    victim = prev;
  }
}

void HandleCache::AdmitLocked(CacheEntry& e, std::unique_lock<std::mutex>& lock) {
  auto room = [this] { return pinned_dbs_.load(std::memory_order_relaxed) < max_pinned_; };
  if (!room()) {
    waits_.fetch_add(1, std::memory_order_relaxed);
    ++waiting_;
    bool admitted = room_.wait_for(lock, std::chrono::milliseconds(kAdmitWaitMs), room);
    --waiting_;
    if (!admitted) {
      overruns_.fetch_add(1, std::memory_order_relaxed);
      LOG_ERROR("no room in the handle budget for " + std::to_string(kAdmitWaitMs) +
                    " ms; exceeding handles.max-open for one database",
                {{"max_open", std::to_string(max_open_)},
                 {"pinned", std::to_string(pinned_dbs_.load())}});
    }
  }
  pinned_dbs_.fetch_add(1, std::memory_order_relaxed);
  if (!e.listed) PushFront(e);
}

void HandleCache::Pin(CacheEntry& e) {
  std::unique_lock lock(mu_);
  if (e.pins == 0) AdmitLocked(e, lock);
  ++e.pins;
  e.last_used_ms = now_ms_();
  if (e.pins == 1) {
    // Its reservation counted now, room made now: not when the operation opens
    // an fd, nor when it ends. No recount: nothing opens an fd of an unpinned
    // database, so what it held at its last unpin is within the reservation.
    uint32_t reserved = std::max(e.fds, kFdsPerPinnedDb);
    fds_.fetch_add(reserved - e.fds, std::memory_order_relaxed);
    e.fds = reserved;
    EnforceLocked();
  }
  if (head_.next != &e) {  // move to front
    e.prev->next = e.next;
    e.next->prev = e.prev;
    e.next = head_.next;
    e.prev = &head_;
    head_.next->prev = &e;
    head_.next = &e;
  }
}

void HandleCache::Reserve(CacheEntry& e) {
  std::lock_guard lock(mu_);
  if (!e.listed) return;  // not pinned (a caller breaking the contract): nothing to count
  RecountLocked(e, 1);
  EnforceLocked();
}

void HandleCache::Unpin(CacheEntry& e) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    --e.pins;
    e.last_used_ms = now_ms_();
    if (e.pins > 0) return;
    pinned_dbs_.fetch_sub(1, std::memory_order_relaxed);
    // From its reservation to what it really holds; then, should it hold more
    // than was counted, close least recently used databases nobody is using.
    RecountLocked(e, 0);
    EnforceLocked();
    wake = waiting_ > 0;
  }
  // All of them: one may have been overtaken by a pin that found the room free.
  if (wake) room_.notify_all();
}

void HandleCache::Forget(CacheEntry& e) {
  std::lock_guard lock(mu_);
  if (e.listed) Unlink(e);
}

size_t HandleCache::Sweep() {
  std::lock_guard lock(mu_);
  int64_t cutoff = now_ms_() - idle_ms_;
  size_t closed = 0;
  CacheEntry* e = head_.prev;
  while (e != &head_) {
    CacheEntry* prev = e->prev;
    // The list is in use order, but a pinned entry may be old; skip it.
    if (e->last_used_ms > cutoff) break;
    if (EvictLocked(*e)) ++closed;
    e = prev;
  }
  return closed;
}

bool HandleCache::EvictOne() {
  std::lock_guard lock(mu_);
  for (CacheEntry* e = head_.prev; e != &head_; e = e->prev) {
    if (EvictLocked(*e)) return true;
  }
  return false;
}

}  // namespace tenancy

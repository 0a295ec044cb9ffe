// HandleCache: bounds the backing files tenantfs keeps open.
//
// A database is "open" while any of its backing fds are (its files, its log).
// Applications' file handles are logical (tenancy::File users) and survive
// eviction: the next operation reopens what it needs by path. The budget,
// `max_open`, counts backing fds (one per open file, one per log segment being
// written): a WAL database in use holds three or four, a rollback one one or
// two. It also bounds the databases open at once. A sweep closes databases idle
// for `idle_ms`.
// An operation pins its database for its duration (CacheUse), so nothing is
// closed under it; locks apps hold live on kernel inodes and are unaffected.
// Room is made before it is used: pinning a database that is not open, and
// announcing an fd about to be opened (Reserve), first close the least recently
// used unpinned databases until the new one fits. Nothing ever waits for room:
// when every open database is pinned the budget is exceeded by what the pinned
// databases hold, and restored as they unpin (an operation holding a pin may
// need another fd of its own database, so waiting could deadlock).
//
// Thread safety: thread-safe. One mutex guards the LRU list; it is held for O(1)
// list work per operation, and while an evicted database's fds are closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

namespace tenancy {

class Database;

// The cache's per-database bookkeeping, embedded in Database. Guarded by the
// cache's mutex.
struct CacheEntry {
  CacheEntry* prev = nullptr;
  CacheEntry* next = nullptr;
  Database* db = nullptr;
  int64_t last_used_ms = 0;
  uint32_t pins = 0;
  uint32_t fds = 0;     // backing fds it holds, as last counted (pin, reserve, unpin)
  bool listed = false;  // open: in the LRU list
};

class HandleCache {
 public:
  // close_fds(db) closes every backing fd of db (and may drop state it can
  // rebuild); count_fds(db) counts them. Both are called with the cache mutex
  // held; close_fds only with db unpinned, so no operation of db runs meanwhile.
  HandleCache(size_t max_open, int64_t idle_ms, std::function<int64_t()> now_ms,
              std::function<void(Database&)> close_fds, std::function<int(Database&)> count_fds);

  void Pin(CacheEntry& e);
  void Unpin(CacheEntry& e);
  // e's database (pinned) is about to open one more backing fd: counts it and
  // closes least recently used unpinned databases until the budget holds it.
  // Never waits. REQUIRES: no Database or File lock held (close_fds takes them).
  void Reserve(CacheEntry& e);
  // Drops e from the list without closing (the database is being deleted).
  void Forget(CacheEntry& e);
  // Closes databases idle for idle_ms or more. Returns how many.
  size_t Sweep();
  // After EMFILE/ENFILE: close the least recently used unpinned database, if any.
  bool EvictOne();

  size_t open() const { return open_.load(std::memory_order_relaxed); }
  bool IsListed(CacheEntry& e) {
    std::lock_guard lock(mu_);
    return e.listed;
  }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  size_t max_open() const { return max_open_; }
  size_t fds() const { return fds_.load(std::memory_order_relaxed); }

 private:
  void Unlink(CacheEntry& e);       // REQUIRES: mu_ held, e listed
  void PushFront(CacheEntry& e);    // REQUIRES: mu_ held, e not listed
  bool EvictLocked(CacheEntry& e);  // REQUIRES: mu_ held
  // Recounts e's fds (plus `extra` about to be opened) into fds_. REQUIRES: mu_ held, e listed.
  void RecountLocked(CacheEntry& e, uint32_t extra);
  // Closes least recently used unpinned databases while over budget. REQUIRES: mu_ held.
  void EnforceLocked();

  const size_t max_open_;
  const int64_t idle_ms_;
  const std::function<int64_t()> now_ms_;
  const std::function<void(Database&)> close_fds_;
  const std::function<int(Database&)> count_fds_;
  std::mutex mu_;  // before Database/File/Capture locks taken by close_fds
  CacheEntry head_;  // sentinel: head_.next is the most recently used
  std::atomic<size_t> open_{0};
  std::atomic<size_t> fds_{0};  // sum of listed entries' fds
  std::atomic<uint64_t> evictions_{0};
};

// Pins a database for the duration of one operation.
class CacheUse {
 public:
  CacheUse(HandleCache& cache, CacheEntry& e) : cache_(cache), e_(e) { cache_.Pin(e_); }
  ~CacheUse() { cache_.Unpin(e_); }
  CacheUse(const CacheUse&) = delete;
  CacheUse& operator=(const CacheUse&) = delete;

 private:
  HandleCache& cache_;
  CacheEntry& e_;
};

}  // namespace tenancy

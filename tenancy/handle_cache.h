// HandleCache: bounds the backing files tenantfs keeps open.
//
// A database is "open" while any of its backing fds are (its files, its log).
// Applications' file handles are logical (tenancy::File users) and survive
// eviction: the next operation reopens what it needs by path. The budget,
// `max_open`, counts backing fds (one per open file, one per log segment being
// written): a WAL database in use holds three or four, a rollback one one or
// two. It also bounds the databases open at once. A sweep closes databases idle
// for `idle_ms`.
//
// The bound is strict. An operation pins its database for its duration
// (CacheUse), so nothing is closed under it; locks apps hold live on kernel
// inodes and are unaffected. A pinned database may open more fds at any moment
// (its -wal, -shm, a log segment), and making it wait for room could deadlock
// (the room may be held by the very operation that waits), so pinning reserves
// the most a database can hold, kFdsPerPinnedDb, up front. Pinning a database
// nobody has pinned is admission: it waits while the reservations of the
// databases already pinned leave no room for one more (at most
// max(1, max_open / kFdsPerPinnedDb) databases are pinned at once), then closes
// least recently used unpinned databases until the reservation fits. Waiting is
// safe because nothing that holds a pin waits for anything a waiter holds: pins
// are taken holding no lock and no other pin, and an operation's further pins of
// its own database pass at once. When the last pin goes, the database counts what
// it really holds. Below kFdsPerPinnedDb the budget admits one database at a
// time, which may hold up to kFdsPerPinnedDb fds.
//
// A waiter that finds no room for kAdmitWaitMs proceeds over budget and says so
// in the log (a safety valve against a bug in that reasoning, counted in
// overruns(); tests assert it stays 0).
//
// Not counted: the fd of a file unlinked while an app still has it open (it
// cannot be reopened, so it stays until the app's RELEASE, which FUSE delivers
// asynchronously after close).
//
// Thread safety: thread-safe. One mutex guards the LRU list; it is held for O(1)
// list work per operation, and while an evicted database's fds are closed.
#pragma once

#include <atomic>
#include <condition_variable>
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
  // Backing fds it is counted for: while pinned, its reservation (or more, if it
  // opened more); unpinned, what it holds as last counted.
  uint32_t fds = 0;
  bool listed = false;  // open: in the LRU list
};

class HandleCache {
 public:
  // The most backing fds one database can hold: main, -journal, -wal, -shm, the
  // log segment being appended, and one more opened for a moment (the log
  // directory, an older segment being read, an fd announced by Reserve).
  static constexpr uint32_t kFdsPerPinnedDb = 6;
  static constexpr int64_t kAdmitWaitMs = 10000;

  // close_fds(db) closes every backing fd of db (and may drop state it can
  // rebuild); count_fds(db) counts them. Both are called with the cache mutex
  // held; close_fds only with db unpinned, so no operation of db runs meanwhile.
  HandleCache(size_t max_open, int64_t idle_ms, std::function<int64_t()> now_ms,
              std::function<void(Database&)> close_fds, std::function<int(Database&)> count_fds);

  // Pins e's database; the first pin may wait for room (see above).
  // REQUIRES: no lock held and no other database pinned by this thread.
  void Pin(CacheEntry& e);
  void Unpin(CacheEntry& e);
  // e's database (pinned) is about to open one more backing fd. Its reservation
  // covers it; should it ever hold more, the excess is counted and least
  // recently used unpinned databases closed for it. Never waits.
  // REQUIRES: no Database or File lock held (close_fds takes them).
  void Reserve(CacheEntry& e);
  // Drops e from the list without closing (the database is being deleted).
  void Forget(CacheEntry& e);
  // Closes databases idle for idle_ms or more. Returns how many.
  size_t Sweep();
  // After EMFILE/ENFILE: close the least recently used unpinned database, if any.
  bool EvictOne();
  // Counts an open that failed with EMFILE/ENFILE.
  void NoteExhaustion() { exhaustions_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t exhaustions() const { return exhaustions_.load(std::memory_order_relaxed); }

  size_t open() const { return open_.load(std::memory_order_relaxed); }
  bool IsListed(CacheEntry& e) {
    std::lock_guard lock(mu_);
    return e.listed;
  }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  size_t max_open() const { return max_open_; }
  // Backing fds counted now: reservations of pinned databases plus what the
  // unpinned open ones hold. Within max_open unless max_open < kFdsPerPinnedDb
  // or an admission wait gave up (see above).
  size_t fds() const { return fds_.load(std::memory_order_relaxed); }
  // Databases pinned now, and the most that may be at once.
  size_t pinned() const { return pinned_dbs_.load(std::memory_order_relaxed); }
  size_t max_pinned() const { return max_pinned_; }
  // Pins that waited for room, and waits that gave up after kAdmitWaitMs.
  uint64_t admission_waits() const { return waits_.load(std::memory_order_relaxed); }
  uint64_t overruns() const { return overruns_.load(std::memory_order_relaxed); }

 private:
  void Unlink(CacheEntry& e);       // REQUIRES: mu_ held, e listed
  void PushFront(CacheEntry& e);    // REQUIRES: mu_ held, e not listed
  bool EvictLocked(CacheEntry& e);  // REQUIRES: mu_ held
  // Recounts e's fds (plus `extra` about to be opened; at least its reservation
  // while pinned) into fds_. REQUIRES: mu_ held, e listed.
  void RecountLocked(CacheEntry& e, uint32_t extra);
  // First pin of e: waits for room, then counts e's reservation. REQUIRES: mu_ held by lock.
  void AdmitLocked(CacheEntry& e, std::unique_lock<std::mutex>& lock);
  // Closes least recently used unpinned databases while over budget. REQUIRES: mu_ held.
  void EnforceLocked();

  const size_t max_open_;
  const size_t max_pinned_;
  const int64_t idle_ms_;
  const std::function<int64_t()> now_ms_;
  const std::function<void(Database&)> close_fds_;
  const std::function<int(Database&)> count_fds_;
  std::mutex mu_;  // before Database/File/Capture locks taken by close_fds
  std::condition_variable room_;  // a database was unpinned
  CacheEntry head_;  // sentinel: head_.next is the most recently used
  std::atomic<size_t> pinned_dbs_{0};  // written under mu_
  size_t waiting_ = 0;                 // guarded by mu_: pins waiting for room
  std::atomic<uint64_t> waits_{0};
  std::atomic<uint64_t> overruns_{0};
  std::atomic<uint64_t> exhaustions_{0};
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

// SmallMutex: a 4-byte mutex for objects there are many of (one per database,
// one per file), where std::mutex's 40 bytes would be most of an idle
// database's footprint.
//
// A futex-style lock on one 32-bit word (Drepper, "Futexes Are Tricky",
// mutex #2): 0 free, 1 locked, 2 locked with possible waiters. Uncontended
// lock and unlock are one atomic operation each; a contended lock sleeps in
// std::atomic::wait (a futex on Linux) and unlock wakes one sleeper only when
// the word said there might be one. Not fair, not recursive, no timed lock.
// Acquire on lock, release (seq_cst) on unlock, so TSan sees the ordering.
//
// Meets Lockable (std::lock_guard, std::unique_lock, std::scoped_lock). Not
// usable with std::condition_variable (use condition_variable_any).
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>

namespace tenancy {

class SmallMutex {
 public:
  SmallMutex() = default;
  SmallMutex(const SmallMutex&) = delete;
  SmallMutex& operator=(const SmallMutex&) = delete;

  void lock() {
    uint32_t c = kFree;
    if (word_.compare_exchange_strong(c, kLocked, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return;
    }
    LockContended(c);
  }

  bool try_lock() {
    uint32_t c = kFree;
    return word_.compare_exchange_strong(c, kLocked, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  }

  void unlock() {
    // seq_cst, not just release: libstdc++'s notify_one skips the futex wake
    // when its (seq_cst) waiter count reads zero, and a sleeper bumps that count
    // before re-reading the word; both sides sequentially consistent rule out
    // each missing the other. (On x86 the exchange is a full barrier anyway.)
    // Only the word's address is used after the release, not its memory, so the
    // next owner may destroy the mutex meanwhile.
    if (word_.exchange(kFree, std::memory_order_seq_cst) == kContended) word_.notify_one();
  }

 private:
  static constexpr uint32_t kFree = 0;
  static constexpr uint32_t kLocked = 1;
  static constexpr uint32_t kContended = 2;

  // c: the word as the failed fast path saw it (not kFree).
  void LockContended(uint32_t c) {
    // Mark the lock contended before sleeping, so the owner's unlock wakes us;
    // a lock taken this way stays marked (one spare wake-up at worst).
    if (c != kContended) c = word_.exchange(kContended, std::memory_order_acquire);
    while (c != kFree) {
      word_.wait(kContended, std::memory_order_relaxed);
      c = word_.exchange(kContended, std::memory_order_acquire);
    }
  }

  std::atomic<uint32_t> word_{kFree};
};

static_assert(sizeof(SmallMutex) == 4);

}  // namespace tenancy

#include "replication/apply_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include "tenancy/file_io.h"

namespace replication {
namespace {

using tenancy::PreadFull;
using tenancy::PwriteFull;
using tenancy::Result;
using tenancy::ShortRead;
using tenancy::Status;
using Clock = std::chrono::steady_clock;

// Lock bytes on the database file (SQLite os.h: PENDING_BYTE, RESERVED_BYTE, SHARED_FIRST,
// SHARED_SIZE; os_unix.c unixLock takes them with fcntl on the database fd).
constexpr off_t kPendingByte = 0x40000000;
constexpr off_t kReservedByte = kPendingByte + 1;
constexpr off_t kSharedFirst = kPendingByte + 2;
constexpr off_t kSharedSize = 510;

// -shm layout (wal.c: WalIndexHdr, WalCkptInfo, WALINDEX_LOCK_OFFSET; os_unix.c:
// UNIX_SHM_BASE = (22 + SQLITE_SHM_NLOCK) * 4 = 120, UNIX_SHM_DMS = 120 + 8). All fields
// are in the host's byte order.
constexpr off_t kShmLockFirst = 120;  // WRITE, CKPT, RECOVER, READ0..READ4
constexpr off_t kShmLockCount = 8;
constexpr off_t kShmDms = 128;
constexpr const char* kShmLockNames[kShmLockCount] = {
    "WAL_WRITE_LOCK",   "WAL_CKPT_LOCK",    "WAL_RECOVER_LOCK", "WAL_READ_LOCK(0)",
    "WAL_READ_LOCK(1)", "WAL_READ_LOCK(2)", "WAL_READ_LOCK(3)", "WAL_READ_LOCK(4)"};
constexpr size_t kHdrSize = 48;      // one WalIndexHdr copy; two at 0 and 48
constexpr size_t kHdrCksummed = 40;  // offsetof(WalIndexHdr, aCksum)
constexpr size_t kHdrIChange = 8;
constexpr size_t kHdrIsInit = 12;
constexpr size_t kHdrMxFrame = 16;
constexpr size_t kHdrNPage = 20;
constexpr size_t kHdrCksum = 40;
constexpr off_t kCkptNBackfill = 96;  // then aReadMark[5] at 100..119
constexpr off_t kCkptNBackfillAttempted = 128;
constexpr size_t kWalIndexHdrBytes = 136;  // WALINDEX_HDR_SIZE
constexpr uint32_t kWalIndexVersion = 3007000;
constexpr uint32_t kReadMarkNotUsed = 0xffffffff;

uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void Store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// SQLite's wal-index header checksum (walChecksumBytes with nativeCksum = 1, no seed) over
// the first 40 bytes of a header copy.
void HeaderChecksum(const uint8_t* hdr, uint32_t out[2]) {
  uint32_t s1 = 0, s2 = 0;
  for (size_t i = 0; i < kHdrCksummed; i += 8) {
    s1 += Load32(hdr + i) + s2;
    s2 += Load32(hdr + i + 4) + s1;
  }
  out[0] = s1;
  out[1] = s2;
}

bool HeaderValid(const uint8_t* hdr) {
  if (hdr[kHdrIsInit] == 0) return false;
  uint32_t c[2];
  HeaderChecksum(hdr, c);
  return c[0] == Load32(hdr + kHdrCksum) && c[1] == Load32(hdr + kHdrCksum + 4);
}

// One non-blocking OFD lock call; 0 or the errno. F_OFD_SETLKW is never used (see header).
int SetLock(int fd, short type, off_t start, off_t len) {
#ifdef TENANTFS_APPLY_LOCK_SKIP_LOCKS_FOR_TEST
  // Test-only build (tests/replication): proves the locks are what keeps readers correct.
  if (type != F_UNLCK) return 0;
#endif
  struct flock fl;
  std::memset(&fl, 0, sizeof(fl));
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;  // 0 = to the end of the file and beyond
  for (int i = 0; i < 100; ++i) {
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
    if (errno != EINTR) return errno;
  }
  return EINTR;
}

void UnlockAll(int fd) {
  if (fd >= 0) SetLock(fd, F_UNLCK, 0, 0);
}

void CloseFd(int& fd) {
  if (fd >= 0) {
    UnlockAll(fd);
    close(fd);
    fd = -1;
  }
}

// "write-locked by pid 123" for the first lock that conflicts with (type, start, len), or "".
std::string Holder(int fd, short type, off_t start, off_t len) {
  struct flock fl;
  std::memset(&fl, 0, sizeof(fl));
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type == F_UNLCK) return "";
  std::string s = fl.l_type == F_WRLCK ? "write-locked" : "read-locked";
  // Classic POSIX locks (SQLite's) report their pid; OFD locks report -1.
  s += fl.l_pid > 0 ? " by pid " + std::to_string(fl.l_pid) : " by another open file";
  return s;
}

struct Wait {
  Clock::time_point deadline;
  std::chrono::milliseconds timeout;
};

Status TimedOut(const Wait& w, const std::string& what) {
  if (w.timeout.count() <= 0) return Status::Unavailable(what + " (one try, timeout 0)");
  return Status::DeadlineExceeded(what + " (gave up after " + std::to_string(w.timeout.count()) +
                                  " ms)");
}

// Takes (type, start, len) on fd, polling with short sleeps until w.deadline. `give_up`,
// if set, is asked between tries; when it says yes, returns Ok with *gave_up = true and
// without the lock. `describe` names the lock and its holder for the timeout error.
Status LockWithin(int fd, short type, off_t start, off_t len, const Wait& w,
                  const std::function<std::string()>& describe,
                  const std::function<bool()>& give_up = nullptr, bool* gave_up = nullptr) {
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    int err = SetLock(fd, type, start, len);
    if (err == 0) return Status::Ok();
    if (err != EAGAIN && err != EACCES) return Status::FromErrno(err, "fcntl " + describe());
    if (give_up && give_up()) {
      *gave_up = true;
      return Status::Ok();
    }
    auto now = Clock::now();
    if (now >= w.deadline) return TimedOut(w, describe());
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, w.deadline - now));
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

std::function<std::string()> DbLockName(int fd, const std::string& path, const char* name,
                                        short type, off_t start, off_t len) {
  return [=] {
    std::string s = path + ": " + name;
    std::string h = Holder(fd, type, start, len);
    return h.empty() ? s + " is busy" : s + " is " + h;
  };
}

// Page 1 bytes 18/19 (file format write/read version): 2/2 means WAL. A file shorter than
// that is a new, empty database: rollback rules apply.
Result<bool> ReadIsWal(int fd, const std::string& path) {
  uint8_t v[2];
  size_t n = 0;
  Status st = PreadFull(fd, v, sizeof(v), 18, ShortRead::kCount, path, &n);
  if (!st.ok()) return st;
  return n == 2 && v[0] == 2 && v[1] == 2;
}

// SQLite's EXCLUSIVE: PENDING (no new SHARED), RESERVED, then the SHARED range written,
// which waits for the readers inside a transaction to leave.
Status LockExclusive(int db_fd, const std::string& path, const Wait& w,
                     const std::function<bool()>& give_up = nullptr, bool* gave_up = nullptr) {
  Status st = LockWithin(
      db_fd, F_WRLCK, kPendingByte, 1, w,
      DbLockName(db_fd, path, "PENDING lock (byte 0x40000000)", F_WRLCK, kPendingByte, 1), give_up,
      gave_up);
  if (!st.ok() || (gave_up && *gave_up)) return st;
  st = LockWithin(
      db_fd, F_WRLCK, kReservedByte, 1, w,
      DbLockName(db_fd, path, "RESERVED lock (byte 0x40000001)", F_WRLCK, kReservedByte, 1),
      give_up, gave_up);
  if (!st.ok() || (gave_up && *gave_up)) return st;
  return LockWithin(db_fd, F_WRLCK, kSharedFirst, kSharedSize, w,
                    DbLockName(db_fd, path,
                               "EXCLUSIVE lock (SHARED range 0x40000002..+510, a reader is "
                               "in a transaction)",
                               F_WRLCK, kSharedFirst, kSharedSize),
                    give_up, gave_up);
}

Result<int> OpenShm(const std::string& shm_path) {
  int fd = open(shm_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0) return fd;
  if (errno == ENOENT) return -1;
  return Status::FromErrno(errno, "open " + shm_path);
}

// What LockWal holds on -shm.
struct ShmHold {
  int fd = -1;         // -1: no -shm, the database file is held EXCLUSIVE instead
  bool gated = false;  // header copy 0 spoiled; `copy0` is what it was
  std::array<uint8_t, kHdrSize> copy0{};
};

// Locks -shm: DMS read (as every connection holds while it has -shm open: nobody truncates
// and re-initialises it under us), WRITE/CKPT/RECOVER written, then the gate, then
// READ0..READ4 written.
//
// The gate: while readers keep overlapping, some read mark (usually READ0) is always
// read-locked and a try-lock would starve forever. So, holding WRITE, we spoil the checksum
// of header copy 0: the two copies differ, which readers take for a header being written
// (walIndexTryHdr's dirty read): every new read transaction then finds it torn, wants
// WRITE to run recovery, finds RECOVER held and returns SQLITE_BUSY_RECOVERY to its busy
// handler (the WAL analogue of PENDING). A reader that read the header just before and is
// now taking its read mark re-compares copy 0 after locking (walTryBeginRead), sees it
// changed and retries into the same wall. Transactions already running finish and free
// their read marks. ResetWalIndex rewrites both copies; Release restores copy 0 if it was
// not called.
Status LockShm(ShmHold* hold, const std::string& shm_path, const Wait& w) {
  const int fd = hold->fd;
  Status st = LockWithin(fd, F_RDLCK, kShmDms, 1, w,
                         DbLockName(fd, shm_path, "DMS lock (byte 128)", F_RDLCK, kShmDms, 1));
  if (!st.ok()) return st;
  auto describe = [=](off_t first, off_t count) {
    return [=] {
      for (off_t i = first; i < first + count; ++i) {
        std::string h = Holder(fd, F_WRLCK, kShmLockFirst + i, 1);
        if (!h.empty()) {
          std::string s = shm_path + ": " + kShmLockNames[i] + " (byte " +
                          std::to_string(kShmLockFirst + i) + ") is " + h;
          if (i >= 3) s += " (a reader is in a read transaction)";
          return s;
        }
      }
      return shm_path + ": WAL locks (bytes 120..127) are busy";
    };
  };
  st = LockWithin(fd, F_WRLCK, kShmLockFirst, 3, w, describe(0, 3));
  if (!st.ok()) return st;
  uint8_t hdr[2 * kHdrSize];
  size_t n = 0;
  st = PreadFull(fd, hdr, sizeof(hdr), 0, ShortRead::kCount, shm_path, &n);
  if (!st.ok()) return st;
  // A header that is not initialised or already torn sends readers to recovery anyway.
  if (n == sizeof(hdr) && HeaderValid(hdr) && std::memcmp(hdr, hdr + kHdrSize, kHdrSize) == 0) {
    std::memcpy(hold->copy0.data(), hdr, kHdrSize);
    uint8_t spoiled[4];
    Store32(spoiled, ~Load32(hdr + kHdrCksum));
    st = PwriteFull(fd, spoiled, 4, kHdrCksum, shm_path);
    if (!st.ok()) return st;
    hold->gated = true;
  }
  st = LockWithin(fd, F_WRLCK, kShmLockFirst + 3, kShmLockCount - 3, w, describe(3, 5));
  if (!st.ok() && hold->gated) {
    Status undo = PwriteFull(fd, hold->copy0.data(), kHdrSize, 0, shm_path);
    if (undo.ok()) hold->gated = false;
  }
  return st;
}

// WAL mode: the -shm locks, or EXCLUSIVE on the database file when there is no -shm.
Result<ShmHold> LockWal(int db_fd, const std::string& path, const Wait& w) {
  // A SHARED lock first, like every WAL connection: while we hold it nobody gets EXCLUSIVE,
  // so nobody checkpoints on close and unlinks -wal/-shm; whether -shm exists is then stable
  // except that a new connection may create it.
  Status st = LockWithin(db_fd, F_RDLCK, kSharedFirst, kSharedSize, w,
                         DbLockName(db_fd, path, "SHARED lock (range 0x40000002..+510)", F_RDLCK,
                                    kSharedFirst, kSharedSize));
  if (!st.ok()) return st;
  const std::string shm_path = path + "-shm";
  Result<int> shm = OpenShm(shm_path);
  if (!shm.ok()) return shm.status();
  if (*shm < 0) {
    // No -shm: no WAL reader. Shut new connections out (PENDING) and wait out any that got
    // in before; if one of them creates -shm meanwhile, lock that instead.
    int appeared = -1;
    Status open_error;
    auto shm_appeared = [&] {
      Result<int> r = OpenShm(shm_path);
      if (!r.ok()) {
        open_error = r.status();
        return true;
      }
      appeared = *r;
      return appeared >= 0;
    };
    bool gave_up = false;
    st = LockExclusive(db_fd, path, w, shm_appeared, &gave_up);
    if (!st.ok()) return st;
    if (!gave_up) return ShmHold{};
    if (!open_error.ok()) return open_error;
    // Back to plain SHARED: drop PENDING/RESERVED; the SHARED range is still read-locked
    // (a failed upgrade leaves the lock as it was).
    if (int err = SetLock(db_fd, F_UNLCK, kPendingByte, 2); err != 0) {
      close(appeared);
      return Status::FromErrno(err, "fcntl unlock PENDING/RESERVED on " + path);
    }
    shm = appeared;
  }
  ShmHold hold;
  hold.fd = *shm;
  st = LockShm(&hold, shm_path, w);
  if (!st.ok()) {
    CloseFd(hold.fd);
    return st;
  }
  return hold;
}

}  // namespace

ApplyLock::ApplyLock(std::string db_path, int db_fd)
    : db_path_(std::move(db_path)), db_fd_(db_fd) {}

ApplyLock::~ApplyLock() { Release(); }

Result<std::unique_ptr<ApplyLock>> ApplyLock::Acquire(const std::string& db_path,
                                                      std::chrono::milliseconds timeout) {
  const Wait w{Clock::now() + timeout, timeout};
  int fd = open(db_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + db_path);
  std::unique_ptr<ApplyLock> lock(new ApplyLock(db_path, fd));
  // The journal mode read before locking is confirmed under the locks (nobody can switch
  // it while we hold them); if it changed in between, lock again the other way.
  for (int attempt = 0; attempt < 100; ++attempt) {
    Result<bool> wal = ReadIsWal(fd, db_path);
    if (!wal.ok()) return wal.status();  // ~ApplyLock releases
    if (*wal) {
      Result<ShmHold> shm = LockWal(fd, db_path, w);
      if (!shm.ok()) return shm.status();
      lock->shm_fd_ = shm->fd;
      lock->gated_ = shm->gated;
      std::memcpy(lock->saved_hdr0_, shm->copy0.data(), kHdrSize);
    } else {
      Status st = LockExclusive(fd, db_path, w);
      if (!st.ok()) return st;
    }
    Result<bool> again = ReadIsWal(fd, db_path);
    if (!again.ok()) return again.status();
    if (*again == *wal) {
      lock->wal_ = *wal;
      return lock;
    }
    lock->RestoreHeader();
    CloseFd(lock->shm_fd_);
    UnlockAll(fd);
    if (Clock::now() >= w.deadline) break;
  }
  return TimedOut(w, db_path + ": the journal mode kept changing while locking");
}

tenancy::Status ApplyLock::ResetWalIndex(uint32_t db_pages) {
  if (db_fd_ < 0) return Status::FailedPrecondition("ResetWalIndex: " + db_path_ + " not held");
  if (!wal_) {
    return Status::FailedPrecondition("ResetWalIndex: " + db_path_ + " is not in WAL mode");
  }
  if (shm_fd_ < 0) return Status::Ok();  // no -shm: no reader has anything cached
  const std::string shm_path = db_path_ + "-shm";
  uint8_t buf[kWalIndexHdrBytes];
  size_t got = 0;
  Status st = PreadFull(shm_fd_, buf, sizeof(buf), 0, ShortRead::kCount, shm_path, &got);
  if (!st.ok()) return st;
  if (got < sizeof(buf)) return Status::Ok();  // never initialised
  // Start from a copy whose checksum holds (the gate spoiled copy 0; copy 1 is intact).
  const uint8_t* base = HeaderValid(buf)              ? buf
                        : HeaderValid(buf + kHdrSize) ? buf + kHdrSize
                                                      : nullptr;
  if (base == nullptr) return Status::Ok();  // isInit 0 or torn: recovery rebuilds it

  uint8_t hdr[kHdrSize];
  std::memcpy(hdr, base, kHdrSize);
  Store32(hdr + 0, kWalIndexVersion);
  Store32(hdr + kHdrIChange, Load32(hdr + kHdrIChange) + 1);
  hdr[kHdrIsInit] = 1;
  Store32(hdr + kHdrMxFrame, 0);
  Store32(hdr + kHdrNPage, db_pages);
  uint32_t c[2];
  HeaderChecksum(hdr, c);
  Store32(hdr + kHdrCksum, c[0]);
  Store32(hdr + kHdrCksum + 4, c[1]);

  // nBackfill and aReadMark[0..4] (96..119), then nBackfillAttempted (128); 120..127 are
  // the lock bytes and are never written.
  uint8_t ckpt[24];
  Store32(ckpt + 0, 0);  // nBackfill
  Store32(ckpt + 4, 0);  // aReadMark[0]: always 0
  Store32(ckpt + 8, 0);  // aReadMark[1]: 0 = "the database file alone", as walRestartHdr
  for (int i = 2; i < 5; ++i) Store32(ckpt + 4 + 4 * i, kReadMarkNotUsed);
  uint8_t attempted[4];
  Store32(attempted, 0);

  // Copy 1 before copy 0, as walIndexWriteHdr does (readers read 0 first, then 1).
  st = PwriteFull(shm_fd_, hdr, kHdrSize, kHdrSize, shm_path);
  if (st.ok()) st = PwriteFull(shm_fd_, hdr, kHdrSize, 0, shm_path);
  if (st.ok()) st = PwriteFull(shm_fd_, ckpt, sizeof(ckpt), kCkptNBackfill, shm_path);
  if (st.ok()) {
    st = PwriteFull(shm_fd_, attempted, sizeof(attempted), kCkptNBackfillAttempted, shm_path);
  }
  if (st.ok()) gated_ = false;  // the gate is gone: both copies are the new header
  return st;
}

void ApplyLock::RestoreHeader() {
  if (!gated_ || shm_fd_ < 0) return;
  // Best effort: if this fails, readers find the copies differ and run recovery, which
  // rebuilds the header from the (empty) WAL.
  PwriteFull(shm_fd_, saved_hdr0_, kHdrSize, 0, db_path_ + "-shm");
  gated_ = false;
}

void ApplyLock::Release() {
  RestoreHeader();
  CloseFd(shm_fd_);
  CloseFd(db_fd_);
}

}  // namespace replication

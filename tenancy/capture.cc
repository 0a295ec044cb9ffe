#include "tenancy/capture.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "metrics/log.h"
#include "tenancy/crc64.h"
#include "tenancy/file_io.h"

namespace tenancy {

namespace {

constexpr unsigned char kJournalMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
constexpr uint32_t kWalMagicLe = 0x377f0682;
constexpr uint32_t kWalMagicBe = 0x377f0683;
constexpr size_t kWalHeader = 32;
constexpr size_t kFrameHeader = 24;

uint32_t Be32(const void* p) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

// SQLite's page-size field: bytes 16..17 big-endian, 1 meaning 65536.
uint32_t HeaderPageSizeOf(const char* header) {
  uint32_t v = (uint32_t{static_cast<unsigned char>(header[16])} << 8) |
               static_cast<unsigned char>(header[17]);
  if (v == 1) return 65536;
  if (v < 512 || v > 32768 || (v & (v - 1)) != 0) return 0;
  return v;
}

// SQLite's WAL checksum over 8-byte chunks, continuing from s[0], s[1].
void WalChecksum(bool big_endian, const unsigned char* data, size_t n, uint32_t s[2]) {
  uint32_t s0 = s[0], s1 = s[1];
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint32_t a, b;
    if (big_endian) {
      a = Be32(data + i);
      b = Be32(data + i + 4);
    } else {
      std::memcpy(&a, data + i, 4);
      std::memcpy(&b, data + i + 4, 4);
    }
    s0 += a + s1;
    s1 += b + s0;
  }
  s[0] = s0;
  s[1] = s1;
}

// Reads n bytes at off of `kind`'s backing file; past EOF reads as zeros, like
// SQLite's short read. The path is derived, not stored, and this runs per page: it is
// built only for an error message.
Status ReadBacking(int fd, void* buf, size_t n, uint64_t off, const Capture::Owner& owner,
                   FileKind kind) {
  return PreadFull(fd, buf, n, off, ShortRead::kZeroFill,
                   [&owner, kind] { return owner.BackingPath(kind); });
}

std::string FormatHex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool AllZero(std::string_view d) {
  return std::all_of(d.begin(), d.end(), [](char c) { return c == 0; });
}

}  // namespace

// The loaded part of a capture: everything about the database beyond its
// position, rebuilt by Load() from the log tail and the files.
class Capture::State {
 public:
  explicit State(Capture& cap) : cap_(cap) {}

  Status Load();
  bool loaded() const { return loaded_; }
  // Nothing held here is needed to understand the next write (see Capture::Unload).
  bool Idle() const {
    return loaded_ && broken_.ok() && !journal_hot_ && !verify_pending_ && pre_crc_.empty() &&
           (!wal_active_ || wal_written_end_ <= FrameOffset(wal_next_frame_));
  }

  Status BeforeWrite(FileKind kind, off_t offset, std::string_view data);
  Status AfterWrite(FileKind kind, off_t offset, std::string_view data);
  Status BeforeTruncate(FileKind kind, off_t size);
  Status AfterTruncate(FileKind kind, off_t size);
  Status BeforeUnlink(FileKind kind);
  Status AfterUnlink(FileKind kind);
  Status AfterFsync(FileKind kind);
  Status SyncLog();
  Result<uint64_t> ComputeChecksum();
  Status ReadCommitted(uint32_t first, uint32_t max, std::vector<uint32_t>* pgnos,
                       std::string* images, uint32_t* next);
  Status ApplyRemote(const ChangeSet& cs);
  Status InstallSnapshot(const Position& pos, const std::function<Status(int fd)>& write_pages);
  Status PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size, std::vector<uint64_t>* crcs);

  Status broken_;
  std::unique_ptr<ChangeLog> log_;
  bool log_dirty_ = false;  // appended since the last successful sync
  bool journal_hot_ = false;

 private:
  struct WalPage {
    uint64_t crc;
    uint64_t frame;  // index of the frame holding the newest committed image
  };
  struct PreImage {
    uint64_t crc;
    bool present;  // false: the page did not exist before the transaction
  };
  struct Header {
    uint32_t page_size = 0;  // 0: no valid SQLite header (yet)
    uint32_t pages = 0;      // the database size SQLite would use
  };

  const Shared& shared() const { return cap_.shared_; }
  Owner& owner() const { return cap_.owner_; }

  Status Commit();                  // rollback-journal commit point
  Status CommitWal(uint64_t upto);  // frames [wal_next_frame_, upto] hold new commits
  Status TrackMainPages(off_t offset, size_t length);
  Status Emit(std::vector<uint32_t> pgnos, std::string pages, uint32_t new_pages,
              uint64_t new_checksum, uint32_t flags);
  Status WriteSnapshot(const char* why);
  Status VerifyOrRepair(const char* when);
  Status LoadWal();
  void ResetWal();
  Status Fail(Status s);
  void RecordCommitTime(std::chrono::steady_clock::time_point started);
  void Publish(bool notify = true);
  // The log segment's fd is about to be (re)opened: let the handle cache make room.
  void BeforeLogIo() {
    if (!log_->fd_open()) owner().ReserveFd();
  }
  Status BeforeAppend();

  Result<int> MainFd();
  Result<int> WalFd();
  Status ReadMainPage(uint32_t pgno, char* buf);
  Status ReadLogicalPage(uint32_t pgno, char* buf);
  Result<uint64_t> MainSize();
  Result<Header> ReadHeader();
  uint64_t FrameOffset(uint64_t frame) const { return 32 + frame * (24 + uint64_t{page_size_}); }

  Capture& cap_;
  bool loaded_ = false;

  uint32_t page_size_ = 0;  // 0 until the database has a header
  uint32_t pages_ = 0;      // committed size in pages
  uint64_t checksum_ = 1ull << 63;
  uint64_t txid_ = 0;
  uint64_t db_id_ = 0;

  // Rollback-journal transaction in progress.
  bool sync_seen_ = false;
  bool verify_pending_ = false;
  std::unordered_map<uint32_t, PreImage> pre_crc_;  // pages written since the tx began

  // WAL generation.
  bool wal_active_ = false;
  uint32_t wal_salt1_ = 0, wal_salt2_ = 0;
  uint64_t wal_next_frame_ = 0;
  uint64_t wal_written_end_ = 0;  // end of the bytes written in this WAL generation
  bool wal_big_endian_ = false;   // checksum byte order (the WAL magic's low bit)
  uint32_t wal_cks_[2] = {0, 0};  // checksum chain after the last committed frame
  std::unordered_map<uint32_t, WalPage> wal_pages_;
};

// ---- the light part: kept while the database is known ----

Capture::Capture(const Shared& shared, Owner& owner) : shared_(shared), owner_(owner) {}

Capture::~Capture() {
  if (state_ && shared_.stats) shared_.stats->loaded.fetch_sub(1, std::memory_order_relaxed);
  if (OldestTrimmable() != INT64_MAX && shared_.on_trimmable) shared_.on_trimmable(owner_, false);
}

std::string Capture::LogDir() const {
  return shared_.log_root + "/" + owner_.tenant_name() + "/" + owner_.name();
}

Position Capture::position() const {
  std::lock_guard lock(pos_mu_);
  return published_;
}

void Capture::Publish(const Position& p, bool notify) {
  {
    std::lock_guard lock(pos_mu_);
    published_ = p;
  }
  if (notify && shared_.on_position) shared_.on_position(owner_.tenant_name(), owner_.name());
}

void Capture::NoteLog(const ChangeLog& log) {
  int64_t bytes = static_cast<int64_t>(log.bytes());
  if (shared_.stats) shared_.stats->log_bytes.fetch_add(bytes - log_bytes_counted_);
  log_bytes_counted_ = bytes;
  int64_t oldest = log.OldestSegmentTime();
  int64_t before = oldest_trimmable_ms_.exchange(oldest, std::memory_order_relaxed);
  if ((before == INT64_MAX) != (oldest == INT64_MAX) && shared_.on_trimmable) {
    shared_.on_trimmable(owner_, oldest != INT64_MAX);
  }
  log_fd_open_.store(log.fd_open(), std::memory_order_relaxed);
}

Status Capture::Load() {
  if (!state_) {
    state_ = std::make_unique<State>(*this);
    if (shared_.stats) shared_.stats->loaded.fetch_add(1, std::memory_order_relaxed);
  }
  return state_->Load();
}

namespace {
// Operations whose hooks do nothing with an unloaded capture (see LoadFor).
bool NeedsNoState(FileKind kind, bool unlink) {
  return kind == FileKind::kShm || (unlink && kind == FileKind::kWal);
}
}  // namespace

Status Capture::LoadFor(FileKind kind, bool unlink) {
  if (!state_ && NeedsNoState(kind, unlink)) return Status::Ok();
  return Load();
}

bool Capture::loaded() const { return state_ && state_->loaded(); }

bool Capture::Unload() {
  if (!state_ || !state_->Idle()) return false;
  // Appends not yet synced stay pending: the next load, or Sync(), covers them.
  // (Still set from before a reload if nothing was appended or synced since: the
  // newest segment is the same one.)
  log_unsynced_ = log_unsynced_ || state_->log_dirty_;
  state_.reset();
  if (shared_.stats) shared_.stats->loaded.fetch_sub(1, std::memory_order_relaxed);
  log_fd_open_.store(false, std::memory_order_relaxed);
  return true;
}

Status Capture::broken() const { return state_ ? state_->broken_ : Status::Ok(); }

bool Capture::in_transaction() const { return state_ && state_->journal_hot_; }

ChangeLog* Capture::log() { return state_ ? state_->log_.get() : nullptr; }

namespace {
Status NotLoaded() { return Status::FailedPrecondition("capture not loaded"); }
// What a hook of an unloaded capture answers.
Status Unloaded(FileKind kind, bool unlink = false) {
  return NeedsNoState(kind, unlink) ? Status::Ok() : NotLoaded();
}
}  // namespace

Status Capture::BeforeWrite(FileKind kind, off_t offset, std::string_view data) {
  return state_ ? state_->BeforeWrite(kind, offset, data) : Unloaded(kind);
}
Status Capture::AfterWrite(FileKind kind, off_t offset, std::string_view data) {
  return state_ ? state_->AfterWrite(kind, offset, data) : Unloaded(kind);
}
Status Capture::BeforeTruncate(FileKind kind, off_t size) {
  return state_ ? state_->BeforeTruncate(kind, size) : Unloaded(kind);
}
Status Capture::AfterTruncate(FileKind kind, off_t size) {
  return state_ ? state_->AfterTruncate(kind, size) : Unloaded(kind);
}
Status Capture::BeforeUnlink(FileKind kind) {
  return state_ ? state_->BeforeUnlink(kind) : Unloaded(kind, /*unlink=*/true);
}
Status Capture::AfterUnlink(FileKind kind) {
  return state_ ? state_->AfterUnlink(kind) : Unloaded(kind, /*unlink=*/true);
}
Status Capture::AfterFsync(FileKind kind) {
  return state_ ? state_->AfterFsync(kind) : Unloaded(kind);
}
Result<uint64_t> Capture::ComputeChecksum() {
  if (!state_) return NotLoaded();
  return state_->ComputeChecksum();
}
Status Capture::ReadCommitted(uint32_t first, uint32_t max, std::vector<uint32_t>* pgnos,
                              std::string* images, uint32_t* next) {
  *next = 0;
  return state_ ? state_->ReadCommitted(first, max, pgnos, images, next) : NotLoaded();
}
Status Capture::PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size,
                         std::vector<uint64_t>* crcs) {
  return state_ ? state_->PageCrcs(first, max, page_size, crcs) : NotLoaded();
}
Status Capture::ApplyRemote(const ChangeSet& cs) {
  if (Status s = Load(); !s.ok()) return s;
  return state_->ApplyRemote(cs);
}
Status Capture::InstallSnapshot(const Position& pos,
                                const std::function<Status(int fd)>& write_pages) {
  if (Status s = Load(); !s.ok()) return s;
  return state_->InstallSnapshot(pos, write_pages);
}

Status Capture::Sync() {
  if (state_ && state_->log_) return state_->SyncLog();
  return SyncUnloaded();
}

Status Capture::SyncUnloaded() {
  if (!log_unsynced_) return Status::Ok();
  // Unsynced records are in the newest segment only: the log syncs a segment
  // before it starts the next one. Segment names are fixed-width hex TXIDs.
  const std::string dir = LogDir();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr && errno == ENOENT) {  // no log left to sync
    log_unsynced_ = false;
    return Status::Ok();
  }
  if (d == nullptr) return Status::FromErrno(errno, "opendir " + dir);
  std::string newest;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.size() == 20 && n.substr(16) == ".seg" && n > newest) newest = n;
  }
  ::closedir(d);
  if (!newest.empty()) {
    std::string path = dir + "/" + newest;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + path);
    int rc = ::fdatasync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Status::FromErrno(err, "fsync log " + path);
  }
  log_unsynced_ = false;
  return Status::Ok();
}

void Capture::CloseFds() {
  if (state_ && state_->log_) state_->log_->CloseActive();
  log_fd_open_.store(false, std::memory_order_relaxed);
}

template <typename Fn>
uint64_t Capture::OnLog(Fn fn) {
  if (state_ && state_->log_) {
    uint64_t n = fn(*state_->log_);
    NoteLog(*state_->log_);
    return n;
  }
  // Unloaded: nothing to trim unless the log had old segments when last seen.
  if (oldest_trimmable_ms_.load(std::memory_order_relaxed) == INT64_MAX) return 0;
  owner_.ReserveFd();
  auto log = ChangeLog::Open(LogDir(), shared_.log_options);
  if (!log.ok()) {
    LOG_WARN("retention: could not open change log",
             {{"dir", LogDir()}, {"error", log.status().ToString()}});
    return 0;
  }
  uint64_t n = fn(*log.value());
  NoteLog(*log.value());
  log_fd_open_.store(false, std::memory_order_relaxed);  // closed with the log, below
  return n;
}

uint64_t Capture::TrimByAge(int64_t now_ms, int64_t retention_ms) {
  return OnLog([&](ChangeLog& log) { return log.TrimByAge(now_ms, retention_ms); });
}

uint64_t Capture::TrimOldest() {
  return OnLog([](ChangeLog& log) { return log.TrimOldest(); });
}

// ---- the loaded part ----

void Capture::State::Publish(bool notify) {
  Position p;
  p.txid = txid_;
  p.checksum = checksum_;
  p.page_size = page_size_;
  p.pages = pages_;
  p.db_id = db_id_;
  p.timestamp_ms = log_ ? log_->tail().timestamp_ms : 0;
  cap_.Publish(p, notify);
}

Status Capture::State::Fail(Status s) {
  if (broken_.ok()) {
    broken_ = s;
    LOG_ERROR("capture failed; writes to this database are refused until restart",
              {{"tenant", owner().tenant_name()}, {"db", owner().name()}, {"error", s.ToString()}});
  }
  return s;
}

// Capture reads through the database's own backing fds (one fd per file for
// the whole daemon); never cached across calls, the handle cache may close them.
Result<int> Capture::State::MainFd() { return owner().FdOf(FileKind::kMain); }
Result<int> Capture::State::WalFd() { return owner().FdOf(FileKind::kWal); }

Result<uint64_t> Capture::State::MainSize() {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(fd.value(), &st) != 0) {
    int err = errno;
    return Status::FromErrno(err, "stat " + owner().BackingPath(FileKind::kMain));
  }
  return static_cast<uint64_t>(st.st_size);
}

Result<Capture::State::Header> Capture::State::ReadHeader() {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  auto size = MainSize();
  if (!size.ok()) return size.status();
  char header[100];
  Status s = ReadBacking(fd.value(), header, sizeof(header), 0, owner(), FileKind::kMain);
  if (!s.ok()) return s;
  Header h;
  if (size.value() < sizeof(header) || std::memcmp(header, "SQLite format 3", 16) != 0) return h;
  h.page_size = HeaderPageSizeOf(header);
  if (h.page_size == 0) return h;
  // SQLite's own rule: the in-header size counts when its version-valid-for
  // number matches the change counter; otherwise the file size does. (Rollback
  // mode may cut the file only after the commit point.)
  uint32_t in_header = Be32(header + 28);
  if (in_header != 0 && Be32(header + 24) == Be32(header + 92)) {
    h.pages = in_header;
  } else {
    h.pages = static_cast<uint32_t>(size.value() / h.page_size);
  }
  return h;
}

Status Capture::State::ReadMainPage(uint32_t pgno, char* buf) {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  return ReadBacking(fd.value(), buf, page_size_, uint64_t{pgno - 1} * page_size_, owner(),
                     FileKind::kMain);
}

Status Capture::State::ReadLogicalPage(uint32_t pgno, char* buf) {
  if (wal_active_) {
    auto it = wal_pages_.find(pgno);
    if (it != wal_pages_.end()) {
      auto fd = WalFd();
      if (!fd.ok()) return fd.status();
      return ReadBacking(fd.value(), buf, page_size_, FrameOffset(it->second.frame) + kFrameHeader,
                         owner(), FileKind::kWal);
    }
  }
  return ReadMainPage(pgno, buf);
}

void Capture::State::ResetWal() {
  wal_active_ = false;
  wal_next_frame_ = 0;
  wal_written_end_ = 0;
  wal_pages_.clear();
}

// Reads the WAL as SQLite's recovery would: frames whose salts and checksum
// chain are valid, up to the last commit frame.
Status Capture::State::LoadWal() {
  ResetWal();
  auto wal_fd = WalFd();
  if (!wal_fd.ok()) {
    return wal_fd.status().code() == Status::Code::kNotFound ? Status::Ok() : wal_fd.status();
  }
  int fd = wal_fd.value();
  unsigned char hdr[kWalHeader];
  Status s = ReadBacking(fd, hdr, kWalHeader, 0, owner(), FileKind::kWal);
  if (!s.ok()) return s;
  uint32_t magic = Be32(hdr);
  if (magic != kWalMagicLe && magic != kWalMagicBe) return Status::Ok();  // empty or garbage: unused
  bool big = magic == kWalMagicBe;
  uint32_t ps = Be32(hdr + 8);
  if (ps == 1) ps = 65536;
  uint32_t cks[2] = {0, 0};
  WalChecksum(big, hdr, 24, cks);
  if (cks[0] != Be32(hdr + 24) || cks[1] != Be32(hdr + 28)) return Status::Ok();
  wal_big_endian_ = big;
  wal_cks_[0] = cks[0];
  wal_cks_[1] = cks[1];
  if (page_size_ != 0 && ps != page_size_) return Status::Ok();
  page_size_ = ps;
  wal_active_ = true;
  wal_salt1_ = Be32(hdr + 16);
  wal_salt2_ = Be32(hdr + 20);
  std::vector<unsigned char> frame(kFrameHeader + ps);
  std::unordered_map<uint32_t, WalPage> pending;
  for (uint64_t i = 0;; ++i) {
    uint64_t off = FrameOffset(i);
    ssize_t n = ::pread(fd, frame.data(), frame.size(), static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(frame.size())) break;
    if (Be32(frame.data() + 8) != wal_salt1_ || Be32(frame.data() + 12) != wal_salt2_) break;
    WalChecksum(big, frame.data(), 8, cks);
    WalChecksum(big, frame.data() + kFrameHeader, ps, cks);
    if (cks[0] != Be32(frame.data() + 16) || cks[1] != Be32(frame.data() + 20)) break;
    uint32_t pgno = Be32(frame.data());
    pending[pgno] = WalPage{PageCrc(pgno, frame.data() + kFrameHeader, ps), i};
    uint32_t commit_pages = Be32(frame.data() + 4);
    if (commit_pages != 0) {
      wal_cks_[0] = cks[0];
      wal_cks_[1] = cks[1];
      for (auto& [p, wp] : pending) wal_pages_[p] = wp;
      pending.clear();
      for (auto it = wal_pages_.begin(); it != wal_pages_.end();) {
        it = it->first > commit_pages ? wal_pages_.erase(it) : std::next(it);
      }
      pages_ = commit_pages;
      wal_next_frame_ = i + 1;
    }
  }
  wal_written_end_ = FrameOffset(wal_next_frame_);
  return Status::Ok();
}

Status Capture::State::Load() {
  if (loaded_) return broken_;
  // The log keeps its active segment open: room first, when there is one to
  // open (a log never seen in this process is found out by opening it; the
  // main file's fd, opened next, makes room for both).
  if (cap_.log_bytes_counted_ > 0) owner().ReserveFd();
  auto log = ChangeLog::Open(cap_.LogDir(), shared().log_options);
  if (!log.ok()) return Fail(log.status());
  log_ = std::move(log.value());
  cap_.NoteLog(*log_);
  // Appends an unload left unsynced (cap_.log_unsynced_) stay so for now: this
  // log object does not know them, so SyncLog and the next append sync them.
  const Position& tail = log_->tail();
  const Position before = cap_.position();  // what the last load left, if any
  txid_ = tail.txid;
  checksum_ = tail.checksum;
  db_id_ = tail.db_id;
  if (db_id_ == 0) db_id_ = before.db_id;  // an empty log keeps its id across reloads
  if (db_id_ == 0) {
    std::random_device rd;
    db_id_ = (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(shared().now_ms());
    if (db_id_ == 0) db_id_ = 1;
  }

  auto header = ReadHeader();
  if (!header.ok()) return Fail(header.status());
  page_size_ = header->page_size;
  pages_ = header->pages;

  // A journal with SQLite's magic is hot: its transaction is still open (or
  // its writer died and the next opener will roll it back).
  {
    int jfd = ::open(owner().BackingPath(FileKind::kJournal).c_str(), O_RDONLY | O_CLOEXEC);
    if (jfd >= 0) {
      unsigned char magic[8] = {};
      journal_hot_ = ::pread(jfd, magic, 8, 0) == 8 && std::memcmp(magic, kJournalMagic, 8) == 0;
      ::close(jfd);
    }
  }
  Status s = LoadWal();
  if (!s.ok()) return Fail(s);
  loaded_ = true;

  if (txid_ == 0 && pages_ > 0) {
    // The file predates its log (created by an older build, or placed in the
    // data dir): one snapshot record makes the log replayable from empty.
    s = WriteSnapshot("database had no change log");
    if (!s.ok()) return Fail(s);
  } else if (shared().unclean_start && !cap_.verified_) {
    // Once per database and process: a reload after an unload finds what the
    // previous load (verified then) and the captured writes since left.
    if (journal_hot_) {
      verify_pending_ = true;  // after the hot journal is resolved
    } else {
      s = VerifyOrRepair("after unclean shutdown");
      if (!s.ok()) return Fail(s);
    }
  }
  if (!verify_pending_) cap_.verified_ = true;
  // Readers of the position hear of a load only when it tells them something new.
  Publish(/*notify=*/before.db_id == 0 || before.txid != txid_ || before.checksum != checksum_ ||
          before.db_id != db_id_ || before.pages != pages_ || before.page_size != page_size_);
  return Status::Ok();
}

Result<uint64_t> Capture::State::ComputeChecksum() {
  if (page_size_ == 0 || pages_ == 0) return uint64_t{kEmptyChecksum};
  uint64_t sum = 0;
  uint32_t lock = LockPage(page_size_);
  std::vector<char> buf(page_size_);
  for (uint32_t p = 1; p <= pages_; ++p) {
    if (p == lock) continue;
    if (wal_active_) {
      auto it = wal_pages_.find(p);
      if (it != wal_pages_.end()) {
        sum ^= it->second.crc;
        continue;
      }
    }
    Status s = ReadMainPage(p, buf.data());
    if (!s.ok()) return s;
    sum ^= PageCrc(p, buf.data(), page_size_);
  }
  return sum | kEmptyChecksum;
}

Status Capture::State::VerifyOrRepair(const char* when) {
  auto actual = ComputeChecksum();
  if (!actual.ok()) return actual.status();
  if (actual.value() == checksum_) return Status::Ok();
  LOG_WARN("database checksum differs from its change log; writing a snapshot record",
           {{"tenant", owner().tenant_name()}, {"db", owner().name()}, {"when", when}});
  if (shared().stats) shared().stats->repairs.fetch_add(1);
  return WriteSnapshot(when);
}

Status Capture::State::WriteSnapshot(const char* why) {
  std::vector<uint32_t> pgnos;
  std::string pages;
  uint32_t lock = page_size_ ? LockPage(page_size_) : 0;
  std::vector<char> buf(page_size_);
  uint64_t sum = 0;
  for (uint32_t p = 1; p <= pages_; ++p) {
    if (p == lock) continue;
    Status s = ReadLogicalPage(p, buf.data());
    if (!s.ok()) return s;
    sum ^= PageCrc(p, buf.data(), page_size_);
    pgnos.push_back(p);
    pages.append(buf.data(), page_size_);
  }
  // A new database's first commit is a snapshot too; only repairs are news.
  if (txid_ > 0) {
    LOG_INFO("snapshot record", {{"tenant", owner().tenant_name()},
                                 {"db", owner().name()},
                                 {"why", why},
                                 {"pages", std::to_string(pages_)}});
  }
  return Emit(std::move(pgnos), std::move(pages), pages_, sum | kEmptyChecksum, ChangeSet::kFlagSnapshot);
}

Status Capture::State::Emit(std::vector<uint32_t> pgnos, std::string pages, uint32_t new_pages,
                            uint64_t new_checksum, uint32_t flags) {
  ChangeSet cs;
  cs.db_id = db_id_;
  cs.tenant = owner().tenant_name();
  cs.db = owner().name();
  cs.min_txid = txid_ + 1;
  cs.max_txid = txid_ + 1;
  cs.page_size = page_size_;
  cs.commit_pages = new_pages;
  cs.timestamp_ms = shared().now_ms();
  cs.pre_checksum = checksum_;
  cs.post_checksum = new_checksum;
  cs.flags = flags;
  cs.pgnos = std::move(pgnos);
  cs.pages = std::move(pages);
  std::string encoded = EncodeChangeSet(cs);
  Position pos;
  pos.txid = cs.max_txid;
  pos.checksum = new_checksum;
  pos.page_size = page_size_;
  pos.pages = new_pages;
  pos.timestamp_ms = cs.timestamp_ms;
  pos.db_id = db_id_;
  if (Status s = BeforeAppend(); !s.ok()) return s;
  Status s = log_->Append(encoded, pos, cs.timestamp_ms);
  cap_.NoteLog(*log_);
  if (!s.ok()) return s;
  log_dirty_ = true;
  txid_ = cs.max_txid;
  checksum_ = new_checksum;
  pages_ = new_pages;
  if (shared().stats) shared().stats->commits.fetch_add(1);
  Publish();
  return Status::Ok();
}

// tenantfs_commit_duration_seconds: commit detected to change set appended
// (and synced when the client's transaction synced).
void Capture::State::RecordCommitTime(std::chrono::steady_clock::time_point started) {
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count();
  if (shared().stats) shared().stats->commit_nanos.fetch_add(static_cast<uint64_t>(nanos));
  if (shared().metrics) shared().metrics->ObserveCommit(static_cast<double>(nanos) * 1e-9);
}

Status Capture::State::TrackMainPages(off_t offset, size_t length) {
  if (length == 0) return Status::Ok();
  if (page_size_ == 0) {
    // No header yet: the file is empty (or garbage SQLite will overwrite). Every
    // page written is new; Commit learns the page size from what was written.
    return Status::Ok();
  }
  uint32_t first = static_cast<uint32_t>(offset / page_size_) + 1;
  uint32_t last = static_cast<uint32_t>((offset + static_cast<off_t>(length) - 1) / page_size_) + 1;
  std::vector<char> buf;
  for (uint32_t p = first; p <= last; ++p) {
    if (pre_crc_.count(p)) continue;
    if (p > pages_) {
      pre_crc_[p] = PreImage{0, false};
      continue;
    }
    buf.resize(page_size_);
    Status s = ReadMainPage(p, buf.data());
    if (!s.ok()) return s;
    pre_crc_[p] = PreImage{PageCrc(p, buf.data(), page_size_), true};
  }
  return Status::Ok();
}

Status Capture::State::Commit() {
  auto started = std::chrono::steady_clock::now();
  bool synced = sync_seen_;
  sync_seen_ = false;
  auto header = ReadHeader();
  if (!header.ok()) return header.status();
  if (header->page_size == 0) {  // still no valid header: nothing SQLite would read
    pre_crc_.clear();
    return Status::Ok();
  }
  Status s;
  if (verify_pending_) {
    // The first commit point after an unclean start resolves a hot journal left
    // by a client that died: the pre-images read at its first writes were the
    // half-written pages, not the committed ones, so no incremental change set
    // can be trusted. Compare the whole database with the log instead.
    verify_pending_ = false;
    pre_crc_.clear();
    page_size_ = header->page_size;
    pages_ = header->pages;
    s = VerifyOrRepair("after hot journal");
    if (s.ok()) cap_.verified_ = true;
    if (s.ok() && synced) s = SyncLog();
    return s;
  }
  if (page_size_ != header->page_size) {
    // New database, or VACUUM changed the page size: the whole file is new.
    bool had_pages = page_size_ != 0 && pages_ > 0;
    page_size_ = header->page_size;
    pages_ = header->pages;
    pre_crc_.clear();
    if (had_pages || txid_ > 0 || pages_ > 0) s = WriteSnapshot("page size set");
  } else {
    uint32_t new_pages = header->pages;
    uint32_t lock = LockPage(page_size_);
    // Pages that appeared without being written (a size extension) count too.
    for (uint32_t p = pages_ + 1; p <= new_pages; ++p) pre_crc_.try_emplace(p, PreImage{0, false});
    // Pages cut off without being written leave the checksum with the bytes they
    // still have (SQLite may shorten the file only after the commit point).
    std::vector<char> cut(page_size_);
    for (uint32_t p = new_pages + 1; p <= pages_; ++p) {
      if (pre_crc_.count(p)) continue;
      s = ReadMainPage(p, cut.data());
      if (!s.ok()) return s;
      pre_crc_[p] = PreImage{PageCrc(p, cut.data(), page_size_), true};
    }
    std::vector<uint32_t> touched;
    touched.reserve(pre_crc_.size());
    for (auto& [p, crc] : pre_crc_) touched.push_back(p);
    std::sort(touched.begin(), touched.end());
    uint64_t sum = checksum_;
    std::vector<uint32_t> pgnos;
    std::string pages;
    std::vector<char> buf(page_size_);
    for (uint32_t p : touched) {
      if (p == lock) continue;
      PreImage pre = pre_crc_[p];
      if (p > new_pages) {  // truncated away
        if (pre.present) sum ^= pre.crc;
        continue;
      }
      s = ReadMainPage(p, buf.data());
      if (!s.ok()) return s;
      uint64_t post = PageCrc(p, buf.data(), page_size_);
      if (pre.present && post == pre.crc) continue;  // unchanged bytes
      if (pre.present) sum ^= pre.crc;
      sum ^= post;
      pgnos.push_back(p);
      pages.append(buf.data(), page_size_);
    }
    pre_crc_.clear();
    if (!pgnos.empty() || new_pages != pages_) {
      s = Emit(std::move(pgnos), std::move(pages), new_pages, sum | kEmptyChecksum, 0);
    }
  }
  if (s.ok() && synced) s = SyncLog();
  if (s.ok() && shared().verify_each_commit) {
    auto actual = ComputeChecksum();
    if (actual.ok() && actual.value() != checksum_) {
      if (shared().stats) shared().stats->verify_failures.fetch_add(1);
      LOG_ERROR("verify: checksum mismatch after commit",
                {{"tenant", owner().tenant_name()}, {"db", owner().name()}});
    }
  }
  RecordCommitTime(started);
  return s;
}

Status Capture::State::CommitWal(uint64_t upto) {
  auto fd = WalFd();
  if (!fd.ok()) return fd.status();
  uint32_t lock = LockPage(page_size_);
  std::vector<char> frame(kFrameHeader + page_size_);
  std::vector<char> old(page_size_);
  // pgno -> frame of its newest image in the transaction being assembled.
  std::unordered_map<uint32_t, uint64_t> tx;
  // The frames count only as SQLite's recovery would count them: this
  // generation's salts and an unbroken checksum chain up to a commit frame. A
  // frame header can be whole in the file before its page is (SQLite writes the
  // header first, over bytes of an older, rolled-back or restarted frame), and a
  // spilled transaction writes frames with zeroed salts and checksums, fixing
  // them last; in both cases the chain does not check out yet and we wait.
  uint32_t cks[2] = {wal_cks_[0], wal_cks_[1]};
  for (uint64_t f = wal_next_frame_; f <= upto; ++f) {
    Status s = ReadBacking(fd.value(), frame.data(), frame.size(), FrameOffset(f), owner(),
                           FileKind::kWal);
    if (!s.ok()) return s;
    if (Be32(frame.data() + 8) != wal_salt1_ || Be32(frame.data() + 12) != wal_salt2_) {
      return Status::Ok();  // not (yet) a valid frame of this generation
    }
    const auto* bytes = reinterpret_cast<const unsigned char*>(frame.data());
    WalChecksum(wal_big_endian_, bytes, 8, cks);
    WalChecksum(wal_big_endian_, bytes + kFrameHeader, page_size_, cks);
    if (cks[0] != Be32(bytes + 16) || cks[1] != Be32(bytes + 20)) return Status::Ok();
    uint32_t pgno = Be32(frame.data());
    tx[pgno] = f;
    uint32_t commit_pages = Be32(frame.data() + 4);
    if (commit_pages == 0) continue;

    // One committed transaction: frames since the previous commit.
    auto started = std::chrono::steady_clock::now();
    std::vector<uint32_t> order;
    order.reserve(tx.size());
    for (auto& [p, fr] : tx) order.push_back(p);
    std::sort(order.begin(), order.end());
    uint64_t sum = checksum_;
    std::vector<uint32_t> pgnos;
    std::string pages;
    std::unordered_map<uint32_t, WalPage> updates;
    for (uint32_t p : order) {
      if (p == lock || p > commit_pages) continue;
      // Pre-image CRC: newest committed image in this WAL, else the file, else none.
      PreImage pre{0, false};
      if (auto it = wal_pages_.find(p); it != wal_pages_.end()) {
        pre = PreImage{it->second.crc, true};
      } else if (p <= pages_) {
        s = ReadMainPage(p, old.data());
        if (!s.ok()) return s;
        pre = PreImage{PageCrc(p, old.data(), page_size_), true};
      }
      s = ReadBacking(fd.value(), old.data(), page_size_, FrameOffset(tx[p]) + kFrameHeader,
                      owner(), FileKind::kWal);
      if (!s.ok()) return s;
      uint64_t post = PageCrc(p, old.data(), page_size_);
      updates[p] = WalPage{post, tx[p]};
      if (pre.present && post == pre.crc) continue;
      if (pre.present) sum ^= pre.crc;
      sum ^= post;
      pgnos.push_back(p);
      pages.append(old.data(), page_size_);
    }
    // Pages cut off by a shrinking commit leave the checksum.
    for (uint32_t p = commit_pages + 1; p <= pages_; ++p) {
      if (p == lock) continue;
      if (auto it = wal_pages_.find(p); it != wal_pages_.end()) {
        sum ^= it->second.crc;
      } else {
        s = ReadMainPage(p, old.data());
        if (!s.ok()) return s;
        sum ^= PageCrc(p, old.data(), page_size_);
      }
    }
    for (auto& [p, wp] : updates) wal_pages_[p] = wp;
    for (auto it = wal_pages_.begin(); it != wal_pages_.end();) {
      it = it->first > commit_pages ? wal_pages_.erase(it) : std::next(it);
    }
    tx.clear();
    if (!pgnos.empty() || commit_pages != pages_) {
      s = Emit(std::move(pgnos), std::move(pages), commit_pages, sum | kEmptyChecksum, 0);
      if (!s.ok()) return s;
    }
    wal_next_frame_ = f + 1;
    wal_cks_[0] = cks[0];
    wal_cks_[1] = cks[1];
    if (shared().verify_each_commit) {
      auto actual = ComputeChecksum();
      if (actual.ok() && actual.value() != checksum_) {
        if (shared().stats) shared().stats->verify_failures.fetch_add(1);
        LOG_ERROR("verify: checksum mismatch after WAL commit",
                  {{"tenant", owner().tenant_name()}, {"db", owner().name()}});
      }
    }
    RecordCommitTime(started);
  }
  return Status::Ok();
}

Status Capture::State::BeforeWrite(FileKind kind, off_t offset, std::string_view data) {
  if (!broken_.ok()) return broken_;
  Status s;
  switch (kind) {
    case FileKind::kMain:
      // In WAL mode the main file only receives checkpoints: copies of pages
      // already captured from the WAL.
      if (!wal_active_) s = TrackMainPages(offset, data.size());
      break;
    case FileKind::kJournal:
      // PERSIST commits by zeroing the journal header (SQLite writes 28 zero bytes).
      if (journal_hot_ && offset == 0 && data.size() >= 8 && AllZero(data.substr(0, 8))) {
        journal_hot_ = false;
        s = Commit();
      }
      break;
    default:
      break;
  }
  return s.ok() ? s : Fail(s);
}

Status Capture::State::AfterWrite(FileKind kind, off_t offset, std::string_view data) {
  if (!broken_.ok()) return broken_;
  Status s;
  if (kind == FileKind::kJournal) {
    if (offset == 0 && data.size() >= 8 && std::memcmp(data.data(), kJournalMagic, 8) == 0) {
      journal_hot_ = true;
    }
  } else if (kind == FileKind::kWal) {
    if (offset == 0 && data.size() >= kWalHeader) {
      // A new WAL generation: after a full checkpoint, so the main file holds
      // every committed page and the per-page CRCs start over.
      uint32_t magic = Be32(data.data());
      if (magic == kWalMagicLe || magic == kWalMagicBe) {
        uint32_t ps = Be32(data.data() + 8);
        if (ps == 1) ps = 65536;
        wal_pages_.clear();
        wal_next_frame_ = 0;
        wal_written_end_ = kWalHeader;
        wal_active_ = true;
        wal_salt1_ = Be32(data.data() + 16);
        wal_salt2_ = Be32(data.data() + 20);
        wal_big_endian_ = magic == kWalMagicBe;
        wal_cks_[0] = Be32(data.data() + 24);
        wal_cks_[1] = Be32(data.data() + 28);
        if (page_size_ == 0) page_size_ = ps;
      }
    }
    if (wal_active_ && page_size_ != 0) {
      uint64_t end = static_cast<uint64_t>(offset) + data.size();
      uint64_t frame_size = kFrameHeader + page_size_;
      wal_written_end_ = std::max(wal_written_end_, end);
      if (end > kWalHeader) {
        // The last frame this write touched. It commits once it is whole in the
        // file and its header carries a commit size and this generation's salts —
        // which may happen at the page write, or later: a transaction that spills
        // and then changes a spilled page writes its last frames with zero salts
        // and fixes their headers afterwards (SQLite's walRewriteChecksums).
        uint64_t frame = (end - 1 - kWalHeader) / frame_size;
        if (frame >= wal_next_frame_) {
          auto fd = WalFd();
          if (!fd.ok()) return Fail(fd.status());
          char hdr[kFrameHeader];
          // Whole means written in this generation: bytes left from an older one
          // (a restarted WAL is overwritten in place) do not count.
          if (wal_written_end_ >= FrameOffset(frame + 1)) {
            s = ReadBacking(fd.value(), hdr, kFrameHeader, FrameOffset(frame), owner(),
                            FileKind::kWal);
            if (s.ok() && Be32(hdr + 4) != 0 && Be32(hdr + 8) == wal_salt1_ &&
                Be32(hdr + 12) == wal_salt2_) {
              s = CommitWal(frame);
            }
          }
        }
      }
    }
  }
  return s.ok() ? s : Fail(s);
}

Status Capture::State::BeforeTruncate(FileKind kind, off_t size) {
  if (!broken_.ok()) return broken_;
  Status s;
  if (kind == FileKind::kMain && !wal_active_ && page_size_ != 0) {
    auto cur = MainSize();
    if (!cur.ok()) return Fail(cur.status());
    if (static_cast<uint64_t>(size) < cur.value()) {
      s = TrackMainPages(size, cur.value() - static_cast<uint64_t>(size));
    }
  } else if (kind == FileKind::kJournal && size == 0 && journal_hot_) {
    journal_hot_ = false;  // TRUNCATE mode's commit point
    s = Commit();
  }
  return s.ok() ? s : Fail(s);
}

Status Capture::State::AfterTruncate(FileKind kind, off_t size) {
  if (kind == FileKind::kWal && wal_active_ &&
      static_cast<uint64_t>(size) < FrameOffset(wal_next_frame_)) {
    ResetWal();  // checkpointed and cut: a later header starts a new generation
  }
  return broken_;
}

Status Capture::State::BeforeUnlink(FileKind kind) {
  if (!broken_.ok() && kind != FileKind::kMain) return broken_;
  Status s;
  if (kind == FileKind::kJournal && journal_hot_) {
    journal_hot_ = false;  // DELETE mode's commit point
    s = Commit();
  }
  return s.ok() ? s : Fail(s);
}

Status Capture::State::AfterUnlink(FileKind kind) {
  if (kind == FileKind::kWal) {
    ResetWal();
  } else if (kind == FileKind::kMain) {
    // The database is gone; so is its history.
    if (log_) {
      Status s = log_->Destroy();
      cap_.NoteLog(*log_);
      log_dirty_ = false;
      cap_.log_unsynced_ = false;
      if (!s.ok())
        LOG_WARN("could not remove change log", {{"dir", cap_.LogDir()}, {"error", s.ToString()}});
    }
    ResetWal();
    pre_crc_.clear();
    txid_ = 0;
    checksum_ = kEmptyChecksum;
    pages_ = 0;
    Publish();
  }
  return Status::Ok();
}

Status Capture::State::AfterFsync(FileKind kind) {
  if (!broken_.ok()) return broken_;
  Status s;
  if (kind == FileKind::kMain || kind == FileKind::kJournal) {
    sync_seen_ = true;
    // Without any journal (journal_mode=OFF or MEMORY) the db fsync is the only
    // commit marker we can see.
    if (kind == FileKind::kMain && !journal_hot_ && !wal_active_ && !pre_crc_.empty()) {
      s = Commit();
    }
  }
  // A client's fsync is where it expects durability: the change sets of what it
  // wrote become durable before its fsync returns.
  if (s.ok() && kind != FileKind::kShm) s = SyncLog();
  return s.ok() ? s : Fail(s);
}

Status Capture::State::SyncLog() {
  BeforeLogIo();
  Status s = log_->Sync();  // may reopen the segment
  cap_.NoteLog(*log_);
  if (!s.ok()) return s;
  log_dirty_ = false;
  return cap_.SyncUnloaded();  // what an unload left unsynced, if anything
}

Status Capture::State::BeforeAppend() {
  BeforeLogIo();
  // Records an unload left unsynced sit in the newest segment. This append may
  // start a new segment, and the log syncs the old one first only for appends it
  // made itself: sync them now, so nothing newer can reach the disk before them.
  return cap_.SyncUnloaded();
}

// ---- Replication ----

Status Capture::State::ReadCommitted(uint32_t first, uint32_t max, std::vector<uint32_t>* pgnos,
                                     std::string* images, uint32_t* next) {
  *next = 0;
  if (!loaded_) return Status::FailedPrecondition("capture not loaded");
  if (journal_hot_) return Status::FailedPrecondition("a transaction is open");
  if (page_size_ == 0 || first == 0 || first > pages_) return Status::Ok();
  uint32_t lock = LockPage(page_size_);
  uint32_t last = first + std::min(max, pages_ - first + 1) - 1;
  std::vector<char> buf(page_size_);
  for (uint32_t p = first; p <= last; ++p) {
    if (p == lock) continue;
    Status s = ReadLogicalPage(p, buf.data());
    if (!s.ok()) return s;
    pgnos->push_back(p);
    images->append(buf.data(), page_size_);
  }
  *next = last < pages_ ? last + 1 : 0;
  return Status::Ok();
}

Status Capture::State::PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size,
                                std::vector<uint64_t>* crcs) {
  *page_size = page_size_;
  if (page_size_ == 0 || first == 0 || first > pages_) return Status::Ok();
  uint32_t last = first + std::min(max, pages_ - first + 1) - 1;
  uint32_t lock = LockPage(page_size_);
  std::vector<char> buf(page_size_);
  for (uint32_t p = first; p <= last; ++p) {
    if (p == lock) {
      crcs->push_back(0);
      continue;
    }
    Status s = ReadLogicalPage(p, buf.data());
    if (!s.ok()) return s;
    crcs->push_back(PageCrc(p, buf.data(), page_size_));
  }
  return Status::Ok();
}

Status Capture::State::ApplyRemote(const ChangeSet& cs) {
  const bool snapshot = (cs.flags & ChangeSet::kFlagSnapshot) != 0;
  const bool fresh = txid_ == 0 && pages_ == 0;
  if (!snapshot) {
    if (!fresh && cs.db_id != db_id_) {
      return Status::FailedPrecondition("change set of another incarnation of the database");
    }
    if (cs.min_txid != txid_ + 1) {
      return Status::FailedPrecondition("change set " + std::to_string(cs.min_txid) +
                                        " does not follow TXID " + std::to_string(txid_));
    }
    if (cs.pre_checksum != checksum_) {
      return Status::FailedPrecondition("change set " + std::to_string(cs.min_txid) +
                                        " starts from another checksum");
    }
  }
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  const bool same_size = page_size_ == cs.page_size && !snapshot;
  uint64_t sum = same_size ? (checksum_ & ~kEmptyChecksum) : 0;
  std::vector<char> old(cs.page_size);
  for (size_t i = 0; i < cs.pgnos.size(); ++i) {
    uint32_t p = cs.pgnos[i];
    const char* image = cs.pages.data() + i * size_t{cs.page_size};
    if (same_size && p <= pages_) {
      Status s = ReadMainPage(p, old.data());
      if (!s.ok()) return s;
      sum ^= PageCrc(p, old.data(), page_size_);
    }
    sum ^= PageCrc(p, image, cs.page_size);
    Status s = PwriteFull(fd.value(), image, cs.page_size, uint64_t{p - 1} * cs.page_size,
                          [this] { return owner().BackingPath(FileKind::kMain); });
    if (!s.ok()) return Fail(s);
  }
  if (same_size) {
    uint32_t lock = LockPage(page_size_);
    for (uint32_t p = cs.commit_pages + 1; p <= pages_; ++p) {  // dropped by the new size
      if (p == lock) continue;
      Status s = ReadMainPage(p, old.data());
      if (!s.ok()) return s;
      sum ^= PageCrc(p, old.data(), page_size_);
    }
  }
  if (::ftruncate(fd.value(), static_cast<off_t>(uint64_t{cs.commit_pages} * cs.page_size)) != 0) {
    return Fail(Status::FromErrno(errno, "truncate " + owner().BackingPath(FileKind::kMain)));
  }
  // No fsync per apply (a replica's writes are like synchronous=NORMAL): after a
  // power loss the unclean-start verification finds any database whose file and
  // log disagree, records its real checksum, and the primary re-syncs it. A
  // clean shutdown syncs everything (Sync).
  page_size_ = cs.page_size;
  pages_ = cs.commit_pages;
  if (!same_size) {
    auto full = ComputeChecksum();
    if (!full.ok()) return full.status();
    sum = full.value();
  }
  sum |= kEmptyChecksum;
  if (sum != cs.post_checksum) {
    checksum_ = sum;  // the primary sees the divergence and sends a snapshot
    Publish();
    return Status::DataLoss("after applying change set " + std::to_string(cs.max_txid) +
                            " the checksum is " + FormatHex(sum) + ", the primary's is " +
                            FormatHex(cs.post_checksum));
  }
  std::string encoded = EncodeChangeSet(cs);
  Position pos;
  pos.txid = cs.max_txid;
  pos.checksum = sum;
  pos.page_size = page_size_;
  pos.pages = pages_;
  pos.timestamp_ms = cs.timestamp_ms;
  pos.db_id = cs.db_id;
  if (Status s = BeforeAppend(); !s.ok()) return Fail(s);
  Status s = log_->Append(encoded, pos, shared().now_ms());
  cap_.NoteLog(*log_);
  if (!s.ok()) return Fail(s);
  log_dirty_ = true;
  txid_ = cs.max_txid;
  checksum_ = sum;
  db_id_ = cs.db_id;
  Publish();
  return Status::Ok();
}

Status Capture::State::InstallSnapshot(const Position& pos,
                                       const std::function<Status(int fd)>& write_pages) {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  if (Status s = write_pages(fd.value()); !s.ok()) return Fail(s);
  if (::ftruncate(fd.value(), static_cast<off_t>(uint64_t{pos.pages} * pos.page_size)) != 0) {
    return Fail(Status::FromErrno(errno, "truncate " + owner().BackingPath(FileKind::kMain)));
  }
  if (::fdatasync(fd.value()) != 0)
    return Fail(Status::FromErrno(errno, "sync " + owner().BackingPath(FileKind::kMain)));
  ResetWal();
  page_size_ = pos.page_size;
  pages_ = pos.pages;
  auto sum = ComputeChecksum();
  if (!sum.ok()) return sum.status();
  if (sum.value() != pos.checksum) {
    checksum_ = sum.value();
    Publish();
    return Status::DataLoss("snapshot at TXID " + std::to_string(pos.txid) + " has checksum " +
                            FormatHex(sum.value()) + ", the primary's is " + FormatHex(pos.checksum));
  }
  // A fresh history: one snapshot record at the primary's TXID.
  Status destroyed = log_->Destroy();
  cap_.NoteLog(*log_);
  log_dirty_ = false;
  cap_.log_unsynced_ = false;
  if (!destroyed.ok()) return Fail(destroyed);
  owner().ReserveFd();
  auto log = ChangeLog::Open(cap_.LogDir(), shared().log_options);
  if (!log.ok()) return Fail(log.status());
  log_ = std::move(log.value());
  cap_.NoteLog(*log_);
  txid_ = pos.txid - 1;
  checksum_ = kEmptyChecksum;
  db_id_ = pos.db_id;
  Status s = WriteSnapshot("snapshot from the primary");
  if (s.ok()) s = SyncLog();
  if (!s.ok()) return Fail(s);
  return Status::Ok();
}

}  // namespace tenancy

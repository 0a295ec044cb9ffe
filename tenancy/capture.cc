#include "tenancy/capture.h"

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

Status PreadFull(int fd, char* buf, size_t n, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + what);
    }
    if (r == 0) {
      std::memset(buf + done, 0, n - done);  // past EOF reads as zeros, like SQLite's short read
      return Status::Ok();
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
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

Capture::Capture(Env env) : env_(std::move(env)) {}

Capture::~Capture() = default;

Position Capture::position() const {
  std::lock_guard lock(pos_mu_);
  return published_;
}

void Capture::Publish() {
  Position p;
  p.txid = txid_;
  p.checksum = checksum_;
  p.page_size = page_size_;
  p.pages = pages_;
  p.db_id = db_id_;
  p.timestamp_ms = log_ ? log_->tail().timestamp_ms : 0;
  {
    std::lock_guard lock(pos_mu_);
    published_ = p;
  }
  if (env_.on_commit) env_.on_commit(p);
}

Status Capture::Fail(Status s) {
  if (broken_.ok()) {
    broken_ = s;
    LOG_ERROR("capture failed; writes to this database are refused until restart",
              {{"tenant", env_.tenant}, {"db", env_.db}, {"error", s.ToString()}});
  }
  return s;
}

// Capture reads through the database's own backing fds (one fd per file for
// the whole daemon); never cached across calls, the handle cache may close them.
Result<int> Capture::MainFd() { return env_.fd_of(FileKind::kMain); }
Result<int> Capture::WalFd() { return env_.fd_of(FileKind::kWal); }

Result<uint64_t> Capture::MainSize() {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(fd.value(), &st) != 0) return Status::FromErrno(errno, "stat " + env_.main_path);
  return static_cast<uint64_t>(st.st_size);
}

Result<Capture::Header> Capture::ReadHeader() {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  auto size = MainSize();
  if (!size.ok()) return size.status();
  char header[100];
  Status s = PreadFull(fd.value(), header, sizeof(header), 0, env_.main_path);
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

Status Capture::ReadMainPage(uint32_t pgno, char* buf) {
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  return PreadFull(fd.value(), buf, page_size_, uint64_t{pgno - 1} * page_size_, env_.main_path);
}

Status Capture::ReadLogicalPage(uint32_t pgno, char* buf) {
  if (wal_active_) {
    auto it = wal_pages_.find(pgno);
    if (it != wal_pages_.end()) {
      auto fd = WalFd();
      if (!fd.ok()) return fd.status();
      return PreadFull(fd.value(), buf, page_size_, FrameOffset(it->second.frame) + kFrameHeader,
                       env_.wal_path);
    }
  }
  return ReadMainPage(pgno, buf);
}

void Capture::ResetWal() {
  wal_active_ = false;
  wal_next_frame_ = 0;
  wal_written_end_ = 0;
  wal_pages_.clear();
}

// Reads the WAL as SQLite's recovery would: frames whose salts and checksum
// chain are valid, up to the last commit frame.
Status Capture::LoadWal() {
  ResetWal();
  auto wal_fd = WalFd();
  if (!wal_fd.ok()) {
    return wal_fd.status().code() == Status::Code::kNotFound ? Status::Ok() : wal_fd.status();
  }
  int fd = wal_fd.value();
  unsigned char hdr[kWalHeader];
  Status s = PreadFull(fd, reinterpret_cast<char*>(hdr), kWalHeader, 0, env_.wal_path);
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

Status Capture::Load() {
  if (loaded_) return broken_;
  auto log = ChangeLog::Open(env_.log_dir, env_.log_options);
  if (!log.ok()) return Fail(log.status());
  log_ = std::move(log.value());
  log_fd_open_.store(log_->fd_open(), std::memory_order_relaxed);
  if (env_.stats) env_.stats->log_bytes.fetch_add(static_cast<int64_t>(log_->bytes()));
  const Position& tail = log_->tail();
  txid_ = tail.txid;
  checksum_ = tail.checksum;
  db_id_ = tail.db_id;
  if (db_id_ == 0) {
    std::random_device rd;
    db_id_ = (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(env_.now_ms());
    if (db_id_ == 0) db_id_ = 1;
  }

  auto header = ReadHeader();
  if (!header.ok()) return Fail(header.status());
  page_size_ = header->page_size;
  pages_ = header->pages;

  // A journal with SQLite's magic is hot: its transaction is still open (or
  // its writer died and the next opener will roll it back).
  {
    int jfd = ::open(env_.journal_path.c_str(), O_RDONLY | O_CLOEXEC);
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
  } else if (env_.unclean_start) {
    if (journal_hot_) {
      verify_pending_ = true;  // after the hot journal is resolved
    } else {
      s = VerifyOrRepair("after unclean shutdown");
      if (!s.ok()) return Fail(s);
    }
  }
  Publish();
  return Status::Ok();
}

Result<uint64_t> Capture::ComputeChecksum() {
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

Status Capture::VerifyOrRepair(const char* when) {
  auto actual = ComputeChecksum();
  if (!actual.ok()) return actual.status();
  if (actual.value() == checksum_) return Status::Ok();
  LOG_WARN("database checksum differs from its change log; writing a snapshot record",
           {{"tenant", env_.tenant}, {"db", env_.db}, {"when", when}});
  if (env_.stats) env_.stats->repairs.fetch_add(1);
  return WriteSnapshot(when);
}

Status Capture::WriteSnapshot(const char* why) {
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
    LOG_INFO("snapshot record", {{"tenant", env_.tenant}, {"db", env_.db}, {"why", why},
                                 {"pages", std::to_string(pages_)}});
  }
  return Emit(std::move(pgnos), std::move(pages), pages_, sum | kEmptyChecksum, ChangeSet::kFlagSnapshot);
}

Status Capture::Emit(std::vector<uint32_t> pgnos, std::string pages, uint32_t new_pages,
                     uint64_t new_checksum, uint32_t flags) {
  ChangeSet cs;
  cs.db_id = db_id_;
  cs.tenant = env_.tenant;
  cs.db = env_.db;
  cs.min_txid = txid_ + 1;
  cs.max_txid = txid_ + 1;
  cs.page_size = page_size_;
  cs.commit_pages = new_pages;
  cs.timestamp_ms = env_.now_ms();
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
  Status s = log_->Append(encoded, pos, cs.timestamp_ms);
  log_fd_open_.store(log_->fd_open(), std::memory_order_relaxed);
  if (!s.ok()) return s;
  txid_ = cs.max_txid;
  checksum_ = new_checksum;
  pages_ = new_pages;
  if (env_.stats) {
    env_.stats->commits.fetch_add(1);
    env_.stats->log_bytes.fetch_add(static_cast<int64_t>(encoded.size() + 4));
  }
  Publish();
  return Status::Ok();
}

// tenantfs_commit_duration_seconds: commit detected to change set appended
// (and synced when the client's transaction synced).
void Capture::RecordCommitTime(std::chrono::steady_clock::time_point started) {
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count();
  if (env_.stats) env_.stats->commit_nanos.fetch_add(static_cast<uint64_t>(nanos));
  if (env_.metrics) env_.metrics->ObserveCommit(static_cast<double>(nanos) * 1e-9);
}

Status Capture::TrackMainPages(off_t offset, size_t length) {
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

Status Capture::Commit() {
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
  if (s.ok() && env_.verify_each_commit) {
    auto actual = ComputeChecksum();
    if (actual.ok() && actual.value() != checksum_) {
      if (env_.stats) env_.stats->verify_failures.fetch_add(1);
      LOG_ERROR("verify: checksum mismatch after commit", {{"tenant", env_.tenant}, {"db", env_.db}});
    }
  }
  RecordCommitTime(started);
  return s;
}

Status Capture::CommitWal(uint64_t upto) {
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
    Status s = PreadFull(fd.value(), frame.data(), frame.size(), FrameOffset(f), env_.wal_path);
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
      s = PreadFull(fd.value(), old.data(), page_size_, FrameOffset(tx[p]) + kFrameHeader, env_.wal_path);
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
    if (env_.verify_each_commit) {
      auto actual = ComputeChecksum();
      if (actual.ok() && actual.value() != checksum_) {
        if (env_.stats) env_.stats->verify_failures.fetch_add(1);
        LOG_ERROR("verify: checksum mismatch after WAL commit",
                  {{"tenant", env_.tenant}, {"db", env_.db}});
      }
    }
    RecordCommitTime(started);
  }
  return Status::Ok();
}

Status Capture::BeforeWrite(FileKind kind, off_t offset, std::string_view data) {
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

Status Capture::AfterWrite(FileKind kind, off_t offset, std::string_view data) {
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
            s = PreadFull(fd.value(), hdr, kFrameHeader, FrameOffset(frame), env_.wal_path);
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

Status Capture::BeforeTruncate(FileKind kind, off_t size) {
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

Status Capture::AfterTruncate(FileKind kind, off_t size) {
  if (kind == FileKind::kWal && wal_active_ &&
      static_cast<uint64_t>(size) < FrameOffset(wal_next_frame_)) {
    ResetWal();  // checkpointed and cut: a later header starts a new generation
  }
  return broken_;
}

Status Capture::BeforeUnlink(FileKind kind) {
  if (!broken_.ok() && kind != FileKind::kMain) return broken_;
  Status s;
  if (kind == FileKind::kJournal && journal_hot_) {
    journal_hot_ = false;  // DELETE mode's commit point
    s = Commit();
  }
  return s.ok() ? s : Fail(s);
}

Status Capture::AfterUnlink(FileKind kind) {
  if (kind == FileKind::kWal) {
    ResetWal();
  } else if (kind == FileKind::kMain) {
    // The database is gone; so is its history.
    if (log_) {
      if (env_.stats) env_.stats->log_bytes.fetch_sub(static_cast<int64_t>(log_->bytes()));
      Status s = log_->Destroy();
      log_fd_open_.store(false, std::memory_order_relaxed);
      if (!s.ok()) LOG_WARN("could not remove change log", {{"dir", env_.log_dir}, {"error", s.ToString()}});
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

Status Capture::AfterFsync(FileKind kind) {
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

Status Capture::Sync() { return log_ ? SyncLog() : Status::Ok(); }

Status Capture::SyncLog() {
  Status s = log_->Sync();  // may reopen the segment
  log_fd_open_.store(log_->fd_open(), std::memory_order_relaxed);
  return s;
}

void Capture::CloseFds() {
  if (log_) log_->CloseActive();
  log_fd_open_.store(false, std::memory_order_relaxed);
}

bool Capture::log_fd_open() const { return log_fd_open_.load(std::memory_order_relaxed); }

uint64_t Capture::TrimByAge(int64_t now_ms, int64_t retention_ms) {
  if (!log_) return 0;
  uint64_t freed = log_->TrimByAge(now_ms, retention_ms);
  if (env_.stats) env_.stats->log_bytes.fetch_sub(static_cast<int64_t>(freed));
  return freed;
}

uint64_t Capture::TrimOldest() {
  if (!log_) return 0;
  uint64_t freed = log_->TrimOldest();
  if (env_.stats) env_.stats->log_bytes.fetch_sub(static_cast<int64_t>(freed));
  return freed;
}

int64_t Capture::OldestTrimmable() const { return log_ ? log_->OldestSegmentTime() : INT64_MAX; }

// ---- Replication ----

Status Capture::ReadCommitted(uint32_t first, uint32_t max, std::vector<uint32_t>* pgnos,
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

Status Capture::PageCrcs(uint32_t first, uint32_t max, uint32_t* page_size,
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

Status Capture::ApplyRemote(const ChangeSet& cs) {
  if (Status s = Load(); !s.ok()) return s;
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
    off_t off = static_cast<off_t>(uint64_t{p - 1} * cs.page_size);
    size_t done = 0;
    while (done < cs.page_size) {
      ssize_t n = ::pwrite(fd.value(), image + done, cs.page_size - done, off + static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Fail(Status::FromErrno(errno, "write " + env_.main_path));
      }
      done += static_cast<size_t>(n);
    }
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
    return Fail(Status::FromErrno(errno, "truncate " + env_.main_path));
  }
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
  Status s = log_->Append(encoded, pos, env_.now_ms());
  log_fd_open_.store(log_->fd_open(), std::memory_order_relaxed);
  if (!s.ok()) return Fail(s);
  txid_ = cs.max_txid;
  checksum_ = sum;
  db_id_ = cs.db_id;
  if (env_.stats) env_.stats->log_bytes.fetch_add(static_cast<int64_t>(encoded.size() + 4));
  Publish();
  return Status::Ok();
}

Status Capture::InstallSnapshot(const Position& pos,
                                const std::function<Status(int fd)>& write_pages) {
  if (Status s = Load(); !s.ok()) return s;
  auto fd = MainFd();
  if (!fd.ok()) return fd.status();
  if (Status s = write_pages(fd.value()); !s.ok()) return Fail(s);
  if (::ftruncate(fd.value(), static_cast<off_t>(uint64_t{pos.pages} * pos.page_size)) != 0) {
    return Fail(Status::FromErrno(errno, "truncate " + env_.main_path));
  }
  if (::fdatasync(fd.value()) != 0) return Fail(Status::FromErrno(errno, "sync " + env_.main_path));
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
  if (env_.stats) env_.stats->log_bytes.fetch_sub(static_cast<int64_t>(log_->bytes()));
  if (Status s = log_->Destroy(); !s.ok()) return Fail(s);
  auto log = ChangeLog::Open(env_.log_dir, env_.log_options);
  if (!log.ok()) return Fail(log.status());
  log_ = std::move(log.value());
  txid_ = pos.txid - 1;
  checksum_ = kEmptyChecksum;
  db_id_ = pos.db_id;
  Status s = WriteSnapshot("snapshot from the primary");
  if (s.ok()) s = log_->Sync();
  if (!s.ok()) return Fail(s);
  return Status::Ok();
}

}  // namespace tenancy

#include "tenancy/changelog.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "tenancy/crc64.h"
#include "tenancy/file_io.h"

namespace tenancy {

namespace {

// Each record in a segment is framed as u32 little-endian length, then the
// encoded change set (which carries its own CRC-64 trailer).
constexpr size_t kFrameHeader = 4;
constexpr uint32_t kMaxRecord = 0xFFFFFFF0u;

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? Status::Ok() : Status::FromErrno(err, "fsync " + dir);
}

// A record's bytes: the file ending first means a truncated record, never zeros.
Status ReadFull(int fd, char* buf, size_t n, off_t off, const std::string& path) {
  size_t got = 0;
  Status s = PreadFull(fd, buf, n, static_cast<uint64_t>(off), ShortRead::kCount, path, &got);
  if (s.ok() && got < n) return Status::InvalidArgument(path + ": truncated record");
  return s;
}

uint32_t LoadLe32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // x86-64 and every Debian target we build for are little-endian
}

Position PositionOf(const ChangeSet& cs) {
  Position p;
  p.txid = cs.max_txid;
  p.checksum = cs.post_checksum;
  p.page_size = cs.page_size;
  p.pages = cs.commit_pages;
  p.timestamp_ms = cs.timestamp_ms;
  p.db_id = cs.db_id;
  return p;
}

// How a segment scan ended.
enum class ScanEnd {
  kClean,    // every byte belongs to a valid record
  kTornTail, // the last record is incomplete or invalid and nothing follows it:
             // an append cut short by a crash, or one in progress right now
  kCorrupt,  // an invalid record with more bytes after it: damage, never a torn write
};

// Reads the records of one segment in order. fn(offset, record) returns false to stop.
Status ScanSegment(const std::string& path,
                   const std::function<bool(uint64_t, Result<ChangeSet>&&)>& fn,
                   uint64_t* valid_end, ScanEnd* how, std::string* why) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "stat " + path);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t off = 0;
  std::string buf;
  Status out;
  ScanEnd end = ScanEnd::kClean;
  while (off < size) {
    if (off + kFrameHeader > size) {
      end = ScanEnd::kTornTail;
      break;
    }
    char hdr[kFrameHeader];
    out = ReadFull(fd, hdr, kFrameHeader, static_cast<off_t>(off), path);
    if (!out.ok()) break;
    uint32_t len = LoadLe32(hdr);
    if (len == 0 || len > kMaxRecord) {
      end = ScanEnd::kCorrupt;  // a frame length no append writes
      if (why) *why = "bad record length " + std::to_string(len);
      // Zeros to the end of file are what a crash during an append can leave.
      break;
    }
    if (off + kFrameHeader + len > size) {
      end = ScanEnd::kTornTail;
      break;
    }
    buf.resize(len);
    out = ReadFull(fd, buf.data(), len, static_cast<off_t>(off + kFrameHeader), path);
    if (!out.ok()) break;
    Result<ChangeSet> cs = DecodeChangeSet(buf);
    if (!cs.ok()) {
      bool last = off + kFrameHeader + len == size;
      end = last ? ScanEnd::kTornTail : ScanEnd::kCorrupt;
      if (why) *why = cs.status().ToString();
      break;
    }
    uint64_t at = off;
    off += kFrameHeader + len;
    if (!fn(at, std::move(cs))) break;
  }
  if (end == ScanEnd::kCorrupt) {
    // A run of zero bytes from here to the end is a torn append, not damage.
    std::string rest(size - off, '\0');
    if (ReadFull(fd, rest.data(), rest.size(), static_cast<off_t>(off), path).ok() &&
        rest.find_first_not_of('\0') == std::string::npos) {
      end = ScanEnd::kTornTail;
    }
  }
  ::close(fd);
  if (valid_end != nullptr) *valid_end = off;
  if (how != nullptr) *how = end;
  return out;
}

}  // namespace

Result<std::unique_ptr<ChangeLog>> ChangeLog::Open(const std::string& dir, const Options& options) {
  std::unique_ptr<ChangeLog> log(new ChangeLog(dir, options));
  Status s;
  if (!options.read_only) s = MakeDirs(dir);
  if (!s.ok()) return s;
  s = log->Recover();
  if (!s.ok()) return s;
  return log;
}

ChangeLog::~ChangeLog() {
  if (active_fd_ >= 0) ::close(active_fd_);
}

std::string ChangeLog::SegmentPath(uint64_t first_txid) const {
  char name[32];
  std::snprintf(name, sizeof(name), "/%016llx.seg", static_cast<unsigned long long>(first_txid));
  return dir_ + name;
}

Status ChangeLog::Recover() {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opendir " + dir_);
  std::vector<uint64_t> firsts;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() != 20 || n.substr(16) != ".seg") continue;
    char* end = nullptr;
    unsigned long long v = std::strtoull(n.c_str(), &end, 16);
    if (end != n.c_str() + 16) continue;
    firsts.push_back(v);
  }
  ::closedir(d);
  std::sort(firsts.begin(), firsts.end());
  segments_.clear();
  bytes_ = 0;
  for (uint64_t first : firsts) {
    struct stat st;
    std::string path = SegmentPath(first);
    if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
    Segment seg;
    seg.first_txid = first;
    seg.bytes = static_cast<uint64_t>(st.st_size);
    seg.last_ms = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
    segments_.push_back(seg);
    bytes_ += seg.bytes;
  }
  // The active segment is read in full: it gives the tail and cuts a torn record.
  while (!segments_.empty()) {
    Segment& seg = segments_.back();
    std::string path = SegmentPath(seg.first_txid);
    active_offsets_.clear();
    Position last;
    bool any = false;
    int64_t first_ms = 0;
    uint64_t valid_end = 0;
    ScanEnd how = ScanEnd::kClean;
    std::string why;
    Status s = ScanSegment(
        path,
        [&](uint64_t at, Result<ChangeSet>&& cs) {
          active_offsets_.push_back(at);
          if (!any) first_ms = cs->timestamp_ms;
          last = PositionOf(cs.value());
          any = true;
          return true;
        },
        &valid_end, &how, &why);
    if (!s.ok()) return s;
    if (how == ScanEnd::kCorrupt && !options_.read_only) {
      // Valid records may follow: cutting here would throw them away. Stop, loudly.
      // (A reader opens anyway; ForEach reports the damage where it reaches it.)
      return Status::InvalidArgument("change log " + path + " is corrupt at offset " +
                                     std::to_string(valid_end) + ": " + why);
    }
    if (valid_end < seg.bytes && !options_.read_only) {
      if (::truncate(path.c_str(), static_cast<off_t>(valid_end)) != 0) {
        return Status::FromErrno(errno, "truncate torn tail of " + path);
      }
      bytes_ -= seg.bytes - valid_end;
      seg.bytes = valid_end;
    }
    if (!any) {
      // An empty segment (crash right after rolling): remove it, look at the previous one.
      if (!options_.read_only) ::unlink(path.c_str());
      segments_.pop_back();
      continue;
    }
    seg.first_ms = first_ms;
    seg.last_ms = last.timestamp_ms;
    tail_ = last;
    if (options_.read_only) return Status::Ok();
    return OpenActive(false, seg.first_txid);
  }
  tail_ = Position();
  return Status::Ok();
}

Status ChangeLog::OpenActive(bool create, uint64_t first_txid) {
  if (active_fd_ >= 0) ::close(active_fd_);
  std::string path = SegmentPath(first_txid);
  int flags = O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
  active_fd_ = ::open(path.c_str(), flags, 0644);
  if (active_fd_ < 0) return Status::FromErrno(errno, "open " + path);
  return Status::Ok();
}

void ChangeLog::CloseActive() {
  if (active_fd_ >= 0) ::close(active_fd_);
  active_fd_ = -1;
}

Status ChangeLog::EnsureActive() {
  if (active_fd_ >= 0 || segments_.empty()) return Status::Ok();
  return OpenActive(false, segments_.back().first_txid);
}

Status ChangeLog::Append(const std::string& encoded, const Position& pos, int64_t now_ms) {
  if (encoded.size() > kMaxRecord) return Status::InvalidArgument("change set too large");
  uint64_t first_txid = tail_.txid + 1;
  bool roll = segments_.empty() ||
              segments_.back().bytes >= options_.segment_bytes ||
              (segments_.back().first_ms != 0 &&
               now_ms - segments_.back().first_ms >= options_.segment_age_ms);
  if (roll) {
    if (dirty_) {
      Status s = Sync();
      if (!s.ok()) return s;
    }
    Status s = OpenActive(true, first_txid);
    if (!s.ok()) return s;
    Segment seg;
    seg.first_txid = first_txid;
    seg.first_ms = now_ms;
    segments_.push_back(seg);
    active_offsets_.clear();
    s = SyncDir(dir_);
    if (!s.ok()) return s;
  }
  if (Status s = EnsureActive(); !s.ok()) return s;
  Segment& seg = segments_.back();
  uint32_t len = static_cast<uint32_t>(encoded.size());
  char hdr[kFrameHeader];
  std::memcpy(hdr, &len, 4);
  iovec iov[2] = {{hdr, kFrameHeader}, {const_cast<char*>(encoded.data()), encoded.size()}};
  size_t want = kFrameHeader + encoded.size();
  ssize_t n = ::writev(active_fd_, iov, 2);
  if (n != static_cast<ssize_t>(want)) {
    int err = n < 0 ? errno : ENOSPC;
    // Never leave a partial record behind: cut back to the last whole one.
    if (::ftruncate(active_fd_, static_cast<off_t>(seg.bytes)) != 0) {
      return Status::FromErrno(errno, "truncate after failed append to " + dir_);
    }
    return Status::FromErrno(err, "append to " + dir_);
  }
  active_offsets_.push_back(seg.bytes);
  seg.bytes += want;
  seg.last_ms = pos.timestamp_ms;
  bytes_ += want;
  tail_ = pos;
  dirty_ = true;
  return Status::Ok();
}

Status ChangeLog::Sync() {
  if (!dirty_ || segments_.empty()) return Status::Ok();
  if (Status s = EnsureActive(); !s.ok()) return s;
  if (::fdatasync(active_fd_) != 0) return Status::FromErrno(errno, "fsync log " + dir_);
  dirty_ = false;
  return Status::Ok();
}

Status ChangeLog::DropLast() {
  if (segments_.empty() || active_offsets_.empty()) return Status::NotFound("log is empty");
  if (Status s = EnsureActive(); !s.ok()) return s;
  Segment& seg = segments_.back();
  uint64_t cut = active_offsets_.back();
  if (::ftruncate(active_fd_, static_cast<off_t>(cut)) != 0) {
    return Status::FromErrno(errno, "truncate " + SegmentPath(seg.first_txid));
  }
  bytes_ -= seg.bytes - cut;
  seg.bytes = cut;
  active_offsets_.pop_back();
  dirty_ = true;
  Status s = Sync();
  if (!s.ok()) return s;
  if (::close(active_fd_) != 0) {
    // Nothing to do: the fd is gone either way.
  }
  active_fd_ = -1;
  // Re-read to find the new tail (possibly in the previous segment).
  return Recover();
}

Status ChangeLog::ForEach(uint64_t from_txid,
                          const std::function<bool(const ChangeSet&)>& fn) const {
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (i + 1 < segments_.size() && segments_[i + 1].first_txid <= from_txid) continue;
    bool stop = false;
    uint64_t end = 0;
    ScanEnd how = ScanEnd::kClean;
    std::string why;
    std::string path = SegmentPath(segments_[i].first_txid);
    Status s = ScanSegment(
        path,
        [&](uint64_t, Result<ChangeSet>&& cs) {
          if (cs->max_txid < from_txid) return true;
          if (!fn(cs.value())) {
            stop = true;
            return false;
          }
          return true;
        },
        &end, &how, &why);
    if (!s.ok()) return s;
    if (stop) return Status::Ok();
    // Only the newest segment may end in a record being appended right now.
    bool newest = i + 1 == segments_.size();
    if (how == ScanEnd::kCorrupt || (how == ScanEnd::kTornTail && !newest)) {
      return Status::InvalidArgument("change log " + path + ": corrupt record at offset " +
                                     std::to_string(end) + (why.empty() ? "" : ": " + why));
    }
  }
  return Status::Ok();
}

Status ChangeLog::ReadRaw(Cursor* cursor, uint64_t from_txid, size_t max_bytes,
                          const std::function<bool(std::string_view, const ChangeSetHeader&)>& fn) const {
  if (segments_.empty()) return Status::Ok();
  // The segment to start in, and where in it.
  size_t seg = 0;
  uint64_t off = 0;
  bool resume = false;
  if (cursor->next_txid == from_txid && from_txid != 0) {
    for (size_t i = 0; i < segments_.size(); ++i) {
      if (segments_[i].first_txid == cursor->segment) {
        seg = i;
        off = cursor->offset;
        resume = true;
        break;
      }
    }
  }
  if (!resume) {
    for (size_t i = 0; i < segments_.size(); ++i) {
      if (segments_[i].first_txid <= from_txid) seg = i;
    }
  }
  size_t passed = 0;
  for (; seg < segments_.size(); ++seg, off = 0) {
    const bool newest = seg + 1 == segments_.size();
    std::string path = SegmentPath(segments_[seg].first_txid);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + path);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "stat " + path);
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    Status out;
    bool stop = false;
    // Read ahead in blocks (one pread for many small records), then cut records
    // out of the block; a record reaching past the block is read whole.
    constexpr uint64_t kBlock = 1u << 20;
    std::string block;
    uint64_t block_off = off;
    auto view = [&](uint64_t at, uint64_t n, std::string_view* v) -> Status {
      if (at < block_off || at + n > block_off + block.size()) {
        block_off = at;
        block.resize(static_cast<size_t>(std::max<uint64_t>(n, std::min<uint64_t>(kBlock, size - at))));
        Status r = ReadFull(fd, block.data(), block.size(), static_cast<off_t>(at), path);
        if (!r.ok()) return r;
      }
      *v = std::string_view(block).substr(static_cast<size_t>(at - block_off), static_cast<size_t>(n));
      return Status::Ok();
    };
    while (off + kFrameHeader <= size) {
      std::string_view hdr;
      out = view(off, kFrameHeader, &hdr);
      if (!out.ok()) break;
      uint32_t len = LoadLe32(hdr.data());
      if (len == 0 || len > kMaxRecord || off + kFrameHeader + len > size) {
        if (!newest) out = Status::InvalidArgument("change log " + path + ": bad record at offset " + std::to_string(off));
        break;  // the newest segment: a torn tail (cut at the next open)
      }
      std::string_view rec;
      out = view(off + kFrameHeader, len, &rec);
      if (!out.ok()) break;
      auto h = PeekChangeSetHeader(rec);
      auto trailer = ChangeSetSizeFromTrailer(rec);
      if (!h.ok() || !trailer.ok() || trailer.value() != len || h->record_len != len) {
        if (!newest) out = Status::InvalidArgument("change log " + path + ": bad record at offset " + std::to_string(off));
        break;
      }
      off += kFrameHeader + len;
      if (h->max_txid < from_txid) continue;
      // The record's CRC (cheap: no decompression), so damage on disk is
      // reported here rather than forwarded.
      uint64_t stored;
      std::memcpy(&stored, rec.data() + len - 16, 8);
      if (Crc64(rec.data(), len - 16) != stored) {
        out = Status::DataLoss("change log " + path + ": record at offset " +
                               std::to_string(off - kFrameHeader - len) + " fails its CRC");
        break;
      }
      cursor->segment = segments_[seg].first_txid;
      cursor->offset = off;
      cursor->next_txid = h->max_txid + 1;
      passed += len;
      if (!fn(rec, h.value()) || passed >= max_bytes) {
        stop = true;
        break;
      }
    }
    ::close(fd);
    if (!out.ok()) return out;
    if (stop) return Status::Ok();
  }
  return Status::Ok();
}

uint64_t ChangeLog::first_txid() const {
  return segments_.empty() ? 0 : segments_.front().first_txid;
}

int64_t ChangeLog::OldestSegmentTime() const {
  return segments_.size() < 2 ? INT64_MAX : segments_.front().last_ms;
}

uint64_t ChangeLog::TrimOldest() {
  if (segments_.size() < 2) return 0;
  Segment seg = segments_.front();
  if (::unlink(SegmentPath(seg.first_txid).c_str()) != 0 && errno != ENOENT) return 0;
  segments_.erase(segments_.begin());
  bytes_ -= seg.bytes;
  return seg.bytes;
}

uint64_t ChangeLog::TrimByAge(int64_t now_ms, int64_t retention_ms) {
  uint64_t freed = 0;
  while (segments_.size() >= 2 && segments_.front().last_ms < now_ms - retention_ms) {
    uint64_t n = TrimOldest();
    if (n == 0) break;
    freed += n;
  }
  return freed;
}

Status ChangeLog::Destroy() {
  if (active_fd_ >= 0) ::close(active_fd_);
  active_fd_ = -1;
  for (const Segment& seg : segments_) ::unlink(SegmentPath(seg.first_txid).c_str());
  segments_.clear();
  bytes_ = 0;
  tail_ = Position();
  active_offsets_.clear();
  if (::rmdir(dir_.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "rmdir " + dir_);
  }
  return Status::Ok();
}

}  // namespace tenancy

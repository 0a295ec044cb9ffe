#include "tenancy/replay.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "tenancy/crc64.h"
#include "tenancy/file_io.h"

namespace tenancy {

namespace {

std::string Hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<std::unique_ptr<Replayer>> Replayer::Open(const std::string& path, uint64_t txid) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  std::unique_ptr<Replayer> r(new Replayer(path, fd));
  r->txid_ = txid;
  r->checksum_ = kEmptyChecksum;
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (st.st_size >= 100) {
    char header[100];
    Status s = PreadFull(fd, header, sizeof(header), 0, ShortRead::kZeroFill, path);
    if (!s.ok()) return s;
    uint32_t ps = (uint32_t{static_cast<unsigned char>(header[16])} << 8) |
                  static_cast<unsigned char>(header[17]);
    if (ps == 1) ps = 65536;
    if (!IsValidPageSize(ps)) return Status::InvalidArgument(path + ": not a SQLite database");
    r->page_size_ = ps;
    r->pages_ = static_cast<uint32_t>(st.st_size / ps);
    r->checksum_ = ChecksumFile(fd, ps, r->pages_, &s);
    if (!s.ok()) return s;
  }
  return r;
}

Replayer::~Replayer() {
  if (fd_ >= 0) ::close(fd_);
}

Status Replayer::Apply(const ChangeSet& cs) {
  bool snapshot = (cs.flags & ChangeSet::kFlagSnapshot) != 0;
  if (!snapshot && cs.min_txid != txid_ + 1) {
    return Status::InvalidArgument("change set " + std::to_string(cs.min_txid) + " does not follow TXID " +
                                   std::to_string(txid_));
  }
  if (cs.pre_checksum != checksum_) {
    return Status::InvalidArgument("change set " + std::to_string(cs.min_txid) + ": pre-apply checksum " +
                                   Hex(cs.pre_checksum) + " but the target is at " + Hex(checksum_));
  }
  if (page_size_ != 0 && page_size_ != cs.page_size && !snapshot) {
    return Status::InvalidArgument("change set " + std::to_string(cs.min_txid) + ": page size changed");
  }
  uint64_t sum = snapshot ? 0 : (checksum_ & ~kChecksumFlag);
  if (snapshot) page_size_ = cs.page_size;
  uint32_t ps = cs.page_size;
  uint32_t lock = LockPage(ps);
  std::vector<char> old(ps);
  for (size_t i = 0; i < cs.pgnos.size(); ++i) {
    uint32_t p = cs.pgnos[i];
    const char* image = cs.pages.data() + i * ps;
    if (!snapshot && p <= pages_) {
      Status s = PreadFull(fd_, old.data(), ps, uint64_t{p - 1} * ps, ShortRead::kZeroFill, path_);
      if (!s.ok()) return s;
      sum ^= PageCrc(p, old.data(), ps);
    }
    Status s = PwriteFull(fd_, image, ps, uint64_t{p - 1} * ps, path_);
    if (!s.ok()) return s;
    sum ^= PageCrc(p, image, ps);
  }
  if (!snapshot) {
    for (uint32_t p = cs.commit_pages + 1; p <= pages_; ++p) {  // pages cut off
      if (p == lock) continue;
      Status s = PreadFull(fd_, old.data(), ps, uint64_t{p - 1} * ps, ShortRead::kZeroFill, path_);
      if (!s.ok()) return s;
      sum ^= PageCrc(p, old.data(), ps);
    }
  }
  if (::ftruncate(fd_, static_cast<off_t>(uint64_t{cs.commit_pages} * ps)) != 0) {
    return Status::FromErrno(errno, "truncate " + path_);
  }
  page_size_ = ps;
  pages_ = cs.commit_pages;
  checksum_ = sum | kChecksumFlag;
  txid_ = cs.max_txid;
  if (checksum_ != cs.post_checksum) {
    return Status::InvalidArgument("change set " + std::to_string(cs.min_txid) + ": post-apply checksum " +
                                   Hex(checksum_) + " but the change set says " + Hex(cs.post_checksum));
  }
  return Status::Ok();
}

Status Replayer::Sync() {
  if (::fsync(fd_) != 0) return Status::FromErrno(errno, "fsync " + path_);
  return Status::Ok();
}

}  // namespace tenancy

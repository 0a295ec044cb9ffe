#include "tenancy/file_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tenancy {

Status PreadFull(int fd, void* buf, size_t n, uint64_t off, ShortRead how, ErrorName name,
                 size_t* got) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;  // before building the name, which may allocate
      return Status::FromErrno(err, "read " + name.str());
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  if (got != nullptr) *got = done;
  if (done < n) {
    switch (how) {
      case ShortRead::kZeroFill:
        std::memset(p + done, 0, n - done);
        break;
      case ShortRead::kDataLoss:
        return Status::DataLoss("short read of " + name.str());
      case ShortRead::kCount:
        break;
    }
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const void* buf, size_t n, uint64_t off, ErrorName name) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      // 0 for a non-empty write would loop forever; no regular file answers so.
      int err = w < 0 ? errno : EIO;
      return Status::FromErrno(err, "write " + name.str());
    }
    done += static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  std::string partial;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      partial.assign(path, 0, i);
      // EEXIST for a parent that is a file too: the mkdir below it says ENOTDIR.
      if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        int err = errno;
        return Status::FromErrno(err, "mkdir " + partial);
      }
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    return Status::FromErrno(err, "stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) return Status::NotDirectory(path + " is not a directory");
  return Status::Ok();
}

}  // namespace tenancy

#include "fuse/errno.h"

#include <cerrno>

namespace fuse {

int ToErrno(const tenancy::Status& status) {
  using Code = tenancy::Status::Code;
  switch (status.code()) {
    case Code::kOk:
      return 0;
    case Code::kNotFound:
      return ENOENT;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kNotSupported:
      return EPERM;
    case Code::kNotEmpty:
      return ENOTEMPTY;
    case Code::kReadOnly:
      return EROFS;
    case Code::kNoSpace:
      return ENOSPC;
    case Code::kIsDirectory:
      return EISDIR;
    case Code::kNotDirectory:
      return ENOTDIR;
    case Code::kFailedPrecondition:
    case Code::kDataLoss:
      return EIO;
    case Code::kUnavailable:
      return EAGAIN;
    case Code::kDeadlineExceeded:
      return ETIMEDOUT;
    case Code::kIOError:
      return status.os_errno() != 0 ? status.os_errno() : EIO;
  }
  return EIO;
}

}  // namespace fuse

#include "tenancy/status.h"

#include <cstring>

namespace tenancy {

Status Status::FromErrno(int err, std::string context) {
  std::string msg = context + ": " + std::strerror(err);
  switch (err) {
    case 0:
      return Status();
    case ENOENT:
      return Status(Code::kNotFound, std::move(msg), err);
    case EEXIST:
      return Status(Code::kAlreadyExists, std::move(msg), err);
    case EINVAL:
      return Status(Code::kInvalidArgument, std::move(msg), err);
    case EPERM:
      return Status(Code::kNotSupported, std::move(msg), err);
    case ENOTEMPTY:
      return Status(Code::kNotEmpty, std::move(msg), err);
    case EROFS:
      return Status(Code::kReadOnly, std::move(msg), err);
    case ENOSPC:
    case EDQUOT:
      return Status(Code::kNoSpace, std::move(msg), err);
    case EISDIR:
      return Status(Code::kIsDirectory, std::move(msg), err);
    case ENOTDIR:
      return Status(Code::kNotDirectory, std::move(msg), err);
    default:
      return Status(Code::kIOError, std::move(msg), err);
  }
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return msg_;
}

}  // namespace tenancy

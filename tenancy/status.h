// Status and Result<T>: the error values of the data path.
//
// The core never throws on the data path; it returns a Status. Adapters convert
// at their edge only: fuse/ maps a Status to an errno in one function,
// replication/ to an HTTP status or error_code. Thread safety: value types.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tenancy {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,         // ENOENT
    kAlreadyExists,    // EEXIST
    kInvalidArgument,  // EINVAL: bad name, bad input
    kNotSupported,     // EPERM: an operation the mount does not offer
    kNotEmpty,         // ENOTEMPTY
    kReadOnly,         // EROFS: replica, or a read-only file
    kNoSpace,          // ENOSPC: disk or quota full
    kIsDirectory,      // EISDIR
    kNotDirectory,     // ENOTDIR
    kIOError,          // any other OS error; os_errno() says which
    kFailedPrecondition,  // not in the state the operation needs (replication: a gap)
    kDataLoss,            // data does not match its checksum
    kUnavailable,         // a peer or resource is not reachable now; retry later
    kDeadlineExceeded,    // a wait timed out
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status AlreadyExists(std::string msg) {
    return Status(Code::kAlreadyExists, std::move(msg));
  }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status NotSupported(std::string msg) {
    return Status(Code::kNotSupported, std::move(msg));
  }
  static Status NotEmpty(std::string msg) { return Status(Code::kNotEmpty, std::move(msg)); }
  static Status ReadOnly(std::string msg) { return Status(Code::kReadOnly, std::move(msg)); }
  static Status NoSpace(std::string msg) { return Status(Code::kNoSpace, std::move(msg)); }
  static Status IsDirectory(std::string msg) { return Status(Code::kIsDirectory, std::move(msg)); }
  static Status NotDirectory(std::string msg) {
    return Status(Code::kNotDirectory, std::move(msg));
  }
  static Status FailedPrecondition(std::string msg) {
    return Status(Code::kFailedPrecondition, std::move(msg));
  }
  static Status DataLoss(std::string msg) { return Status(Code::kDataLoss, std::move(msg)); }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status DeadlineExceeded(std::string msg) {
    return Status(Code::kDeadlineExceeded, std::move(msg));
  }
  // From an OS error number: ENOENT, ENOSPC, ... map to their codes, the rest is kIOError.
  static Status FromErrno(int err, std::string context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The OS errno behind a kIOError (or the one the code stands for).
  int os_errno() const { return os_errno_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

 private:
  Status(Code code, std::string msg, int os_errno = 0)
      : code_(code), os_errno_(os_errno), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  int os_errno_ = 0;
  std::string msg_;
};

// A value or the Status saying why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tenancy

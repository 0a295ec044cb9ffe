// Whole-buffer file I/O: pread/pwrite loops and mkdir -p, written once.
//
// Every read and write here retries EINTR and continues after a partial transfer
// until all n bytes are done; what a read does at end of file is the caller's choice
// (ShortRead). Errors come back as a Status from Status::FromErrno whose message
// names the file: "read <name>: <strerror>", "write <name>: <strerror>",
// "mkdir <dir>: <strerror>".
//
// Thread safety: free functions with no state of their own; concurrent calls on one
// fd are as safe as concurrent pread/pwrite on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "tenancy/status.h"

namespace tenancy {

// The name of a file as errors should show it: a string the caller already has, or a
// callable returning std::string that runs only when an error is built, for hot paths
// whose paths are derived rather than stored (capture reads per page). Either way
// nothing is copied or allocated on success.
// A parameter type only: it refers to its argument and must not outlive the call.
class ErrorName {
 public:
  ErrorName(const std::string& name) : plain_(name) {}  // NOLINT: implicit by design
  ErrorName(const char* name) : plain_(name) {}         // NOLINT
  template <typename F>
    requires std::is_invocable_r_v<std::string, const F&>
  ErrorName(const F& make)  // NOLINT
      : make_ctx_(&make), make_([](const void* f) { return (*static_cast<const F*>(f))(); }) {}

  std::string str() const { return make_ != nullptr ? make_(make_ctx_) : std::string(plain_); }

 private:
  std::string_view plain_;
  const void* make_ctx_ = nullptr;
  std::string (*make_)(const void*) = nullptr;
};

// What PreadFull does when the file ends before n bytes.
enum class ShortRead {
  kZeroFill,  // the rest of buf is zeros and the read succeeds (SQLite's short read)
  kDataLoss,  // Status::DataLoss("short read of <name>"); buf's tail is unspecified
  kCount,     // the read succeeds; *got says how many bytes there were, the tail is untouched
};

// Reads n bytes of fd at offset off into buf, as `how` says at end of file.
// If got is not null it receives the number of bytes the file supplied (< n only at
// end of file, and never counting zero fill).
// REQUIRES: buf holds n bytes; got != nullptr when how == ShortRead::kCount.
// Errors: FromErrno(errno, "read <name>"); kDataLoss as above.
Status PreadFull(int fd, void* buf, size_t n, uint64_t off, ShortRead how, ErrorName name,
                 size_t* got = nullptr);

// Writes n bytes of buf to fd at offset off. A write that transfers nothing is EIO.
// Errors: FromErrno(errno, "write <name>").
Status PwriteFull(int fd, const void* buf, size_t n, uint64_t off, ErrorName name);

// mkdir -p with mode 0755: creates path and each missing parent; existing ones are fine.
// Errors: FromErrno(errno, "mkdir <the first one that failed>"), or NotDirectory when
// path exists but is not a directory.
Status MakeDirs(const std::string& path);

}  // namespace tenancy

// The one place where core Status values become errno for the kernel.
#pragma once

#include "tenancy/status.h"

namespace fuse {

// kNotFound->ENOENT, kInvalidArgument->EINVAL, kNotSupported->EPERM,
// kReadOnly->EROFS, kNoSpace->ENOSPC, kIOError->its os_errno (EIO if none), ...
int ToErrno(const tenancy::Status& status);

}  // namespace fuse

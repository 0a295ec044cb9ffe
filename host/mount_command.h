// `tenantfs mount`: runs a node in the foreground until SIGINT/SIGTERM.
#pragma once

#include "host/config.h"

namespace host {

// REQUIRES: config passed ValidateConfig. Returns the process exit status:
// 0 after a clean unmount, 2 for a problem with the configured dirs (mount dir
// already mounted, dirs that cannot be created), 1 for runtime failures.
int RunMount(const Config& config);

}  // namespace host

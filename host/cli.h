// The tenantfs command line (SPEC.md "Command line").
// Exit status: 0 success, 2 usage or config error, 1 runtime failure; the reason
// goes to stderr in one line naming the offending thing.
#pragma once

namespace host {

int Main(int argc, char** argv);

}  // namespace host

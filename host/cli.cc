#include "host/cli.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/client_commands.h"
#include "host/config.h"
#include "host/mount_command.h"
#include "host/replay_command.h"
#include "metrics/log.h"
#include "replication/sqlite_transfer.h"

#ifndef TENANTFS_VERSION
#define TENANTFS_VERSION "0.1.0"
#endif

namespace host {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

int UsageError(const std::string& reason) {
  std::fprintf(stderr, "tenantfs: %s\n", reason.c_str());
  return kExitUsage;
}

// Output the user asked for; a failed write (EPIPE, /dev/full) is a runtime error.
int PrintOut(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "tenantfs: writing to stdout: %s\n", std::strerror(errno));
    return kExitRuntime;
  }
  return kExitOk;
}

std::string Indent(const std::string& text, const std::string& prefix) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += prefix + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

std::string MainUsage() {
  return "tenantfs " TENANTFS_VERSION
         " - many tenant SQLite databases behind one FUSE mount.\n"
         "\n"
         "Usage: tenantfs <command> [options]\n"
         "\n"
         "Commands:\n"
         "  mount     mount the file system and run this node in the foreground\n"
         "  status    show a node's role, primary and databases with their positions\n"
         "  import    replace (or create) a database from a SQLite file\n"
         "  export    save a consistent snapshot of a database to a file\n"
         "  replay    rebuild a database file from its change log, verifying checksums\n"
         "  version   print the version\n"
         "  help      show this text; 'tenantfs help <command>' shows one command\n"
         "\n"
         "Run 'tenantfs <command> --help' for a command's options.\n"
         "\n"
         "Exit status: 0 success, 2 usage or config error, 1 runtime failure.\n";
}

std::string MountUsage() {
  const Config d;
  return "Usage: tenantfs mount [--config FILE] [--mount-dir DIR] [--data-dir DIR]\n"
         "                      [--http-addr HOST:PORT] [--print-default-config]\n"
         "\n"
         "Mounts the tenant file system and runs this node in the foreground until\n"
         "SIGINT or SIGTERM, which unmount cleanly once in-flight writes are durable.\n"
         "Each directory under the mount is a tenant, each file in it a SQLite database;\n"
         "the backing files live in the data dir, which must be outside the mount.\n"
         "\n"
         "Options (flags override the config file; '--flag value' or '--flag=value'):\n"
         "  --config FILE            YAML config file (default: none, built-in defaults)\n"
         "  --mount-dir DIR          mount point, overrides fuse.dir (default " +
         d.fuse_dir +
         ")\n"
         "  --data-dir DIR           backing files, overrides data.dir (default " +
         d.data_dir +
         ")\n"
         "  --http-addr HOST:PORT    listen address, overrides http.addr (default " +
         d.http_addr +
         ")\n"
         "  --print-default-config   print the default config file and exit\n"
         "  -h, --help               show this text\n"
         "\n"
         "An unknown key, a wrong type or an impossible combination in the config stops\n"
         "start-up with exit status 2 and a message naming the key.\n"
         "\n"
         "Config file keys, with their defaults:\n"
         "\n" +
         Indent(DefaultConfigYaml(), "  ");
}

std::string ReplayUsage() {
  return "Usage: tenantfs replay [--config FILE] [--data-dir DIR] [--base FILE --base-txid N]\n"
         "                       TENANT/DB OUT\n"
         "\n"
         "Rebuilds TENANT/DB into the file OUT from the change sets retained in the data\n"
         "dir, verifying each one's pre- and post-apply checksum. Without --base it starts\n"
         "from an empty database (the log must still hold TXID 1); with --base it copies\n"
         "FILE (a snapshot at TXID N, e.g. an export) and applies what follows it.\n"
         "Safe while the node runs: the log is only read. Prints the final position as\n"
         "the -pos file shows it; exit 1 if any change set fails to verify.\n"
         "\n"
         "Options:\n"
         "  --config FILE     take data.dir from this config\n"
         "  --data-dir DIR    the node's data dir (overrides the config)\n"
         "  --base FILE       start from this database file\n"
         "  --base-txid N     the TXID the base file is at (required with --base)\n";
}

// --url / --token / --config, shared by the client commands.
std::string ClientFlagsHelp() {
  return "Options:\n"
         "  --url URL        the node, http://HOST:PORT (default: the config's http.addr\n"
         "                   on 127.0.0.1, i.e. http://127.0.0.1:20202 without a config)\n"
         "  --token T        bearer token (default: the config's http.token)\n"
         "  --config FILE    the node's config file, for its URL and token\n"
         "  -h, --help       show this text\n"
         "\n"
         "Exit status: 0 success, 2 usage or config error, 1 runtime failure (cannot\n"
         "connect, an error from the node); the reason goes to stderr in one line.\n";
}

std::string StatusUsage() {
  return "Usage: tenantfs status [--url URL] [--token T] [--config FILE]\n"
         "\n"
         "Shows the node's id, role (primary or replica), its primary, and a table of\n"
         "its databases: TXID, checksum, size, whether the backing file is open and\n"
         "the journal mode. From GET /v1/info and GET /v1/dbs.\n"
         "\n" +
         ClientFlagsHelp();
}

std::string ImportUsage() {
  return "Usage: tenantfs import [--url URL] [--token T] [--config FILE] TENANT/DB FILE\n"
         "\n"
         "Replaces TENANT/DB on the primary with the SQLite database in FILE, or creates\n"
         "it (the tenant must exist). The node checks FILE (header, integrity_check)\n"
         "before touching anything, then writes it as one transaction; prints the new\n"
         "position. FILE is streamed (any size); progress shows on a terminal.\n"
         "\n" +
         ClientFlagsHelp();
}

std::string ExportUsage() {
  return "Usage: tenantfs export [--url URL] [--token T] [--config FILE] TENANT/DB FILE\n"
         "\n"
         "Saves a consistent snapshot of TENANT/DB (one committed state, taken while\n"
         "writers go on) to FILE: written to FILE.tmp, synced, then renamed. Progress\n"
         "shows on a terminal.\n"
         "\n" +
         ClientFlagsHelp();
}

std::string VersionUsage() {
  return "Usage: tenantfs version\n"
         "\n"
         "Prints \"tenantfs <version>\" and exits.\n";
}

bool IsHelpFlag(std::string_view arg) { return arg == "--help" || arg == "-h"; }

struct FlagSpec {
  std::string_view name;  // with the leading "--"
  bool takes_value;
};

struct ParsedFlag {
  std::string_view name;
  std::string value;
};

// Parses `args` against `specs`. Returns the usage error text (without the
// "tenantfs: " prefix), or nullopt. Sets *help when --help/-h is seen.
std::optional<std::string> ParseFlags(std::string_view command,
                                      const std::vector<std::string>& args,
                                      const std::vector<FlagSpec>& specs,
                                      std::vector<ParsedFlag>* out, bool* help,
                                      std::vector<std::string>* positional = nullptr) {
  const std::string where = std::string(command) + ": ";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (IsHelpFlag(arg)) {
      *help = true;
      return std::nullopt;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (positional == nullptr) return where + "unexpected argument '" + arg + "'";
      positional->push_back(arg);
      continue;
    }
    size_t eq = arg.find('=');
    std::string_view name = std::string_view(arg).substr(0, eq);
    const FlagSpec* spec = nullptr;
    for (const auto& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) return where + "unknown flag '" + std::string(name) + "'";
    ParsedFlag flag{spec->name, ""};
    if (!spec->takes_value) {
      if (eq != std::string::npos) return where + std::string(name) + " takes no value";
    } else if (eq != std::string::npos) {
      flag.value = arg.substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      flag.value = args[++i];
    } else {
      return where + std::string(name) + " needs a value";
    }
    if (spec->takes_value && flag.value.empty()) {
      return where + std::string(name) + " needs a non-empty value";
    }
    out->push_back(std::move(flag));
  }
  return std::nullopt;
}

int MountCommand(const std::vector<std::string>& args) {
  std::vector<ParsedFlag> flags;
  bool help = false;
  auto err = ParseFlags("mount", args,
                        {{"--config", true},
                         {"--mount-dir", true},
                         {"--data-dir", true},
                         {"--http-addr", true},
                         {"--print-default-config", false}},
                        &flags, &help);
  if (err) return UsageError(*err);
  if (help) return PrintOut(MountUsage());

  std::string config_path;
  Overrides overrides;
  bool print_default = false;
  for (const auto& f : flags) {  // a repeated flag: the last one wins
    if (f.name == "--config") config_path = f.value;
    if (f.name == "--mount-dir") overrides.mount_dir = f.value;
    if (f.name == "--data-dir") overrides.data_dir = f.value;
    if (f.name == "--http-addr") overrides.http_addr = f.value;
    if (f.name == "--print-default-config") print_default = true;
  }
  if (print_default) return PrintOut(DefaultConfigYaml());

  Config config;
  if (auto config_err = LoadConfig(config_path, overrides, &config)) {
    if (config_path.empty()) return UsageError(config_err->message);
    return UsageError("config " + config_path + ": " + config_err->message);
  }
  // ValidateConfig accepted both, so parsing cannot fail here.
  metrics::LogLevel level = metrics::LogLevel::kInfo;
  metrics::LogFormat format = metrics::LogFormat::kText;
  metrics::ParseLogLevel(config.log_level, &level);
  metrics::ParseLogFormat(config.log_format, &format);
  metrics::SetLogLevel(level);
  metrics::SetLogFormat(format);
  return RunMount(config);
}

int ReplayCmd(const std::vector<std::string>& args) {
  std::vector<ParsedFlag> flags;
  std::vector<std::string> positional;
  bool help = false;
  auto err = ParseFlags("replay", args,
                        {{"--config", true}, {"--data-dir", true}, {"--base", true},
                         {"--base-txid", true}},
                        &flags, &help, &positional);
  if (err) return UsageError(*err);
  if (help) return PrintOut(ReplayUsage());
  std::string config_path;
  Overrides overrides;
  ReplayOptions opts;
  bool have_txid = false;
  for (const auto& f : flags) {
    if (f.name == "--config") config_path = f.value;
    if (f.name == "--data-dir") overrides.data_dir = f.value;
    if (f.name == "--base") opts.base_file = f.value;
    if (f.name == "--base-txid") {
      char* end = nullptr;
      opts.base_txid = std::strtoull(f.value.c_str(), &end, 10);
      if (end == f.value.c_str() || *end != '\0') {
        return UsageError("replay: --base-txid: not a number '" + f.value + "'");
      }
      have_txid = true;
    }
  }
  if (!opts.base_file.empty() && !have_txid) return UsageError("replay: --base needs --base-txid");
  if (positional.size() != 2) return UsageError("replay: needs TENANT/DB and OUT (see --help)");
  auto slash = positional[0].find('/');
  if (slash == std::string::npos) {
    return UsageError("replay: '" + positional[0] + "' is not TENANT/DB");
  }
  opts.tenant = positional[0].substr(0, slash);
  opts.db = positional[0].substr(slash + 1);
  opts.out = positional[1];
  Config config;
  if (auto config_err = LoadConfig(config_path, overrides, &config)) {
    if (config_path.empty()) return UsageError(config_err->message);
    return UsageError("config " + config_path + ": " + config_err->message);
  }
  opts.data_dir = config.data_dir;
  return RunReplay(opts);
}

// status / import / export: flags, then the client.
int ClientCommand(const std::string& command, const std::vector<std::string>& args) {
  std::vector<ParsedFlag> flags;
  std::vector<std::string> positional;
  bool help = false;
  auto err = ParseFlags(command, args, {{"--url", true}, {"--token", true}, {"--config", true}},
                        &flags, &help, &positional);
  if (err) return UsageError(*err);
  if (help) {
    if (command == "status") return PrintOut(StatusUsage());
    if (command == "import") return PrintOut(ImportUsage());
    return PrintOut(ExportUsage());
  }
  std::string config_path;
  std::optional<std::string> url, token;
  for (const auto& f : flags) {
    if (f.name == "--config") config_path = f.value;
    if (f.name == "--url") url = f.value;
    if (f.name == "--token") token = f.value;
  }
  size_t want = command == "status" ? 0 : 2;
  if (positional.size() != want) {
    if (want == 0) return UsageError(command + ": unexpected argument '" + positional[0] + "'");
    return UsageError(command + ": needs TENANT/DB and FILE (see --help)");
  }
  ClientOptions options;
  if (!url || !token) {
    Config config;
    if (auto config_err = LoadConfig(config_path, Overrides{}, &config)) {
      if (config_path.empty()) return UsageError(config_err->message);
      return UsageError("config " + config_path + ": " + config_err->message);
    }
    options.url = DefaultUrl(config.http_addr);
    options.token = config.http_token;
  }
  if (url) options.url = *url;
  if (token) options.token = *token;
  if (command == "status") return RunStatus(options);
  if (command == "import") return RunImport(options, positional[0], positional[1]);
  return RunExport(options, positional[0], positional[1]);
}

int VersionCommand(const std::vector<std::string>& args) {
  if (!args.empty()) {
    if (IsHelpFlag(args[0])) return PrintOut(VersionUsage());
    if (args[0].rfind("-", 0) == 0) return UsageError("version: unknown flag '" + args[0] + "'");
    return UsageError("version: unexpected argument '" + args[0] + "'");
  }
  return PrintOut("tenantfs " TENANTFS_VERSION "\n");
}

int HelpCommand(const std::vector<std::string>& args) {
  if (args.empty() || IsHelpFlag(args[0])) return PrintOut(MainUsage());
  if (args.size() > 1) return UsageError("help: unexpected argument '" + args[1] + "'");
  if (args[0] == "mount") return PrintOut(MountUsage());
  if (args[0] == "version") return PrintOut(VersionUsage());
  if (args[0] == "replay") return PrintOut(ReplayUsage());
  if (args[0] == "status") return PrintOut(StatusUsage());
  if (args[0] == "import") return PrintOut(ImportUsage());
  if (args[0] == "export") return PrintOut(ExportUsage());
  if (args[0] == "help") return PrintOut(MainUsage());
  return UsageError("help: unknown command '" + args[0] + "' (run 'tenantfs help')");
}

int Dispatch(int argc, char** argv) {
  if (argc < 2) return UsageError("missing command (run 'tenantfs help')");
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "mount") return MountCommand(args);
  if (command == "version" || command == "--version") return VersionCommand(args);
  if (command == "replay") return ReplayCmd(args);
  // Not for users: the daemon runs its SQLite work on the mount in this helper.
  if (command == replication::kTransferCommand) return replication::TransferHelperMain(args);
  if (command == "status" || command == "import" || command == "export") {
    return ClientCommand(command, args);
  }
  if (command == "help" || IsHelpFlag(command)) return HelpCommand(args);
  // promote (SPEC.md) lands with replication; until then it is unknown like any other word.
  if (command.rfind("-", 0) == 0) {
    return UsageError("unknown flag '" + command + "' (run 'tenantfs help')");
  }
  return UsageError("unknown command '" + command + "' (run 'tenantfs help')");
}

}  // namespace

int Main(int argc, char** argv) {
  try {
    return Dispatch(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tenantfs: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "tenantfs: unexpected exception\n");
  }
  return kExitRuntime;
}

}  // namespace host

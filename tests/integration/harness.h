// Integration-test harness: child processes with captured output, per-test scratch
// directories, and a `tenantfs mount` daemon on a temp mount dir.
//
// Ownership: every process and mount a test starts is registered with a process-wide
// reaper. Teardown (or the watchdog, or a fatal signal in the test binary) kills those
// children and lazily unmounts those mounts, so a failed or hung test never leaves a
// stale mount or a stray daemon behind. Children also get PR_SET_PDEATHSIG(SIGKILL).
// Thread safety: spawn and wait from the test's main thread only (PDEATHSIG is tied to
// the forking thread); the registry itself is locked.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace it {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Paths of the binaries under test (set by CMake).
inline constexpr const char* kTenantfsBin = TENANTFS_BIN;
inline constexpr const char* kSqlClientBin = SQLCLIENT_BIN;
inline constexpr const char* kSqlite3ShellBin = SQLITE3_SHELL_BIN;
inline constexpr const char* kFusermount3Bin = FUSERMOUNT3_BIN;

inline constexpr const char* kJournalModes[] = {"delete", "truncate", "persist", "wal"};

// ---------------------------------------------------------------- files and strings

std::string ReadFile(const std::string& path);  // "" when missing
void WriteFile(const std::string& path, const std::string& text);
bool Exists(const std::string& path);
// lstat size, or -1 with errno kept.
long long FileSize(const std::string& path);
// Names in a directory, sorted, without "." and "..". nullopt (errno kept) on failure.
std::optional<std::vector<std::string>> ListDir(const std::string& path);
std::vector<std::string> SplitLines(const std::string& text);  // drops empty trailing line
std::string Trim(const std::string& s);
std::string Join(const std::vector<std::string>& v, const std::string& sep);
// Last `max_lines` lines of `text`, for assertion messages.
std::string Tail(const std::string& text, size_t max_lines = 60);
// A free TCP port on 127.0.0.1 (bind to 0, read back, close).
int FreePort();

// ---- HTTP over loopback (the node's API), plain sockets: no client library to trust.
struct HttpReply {
  bool ok = false;  // a complete status line came back
  int status = 0;
  std::string headers;
  std::string body;
  std::string raw;
};
// Sends `request` as is on a new connection to 127.0.0.1:port and reads until the
// server closes it (or 30 s pass); shut_write half-closes after sending.
HttpReply SendRaw(int port, const std::string& request, bool shut_write = false);
// GET target with "Connection: close".
HttpReply HttpGet(int port, const std::string& target);

// Errno name for messages: "EPERM (1)".
std::string ErrnoName(int err);

// ---------------------------------------------------------------- processes

struct Result {
  bool exited = false;     // exited normally (else signalled or timed out)
  int exit_code = -1;      // valid when exited
  int signal = 0;          // terminating signal, if any
  bool timed_out = false;  // the harness killed it at the deadline
  std::string out;
  std::string err;

  bool Ok() const { return exited && exit_code == 0; }
  // One block for assertion messages: argv, status, stdout tail, stderr tail.
  std::string Describe() const;
  std::string argv_text;
};

struct SpawnOptions {
  std::string stdin_path;                  // default /dev/null
  std::map<std::string, std::string> env;  // added to the inherited environment
  unsigned long fd_limit = 0;              // RLIMIT_NOFILE (soft and hard) of the child; 0: inherited
};

// A running child with stdout/stderr captured to files in the scratch dir.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();  // SIGKILLs and reaps a child still running

  pid_t pid() const { return pid_; }
  bool Running();  // reaps when it has exited
  // Waits up to `timeout`; at the deadline sends SIGKILL and marks timed_out.
  Result Wait(std::chrono::milliseconds timeout);
  void Signal(int sig);
  std::string Stdout() const;  // captured so far
  std::string Stderr() const;
  const std::string& argv_text() const { return argv_text_; }

 private:
  friend Child Spawn(const std::vector<std::string>&, const SpawnOptions&);
  void Reap(int status);
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string out_path_, err_path_, argv_text_;
};

// fork + execv. argv[0] is the program path. Capture files live in the current
// test's scratch dir (or /tmp when there is none).
Child Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});
// Spawn and wait, bounded.
Result Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 120s,
           const SpawnOptions& options = {});

// The SQLite client: Run({kSqlClientBin, args...}).
Result SqlClient(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 120s);
// `sqlclient exec DB SQL` (busy_timeout 10 s): rows '|'-separated, one per line.
Result Sql(const std::string& db, const std::string& sql, std::chrono::milliseconds timeout = 60s);
// The stdout of a successful Sql(), trimmed; records a test failure (with stderr) otherwise.
std::string SqlOk(const std::string& db, const std::string& sql);

// ---------------------------------------------------------------- mounts

// Entries of /proc/self/mountinfo whose mount point is `dir` (canonical path):
// their fstypes, e.g. {"fuse.tenantfs"}.
std::vector<std::string> MountTypesAt(const std::string& dir);
bool IsTenantfsMounted(const std::string& dir);
// Mount IDs (mountinfo field 1) of the fuse.tenantfs mounts at `dir`. A dead mount left
// by a killed daemon still reads as fuse.tenantfs; IDs are reused after an unmount.
std::vector<int> TenantfsMountIds(const std::string& dir);
// statfs(dir) answered from a FUSE file system within `timeout` (a dead FUSE mount
// fails with ENOTCONN; an unmounted dir answers with its own file system type).
bool AnswersStatfs(const std::string& dir, std::chrono::milliseconds timeout);
// umount2(MNT_DETACH), then `fusermount3 -u -z`, until no mount is left at `dir` (bounded).
// Returns true when nothing is mounted there afterwards.
bool LazyUnmount(const std::string& dir);

// ---------------------------------------------------------------- scratch

// mkdtemp("/tmp/tenantfs-it.XXXXXX") with mnt/, data/ and work/ inside. Removed at
// destruction (never crossing a mount point) unless TENANTFS_KEEP_TMP=1 or the mount
// could not be removed.
class Scratch {
 public:
  Scratch();
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const std::string& root() const { return root_; }
  std::string mnt() const { return root_ + "/mnt"; }
  std::string data() const { return root_ + "/data"; }
  std::string work() const { return root_ + "/work"; }
  // A fresh path under work/ (not created).
  std::string WorkPath(const std::string& name) const { return work() + "/" + name; }

 private:
  std::string root_;
};

// The scratch dir of the running test, used for capture files (may be null).
Scratch* CurrentScratch();

// ---------------------------------------------------------------- the daemon

struct DaemonOptions {
  std::string config_path;  // --config, when not empty
  std::vector<std::string> extra_args;
  bool expect_ready = true;  // Start() asserts readiness
  unsigned long fd_limit = 0;  // the daemon's RLIMIT_NOFILE (soft and hard); 0: inherited
};

// One `tenantfs mount --mount-dir M --data-dir D --http-addr 127.0.0.1:PORT` process.
// Its stderr (the log) goes to a file; Log() reads it.
class Daemon {
 public:
  Daemon(std::string mount_dir, std::string data_dir);
  ~Daemon();  // Stop(), then lazy unmount if needed

  // Starts the process and waits (bounded 10 s) until the mount shows up with fstype
  // fuse.tenantfs. Returns false (with a reason in *why) if it exited or timed out.
  bool Start(const DaemonOptions& options, std::string* why);
  bool Start(std::string* why) { return Start(DaemonOptions{}, why); }
  // SIGTERM and wait (bounded); SIGKILL at the deadline. Returns the exit result.
  Result Stop(std::chrono::milliseconds timeout = 60s);
  // SIGKILL, reap. The mount stays behind, dead (ENOTCONN).
  Result Kill9();
  bool Running();
  std::string Log() const;
  const std::string& mount_dir() const { return mount_dir_; }
  const std::string& data_dir() const { return data_dir_; }
  int port() const { return port_; }
  std::string Describe() const;  // for assertion messages: args + log tail

 private:
  std::string mount_dir_, data_dir_;
  int port_ = 0;
  std::optional<Child> child_;
  std::string log_path_;
  std::string last_log_;
  int starts_ = 0;
};

// ---------------------------------------------------------------- fixtures

// Scratch dir + a running daemon on scratch.mnt()/scratch.data(). TearDown stops the
// daemon with SIGTERM and expects exit 0 and the mount gone; on failure the daemon log
// tail is printed. A subclass returning false from UseDaemon() runs the same test body
// on a plain directory (native SQLite baseline): Root() is then scratch.work()/native.
class MountTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Override to start with a config file or extra flags.
  virtual DaemonOptions Options() { return {}; }
  virtual bool UseDaemon() { return true; }

  // Where tenants live: the mount, or the native baseline dir.
  std::string Root(const std::string& rel = "") const {
    std::string root = use_daemon_ ? scratch_->mnt() : scratch_->work() + "/native";
    return rel.empty() ? root : root + "/" + rel;
  }
  std::string Mnt(const std::string& rel = "") const {
    return rel.empty() ? scratch_->mnt() : scratch_->mnt() + "/" + rel;
  }
  std::string Backing(const std::string& rel) const { return scratch_->data() + "/tenants/" + rel; }
  // mkdir Root()/<tenant>, asserting success.
  void MakeTenant(const std::string& tenant);
  // SIGTERM the daemon now, expecting exit 0 and the mount gone (TearDown then does
  // not complain that it is not running).
  void StopDaemon();
  // Starts it again on the same dirs (after StopDaemon or a kill), asserting readiness.
  bool RestartDaemon(std::string* why);

  std::unique_ptr<Scratch> scratch_;
  std::unique_ptr<Daemon> daemon_;
  bool use_daemon_ = true;
  bool stopped_on_purpose_ = false;
};

// ---------------------------------------------------------------- bank workload checks

// The invariants of the bank workload (sqlclient bank-*): integrity_check ok, the
// balance total intact over `accounts` rows, and per writer w a gap-free run of log
// rows seq 1..n with committed_min[w] <= n <= committed_max[w] (writers missing from
// the maps must have no rows). Adds test failures; `what` prefixes messages.
void ExpectBankIntact(const std::string& db, int accounts, long long total,
                      const std::map<int, long long>& committed_min,
                      const std::map<int, long long>& committed_max, const std::string& what);
// Same, with exactly `committed[w]` rows per writer.
void ExpectBankIntact(const std::string& db, int accounts, long long total,
                      const std::map<int, long long>& committed, const std::string& what);
// Parses the last "committed N" line a bank writer printed; -1 if none.
long long LastCommitted(const std::string& out);

}  // namespace it

#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace it {
namespace {

// ------------------------------------------------------------ reaper registry
// Children and mounts the running test owns. The watchdog and the fatal-signal handler
// use it to clean up when the test cannot (hang, crash, ctest killing us politely).
struct Registry {
  std::mutex mu;
  std::set<pid_t> pids;          // GUARDED_BY(mu)
  std::set<std::string> mounts;  // GUARDED_BY(mu)
};
Registry& Reg() {
  static Registry* r = new Registry;
  return *r;
}
void RegisterPid(pid_t pid) {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().pids.insert(pid);
}
void UnregisterPid(pid_t pid) {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().pids.erase(pid);
}
void RegisterMount(const std::string& dir) {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().mounts.insert(dir);
}
void UnregisterMount(const std::string& dir) {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().mounts.erase(dir);
}

// Best effort, from the watchdog thread or a signal handler: no allocation-free
// guarantee, but we are about to _exit anyway.
void EmergencyCleanup() {
  std::unique_lock<std::mutex> l(Reg().mu, std::try_to_lock);
  for (pid_t pid : Reg().pids) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  for (const std::string& m : Reg().mounts) umount2(m.c_str(), MNT_DETACH);
}

std::atomic<long long> g_deadline_ms{0};  // steady-clock ms; 0 = no test running
std::atomic<bool> g_watchdog_started{false};

long long NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

int WatchdogSeconds() {
  const char* v = getenv("TENANTFS_IT_WATCHDOG_S");
  int s = v ? atoi(v) : 0;
  return s > 0 ? s : 280;
}

void StartWatchdog() {
  if (g_watchdog_started.exchange(true)) return;
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(500ms);
      long long d = g_deadline_ms.load();
      if (d != 0 && NowMs() > d) {
        fprintf(stderr,
                "\n[harness] WATCHDOG: test exceeded %d s; killing its children, lazily "
                "unmounting its mounts and exiting\n",
                WatchdogSeconds());
        if (Scratch* s = CurrentScratch()) {
          // The daemon logs live in work/; show the newest one.
          fprintf(stderr, "[harness] scratch dir kept: %s\n", s->root().c_str());
        }
        fflush(stderr);
        EmergencyCleanup();
        _exit(3);
      }
    }
  }).detach();
}

void FatalSignal(int sig) {
  EmergencyCleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

class Listener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override {
    StartWatchdog();
    g_deadline_ms = NowMs() + WatchdogSeconds() * 1000LL;
  }
  void OnTestEnd(const ::testing::TestInfo&) override { g_deadline_ms = 0; }
};

// Runs at static-initialization time of every integration binary (they all reference
// harness symbols, so this object file is always linked).
const bool g_installed = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new Listener);
  signal(SIGTERM, FatalSignal);
  signal(SIGINT, FatalSignal);
  signal(SIGHUP, FatalSignal);
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

Scratch* g_scratch = nullptr;

std::string Unescape(const std::string& s) {  // mountinfo octal escapes (\040 etc.)
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

int RemoveEntry(const char* path, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP || type == FTW_D) {
    rmdir(path);
  } else {
    unlink(path);
  }
  return 0;
}

std::string Basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

}  // namespace

// ------------------------------------------------------------ files and strings

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

long long FileSize(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return -1;
  return st.st_size;
}

std::optional<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (!d) return std::nullopt;
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  int err = errno;
  closedir(d);
  if (err != 0) {
    errno = err;
    return std::nullopt;
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  return lines;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

std::string Tail(const std::string& text, size_t max_lines) {
  std::vector<std::string> lines = SplitLines(text);
  if (lines.size() <= max_lines) return text;
  std::vector<std::string> tail(lines.end() - max_lines, lines.end());
  return "[... " + std::to_string(lines.size() - max_lines) + " lines cut ...]\n" +
         Join(tail, "\n") + "\n";
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  int port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

HttpReply SendRaw(int port, const std::string& request, bool shut_write) {
  HttpReply r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return r;
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return r;
  }
  size_t off = 0;
  while (off < request.size()) {
    ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse early and close: read its answer anyway
    off += static_cast<size_t>(n);
  }
  if (shut_write) ::shutdown(fd, SHUT_WR);
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    r.raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t eol = r.raw.find("\r\n");
  if (r.raw.rfind("HTTP/1.1 ", 0) == 0 && eol != std::string::npos) {
    r.status = std::atoi(r.raw.c_str() + 9);
    r.ok = r.status >= 100;
  }
  size_t end = r.raw.find("\r\n\r\n");
  if (end != std::string::npos) {
    r.headers = r.raw.substr(0, end + 2);
    r.body = r.raw.substr(end + 4);
  }
  return r;
}

HttpReply HttpGet(int port, const std::string& target) {
  return SendRaw(port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

std::string ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return std::string(n ? n : "E?") + " (" + std::to_string(err) + ")";
}

// ------------------------------------------------------------ processes

std::string Result::Describe() const {
  std::ostringstream ss;
  ss << "\n--- command: " << argv_text << "\n--- status: ";
  if (timed_out) ss << "TIMED OUT (killed by the harness) ";
  if (exited) {
    ss << "exit " << exit_code;
  } else if (signal) {
    ss << "killed by signal " << signal << " (" << strsignal(signal) << ")";
  } else {
    ss << "unknown";
  }
  ss << "\n--- stdout:\n" << Tail(out, 30) << "\n--- stderr:\n" << Tail(err, 60) << "--- end\n";
  return ss.str();
}

Child::Child(Child&& o) noexcept { *this = std::move(o); }

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    pid_ = o.pid_;
    reaped_ = o.reaped_;
    status_ = o.status_;
    out_path_ = std::move(o.out_path_);
    err_path_ = std::move(o.err_path_);
    argv_text_ = std::move(o.argv_text_);
    o.pid_ = -1;
  }
  return *this;
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    Wait(10s);
  }
}

void Child::Reap(int status) {
  reaped_ = true;
  status_ = status;
  UnregisterPid(pid_);
}

bool Child::Running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    Reap(status);
    return false;
  }
  return r == 0;
}

void Child::Signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

std::string Child::Stdout() const { return ReadFile(out_path_); }
std::string Child::Stderr() const { return ReadFile(err_path_); }

Result Child::Wait(std::chrono::milliseconds timeout) {
  Result r;
  r.argv_text = argv_text_;
  if (pid_ <= 0) {
    r.err = "(never started)";
    return r;
  }
  auto deadline = Clock::now() + timeout;
  auto sleep = 1ms;
  while (Running()) {
    if (Clock::now() >= deadline) {
      r.timed_out = true;
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      // A killed child can take a moment (it may be finishing a FUSE request).
      auto hard = Clock::now() + 20s;
      while (Running() && Clock::now() < hard) std::this_thread::sleep_for(10ms);
      break;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min<std::chrono::milliseconds>(sleep * 2, 20ms);
  }
  if (reaped_) {
    if (WIFEXITED(status_)) {
      r.exited = !r.timed_out;
      r.exit_code = WEXITSTATUS(status_);
    } else if (WIFSIGNALED(status_)) {
      r.signal = WTERMSIG(status_);
    }
  }
  r.out = Stdout();
  r.err = Stderr();
  return r;
}

Child Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  static std::atomic<int> counter{0};
  Child c;
  std::string dir = CurrentScratch() ? CurrentScratch()->work() : "/tmp";
  std::string stem = dir + "/" + std::to_string(counter++) + "." + Basename(argv.at(0));
  c.out_path_ = stem + ".out";
  c.err_path_ = stem + ".err";
  for (const std::string& a : argv) {
    if (!c.argv_text_.empty()) c.argv_text_ += ' ';
    c.argv_text_ +=
        a.size() > 200 ? a.substr(0, 200) + "...(" + std::to_string(a.size()) + " bytes)" : a;
  }

  // Everything the child needs is prepared before fork: no allocation after it.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    if (!options.env.count(key)) env_store.push_back(kv);
  }
  for (const auto& [k, v] : options.env) env_store.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& kv : env_store) envp.push_back(kv.data());
  envp.push_back(nullptr);

  std::string in_path = options.stdin_path.empty() ? "/dev/null" : options.stdin_path;
  int in_fd = open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  int out_fd = open(c.out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err_fd = open(c.err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (in_fd < 0 || out_fd < 0 || err_fd < 0) {
    ADD_FAILURE() << "Spawn: cannot open capture files in " << dir << ": " << strerror(errno);
    if (in_fd >= 0) close(in_fd);
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    return c;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    close_range(3, ~0U, 0);
    if (options.fd_limit != 0) {
      struct rlimit rl{options.fd_limit, options.fd_limit};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    execve(args[0], args.data(), envp.data());
    dprintf(2, "exec %s failed: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  close(in_fd);
  close(out_fd);
  close(err_fd);
  if (pid < 0) {
    ADD_FAILURE() << "fork failed: " << strerror(errno);
    return c;
  }
  setpgid(pid, pid);  // also from the parent, so kill(-pid) works at once
  c.pid_ = pid;
  RegisterPid(pid);
  return c;
}

Result Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
           const SpawnOptions& options) {
  Child c = Spawn(argv, options);
  return c.Wait(timeout);
}

Result SqlClient(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{kSqlClientBin};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, timeout);
}

Result Sql(const std::string& db, const std::string& sql, std::chrono::milliseconds timeout) {
  return SqlClient({"exec", db, sql}, timeout);
}

std::string SqlOk(const std::string& db, const std::string& sql) {
  Result r = Sql(db, sql);
  EXPECT_TRUE(r.Ok()) << "SQL failed on " << db << ": " << sql << r.Describe();
  return Trim(r.out);
}

// ------------------------------------------------------------ mounts

namespace {
// (mount id, fstype) of every mount whose mount point is `dir`.
std::vector<std::pair<int, std::string>> MountsAt(const std::string& dir) {
  std::vector<std::pair<int, std::string>> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<std::string> f;
    std::string tok;
    while (ss >> tok) f.push_back(tok);
    if (f.size() < 7) continue;
    if (Unescape(f[4]) != dir) continue;
    auto sep = std::find(f.begin() + 6, f.end(), "-");
    if (sep == f.end() || sep + 1 == f.end()) continue;
    mounts.emplace_back(atoi(f[0].c_str()), *(sep + 1));
  }
  return mounts;
}
}  // namespace

std::vector<std::string> MountTypesAt(const std::string& dir) {
  std::vector<std::string> types;
  for (auto& [id, type] : MountsAt(dir)) types.push_back(type);
  return types;
}

std::vector<int> TenantfsMountIds(const std::string& dir) {
  std::vector<int> ids;
  for (auto& [id, type] : MountsAt(dir)) {
    if (type == "fuse.tenantfs") ids.push_back(id);
  }
  return ids;
}

bool IsTenantfsMounted(const std::string& dir) {
  for (const std::string& t : MountTypesAt(dir)) {
    if (t == "fuse.tenantfs") return true;
  }
  return false;
}

bool AnswersStatfs(const std::string& dir, std::chrono::milliseconds timeout) {
  // statfs can block on a wedged daemon: run it on a thread we may abandon (it returns
  // once the daemon is killed at teardown).
  auto done = std::make_shared<std::atomic<int>>(-1);
  std::thread([dir, done] {
    // A FUSE file system must answer: a dead mount gives ENOTCONN, and once a dead
    // mount is detached the plain directory below answers with its own f_type.
    constexpr long kFuseSuperMagic = 0x65735546;
    struct statfs sfs;
    done->store(statfs(dir.c_str(), &sfs) == 0 && sfs.f_type == kFuseSuperMagic ? 1 : 0);
  }).detach();
  auto deadline = Clock::now() + timeout;
  while (done->load() < 0 && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
  return done->load() == 1;
}

bool LazyUnmount(const std::string& dir) {
  for (int i = 0; i < 20; ++i) {
    if (MountTypesAt(dir).empty()) return true;
    if (umount2(dir.c_str(), MNT_DETACH) != 0) {
      Run({kFusermount3Bin, "-u", "-z", dir}, 10s);
    }
    std::this_thread::sleep_for(50ms);
  }
  return MountTypesAt(dir).empty();
}

// ------------------------------------------------------------ scratch

Scratch::Scratch() {
  char tmpl[] = "/tmp/tenantfs-it.XXXXXX";
  char* d = mkdtemp(tmpl);
  if (!d) {
    ADD_FAILURE() << "mkdtemp: " << strerror(errno);
    return;
  }
  char real[PATH_MAX];
  root_ = realpath(d, real) ? real : d;
  mkdir(mnt().c_str(), 0755);
  mkdir(data().c_str(), 0755);
  mkdir(work().c_str(), 0755);
  g_scratch = this;
}

Scratch::~Scratch() {
  if (g_scratch == this) g_scratch = nullptr;
  if (root_.empty()) return;
  bool unmounted = LazyUnmount(mnt());
  const char* keep = getenv("TENANTFS_KEEP_TMP");
  if (!unmounted || (keep && std::string(keep) == "1")) {
    fprintf(stderr, "[harness] keeping scratch dir %s\n", root_.c_str());
    return;
  }
  nftw(root_.c_str(), RemoveEntry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

Scratch* CurrentScratch() { return g_scratch; }

// ------------------------------------------------------------ the daemon

Daemon::Daemon(std::string mount_dir, std::string data_dir)
    : mount_dir_(std::move(mount_dir)), data_dir_(std::move(data_dir)) {}

Daemon::~Daemon() {
  if (Running()) Stop(30s);
  if (!MountTypesAt(mount_dir_).empty()) LazyUnmount(mount_dir_);
  UnregisterMount(mount_dir_);
}

bool Daemon::Start(const DaemonOptions& options, std::string* why) {
  if (child_) last_log_ += Log();
  ++starts_;
  // A restart keeps its HTTP port: replicas and clients know the node by its URL.
  if (port_ == 0) port_ = FreePort();
  std::vector<std::string> argv{
      kTenantfsBin, "mount",   "--mount-dir", mount_dir_,
      "--data-dir", data_dir_, "--http-addr", "127.0.0.1:" + std::to_string(port_)};
  if (!options.config_path.empty()) {
    argv.push_back("--config");
    argv.push_back(options.config_path);
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  // Ready = a fuse.tenantfs mount at the dir that answers statfs (which always reaches
  // the daemon; a dead mount answers ENOTCONN). Mount IDs are reused, so a new ID is
  // only required when a live mount was already there before we started.
  std::vector<int> before = TenantfsMountIds(mount_dir_);
  const bool before_live = !before.empty() && AnswersStatfs(mount_dir_, 2s);
  auto ready = [&]() {
    std::vector<int> now = TenantfsMountIds(mount_dir_);
    if (now.empty()) return false;
    if (before_live) {
      return std::any_of(now.begin(), now.end(), [&before](int id) {
        return std::find(before.begin(), before.end(), id) == before.end();
      });
    }
    return AnswersStatfs(mount_dir_, 2s);
  };
  RegisterMount(mount_dir_);
  SpawnOptions spawn;
  spawn.fd_limit = options.fd_limit;
  child_.emplace(Spawn(argv, spawn));
  if (child_->pid() <= 0) {
    *why = "could not spawn tenantfs";
    return false;
  }
  auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    if (ready()) return true;
    if (!child_->Running()) {
      Result r = child_->Wait(1s);
      *why = "tenantfs exited before its mount appeared" + r.Describe();
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  *why = "no new fuse.tenantfs mount at " + mount_dir_ + " 10 s after start" + Describe();
  return false;
}

Result Daemon::Stop(std::chrono::milliseconds timeout) {
  if (!child_) return Result{};
  child_->Signal(SIGTERM);
  return child_->Wait(timeout);
}

Result Daemon::Kill9() {
  if (!child_) return Result{};
  child_->Signal(SIGKILL);
  return child_->Wait(20s);
}

bool Daemon::Running() { return child_ && child_->Running(); }

std::string Daemon::Log() const { return child_ ? child_->Stderr() : ""; }

std::string Daemon::Describe() const {
  std::string s = "\n--- tenantfs (start #" + std::to_string(starts_) +
                  "): " + (child_ ? child_->argv_text() : std::string("(not started)")) +
                  "\n--- tenantfs log (tail):\n" + Tail(Log(), 80) + "--- end of tenantfs log\n";
  return s;
}

// ------------------------------------------------------------ fixtures

void MountTest::SetUp() {
  if (geteuid() != 0) GTEST_SKIP() << "integration tests mount FUSE and need root";
  scratch_ = std::make_unique<Scratch>();
  use_daemon_ = UseDaemon();
  if (!use_daemon_) {
    ASSERT_EQ(mkdir(Root().c_str(), 0755), 0) << strerror(errno);
    return;
  }
  daemon_ = std::make_unique<Daemon>(scratch_->mnt(), scratch_->data());
  std::string why;
  ASSERT_TRUE(daemon_->Start(Options(), &why)) << why;
}

void MountTest::TearDown() {
  if (daemon_) {
    if (daemon_->Running()) {
      Result r = daemon_->Stop(60s);
      EXPECT_TRUE(r.Ok()) << "tenantfs did not exit 0 on SIGTERM" << r.Describe();
      EXPECT_FALSE(IsTenantfsMounted(scratch_->mnt()))
          << "mount still present after tenantfs exited";
    } else if (!stopped_on_purpose_ && !HasFatalFailure()) {
      ADD_FAILURE() << "tenantfs died during the test" << daemon_->Describe();
    }
    if (HasFailure()) {
      std::cerr << "[harness] tenantfs log of the failed test:" << daemon_->Describe();
    }
    daemon_.reset();
  }
  scratch_.reset();
}

void MountTest::MakeTenant(const std::string& tenant) {
  ASSERT_EQ(mkdir(Root(tenant).c_str(), 0755), 0)
      << "mkdir " << Root(tenant) << ": " << ErrnoName(errno);
}

void MountTest::StopDaemon() {
  ASSERT_TRUE(daemon_ && daemon_->Running()) << "tenantfs is not running" << daemon_->Describe();
  stopped_on_purpose_ = true;
  Result r = daemon_->Stop(60s);
  EXPECT_TRUE(r.Ok()) << "tenantfs did not exit 0 on SIGTERM" << r.Describe();
  EXPECT_TRUE(MountTypesAt(scratch_->mnt()).empty())
      << "a mount is still present at " << scratch_->mnt() << " after tenantfs exited";
}

bool MountTest::RestartDaemon(std::string* why) {
  bool ok = daemon_->Start(Options(), why);
  if (ok) stopped_on_purpose_ = false;
  return ok;
}

// ------------------------------------------------------------ bank checks

long long LastCommitted(const std::string& out) {
  long long last = -1;
  for (const std::string& line : SplitLines(out)) {
    long long n;
    if (sscanf(line.c_str(), "committed %lld", &n) == 1) last = n;
  }
  return last;
}

void ExpectBankIntact(const std::string& db, int accounts, long long total,
                      const std::map<int, long long>& committed_min,
                      const std::map<int, long long>& committed_max, const std::string& what) {
  Result ic = Sql(db, "PRAGMA integrity_check");
  EXPECT_TRUE(ic.Ok() && Trim(ic.out) == "ok")
      << what << ": integrity_check of " << db << " is not 'ok'" << ic.Describe();
  Result tot = Sql(db, "SELECT count(*), sum(balance) FROM accounts");
  EXPECT_TRUE(tot.Ok()) << what << tot.Describe();
  EXPECT_EQ(Trim(tot.out), std::to_string(accounts) + "|" + std::to_string(total))
      << what << ": account count|balance total of " << db << " changed";
  Result log = Sql(db,
                   "SELECT writer, count(*), count(DISTINCT seq), min(seq), max(seq) FROM log "
                   "GROUP BY writer ORDER BY writer");
  EXPECT_TRUE(log.Ok()) << what << log.Describe();
  std::map<int, long long> seen;
  for (const std::string& line : SplitLines(log.out)) {
    int w = 0;
    long long n = 0, distinct = 0, lo = 0, hi = 0;
    if (sscanf(line.c_str(), "%d|%lld|%lld|%lld|%lld", &w, &n, &distinct, &lo, &hi) != 5) {
      ADD_FAILURE() << what << ": unexpected log summary line '" << line << "'";
      continue;
    }
    seen[w] = n;
    EXPECT_TRUE(n == distinct && lo == 1 && hi == n)
        << what << ": writer " << w << "'s log rows are not seq 1.." << n << " (count " << n
        << ", distinct " << distinct << ", min " << lo << ", max " << hi << ")";
  }
  std::set<int> writers;
  for (auto& [w, _] : committed_min) writers.insert(w);
  for (auto& [w, _] : committed_max) writers.insert(w);
  for (auto& [w, _] : seen) writers.insert(w);
  for (int w : writers) {
    long long n = seen.count(w) ? seen[w] : 0;
    long long lo = committed_min.count(w) ? committed_min.at(w) : 0;
    long long hi = committed_max.count(w) ? committed_max.at(w) : 0;
    if (lo == hi) {
      EXPECT_EQ(n, lo) << what << ": writer " << w << " committed " << lo
                       << " transactions (COMMIT returned OK) but " << db << " holds " << n
                       << " of its log rows";
    } else {
      EXPECT_TRUE(n >= lo && n <= hi)
          << what << ": writer " << w << " has " << n << " log rows in " << db
          << "; expected between " << lo << " (acknowledged commits) and " << hi;
    }
  }
}

void ExpectBankIntact(const std::string& db, int accounts, long long total,
                      const std::map<int, long long>& committed, const std::string& what) {
  ExpectBankIntact(db, accounts, total, committed, committed, what);
}

}  // namespace it

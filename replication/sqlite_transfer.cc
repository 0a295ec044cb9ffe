#include "replication/sqlite_transfer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace replication {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How long a transfer waits for a lock held by an application before giving up.
constexpr auto kLockWait = 30s;
// Pages copied per backup step: between steps the stop flag is looked at.
constexpr int kPagesPerStep = 4096;

constexpr char kMagic[16] = {'S', 'Q', 'L', 'i', 't', 'e', ' ', 'f',
                             'o', 'r', 'm', 'a', 't', ' ', '3', '\0'};

struct BusyWait {
  const StopFlag* stop;
  Clock::time_point deadline;
};

// SQLite's busy handler: sleep a little and retry, until the deadline or stop.
int OnBusy(void* arg, int attempt) {
  auto* w = static_cast<BusyWait*>(arg);
  if (w->stop->load() || Clock::now() >= w->deadline) return 0;
  std::this_thread::sleep_for(attempt < 10 ? 1ms : 10ms);
  return 1;
}

// Closes a connection however it ended (statements are always finalized first).
struct Conn {
  sqlite3* db = nullptr;
  ~Conn() {
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

std::string UriPath(const std::string& path) {
  std::string out = "file:";
  for (char c : path) {
    if (c == '%' || c == '?' || c == '#') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// A file nobody changes while we read it: no locks, no -wal or -shm.
int OpenImmutable(const std::string& path, Conn* conn) {
  return sqlite3_open_v2((UriPath(path) + "?immutable=1").c_str(), &conn->db,
                         SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
}

std::string ErrMsg(sqlite3* db, int rc) {
  if (db != nullptr && sqlite3_errcode(db) == rc) return sqlite3_errmsg(db);
  return sqlite3_errstr(rc);
}

TransferError FromSqlite(int rc, const std::string& what, const std::string& msg) {
  int status = 500;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      status = 503;
      break;
    case SQLITE_FULL:
      status = 507;
      break;
    case SQLITE_READONLY:
      status = 409;
      break;
    default:
      break;
  }
  return {status, what + ": " + msg};
}

// Runs one statement that returns no rows we need.
int Exec(sqlite3* db, const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

// Copies every page of src's "main" into dst's "main", looking at `stop`
// between steps and waiting (bounded) while dst is locked.
TransferError CopyPages(sqlite3* src, sqlite3* dst, const StopFlag& stop, const std::string& what) {
  sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
  if (b == nullptr) return FromSqlite(sqlite3_errcode(dst), what, sqlite3_errmsg(dst));
  auto deadline = Clock::now() + kLockWait;
  int rc;
  while (true) {
    rc = sqlite3_backup_step(b, kPagesPerStep);
    if (rc == SQLITE_DONE) break;
    if (stop.load()) {
      sqlite3_backup_finish(b);  // rolls back what the destination got so far
      return {503, what + ": the server is shutting down"};
    }
    if (rc == SQLITE_OK) continue;
    if ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    break;
  }
  int fin = sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    std::string msg = sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_READONLY) {
      // The one READONLY the backup API gives for a writable destination.
      msg = "a WAL-mode database cannot take a copy with another page size";
    }
    return FromSqlite(rc, what, msg);
  }
  if (fin != SQLITE_OK) return FromSqlite(fin, what, ErrMsg(dst, fin));
  return {};
}

}  // namespace

TransferError SnapshotDatabase(const std::string& source, const std::string& dest,
                               const StopFlag& stop) {
  struct stat st;
  if (::stat(source.c_str(), &st) != 0) {
    if (errno == ENOENT) return {404, "no database " + source};
    return {500, "stat " + source + ": " + std::strerror(errno)};
  }
  BusyWait wait{&stop, Clock::now() + kLockWait};
  Conn src;
  int rc = sqlite3_open_v2(source.c_str(), &src.db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) return FromSqlite(rc, "open " + source, ErrMsg(src.db, rc));
  sqlite3_busy_handler(src.db, OnBusy, &wait);
  // One read transaction across every backup step: the copy is one committed
  // state even while writers go on (WAL) or wait for us (rollback journals).
  rc = Exec(src.db, "BEGIN");
  if (rc == SQLITE_OK) rc = Exec(src.db, "SELECT count(*) FROM sqlite_schema");
  if (rc != SQLITE_OK) return FromSqlite(rc, "read " + source, ErrMsg(src.db, rc));

  Conn dst;
  rc = sqlite3_open_v2(dest.c_str(), &dst.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) return FromSqlite(rc, "open " + dest, ErrMsg(dst.db, rc));
  // A private temp file: no journal, no syncs.
  Exec(dst.db, "PRAGMA journal_mode=OFF");
  Exec(dst.db, "PRAGMA synchronous=OFF");
  TransferError err = CopyPages(src.db, dst.db, stop, "snapshot " + source);
  Exec(src.db, "COMMIT");
  return err;
}

TransferError ValidateDatabaseFile(const std::string& path, const StopFlag& stop) {
  auto bad = [](const std::string& why) {
    return TransferError{400, "not a SQLite database: " + why};
  };
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return {500, "open " + path + ": " + std::strerror(errno)};
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return {500, "stat " + path + ": " + std::strerror(err)};
  }
  if (st.st_size == 0) {
    ::close(fd);
    return bad("file is empty");
  }
  unsigned char header[100];
  ssize_t n = ::pread(fd, header, sizeof header, 0);
  if (n != static_cast<ssize_t>(sizeof header) || std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    ::close(fd);
    return bad("file is not a database");
  }
  // Bytes 18/19 are the write/read format: 2 = WAL. Without its -wal file the
  // image is complete as it is; as a rollback database it opens without -shm.
  if (header[18] == 2 || header[19] == 2) {
    const unsigned char legacy[2] = {1, 1};
    if (::pwrite(fd, legacy, 2, 18) != 2) {
      int err = errno;
      ::close(fd);
      return {500, "write " + path + ": " + std::strerror(err)};
    }
  }
  ::close(fd);

  Conn conn;
  int rc = OpenImmutable(path, &conn);
  if (rc != SQLITE_OK) return bad(ErrMsg(conn.db, rc));
  // integrity_check reads the whole file: let a shutdown interrupt it.
  sqlite3_progress_handler(
      conn.db, 10000, [](void* arg) { return static_cast<const StopFlag*>(arg)->load() ? 1 : 0; },
      const_cast<StopFlag*>(&stop));
  sqlite3_stmt* st_check = nullptr;
  rc = sqlite3_prepare_v2(conn.db, "PRAGMA integrity_check(1)", -1, &st_check, nullptr);
  if (rc != SQLITE_OK) return bad(ErrMsg(conn.db, rc));
  std::string result;
  rc = sqlite3_step(st_check);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(st_check, 0);
    result = text ? reinterpret_cast<const char*>(text) : "";
  } else {
    result = ErrMsg(conn.db, rc);
  }
  sqlite3_finalize(st_check);
  if (stop.load()) return {503, "validate " + path + ": the server is shutting down"};
  if (rc != SQLITE_ROW) return bad(result);
  if (result != "ok") return bad("integrity_check: " + result);
  return {};
}

TransferError ReplaceDatabase(const std::string& source, const std::string& dest,
                              const StopFlag& stop) {
  Conn src;
  int rc = OpenImmutable(source, &src);
  if (rc != SQLITE_OK) return FromSqlite(rc, "open " + source, ErrMsg(src.db, rc));
  BusyWait wait{&stop, Clock::now() + kLockWait};
  Conn dst;
  rc = sqlite3_open_v2(dest.c_str(), &dst.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) return FromSqlite(rc, "open " + dest, ErrMsg(dst.db, rc));
  sqlite3_busy_handler(dst.db, OnBusy, &wait);
  TransferError err = CopyPages(src.db, dst.db, stop, "import into " + dest);
  if (!err.ok()) return err;
  rc = sqlite3_close(dst.db);
  if (rc != SQLITE_OK) return FromSqlite(rc, "close " + dest, ErrMsg(dst.db, rc));
  dst.db = nullptr;
  return {};
}

// ------------------------------------------------------------------ helper process

namespace {

// The helper's stop flag: set from its SIGTERM handler (a lock-free atomic).
StopFlag g_helper_stop{false};

void OnHelperTerm(int) { g_helper_stop.store(true); }

}  // namespace

int TransferHelperMain(const std::vector<std::string>& args) {
  // Nothing of the daemon's but stdin/stdout/stderr: a client socket or a
  // backing file held here would outlive its use in the daemon.
  ::syscall(SYS_close_range, 3u, ~0u, 0u);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) return 1;  // the daemon is already gone
  struct sigaction sa {};
  sa.sa_handler = OnHelperTerm;
  ::sigaction(SIGTERM, &sa, nullptr);
  if (args.size() != 3 || (args[0] != "snapshot" && args[0] != "replace")) {
    std::fprintf(stderr, "usage: tenantfs %s snapshot|replace SOURCE DEST\n", kTransferCommand);
    return 2;
  }
  TransferError e = args[0] == "snapshot" ? SnapshotDatabase(args[1], args[2], g_helper_stop)
                                          : ReplaceDatabase(args[1], args[2], g_helper_stop);
  std::string msg = e.ok() ? "ok" : e.message;
  for (char& c : msg) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::printf("%d %s\n", e.http_status, msg.c_str());
  return std::fflush(stdout) == 0 ? 0 : 1;
}

TransferError RunTransferProcess(const std::string& helper_exe, const std::string& op,
                                 const std::string& source, const std::string& dest,
                                 const StopFlag& stop) {
  const std::string what = op + " " + source;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {500, what + ": pipe: " + std::strerror(errno)};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The daemon blocks its signals (one thread sigwaits) and ignores SIGPIPE;
  // the helper starts with neither.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> argv_s{"tenantfs", kTransferCommand, op, source, dest};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, helper_exe.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return {500, what + ": cannot start " + helper_exe + ": " + std::strerror(rc)};
  }

  std::string out;
  Clock::time_point term_sent{};
  bool killed = false;
  while (true) {
    if (stop.load()) {
      if (term_sent == Clock::time_point{}) {
        ::kill(pid, SIGTERM);
        term_sent = Clock::now();
      } else if (!killed && Clock::now() - term_sent > 5s) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the helper is done
    if (out.size() < 65536) out.append(buf, static_cast<size_t>(got));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (stop.load()) return {503, what + ": the server is shutting down"};
  int http_status = -1;
  char msg[4096] = "";
  if (std::sscanf(out.c_str(), "%d %4095[^\n]", &http_status, msg) >= 1 && http_status >= 0) {
    if (http_status == 0) return {};
    return {http_status, msg};
  }
  if (WIFSIGNALED(status)) {
    return {500, what + ": the transfer helper died of signal " + std::to_string(WTERMSIG(status))};
  }
  return {500, what + ": the transfer helper failed (exit status " +
                   std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")"};
}

}  // namespace replication

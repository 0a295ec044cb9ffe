// replication_bench: a primary and a replica (two tenantfs processes on loopback, own
// temp dirs) and the replication goals of TARGETS.md, printed as one markdown table:
//
//   P9   lag: paced 1-row write transactions (WAL + NORMAL) over 100 databases through
//        the primary's mount; for every Nth one, the time from COMMIT returning until
//        the replica's -pos shows its TXID (polling the -pos file, 200 µs between
//        rounds: polling without a pause starves the replica on 2 cores and inflated
//        p99 from ~20 ms to ~550 ms in trials).
//   P10  catch-up: the replica stopped, 1,200 transactions committed to each database,
//        the replica started again; time from its mount appearing until every -pos
//        equals the primary's.
//   P11  catch-up beyond retention (a second pair, primary with data.retention 1s): a
//        large database replicated, the replica stopped, ~1 % of its pages rewritten
//        until the retention pass has dropped the replica's position, the replica
//        started; stream bytes sent over the database size.
//
// It measures and reports; it asserts no speed. It exits non-zero on a SQLite error, a
// daemon that does not start or stop cleanly, a replica that does not converge in
// bounded time, or a -pos that differs between the nodes after a scenario. On failure
// it keeps its temp dir (daemon logs) and says where.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#ifndef TENANTFS_BIN
#define TENANTFS_BIN "tenantfs"
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

volatile std::sig_atomic_t g_stop = 0;  // SIGINT, SIGTERM, SIGHUP
void OnSignal(int) { g_stop = 1; }
std::atomic<bool> g_abort{false};  // a worker thread failed: the others stop too
bool Stopping() { return g_stop || g_abort; }

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string Fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void CheckStop() {
  if (Stopping()) throw Failure("interrupted");
}

struct Options {
  std::string bin = TENANTFS_BIN;
  std::string dir = "/var/tmp";
  std::string json;
  double seconds = 10;
  double rate = 1000;  // P9 write tx/s over all databases
  int dbs = 100;       // P9 and P10 databases
  int threads = 4;     // P9 writer threads
  int sample_every = 10;
  int p10_dbs = 100, p10_tx = 1200;
  int p11_mib = 1024;
  bool keep = false;
};

constexpr const char* kUsage =
    "usage: replication_bench [--quick] [--seconds S] [--rate TX_PER_S] [--p11-mib N]\n"
    "                         [--dir DIR] [--tenantfs PATH] [--json FILE] [--keep]\n"
    "  --quick       smoke run: 3 s of P9, 20 databases x 100 tx for P10, 64 MiB for P11\n"
    "  --seconds S   P9 duration (default 10); --rate: P9 tx/s (default 1000)\n"
    "  --p11-mib N   P11 database size (default 1024)\n";

Options ParseOptions(int argc, char** argv) {
  Options o;
  bool quick = false;
  std::optional<int> p11;
  int i = 1;
  auto value = [&]() -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto number = [&]() {
    std::string v = value();
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end || !(d > 0)) throw std::invalid_argument("not > 0: " + v);
    return d;
  };
  const std::map<std::string, std::function<void()>> flags = {
      {"--quick", [&] { quick = true; }},
      {"--seconds", [&] { o.seconds = number(); }},
      {"--rate", [&] { o.rate = number(); }},
      {"--p11-mib", [&] { p11 = static_cast<int>(number()); }},
      {"--dir", [&] { o.dir = value(); }},
      {"--tenantfs", [&] { o.bin = value(); }},
      {"--json", [&] { o.json = value(); }},
      {"--keep", [&] { o.keep = true; }},
      {"--help", [] { std::cout << kUsage, std::exit(0); }},
  };
  for (; i < argc; ++i) {
    auto f = flags.find(argv[i]);
    if (f == flags.end()) throw std::invalid_argument(std::string("unknown argument: ") + argv[i]);
    f->second();
  }
  if (quick) {
    o.seconds = 3;
    o.p10_dbs = 20;
    o.p10_tx = 100;
    o.p11_mib = 64;
  }
  if (p11) o.p11_mib = *p11;
  return o;
}

// ---------------------------------------------------------------------------------
// SQLite: every error throws, naming the database and the statement.

class Db {
 public:
  explicit Db(const std::string& path) : path_(path) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    if (rc != SQLITE_OK) Fail("open", rc);
    sqlite3_busy_timeout(db_, 10000);
  }
  ~Db() {
    for (auto* st : stmts_) sqlite3_finalize(st);
    if (db_) sqlite3_close_v2(db_);
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void Exec(const std::string& sql) {
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) Fail(sql, rc);
  }
  int64_t QueryInt(const std::string& sql) {
    sqlite3_stmt* st = Prepare(sql);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) Fail(sql, rc);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return v;
  }
  sqlite3_stmt* Prepare(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) Fail("prepare " + sql, rc);
    stmts_.push_back(st);
    return st;
  }
  // Runs a prepared statement that returns no rows (binding `arg` to ?1 if >= 0).
  void Run(sqlite3_stmt* st, int64_t arg = -1) {
    if (arg >= 0) sqlite3_bind_int64(st, 1, arg);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) Fail(sqlite3_sql(st), rc);
  }
  void Close() {
    for (auto* st : stmts_) sqlite3_finalize(st);
    stmts_.clear();
    int rc = sqlite3_close(db_);
    if (rc != SQLITE_OK) Fail("close", rc);
    db_ = nullptr;
  }

 private:
  [[noreturn]] void Fail(const std::string& what, int rc) {
    throw Failure("SQLite error on " + path_ + ": " + what + ": " +
                  (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)));
  }
  std::string path_;
  sqlite3* db_ = nullptr;
  std::vector<sqlite3_stmt*> stmts_;
};

// Runs fn(i) on n threads; rethrows the first failure after all joined.
void RunThreads(int n, const std::function<void(int)>& fn) {
  std::mutex mu;
  std::string error;
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i) {
    ts.emplace_back([&, i] {
      try {
        fn(i);
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        if (error.empty()) error = e.what();
        g_abort = true;
      }
    });
  }
  for (auto& t : ts) t.join();
  if (!error.empty()) throw Failure(error);
}

// ---------------------------------------------------------------------------------
// Daemons, mounts, HTTP, positions.

bool IsMounted(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() > 4 && dash != f.end() && dash + 1 != f.end() && f[4] == mnt &&
        *(dash + 1) == "fuse.tenantfs")
      return true;
  }
  return false;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Tail(const std::string& path) {
  std::string s = ReadAll(path);
  return s.size() > 2000 ? "..." + s.substr(s.size() - 2000) : s;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  if (port == 0) throw Failure("no free port");
  return port;
}

// One tenantfs node: its dirs, config, log and (while running) process.
struct Node {
  std::string name, mnt, data, config, log;
  int port = 0;
  pid_t pid = -1;

  std::string Path(const std::string& rel) const { return mnt + "/" + rel; }

  // Starts `tenantfs mount` and returns when the mount shows up (bounded: 30 s).
  Clock::time_point Start(const std::string& bin) {
    pid_t parent = getpid();
    pid = fork();
    if (pid < 0) throw Failure(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the bench (SIGTERM: it unmounts)
      if (getppid() != parent) _exit(127);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
      std::string p = "127.0.0.1:" + std::to_string(port);
      execl(bin.c_str(), bin.c_str(), "mount", "--config", config.c_str(), "--mount-dir",
            mnt.c_str(), "--data-dir", data.c_str(), "--http-addr", p.c_str(), nullptr);
      _exit(127);
    }
    auto t0 = Clock::now();
    while (true) {
      if (IsMounted(mnt)) return Clock::now();
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        throw Failure(name + ": tenantfs exited before mounting (status " + std::to_string(status) +
                      "); its log ends:\n" + Tail(log));
      }
      if (Clock::now() - t0 > std::chrono::seconds(30))
        throw Failure(name + ": no mount in 30 s; its log ends:\n" + Tail(log));
      CheckStop();
      std::this_thread::sleep_for(milliseconds(2));
    }
  }

  // SIGTERM, wait (bounded: 30 s, then SIGKILL), detach a leftover mount. Returns ""
  // on a clean exit, else what went wrong.
  std::string Stop() {
    std::string problem;
    if (pid > 0) {
      kill(pid, SIGTERM);
      int status = 0;
      auto t0 = Clock::now();
      bool exited = false;
      while (Clock::now() - t0 < std::chrono::seconds(30)) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        std::this_thread::sleep_for(milliseconds(10));
      }
      if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        problem = name + ": no exit within 30 s of SIGTERM (killed)";
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        problem = name + ": unclean exit on SIGTERM (status " + std::to_string(status) + ")";
      }
      pid = -1;
    }
    if (!mnt.empty() && IsMounted(mnt)) {
      umount2(mnt.c_str(), MNT_DETACH);
      if (problem.empty()) problem = name + ": exited but left " + mnt + " mounted";
    }
    return problem;
  }
  void StopOrThrow() {
    std::string p = Stop();
    if (!p.empty()) throw Failure(p);
  }
};

// GET http://127.0.0.1:port/path (Connection: close); the whole response.
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, n);
    }
  }
  ::close(fd);
  if (out.rfind("HTTP/1.1 200", 0) != 0)
    throw Failure("GET :" + std::to_string(port) + path + " failed");
  return out;
}

double StreamBytesSent(const Node& n) {
  const std::string key = "tenantfs_stream_bytes_total{direction=\"sent\"} ";
  std::string body = HttpGet(n.port, "/metrics");
  size_t at = body.find("\n" + key);
  if (at == std::string::npos) throw Failure(n.name + ": /metrics has no " + key);
  return std::strtod(body.c_str() + at + 1 + key.size(), nullptr);
}

struct Pos {
  uint64_t txid = 0, checksum = 0;
  bool operator==(const Pos&) const = default;
};
std::optional<Pos> ParsePos(const char* s, ssize_t n) {
  Pos p;
  if (n < 33 || std::sscanf(s, "%16" SCNx64 "/%16" SCNx64, &p.txid, &p.checksum) != 2)
    return std::nullopt;
  return p;
}
std::string Text(const Pos& p) {
  char b[40];
  std::snprintf(b, sizeof b, "%016" PRIx64 "/%016" PRIx64, p.txid, p.checksum);
  return b;
}
// -pos files are direct_io: each pread is one FUSE read of the current position.
std::optional<Pos> ReadPos(int fd) {
  char buf[64];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  return ParsePos(buf, n);
}
std::optional<Pos> ReadPos(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  auto p = ReadPos(fd);
  ::close(fd);
  return p;
}

// Open -pos fds of `dbs` on one node (closed before its daemon stops).
struct PosFds {
  std::vector<int> fds;
  void Open(const Node& n, const std::vector<std::string>& dbs) {
    Close();
    for (const auto& d : dbs) {
      int fd = ::open(n.Path(d + "-pos").c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw Failure(n.name + ": open " + d + "-pos: " + std::strerror(errno));
      fds.push_back(fd);
    }
  }
  void Close() {
    for (int fd : fds) ::close(fd);
    fds.clear();
  }
  ~PosFds() { Close(); }
};

// Waits (bounded) until every db's -pos on the replica equals the primary's. Returns
// "" or the first difference. Nothing writes meanwhile, so the dbs are checked in
// order, each until it matches. `on_poll` runs before every read (e.g. to note a
// connect).
std::string WaitConverged(const Node& primary, const Node& replica,
                          const std::vector<std::string>& dbs, Clock::duration timeout,
                          const std::function<void()>& on_poll = {}) {
  const auto deadline = Clock::now() + timeout;
  for (const auto& db : dbs) {
    auto want = ReadPos(primary.Path(db + "-pos"));
    if (!want) throw Failure("primary: cannot read " + db + "-pos");
    while (true) {
      if (on_poll) on_poll();
      auto got = ReadPos(replica.Path(db + "-pos"));
      if (got && *got == *want) break;
      if (Clock::now() > deadline) {
        return db + ": primary " + Text(*want) + ", replica " + (got ? Text(*got) : "no -pos");
      }
      CheckStop();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------
// The table.

struct Row {
  std::string goal, what, figure, target;
  std::optional<double> value;  // the figure as a number (JSON)
  std::optional<bool> met;
  std::string note;
};

void PrintTable(std::ostream& os, const std::vector<Row>& rows) {
  os << "| goal | what | figure | target | met | note |\n|---|---|---:|---|---|---|\n";
  for (const Row& r : rows) {
    os << "| " << r.goal << " | " << r.what << " | " << r.figure << " | " << r.target << " | "
       << (r.met ? (*r.met ? "yes" : "**no**") : "—") << " | " << r.note << " |\n";
  }
}

std::string Json(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return o + "\"";
}

void WriteJson(const std::string& path, const std::string& header, const std::vector<Row>& rows) {
  std::ofstream out(path);
  out << "{\n  \"header\": " << Json(header) << ",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out << "    {\"goal\": " << Json(r.goal) << ", \"what\": " << Json(r.what)
        << ", \"figure\": " << Json(r.figure)
        << ", \"value\": " << (r.value ? Fmt("%.6g", *r.value) : "null")
        << ", \"target\": " << Json(r.target)
        << ", \"met\": " << (r.met ? (*r.met ? "true" : "false") : "null")
        << ", \"note\": " << Json(r.note) << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  out << "  ]\n}\n";
  if (!out) throw Failure("cannot write " + path);
}

std::string MachineBusy() {
  std::string load = "?", tag, avg = "?";
  std::ifstream("/proc/loadavg") >> load;
  std::ifstream psi("/proc/pressure/cpu");
  psi >> tag >> avg;
  return "load " + load + ", cpu pressure " +
         (avg.rfind("avg10=", 0) == 0 ? avg.substr(6) + "%" : "?");
}

// ---------------------------------------------------------------------------------
// A primary/replica pair.

struct Pair {
  Node primary, replica;

  void Init(const std::string& base, const std::string& primary_yaml) {
    for (Node* n : {&primary, &replica}) {
      n->name = n == &primary ? "primary" : "replica";
      std::string d = base + "/" + n->name;
      n->mnt = d + "/mnt";
      n->data = d + "/data";
      n->config = d + "/config.yaml";
      n->log = d + "/tenantfs.log";
      n->port = FreePort();
      fs::create_directories(n->mnt);
      fs::create_directories(n->data);
    }
    std::ofstream(primary.config) << "node: {id: p}\nlease: {candidate: true}\n" << primary_yaml;
    std::ofstream(replica.config) << "node: {id: r}\nlease: {candidate: false, primary-url: "
                                  << "\"http://127.0.0.1:" << primary.port << "\"}\n";
    primary.Start(bin);
    replica.Start(bin);
  }
  // Both stopped; "" or what went wrong.
  std::string Stop() {
    std::string a = replica.Stop(), b = primary.Stop();
    return a.empty() ? b : b.empty() ? a : a + "; " + b;
  }
  std::string bin;
};

std::vector<double> Percentiles(std::vector<double> v, std::initializer_list<double> ps) {
  std::vector<double> out;
  std::sort(v.begin(), v.end());
  for (double p : ps)
    out.push_back(
        v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]);
  return out;
}

// The P9/P10 databases: one tenant, WAL + NORMAL, one connection each through the mount.
struct Dbs {
  std::vector<std::string> names;  // tenant/db
  std::vector<std::unique_ptr<Db>> conns;
  std::vector<sqlite3_stmt*> inserts;
};

void MakeDbs(const Pair& pair, int n, Dbs& dbs) {
  fs::create_directory(pair.primary.Path("rb"));
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "rb/db%03d", i);
    dbs.names.push_back(name);
    auto db = std::make_unique<Db>(pair.primary.Path(name));
    db->Exec("PRAGMA journal_mode=WAL");
    db->Exec("PRAGMA synchronous=NORMAL");
    db->Exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
    dbs.inserts.push_back(db->Prepare("INSERT INTO t(v) VALUES(randomblob(64))"));
    dbs.conns.push_back(std::move(db));
  }
}

// P9: paced writers; a poller measures, for every Nth transaction, COMMIT returned ->
// the replica's -pos shows its TXID.
void RunP9(const Options& o, Pair& pair, Dbs& dbs, std::vector<Row>& rows) {
  PosFds ppos, rpos;
  ppos.Open(pair.primary, dbs.names);
  rpos.Open(pair.replica, dbs.names);
  struct Sample {
    size_t db;
    uint64_t txid;
    Clock::time_point committed;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Sample> incoming;
  std::atomic<int> writers_left{o.threads};
  std::atomic<uint64_t> txs{0};
  std::vector<double> lag_ms;
  int timeouts = 0;

  std::thread poller([&] {
    std::vector<Sample> pending;
    while (!Stopping()) {
      {
        std::unique_lock lock(mu);
        if (pending.empty() && incoming.empty()) {
          if (writers_left == 0) return;
          cv.wait_for(lock, milliseconds(1));
        }
        pending.insert(pending.end(), incoming.begin(), incoming.end());
        incoming.clear();
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // see the top comment
      for (size_t i = 0; i < pending.size();) {
        auto p = ReadPos(rpos.fds[pending[i].db]);
        auto now = Clock::now();
        bool seen = p && p->txid >= pending[i].txid;
        if (seen || now - pending[i].committed > std::chrono::seconds(5)) {
          if (seen)
            lag_ms.push_back(Ms(now - pending[i].committed));
          else
            ++timeouts;
          pending[i] = pending.back();
          pending.pop_back();
        } else {
          ++i;
        }
      }
    }
  });

  const double before = StreamBytesSent(pair.primary);
  const auto t0 = Clock::now(), end = t0 + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(o.seconds));
  try {
    RunThreads(o.threads, [&](int t) {
      struct Guard {  // the poller ends once every writer has
        std::atomic<int>& left;
        ~Guard() { --left; }
      } guard{writers_left};
      std::vector<size_t> mine;  // thread t writes the databases i with i % threads == t
      for (size_t i = t; i < dbs.names.size(); i += o.threads) mine.push_back(i);
      const double interval = o.threads / o.rate;  // seconds between this thread's tx
      uint64_t k = 0;
      for (;; ++k) {
        auto due = t0 + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(k * interval));
        if (due >= end || Stopping()) break;
        std::this_thread::sleep_until(due);
        size_t db = mine[k % mine.size()];
        dbs.conns[db]->Run(dbs.inserts[db]);
        auto committed = Clock::now();
        if ((k + k / mine.size()) % o.sample_every == 0) {  // every Nth, rotating over the DBs
          auto p = ReadPos(ppos.fds[db]);
          if (!p) throw Failure("primary: cannot read " + dbs.names[db] + "-pos");
          std::lock_guard lock(mu);
          incoming.push_back({db, p->txid, committed});
          cv.notify_one();
        }
      }
      txs += k;
    });
  } catch (...) {
    poller.join();
    throw;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  poller.join();
  CheckStop();
  const double sent = StreamBytesSent(pair.primary) - before;
  auto pc = Percentiles(lag_ms, {0.5, 0.99, 1.0});
  const double rate = static_cast<double>(txs) / secs;
  std::string what = std::to_string(dbs.names.size()) + " DBs, WAL + NORMAL, 1-row tx";
  std::string note = std::to_string(lag_ms.size()) + " samples (every " +
                     std::to_string(o.sample_every) + "th tx)" +
                     (timeouts ? ", " + std::to_string(timeouts) + " not applied within 5 s" : "");
  rows.push_back({"P9", "write rate achieved (paced at " + Fmt("%.0f", o.rate) + " tx/s)",
                  Fmt("%.0f tx/s", rate), "~1,000 tx/s", rate, std::nullopt,
                  std::to_string(txs) + " tx in " + Fmt("%.1f s", secs)});
  rows.push_back({"P9", "replication lag p50, " + what, Fmt("%.2f ms", pc[0]), "—", pc[0],
                  std::nullopt, note});
  rows.push_back({"P9", "replication lag p99, " + what, Fmt("%.2f ms", pc[1]), "< 5 ms", pc[1],
                  !lag_ms.empty() && timeouts == 0 && pc[1] < 5,
                  "COMMIT returned → replica's -pos shows the TXID (polled every ~0.2 ms)"});
  rows.push_back(
      {"P9", "replication lag max", Fmt("%.2f ms", pc[2]), "—", pc[2], std::nullopt, ""});
  rows.push_back(
      {"P9", "stream bytes sent per tx", Fmt("%.0f B", sent / static_cast<double>(txs)), "—",
       sent / static_cast<double>(txs), std::nullopt,
       "primary's tenantfs_stream_bytes_total{direction=\"sent\"}, heartbeats included"});
}

// P10: replica down, N tx committed to each database, replica up; time to converge.
void RunP10(const Options& o, Pair& pair, Dbs& dbs, std::vector<Row>& rows) {
  std::vector<std::string> names(dbs.names.begin(), dbs.names.begin() + o.p10_dbs);
  std::string diff = WaitConverged(pair.primary, pair.replica, names, std::chrono::seconds(60));
  if (!diff.empty()) throw Failure("P10: replica not converged before the stop: " + diff);
  pair.replica.StopOrThrow();

  auto c0 = Clock::now();
  std::atomic<size_t> next{0};
  RunThreads(o.threads, [&](int) {
    for (size_t i; (i = next++) < names.size();) {
      for (int k = 0; k < o.p10_tx && !Stopping(); ++k) dbs.conns[i]->Run(dbs.inserts[i]);
    }
  });
  const double commit_s = std::chrono::duration<double>(Clock::now() - c0).count();
  const double total = static_cast<double>(o.p10_tx) * names.size();

  const double before = StreamBytesSent(pair.primary);
  const auto mounted = pair.replica.Start(pair.bin);
  std::optional<Clock::time_point> connected;
  const auto limit = std::chrono::seconds(60 + static_cast<int>(total / 500));  // >= 500 tx/s
  diff = WaitConverged(pair.primary, pair.replica, names, limit, [&] {
    if (connected) return;
    char b[8];
    int fd = ::open(pair.replica.Path(".primary").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && pread(fd, b, sizeof b, 0) > 0) connected = Clock::now();
    if (fd >= 0) ::close(fd);
  });
  const auto done = Clock::now();
  if (!diff.empty())
    throw Failure("P10: replica did not catch up within " + std::to_string(limit.count()) +
                  " s: " + diff);
  const double sent = StreamBytesSent(pair.primary) - before;
  const double ms = Ms(done - mounted);
  std::string what =
      std::to_string(names.size()) + " DBs × " + std::to_string(o.p10_tx) + " tx missed";
  rows.push_back(
      {"P10", "catch-up, " + what + ", replica mount up → all -pos equal", Fmt("%.0f ms", ms),
       "< 2 s after reconnect", ms, ms < 2000,
       (connected ? Fmt("%.0f ms", Ms(done - *connected)) + " after .primary appeared (connected); "
                  : std::string(".primary never seen; ")) +
           Fmt("%.0f tx", total) + " committed in " + Fmt("%.1f s", commit_s) + " on the primary"});
  rows.push_back({"P10", "catch-up stream bytes sent per tx", Fmt("%.0f B", sent / total), "—",
                  sent / total, std::nullopt, Fmt("%.1f MiB", sent / 1048576.0) + " in all"});
}

// P11 (its own pair: primary with data.retention 1s): a big database replicated, the
// replica stopped, ~1 % of its pages rewritten until retention dropped the replica's
// position, the replica started: bytes sent / database size.
void RunP11(const Options& o, Pair& pair, std::vector<Row>& rows) {
  const std::string name = "big/big.db";
  const int64_t page = 4096, rows_total = static_cast<int64_t>(o.p11_mib) * (1 << 20) / page;
  fs::create_directory(pair.primary.Path("big"));
  auto db = std::make_unique<Db>(pair.primary.Path(name));
  db->Exec("PRAGMA page_size=4096");
  db->Exec("PRAGMA journal_mode=WAL");
  db->Exec("PRAGMA synchronous=NORMAL");
  db->Exec("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)");
  // 3,000-byte rows: one row per leaf page, so a row update changes one page.
  sqlite3_stmt* ins = db->Prepare("INSERT INTO b(v) VALUES(randomblob(3000))");
  sqlite3_stmt* upd = db->Prepare("UPDATE b SET v = randomblob(3000) WHERE id = ?1");
  auto f0 = Clock::now();
  for (int64_t i = 0; i < rows_total; i += 1000) {
    CheckStop();
    db->Exec("BEGIN");
    for (int64_t j = i; j < std::min(rows_total, i + 1000); ++j) db->Run(ins);
    db->Exec("COMMIT");
  }
  const double fill_s = std::chrono::duration<double>(Clock::now() - f0).count();
  const double db_bytes = static_cast<double>(db->QueryInt("PRAGMA page_count") * page);
  auto timeout = std::chrono::seconds(120 + o.p11_mib / 2);
  std::string diff = WaitConverged(pair.primary, pair.replica, {name}, timeout);
  if (!diff.empty()) throw Failure("P11: replica did not converge after the fill: " + diff);
  const double sync_s = std::chrono::duration<double>(Clock::now() - f0).count();
  pair.replica.StopOrThrow();

  // 1 % of the rows, rewritten in passes until >= 12 MiB of pages went to the log since
  // the stop: three 4 MiB segments roll, so the one holding the replica's position is old.
  std::mt19937_64 rng(11);
  std::unordered_set<int64_t> pick;
  const int64_t k = std::max<int64_t>(1, rows_total / 100);
  while (static_cast<int64_t>(pick.size()) < k)
    pick.insert(1 + static_cast<int64_t>(rng() % rows_total));
  const int64_t passes = std::max<int64_t>(1, ((12 << 20) + k * page - 1) / (k * page));
  int64_t n = 0;
  for (int64_t p = 0; p < passes; ++p) {
    for (int64_t id : pick) {
      if (n % 64 == 0) db->Exec("BEGIN");
      db->Run(upd, id);
      if (++n % 64 == 0) db->Exec("COMMIT");
    }
  }
  if (n % 64 != 0) db->Exec("COMMIT");
  db->Close();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // retention: 1 s, pass every second

  const size_t log_from = fs::file_size(pair.primary.log);
  const double before = StreamBytesSent(pair.primary);
  const auto mounted = pair.replica.Start(pair.bin);
  // 1 % of the pages: seconds at loopback speed; bounded well above that.
  diff =
      WaitConverged(pair.primary, pair.replica, {name}, std::chrono::seconds(60 + o.p11_mib / 16));
  const auto done = Clock::now();
  if (!diff.empty()) throw Failure("P11: replica did not converge after its restart: " + diff);
  const double sent = StreamBytesSent(pair.primary) - before;
  std::string log = ReadAll(pair.primary.log).substr(log_from), snap;
  for (std::istringstream ls(log); std::getline(ls, snap);) {
    if (snap.find("snapshot sent") != std::string::npos && snap.find("big.db") != std::string::npos)
      break;
    snap.clear();
  }
  bool snapshot = log.find("sending snapshot") != std::string::npos && !snap.empty();
  const double pct = 100.0 * sent / db_bytes;
  std::string pages_sent = "?";
  if (size_t at = snap.find("pages_sent"); at != std::string::npos)
    pages_sent = snap.substr(at, snap.find_first_of(" ,}", at + 11) - at);
  rows.push_back(
      {"P11",
       Fmt("catch-up beyond retention, %.0f MiB DB, ", db_bytes / 1048576.0) + std::to_string(k) +
           " of " + std::to_string(rows_total) + " rows (1 %) rewritten, bytes sent / DB size",
       Fmt("%.2f %%", pct), "≤ 3 %", pct, snapshot && pct <= 3,
       Fmt("%.1f MiB sent; ", sent / 1048576.0) +
           (snapshot ? "primary logged \"sending snapshot\" (" + pages_sent + ")"
                     : "**primary did not log a snapshot for it**") +
           "; " + std::to_string(n) + " updates in " + std::to_string(passes) + " pass(es)"});
  rows.push_back({"P11", "catch-up time, replica mount up → -pos equal",
                  Fmt("%.0f ms", Ms(done - mounted)), "—", Ms(done - mounted), std::nullopt,
                  Fmt("fill %.0f s, replicated by ", fill_s) + Fmt("%.0f s", sync_s)});
}

// After a scenario: every database's -pos equal on both nodes (bounded wait first).
void CompareAll(Pair& pair, const std::vector<std::string>& names, std::vector<Row>& rows,
                std::string& failure) {
  std::string diff = WaitConverged(pair.primary, pair.replica, names, std::chrono::seconds(60));
  rows.push_back(
      {"—", "-pos equal on both nodes after the run, " + std::to_string(names.size()) + " DB(s)",
       diff.empty() ? "all equal" : "MISMATCH", "all equal", std::nullopt, diff.empty(), diff});
  if (!diff.empty() && failure.empty()) failure = "-pos mismatch after the run: " + diff;
}

int Main(int argc, char** argv) {
  Options o;
  try {
    o = ParseOptions(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "replication_bench: " << e.what() << "\n" << kUsage;
    return 2;
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  std::string tmpl = o.dir + "/replication-bench.XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    std::cerr << "replication_bench: mkdtemp " << tmpl << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  const std::string base = fs::canonical(tmpl).string();
  const std::string busy_at_start = MachineBusy();
  std::vector<Row> rows;
  std::string failure, stop_problem;
  Pair pair1, pair2;
  pair1.bin = pair2.bin = o.bin;
  try {
    {
      pair1.Init(base + "/p9", "");
      Dbs dbs;
      MakeDbs(pair1, std::max(o.dbs, o.p10_dbs), dbs);
      std::string diff =
          WaitConverged(pair1.primary, pair1.replica, dbs.names, std::chrono::seconds(60));
      if (!diff.empty())
        throw Failure("replica did not converge after creating the databases: " + diff);
      RunP9(o, pair1, dbs, rows);
      RunP10(o, pair1, dbs, rows);
      for (auto& c : dbs.conns) c->Close();
      CompareAll(pair1, dbs.names, rows, failure);
    }
    stop_problem = pair1.Stop();
    if (!stop_problem.empty()) throw Failure(stop_problem);
    if (failure.empty()) fs::remove_all(base + "/p9");
    pair2.Init(base + "/p11", "data: {retention: 1s}\n");
    RunP11(o, pair2, rows);
    CompareAll(pair2, {"big/big.db"}, rows, failure);
  } catch (const std::exception& e) {
    if (failure.empty()) failure = e.what();
  }
  if (!failure.empty()) rows.push_back({"—", "run", "FAILED", "—", std::nullopt, false, failure});
  for (Pair* p : {&pair1, &pair2}) {
    std::string s = p->Stop();
    if (!s.empty() && stop_problem.empty()) stop_problem = s;
  }

  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  utsname u{};
  uname(&u);
  std::string header = std::string("replication_bench ") + date + ", kernel " + u.release + ", " +
                       std::to_string(std::thread::hardware_concurrency()) + " cores; at start " +
                       busy_at_start + "; at end " + MachineBusy() + "; SQLite " +
                       sqlite3_libversion() + "; P9 " + Fmt("%.0f s", o.seconds) + ", P11 " +
                       std::to_string(o.p11_mib) + " MiB";
  std::cout << header << "\n\n";
  PrintTable(std::cout, rows);
  std::cout.flush();
  if (!o.json.empty()) WriteJson(o.json, header, rows);
  if (failure.empty() && stop_problem.empty() && !o.keep) {
    std::error_code ec;
    fs::remove_all(base, ec);
    return 0;
  }
  if (!failure.empty()) std::cerr << "replication_bench: FAILED: " << failure << "\n";
  if (!stop_problem.empty()) std::cerr << "replication_bench: FAILED: " << stop_problem << "\n";
  std::cerr << "replication_bench: kept " << base << " (daemon logs: */*/tenantfs.log)\n";
  return failure.empty() && stop_problem.empty() ? 0 : (g_stop ? 130 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "replication_bench: " << e.what() << "\n";
    return 1;
  }
}

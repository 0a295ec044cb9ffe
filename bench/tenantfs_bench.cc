// tenantfs_bench: SQLite natively on a plain directory and through a tenantfs mount,
// side by side in one run on one disk, printed as one markdown table with the
// TARGETS.md goals (P1, P2, P3, P5, P6; P4 through bench/node_bench.mjs with --node).
// `--p8` runs only P8 instead: many databases, many clients, a bounded handle budget,
// with the daemon's peak fds and RSS and its RAM per known database (see RunP8).
//
// The bench measures and reports; it never asserts a speed. It exits non-zero when a
// workload fails (a SQLite error), the mount does not come up, or the daemon does not
// exit cleanly on SIGTERM. It always stops its daemon and removes its temp dirs.
//
// Each workload runs for a time budget per side. Native and tenantfs alternate in an
// A-B-B-A order over two rounds so that drift on a shared, noisy machine hits both.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef TENANTFS_BIN
#define TENANTFS_BIN "tenantfs"
#endif
#ifndef TENANTFS_SOURCE_DIR
#define TENANTFS_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Set by SIGINT/SIGTERM/SIGHUP: workloads stop early, then the bench cleans up.
volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }
bool Stopping() { return g_stop != 0; }

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds (user + system) of the calling thread.
double ThreadCpuSeconds() {
  struct rusage ru {};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The daemon, once started; its CPU seconds (user + system, all threads) from
// /proc/PID/stat, or 0 when there is none.
pid_t g_daemon_pid = -1;
double DaemonCpuSeconds() {
  if (g_daemon_pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(g_daemon_pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // fields 14, 15: utime, stime
    if (i == 14) utime = std::strtod(f.c_str(), nullptr);
    if (i == 15) stime = std::strtod(f.c_str(), nullptr);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------
// Options

struct Options {
  std::string tenantfs = TENANTFS_BIN;
  std::string dir = "/var/tmp";
  double seconds = 3.0;
  int rounds = 2;
  std::string json;
  bool node = false;
  std::string node_script = std::string(TENANTFS_SOURCE_DIR) + "/bench/node_bench.mjs";
  bool native_only = false;
  bool keep = false;
  int threads = 16;
  int dbs = 100;
  int p6_mib = 2048;  // size of the large database of the P6 row
  bool p8 = false;    // run only the P8 scenario
  int p8_dbs = 10000;
  int p8_clients = 100;
  int p8_max_open = 256;
};

void Usage(std::ostream& os) {
  os << "usage: tenantfs_bench [--quick] [--seconds S] [--rounds N] [--dir DIR]\n"
        "                      [--tenantfs PATH] [--json FILE] [--node [--node-script PATH]]\n"
        "                      [--threads N] [--dbs N] [--p6-mib N] [--native-only] [--keep]\n"
        "       tenantfs_bench --p8 [--p8-dbs N] [--p8-clients N] [--p8-max-open N] [--seconds S]\n"
        "  --quick         1 s per side, one round (CI smoke)\n"
        "  --seconds S     time budget per workload and side (default 3)\n"
        "  --rounds N      split each budget over N alternating rounds (default 2)\n"
        "  --dir DIR       where temp dirs go; native and backing share it (default /var/tmp)\n"
        "  --tenantfs PATH daemon binary (default " TENANTFS_BIN
        ")\n"
        "  --json FILE     also write the results as JSON\n"
        "  --node          also run bench/node_bench.mjs (better-sqlite3, TARGETS P4)\n"
        "  --p6-mib N      size of the large database for P6 (default 2048; --quick: 16)\n"
        "  --p8            only the P8 scenario: --p8-dbs databases (default 10000) on disk,\n"
        "                  --p8-clients threads (default 100) doing open + SELECT + close,\n"
        "                  handles.max-open --p8-max-open (default 256); the daemon's peak fds\n"
        "                  and RSS and its RAM per known, idle database (from /proc)\n"
        "  --native-only   no daemon: native column only (for developing the bench)\n"
        "  --keep          keep the temp dirs\n";
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  bool quick = false;
  bool rounds_set = false;
  bool p6_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "tenantfs_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](const std::string& v) -> double {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(d > 0)) {
        std::cerr << "tenantfs_bench: " << a << ": not a positive number: " << v << "\n";
        std::exit(2);
      }
      return d;
    };
    if (a == "--quick") {
      quick = true;
    } else if (a == "--seconds") {
      o.seconds = number(value());
    } else if (a == "--rounds") {
      o.rounds = static_cast<int>(number(value()));
      rounds_set = true;
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "--tenantfs") {
      o.tenantfs = value();
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--node") {
      o.node = true;
    } else if (a == "--node-script") {
      o.node_script = value();
    } else if (a == "--threads") {
      o.threads = static_cast<int>(number(value()));
    } else if (a == "--dbs") {
      o.dbs = static_cast<int>(number(value()));
    } else if (a == "--p6-mib") {
      o.p6_mib = static_cast<int>(number(value()));
      p6_set = true;
    } else if (a == "--p8") {
      o.p8 = true;
    } else if (a == "--p8-dbs") {
      o.p8_dbs = static_cast<int>(number(value()));
    } else if (a == "--p8-clients") {
      o.p8_clients = static_cast<int>(number(value()));
    } else if (a == "--p8-max-open") {
      o.p8_max_open = static_cast<int>(number(value()));
    } else if (a == "--native-only") {
      o.native_only = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--help" || a == "-h") {
      Usage(std::cout);
      std::exit(0);
    } else {
      std::cerr << "tenantfs_bench: unknown argument: " << a << "\n";
      Usage(std::cerr);
      std::exit(2);
    }
  }
  if (quick) {
    o.seconds = 1.0;
    if (!rounds_set) o.rounds = 1;
    if (!p6_set) o.p6_mib = 16;
  }
  if (o.rounds < 1) o.rounds = 1;
  return o;
}

// ---------------------------------------------------------------------------------
// SQLite helpers: every error becomes an exception naming the file and the step.

// SQLite's own busy-timeout schedule (sqliteDefaultBusyCallback), counted: how often a
// client slept because another connection held a lock on the same database.
std::atomic<uint64_t> g_busy_sleeps{0};
constexpr int kBusyTimeoutMs = 10000;

int BusyHandler(void*, int count) {
  static constexpr int kDelays[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
  static constexpr int kN = sizeof kDelays / sizeof kDelays[0];
  int delay, prior;
  if (count < kN) {
    delay = kDelays[count];
    prior = 0;
    for (int i = 0; i < count; ++i) prior += kDelays[i];
  } else {
    delay = kDelays[kN - 1];
    prior = 0;
    for (int d : kDelays) prior += d;
    prior += delay * (count - kN);
  }
  if (prior + delay > kBusyTimeoutMs) {
    delay = kBusyTimeoutMs - prior;
    if (delay <= 0) return 0;
  }
  g_busy_sleeps.fetch_add(1, std::memory_order_relaxed);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  return 1;
}

struct SqliteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(sqlite3* db, int rc, const std::string& what, const std::string& path) {
  std::string msg = "SQLite error on " + path + ": " + what + ": " +
                    (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) + " (rc " + std::to_string(rc) +
                    ")";
  throw SqliteError(msg);
}

class Db {
 public:
  Db(const std::string& path, int flags) : path_(path) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      throw SqliteError("SQLite error on " + path + ": open: " + msg);
    }
    sqlite3_busy_handler(db_, BusyHandler, nullptr);
  }
  ~Db() {
    if (db_) sqlite3_close_v2(db_);
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void Exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      throw SqliteError("SQLite error on " + path_ + ": " + sql + ": " + msg);
    }
  }
  // First column of the first row, as text.
  std::string QueryText(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) Fail(db_, rc, sql, path_);
    rc = sqlite3_step(st);
    std::string out;
    if (rc == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      out = t ? reinterpret_cast<const char*>(t) : "";
    } else if (rc != SQLITE_DONE) {
      sqlite3_finalize(st);
      Fail(db_, rc, sql, path_);
    }
    sqlite3_finalize(st);
    return out;
  }
  // Closes now and reports an error the close returns (an unflushed WAL, a failed
  // checkpoint through the mount) instead of dropping it in the destructor.
  void Close() {
    int rc = sqlite3_close(db_);
    if (rc != SQLITE_OK) Fail(db_, rc, "close", path_);
    db_ = nullptr;
  }
  sqlite3* get() { return db_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

void SetJournal(Db& db, const std::string& mode, const std::string& sync) {
  std::string got = db.QueryText("PRAGMA journal_mode=" + mode);
  std::string want = mode;
  std::transform(want.begin(), want.end(), want.begin(), ::tolower);
  std::transform(got.begin(), got.end(), got.begin(), ::tolower);
  if (got != want) {
    throw SqliteError("SQLite error on " + db.path() + ": journal_mode=" + mode + " gave '" + got +
                      "'");
  }
  db.Exec("PRAGMA synchronous=" + sync);
}

// ---------------------------------------------------------------------------------
// Measurements

struct Measurement {
  double ops = 0;
  double secs = 0;
  std::vector<double> lat_us;
  double busy_sleeps = 0;   // busy-handler sleeps during the measurement
  double cpu_s = 0;         // client threads' CPU during the measurement
  double daemon_cpu_s = 0;  // the daemon's CPU during it (idle for native runs)

  void Merge(Measurement&& o) {
    ops += o.ops;
    secs += o.secs;
    busy_sleeps += o.busy_sleeps;
    cpu_s += o.cpu_s;
    daemon_cpu_s += o.daemon_cpu_s;
    lat_us.insert(lat_us.end(), o.lat_us.begin(), o.lat_us.end());
  }
  double Rate() const { return secs > 0 ? ops / secs : 0; }
  double Percentile(double p) {
    if (lat_us.empty()) return 0;
    std::sort(lat_us.begin(), lat_us.end());
    size_t i = static_cast<size_t>(p * static_cast<double>(lat_us.size() - 1) + 0.5);
    return lat_us[std::min(i, lat_us.size() - 1)];
  }
};

// Runs fn(thread_index) on n threads released together; rethrows the first failure.
// A thread that throws sets `stop`; the others see it and stop too.
void RunThreads(int n, const std::function<void(int, std::atomic<bool>&)>& fn) {
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        fn(i, stop);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.empty()) first_error = e.what();
        stop = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!first_error.empty()) throw SqliteError(first_error);
}

// Releases n threads together once all arrived, or all waiting ones once `stop` is
// set (a thread failed before arriving).
class StartGate {
 public:
  explicit StartGate(int n) : left_(n) {}
  void ArriveAndWait(const std::atomic<bool>& stop) {
    if (left_.fetch_sub(1) == 1) {
      open_ = true;
      return;
    }
    while (!open_.load() && !stop.load()) std::this_thread::yield();
  }

 private:
  std::atomic<int> left_;
  std::atomic<bool> open_{false};
};

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// ---------------------------------------------------------------------------------
// Workloads. `root` is the native directory or the mount point; tenants are
// subdirectories of it, databases files in those.

constexpr int kPayloadBytes = 100;
constexpr int kRowsPerReadDb = 10;
constexpr int kTenantsForReads = 10;

std::string ReadDbPath(const std::string& root, int i) {
  return root + "/r" + std::to_string(i % kTenantsForReads) + "/db" + std::to_string(i);
}

// Commits 1-row INSERTs (each its own transaction, one prepared statement) on each of
// `paths` from its own thread for `budget` seconds, all threads released together.
// Returns one measurement per path, over the common window.
// Grows a WAL database to about `mib` MiB in 16 MiB transactions (zero blobs: the
// size is the point, not the content), then checkpoints and closes it.
void FillDb(const std::string& path, int mib) {
  Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  SetJournal(db, "WAL", "NORMAL");
  db.Exec("CREATE TABLE IF NOT EXISTS filler(v BLOB)");
  for (int done = 0; done < mib && !Stopping(); done += 16) {
    db.Exec("BEGIN");
    for (int i = 0; i < 16; ++i) db.Exec("INSERT INTO filler VALUES(zeroblob(1048576 - 64))");
    db.Exec("COMMIT");
    db.Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
}

std::vector<Measurement> WriteTxs(const std::vector<std::string>& paths, const std::string& journal,
                                  const std::string& sync, double budget) {
  const int n = static_cast<int>(paths.size());
  std::vector<Measurement> out(n);
  StartGate gate(n);
  std::atomic<double> daemon_cpu0{0};
  RunThreads(n, [&](int t, std::atomic<bool>& stop) {
    Db db(paths[t], SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
    SetJournal(db, journal, sync);
    db.Exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db.get(), "INSERT INTO t(v) VALUES(?1)", -1, &st, nullptr);
    if (rc != SQLITE_OK) Fail(db.get(), rc, "prepare INSERT", paths[t]);
    Rng rng(t + 1);
    unsigned char payload[kPayloadBytes];
    auto insert = [&] {
      for (int i = 0; i < kPayloadBytes; i += 8) {
        uint64_t r = rng.Next();
        std::memcpy(payload + i, &r, std::min(8, kPayloadBytes - i));
      }
      sqlite3_bind_blob(st, 1, payload, kPayloadBytes, SQLITE_STATIC);
      int src = sqlite3_step(st);
      if (src != SQLITE_DONE) {
        sqlite3_reset(st);
        sqlite3_finalize(st);
        Fail(db.get(), src, "INSERT", paths[t]);
      }
      sqlite3_reset(st);
    };
    // Warm-up: first pages allocated, WAL created, daemon handle open.
    const double warm = std::min(0.25, budget / 10);
    auto w0 = Clock::now();
    while (SecondsSince(w0) < warm && !stop && !Stopping()) insert();
    gate.ArriveAndWait(stop);
    if (t == 0) daemon_cpu0 = DaemonCpuSeconds();
    const double cpu0 = ThreadCpuSeconds();
    auto t0 = Clock::now();
    uint64_t count = 0;
    while (!stop && !Stopping()) {
      insert();
      ++count;
      if (SecondsSince(t0) >= budget) break;
    }
    out[t].ops = static_cast<double>(count);
    out[t].secs = SecondsSince(t0);
    out[t].cpu_s = ThreadCpuSeconds() - cpu0;
    sqlite3_finalize(st);
    db.Close();
  });
  out[0].daemon_cpu_s = DaemonCpuSeconds() - daemon_cpu0;
  return out;
}

// One request: open an existing database, SELECT one row by key, close.
void OpenSelectClose(const std::string& path, int key) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    throw SqliteError("SQLite error on " + path + ": open: " + msg);
  }
  sqlite3_busy_handler(db, BusyHandler, nullptr);
  sqlite3_stmt* st = nullptr;
  rc = sqlite3_prepare_v2(db, "SELECT v FROM t WHERE id=?1", -1, &st, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_close(db);
    throw SqliteError("SQLite error on " + path + ": prepare SELECT: " + msg);
  }
  sqlite3_bind_int(st, 1, key);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW || sqlite3_column_bytes(st, 0) <= 0) {
    std::string msg = rc == SQLITE_ROW    ? "empty row"
                      : rc == SQLITE_DONE ? "no row"
                                          : sqlite3_errmsg(db);
    sqlite3_finalize(st);
    sqlite3_close(db);
    throw SqliteError("SQLite error on " + path + ": SELECT id=" + std::to_string(key) + ": " +
                      msg);
  }
  sqlite3_finalize(st);
  rc = sqlite3_close(db);
  if (rc != SQLITE_OK)
    throw SqliteError("SQLite error on " + path + ": close: " + sqlite3_errstr(rc));
}

// `clients` threads each run open + SELECT + close requests on random databases of
// `dbs` (database i at path_of(i)) for `budget` seconds. One measurement: all
// requests, over the common window.
Measurement OpenSelectLoad(const std::function<std::string(int)>& path_of, int clients, int dbs,
                           double budget) {
  std::vector<Measurement> per(clients);
  StartGate gate(clients);
  std::atomic<uint64_t> busy_at_start{0};
  std::atomic<double> daemon_cpu0{0};
  RunThreads(clients, [&](int t, std::atomic<bool>& stop) {
    Rng rng(1000 + t);
    auto one = [&] {
      int i = static_cast<int>(rng.Next() % static_cast<uint64_t>(dbs));
      int key = 1 + static_cast<int>(rng.Next() % kRowsPerReadDb);
      OpenSelectClose(path_of(i), key);
    };
    for (int i = 0; i < 20 && !stop; ++i) one();  // warm-up
    gate.ArriveAndWait(stop);
    if (t == 0) {
      busy_at_start = g_busy_sleeps.load();
      daemon_cpu0 = DaemonCpuSeconds();
    }
    const double cpu0 = ThreadCpuSeconds();
    auto t0 = Clock::now();
    auto& m = per[t];
    m.lat_us.reserve(1 << 16);
    while (!stop && !Stopping() && SecondsSince(t0) < budget) {
      auto r0 = Clock::now();
      one();
      m.lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - r0).count());
    }
    m.ops = static_cast<double>(m.lat_us.size());
    m.secs = SecondsSince(t0);
    m.cpu_s = ThreadCpuSeconds() - cpu0;
  });
  Measurement all;
  // Approximate at the edges (other threads' last warm-up requests): fine for a rate.
  all.busy_sleeps = static_cast<double>(g_busy_sleeps.load() - busy_at_start.load());
  all.daemon_cpu_s = DaemonCpuSeconds() - daemon_cpu0;
  double window = 0;
  for (auto& m : per) {
    window = std::max(window, m.secs);
    all.cpu_s += m.cpu_s;
    all.ops += m.ops;
    all.lat_us.insert(all.lat_us.end(), m.lat_us.begin(), m.lat_us.end());
  }
  all.secs = window;
  return all;
}

Measurement OpenSelectLoad(const std::string& root, int clients, int dbs, double budget) {
  return OpenSelectLoad([&root](int i) { return ReadDbPath(root, i); }, clients, dbs, budget);
}

void CreateReadDbs(const std::string& root, int dbs) {
  for (int t = 0; t < kTenantsForReads; ++t) {
    std::string dir = root + "/r" + std::to_string(t);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error("mkdir " + dir + ": " + std::strerror(errno));
    }
  }
  for (int i = 0; i < dbs && !Stopping(); ++i) {
    Db db(ReadDbPath(root, i), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    SetJournal(db, "WAL", "NORMAL");
    db.Exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    db.Exec("BEGIN");
    for (int k = 1; k <= kRowsPerReadDb; ++k) {
      db.Exec("INSERT OR REPLACE INTO t(id, v) VALUES(" + std::to_string(k) + ", 'row " +
              std::to_string(k) + " of db " + std::to_string(i) + "')");
    }
    db.Exec("COMMIT");
    db.Close();
  }
}

// ---------------------------------------------------------------------------------
// The daemon and the temp tree.

bool IsMounted(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string w;
    while (ls >> w) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 1 == f.end()) continue;
    if (f[4] == mnt && *(dash + 1) == "fuse.tenantfs") return true;
  }
  return false;
}

std::string Tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > max_bytes) s = "..." + s.substr(s.size() - max_bytes);
  return s;
}

class Daemon {
 public:
  // Starts `bin mount --mount-dir mnt --data-dir data [extra...]`, output to `log`, and
  // waits (bounded) until mnt shows in mountinfo as fuse.tenantfs.
  void Start(const std::string& bin, const std::string& mnt, const std::string& data,
             const std::string& log, const std::vector<std::string>& extra = {}) {
    mnt_ = mnt;
    log_ = log;
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ > 0) g_daemon_pid = pid_;
    if (pid_ == 0) {
      // The daemon must not outlive the bench, even if the bench is killed.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(127);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<std::string> args = {bin, "mount", "--mount-dir", mnt, "--data-dir", data};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      std::fprintf(stderr, "exec %s: %s\n", bin.c_str(), std::strerror(errno));
      _exit(127);
    }
    auto t0 = Clock::now();
    while (!IsMounted(mnt)) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = g_daemon_pid = -1;
        throw std::runtime_error("tenantfs exited before mounting (" + Describe(status) +
                                 "); its output:\n" + Tail(log));
      }
      if (SecondsSince(t0) > 20) {
        throw std::runtime_error("tenantfs did not mount " + mnt + " within 20 s; its output:\n" +
                                 Tail(log));
      }
      if (Stopping()) throw std::runtime_error("interrupted while waiting for the mount");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  bool Alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = g_daemon_pid = -1;
      early_status_ = Describe(status);
      return false;
    }
    return true;
  }

  // SIGTERM, bounded wait, SIGKILL; then a lazy unmount if the mount is still there.
  // Returns an empty string on a clean exit (status 0, unmounted), else what went wrong.
  std::string Stop() {
    std::string problem;
    if (!early_status_.empty()) problem = "tenantfs exited during the run (" + early_status_ + ")";
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      bool exited = false;
      auto t0 = Clock::now();
      while (SecondsSince(t0) < 20) {
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!exited) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        problem = "tenantfs did not exit within 20 s of SIGTERM (killed)";
      } else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        problem = "tenantfs exited uncleanly on SIGTERM (" + Describe(status) + ")";
      }
      pid_ = g_daemon_pid = -1;
    }
    if (!mnt_.empty() && IsMounted(mnt_)) {
      if (problem.empty()) problem = "tenantfs exited but left " + mnt_ + " mounted";
      if (umount2(mnt_.c_str(), MNT_DETACH) != 0) {
        std::string cmd = "fusermount3 -u -z '" + mnt_ + "' >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) {
          std::cerr << "tenantfs_bench: could not unmount " << mnt_ << "\n";
        }
      }
    }
    if (!problem.empty() && !log_.empty()) problem += "; its output:\n" + Tail(log_);
    return problem;
  }

 private:
  static std::string Describe(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
  }

  pid_t pid_ = -1;
  std::string mnt_;
  std::string log_;
  std::string early_status_;
};

// ---------------------------------------------------------------------------------
// The table.

enum class Better { kHigher, kLower, kNone };

struct Row {
  explicit Row(std::string w) : workload(std::move(w)) {}
  std::string workload;
  std::optional<double> native;
  std::optional<double> tenantfs;
  std::string unit;  // "tx/s", "req/s", "us", "x"
  std::string target = "—";
  // When set, `met` compares ratio (or the tenantfs value itself when
  // judge_tenantfs_value) against `threshold` in direction `better`.
  Better better = Better::kNone;
  double threshold = 0;
  bool judge_tenantfs_value = false;
  std::string note;  // replaces the numbers (e.g. "not run: ...")
};

std::string FormatValue(double v, const std::string& unit) {
  char buf[64];
  if (unit == "x") {
    std::snprintf(buf, sizeof buf, "%.2f×", v);
  } else if (unit == "us") {
    std::snprintf(buf, sizeof buf, v < 10 ? "%.1f µs" : "%.0f µs", v);
  } else if (unit.empty()) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, unit.c_str());
  }
  return buf;
}

std::optional<double> Ratio(const Row& r) {
  if (!r.native || !r.tenantfs || *r.native <= 0) return std::nullopt;
  return *r.tenantfs / *r.native;
}

std::optional<bool> Met(const Row& r) {
  if (r.better == Better::kNone) return std::nullopt;
  std::optional<double> v = r.judge_tenantfs_value ? r.tenantfs : Ratio(r);
  if (!v) return std::nullopt;
  return r.better == Better::kHigher ? *v >= r.threshold : *v <= r.threshold;
}

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      o += ' ';
    } else {
      o += c;
    }
  }
  return o;
}

std::string JsonNumber(const std::optional<double>& v) {
  if (!v) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", *v);
  return buf;
}

void PrintTable(std::ostream& os, const std::vector<Row>& rows) {
  os << "| workload | native | tenantfs | ratio | target | met |\n";
  os << "|---|---:|---:|---:|---|---|\n";
  for (const Row& r : rows) {
    if (!r.note.empty()) {
      os << "| " << r.workload << " | " << r.note << " | — | — | " << r.target << " | — |\n";
      continue;
    }
    auto ratio = Ratio(r);
    auto met = Met(r);
    char rbuf[32] = "—";
    if (ratio) std::snprintf(rbuf, sizeof rbuf, "%.2f×", *ratio);
    os << "| " << r.workload << " | " << (r.native ? FormatValue(*r.native, r.unit) : "—") << " | "
       << (r.tenantfs ? FormatValue(*r.tenantfs, r.unit) : "—") << " | " << rbuf << " | "
       << r.target << " | " << (met ? (*met ? "yes" : "**no**") : "—") << " |\n";
  }
}

void WriteJson(const std::string& path, const std::string& header, const Options& o,
               const std::vector<Row>& rows) {
  std::ofstream out(path);
  out << "{\n  \"header\": \"" << JsonEscape(header) << "\",\n  \"seconds_per_side\": " << o.seconds
      << ",\n  \"rounds\": " << o.rounds << ",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    auto met = Met(r);
    out << "    {\"workload\": \"" << JsonEscape(r.workload) << "\", \"unit\": \"" << r.unit
        << "\", \"native\": " << JsonNumber(r.note.empty() ? r.native : std::nullopt)
        << ", \"tenantfs\": " << JsonNumber(r.note.empty() ? r.tenantfs : std::nullopt)
        << ", \"ratio\": " << JsonNumber(r.note.empty() ? Ratio(r) : std::nullopt)
        << ", \"target\": \"" << JsonEscape(r.target)
        << "\", \"met\": " << (met && r.note.empty() ? (*met ? "true" : "false") : "null")
        << ", \"note\": \"" << JsonEscape(r.note) << "\"}" << (i + 1 < rows.size() ? "," : "")
        << "\n";
  }
  out << "  ]\n}\n";
  if (!out) throw std::runtime_error("could not write " + path);
}

// How busy the shared machine is: 1-minute load average and the share of the last
// 10 s in which some task waited for CPU or I/O (PSI "some avg10").
std::string MachineBusy() {
  std::string load;
  std::ifstream la("/proc/loadavg");
  la >> load;
  auto psi = [](const char* what) -> std::string {
    std::ifstream in(std::string("/proc/pressure/") + what);
    std::string tag, avg10;
    if (!(in >> tag >> avg10) || tag != "some" || avg10.rfind("avg10=", 0) != 0) return "?";
    return avg10.substr(6) + "%";
  };
  return "load " + (load.empty() ? std::string("?") : load) + ", cpu pressure " + psi("cpu") +
         ", io pressure " + psi("io");
}

// `busy_at_start`: MachineBusy() when the bench started; the machine is shared, so the
// table says how busy it was.
std::string Header(const Options& o, const std::string& busy_at_start) {
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  struct utsname u {};
  uname(&u);
  std::ostringstream h;
  h << "tenantfs_bench " << date << ", kernel " << u.release << ", "
    << std::thread::hardware_concurrency() << " cores; at start " << busy_at_start << "; at end "
    << MachineBusy() << "; SQLite " << sqlite3_libversion() << ", " << o.seconds
    << " s per workload and side over " << o.rounds << " round(s)";
  return h.str();
}

// ---------------------------------------------------------------------------------
// Node (TARGETS P4): bench/node_bench.mjs prints lines
//   METRIC <scenario> <side> <req_per_s> <p50_us> <p99_us>

struct NodeMetric {
  std::string scenario, side;
  double rps = 0, p50 = 0, p99 = 0;
};

bool InPath(const std::string& exe) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::istringstream ps(path);
  std::string d;
  while (std::getline(ps, d, ':')) {
    if (!d.empty() && ::access((d + "/" + exe).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Returns why node cannot run, or "" when it can.
std::string NodeUnavailable(const Options& o) {
  if (!InPath("node")) return "not run: node not found in PATH";
  if (!fs::exists(o.node_script)) return "not run: " + o.node_script + " missing";
  fs::path mod = fs::path(o.node_script).parent_path().parent_path() /
                 "tests/node/node_modules/better-sqlite3/build/Release/better_sqlite3.node";
  if (!fs::exists(mod)) return "not run: better-sqlite3 not installed (scripts/deps)";
  return "";
}

std::vector<NodeMetric> RunNode(const Options& o, const std::string& native_root,
                                const std::string& mount_root) {
  std::ostringstream cmd;
  cmd << "node '" << o.node_script << "' --machine --seconds " << o.seconds << " --native '"
      << native_root << "'";
  if (!mount_root.empty()) cmd << " --mount '" << mount_root << "'";
  FILE* p = popen(cmd.str().c_str(), "r");
  if (!p) throw std::runtime_error("could not start node");
  std::vector<NodeMetric> out;
  char line[4096];
  while (std::fgets(line, sizeof line, p)) {
    std::istringstream ls(line);
    std::string tag;
    NodeMetric m;
    if (ls >> tag && tag == "METRIC" && ls >> m.scenario >> m.side >> m.rps >> m.p50 >> m.p99) {
      out.push_back(m);
    } else {
      std::cerr << "node: " << line;  // progress and diagnostics
    }
  }
  int status = pclose(p);
  if (status != 0)
    throw std::runtime_error("node_bench.mjs failed (status " + std::to_string(status) + ")");
  return out;
}

// ---------------------------------------------------------------------------------

struct Side {
  std::string name;
  std::string root;
};

// Runs `run` on each side for budget/rounds per round, A-B-B-A order; merges per side.
// Returns results[side][k] for the k-th measurement the workload returns.
template <typename Fn>
std::vector<std::vector<Measurement>> Alternate(const std::vector<Side>& sides, const Options& o,
                                                const std::string& label, Fn run) {
  std::cerr << "bench: " << label << std::endl;
  std::vector<std::vector<Measurement>> res(sides.size());
  const double per_round = o.seconds / o.rounds;
  for (int r = 0; r < o.rounds && !Stopping(); ++r) {
    for (size_t j = 0; j < sides.size(); ++j) {
      size_t s = (r % 2 == 0) ? j : sides.size() - 1 - j;
      std::vector<Measurement> got = run(sides[s], per_round);
      if (res[s].empty()) res[s].resize(got.size());
      for (size_t k = 0; k < got.size(); ++k) res[s][k].Merge(std::move(got[k]));
    }
  }
  if (Stopping()) throw std::runtime_error("interrupted");
  return res;
}

// ---------------------------------------------------------------------------------
// P8: many databases, many clients, a bounded handle budget. The daemon's figures come
// from /proc/PID: its open fds sampled by a thread every millisecond, its peak RSS from
// VmHWM and its RSS at a point from VmRSS.

constexpr int kP8Tenants = 100;

// Database i of the P8 set: 100 tenants, databases dealt round robin.
std::string P8DbPath(const std::string& root, int i) {
  char b[64];
  std::snprintf(b, sizeof b, "/p%02d/db%05d", i % kP8Tenants, i);
  return root + b;
}
std::string P8WarmPath(const std::string& root, int i) {
  return root + "/warm/db" + std::to_string(i);
}

std::string WithCommas(long long v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Makes databases 0..n-1 natively, each a WAL database holding the read workload's table
// (kRowsPerReadDb rows). synchronous=OFF: only speed matters here.
void CreateNativeDbs(const std::function<std::string(int)>& path_of, int n) {
  for (int i = 0; i < n && !Stopping(); ++i) {
    std::string path = path_of(i);
    fs::create_directories(fs::path(path).parent_path());
    Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
    db.Exec("PRAGMA synchronous=OFF");  // before the mode change, which would sync otherwise
    SetJournal(db, "WAL", "OFF");
    std::string sql =
        "BEGIN; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t VALUES";
    for (int k = 1; k <= kRowsPerReadDb; ++k) {
      sql += (k > 1 ? ", (" : " (") + std::to_string(k) + ", 'row " + std::to_string(k) +
             " of db " + std::to_string(i) + "')";
    }
    db.Exec(sql + "; COMMIT");
    db.Close();
  }
  if (Stopping()) throw std::runtime_error("interrupted");
}

// Every database once (open + SELECT + close), dealt over `clients` threads.
void TouchAll(const std::function<std::string(int)>& path_of, int n, int clients) {
  RunThreads(clients, [&](int t, std::atomic<bool>& stop) {
    for (int i = t; i < n && !stop && !Stopping(); i += clients) {
      OpenSelectClose(path_of(i), 1 + i % kRowsPerReadDb);
    }
  });
  if (Stopping()) throw std::runtime_error("interrupted");
}

int ProcFdCount(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  int n = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// A "Vm...:" field of /proc/PID/status in bytes; -1 if unreadable.
long long ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtoll(line.c_str() + field.size() + 1, nullptr, 10) * 1024;  // "... kB"
    }
  }
  return -1;
}

// The peak of a process's open fds, sampled every millisecond on a thread; at each new
// peak the fds are sorted into backing database files, change logs and the rest.
class FdPeakSampler {
 public:
  explicit FdPeakSampler(pid_t pid) : pid_(pid) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        int n = ProcFdCount(pid_);
        if (n > peak_.load()) {
          std::string what = Classify();
          std::lock_guard<std::mutex> lock(mu_);
          peak_ = n;
          at_peak_ = what;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  ~FdPeakSampler() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int peak() const { return peak_.load(); }
  std::string at_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    return at_peak_;
  }

 private:
  std::string Classify() {
    std::string dir = "/proc/" + std::to_string(pid_) + "/fd";
    int backing = 0, logs = 0, other = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::error_code lec;
      std::string target = fs::read_symlink(e.path(), lec).string();
      if (lec) continue;
      if (target.find("/tenants/") != std::string::npos) {
        ++backing;
      } else if (target.find("/log/") != std::string::npos) {
        ++logs;
      } else {
        ++other;
      }
    }
    return std::to_string(backing) + " backing database files, " + std::to_string(logs) +
           " change logs, " + std::to_string(other) + " other";
  }

  const pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<int> peak_{0};
  std::mutex mu_;
  std::string at_peak_;  // guarded by mu_
  std::thread thread_;
};

// A free TCP port on 127.0.0.1 for the daemon's HTTP side (so a node already serving on
// the default port does not stop the bench).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// P8 only: --p8-dbs databases on disk, --p8-clients threads doing open + SELECT + close on
// random ones, handles.max-open --p8-max-open. The databases are made natively, on the
// native side and in the daemon's data dir before it starts (a database placed there gets
// a snapshot record as its first change set when first written: Capture::Load): making
// 10,000 through the mount would take minutes and tell nothing about P8. They are WAL
// databases, the mode apps opening a database per request use, so each one in use holds
// its main file, -wal and -shm, and its first use through the mount writes its first
// change-log record.
//
// Idle RAM per known database: the daemon's RSS after every database was touched once,
// minus its RSS before, over the number of databases. "Before" is after a warm-up of the
// same clients over max-open other databases, so the daemon's threads, their malloc
// arenas and a full handle cache are in both figures; what differs is 10,000 databases
// known to the daemon, used once and now idle.
void RunP8(const Options& o, const std::string& base, Daemon& daemon, std::vector<Row>& rows) {
  const std::string native_root = base + "/native";
  const std::string data_dir = base + "/data";
  const std::string mnt = base + "/mnt";
  const int n = o.p8_dbs, clients = o.p8_clients;
  const std::string label = WithCommas(n) + " DBs, " + std::to_string(clients) +
                            " clients, max-open " + std::to_string(o.p8_max_open);

  std::cerr << "bench: P8: creating " << n << " databases per side" << std::endl;
  auto t0 = Clock::now();
  CreateNativeDbs([&](int i) { return P8DbPath(native_root, i); }, n);
  if (!o.native_only) {
    CreateNativeDbs([&](int i) { return P8DbPath(data_dir + "/tenants", i); }, n);
    CreateNativeDbs([&](int i) { return P8WarmPath(data_dir + "/tenants", i); }, o.p8_max_open);
  }
  std::cerr << "bench: P8: created in " << SecondsSince(t0) << " s" << std::endl;

  std::vector<Side> sides = {{"native", native_root}};
  std::optional<FdPeakSampler> sampler;
  long long rss_before = 0, rss_after = 0;
  std::cerr << "bench: P8: touching every native database once" << std::endl;
  TouchAll([&](int i) { return P8DbPath(native_root, i); }, n, clients);
  if (!o.native_only) {
    const std::string config = base + "/p8.yaml";
    {
      std::ofstream c(config);
      c << "handles:\n  max-open: " << o.p8_max_open << "\n";
    }
    daemon.Start(o.tenantfs, mnt, data_dir, base + "/tenantfs.log",
                 {"--config", config, "--http-addr", "127.0.0.1:" + std::to_string(FreePort())});
    sides.push_back({"tenantfs", mnt});
    const pid_t pid = g_daemon_pid;
    std::cerr << "bench: P8: daemon fds at idle: " << ProcFdCount(pid) << std::endl;
    sampler.emplace(pid);
    TouchAll([&](int i) { return P8WarmPath(mnt, i); }, o.p8_max_open, clients);
    TouchAll([&](int i) { return P8WarmPath(mnt, i); }, o.p8_max_open, clients);
    rss_before = ProcStatusBytes(pid, "VmRSS");
    auto t1 = Clock::now();
    std::cerr << "bench: P8: touching every database once through the mount" << std::endl;
    TouchAll([&](int i) { return P8DbPath(mnt, i); }, n, clients);
    rss_after = ProcStatusBytes(pid, "VmRSS");
    std::cerr << "bench: P8: touched in " << SecondsSince(t1) << " s; daemon RSS "
              << rss_before / 1024 << " KiB before, " << rss_after / 1024 << " KiB after"
              << std::endl;
  }

  auto res = Alternate(sides, o, label + ": open + SELECT + close", [&](const Side& s, double b) {
    return std::vector<Measurement>{
        OpenSelectLoad([&](int i) { return P8DbPath(s.root, i); }, clients, n, b)};
  });
  const bool two = sides.size() == 2;
  auto add = [&](Row row, const std::function<double(Measurement&)>& f) {
    row.native = f(res[0][0]);
    if (two) row.tenantfs = f(res[1][0]);
    rows.push_back(std::move(row));
  };
  Row rr{label + ", open + SELECT + close, req/s"};
  rr.unit = "req/s";
  add(rr, [](Measurement& m) { return m.Rate(); });
  Row r50{label + ", open + SELECT + close, p50"};
  r50.unit = "us";
  add(r50, [](Measurement& m) { return m.Percentile(0.50); });
  Row r99{label + ", open + SELECT + close, p99"};
  r99.unit = "us";
  add(r99, [](Measurement& m) { return m.Percentile(0.99); });
  if (!two) return;

  const pid_t pid = g_daemon_pid;
  sampler->Stop();
  if (!daemon.Alive()) throw std::runtime_error("tenantfs died during the P8 run");
  std::cerr << "bench: P8: peak daemon fds " << sampler->peak() << ": " << sampler->at_peak()
            << std::endl;
  Row fds{label + ", daemon peak fds (P8)"};
  fds.unit = "fds";
  fds.tenantfs = sampler->peak();
  fds.target = "≤ 300";
  fds.better = Better::kLower;
  fds.threshold = 300;
  fds.judge_tenantfs_value = true;
  rows.push_back(fds);
  Row rss{label + ", daemon peak RSS (P8)"};
  rss.unit = "MiB";
  rss.tenantfs = static_cast<double>(ProcStatusBytes(pid, "VmHWM")) / (1024 * 1024);
  rss.target = "≤ 256 MiB";
  rss.better = Better::kLower;
  rss.threshold = 256;
  rss.judge_tenantfs_value = true;
  rows.push_back(rss);
  Row per{"daemon RAM per known idle database, " + WithCommas(n) + " DBs touched once"};
  per.unit = "B";
  per.tenantfs = static_cast<double>(rss_after - rss_before) / n;
  per.target = "well under 1 KiB";
  per.better = Better::kLower;
  per.threshold = 1024;
  per.judge_tenantfs_value = true;
  rows.push_back(per);
}

// The standard workloads (P1-P3, P5, P6; P4 with --node) on both sides, into `rows`.
void RunWorkloads(const Options& o, const std::string& base, Daemon& daemon,
                  std::vector<Row>& rows) {
  const std::string native_root = base + "/native";
  const std::string data_dir = base + "/data";
  const std::string mnt = base + "/mnt";
  std::vector<Side> sides = {{"native", native_root}};
  if (!o.native_only) {
    daemon.Start(o.tenantfs, mnt, data_dir, base + "/tenantfs.log");
    sides.push_back({"tenantfs", mnt});
  }
  const bool two = sides.size() == 2;
  auto col = [&](std::vector<std::vector<Measurement>>& res, size_t k,
                 const std::function<double(Measurement&)>& f, Row row) {
    row.native = f(res[0][k]);
    if (two) row.tenantfs = f(res[1][k]);
    rows.push_back(std::move(row));
  };
  auto rate = [](Measurement& m) { return m.Rate(); };
  auto p50 = [](Measurement& m) { return m.Percentile(0.50); };
  auto p99 = [](Measurement& m) { return m.Percentile(0.99); };
  // CPU per operation: the client's (both sides) and the daemon's (tenantfs only),
  // to tell a CPU-bound path from one that waits.
  auto cpu_rows = [&](std::vector<std::vector<Measurement>>& res, const std::string& what) {
    Row c{"client CPU per " + what};
    c.unit = "us";
    col(
        res, 0, [](Measurement& m) { return m.ops > 0 ? 1e6 * m.cpu_s / m.ops : 0; }, c);
    if (two) {
      Row d{"daemon CPU per " + what};
      d.unit = "us";
      Measurement& m = res[1][0];
      d.tenantfs = m.ops > 0 ? 1e6 * m.daemon_cpu_s / m.ops : 0;
      rows.push_back(d);
    }
  };

  for (const Side& s : sides) {
    std::string dir = s.root + "/bench";
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error("mkdir " + dir + " (create a tenant): " + std::strerror(errno));
    }
  }

  // P1, P2: 1-row write transactions.
  struct Mode {
    const char* journal;
    const char* sync;
    const char* name;
    const char* goal;
    double threshold;
  };
  const Mode modes[] = {{"WAL", "NORMAL", "wal_normal", "P1", 0.5},
                        {"WAL", "FULL", "wal_full", "P2", 0.8},
                        {"DELETE", "FULL", "delete_full", "P2", 0.8}};
  for (const Mode& m : modes) {
    std::string label = std::string("1-row write tx/s, ") + m.journal + " + " + m.sync;
    auto res = Alternate(sides, o, label, [&](const Side& s, double budget) {
      return WriteTxs({s.root + "/bench/w_" + m.name + ".db"}, m.journal, m.sync, budget);
    });
    Row row{label + " (" + m.goal + ")"};
    row.unit = "tx/s";
    char t[32];
    std::snprintf(t, sizeof t, "≥ %.2f× native", m.threshold);
    row.target = t;
    row.better = Better::kHigher;
    row.threshold = m.threshold;
    col(res, 0, rate, row);
    if (std::string(m.name) == "wal_normal") cpu_rows(res, "tx, WAL + NORMAL");
  }

  // P3 and the concurrent variant: open + 1-row SELECT + close on existing WAL dbs.
  std::cerr << "bench: creating " << o.dbs << " databases per side" << std::endl;
  for (const Side& s : sides) CreateReadDbs(s.root, o.dbs);
  {
    auto res =
        Alternate(sides, o, "open + SELECT + close, 1 client", [&](const Side& s, double budget) {
          return std::vector<Measurement>{OpenSelectLoad(s.root, 1, o.dbs, budget)};
        });
    std::string w = "open + SELECT + close, 1 client, " + std::to_string(o.dbs) + " DBs";
    Row r50{w + ", p50 (P3)"};
    r50.unit = "us";
    r50.target = "≤ 1.50× native";
    r50.better = Better::kLower;
    r50.threshold = 1.5;
    col(res, 0, p50, r50);
    Row r99{w + ", p99"};
    r99.unit = "us";
    col(res, 0, p99, r99);
    Row rr{w + ", req/s"};
    rr.unit = "req/s";
    col(res, 0, rate, rr);
    cpu_rows(res, "request, 1 client");
  }
  {
    std::string w = "open + SELECT + close, " + std::to_string(o.threads) + " threads, " +
                    std::to_string(o.dbs) + " DBs";
    auto res = Alternate(sides, o, w, [&](const Side& s, double budget) {
      return std::vector<Measurement>{OpenSelectLoad(s.root, o.threads, o.dbs, budget)};
    });
    Row r50{w + ", p50"};
    r50.unit = "us";
    col(res, 0, p50, r50);
    Row r99{w + ", p99"};
    r99.unit = "us";
    col(res, 0, p99, r99);
    Row rr{w + ", req/s"};
    rr.unit = "req/s";
    col(res, 0, rate, rr);
    Row rb{w + ", busy-handler sleeps per 1000 req"};
    rb.unit = "";
    col(
        res, 0, [](Measurement& m) { return m.ops > 0 ? 1000 * m.busy_sleeps / m.ops : 0; }, rb);
    cpu_rows(res, "request, " + std::to_string(o.threads) + " threads");
  }

  // P5: one database alone, then two written in parallel (a thread each).
  {
    auto res =
        Alternate(sides, o, "parallel databases, WAL + NORMAL", [&](const Side& s, double budget) {
          std::string d = s.root + "/bench/";
          auto one = WriteTxs({d + "p_single.db"}, "WAL", "NORMAL", budget);
          auto two = WriteTxs({d + "p_a.db", d + "p_b.db"}, "WAL", "NORMAL", budget);
          return std::vector<Measurement>{std::move(one[0]), std::move(two[0]), std::move(two[1])};
        });
    Row r1{"write tx/s, 1 DB alone, WAL + NORMAL"};
    r1.unit = "tx/s";
    col(res, 0, rate, r1);
    Row ra{"write tx/s, 2 DBs in parallel: DB A"};
    ra.unit = "tx/s";
    col(res, 1, rate, ra);
    Row rb{"write tx/s, 2 DBs in parallel: DB B"};
    rb.unit = "tx/s";
    col(res, 2, rate, rb);
    Row sc{"2 DBs in parallel, (A + B) / 1 DB (P5)"};
    sc.unit = "x";
    sc.target = "≥ 1.70× (tenantfs column)";
    sc.better = Better::kHigher;
    sc.threshold = 1.7;
    sc.judge_tenantfs_value = true;
    auto scaling = [&](size_t s) {
      double single = res[s][0].Rate();
      return single > 0 ? (res[s][1].Rate() + res[s][2].Rate()) / single : 0.0;
    };
    sc.native = scaling(0);
    if (two) sc.tenantfs = scaling(1);
    rows.push_back(sc);
  }

  // P6: the commit cost of a small transaction must not grow with the database:
  // 1-row write tx/s on a 1 MiB database and on a large one (--p6-mib).
  {
    for (const Side& s : sides) {
      std::cerr << "bench: P6: filling a " << o.p6_mib << " MiB database (" << s.name << ")"
                << std::endl;
      auto t0 = Clock::now();
      FillDb(s.root + "/bench/p6_small.db", 1);
      FillDb(s.root + "/bench/p6_big.db", o.p6_mib);
      std::cerr << "bench: P6: filled in " << SecondsSince(t0) << " s" << std::endl;
    }
    auto res =
        Alternate(sides, o, "P6 commit cost vs database size", [&](const Side& s, double budget) {
          std::string d = s.root + "/bench/";
          auto small = WriteTxs({d + "p6_small.db"}, "WAL", "NORMAL", budget);
          auto big = WriteTxs({d + "p6_big.db"}, "WAL", "NORMAL", budget);
          return std::vector<Measurement>{std::move(small[0]), std::move(big[0])};
        });
    std::string big_name = std::to_string(o.p6_mib) + " MiB";
    Row rs{"1-row write tx/s, 1 MiB DB, WAL + NORMAL"};
    rs.unit = "tx/s";
    col(res, 0, rate, rs);
    Row rl{"1-row write tx/s, " + big_name + " DB, WAL + NORMAL"};
    rl.unit = "tx/s";
    col(res, 1, rate, rl);
    Row cost{"commit cost, " + big_name + " DB / 1 MiB DB (P6)"};
    cost.unit = "x";
    cost.target = "≤ 1.20× (tenantfs column)";
    cost.better = Better::kLower;
    cost.threshold = 1.2;
    cost.judge_tenantfs_value = true;
    auto ratio = [&](size_t s) {
      double big = res[s][1].Rate();
      return big > 0 ? res[s][0].Rate() / big : 0.0;
    };
    cost.native = ratio(0);
    if (two) cost.tenantfs = ratio(1);
    rows.push_back(cost);
  }

  // P4: Node better-sqlite3, open per request (bench/node_bench.mjs).
  {
    std::string why = o.node ? NodeUnavailable(o) : "not run (pass --node)";
    if (!why.empty()) {
      Row r{"Node better-sqlite3 open per request (P4)"};
      r.note = why;
      r.target = "≥ 0.70× req/s, p50 ≤ 1.50×";
      rows.push_back(r);
    } else {
      std::cerr << "bench: node " << o.node_script << std::endl;
      auto metrics = RunNode(o, native_root, two ? mnt : "");
      auto find = [&](const std::string& sc, const std::string& side) -> std::optional<NodeMetric> {
        for (auto& m : metrics)
          if (m.scenario == sc && m.side == side) return m;
        return std::nullopt;
      };
      struct Scn {
        std::string key, label;
        bool p4;
      };
      const Scn scns[] = {{"w4", "Node, 4 worker threads, 100 DBs", true},
                          {"c100", "Node, 100 clients, a DB each", false},
                          {"c100busy", "Node, 100 clients + 1 DB under heavy writes", false}};
      for (const Scn& sc : scns) {
        auto n = find(sc.key, "native");
        auto t = find(sc.key, "tenantfs");
        if (!n) throw std::runtime_error("node_bench.mjs gave no result for " + sc.key);
        Row rr{sc.label + ", req/s" + (sc.p4 ? " (P4)" : "")};
        rr.unit = "req/s";
        rr.native = n->rps;
        if (t) rr.tenantfs = t->rps;
        Row r50{sc.label + ", p50" + (sc.p4 ? " (P4)" : "")};
        r50.unit = "us";
        r50.native = n->p50;
        if (t) r50.tenantfs = t->p50;
        Row r99{sc.label + ", p99"};
        r99.unit = "us";
        r99.native = n->p99;
        if (t) r99.tenantfs = t->p99;
        if (sc.p4) {
          rr.target = "≥ 0.70× native";
          rr.better = Better::kHigher;
          rr.threshold = 0.7;
          r50.target = "≤ 1.50× native";
          r50.better = Better::kLower;
          r50.threshold = 1.5;
        }
        rows.push_back(rr);
        rows.push_back(r50);
        rows.push_back(r99);
      }
      // "No request waits on another database": how much one busy database inflates
      // the p99 of requests to the others, through the mount against natively.
      auto nb = find("c100", "native"), nh = find("c100busy", "native");
      auto tb = find("c100", "tenantfs"), th = find("c100busy", "tenantfs");
      Row inf{"Node, 100 clients: p99 with 1 busy DB / p99 without (P4, proxy)"};
      inf.unit = "x";
      inf.target = "≤ 1.50× native's inflation";
      inf.better = Better::kLower;
      inf.threshold = 1.5;
      if (nb && nh && nb->p99 > 0) inf.native = nh->p99 / nb->p99;
      if (tb && th && tb->p99 > 0) inf.tenantfs = th->p99 / tb->p99;
      rows.push_back(inf);
    }
  }

  if (two && !daemon.Alive()) throw std::runtime_error("tenantfs died during the run");
}

int Main(int argc, char** argv) {
  Options o = ParseOptions(argc, argv);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
  }
  std::signal(SIGPIPE, SIG_IGN);

  if (!o.native_only && ::access(o.tenantfs.c_str(), X_OK) != 0) {
    std::cerr << "tenantfs_bench: daemon not executable: " << o.tenantfs << "\n";
    return 1;
  }

  std::string tmpl = o.dir + "/tenantfs-bench.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    std::cerr << "tenantfs_bench: mkdtemp " << tmpl << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  const std::string base = fs::canonical(buf.data()).string();
  const std::string native_root = base + "/native";
  const std::string data_dir = base + "/data";
  const std::string mnt = base + "/mnt";
  for (const auto& d : {native_root, data_dir, mnt}) fs::create_directories(d);

  Daemon daemon;
  std::vector<Row> rows;
  std::string failure;
  const std::string busy_at_start = MachineBusy();
  try {
    if (o.p8) {
      RunP8(o, base, daemon, rows);
    } else {
      RunWorkloads(o, base, daemon, rows);
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }

  std::string stop_problem = daemon.Stop();
  if (!o.keep) {
    if (IsMounted(mnt)) {
      std::cerr << "tenantfs_bench: " << mnt << " still mounted; leaving " << base << "\n";
    } else {
      std::error_code ec;
      fs::remove_all(base, ec);
      if (ec) std::cerr << "tenantfs_bench: removing " << base << ": " << ec.message() << "\n";
    }
  } else {
    std::cerr << "tenantfs_bench: kept " << base << "\n";
  }

  if (!failure.empty()) {
    std::cerr << "tenantfs_bench: FAILED: " << failure << "\n";
    if (!stop_problem.empty()) std::cerr << "tenantfs_bench: also: " << stop_problem << "\n";
    return Stopping() ? 130 : 1;
  }
  const std::string header = Header(o, busy_at_start);
  std::cout << header << "\n\n";
  PrintTable(std::cout, rows);
  std::cout.flush();
  if (!o.json.empty()) WriteJson(o.json, header, o, rows);
  if (!stop_problem.empty()) {
    std::cerr << "tenantfs_bench: FAILED: " << stop_problem << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "tenantfs_bench: " << e.what() << "\n";
    return 1;
  }
}

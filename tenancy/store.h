// Store: the registry of tenants and databases and the data path to their files.
//
// Backing layout (see tenancy/README.md): <data.dir>/tenants/<tenant>/<db>[-journal|-wal|-shm].
// Tenants and databases are discovered lazily on lookup: start-up does no
// per-database work, and a database costs memory only once it has been touched.
//
// Every mutating operation on a database's files (create, write, truncate,
// fallocate, fsync, unlink) runs through that database's SerialQueue and reports
// through a callback, possibly on another thread. Reads and stats run on the
// caller's thread and never queue.
//
// Thread safety: all methods are thread-safe.
// Lock order: Store::mu_ -> Tenant::mu_ -> HandleCache::mu_ -> Database::mu_ -> File::mu_.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "metrics/metrics.h"
#include "tenancy/capture.h"
#include "tenancy/executor.h"
#include "tenancy/handle_cache.h"
#include "tenancy/names.h"
#include "tenancy/serial_queue.h"
#include "tenancy/small_mutex.h"
#include "tenancy/status.h"

namespace tenancy {

class Database;
class Tenant;

// One incarnation of a backing file. Unlinking the name and creating it again
// gives a new File; handles on the old one keep working on the old data, as on
// any POSIX file system. The backing fd is shared by every handle on the file.
class File {
 public:
  File(std::shared_ptr<Database> db, FileKind kind);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  FileKind kind() const { return kind_; }
  Database& db() const { return *db_; }
  const std::shared_ptr<Database>& db_ptr() const { return db_; }
  // The backing path (derived from the database's, not stored: files are many).
  std::string path() const;
  bool unlinked() const { return unlinked_.load(std::memory_order_acquire); }

  // Counts one logical handle (an application's open file). The backing fd is
  // opened lazily by Fd() and may be closed by the handle cache meanwhile.
  Status Acquire();
  // Drops one handle; an unlinked file's fd goes with its last handle.
  void Release();
  // The backing fd, opened if needed. REQUIRES: the database pinned (CacheUse).
  Result<int> Fd();
  // Closes the backing fd unless the file is unlinked (which could not be
  // reopened). REQUIRES: the database pinned by nobody (the cache evicting).
  void CloseFd();
  // The fd if open, else -1 (for stats while pinned).
  int fd_if_open() const { return fd_.load(std::memory_order_acquire); }

 private:
  friend class Store;
  const std::shared_ptr<Database> db_;
  const FileKind kind_;
  std::atomic<bool> unlinked_{false};
  SmallMutex mu_;            // leaf
  std::atomic<int> fd_{-1};  // written under mu_
  int users_ = 0;            // guarded by mu_
};

// The Files of one database by kind; null = not known to exist. The main
// file's slot is inline; the companions' (-journal, -wal, -shm) are allocated
// while one of them is set: an idle database has none (SQLite removes -wal and
// -shm at its last close), so it keeps 24 bytes here instead of 64.
// Not thread-safe (guarded by Database::mu_).
class FileSlots {
 public:
  // The file of kind k, or a null pointer. The reference is valid until the next Set or Take.
  const std::shared_ptr<File>& Get(int k) const {
    if (k == 0) return main_;
    return companions_ ? companions_[k - 1] : kNone;
  }
  void Set(int k, std::shared_ptr<File> f) {
    if (k == 0) {
      main_ = std::move(f);
      return;
    }
    if (!companions_) companions_ = std::make_unique<std::shared_ptr<File>[]>(kBackedFileKinds - 1);
    companions_[k - 1] = std::move(f);
  }
  // Empties slot k, returning what it held (for the caller to drop outside locks).
  std::shared_ptr<File> Take(int k) {
    if (k == 0) return std::move(main_);
    if (!companions_) return nullptr;
    std::shared_ptr<File> f = std::move(companions_[k - 1]);
    bool any = false;
    for (int i = 0; i < kBackedFileKinds - 1; ++i) any = any || companions_[i] != nullptr;
    if (!any) companions_.reset();
    return f;
  }
  // fn(File&) for every file set.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (int k = 0; k < kBackedFileKinds; ++k) {
      if (const auto& f = Get(k)) fn(*f);
    }
  }

 private:
  static inline const std::shared_ptr<File> kNone;
  std::shared_ptr<File> main_;
  std::unique_ptr<std::shared_ptr<File>[]> companions_;  // kJournal..kShm, or null
};

class Tenant {
 public:
  Tenant(std::string name, std::string dir) : name_(std::move(name)), dir_(std::move(dir)) {}
  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }

 private:
  friend class Store;
  const std::string name_;
  const std::string dir_;
  // Hashes and compares databases by name, and names (string_view) with them.
  struct ByName {
    using is_transparent = void;
    static std::string_view NameOf(std::string_view name) { return name; }
    static std::string_view NameOf(const std::shared_ptr<Database>& db);
    template <typename A>
    size_t operator()(const A& a) const noexcept {
      return std::hash<std::string_view>{}(NameOf(a));
    }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const noexcept {
      return NameOf(a) == NameOf(b);
    }
  };
  std::mutex mu_;  // after Store::mu_, before Database::mu_
  // Guarded by mu_. A set keyed by each database's own name, looked up by
  // string_view: entries are as many as databases known, so each is one
  // 24-byte node (no copy of the name, no cached hash: ByName is noexcept).
  std::unordered_set<std::shared_ptr<Database>, ByName, ByName> dbs_;
  bool removed_ = false;  // guarded by mu_
};

// A known database. Kept while known (the registry, the kernel's nodes), so an
// idle one is small: its capture state is dropped when the handle cache closes
// it (Capture::Unload), its queue is embedded and holds no container when
// empty, its locks are 4-byte SmallMutexes, and paths are derived from the
// tenant's directory instead of stored.
class Database final : public std::enable_shared_from_this<Database>, public Capture::Owner {
 public:
  // REQUIRES: executor, shared and cache outlive the database.
  Database(std::shared_ptr<Tenant> tenant, std::string name, Executor* executor,
           const Capture::Shared& shared, HandleCache* cache)
      : tenant_(std::move(tenant)),
        name_(std::move(name)),
        queue_(executor),
        capture_(shared, *this),
        cache_(cache) {
    cache_entry_.db = this;
  }
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  Tenant& tenant() const { return *tenant_; }
  const std::string& tenant_name() const override;
  const std::string& name() const override { return name_; }
  // Submit with the database's shared_ptr as the queue's owner.
  SerialQueue& queue() { return queue_; }
  std::string BackingPath(FileKind kind) const override;
  // REQUIRES: on queue() for everything but position().
  Capture& capture() { return capture_; }
  // Bookkeeping of the handle cache (guarded by its mutex).
  CacheEntry& cache_entry() { return cache_entry_; }
  // Closes every backing fd of the database and drops its capture state (unless a
  // transaction is in progress). REQUIRES: nothing of it in flight (unpinned).
  void CloseBacking();
  // Backing fds open now (files and log); any thread.
  int OpenFds();
  // The backing fd of one of its files, opened if needed, making the File if
  // the kernel has not looked it up yet (so identities stay one per file).
  // REQUIRES: the database pinned. NotFound when the file does not exist.
  Result<int> FdOf(FileKind kind) override;
  // file.Fd() (a file of this database); on EMFILE/ENFILE, counted and logged,
  // closes the least recently used unpinned database and tries once more.
  // REQUIRES: the database pinned; no Database or File lock held.
  Result<int> OpenFd(File& file);
  // After an open failed with err: on EMFILE/ENFILE counts and logs it and closes
  // the least recently used unpinned database; true when one was closed (retry).
  // REQUIRES: as OpenFd.
  bool MadeRoomAfter(int err, const std::string& path);
  // One more backing fd is about to be opened: the handle cache makes room.
  // REQUIRES: the database pinned; no Database or File lock held.
  void ReserveFd() override;

 private:
  friend class Store;
  const std::shared_ptr<Tenant> tenant_;
  const std::string name_;
  SerialQueue queue_;
  Capture capture_;
  HandleCache* const cache_;
  CacheEntry cache_entry_;
  SmallMutex mu_;         // after Tenant::mu_, before File::mu_
  bool deleted_ = false;  // guarded by mu_
  FileSlots files_;       // guarded by mu_
};

inline std::string_view Tenant::ByName::NameOf(const std::shared_ptr<Database>& db) {
  return db->name();
}

class Store {
 public:
  struct Options {
    std::string data_dir;
    Executor* executor = nullptr;  // runs queued work; must outlive the Store
    bool verify_each_commit = false;  // recompute full checksums after commits (tests)
    ChangeLog::Options log_options;
    std::function<int64_t()> now_ms;  // default: the system clock
    metrics::Metrics* metrics = nullptr;  // commit durations (optional)
    size_t max_open = 256;             // handles.max-open: backing fds
    int64_t idle_timeout_ms = 60000;   // handles.idle-timeout
  };
  using Done = std::function<void(Status)>;
  using DoneFile = std::function<void(Result<std::shared_ptr<File>>)>;
  using DoneSize = std::function<void(Result<size_t>)>;
  using DonePos = std::function<void(Result<Position>)>;

  // Creates <data_dir>/tenants if missing. Does not scan anything. Notes whether
  // the last shutdown was clean (Close() ran); if not, each database verifies its
  // position against its files when first touched.
  static Result<std::unique_ptr<Store>> Open(const Options& options);
  // Makes every captured change set durable and marks the shutdown clean.
  // REQUIRES: no more requests arrive; the executor is drained.
  Status Close();
  bool unclean_start() const { return unclean_start_; }
  CaptureStats& stats() { return stats_; }

  const std::string& tenants_dir() const { return tenants_dir_; }

  // Tenants.
  Result<struct stat> StatRoot() const;
  Result<std::shared_ptr<Tenant>> LookupTenant(std::string_view name);
  Result<std::shared_ptr<Tenant>> CreateTenant(std::string_view name, mode_t mode);
  Status RemoveTenant(std::string_view name);  // NotEmpty while it holds a database
  Result<std::vector<std::string>> ListTenants() const;
  Result<struct stat> StatTenant(const Tenant& tenant) const;
  Status SyncTenantDir(const Tenant& tenant) const;

  // Files of a tenant, by their mount name ("app.db", "app.db-wal", ...).
  Result<std::shared_ptr<File>> LookupFile(const std::shared_ptr<Tenant>& tenant,
                                           std::string_view name);
  Result<std::vector<std::string>> ListFiles(const Tenant& tenant) const;
  // open(O_CREAT[|O_EXCL]) semantics. A companion needs its database to exist.
  void CreateFile(const std::shared_ptr<Tenant>& tenant, std::string_view name, mode_t mode,
                  bool exclusive, DoneFile done);
  // Unlinking a database removes its companions (and its change log) with it.
  void Unlink(const std::shared_ptr<Tenant>& tenant, std::string_view name, Done done);
  // The database a "<db>-pos" name stands for (NotFound unless it exists).
  Result<std::shared_ptr<Database>> LookupPos(const std::shared_ptr<Tenant>& tenant,
                                              std::string_view name);
  // The database's position, loading it first if needed (runs on its queue).
  void ReadPosition(std::shared_ptr<Database> db, DonePos done);
  // SPEC's -pos content: "%016x/%016x\n" of TXID and checksum.
  static std::string FormatPosition(const Position& pos);
  static constexpr size_t kPosFileSize = 34;

  // Data path. Write/Truncate/Fallocate/Fsync REQUIRE the file Acquire()d.
  Result<struct stat> StatFile(File& file) const;
  Result<size_t> Read(File& file, char* buf, size_t size, off_t offset);
  void Write(std::shared_ptr<File> file, std::string data, off_t offset, DoneSize done);
  void Truncate(std::shared_ptr<File> file, off_t size, Done done);
  void Fallocate(std::shared_ptr<File> file, int mode, off_t offset, off_t length, Done done);
  void Fsync(std::shared_ptr<File> file, bool datasync, Done done);
  // chmod/chown/utimens on the backing file (metadata, not queued).
  Status SetMode(File& file, mode_t mode);
  Status SetOwner(File& file, uid_t uid, gid_t gid);
  Status SetTimes(File& file, const struct timespec times[2]);

  // The store-wide retention pass: for every database whose log was loaded since
  // start, drops log segments older than retention_ms, then, while the logs hold
  // more than max_bytes (0 = no bound), the oldest segment node-wide. The newest
  // record of a database is never dropped. It visits only the databases whose
  // logs hold more than one segment (an index kept as logs change), so its cost
  // follows the databases written, not those known. Blocks the caller until
  // done; run it from a housekeeping thread, never from a queue task.
  // Returns bytes freed.
  uint64_t EnforceRetention(int64_t retention_ms, uint64_t max_bytes);
  // Databases the retention pass would visit now (their logs hold old segments).
  size_t trimmable_databases() {
    std::lock_guard lock(trimmable_mu_);
    return trimmable_.size();
  }
  // Change-set bytes held by the logs of databases touched since start.
  int64_t retention_bytes() const { return stats_.log_bytes.load(); }

  // The handle cache: databases with open backing fds, evictions, idle sweep.
  size_t databases_open() const { return cache_->open(); }
  uint64_t evictions() const { return cache_->evictions(); }
  bool IsOpen(Database& db);
  // Closes databases idle past handles.idle-timeout (housekeeping). Returns how many.
  size_t SweepIdle() { return cache_->Sweep(); }
  // Admission to the handle budget (handle_cache.h): databases pinned now, the
  // most at once, backing fds counted, pins that waited for room, waits that
  // gave up (the budget exceeded; should stay 0).
  size_t pinned_databases() const { return cache_->pinned(); }
  size_t max_pinned() const { return cache_->max_pinned(); }
  size_t handle_fds() const { return cache_->fds(); }
  uint64_t admission_waits() const { return cache_->admission_waits(); }
  uint64_t admission_overruns() const { return cache_->overruns(); }
  // Times an open() of a backing file failed with EMFILE/ENFILE.
  uint64_t fd_exhaustions() const { return cache_->exhaustions(); }
  // The fd budget (handles.max-open).
  size_t max_open() const { return cache_->max_open(); }

  // ---- Replication ----
  // Called on a database's queue whenever its position changes (commit, apply,
  // load) or it is deleted; must be quick. Set once, before serving.
  using ChangeListener = std::function<void(const std::string& tenant, const std::string& db)>;
  void SetChangeListener(ChangeListener fn) { listener_ = std::move(fn); }
  // A database by name. With create (replica), makes the tenant directory and
  // an empty main file when missing. NotFound otherwise.
  Result<std::shared_ptr<Database>> OpenDatabase(std::string_view tenant, std::string_view db,
                                                 bool create);
  // Runs fn on db's queue, the database pinned and its capture loaded, and
  // waits for it. Never call it from a FUSE worker or a queue task.
  Status RunOn(const std::shared_ptr<Database>& db, const std::function<Status(Capture&)>& fn);
  // Every database on disk as (tenant, db): O(databases), for the stream's hello.
  Result<std::vector<std::pair<std::string, std::string>>> ListDatabases() const;
  // Deletes a database with its companions and log (a replica following its primary).
  Status DropDatabase(std::string_view tenant, std::string_view db);

  // Mutating operations submitted and not yet finished, all databases.
  int64_t queue_depth() const { return queued_.load(std::memory_order_relaxed); }

 private:
  explicit Store(const Options& options);
  Result<std::shared_ptr<Database>> LookupDatabase(const std::shared_ptr<Tenant>& tenant,
                                                   const std::string& db_name, bool create);
  // Runs op on db's queue, counted in queue_depth(). REQUIRES: db valid until
  // Submit returns (op may hold it; never a pointer op has moved from).
  void Submit(const std::shared_ptr<Database>& db, bool inline_ok, std::function<void()> op);
  // Every database in the registry.
  std::vector<std::shared_ptr<Database>> KnownDatabases();
  // The databases whose logs hold a segment they could trim (still alive).
  std::vector<std::shared_ptr<Database>> TrimmableDatabases();

  const Options options_;
  const std::string data_dir_;
  const std::string tenants_dir_;
  const std::string log_dir_;
  Executor* const executor_;
  // Declared before the registry: databases unlink themselves from it when destroyed.
  std::unique_ptr<HandleCache> cache_;
  bool unclean_start_ = false;
  CaptureStats stats_;
  Capture::Shared capture_shared_;  // set before the first database is made
  mutable std::mutex mu_;  // first in lock order
  std::unordered_map<std::string, std::shared_ptr<Tenant>> tenants_;  // guarded by mu_
  // Databases with OldestTrimmable() finite (Capture::Shared::on_trimmable): the
  // retention pass visits these, not every database known. Leaf lock.
  std::mutex trimmable_mu_;
  std::unordered_set<Database*> trimmable_;  // guarded by trimmable_mu_
  std::atomic<int64_t> queued_{0};
  ChangeListener listener_;  // set before serving, then read-only
};

}  // namespace tenancy

#include "tenancy/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <future>

#include "metrics/log.h"
#include "tenancy/file_io.h"

namespace tenancy {

namespace {

Result<struct stat> StatPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  return st;
}

// Names in a directory, without "." and "..".
Result<std::vector<std::string>> ReadDirNames(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opendir " + dir);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

}  // namespace

// ---- File ----

File::File(std::shared_ptr<Database> db, FileKind kind) : db_(std::move(db)), kind_(kind) {}

std::string File::path() const { return db_->BackingPath(kind_); }

File::~File() {
  int fd = fd_.load();
  if (fd >= 0) ::close(fd);
}

Status File::Acquire() {
  std::lock_guard lock(mu_);
  // An unlinked file whose fd was closed cannot be reopened: the name may
  // already belong to a newer file.
  if (unlinked() && fd_.load(std::memory_order_relaxed) < 0) {
    return Status::FromErrno(ESTALE, "open " + path() + " (unlinked)");
  }
  ++users_;
  return Status::Ok();
}

void File::Release() {
  std::lock_guard lock(mu_);
  if (--users_ == 0 && unlinked()) {
    int fd = fd_.exchange(-1, std::memory_order_acq_rel);
    if (fd >= 0) ::close(fd);
  }
}

Result<int> File::Fd() {
  int fd = fd_.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  // Room first (no lock of ours held: making room closes other databases' files).
  db_->ReserveFd();
  std::lock_guard lock(mu_);
  fd = fd_.load(std::memory_order_relaxed);
  if (fd >= 0) return fd;
  const std::string backing = path();
  if (unlinked()) return Status::FromErrno(ESTALE, "open " + backing + " (unlinked)");
  fd = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && (errno == EACCES || errno == EROFS))
    fd = ::open(backing.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + backing);
  fd_.store(fd, std::memory_order_release);
  return fd;
}

void File::CloseFd() {
  std::lock_guard lock(mu_);
  if (unlinked()) return;  // kept until its last handle goes
  int fd = fd_.exchange(-1, std::memory_order_acq_rel);
  if (fd >= 0) ::close(fd);
}

Database::~Database() { cache_->Forget(cache_entry_); }

void Database::CloseBacking() {
  // No shared_ptr copies here: dropping the last reference to a File could
  // destroy this Database, whose destructor takes the cache mutex we run under.
  {
    std::lock_guard lock(mu_);
    files_.ForEach([](File& f) { f.CloseFd(); });
  }
  capture_.CloseFds();
  // Idle: what capture holds can be rebuilt from the log and the files on next
  // use. Safe whenever the database is unpinned, even with tasks queued: every
  // task pins before it touches capture (under the cache mutex we hold), so none
  // runs now and the next one reloads. (Waiting for an idle queue instead, to save
  // that reload, left a database closed while busy holding its state for as long
  // as it stayed known.) Unload keeps the state of a transaction in progress.
  capture_.Unload();
}

const std::string& Database::tenant_name() const { return tenant_->name(); }

void Database::ReserveFd() { cache_->Reserve(cache_entry_); }

int Database::OpenFds() {
  int n = capture_.log_fd_open() ? 1 : 0;
  std::lock_guard lock(mu_);
  files_.ForEach([&n](File& f) {
    if (f.fd_if_open() >= 0) ++n;
  });
  return n;
}

bool Database::MadeRoomAfter(int err, const std::string& path) {
  if (err != EMFILE && err != ENFILE) return false;
  // Out of fds (the process limit, or the system's): say so, make room.
  cache_->NoteExhaustion();
  LOG_WARN("out of file descriptors; closing the least recently used database",
           {{"file", path}, {"error", std::strerror(err)},
            {"open_databases", std::to_string(cache_->open())}});
  return cache_->EvictOne();
}

Result<int> Database::OpenFd(File& file) {
  auto fd = file.Fd();
  if (fd.ok() || !MadeRoomAfter(fd.status().os_errno(), file.path())) return fd;
  return file.Fd();  // once more
}

Result<int> Database::FdOf(FileKind kind) {
  std::shared_ptr<File> f;
  {
    std::lock_guard lock(mu_);
    int k = static_cast<int>(kind);
    f = files_.Get(k);
    if (!f) {
      std::string path = BackingPath(kind);
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
      f = std::make_shared<File>(shared_from_this(), kind);
      files_.Set(k, f);
    }
  }
  return OpenFd(*f);
}

bool Store::IsOpen(Database& db) { return cache_->IsListed(db.cache_entry()); }


std::string Database::BackingPath(FileKind kind) const {
  return tenant_->dir() + "/" + MakeFileName(name_, kind);
}

// ---- Store ----

Store::Store(const Options& options)
    : options_(options),
      data_dir_(options.data_dir),
      tenants_dir_(data_dir_ + "/tenants"),
      log_dir_(data_dir_ + "/log"),
      executor_(options.executor),
      cache_(std::make_unique<HandleCache>(
          options.max_open, options.idle_timeout_ms, options.now_ms,
          [](Database& db) { db.CloseBacking(); }, [](Database& db) { return db.OpenFds(); })) {
  capture_shared_.log_root = log_dir_;
  capture_shared_.log_options = options.log_options;
  capture_shared_.verify_each_commit = options.verify_each_commit;
  capture_shared_.now_ms = options.now_ms;
  capture_shared_.stats = &stats_;
  capture_shared_.metrics = options.metrics;
  capture_shared_.on_trimmable = [this](Capture::Owner& owner, bool trimmable) {
    auto* db = static_cast<Database*>(&owner);
    std::lock_guard lock(trimmable_mu_);
    if (trimmable) {
      trimmable_.insert(db);
    } else {
      trimmable_.erase(db);
    }
  };
  capture_shared_.on_position = [this](const std::string& tenant, const std::string& db) {
    if (listener_) listener_(tenant, db);
  };
}

namespace {
constexpr const char* kCleanMarker = "/CLEAN";
}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const Options& options) {
  if (options.executor == nullptr) return Status::InvalidArgument("store needs an executor");
  Options opts = options;
  if (!opts.now_ms) {
    opts.now_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
  std::unique_ptr<Store> store(new Store(opts));
  struct stat st;
  bool existed = ::stat(store->tenants_dir_.c_str(), &st) == 0;
  std::string marker = store->data_dir_ + kCleanMarker;
  bool clean = ::access(marker.c_str(), F_OK) == 0;
  store->unclean_start_ = existed && !clean;
  store->capture_shared_.unclean_start = store->unclean_start_;
  if (clean && ::unlink(marker.c_str()) != 0) return Status::FromErrno(errno, "unlink " + marker);
  Status s = MakeDirs(store->tenants_dir_);
  if (!s.ok()) return s;
  s = MakeDirs(store->log_dir_);
  if (!s.ok()) return s;
  return store;
}

std::vector<std::shared_ptr<Database>> Store::KnownDatabases() {
  std::vector<std::shared_ptr<Database>> dbs;
  std::lock_guard lock(mu_);
  for (auto& [name, tenant] : tenants_) {
    std::lock_guard tlock(tenant->mu_);
    for (auto& db : tenant->dbs_) dbs.push_back(db);
  }
  return dbs;
}

std::vector<std::shared_ptr<Database>> Store::TrimmableDatabases() {
  std::vector<std::shared_ptr<Database>> dbs;
  std::lock_guard lock(trimmable_mu_);
  dbs.reserve(trimmable_.size());
  for (Database* db : trimmable_) {
    // Null while its destructor runs (it leaves the index from there).
    if (auto p = db->weak_from_this().lock()) dbs.push_back(std::move(p));
  }
  return dbs;
}

Status Store::Close() {
  std::vector<std::shared_ptr<Database>> dbs = KnownDatabases();
  Status first;
  for (auto& db : dbs) {
    Status s = db->capture().Sync();  // queues are drained: nothing else runs
    if (!s.ok() && first.ok()) first = s;
  }
  if (!first.ok()) return first;
  std::string marker = data_dir_ + kCleanMarker;
  int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + marker);
  ::fsync(fd);
  ::close(fd);
  int dfd = ::open(data_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Result<struct stat> Store::StatRoot() const { return StatPath(tenants_dir_); }

Result<std::shared_ptr<Tenant>> Store::LookupTenant(std::string_view name) {
  if (!IsValidName(name)) return Status::NotFound("no tenant " + std::string(name));
  std::string key(name);
  std::lock_guard lock(mu_);
  auto it = tenants_.find(key);
  if (it != tenants_.end()) return it->second;
  std::string dir = tenants_dir_ + "/" + key;
  auto st = StatPath(dir);
  if (!st.ok()) return st.status();
  if (!S_ISDIR(st->st_mode)) return Status::NotFound("no tenant " + key);
  auto tenant = std::make_shared<Tenant>(key, dir);
  tenants_.emplace(key, tenant);
  return tenant;
}

Result<std::shared_ptr<Tenant>> Store::CreateTenant(std::string_view name, mode_t mode) {
  if (!IsValidName(name)) return Status::InvalidArgument("bad tenant name '" + std::string(name) + "'");
  std::string key(name);
  std::string dir = tenants_dir_ + "/" + key;
  std::lock_guard lock(mu_);
  if (::mkdir(dir.c_str(), mode & 07777) != 0) return Status::FromErrno(errno, "mkdir " + dir);
  auto tenant = std::make_shared<Tenant>(key, dir);
  tenants_[key] = tenant;
  return tenant;
}

Status Store::RemoveTenant(std::string_view name) {
  if (!IsValidName(name)) return Status::NotFound("no tenant " + std::string(name));
  std::string key(name);
  std::string dir = tenants_dir_ + "/" + key;
  std::lock_guard lock(mu_);
  if (::rmdir(dir.c_str()) != 0) return Status::FromErrno(errno, "rmdir " + dir);
  auto it = tenants_.find(key);
  if (it != tenants_.end()) {
    std::lock_guard tlock(it->second->mu_);
    it->second->removed_ = true;
    tenants_.erase(it);
  }
  return Status::Ok();
}

Result<std::vector<std::string>> Store::ListTenants() const {
  auto names = ReadDirNames(tenants_dir_);
  if (!names.ok()) return names.status();
  std::vector<std::string> out;
  for (auto& n : names.value()) {
    if (IsValidName(n)) out.push_back(std::move(n));
  }
  return out;
}

Result<struct stat> Store::StatTenant(const Tenant& tenant) const { return StatPath(tenant.dir()); }

Status Store::SyncTenantDir(const Tenant& tenant) const {
  int fd = ::open(tenant.dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + tenant.dir());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, "fsync " + tenant.dir());
  return Status::Ok();
}

Result<std::shared_ptr<Database>> Store::LookupDatabase(const std::shared_ptr<Tenant>& tenant,
                                                        const std::string& db_name, bool create) {
  std::lock_guard lock(tenant->mu_);
  if (tenant->removed_) return Status::NotFound("tenant " + tenant->name() + " was removed");
  auto it = tenant->dbs_.find(std::string_view(db_name));
  if (it != tenant->dbs_.end()) return *it;
  if (!create) {
    // Only a database whose main file exists is known; negative lookups cost nothing.
    struct stat st;
    std::string path = tenant->dir() + "/" + db_name;
    if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  }
  auto db = std::make_shared<Database>(tenant, db_name, executor_, capture_shared_, cache_.get());
  tenant->dbs_.insert(db);
  return db;
}

Result<std::shared_ptr<File>> Store::LookupFile(const std::shared_ptr<Tenant>& tenant,
                                                std::string_view name) {
  auto parsed = ParseFileName(name);
  if (!parsed || parsed->kind == FileKind::kPos) {
    return Status::NotFound("no file " + std::string(name));
  }
  auto db = LookupDatabase(tenant, parsed->db, /*create=*/false);
  if (!db.ok()) return db.status();
  Database& d = *db.value();
  int k = static_cast<int>(parsed->kind);
  std::lock_guard lock(d.mu_);
  if (d.deleted_) return Status::NotFound("no file " + std::string(name));
  if (const auto& f = d.files_.Get(k)) return f;
  std::string path = d.BackingPath(parsed->kind);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  auto f = std::make_shared<File>(db.value(), parsed->kind);
  d.files_.Set(k, f);
  return f;
}

Result<std::vector<std::string>> Store::ListFiles(const Tenant& tenant) const {
  auto names = ReadDirNames(tenant.dir());
  if (!names.ok()) return names.status();
  std::vector<std::string> out;
  for (auto& n : names.value()) {
    if (ParseFileName(n)) out.push_back(std::move(n));
  }
  return out;
}

void Store::Submit(const std::shared_ptr<Database>& db, bool inline_ok,
                   std::function<void()> op) {
  queued_.fetch_add(1, std::memory_order_relaxed);
  db->queue().Submit(
      [this, op = std::move(op)] {
        op();
        queued_.fetch_sub(1, std::memory_order_relaxed);
      },
      inline_ok, db);
}

void Store::CreateFile(const std::shared_ptr<Tenant>& tenant, std::string_view name, mode_t mode,
                       bool exclusive, DoneFile done) {
  auto parsed = ParseFileName(name);
  if (!parsed) return done(Status::InvalidArgument("bad file name '" + std::string(name) + "'"));
  if (parsed->kind == FileKind::kPos) {
    return done(Status::NotSupported(std::string(name) + " is read-only"));
  }
  bool is_main = parsed->kind == FileKind::kMain;
  auto db = LookupDatabase(tenant, parsed->db, /*create=*/is_main);
  if (!db.ok()) {
    if (db.status().code() == Status::Code::kNotFound) {
      return done(Status::NotSupported(std::string(name) + ": database " + parsed->db +
                                       " does not exist"));
    }
    return done(db.status());
  }
  std::shared_ptr<Database> d = std::move(db.value());
  FileKind kind = parsed->kind;
  Submit(d, true, [this, d, kind, mode, exclusive, done = std::move(done)] {
    CacheUse use(*cache_, d->cache_entry());
    int k = static_cast<int>(kind);
    std::string path = d->BackingPath(kind);
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : 0);
    d->ReserveFd();
    int fd = ::open(path.c_str(), flags, mode & 07777);
    if (fd < 0 && d->MadeRoomAfter(errno, path)) fd = ::open(path.c_str(), flags, mode & 07777);
    if (fd < 0) return done(Status::FromErrno(errno, "create " + path));
    std::shared_ptr<File> file;
    {
      std::lock_guard lock(d->mu_);
      d->deleted_ = false;
      file = d->files_.Get(k);
      if (!file) {
        file = std::make_shared<File>(d, kind);
        d->files_.Set(k, file);
      }
    }
    {
      std::lock_guard flock(file->mu_);
      if (file->fd_.load() < 0) {
        file->fd_.store(fd);
        fd = -1;
      }
    }
    if (fd >= 0) ::close(fd);
    done(file);
  });
}

void Store::Unlink(const std::shared_ptr<Tenant>& tenant, std::string_view name, Done done) {
  auto parsed = ParseFileName(name);
  if (!parsed) return done(Status::NotFound("no file " + std::string(name)));
  if (parsed->kind == FileKind::kPos) {
    return done(Status::NotSupported(std::string(name) + " is read-only"));
  }
  auto db = LookupDatabase(tenant, parsed->db, /*create=*/false);
  if (!db.ok()) return done(db.status());
  std::shared_ptr<Database> d = std::move(db.value());
  FileKind kind = parsed->kind;
  Submit(d, true, [this, tenant, d, kind, done = std::move(done)] {
    CacheUse use(*cache_, d->cache_entry());
    std::string path = d->BackingPath(kind);
    Capture& cap = d->capture();
    // Loading needs the main file, which this very unlink may remove.
    Status loaded = cap.LoadFor(kind, /*unlink=*/true);
    if (loaded.ok() || kind == FileKind::kMain) {
      if (Status s = cap.BeforeUnlink(kind); !s.ok() && kind != FileKind::kMain) return done(s);
    } else {
      return done(loaded);
    }
    if (::unlink(path.c_str()) != 0) return done(Status::FromErrno(errno, "unlink " + path));
    std::shared_ptr<File> gone[kBackedFileKinds];
    if (kind == FileKind::kMain) {
      // The database goes, and its companions with it.
      for (int k = 1; k < kBackedFileKinds; ++k) {
        std::string p = d->BackingPath(static_cast<FileKind>(k));
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
          return done(Status::FromErrno(errno, "unlink " + p));
        }
      }
      {
        std::lock_guard tlock(tenant->mu_);
        auto it = tenant->dbs_.find(std::string_view(d->name()));
        if (it != tenant->dbs_.end() && *it == d) tenant->dbs_.erase(it);
      }
      std::lock_guard lock(d->mu_);
      d->deleted_ = true;
      for (int k = 0; k < kBackedFileKinds; ++k) gone[k] = d->files_.Take(k);
    } else {
      std::lock_guard lock(d->mu_);
      int k = static_cast<int>(kind);
      gone[k] = d->files_.Take(k);
    }
    for (auto& f : gone) {
      if (f) f->unlinked_.store(true, std::memory_order_release);
    }
    Status s = cap.AfterUnlink(kind);
    done(s);
  });
}

uint64_t Store::EnforceRetention(int64_t retention_ms, uint64_t max_bytes) {
  std::vector<std::shared_ptr<Database>> dbs = TrimmableDatabases();
  // Runs fn on db's queue and waits for it.
  auto on_queue = [this](const std::shared_ptr<Database>& db, std::function<void()> fn) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Submit(db, true, [&] {  // inline on this (housekeeping) thread when idle
      CacheUse use(*cache_, db->cache_entry());
      fn();
      std::lock_guard lock(mu);
      done = true;
      cv.notify_one();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
  };
  int64_t now = options_.now_ms();
  uint64_t freed = 0;
  std::vector<std::pair<int64_t, std::shared_ptr<Database>>> oldest;
  for (auto& db : dbs) {
    // Known from the last time its log was loaded, so databases with nothing old
    // are skipped without a queue task, a pin or any I/O. INT64_MAX: one segment
    // only, or a log not loaded since start (untouched logs are as old as they
    // were at start).
    Capture& cap = db->capture();
    if (cap.OldestTrimmable() < now - retention_ms) {
      on_queue(db, [&] { freed += cap.TrimByAge(now, retention_ms); });
    }
    if (int64_t t = cap.OldestTrimmable(); t != INT64_MAX) oldest.emplace_back(t, db);
  }
  if (max_bytes == 0) return freed;
  std::sort(oldest.begin(), oldest.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // Oldest segments node-wide first; a database with more goes round again.
  while (stats_.log_bytes.load() > static_cast<int64_t>(max_bytes) && !oldest.empty()) {
    auto [t, db] = oldest.front();
    oldest.erase(oldest.begin());
    on_queue(db, [&] {
      Capture& cap = db->capture();
      freed += cap.TrimOldest();
      if (int64_t next = cap.OldestTrimmable(); next != INT64_MAX) {
        auto at = std::lower_bound(oldest.begin(), oldest.end(), next,
                                   [](const auto& e, int64_t v) { return e.first < v; });
        oldest.emplace(at, next, db);
      }
    });
  }
  return freed;
}

Result<struct stat> Store::StatFile(File& file) const {
  struct stat st;
  CacheUse use(*cache_, file.db().cache_entry());  // keeps an open fd from being reused
  int fd = file.fd_if_open();
  if (fd >= 0) {
    if (::fstat(fd, &st) == 0) return st;
  }
  if (file.unlinked()) return Status::FromErrno(ESTALE, "stat " + file.path() + " (unlinked)");
  if (::stat(file.path().c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + file.path());
  return st;
}

Result<size_t> Store::Read(File& file, char* buf, size_t size, off_t offset) {
  CacheUse use(*cache_, file.db().cache_entry());
  auto fd = file.db().OpenFd(file);
  if (!fd.ok()) return fd.status();
  size_t done = 0;
  Status s = PreadFull(
      fd.value(), buf, size, static_cast<uint64_t>(offset), ShortRead::kCount,
      [&file] { return file.path(); }, &done);
  if (!s.ok()) return s;
  return done;
}

void Store::Write(std::shared_ptr<File> file, std::string data, off_t offset, DoneSize done) {
  // A reference into *file, which the task keeps alive.
  const std::shared_ptr<Database>& db = file->db_ptr();
  Submit(db, true, [this, file = std::move(file), data = std::move(data), offset, done = std::move(done)] {
    CacheUse use(*cache_, file->db().cache_entry());
    Capture& cap = file->db().capture();
    FileKind kind = file->kind();
    auto fd = file->db().OpenFd(*file);
    if (!fd.ok()) return done(fd.status());
    if (Status s = cap.LoadFor(kind); !s.ok()) return done(s);
    if (Status s = cap.BeforeWrite(kind, offset, data); !s.ok()) return done(s);
    if (Status s = PwriteFull(fd.value(), data.data(), data.size(), static_cast<uint64_t>(offset),
                              [&file] { return file->path(); });
        !s.ok()) {
      return done(s);
    }
    if (Status s = cap.AfterWrite(kind, offset, data); !s.ok()) return done(s);
    done(data.size());
  });
}

void Store::Truncate(std::shared_ptr<File> file, off_t size, Done done) {
  // A reference into *file, which the task keeps alive.
  const std::shared_ptr<Database>& db = file->db_ptr();
  Submit(db, true, [this, file = std::move(file), size, done = std::move(done)] {
    CacheUse use(*cache_, file->db().cache_entry());
    Capture& cap = file->db().capture();
    FileKind kind = file->kind();
    auto fd = file->db().OpenFd(*file);
    if (!fd.ok()) return done(fd.status());
    if (Status s = cap.LoadFor(kind); !s.ok()) return done(s);
    if (Status s = cap.BeforeTruncate(kind, size); !s.ok()) return done(s);
    if (::ftruncate(fd.value(), size) != 0) {
      return done(Status::FromErrno(errno, "truncate " + file->path()));
    }
    done(cap.AfterTruncate(kind, size));
  });
}

void Store::Fallocate(std::shared_ptr<File> file, int mode, off_t offset, off_t length,
                      Done done) {
  // A reference into *file, which the task keeps alive.
  const std::shared_ptr<Database>& db = file->db_ptr();
  Submit(db, true, [this, file = std::move(file), mode, offset, length, done = std::move(done)] {
    CacheUse use(*cache_, file->db().cache_entry());
    auto fd = file->db().OpenFd(*file);
    if (!fd.ok()) return done(fd.status());
    // Plain allocation only: it adds zero bytes at most (capture counts a grown
    // file at the commit point). Hole punching would change bytes unseen.
    if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE) {
      return done(Status::FromErrno(EOPNOTSUPP, "fallocate mode " + std::to_string(mode)));
    }
    if (::fallocate(fd.value(), mode, offset, length) != 0) {
      return done(Status::FromErrno(errno, "fallocate " + file->path()));
    }
    done(Status::Ok());
  });
}

void Store::Fsync(std::shared_ptr<File> file, bool datasync, Done done) {
  // A reference into *file, which the task keeps alive.
  const std::shared_ptr<Database>& db = file->db_ptr();
  Submit(db, true, [this, file = std::move(file), datasync, done = std::move(done)] {
    CacheUse use(*cache_, file->db().cache_entry());
    Capture& cap = file->db().capture();
    auto fd = file->db().OpenFd(*file);
    if (!fd.ok()) return done(fd.status());
    if (Status s = cap.LoadFor(file->kind()); !s.ok()) return done(s);
    int rc = datasync ? ::fdatasync(fd.value()) : ::fsync(fd.value());
    if (rc != 0) return done(Status::FromErrno(errno, "fsync " + file->path()));
    done(cap.AfterFsync(file->kind()));
  });
}

Result<std::shared_ptr<Database>> Store::LookupPos(const std::shared_ptr<Tenant>& tenant,
                                                   std::string_view name) {
  auto parsed = ParseFileName(name);
  if (!parsed || parsed->kind != FileKind::kPos) return Status::NotFound("no file " + std::string(name));
  return LookupDatabase(tenant, parsed->db, /*create=*/false);
}

void Store::ReadPosition(std::shared_ptr<Database> db, DonePos done) {
  Submit(db, true, [this, db, done = std::move(done)] {
    CacheUse use(*cache_, db->cache_entry());
    {
      std::lock_guard lock(db->mu_);
      if (db->deleted_) return done(Status::NotFound("database " + db->name() + " was deleted"));
    }
    Status s = db->capture().Load();
    if (!s.ok()) return done(s);
    done(db->capture().position());
  });
}

std::string Store::FormatPosition(const Position& pos) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64 "/%016" PRIx64 "\n", pos.txid, pos.checksum);
  return buf;
}

Status Store::SetMode(File& file, mode_t mode) {
  if (::chmod(file.path().c_str(), mode & 07777) != 0) {
    return Status::FromErrno(errno, "chmod " + file.path());
  }
  return Status::Ok();
}

Status Store::SetOwner(File& file, uid_t uid, gid_t gid) {
  if (::chown(file.path().c_str(), uid, gid) != 0) {
    return Status::FromErrno(errno, "chown " + file.path());
  }
  return Status::Ok();
}

Status Store::SetTimes(File& file, const struct timespec times[2]) {
  if (::utimensat(AT_FDCWD, file.path().c_str(), times, 0) != 0) {
    return Status::FromErrno(errno, "utimens " + file.path());
  }
  return Status::Ok();
}

}  // namespace tenancy

namespace tenancy {

Result<std::shared_ptr<Database>> Store::OpenDatabase(std::string_view tenant_name,
                                                      std::string_view db_name, bool create) {
  if (!IsValidName(tenant_name) || !IsValidName(db_name)) {
    return Status::InvalidArgument("bad database name " + std::string(tenant_name) + "/" +
                                   std::string(db_name));
  }
  auto parsed = ParseFileName(db_name);
  if (!parsed || parsed->kind != FileKind::kMain) {
    return Status::InvalidArgument("not a database name: " + std::string(db_name));
  }
  auto tenant = LookupTenant(tenant_name);
  if (!tenant.ok() && create && tenant.status().code() == Status::Code::kNotFound) {
    tenant = CreateTenant(tenant_name, 0755);
    if (!tenant.ok() && tenant.status().code() == Status::Code::kAlreadyExists) {
      tenant = LookupTenant(tenant_name);
    }
  }
  if (!tenant.ok()) return tenant.status();
  auto db = LookupDatabase(tenant.value(), std::string(db_name), /*create=*/false);
  if (db.ok() || !create || db.status().code() != Status::Code::kNotFound) return db;
  std::promise<Result<std::shared_ptr<File>>> made;
  CreateFile(tenant.value(), db_name, 0644, /*exclusive=*/false,
             [&made](Result<std::shared_ptr<File>> f) { made.set_value(std::move(f)); });
  auto file = made.get_future().get();
  if (!file.ok()) return file.status();
  return file.value()->db_ptr();
}

Status Store::RunOn(const std::shared_ptr<Database>& db,
                    const std::function<Status(Capture&)>& fn) {
  std::promise<Status> result;
  Submit(db, true, [this, db, &fn, &result] {
    CacheUse use(*cache_, db->cache_entry());
    {
      std::lock_guard lock(db->mu_);
      if (db->deleted_) {
        return result.set_value(Status::NotFound("database " + db->name() + " was deleted"));
      }
    }
    Status s = db->capture().Load();
    result.set_value(s.ok() ? fn(db->capture()) : s);
  });
  return result.get_future().get();
}

Result<std::vector<std::pair<std::string, std::string>>> Store::ListDatabases() const {
  auto tenants = ListTenants();
  if (!tenants.ok()) return tenants.status();
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& t : tenants.value()) {
    auto names = ReadDirNames(tenants_dir_ + "/" + t);
    if (!names.ok()) continue;  // removed meanwhile
    for (auto& n : names.value()) {
      auto parsed = ParseFileName(n);
      if (parsed && parsed->kind == FileKind::kMain) out.emplace_back(t, std::move(n));
    }
  }
  return out;
}

Status Store::DropDatabase(std::string_view tenant_name, std::string_view db_name) {
  auto tenant = LookupTenant(tenant_name);
  if (!tenant.ok()) return tenant.status().code() == Status::Code::kNotFound ? Status::Ok() : tenant.status();
  std::promise<Status> result;
  Unlink(tenant.value(), db_name, [&result](Status s) { result.set_value(std::move(s)); });
  Status s = result.get_future().get();
  return s.code() == Status::Code::kNotFound ? Status::Ok() : s;
}

}  // namespace tenancy

#include "tenancy/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace tenancy {

namespace {

Status MakeDirs(const std::string& path) {
  std::string partial;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      partial = path.substr(0, i);
      if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        return Status::FromErrno(errno, "mkdir " + partial);
      }
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISDIR(st.st_mode)) return Status::NotDirectory(path + " is not a directory");
  return Status::Ok();
}

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

File::File(std::shared_ptr<Database> db, FileKind kind, std::string path)
    : db_(std::move(db)), kind_(kind), path_(std::move(path)) {}

File::~File() {
  int fd = fd_.load();
  if (fd >= 0) ::close(fd);
}

Status File::Acquire() {
  std::lock_guard lock(mu_);
  if (fd_.load(std::memory_order_relaxed) < 0) {
    int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0 && (errno == EACCES || errno == EROFS)) fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + path_);
    fd_.store(fd, std::memory_order_release);
  }
  ++users_;
  return Status::Ok();
}

void File::Release() {
  std::lock_guard lock(mu_);
  if (--users_ == 0) {
    int fd = fd_.exchange(-1, std::memory_order_acq_rel);
    if (fd >= 0) ::close(fd);
  }
}

std::string Database::BackingPath(FileKind kind) const {
  return tenant_->dir() + "/" + MakeFileName(name_, kind);
}

// ---- Store ----

Store::Store(std::string data_dir, Executor* executor)
    : data_dir_(std::move(data_dir)), tenants_dir_(data_dir_ + "/tenants"), executor_(executor) {}

Result<std::unique_ptr<Store>> Store::Open(const Options& options) {
  if (options.executor == nullptr) return Status::InvalidArgument("store needs an executor");
  std::unique_ptr<Store> store(new Store(options.data_dir, options.executor));
  Status s = MakeDirs(store->tenants_dir_);
  if (!s.ok()) return s;
  return store;
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
  auto it = tenant->dbs_.find(db_name);
  if (it != tenant->dbs_.end()) return it->second;
  if (!create) {
    // Only a database whose main file exists is known; negative lookups cost nothing.
    struct stat st;
    std::string path = tenant->dir() + "/" + db_name;
    if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  }
  auto db = std::make_shared<Database>(tenant, db_name, SerialQueue::Create(executor_));
  tenant->dbs_.emplace(db_name, db);
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
  if (d.files_[k]) return d.files_[k];
  std::string path = d.BackingPath(parsed->kind);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  d.files_[k] = std::make_shared<File>(db.value(), parsed->kind, path);
  return d.files_[k];
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

void Store::Submit(Database& db, bool inline_ok, std::function<void()> op) {
  queued_.fetch_add(1, std::memory_order_relaxed);
  db.queue().Submit(
      [this, op = std::move(op)] {
        op();
        queued_.fetch_sub(1, std::memory_order_relaxed);
      },
      inline_ok);
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
  Submit(*d, true, [d, kind, mode, exclusive, done = std::move(done)] {
    int k = static_cast<int>(kind);
    std::string path = d->BackingPath(kind);
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : 0);
    int fd = ::open(path.c_str(), flags, mode & 07777);
    if (fd < 0) return done(Status::FromErrno(errno, "create " + path));
    std::shared_ptr<File> file;
    {
      std::lock_guard lock(d->mu_);
      d->deleted_ = false;
      file = d->files_[k];
      if (!file) {
        file = std::make_shared<File>(d, kind, path);
        d->files_[k] = file;
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
  Submit(*d, true, [this, tenant, d, kind, done = std::move(done)] {
    std::string path = d->BackingPath(kind);
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
        auto it = tenant->dbs_.find(d->name());
        if (it != tenant->dbs_.end() && it->second == d) tenant->dbs_.erase(it);
      }
      std::lock_guard lock(d->mu_);
      d->deleted_ = true;
      for (int k = 0; k < kBackedFileKinds; ++k) gone[k] = std::move(d->files_[k]);
    } else {
      std::lock_guard lock(d->mu_);
      int k = static_cast<int>(kind);
      gone[k] = std::move(d->files_[k]);
    }
    for (auto& f : gone) {
      if (f) f->unlinked_.store(true, std::memory_order_release);
    }
    done(Status::Ok());
  });
}

Result<struct stat> Store::StatFile(File& file) const {
  struct stat st;
  int fd = file.fd();
  if (fd >= 0) {
    if (::fstat(fd, &st) == 0) return st;
  }
  if (::stat(file.path().c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + file.path());
  return st;
}

Result<size_t> Store::Read(File& file, char* buf, size_t size, off_t offset) const {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(file.fd(), buf + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + file.path());
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

void Store::Write(std::shared_ptr<File> file, std::string data, off_t offset, DoneSize done) {
  Database& db = file->db();
  Submit(db, true, [file = std::move(file), data = std::move(data), offset, done = std::move(done)] {
    size_t written = 0;
    while (written < data.size()) {
      ssize_t n = ::pwrite(file->fd(), data.data() + written, data.size() - written,
                           offset + static_cast<off_t>(written));
      if (n < 0) {
        if (errno == EINTR) continue;
        return done(Status::FromErrno(errno, "write " + file->path()));
      }
      written += static_cast<size_t>(n);
    }
    done(written);
  });
}

void Store::Truncate(std::shared_ptr<File> file, off_t size, Done done) {
  Database& db = file->db();
  Submit(db, true, [file = std::move(file), size, done = std::move(done)] {
    if (::ftruncate(file->fd(), size) != 0) {
      return done(Status::FromErrno(errno, "truncate " + file->path()));
    }
    done(Status::Ok());
  });
}

void Store::Fallocate(std::shared_ptr<File> file, int mode, off_t offset, off_t length,
                      Done done) {
  Database& db = file->db();
  Submit(db, true, [file = std::move(file), mode, offset, length, done = std::move(done)] {
    if (::fallocate(file->fd(), mode, offset, length) != 0) {
      return done(Status::FromErrno(errno, "fallocate " + file->path()));
    }
    done(Status::Ok());
  });
}

void Store::Fsync(std::shared_ptr<File> file, bool datasync, Done done) {
  Database& db = file->db();
  Submit(db, false, [file = std::move(file), datasync, done = std::move(done)] {
    int rc = datasync ? ::fdatasync(file->fd()) : ::fsync(file->fd());
    if (rc != 0) return done(Status::FromErrno(errno, "fsync " + file->path()));
    done(Status::Ok());
  });
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

// A replica's mount (SPEC "The mount": "On a replica every write fails with EROFS:
// SQLite reports 'attempt to write a readonly database'; nothing is changed", and
// `<mount>/.primary`), with real processes: a primary makes databases in every journal
// mode (one WAL database keeps committed frames in its -wal), then the same data dir
// runs as a static replica whose primary is unreachable. sqlite3 reads all of them,
// with reader processes kept open; every write fails with the documented error; the
// backing files stay byte-identical; the primary, restarted, still writes.
//
// The second half mounts a read-only FuseServer inside this test process to drive
// what only the daemon can: applier threads (RegisterApplierThread) and the
// invalidation API a replica's applier uses after changing backing files.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "fuse/fuse_fs.h"
#include "harness.h"
#include "tenancy/executor.h"
#include "tenancy/store.h"

namespace {

using namespace std::chrono_literals;

using it::ErrnoName;

constexpr const char* kReadOnlyError = "attempt to write a readonly database";
constexpr const char* kPrimaryUrl = "http://127.0.0.1:9";  // nothing listens there
constexpr int kRows = 50;
constexpr int kWalOnlyRows = 10;  // of kRows, in walframes.db's -wal only

// errno of a call returning -1 on failure, or 0 when it succeeded.
int ErrnoOf(const std::function<int()>& call) {
  errno = 0;
  return call() < 0 ? errno : 0;
}

// open + close; the errno of the open, or 0.
int OpenErrno(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// Every file of a directory with its content.
std::map<std::string, std::string> ReadTree(const std::string& dir) {
  std::map<std::string, std::string> out;
  if (auto names = it::ListDir(dir)) {
    for (const std::string& n : *names) out[n] = it::ReadFile(dir + "/" + n);
  }
  return out;
}

// The sqlite3 shell on one database with SQL on the command line.
it::Result Shell(const std::string& db, const std::string& sql) {
  return it::Run({it::kSqlite3ShellBin, "-bail", db, sql}, 60s);
}

// Rows 1..kRows as "count|sum(id)|sum(length(v))": what every reader must see.
std::string ExpectedDigest(int rows) {
  long long sum = 0, len = 0;
  for (int i = 1; i <= rows; ++i) {
    sum += i;
    len += static_cast<long long>(std::string("row " + std::to_string(i)).size());
  }
  return std::to_string(rows) + "|" + std::to_string(sum) + "|" + std::to_string(len);
}
constexpr const char* kDigestSql = "SELECT count(*), sum(id), sum(length(v)) FROM t;";

std::string InsertRows(int from, int to) {
  return "WITH RECURSIVE c(i) AS (SELECT " + std::to_string(from) +
         " UNION ALL SELECT i + 1 FROM c WHERE i < " + std::to_string(to) +
         ") INSERT INTO t(id, v) SELECT i, 'row ' || i FROM c;";
}

// ---------------------------------------------------------------- real daemons

class ReplicaReadOnly : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "integration tests mount FUSE and need root";
    scratch_ = std::make_unique<it::Scratch>();
    daemon_ = std::make_unique<it::Daemon>(scratch_->mnt(), scratch_->data());
    replica_config_ = scratch_->WorkPath("replica.yaml");
    it::WriteFile(replica_config_,
                  std::string("lease: {candidate: false, primary-url: \"") + kPrimaryUrl + "\"}\n");
  }

  void TearDown() override {
    if (daemon_ && daemon_->Running()) {
      it::Result r = daemon_->Stop(60s);
      EXPECT_TRUE(r.Ok()) << "tenantfs did not exit 0 on SIGTERM" << r.Describe();
    }
    if (daemon_ && HasFailure()) std::cerr << "[test] tenantfs log:" << daemon_->Describe();
    daemon_.reset();
    scratch_.reset();
  }

  std::string Mnt(const std::string& rel = "") const {
    return rel.empty() ? scratch_->mnt() : scratch_->mnt() + "/" + rel;
  }
  std::string BackingDir() const { return scratch_->data() + "/tenants/app"; }

  void StartPrimary() {
    std::string why;
    ASSERT_TRUE(daemon_->Start(&why)) << why;
  }
  void StartReplica() {
    it::DaemonOptions o;
    o.config_path = replica_config_;
    std::string why;
    ASSERT_TRUE(daemon_->Start(o, &why)) << why;
  }
  void Stop() {
    it::Result r = daemon_->Stop(60s);
    ASSERT_TRUE(r.Ok()) << "tenantfs did not exit 0 on SIGTERM" << r.Describe();
    ASSERT_FALSE(it::IsTenantfsMounted(Mnt())) << "mount still present after tenantfs exited";
  }

  // On a primary: tenant app with <mode>.db for every journal mode (rows 1..kRows), and
  // walframes.db whose last kWalOnlyRows rows live only in its -wal: a reader kept
  // open stops the writer's close from checkpointing, then is killed.
  void PopulateOnPrimary() {
    ASSERT_EQ(::mkdir(Mnt("app").c_str(), 0755), 0) << ErrnoName(errno);
    for (const char* mode : it::kJournalModes) {
      it::Result r =
          Shell(Mnt("app/" + std::string(mode) + ".db"),
                std::string("PRAGMA journal_mode=") + mode +
                    ";CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" + InsertRows(1, kRows));
      ASSERT_TRUE(r.Ok()) << r.Describe();
    }
    const std::string walf = Mnt("app/walframes.db");
    it::Result made = Shell(walf,
                            "PRAGMA journal_mode=wal;"
                            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" +
                                InsertRows(1, kRows - kWalOnlyRows));
    ASSERT_TRUE(made.Ok()) << made.Describe();
    it::Child holder =
        it::Spawn({it::kSqlClientBin, "hold-open", walf, scratch_->WorkPath("never-created")});
    ASSERT_TRUE(WaitForOutput(holder, "open")) << holder.Stderr();
    it::Result more =
        Shell(walf, "PRAGMA wal_autocheckpoint=0;" + InsertRows(kRows - kWalOnlyRows + 1, kRows));
    ASSERT_TRUE(more.Ok()) << more.Describe();
    holder.Signal(SIGKILL);
    holder.Wait(10s);
    ASSERT_GT(it::FileSize(BackingDir() + "/walframes.db-wal"), 32)
        << "walframes.db-wal should hold committed frames";
    // Without its -wal the main file holds fewer rows: the replica must read the frames.
    const std::string copy = scratch_->WorkPath("walframes-main-only.db");
    it::WriteFile(copy, it::ReadFile(BackingDir() + "/walframes.db"));
    it::Result main_only = Shell(copy, kDigestSql);
    ASSERT_TRUE(main_only.Ok()) << main_only.Describe();
    ASSERT_EQ(it::Trim(main_only.out), ExpectedDigest(kRows - kWalOnlyRows));
  }

  static bool WaitForOutput(it::Child& child, const std::string& text) {
    for (auto deadline = it::Clock::now() + 20s; it::Clock::now() < deadline;) {
      if (child.Stdout().find(text) != std::string::npos) return true;
      if (!child.Running()) return false;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  std::vector<std::string> Databases() const {
    std::vector<std::string> dbs;
    for (const char* mode : it::kJournalModes) dbs.push_back(std::string(mode) + ".db");
    dbs.push_back("walframes.db");
    return dbs;
  }

  // Every file present before is unchanged, except -shm (the WAL index SQLite's
  // readers rebuild: shared memory, not database content); the only new files are
  // empty -wal and -shm files readers of a WAL database made.
  void ExpectBackingUnchanged(const std::map<std::string, std::string>& before) {
    auto after = ReadTree(BackingDir());
    auto ends_with = [](const std::string& s, const std::string& suffix) {
      return s.size() >= suffix.size() &&
             s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    for (const auto& [name, content] : before) {
      auto it_after = after.find(name);
      ASSERT_NE(it_after, after.end()) << name << " disappeared from the backing dir";
      if (ends_with(name, "-shm")) continue;
      EXPECT_TRUE(it_after->second == content) << name << " changed on the replica";
    }
    for (const auto& [name, content] : after) {
      if (before.count(name)) continue;
      bool reader_file = ends_with(name, "-shm") || (ends_with(name, "-wal") && content.empty());
      EXPECT_TRUE(reader_file) << "new backing file " << name << " (" << content.size()
                               << " bytes) on the replica";
    }
  }

  std::unique_ptr<it::Scratch> scratch_;
  std::unique_ptr<it::Daemon> daemon_;
  std::string replica_config_;
};

TEST_F(ReplicaReadOnly, SqliteReadsEveryModeAndItsWritesFailReadOnly) {
  StartPrimary();
  PopulateOnPrimary();
  Stop();
  const auto before = ReadTree(BackingDir());
  ASSERT_TRUE(before.count("walframes.db-wal"));

  StartReplica();  // its primary is unreachable: it serves anyway
  const std::string expected = ExpectedDigest(kRows);
  // Readers of the WAL databases stay open meanwhile (they hold the -shm and its locks).
  const std::string stop = scratch_->WorkPath("stop-holders");
  std::vector<it::Child> holders;
  for (const char* db : {"wal.db", "walframes.db"}) {
    holders.push_back(
        it::Spawn({it::kSqlClientBin, "hold-open", Mnt(std::string("app/") + db), stop}));
    ASSERT_TRUE(WaitForOutput(holders.back(), "open"))
        << db << ": " << holders.back().Stderr() << daemon_->Describe();
  }
  for (int round = 0; round < 3; ++round) {
    for (const std::string& db : Databases()) {
      it::Result r = Shell(Mnt("app/" + db), kDigestSql);
      ASSERT_TRUE(r.Ok()) << db << " round " << round << r.Describe();
      EXPECT_EQ(it::Trim(r.out), expected) << db << " round " << round;
      // The C API client too (its own open flags: READWRITE|CREATE, then read-only).
      EXPECT_EQ(it::SqlOk(Mnt("app/" + db), kDigestSql), expected) << db << " round " << round;
    }
  }
  for (const std::string& db : Databases()) {
    it::Result check = Shell(Mnt("app/" + db), "PRAGMA integrity_check;");
    EXPECT_TRUE(check.Ok() && it::Trim(check.out) == "ok") << db << check.Describe();
    it::Result mode = Shell(Mnt("app/" + db), "PRAGMA journal_mode;");
    EXPECT_TRUE(mode.Ok()) << mode.Describe();
    // A write: SQLite opened the file read-only after EROFS and says so.
    it::Result ins = Shell(Mnt("app/" + db), "INSERT INTO t(v) VALUES ('on a replica');");
    EXPECT_FALSE(ins.Ok()) << db << ": an INSERT on a replica succeeded" << ins.Describe();
    EXPECT_NE(ins.err.find(kReadOnlyError), std::string::npos) << db << ins.Describe();
    it::Result ddl = Shell(Mnt("app/" + db), "CREATE TABLE u(x);");
    EXPECT_NE(ddl.err.find(kReadOnlyError), std::string::npos) << db << ddl.Describe();
  }
  // Still the same rows after the refused writes, while the holders are open.
  for (const std::string& db : Databases()) {
    EXPECT_EQ(it::SqlOk(Mnt("app/" + db), kDigestSql), expected) << db;
  }
  it::WriteFile(stop, "");
  for (auto& h : holders) {
    it::Result r = h.Wait(30s);
    EXPECT_TRUE(r.Ok()) << "a reader kept open on the replica failed" << r.Describe();
  }
  Stop();
  ExpectBackingUnchanged(before);

  // The same data dir as the primary again: writable, every row there.
  StartPrimary();
  for (const std::string& db : Databases()) {
    it::Result r = Shell(Mnt("app/" + db), "INSERT INTO t(v) VALUES ('after');" +
                                               std::string(kDigestSql) + "PRAGMA integrity_check;");
    ASSERT_TRUE(r.Ok()) << db << r.Describe();
    auto lines = it::SplitLines(r.out);
    ASSERT_EQ(lines.size(), 2u) << db << r.Describe();
    EXPECT_EQ(lines[0].substr(0, lines[0].find('|')), std::to_string(kRows + 1)) << db;
    EXPECT_EQ(lines[1], "ok") << db;
  }
}

TEST_F(ReplicaReadOnly, NamespaceAndFileWritesFailWithErofs) {
  StartPrimary();
  PopulateOnPrimary();
  Stop();
  const auto before = ReadTree(BackingDir());
  StartReplica();

  const std::string db = Mnt("app/delete.db");
  EXPECT_EQ(ErrnoOf([&] { return ::mkdir(Mnt("other").c_str(), 0755); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::rmdir(Mnt("app").c_str()); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::unlink(db.c_str()); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::unlink(Mnt("app/walframes.db-wal").c_str()); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::truncate(db.c_str(), 0); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::truncate(Mnt("app/walframes.db-wal").c_str(), 0); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::chmod(db.c_str(), 0600); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::rename(db.c_str(), Mnt("app/moved.db").c_str()); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::symlink("delete.db", Mnt("app/link.db").c_str()); }), EROFS);
  // A new database, a journal, the database opened for writing.
  EXPECT_EQ(OpenErrno(Mnt("app/new.db"), O_RDWR | O_CREAT), EROFS);
  EXPECT_EQ(OpenErrno(Mnt("app/delete.db-journal"), O_RDWR | O_CREAT), EROFS);
  EXPECT_EQ(OpenErrno(db, O_RDWR), EROFS);
  EXPECT_EQ(OpenErrno(db, O_WRONLY), EROFS);
  EXPECT_EQ(OpenErrno(Mnt("app/persist.db-journal"), O_RDWR), EROFS);  // PERSIST's journal
  EXPECT_EQ(OpenErrno(Mnt("app/persist.db-journal"), O_RDONLY), 0);
  EXPECT_EQ(OpenErrno(db, O_RDONLY), 0);
  EXPECT_EQ(OpenErrno(Mnt("app/delete.db-pos"), O_RDWR), EROFS);
  // -wal opens read-write (a WAL reader needs that) but is not written.
  int wal = ::open(Mnt("app/walframes.db-wal").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(wal, 0) << ErrnoName(errno);
  EXPECT_EQ(ErrnoOf([&] { return static_cast<int>(::pwrite(wal, "x", 1, 0)); }), EROFS);
  EXPECT_EQ(ErrnoOf([&] { return ::ftruncate(wal, 0); }), EROFS);
  EXPECT_EQ(posix_fallocate(wal, 0, 1 << 20), EROFS);
  ::close(wal);
  // sqlite3 creating a database: EROFS, then no such file to open read-only.
  it::Result create = Shell(Mnt("app/made.db"), "CREATE TABLE x(a);");
  EXPECT_FALSE(create.Ok()) << create.Describe();
  EXPECT_FALSE(it::Exists(BackingDir() + "/made.db"));
  EXPECT_FALSE(it::Exists(scratch_->data() + "/tenants/other"));

  Stop();
  ExpectBackingUnchanged(before);
}

TEST_F(ReplicaReadOnly, PrimaryFileAbsentWhileDisconnected) {
  // .primary holds the primary's URL while the stream is connected
  // (replication_test checks that); kPrimaryUrl never answers, so it is absent.
  StartPrimary();
  ASSERT_EQ(::mkdir(Mnt("app").c_str(), 0755), 0) << ErrnoName(errno);
  Stop();
  StartReplica();
  struct stat st;
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt(".primary").c_str(), &st); }), ENOENT);
  auto names = it::ListDir(Mnt());
  ASSERT_TRUE(names) << ErrnoName(errno);
  EXPECT_EQ(it::Join(*names, ","), "app");
}

// A primary shows no .primary, and it is no tenant name either.
TEST_F(ReplicaReadOnly, PrimaryHasNoPrimaryFile) {
  StartPrimary();
  struct stat st;
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt(".primary").c_str(), &st); }), ENOENT);
  EXPECT_EQ(ErrnoOf([&] { return ::mkdir(Mnt(".primary").c_str(), 0755); }), EINVAL);
  auto names = it::ListDir(Mnt());
  ASSERT_TRUE(names) << ErrnoName(errno);
  EXPECT_TRUE(names->empty()) << it::Join(*names, ",");
}

// open(O_TRUNC) truncates on the primary (the kernel sends it as a setattr, which
// goes through the database's queue like any truncation).
TEST_F(ReplicaReadOnly, PrimaryOpenWithTruncTruncates) {
  StartPrimary();
  ASSERT_EQ(::mkdir(Mnt("app").c_str(), 0755), 0) << ErrnoName(errno);
  const std::string path = Mnt("app/raw.db");
  it::WriteFile(path, std::string(10000, 'a'));
  ASSERT_EQ(it::FileSize(path), 10000);
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ::close(fd);
  EXPECT_EQ(it::FileSize(path), 0);
  EXPECT_EQ(it::FileSize(scratch_->data() + "/tenants/app/raw.db"), 0);
}

// ---------------------------------------------------------------- in-process server

// A read-only FuseServer mounted by this process on a data dir made natively. Only
// open/pread/stat/fcntl reach the mount from here, never mmap (fuse/README.md).
class InProcessReplica : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "integration tests mount FUSE and need root";
    scratch_ = std::make_unique<it::Scratch>();
    const std::string app = scratch_->data() + "/tenants/app";
    ASSERT_EQ(::system(("mkdir -p " + app).c_str()), 0);
    it::Result made = Shell(
        app + "/x.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" + InsertRows(1, kRows));
    ASSERT_TRUE(made.Ok()) << made.Describe();
    it::WriteFile(app + "/blob.db", std::string(8192, 'A'));
    it::WriteFile(app + "/gone.db", std::string(4096, 'G'));

    executor_ = tenancy::MakeTbbExecutor(8);
    tenancy::Store::Options so;
    so.data_dir = scratch_->data();
    so.executor = executor_.get();
    auto store = tenancy::Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store.value());

    fuse::FuseServer::Options fo;
    fo.mount_dir = scratch_->mnt();
    fo.read_only = true;
    fo.max_threads = 8;
    fo.primary_url = [this] {
      std::lock_guard lock(url_mu_);
      return url_;
    };
    // Mount and Run on one thread (FuseServer::Run's contract).
    std::promise<bool> mounted;
    auto mounted_f = mounted.get_future();
    loop_ = std::thread([this, fo, &mounted] {
      auto server = fuse::FuseServer::Mount(store_.get(), executor_.get(), fo);
      if (!server.ok()) {
        mount_error_ = server.status().ToString();
        mounted.set_value(false);
        return;
      }
      server_ = std::move(server.value());
      mounted.set_value(true);
      run_status_ = server_->Run().ToString();
    });
    ASSERT_TRUE(mounted_f.get()) << mount_error_;
    ASSERT_TRUE(it::AnswersStatfs(scratch_->mnt(), 10s)) << "the in-process mount does not answer";
  }

  void TearDown() override {
    if (server_) {
      server_->Exit();
      if (loop_.joinable()) loop_.join();
      server_->Unmount();
      server_.reset();
    } else if (loop_.joinable()) {
      loop_.join();
    }
    if (executor_) executor_->Drain();
    if (store_) {
      tenancy::Status closed = store_->Close();
      EXPECT_TRUE(closed.ok()) << closed.ToString();
    }
    if (scratch_ && !it::MountTypesAt(scratch_->mnt()).empty()) it::LazyUnmount(scratch_->mnt());
    scratch_.reset();
  }

  void SetUrl(const std::string& url) {
    std::lock_guard lock(url_mu_);
    url_ = url;
  }
  std::string Mnt(const std::string& rel) const { return scratch_->mnt() + "/" + rel; }
  std::string Backing(const std::string& rel) const { return scratch_->data() + "/tenants/" + rel; }
  std::shared_ptr<tenancy::File> CoreFile(const std::string& tenant, const std::string& name) {
    auto t = store_->LookupTenant(tenant);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (!t.ok()) return nullptr;
    auto f = store_->LookupFile(t.value(), name);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? f.value() : nullptr;
  }
  static std::string PreadAll(const std::string& path, size_t size, off_t off) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "open: " + ErrnoName(errno);
    std::string buf(size, '\0');
    ssize_t n = ::pread(fd, buf.data(), size, off);
    ::close(fd);
    if (n < 0) return "pread: " + ErrnoName(errno);
    buf.resize(static_cast<size_t>(n));
    return buf;
  }

  std::unique_ptr<it::Scratch> scratch_;
  std::unique_ptr<tenancy::Executor> executor_;
  std::unique_ptr<tenancy::Store> store_;
  std::unique_ptr<fuse::FuseServer> server_;
  std::thread loop_;
  std::string mount_error_, run_status_;
  std::mutex url_mu_;
  std::string url_;  // guarded by url_mu_
};

TEST_F(InProcessReplica, ApplierThreadsMayOpenReadWrite) {
  const std::string db = Mnt("app/x.db");
  EXPECT_EQ(OpenErrno(db, O_RDWR), EROFS);
  // The applier is a thread that is not the process's main thread: the request's pid
  // is the calling thread's id.
  std::promise<void> opened, checked;
  bool registered = false;
  int applier_open = -1, lock_rc = -1, create_errno = -1, after_errno = -1;
  std::string head;
  std::thread applier([&] {
    registered = fuse::FuseServer::RegisterApplierThread();
    int fd = ::open(db.c_str(), O_RDWR | O_CLOEXEC);
    applier_open = fd >= 0 ? 0 : errno;
    if (fd >= 0) {
      // SQLite's RESERVED lock byte, taken the way the applier takes it (OFD lock).
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = 0x40000001;
      fl.l_len = 1;
      lock_rc = ::fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
      char buf[15];
      if (::pread(fd, buf, sizeof buf, 0) == 15) head.assign(buf, 15);
      ::close(fd);
    }
    // Appliers open existing files only: creating still fails.
    create_errno = OpenErrno(Mnt("app/x.db-journal"), O_RDWR | O_CREAT);
    opened.set_value();
    checked.get_future().wait();
    fuse::FuseServer::UnregisterApplierThread();
    after_errno = OpenErrno(db, O_RDWR);
  });
  opened.get_future().wait();
  // Meanwhile other threads of the same process are not appliers.
  EXPECT_EQ(OpenErrno(db, O_RDWR), EROFS);
  checked.set_value();
  applier.join();
  ASSERT_TRUE(registered);
  EXPECT_EQ(applier_open, 0) << "a registered applier thread: " << ErrnoName(applier_open);
  EXPECT_EQ(lock_rc, 0) << ErrnoName(lock_rc);
  EXPECT_EQ(head, "SQLite format 3");
  EXPECT_EQ(create_errno, EROFS) << ErrnoName(create_errno);
  EXPECT_EQ(after_errno, EROFS) << "after UnregisterApplierThread: " << ErrnoName(after_errno);
  // The backing database is untouched by all that: sqlite3 still reads it natively.
  it::Result r = Shell(Backing("app/x.db"), kDigestSql);
  EXPECT_TRUE(r.Ok()) << r.Describe();
  EXPECT_EQ(it::Trim(r.out), ExpectedDigest(kRows));
}

TEST_F(InProcessReplica, InvalidateDataDropsCachedPagesAndAttributes) {
  const std::string blob = Mnt("app/blob.db");
  ASSERT_EQ(PreadAll(blob, 8192, 0), std::string(8192, 'A'));
  std::shared_ptr<tenancy::File> file = CoreFile("app", "blob.db");
  ASSERT_TRUE(file);
  // Behind the kernel's back, as the applier does: new bytes in place, and growth.
  {
    std::string update = std::string(4096, 'B') + std::string(4096, 'C');
    int fd = ::open(Backing("app/blob.db").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, update.data(), update.size(), 4096), 8192);
    ::close(fd);
  }
  // Cached: the kernel still serves the old pages (keep_cache; no auto_inval_data).
  // Not the size: a stat after a read asks the daemon again (the read made atime stale).
  EXPECT_EQ(PreadAll(blob, 8192, 0), std::string(8192, 'A'));
  server_->InvalidateData(file.get());
  EXPECT_EQ(it::FileSize(blob), 12288);
  EXPECT_EQ(PreadAll(blob, 12288, 0),
            std::string(4096, 'A') + std::string(4096, 'B') + std::string(4096, 'C'));
  // A file the kernel holds no inode for: nothing to do, no error.
  std::shared_ptr<tenancy::File> x = CoreFile("app", "x.db");
  ASSERT_TRUE(x);
  server_->InvalidateData(x.get());
  EXPECT_EQ(PreadAll(Mnt("app/x.db"), 15, 0), "SQLite format 3");
}

TEST_F(InProcessReplica, InvalidateEntryDropsNamesAndNegativesAreNotCached) {
  struct stat st;
  // A name that does not exist yet, then appears behind the kernel's back: a replica
  // caches no negative entry, so it shows up at once.
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/late.db").c_str(), &st); }), ENOENT);
  it::WriteFile(Backing("app/late.db"), std::string(4096, 'L'));
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/late.db").c_str(), &st); }), 0);
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("t3").c_str(), &st); }), ENOENT);
  ASSERT_EQ(::mkdir(Backing("t3").c_str(), 0755), 0);
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("t3").c_str(), &st); }), 0);

  // A cached positive name removed behind the kernel's back: gone once invalidated.
  ASSERT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/gone.db").c_str(), &st); }), 0);
  ASSERT_EQ(::unlink(Backing("app/gone.db").c_str()), 0);
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/gone.db").c_str(), &st); }), 0)
      << "expected the kernel to answer from its entry cache";
  server_->InvalidateEntry("app", "gone.db");
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/gone.db").c_str(), &st); }), ENOENT);
  // A tenant, the same way (an empty name: the tenant's own entry in the root).
  ASSERT_EQ(::rmdir(Backing("t3").c_str()), 0);
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("t3").c_str(), &st); }), 0)
      << "expected the kernel to answer from its entry cache";
  server_->InvalidateEntry("t3", "");
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("t3").c_str(), &st); }), ENOENT);
  // Names and tenants the kernel never saw: nothing to do, no error.
  server_->InvalidateEntry("app", "never.db");
  server_->InvalidateEntry("nobody", "x.db");
  server_->InvalidateEntry("nobody", "");
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt("app/x.db").c_str(), &st); }), 0);
}

TEST_F(InProcessReplica, PrimaryFileFollowsTheUrlFunction) {
  struct stat st;
  SetUrl("");
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt(".primary").c_str(), &st); }), ENOENT);
  auto names = it::ListDir(scratch_->mnt());
  ASSERT_TRUE(names);
  EXPECT_EQ(it::Join(*names, ","), "app");

  SetUrl("http://10.0.0.1:20202");
  EXPECT_EQ(it::ReadFile(Mnt(".primary")), "http://10.0.0.1:20202\n");
  names = it::ListDir(scratch_->mnt());
  ASSERT_TRUE(names);
  EXPECT_EQ(it::Join(*names, ","), ".primary,app");
  // Never cached: an open handle and a new lookup both see a change at once.
  int fd = ::open(Mnt(".primary").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  SetUrl("http://primary-b:1");
  char buf[64];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "http://primary-b:1\n");
  ::close(fd);
  ASSERT_EQ(::stat(Mnt(".primary").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 19);
  EXPECT_EQ(it::ReadFile(Mnt(".primary")), "http://primary-b:1\n");
  SetUrl("");
  EXPECT_EQ(ErrnoOf([&] { return ::stat(Mnt(".primary").c_str(), &st); }), ENOENT);
}

}  // namespace

// The mount's namespace rules (SPEC "The mount"): tenants are directories, databases
// are files SQLite creates, companions go with their database, and everything else is
// refused with the documented errno and no change.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

using it::ErrnoName;
using it::Exists;

class MountSemantics : public it::MountTest {
 protected:
  // Everything a user or the backing store could show: names in the mount (two levels)
  // and in the data dir's tenants/ (two levels), plus database contents.
  std::string Snapshot() {
    std::string s = "mount:";
    auto top = it::ListDir(Mnt());
    if (!top) return "cannot list mount: " + ErrnoName(errno);
    for (const std::string& t : *top) {
      s += " " + t + "[";
      auto inner = it::ListDir(Mnt(t));
      s += inner ? it::Join(*inner, ",") : "unlistable:" + ErrnoName(errno);
      s += "]";
    }
    s += "\nbacking:";
    if (auto btop = it::ListDir(scratch_->data() + "/tenants")) {
      for (const std::string& t : *btop) {
        s += " " + t + "[";
        auto inner = it::ListDir(Backing(t));
        s += inner ? it::Join(*inner, ",") : std::string("?");
        s += "]";
      }
    }
    return s;
  }

  // Creates <tenant>/<db> in journal mode `mode` with a table of `rows` rows.
  void MakeDb(const std::string& rel, const std::string& mode, int rows,
              const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"exec", "--mode", mode};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(Mnt(rel));
    args.push_back(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < " +
        std::to_string(rows) + ") INSERT INTO t(v) SELECT printf('row %d', i) FROM c;");
    it::Result r = it::SqlClient(args);
    ASSERT_TRUE(r.Ok()) << "creating " << rel << r.Describe();
  }

  std::string Digest(const std::string& rel) {
    it::Result r = it::SqlClient({"digest", Mnt(rel), "t"});
    EXPECT_TRUE(r.Ok()) << r.Describe();
    return it::Trim(r.out);
  }
};

// A tenant's listing without the virtual "<db>-pos" files (SPEC: read-only position
// files; whether readdir shows them is not fixed). A -pos without its database is kept,
// so it shows up as a stray entry.
std::string FilesIn(const std::string& dir) {
  auto names = it::ListDir(dir);
  if (!names) return "cannot list " + dir + ": " + ErrnoName(errno);
  std::vector<std::string> out;
  for (const std::string& n : *names) {
    bool pos_of_listed_db =
        n.size() > 4 && n.compare(n.size() - 4, 4, "-pos") == 0 &&
        std::find(names->begin(), names->end(), n.substr(0, n.size() - 4)) != names->end();
    if (!pos_of_listed_db) out.push_back(n);
  }
  return it::Join(out, " ");
}

// The errno of a call that should fail; 0 if it succeeded.
int Err(int rc) { return rc == 0 ? 0 : errno; }
int ErrFd(int fd) {
  if (fd >= 0) {
    close(fd);
    return 0;
  }
  return errno;
}

::testing::AssertionResult FailsWith(int got, int want, const char* expr) {
  if (got == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " gave " << (got ? ErrnoName(got) : "success")
                                       << "; SPEC says " << ErrnoName(want);
}
#define EXPECT_ERRNO(expr, want) EXPECT_TRUE(FailsWith((expr), (want), #expr))

TEST_F(MountSemantics, TenantIsADirectoryBackedUnderDataDir) {
  auto empty = it::ListDir(Mnt());
  ASSERT_TRUE(empty) << ErrnoName(errno);
  EXPECT_TRUE(empty->empty()) << "fresh mount lists: " << it::Join(*empty, " ");
  struct stat st;
  EXPECT_ERRNO(Err(stat(Mnt(".primary").c_str(), &st)), ENOENT);  // only on replicas

  MakeTenant("acme");
  ASSERT_EQ(stat(Mnt("acme").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  ASSERT_EQ(stat(Backing("acme").c_str(), &st), 0)
      << "no backing dir " << Backing("acme") << ": " << ErrnoName(errno);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_ERRNO(Err(mkdir(Mnt("acme").c_str(), 0755)), EEXIST);

  MakeDb("acme/app.db", "delete", 10);
  EXPECT_EQ(it::SqlOk(Mnt("acme/app.db"), "SELECT count(*) FROM t"), "10");
  // The backing file is a plain SQLite database at <data>/tenants/<tenant>/<db>.
  std::string header = it::ReadFile(Backing("acme/app.db")).substr(0, 16);
  EXPECT_EQ(header, std::string("SQLite format 3\0", 16)) << "backing file header";
  EXPECT_EQ(FilesIn(Mnt("acme")), "app.db") << "a DELETE-mode database at rest has no companions";
  EXPECT_EQ(it::Join(*it::ListDir(Mnt()), " "), "acme");
}

TEST_F(MountSemantics, RmdirEmptyTenantWorksAndNonEmptyIsENOTEMPTY) {
  MakeTenant("full");
  MakeTenant("empty");
  MakeDb("full/app.db", "wal", 5);
  std::string before = Snapshot();
  EXPECT_ERRNO(Err(rmdir(Mnt("full").c_str())), ENOTEMPTY);
  EXPECT_EQ(Snapshot(), before) << "a refused rmdir changed something";
  EXPECT_EQ(it::SqlOk(Mnt("full/app.db"), "SELECT count(*) FROM t"), "5");

  EXPECT_EQ(rmdir(Mnt("empty").c_str()), 0) << ErrnoName(errno);
  struct stat st;
  EXPECT_ERRNO(Err(stat(Mnt("empty").c_str(), &st)), ENOENT);
  EXPECT_FALSE(Exists(Backing("empty"))) << "backing dir of a removed tenant is still there";
  EXPECT_EQ(it::Join(*it::ListDir(Mnt()), " "), "full");

  // Empty it and remove it; a tenant created again under the same name starts empty.
  EXPECT_EQ(unlink(Mnt("full/app.db").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(rmdir(Mnt("full").c_str()), 0) << ErrnoName(errno);
  MakeTenant("full");
  EXPECT_EQ(FilesIn(Mnt("full")), "") << "a re-created tenant must start empty";
}

TEST_F(MountSemantics, UnlinkDatabaseRemovesItsCompanions) {
  MakeTenant("t");
  // PERSIST leaves <db>-journal behind; a persistent WAL leaves -wal and -shm.
  MakeDb("t/p.db", "persist", 20);
  MakeDb("t/w.db", "wal", 20, {"--persist-wal"});
  MakeDb("t/keep.db", "delete", 7);
  std::string keep_digest = Digest("t/keep.db");
  ASSERT_TRUE(Exists(Mnt("t/p.db-journal")))
      << "precondition: PERSIST journal present; " << Snapshot();
  ASSERT_TRUE(Exists(Mnt("t/w.db-wal")) && Exists(Mnt("t/w.db-shm")))
      << "precondition: persistent WAL leaves -wal and -shm; " << Snapshot();

  EXPECT_EQ(unlink(Mnt("t/p.db").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(unlink(Mnt("t/w.db").c_str()), 0) << ErrnoName(errno);
  for (const char* gone : {"p.db", "p.db-journal", "w.db", "w.db-wal", "w.db-shm"}) {
    std::string rel = std::string("t/") + gone;
    EXPECT_FALSE(Exists(Backing(rel))) << rel << " still in the backing dir; " << Snapshot();
    // The kernel's cached names of the companions are dropped by the daemon right
    // after the unlink reply (it cannot while the kernel holds the directory lock
    // for the unlink), so allow a moment, bounded.
    bool visible = Exists(Mnt(rel));
    for (int i = 0; visible && i < 100; ++i) {
      usleep(10000);
      visible = Exists(Mnt(rel));
    }
    EXPECT_FALSE(visible) << rel << " still visible in the mount after 1 s; " << Snapshot();
  }
  EXPECT_EQ(FilesIn(Mnt("t")), "keep.db");
  EXPECT_EQ(Digest("t/keep.db"), keep_digest) << "unlinking a neighbour changed keep.db";

  // A database created again under the same name is new: no old WAL is replayed into it.
  EXPECT_EQ(it::SqlOk(Mnt("t/w.db"), "SELECT count(*) FROM sqlite_master"), "0");
  EXPECT_EQ(it::SqlOk(Mnt("t/p.db"), "SELECT count(*) FROM sqlite_master"), "0");
}

TEST_F(MountSemantics, UnsupportedOperationsAreEPERMAndChangeNothing) {
  MakeTenant("t");
  MakeTenant("u");
  MakeDb("t/a.db", "delete", 30);
  std::string digest = Digest("t/a.db");
  std::string before = Snapshot();

  EXPECT_ERRNO(Err(symlink("a.db", Mnt("t/link.db").c_str())), EPERM);
  EXPECT_ERRNO(Err(symlink("t", Mnt("toplink").c_str())), EPERM);
  EXPECT_ERRNO(Err(link(Mnt("t/a.db").c_str(), Mnt("t/hard.db").c_str())), EPERM);
  EXPECT_ERRNO(Err(link(Mnt("t/a.db").c_str(), Mnt("u/a.db").c_str())), EPERM);
  EXPECT_ERRNO(Err(mkfifo(Mnt("t/fifo").c_str(), 0644)), EPERM);
  EXPECT_ERRNO(Err(mknod(Mnt("t/null").c_str(), S_IFCHR | 0600, makedev(1, 3))), EPERM);
  EXPECT_ERRNO(Err(mknod(Mnt("t/blk").c_str(), S_IFBLK | 0600, makedev(7, 0))), EPERM);
  EXPECT_ERRNO(Err(mkfifo(Mnt("topfifo").c_str(), 0644)), EPERM);
  EXPECT_ERRNO(Err(rename(Mnt("t/a.db").c_str(), Mnt("t/b.db").c_str())), EPERM);
  EXPECT_ERRNO(Err(rename(Mnt("t/a.db").c_str(), Mnt("u/a.db").c_str())), EPERM);
  EXPECT_ERRNO(Err(rename(Mnt("t").c_str(), Mnt("t2").c_str())), EPERM);
  EXPECT_ERRNO(Err(rename(Mnt("t").c_str(), Mnt("u").c_str())), EPERM);
  EXPECT_ERRNO(Err(mkdir(Mnt("t/nested").c_str(), 0755)), EPERM);
  EXPECT_ERRNO(ErrFd(open(Mnt("toplevel.db").c_str(), O_CREAT | O_RDWR, 0644)), EPERM);
  EXPECT_ERRNO(ErrFd(open(Mnt("README").c_str(), O_CREAT | O_WRONLY | O_EXCL, 0644)), EPERM);
  EXPECT_ERRNO(Err(mknod(Mnt("topfile").c_str(), S_IFREG | 0644, 0)), EPERM);

  EXPECT_EQ(Snapshot(), before) << "a refused operation changed the namespace";
  EXPECT_EQ(Digest("t/a.db"), digest) << "a refused operation changed t/a.db";
  EXPECT_EQ(it::SqlOk(Mnt("t/a.db"), "PRAGMA integrity_check"), "ok");
}

TEST_F(MountSemantics, BadNamesAreEINVALAndChangeNothing) {
  MakeTenant("t");
  std::string before = Snapshot();
  const std::string too_long(65, 'a');
  for (const std::string& bad :
       {std::string(".hidden"), std::string("has space"), too_long, std::string("a$b"),
        std::string("semi;colon"), std::string("\xc3\xbcmlaut"), std::string(".x.y")}) {
    EXPECT_ERRNO(Err(mkdir(Mnt(bad).c_str(), 0755)), EINVAL) << " (tenant name '" << bad << "')";
    EXPECT_ERRNO(ErrFd(open(Mnt("t/" + bad).c_str(), O_CREAT | O_RDWR, 0644)), EINVAL)
        << " (database name '" << bad << "')";
  }
  EXPECT_EQ(Snapshot(), before) << "a refused name changed the namespace";

  // The edges of the rule are accepted: 64 characters, leading '-' or '_', dots inside.
  const std::string longest(64, 'b');
  for (const std::string& good :
       {longest, std::string("-dash"), std::string("_under"), std::string("A.b-c_9")}) {
    EXPECT_EQ(mkdir(Mnt(good).c_str(), 0755), 0) << "tenant '" << good << "': " << ErrnoName(errno);
  }
  MakeDb("t/" + longest, "delete", 1);
  MakeDb("t/-x.db", "wal", 1);
}

// CRC-64/ISO (reflected, poly 0x1B, init and xorout all ones) over be32(pgno) || page.
uint64_t PageCrc(uint32_t pgno, const std::string& page) {
  uint64_t crc = ~0ULL;
  auto feed = [&crc](unsigned char b) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0xD800000000000000ULL : crc >> 1;
  };
  for (int shift = 24; shift >= 0; shift -= 8) feed(static_cast<unsigned char>(pgno >> shift));
  for (char c : page) feed(static_cast<unsigned char>(c));
  return ~crc;
}

// SPEC's database checksum computed from a database file at rest.
std::string FileChecksum(const std::string& path) {
  std::string file = it::ReadFile(path);
  if (file.size() < 100) return "file too small: " + std::to_string(file.size());
  uint32_t page_size =
      (static_cast<unsigned char>(file[16]) << 8) | static_cast<unsigned char>(file[17]);
  if (page_size == 1) page_size = 65536;
  uint64_t sum = 0;
  uint32_t lock_page = 0x40000000u / page_size + 1;
  for (uint32_t pgno = 1; static_cast<size_t>(pgno) * page_size <= file.size(); ++pgno) {
    if (pgno == lock_page) continue;
    sum ^= PageCrc(pgno, file.substr(static_cast<size_t>(pgno - 1) * page_size, page_size));
  }
  char buf[32];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(sum | (1ULL << 63)));
  return buf;
}

TEST(PosChecksum, Crc64IsoCheckValue) {
  // Self-check of the test's own CRC: the catalogue check value of CRC-64/ISO.
  uint64_t crc = ~0ULL;
  for (char c : std::string("123456789")) {
    crc ^= static_cast<unsigned char>(c);
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0xD800000000000000ULL : crc >> 1;
  }
  EXPECT_EQ(~crc, 0xB90956C775A41001ULL);
}

TEST_F(MountSemantics, PosFileCountsCommitsAndChecksumsPages) {
  MakeTenant("t");
  // An empty database: TXID 0 and the empty checksum.
  EXPECT_EQ(it::SqlOk(Mnt("t/empty.db"), "SELECT count(*) FROM sqlite_master"), "0");
  EXPECT_EQ(it::ReadFile(Mnt("t/empty.db-pos")), "0000000000000000/8000000000000000\n");

  // Four write transactions in DELETE mode (the backing file is then the whole database).
  for (const char* sql : {"CREATE TABLE t(x)", "INSERT INTO t VALUES(randomblob(5000))",
                          "INSERT INTO t VALUES(2)", "UPDATE t SET x = x || 'y' WHERE x = 2"}) {
    it::Result r = it::SqlClient({"exec", "--mode", "delete", Mnt("t/app.db"), sql});
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }
  it::SqlOk(Mnt("t/app.db"), "SELECT count(*) FROM t");  // a read changes nothing
  std::string pos = it::ReadFile(Mnt("t/app.db-pos"));
  ASSERT_EQ(pos.size(), 34u) << "'" << pos << "'";
  EXPECT_EQ(pos.substr(0, 17), "0000000000000004/") << "TXID after 4 write transactions: " << pos;
  struct stat st;
  ASSERT_EQ(stat(Mnt("t/app.db-pos").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u) << "-pos must be read-only";
  EXPECT_NE(ErrFd(open(Mnt("t/app.db-pos").c_str(), O_WRONLY)), 0) << "-pos opened for writing";

  // After a clean stop the checksum matches the backing file, and a restart keeps it.
  StopDaemon();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(pos.substr(17), FileChecksum(Backing("t/app.db")) + "\n")
      << "-pos checksum differs from SPEC's checksum of the database file";
  std::string why;
  ASSERT_TRUE(RestartDaemon(&why)) << why;
  EXPECT_EQ(it::ReadFile(Mnt("t/app.db-pos")), pos) << "position changed across a clean restart";
  EXPECT_EQ(it::ReadFile(Mnt("t/empty.db-pos")), "0000000000000000/8000000000000000\n");
}

}  // namespace

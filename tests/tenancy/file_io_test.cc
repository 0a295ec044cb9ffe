#include "tenancy/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

namespace tenancy {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test with one file, path_, in it; fd_ is open on that file.
class FileIoTest : public ::testing::Test {
 protected:
  static std::string MakeTempDir() {
    std::string tmpl = "/tmp/tenantfs-file-io-XXXXXX";
    return ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
  }
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << std::strerror(errno); }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    fs::remove_all(dir_);
  }

  // path_ holding `content`, opened with `flags`.
  int OpenWith(const std::string& content, int flags) {
    int w = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    EXPECT_GE(w, 0);
    EXPECT_EQ(::write(w, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    ::close(w);
    if (fd_ >= 0) ::close(fd_);
    fd_ = ::open(path_.c_str(), flags | O_CLOEXEC);
    EXPECT_GE(fd_, 0);
    return fd_;
  }

  // n bytes at off, read into n 'x's; the read must succeed.
  std::string ReadOk(size_t n, uint64_t off, ShortRead how, size_t* got = nullptr) {
    std::string buf(n, 'x');
    Status s = PreadFull(fd_, buf.data(), n, off, how, path_, got);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return buf;
  }

  const std::string dir_ = MakeTempDir();
  const std::string path_ = dir_ + "/f";
  int fd_ = -1;
};

// What each ShortRead mode leaves in a buffer of 'x's, and the count it reports.
TEST_F(FileIoTest, ReadsAsShortReadSays) {
  struct Case {
    const char* what;
    size_t n;
    uint64_t off;
    ShortRead how;
    std::string want;
    size_t want_got;  // bytes the file supplied, never counting zero fill
  };
  const std::string z(8, '\0');
  const Case cases[] = {
      {"whole buffer at an offset", 4, 3, ShortRead::kDataLoss, "3456", 4},
      {"whole buffer, zero-fill mode", 4, 6, ShortRead::kZeroFill, "6789", 4},
      {"zero fill past the end", 8, 7, ShortRead::kZeroFill, "789" + z.substr(0, 5), 3},
      {"zero fill starting past the end", 4, 100, ShortRead::kZeroFill, z.substr(0, 4), 0},
      {"count mode leaves the rest", 8, 6, ShortRead::kCount, "6789xxxx", 4},
  };
  OpenWith("0123456789", O_RDONLY);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    size_t got = 99;
    EXPECT_EQ(ReadOk(c.n, c.off, c.how, &got), c.want);
    EXPECT_EQ(got, c.want_got);
  }
}

TEST_F(FileIoTest, ShortReadIsDataLossNamingTheFile) {
  int fd = OpenWith("abc", O_RDONLY);
  char buf[8];
  Status s = PreadFull(fd, buf, sizeof(buf), 0, ShortRead::kDataLoss, path_);
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), "short read of " + path_);
}

TEST_F(FileIoTest, WriteAtOffsetAndReadBack) {
  int fd = OpenWith("", O_RDWR);
  const std::string data = "hello, file";
  Status s = PwriteFull(fd, data.data(), data.size(), 4096, path_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(4096 + data.size()));
  EXPECT_EQ(ReadOk(data.size(), 4096, ShortRead::kDataLoss), data);
  // Before the offset: the hole reads as zeros.
  EXPECT_EQ(ReadOk(16, 0, ShortRead::kDataLoss), std::string(16, '\0'));
}

TEST_F(FileIoTest, ErrorsNameTheFile) {
  int fd = OpenWith("abc", O_WRONLY);
  char buf[3];
  Status s = PreadFull(fd, buf, sizeof(buf), 0, ShortRead::kZeroFill, path_);
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_EQ(s.os_errno(), EBADF);
  EXPECT_EQ(s.message(), "read " + path_ + ": " + std::strerror(EBADF));

  fd = OpenWith("abc", O_RDONLY);
  s = PwriteFull(fd, "x", 1, 0, "the test file");
  EXPECT_EQ(s.os_errno(), EBADF);
  EXPECT_EQ(s.message(), std::string("write the test file: ") + std::strerror(EBADF));
}

TEST_F(FileIoTest, LazyNameIsBuiltOnlyForAnError) {
  int fd = OpenWith("abc", O_RDONLY);
  int built = 0;
  auto name = [&] {
    ++built;
    return std::string("lazy");
  };
  char buf[3];
  ASSERT_TRUE(PreadFull(fd, buf, sizeof(buf), 0, ShortRead::kDataLoss, name).ok());
  EXPECT_EQ(built, 0);
  Status s = PwriteFull(fd, buf, sizeof(buf), 0, name);  // read-only fd
  EXPECT_EQ(built, 1);
  EXPECT_EQ(s.message(), std::string("write lazy: ") + std::strerror(EBADF));
  s = PreadFull(fd, buf, sizeof(buf), 2, ShortRead::kDataLoss, name);
  EXPECT_EQ(built, 2);
  EXPECT_EQ(s.message(), "short read of lazy");
}

TEST_F(FileIoTest, MakeDirsCreatesNestedAndAcceptsExisting) {
  const std::string nested = dir_ + "/a/b/c";
  Status s = MakeDirs(nested);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(fs::is_directory(nested));
  struct stat st;
  ASSERT_EQ(::stat(nested.c_str(), &st), 0);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 07777, 0755 & ~mask);

  s = MakeDirs(nested);  // all there already
  EXPECT_TRUE(s.ok()) << s.ToString();
  s = MakeDirs(dir_ + "/a/b/");  // a trailing slash
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(FileIoTest, MakeDirsRefusesAFileInTheWay) {
  OpenWith("", O_RDONLY);
  Status s = MakeDirs(path_);  // path_ is a file
  EXPECT_EQ(s.code(), Status::Code::kNotDirectory);
  EXPECT_EQ(s.message(), path_ + " is not a directory");

  s = MakeDirs(path_ + "/below");  // under a file
  EXPECT_EQ(s.code(), Status::Code::kNotDirectory);
  EXPECT_EQ(s.message(), "mkdir " + path_ + "/below: " + std::strerror(ENOTDIR));
}

}  // namespace
}  // namespace tenancy

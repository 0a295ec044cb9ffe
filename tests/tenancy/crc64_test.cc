#include "tenancy/crc64.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

namespace tenancy {
namespace {

// Bit-at-a-time reference straight from the CRC-64/ISO parameters, to check the
// sliced tables against something that shares no code with them.
uint64_t ReferenceCrc64(const std::string& s) {
  uint64_t crc = ~0ull;
  for (unsigned char c : s) {
    crc ^= c;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ ((crc & 1) ? 0xD800000000000000ull : 0);
  }
  return ~crc;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class TempFile {
 public:
  TempFile() {
    char path[] = "/tmp/crc64_test.XXXXXX";
    fd_ = mkstemp(path);
    path_ = path;
  }
  ~TempFile() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  void WriteAt(uint64_t offset, const std::string& data) {
    ASSERT_EQ(pwrite(fd_, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()));
  }

 private:
  int fd_ = -1;
  std::string path_;
};

TEST(Crc64Test, CheckValue) {
  EXPECT_EQ(Crc64("123456789", 9), 0xB90956C775A41001ull);
  EXPECT_EQ(ReferenceCrc64("123456789"), 0xB90956C775A41001ull);
  EXPECT_EQ(Crc64("", 0), 0u);
  EXPECT_EQ(Crc64(nullptr, 0, 0x1234), 0x1234u);
}

TEST(Crc64Test, MatchesBitwiseReferenceAtEveryLengthAndAlignment) {
  const std::string data = RandomBytes(300, 1);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t len = 0; start + len <= data.size(); len += (len < 40 ? 1 : 37)) {
      const std::string part = data.substr(start, len);
      ASSERT_EQ(Crc64(data.data() + start, len), ReferenceCrc64(part))
          << "start " << start << " len " << len;
    }
  }
}

TEST(Crc64Test, IncrementalEqualsOneShot) {
  const std::string data = RandomBytes(5000, 2);
  const uint64_t whole = Crc64(data.data(), data.size());
  for (size_t split :
       {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{4096}, data.size()}) {
    const uint64_t a = Crc64(data.data(), split);
    EXPECT_EQ(Crc64(data.data() + split, data.size() - split, a), whole) << "split " << split;
  }
  // Many small pieces.
  uint64_t crc = 0;
  for (size_t i = 0; i < data.size(); i += 13) {
    crc = Crc64(data.data() + i, std::min<size_t>(13, data.size() - i), crc);
  }
  EXPECT_EQ(crc, whole);
}

TEST(Crc64Test, PageCrcIsCrcOfBigEndianPgnoThenPage) {
  const std::string page = RandomBytes(4096, 3);
  const std::string prefixed = std::string("\x01\x02\x03\x04", 4) + page;
  EXPECT_EQ(PageCrc(0x01020304, page.data(), page.size()), ReferenceCrc64(prefixed));
  EXPECT_NE(PageCrc(1, page.data(), page.size()), PageCrc(2, page.data(), page.size()));
}

TEST(Crc64Test, LockPage) {
  EXPECT_EQ(LockPage(512), 2097153u);
  EXPECT_EQ(LockPage(1024), 1048577u);
  EXPECT_EQ(LockPage(4096), 262145u);
  EXPECT_EQ(LockPage(65536), 16385u);
  // The page holding byte offset 0x40000000.
  for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
    EXPECT_EQ((LockPage(ps) - 1) * uint64_t{ps}, 0x40000000u);
    EXPECT_TRUE(IsValidPageSize(ps));
  }
  EXPECT_FALSE(IsValidPageSize(256));
  EXPECT_FALSE(IsValidPageSize(131072));
  EXPECT_FALSE(IsValidPageSize(4095));
}

TEST(Crc64Test, ChecksumUpdateReplacesOnePage) {
  const std::string a = RandomBytes(512, 4), b = RandomBytes(512, 5), c = RandomBytes(512, 6);
  const uint64_t before = (PageCrc(1, a.data(), 512) ^ PageCrc(2, b.data(), 512)) | kChecksumFlag;
  const uint64_t after = (PageCrc(1, a.data(), 512) ^ PageCrc(2, c.data(), 512)) | kChecksumFlag;
  EXPECT_EQ(ChecksumUpdate(before, PageCrc(2, b.data(), 512), PageCrc(2, c.data(), 512)), after);
  // Growing from nothing, and shrinking back to nothing.
  EXPECT_EQ(ChecksumUpdate(kEmptyChecksum, 0, PageCrc(1, a.data(), 512)),
            PageCrc(1, a.data(), 512) | kChecksumFlag);
  EXPECT_EQ(ChecksumUpdate(PageCrc(1, a.data(), 512) | kChecksumFlag, PageCrc(1, a.data(), 512), 0),
            kEmptyChecksum);
}

TEST(Crc64Test, ChecksumFileIsXorOfPageCrcs) {
  constexpr uint32_t kPageSize = 4096;
  constexpr uint32_t kPages = 300;  // more than one 1 MiB read chunk
  const std::string data = RandomBytes(size_t{kPageSize} * (kPages + 3), 7);
  TempFile f;
  f.WriteAt(0, data);

  uint64_t want = 0;
  for (uint32_t pgno = 1; pgno <= kPages; ++pgno) {
    want ^= PageCrc(pgno, data.data() + size_t{pgno - 1} * kPageSize, kPageSize);
  }
  Status s = Status::NotFound("unset");
  EXPECT_EQ(ChecksumFile(f.fd(), kPageSize, kPages, &s), want | kChecksumFlag);
  EXPECT_TRUE(s.ok()) << s.ToString();

  EXPECT_EQ(ChecksumFile(f.fd(), kPageSize, 0, &s), kEmptyChecksum);
  EXPECT_TRUE(s.ok());
  // Ranges combine by XOR.
  EXPECT_EQ(XorPageCrcs(f.fd(), kPageSize, 1, 100, nullptr) ^
                XorPageCrcs(f.fd(), kPageSize, 100, kPages + 1, nullptr),
            want);
}

TEST(Crc64Test, ChecksumFileShortFileAndBadArguments) {
  TempFile f;
  f.WriteAt(0, RandomBytes(512 * 3 + 100, 8));  // three and a bit pages
  Status s;
  EXPECT_NE(ChecksumFile(f.fd(), 512, 3, &s), 0u);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(ChecksumFile(f.fd(), 512, 4, &s), 0u);
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_EQ(s.os_errno(), EIO);
  EXPECT_NE(s.message().find("page 4"), std::string::npos) << s.message();

  EXPECT_EQ(ChecksumFile(f.fd(), 1000, 1, &s), 0u);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(ChecksumFile(-1, 512, 1, &s), 0u);
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_EQ(s.os_errno(), EBADF);
  EXPECT_EQ(XorPageCrcs(f.fd(), 512, 0, 2, &s), 0u);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
}

// The lock page sits at 1 GiB; a sparse file puts real data around it without
// writing a gigabyte, and a range read checks it is skipped.
TEST(Crc64Test, LockPageIsSkipped) {
  constexpr uint32_t kPageSize = 65536;
  const uint32_t lock = LockPage(kPageSize);
  TempFile f;
  const std::string before = RandomBytes(kPageSize, 9), at = RandomBytes(kPageSize, 10),
                    after = RandomBytes(kPageSize, 11);
  f.WriteAt(uint64_t{lock - 2} * kPageSize, before);
  f.WriteAt(uint64_t{lock - 1} * kPageSize, at);
  f.WriteAt(uint64_t{lock} * kPageSize, after);
  Status s;
  const uint64_t got = XorPageCrcs(f.fd(), kPageSize, lock - 1, lock + 2, &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, PageCrc(lock - 1, before.data(), kPageSize) ^
                     PageCrc(lock + 1, after.data(), kPageSize));
  // The lock page alone contributes nothing, whatever it holds.
  EXPECT_EQ(XorPageCrcs(f.fd(), kPageSize, lock, lock + 1, &s), 0u);
  EXPECT_TRUE(s.ok());
}

}  // namespace
}  // namespace tenancy

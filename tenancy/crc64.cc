#include "tenancy/crc64.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <string>

namespace tenancy {

namespace {

// Reflected form of the polynomial x^64 + x^4 + x^3 + x + 1 (0x1B).
constexpr uint64_t kPolyReflected = 0xD800000000000000ull;

using Tables = std::array<std::array<uint64_t, 256>, 8>;

// Slicing-by-8: table[k][b] is the CRC contribution of byte b followed by k zero
// bytes, so eight input bytes fold into the state with eight lookups and no
// dependency chain between them.
constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint64_t crc = b;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ ((crc & 1) ? kPolyReflected : 0);
    t[0][b] = crc;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  }
  return t;
}

constexpr Tables kTables = MakeTables();

// Assembled byte by byte so it is right on any host; compilers turn it into one load.
inline uint64_t Load64Le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Raw register update: no pre/post inversion.
uint64_t Update(uint64_t state, const unsigned char* p, size_t n) {
  while (n >= 8) {
    state ^= Load64Le(p);
    state = kTables[7][state & 0xFF] ^ kTables[6][(state >> 8) & 0xFF] ^
            kTables[5][(state >> 16) & 0xFF] ^ kTables[4][(state >> 24) & 0xFF] ^
            kTables[3][(state >> 32) & 0xFF] ^ kTables[2][(state >> 40) & 0xFF] ^
            kTables[1][(state >> 48) & 0xFF] ^ kTables[0][state >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) state = (state >> 8) ^ kTables[0][(state ^ *p++) & 0xFF];
  return state;
}

// Bytes read per pread: large enough to amortize the syscall, a multiple of every
// page size, small enough to stay in L2 while it is checksummed.
constexpr size_t kChunkBytes = 1 << 20;

}  // namespace

uint64_t Crc64(const void* data, size_t n, uint64_t crc) {
  // init and xorout are both ~0, so continuing from a finished CRC is inverting it back.
  return ~Update(~crc, static_cast<const unsigned char*>(data), n);
}

uint64_t PageCrc(uint32_t pgno, const void* page, size_t page_size) {
  const unsigned char be[4] = {
      static_cast<unsigned char>(pgno >> 24), static_cast<unsigned char>(pgno >> 16),
      static_cast<unsigned char>(pgno >> 8), static_cast<unsigned char>(pgno)};
  return Crc64(page, page_size, Crc64(be, sizeof be));
}

uint64_t XorPageCrcs(int fd, uint32_t page_size, uint32_t first_pgno, uint32_t end_pgno,
                     Status* status) {
  auto fail = [status](Status s) -> uint64_t {
    if (status != nullptr) *status = std::move(s);
    return 0;
  };
  if (!IsValidPageSize(page_size)) {
    return fail(Status::InvalidArgument("checksum: bad page size " + std::to_string(page_size)));
  }
  if (first_pgno == 0) return fail(Status::InvalidArgument("checksum: page numbers start at 1"));
  if (status != nullptr) *status = Status::Ok();
  if (end_pgno <= first_pgno) return 0;

  const uint32_t lock_page = LockPage(page_size);
  const uint32_t pages_per_chunk = kChunkBytes / page_size;
  const std::unique_ptr<unsigned char[]> buf(new unsigned char[kChunkBytes]);
  uint64_t acc = 0;
  for (uint32_t pgno = first_pgno; pgno < end_pgno;) {
    const uint32_t want_pages = std::min<uint32_t>(pages_per_chunk, end_pgno - pgno);
    const size_t want = static_cast<size_t>(want_pages) * page_size;
    const off_t offset = static_cast<off_t>(pgno - 1) * page_size;
    size_t got = 0;
    while (got < want) {
      const ssize_t r = ::pread(fd, buf.get() + got, want - got, offset + got);
      if (r < 0) {
        if (errno == EINTR) continue;
        return fail(Status::FromErrno(errno, "checksum: read page " + std::to_string(pgno)));
      }
      if (r == 0) {
        return fail(Status::FromErrno(
            EIO, "checksum: file ends before page " + std::to_string(pgno + got / page_size)));
      }
      got += static_cast<size_t>(r);
    }
    for (uint32_t i = 0; i < want_pages; ++i, ++pgno) {
      if (pgno == lock_page) continue;
      acc ^= PageCrc(pgno, buf.get() + static_cast<size_t>(i) * page_size, page_size);
    }
  }
  return acc;
}

uint64_t ChecksumFile(int fd, uint32_t page_size, uint32_t pages, Status* status) {
  // SQLite caps a database at 4294967294 pages; the cap keeps the half-open end in range.
  if (pages == UINT32_MAX) {
    if (status != nullptr) *status = Status::InvalidArgument("checksum: too many pages");
    return 0;
  }
  Status s;
  const uint64_t acc = XorPageCrcs(fd, page_size, 1, pages + 1, &s);
  if (status != nullptr) *status = s;
  return s.ok() ? (acc | kChecksumFlag) : 0;
}

}  // namespace tenancy

// CRC-64/ISO and the database checksum built from it (SPEC: `<db>-pos`).
//
// CRC-64/ISO, also catalogued as CRC-64/GO-ISO: poly 0x1B, reflected in and out,
// init and xorout all ones; the check value of "123456789" is 0xB90956C775A41001.
// It is the CRC LiteFS uses, so checksums compare across implementations.
//
// The database checksum is the XOR over every page except the lock page of
// PageCrc(pgno, page), then OR kChecksumFlag. XOR makes it order-free and
// incremental: replacing a page is two XORs (ChecksumUpdate), and partial sums over
// disjoint page ranges combine with XOR (XorPageCrcs). Bit 63 is always set, so a
// valid checksum is never 0 and 0 can mean "none".
//
// Thread safety: pure functions; the tables are built at compile time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tenancy/status.h"

namespace tenancy {

// CRC-64/ISO of data[0, n). `crc` continues a previous result:
// Crc64(b, nb, Crc64(a, na)) == Crc64(a || b). The default 0 is the CRC of nothing.
uint64_t Crc64(const void* data, size_t n, uint64_t crc = 0);

// CRC-64/ISO over be32(pgno) || page[0, page_size): one page's share of the checksum.
uint64_t PageCrc(uint32_t pgno, const void* page, size_t page_size);

// Bit 63, set in every database checksum.
inline constexpr uint64_t kChecksumFlag = 1ull << 63;
// The checksum of a database with no pages.
inline constexpr uint64_t kEmptyChecksum = kChecksumFlag;

// True for 512, 1024, ..., 65536: the page sizes SQLite allows.
constexpr bool IsValidPageSize(uint32_t page_size) {
  return page_size >= 512 && page_size <= 65536 && (page_size & (page_size - 1)) == 0;
}

// The page holding SQLite's PENDING_BYTE (file offset 0x40000000). SQLite never
// writes it; it is left out of the checksum and out of change sets.
// REQUIRES: IsValidPageSize(page_size).
constexpr uint32_t LockPage(uint32_t page_size) { return 0x40000000u / page_size + 1; }

// The checksum after a page changes: `remove_crc` is PageCrc of the old image (0 if
// the page did not exist), `add_crc` of the new one (0 if the page goes away).
constexpr uint64_t ChecksumUpdate(uint64_t checksum, uint64_t remove_crc, uint64_t add_crc) {
  return (checksum ^ remove_crc ^ add_crc) | kChecksumFlag;
}

// XOR of PageCrc over pages [first_pgno, end_pgno) of the file, read with pread in
// large chunks; the lock page is skipped. No flag is ORed in, so the results for
// disjoint ranges can be XORed together (e.g. when ranges are checksummed in parallel).
// Errors (in *status, which may be null; the return value is then 0): a read
// error (kIOError with its errno), a file shorter than end_pgno pages (kIOError,
// EIO), an invalid page size or first_pgno == 0 (kInvalidArgument).
uint64_t XorPageCrcs(int fd, uint32_t page_size, uint32_t first_pgno, uint32_t end_pgno,
                     Status* status);

// The database checksum of the first `pages` pages of the file at fd (the file
// may be longer). Returns 0, which is never a valid checksum, and sets *status
// (may be null) on the errors of XorPageCrcs, or kInvalidArgument for pages ==
// UINT32_MAX (above SQLite's limit). `pages` == 0 gives kEmptyChecksum.
uint64_t ChecksumFile(int fd, uint32_t page_size, uint32_t pages, Status* status);

}  // namespace tenancy

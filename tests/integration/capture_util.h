// Helpers of capture_test.cc: an independent CRC-64/ISO and database checksum
// (SPEC "The mount", `<db>-pos`), a WAL reader that gives the database as SQLite's
// recovery would see it, `-pos` parsing, byte comparison of files, and a reader of
// the retention log's framing (tenancy/changelog.h: <first_txid %016x>.seg files,
// each record u32 LE length + encoded change set).
//
// Deliberately not built on tenancy/crc64.h: the tests check the daemon's checksums
// against a second implementation (cross-checked against the library once).
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "harness.h"

namespace cap {

// ---------------------------------------------------------------- CRC-64/ISO

// Poly 0x1B reflected (0xD800000000000000), init and xorout all ones.
inline const std::array<uint64_t, 256>& CrcTable() {
  static const std::array<uint64_t, 256> table = [] {
    std::array<uint64_t, 256> t{};
    for (uint64_t i = 0; i < 256; ++i) {
      uint64_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0xD800000000000000ull : 0);
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// Continues `crc` (0 = the CRC of nothing), like the library's Crc64.
inline uint64_t Crc64(const void* data, size_t n, uint64_t crc = 0) {
  const auto& t = CrcTable();
  const unsigned char* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

inline uint64_t PageCrc(uint32_t pgno, const char* page, size_t page_size) {
  unsigned char be[4] = {static_cast<unsigned char>(pgno >> 24), static_cast<unsigned char>(pgno >> 16),
                         static_cast<unsigned char>(pgno >> 8), static_cast<unsigned char>(pgno)};
  return Crc64(page, page_size, Crc64(be, 4));
}

constexpr uint64_t kFlag = 1ull << 63;
constexpr uint64_t kEmpty = kFlag;

inline uint32_t LockPage(uint32_t page_size) { return 0x40000000u / page_size + 1; }

inline uint32_t Be32(const void* p) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

inline std::string Hex16(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// ---------------------------------------------------------------- -pos

struct Pos {
  bool ok = false;
  uint64_t txid = 0;
  uint64_t checksum = 0;
  std::string text;  // as read
};

inline Pos ParsePos(const std::string& text) {
  Pos p;
  p.text = text;
  if (text.size() != 34 || text[16] != '/' || text[33] != '\n') return p;
  for (size_t i = 0; i < 33; ++i) {
    if (i == 16) continue;
    char c = text[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return p;
  }
  p.txid = std::stoull(text.substr(0, 16), nullptr, 16);
  p.checksum = std::stoull(text.substr(17, 16), nullptr, 16);
  p.ok = true;
  return p;
}

inline std::string FormatPos(uint64_t txid, uint64_t checksum) {
  return Hex16(txid) + "/" + Hex16(checksum) + "\n";
}

// ---------------------------------------------------------------- database checksum

struct Sum {
  bool ok = false;
  std::string error;
  uint64_t checksum = 0;
  uint32_t page_size = 0;
  uint32_t pages = 0;
  bool from_wal = false;  // committed WAL frames were part of it
};

// The database as SQLite would read it: `main` plus the committed frames of `wal`
// (frames with the header's salts and an unbroken checksum chain, up to the last
// commit frame), when a valid WAL is there. The page count is the last commit's
// "database size" in the WAL, else the header's in-header size when it is valid
// (version-valid-for == change counter), else the file size.
inline Sum ChecksumOf(const std::string& main, const std::string& wal = "") {
  Sum out;
  std::string db = it::ReadFile(main);
  if (db.empty()) {  // no pages (missing or empty file)
    out.ok = true;
    out.checksum = kEmpty;
  }
  uint32_t ps = 0;
  uint32_t pages = 0;
  if (!db.empty()) {
    if (db.size() < 100 || std::memcmp(db.data(), "SQLite format 3", 16) != 0) {
      out.error = main + ": no SQLite header";
      return out;
    }
    ps = (uint32_t{static_cast<unsigned char>(db[16])} << 8) | static_cast<unsigned char>(db[17]);
    if (ps == 1) ps = 65536;
    uint32_t in_header = Be32(db.data() + 28);
    pages = (in_header != 0 && Be32(db.data() + 24) == Be32(db.data() + 92))
                ? in_header
                : static_cast<uint32_t>(db.size() / ps);
  }
  std::map<uint32_t, std::string> frames;  // committed WAL images, newest
  if (!wal.empty()) {
    std::string w = it::ReadFile(wal);
    if (w.size() >= 32) {
      uint32_t magic = Be32(w.data());
      bool big = magic == 0x377f0683;
      auto cks = [big](const unsigned char* d, size_t n, uint32_t s[2]) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
          uint32_t a, b;
          if (big) {
            a = Be32(d + i);
            b = Be32(d + i + 4);
          } else {
            std::memcpy(&a, d + i, 4);
            std::memcpy(&b, d + i + 4, 4);
          }
          s[0] += a + s[1];
          s[1] += b + s[0];
        }
      };
      const unsigned char* u = reinterpret_cast<const unsigned char*>(w.data());
      uint32_t s[2] = {0, 0};
      cks(u, 24, s);
      uint32_t wps = Be32(u + 8);
      if (wps == 1) wps = 65536;
      if ((magic == 0x377f0682 || big) && s[0] == Be32(u + 24) && s[1] == Be32(u + 28) &&
          (ps == 0 || wps == ps)) {
        ps = wps;
        uint32_t salt1 = Be32(u + 16), salt2 = Be32(u + 20);
        std::map<uint32_t, std::string> pending;
        for (size_t off = 32; off + 24 + wps <= w.size(); off += 24 + wps) {
          const unsigned char* f = u + off;
          if (Be32(f + 8) != salt1 || Be32(f + 12) != salt2) break;
          cks(f, 8, s);
          cks(f + 24, wps, s);
          if (s[0] != Be32(f + 16) || s[1] != Be32(f + 20)) break;
          pending[Be32(f)] = w.substr(off + 24, wps);
          if (uint32_t commit = Be32(f + 4); commit != 0) {
            for (auto& [p, img] : pending) frames[p] = std::move(img);
            pending.clear();
            pages = commit;
            out.from_wal = true;
          }
        }
      }
    }
  }
  if (ps == 0) return out;  // empty file, no WAL: done above
  if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) {
    out.error = main + ": bad page size " + std::to_string(ps);
    return out;
  }
  uint64_t sum = 0;
  uint32_t lock = LockPage(ps);
  std::string zero(ps, '\0');
  for (uint32_t p = 1; p <= pages; ++p) {
    if (p == lock) continue;
    auto it = frames.find(p);
    if (it != frames.end()) {
      sum ^= PageCrc(p, it->second.data(), ps);
      continue;
    }
    uint64_t off = uint64_t{p - 1} * ps;
    if (off + ps <= db.size()) {
      sum ^= PageCrc(p, db.data() + off, ps);
    } else {
      std::string page = off < db.size() ? db.substr(off) : std::string();
      page.resize(ps, '\0');  // past EOF reads as zeros
      sum ^= PageCrc(p, page.data(), ps);
    }
  }
  out.ok = true;
  out.checksum = sum | kFlag;
  out.page_size = ps;
  out.pages = pages;
  return out;
}

// "" when both files hold the same bytes; otherwise where they first differ.
inline std::string CompareFiles(const std::string& a, const std::string& b) {
  if (!it::Exists(a)) return a + " does not exist";
  if (!it::Exists(b)) return b + " does not exist";
  std::string x = it::ReadFile(a), y = it::ReadFile(b);
  if (x == y) return "";
  size_t n = std::min(x.size(), y.size());
  size_t i = 0;
  while (i < n && x[i] == y[i]) ++i;
  std::string ps_note;
  if (x.size() >= 18) {
    uint32_t ps = (uint32_t{static_cast<unsigned char>(x[16])} << 8) | static_cast<unsigned char>(x[17]);
    if (ps == 1) ps = 65536;
    if (ps >= 512) ps_note = " (page " + std::to_string(i / ps + 1) + " of " + std::to_string(ps) + " bytes)";
  }
  return a + " (" + std::to_string(x.size()) + " bytes) and " + b + " (" + std::to_string(y.size()) +
         " bytes) differ first at offset " + std::to_string(i) + ps_note;
}

// ---------------------------------------------------------------- the retention log

struct Record {
  uint64_t offset = 0;  // of the u32 length frame
  uint32_t len = 0;     // of the encoded change set (without the frame)
};

struct Segment {
  std::string path;
  uint64_t first_txid = 0;
  std::vector<Record> records;
  uint64_t bytes = 0;
  bool clean = true;  // the framing covers the file exactly
};

// The segments of a log directory, oldest first, with their record framing.
inline std::vector<Segment> ReadLog(const std::string& dir) {
  std::vector<Segment> out;
  auto names = it::ListDir(dir);
  if (!names) return out;
  for (const std::string& n : *names) {
    if (n.size() != 20 || n.substr(16) != ".seg") continue;
    Segment s;
    s.path = dir + "/" + n;
    s.first_txid = std::stoull(n.substr(0, 16), nullptr, 16);
    std::string bytes = it::ReadFile(s.path);
    s.bytes = bytes.size();
    uint64_t off = 0;
    while (off + 4 <= bytes.size()) {
      uint32_t len;
      std::memcpy(&len, bytes.data() + off, 4);
      if (len == 0 || off + 4 + len > bytes.size()) break;
      s.records.push_back({off, len});
      off += 4 + uint64_t{len};
    }
    s.clean = off == bytes.size();
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(),
            [](const Segment& a, const Segment& b) { return a.first_txid < b.first_txid; });
  return out;
}

}  // namespace cap

#include "replication/stream_frames.h"

#include <lz4.h>

#include <cassert>
#include <cstring>
#include <iterator>

#include "tenancy/changeset.h"
#include "tenancy/crc64.h"
#include "tenancy/names.h"

namespace replication {

namespace {

using tenancy::Status;

constexpr char kMagic[4] = {'T', 'F', 'S', 'F'};
// Header field offsets (PROTOCOL.md).
constexpr size_t kOffType = 4;
constexpr size_t kOffVersion = 5;
constexpr size_t kOffReserved = 6;
constexpr size_t kOffFrameLen = 8;
constexpr size_t kOffCrc = 12;
// Smallest change-set record: header, two 1-byte names, no pages, trailer.
constexpr uint64_t kMinRecordLen =
    tenancy::kChangeSetHeaderSize + 2 + tenancy::kChangeSetTrailerSize;
// A DbPosition with empty names: two u16 lengths and three u64s. Only a floor for
// the count check; the names are checked later.
constexpr size_t kMinPositionBytes = 2 + 2 + 24;
// LZ4's expansion ceiling, as in tenancy/changeset.cc (FORMAT.md "Page blocks").
constexpr uint64_t kLz4MaxRatio = 255;
constexpr uint64_t kLz4RatioSlack = 64;

// Frame type codes are the variant index + 1; 0 is never a type.
constexpr const char* kNames[] = {
    "hello",          "positions",    "ready",           "ack",
    "hashes",         "welcome",      "changeset-chunk", "snapshot-begin",
    "snapshot-pages", "snapshot-end", "hashes-request",  "drop",
    "heartbeat",      "error"};
static_assert(std::size(kNames) == std::variant_size_v<Frame>);

std::string Str(uint64_t v) { return std::to_string(v); }

Status Bad(std::string_view field, std::string_view what) {
  std::string m = "stream frame: ";
  m += field;
  m += ": ";
  m += what;
  return Status::InvalidArgument(std::move(m));
}

// "<type>.<field>", or "<type>.<list>[<i>].<field>".
std::string Field(const char* type, std::string_view field) {
  std::string f = type;
  f += '.';
  f += field;
  return f;
}
std::string ItemField(const char* type, const char* list, size_t i, std::string_view field) {
  return Field(type, std::string(list) + "[" + Str(i) + "]." + std::string(field));
}

uint64_t GetLe(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// The low 32 bits of CRC-64/ISO: the CRC the change sets and checksums already use.
uint32_t BodyCrc(const char* p, size_t n) { return static_cast<uint32_t>(tenancy::Crc64(p, n)); }

// ---- field rules, shared by ValidateFrame and DecodeFrame ----

Status CheckName(const char* type, std::string_view field, const std::string& name) {
  if (!tenancy::IsValidName(name)) return Bad(Field(type, field), "invalid name");
  return Status::Ok();
}
Status CheckNames(const char* type, const std::string& tenant, const std::string& db) {
  if (Status s = CheckName(type, "tenant", tenant); !s.ok()) return s;
  return CheckName(type, "db", db);
}
Status CheckChecksum(std::string_view field, uint64_t checksum) {
  if ((checksum & tenancy::kChecksumFlag) == 0) return Bad(field, "bit 63 not set");
  return Status::Ok();
}
Status CheckPageSize(const char* type, uint32_t page_size) {
  if (!tenancy::IsValidPageSize(page_size)) {
    return Bad(Field(type, "page_size"), Str(page_size) + " is not a SQLite page size");
  }
  return Status::Ok();
}
// SnapshotPages: checked before the page numbers or images are sized.
Status CheckPageCount(uint64_t count, uint32_t page_size) {
  if (count == 0) return Bad("snapshot-pages.pgnos", "empty");
  if (count * page_size > kMaxChunkBytes) {
    return Bad("snapshot-pages.pgnos",
               Str(count) + " pages of " + Str(page_size) + " bytes exceed kMaxChunkBytes");
  }
  return Status::Ok();
}

Status CheckPositions(const char* type, const std::vector<DbPosition>& dbs) {
  if (dbs.size() > kMaxPositionsPerFrame) {
    return Bad(Field(type, "dbs"), Str(dbs.size()) + " entries exceed kMaxPositionsPerFrame");
  }
  for (size_t i = 0; i < dbs.size(); ++i) {
    if (!tenancy::IsValidName(dbs[i].tenant)) {
      return Bad(ItemField(type, "dbs", i, "tenant"), "invalid name");
    }
    if (!tenancy::IsValidName(dbs[i].db))
      return Bad(ItemField(type, "dbs", i, "db"), "invalid name");
    if ((dbs[i].checksum & tenancy::kChecksumFlag) == 0) {
      return CheckChecksum(ItemField(type, "dbs", i, "checksum"), dbs[i].checksum);
    }
  }
  return Status::Ok();
}

Status Check(const Hello& f) {
  if (f.version == 0) return Bad("hello.version", "0");
  if (!f.cluster_id.empty()) {
    if (Status s = CheckName("hello", "cluster_id", f.cluster_id); !s.ok()) return s;
  }
  return CheckName("hello", "node_id", f.node_id);
}
Status Check(const Positions& f) { return CheckPositions("positions", f.dbs); }
Status Check(const Ready&) { return Status::Ok(); }
Status Check(const Ack& f) { return CheckPositions("ack", f.dbs); }

Status Check(const Hashes& f) {
  if (Status s = CheckNames("hashes", f.tenant, f.db); !s.ok()) return s;
  if (f.first_pgno == 0) return Bad("hashes.first_pgno", "0");
  if (f.page_size == 0) {
    // The replica has no copy: nothing to list.
    if (!f.crcs.empty() || !f.last) return Bad("hashes.page_size", "0 requires no crcs and last");
    return Status::Ok();
  }
  if (Status s = CheckPageSize("hashes", f.page_size); !s.ok()) return s;
  if (f.crcs.size() > uint64_t{UINT32_MAX} - f.first_pgno + 1) {
    return Bad("hashes.crcs", "run past page " + Str(UINT32_MAX));
  }
  const uint32_t lock_page = tenancy::LockPage(f.page_size);
  if (lock_page >= f.first_pgno && lock_page - f.first_pgno < f.crcs.size() &&
      f.crcs[lock_page - f.first_pgno] != 0) {
    return Bad("hashes.crcs[" + Str(lock_page - f.first_pgno) + "]", "lock page CRC not 0");
  }
  return Status::Ok();
}

Status Check(const Welcome& f) {
  if (Status s = CheckName("welcome", "cluster_id", f.cluster_id); !s.ok()) return s;
  if (Status s = CheckName("welcome", "node_id", f.node_id); !s.ok()) return s;
  if (f.primary_url.empty() || f.primary_url.size() > kMaxUrlBytes) {
    return Bad("welcome.primary_url",
               "length " + Str(f.primary_url.size()) + " not in 1.." + Str(kMaxUrlBytes));
  }
  for (char c : f.primary_url) {
    if (c <= 0x20 || c >= 0x7F) return Bad("welcome.primary_url", "not printable ASCII");
  }
  return Status::Ok();
}

Status Check(const ChangeSetChunk& f) {
  if (Status s = CheckNames("changeset-chunk", f.tenant, f.db); !s.ok()) return s;
  if (f.record_len < kMinRecordLen || f.record_len > UINT32_MAX) {
    return Bad("changeset-chunk.record_len",
               Str(f.record_len) + " not in " + Str(kMinRecordLen) + ".." + Str(UINT32_MAX));
  }
  if (f.bytes.empty() || f.bytes.size() > kMaxChunkBytes) {
    return Bad("changeset-chunk.bytes",
               "length " + Str(f.bytes.size()) + " not in 1.." + Str(kMaxChunkBytes));
  }
  if (f.offset >= f.record_len || f.bytes.size() > f.record_len - f.offset) {
    return Bad("changeset-chunk.offset", Str(f.offset) + " + " + Str(f.bytes.size()) +
                                             " bytes run past record_len " + Str(f.record_len));
  }
  return Status::Ok();
}

Status Check(const SnapshotBegin& f) {
  if (Status s = CheckNames("snapshot-begin", f.tenant, f.db); !s.ok()) return s;
  return CheckPageSize("snapshot-begin", f.page_size);
}

Status Check(const SnapshotPages& f) {
  if (Status s = CheckNames("snapshot-pages", f.tenant, f.db); !s.ok()) return s;
  if (Status s = CheckPageSize("snapshot-pages", f.page_size); !s.ok()) return s;
  if (Status s = CheckPageCount(f.pgnos.size(), f.page_size); !s.ok()) return s;
  const uint32_t lock_page = tenancy::LockPage(f.page_size);
  uint32_t prev = 0;
  for (size_t i = 0; i < f.pgnos.size(); ++i) {
    const uint32_t pgno = f.pgnos[i];
    const std::string field = "snapshot-pages.pgnos[" + Str(i) + "]";
    if (pgno == 0) return Bad(field, "0");
    if (pgno == lock_page) return Bad(field, Str(pgno) + " is the lock page");
    if (pgno <= prev) return Bad(field, Str(pgno) + " not ascending");
    prev = pgno;
  }
  if (f.images.size() != f.pgnos.size() * f.page_size) {
    return Bad("snapshot-pages.images", "holds " + Str(f.images.size()) + " bytes, expected " +
                                            Str(f.pgnos.size() * f.page_size));
  }
  return Status::Ok();
}

Status Check(const SnapshotEnd& f) {
  if (Status s = CheckNames("snapshot-end", f.tenant, f.db); !s.ok()) return s;
  if (Status s = CheckChecksum("snapshot-end.checksum", f.checksum); !s.ok()) return s;
  if (f.commit_pages == 0 && f.checksum != tenancy::kEmptyChecksum) {
    return Bad("snapshot-end.checksum", "not the empty checksum with commit_pages 0");
  }
  return Status::Ok();
}

Status Check(const HashesRequest& f) { return CheckNames("hashes-request", f.tenant, f.db); }

Status Check(const Drop& f) {
  if (Status s = CheckName("drop", "tenant", f.tenant); !s.ok()) return s;
  if (f.db.empty()) {
    if (f.db_id != 0) return Bad("drop.db_id", "not 0 for a tenant drop (empty db)");
    return Status::Ok();
  }
  return CheckName("drop", "db", f.db);
}

Status Check(const Heartbeat& f) {
  if (f.primary_time_ms < 0) return Bad("heartbeat.primary_time_ms", "negative");
  return Status::Ok();
}

Status Check(const Error& f) {
  if (f.message.empty() || f.message.size() > kMaxErrorBytes) {
    return Bad("error.message",
               "length " + Str(f.message.size()) + " not in 1.." + Str(kMaxErrorBytes));
  }
  return Status::Ok();
}

// ---- field writers ----
//
// One Put per type, templated on the sink: Writer appends bytes, Sizer only counts
// them, so ValidateFrame knows the encoded size without encoding.

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void U32s(const std::vector<uint32_t>& v) {
    for (uint32_t x : v) U32(x);
  }
  void U64s(const std::vector<uint64_t>& v) {
    for (uint64_t x : v) U64(x);
  }
  void Str(const std::string& s) {  // REQUIRES: s.size() <= UINT16_MAX (names, URL, message)
    U16(static_cast<uint16_t>(s.size()));
    out_->append(s);
  }
  void Blob(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    out_->append(s);
  }
  void Images(const std::string& raw);
  std::string* out() { return out_; }

 private:
  void Le(uint64_t v, int n) {
    char b[8];
    for (int i = 0; i < n; ++i) b[i] = static_cast<char>(v >> (8 * i));
    out_->append(b, n);
  }
  std::string* out_;
};

// SnapshotPages images as one LZ4 block: u32 comp_len, then the block, or the raw
// images when comp_len equals the raw length (FORMAT.md's sentinel rule: LZ4 gets
// raw_len - 1 bytes of room, so it either shrinks the images or gives up).
void Writer::Images(const std::string& raw) {
  const size_t at = out_->size();
  out_->resize(at + 4 + raw.size());
  char* dst = out_->data() + at + 4;
  int comp_len = LZ4_compress_default(raw.data(), dst, static_cast<int>(raw.size()),
                                      static_cast<int>(raw.size() - 1));
  if (comp_len <= 0 ||
      raw.size() > static_cast<uint64_t>(comp_len) * kLz4MaxRatio + kLz4RatioSlack) {
    std::memcpy(dst, raw.data(), raw.size());
    comp_len = static_cast<int>(raw.size());
  }
  for (int i = 0; i < 4; ++i) (*out_)[at + i] = static_cast<char>(comp_len >> (8 * i));
  out_->resize(at + 4 + static_cast<size_t>(comp_len));
}

class Sizer {
 public:
  void U8(uint8_t) { n_ += 1; }
  void U16(uint16_t) { n_ += 2; }
  void U32(uint32_t) { n_ += 4; }
  void U64(uint64_t) { n_ += 8; }
  void U32s(const std::vector<uint32_t>& v) { n_ += 4 * static_cast<uint64_t>(v.size()); }
  void U64s(const std::vector<uint64_t>& v) { n_ += 8 * static_cast<uint64_t>(v.size()); }
  void Str(const std::string& s) { n_ += 2 + s.size(); }
  void Blob(const std::string& s) { n_ += 4 + s.size(); }
  void Images(const std::string& raw) { n_ += 4 + raw.size(); }  // the stored-raw worst case
  uint64_t size() const { return n_; }

 private:
  uint64_t n_ = 0;
};

template <typename W>
void PutPosition(W& w, const DbPosition& p) {
  w.Str(p.tenant);
  w.Str(p.db);
  w.U64(p.db_id);
  w.U64(p.txid);
  w.U64(p.checksum);
}

template <typename W>
void Put(W& w, const Hello& f) {
  w.U32(f.version);
  w.Str(f.cluster_id);
  w.Str(f.node_id);
}
template <typename W>
void Put(W& w, const Positions& f) {
  w.U32(static_cast<uint32_t>(f.dbs.size()));
  for (const DbPosition& p : f.dbs) PutPosition(w, p);
}
template <typename W>
void Put(W&, const Ready&) {}
template <typename W>
void Put(W& w, const Ack& f) {
  w.U32(static_cast<uint32_t>(f.dbs.size()));
  for (const DbPosition& p : f.dbs) PutPosition(w, p);
}
template <typename W>
void Put(W& w, const Hashes& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U32(f.page_size);
  w.U32(f.first_pgno);
  w.U32(static_cast<uint32_t>(f.crcs.size()));
  w.U64s(f.crcs);
  w.U8(f.last ? 1 : 0);
}
template <typename W>
void Put(W& w, const Welcome& f) {
  w.Str(f.cluster_id);
  w.Str(f.node_id);
  w.Str(f.primary_url);
}
template <typename W>
void Put(W& w, const ChangeSetChunk& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U64(f.record_len);
  w.U64(f.offset);
  w.Blob(f.bytes);
}
template <typename W>
void Put(W& w, const SnapshotBegin& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U64(f.db_id);
  w.U32(f.page_size);
  w.U64(f.base_txid);
}
template <typename W>
void Put(W& w, const SnapshotPages& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U32(f.page_size);
  w.U32(static_cast<uint32_t>(f.pgnos.size()));
  w.U32s(f.pgnos);
  w.Images(f.images);
}
template <typename W>
void Put(W& w, const SnapshotEnd& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U64(f.db_id);
  w.U64(f.txid);
  w.U64(f.checksum);
  w.U32(f.commit_pages);
}
template <typename W>
void Put(W& w, const HashesRequest& f) {
  w.Str(f.tenant);
  w.Str(f.db);
}
template <typename W>
void Put(W& w, const Drop& f) {
  w.Str(f.tenant);
  w.Str(f.db);
  w.U64(f.db_id);
}
template <typename W>
void Put(W& w, const Heartbeat& f) {
  w.U64(static_cast<uint64_t>(f.primary_time_ms));
}
template <typename W>
void Put(W& w, const Error& f) {
  w.Str(f.message);
}

// ---- field readers ----

// Reads the fields of one frame type from the body (the bytes after the header).
// The first failure sticks: later reads fail too, and status() names the field.
class Reader {
 public:
  Reader(const char* p, size_t n, const char* type) : p_(p), n_(n), type_(type) {}

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  size_t remaining() const { return n_ - pos_; }
  const char* type() const { return type_; }

  bool FailWith(Status s) {
    if (status_.ok()) status_ = std::move(s);
    return false;
  }
  bool Fail(std::string_view field, std::string_view what) {
    if (status_.ok()) status_ = Bad(Field(type_, field), what);
    return false;
  }
  // Fields of list items are named "<list>[<i>].<field>" while an item is set.
  void SetItem(const char* list, size_t i) {
    item_list_ = list;
    item_ = i;
  }
  void ClearItem() { item_list_ = nullptr; }

  bool U8(const char* field, uint8_t* v) { return Fixed(field, 1, v); }
  bool U16(const char* field, uint16_t* v) { return Fixed(field, 2, v); }
  bool U32(const char* field, uint32_t* v) { return Fixed(field, 4, v); }
  bool U64(const char* field, uint64_t* v) { return Fixed(field, 8, v); }
  bool I64(const char* field, int64_t* v) {
    uint64_t u = 0;
    if (!U64(field, &u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  // u16 length + bytes.
  bool Str(const char* field, std::string* v) {
    uint16_t len = 0;
    if (!U16(field, &len)) return false;
    return Bytes(field, len, v);
  }
  // u32 length + bytes; the length is checked against `max` and the input first.
  bool Blob(const char* field, size_t max, std::string* v) {
    uint32_t len = 0;
    if (!U32(field, &len)) return false;
    if (len > max)
      return FailItem(field,
                      "length " + replication::Str(len) + " exceeds " + replication::Str(max));
    return Bytes(field, len, v);
  }
  // u32 element count, checked against `max` and against the bytes left, at
  // `min_elem_bytes` each, before the caller sizes anything from it.
  bool Count(const char* field, size_t min_elem_bytes, uint64_t max, uint32_t* n) {
    if (!U32(field, n)) return false;
    if (*n > max) {
      return FailItem(field, "count " + replication::Str(*n) + " exceeds " + replication::Str(max));
    }
    if (static_cast<uint64_t>(*n) * min_elem_bytes > remaining()) {
      return FailItem(field, "truncated (count " + replication::Str(*n) + ", " +
                                 replication::Str(remaining()) + " bytes left)");
    }
    return true;
  }
  // Raw bytes, not length-prefixed.
  bool Bytes(const char* field, size_t len, std::string* v) {
    if (!ok()) return false;
    if (len > remaining()) return FailItem(field, "truncated");
    v->assign(p_ + pos_, len);
    pos_ += len;
    return true;
  }
  const char* Take(const char* field, size_t len) {
    if (!ok()) return nullptr;
    if (len > remaining()) {
      FailItem(field, "truncated");
      return nullptr;
    }
    const char* at = p_ + pos_;
    pos_ += len;
    return at;
  }
  bool FailItem(std::string_view field, std::string_view what) {
    if (item_list_ == nullptr) return Fail(field, what);
    return Fail(std::string(item_list_) + "[" + replication::Str(item_) + "]." + std::string(field),
                what);
  }

 private:
  template <typename T>
  bool Fixed(const char* field, int n, T* v) {
    if (!ok()) return false;
    if (remaining() < static_cast<size_t>(n)) return FailItem(field, "truncated");
    *v = static_cast<T>(GetLe(p_ + pos_, n));
    pos_ += n;
    return true;
  }

  const char* p_;
  size_t n_;
  size_t pos_ = 0;
  const char* type_;
  const char* item_list_ = nullptr;
  size_t item_ = 0;
  Status status_;
};

bool GetPositions(Reader& r, std::vector<DbPosition>* dbs) {
  uint32_t n = 0;
  if (!r.Count("dbs", kMinPositionBytes, kMaxPositionsPerFrame, &n)) return false;
  dbs->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    DbPosition& p = (*dbs)[i];
    r.SetItem("dbs", i);
    r.Str("tenant", &p.tenant) && r.Str("db", &p.db) && r.U64("db_id", &p.db_id) &&
        r.U64("txid", &p.txid) && r.U64("checksum", &p.checksum);
  }
  r.ClearItem();
  return r.ok();
}

bool Get(Reader& r, Hello* f) {
  return r.U32("version", &f->version) && r.Str("cluster_id", &f->cluster_id) &&
         r.Str("node_id", &f->node_id);
}
bool Get(Reader& r, Positions* f) { return GetPositions(r, &f->dbs); }
bool Get(Reader&, Ready*) { return true; }
bool Get(Reader& r, Ack* f) { return GetPositions(r, &f->dbs); }
bool Get(Reader& r, Hashes* f) {
  uint32_t n = 0;
  if (!(r.Str("tenant", &f->tenant) && r.Str("db", &f->db) && r.U32("page_size", &f->page_size) &&
        r.U32("first_pgno", &f->first_pgno) && r.Count("crcs", 8, UINT32_MAX, &n))) {
    return false;
  }
  f->crcs.resize(n);
  for (uint32_t i = 0; i < n; ++i) r.U64("crcs", &f->crcs[i]);
  uint8_t last = 0;
  if (!r.U8("last", &last)) return false;
  if (last > 1) return r.Fail("last", Str(last) + " is not 0 or 1");
  f->last = last == 1;
  return true;
}
bool Get(Reader& r, Welcome* f) {
  return r.Str("cluster_id", &f->cluster_id) && r.Str("node_id", &f->node_id) &&
         r.Str("primary_url", &f->primary_url);
}
bool Get(Reader& r, ChangeSetChunk* f) {
  return r.Str("tenant", &f->tenant) && r.Str("db", &f->db) &&
         r.U64("record_len", &f->record_len) && r.U64("offset", &f->offset) &&
         r.Blob("bytes", kMaxChunkBytes, &f->bytes);
}
bool Get(Reader& r, SnapshotBegin* f) {
  return r.Str("tenant", &f->tenant) && r.Str("db", &f->db) && r.U64("db_id", &f->db_id) &&
         r.U32("page_size", &f->page_size) && r.U64("base_txid", &f->base_txid);
}
bool Get(Reader& r, SnapshotPages* f) {
  if (!(r.Str("tenant", &f->tenant) && r.Str("db", &f->db) && r.U32("page_size", &f->page_size))) {
    return false;
  }
  // Page size and count first: they bound the image buffer sized below.
  if (!tenancy::IsValidPageSize(f->page_size)) {
    return r.Fail("page_size", Str(f->page_size) + " is not a SQLite page size");
  }
  uint32_t n = 0;
  if (!r.Count("pgnos", 4, kMaxChunkBytes / 512, &n)) return false;
  if (Status s = CheckPageCount(n, f->page_size); !s.ok()) return r.FailWith(std::move(s));
  f->pgnos.resize(n);
  for (uint32_t i = 0; i < n; ++i) r.U32("pgnos", &f->pgnos[i]);
  uint32_t comp_len = 0;
  if (!r.U32("images", &comp_len)) return false;
  const uint64_t raw_len = static_cast<uint64_t>(n) * f->page_size;
  if (comp_len > raw_len) {
    return r.Fail("images",
                  "compressed length " + Str(comp_len) + " exceeds raw length " + Str(raw_len));
  }
  if (raw_len > static_cast<uint64_t>(comp_len) * kLz4MaxRatio + kLz4RatioSlack) {
    return r.Fail("images", "compressed length " + Str(comp_len) + " too small for raw length " +
                                Str(raw_len));
  }
  const char* src = r.Take("images", comp_len);
  if (src == nullptr) return false;
  if (comp_len == raw_len) {
    f->images.assign(src, comp_len);
    return true;
  }
  f->images.resize(raw_len);
  const int got = LZ4_decompress_safe(src, f->images.data(), static_cast<int>(comp_len),
                                      static_cast<int>(raw_len));
  if (got < 0 || static_cast<uint64_t>(got) != raw_len) {
    return r.Fail("images", "does not decompress to " + Str(raw_len) + " bytes");
  }
  return true;
}
bool Get(Reader& r, SnapshotEnd* f) {
  return r.Str("tenant", &f->tenant) && r.Str("db", &f->db) && r.U64("db_id", &f->db_id) &&
         r.U64("txid", &f->txid) && r.U64("checksum", &f->checksum) &&
         r.U32("commit_pages", &f->commit_pages);
}
bool Get(Reader& r, HashesRequest* f) { return r.Str("tenant", &f->tenant) && r.Str("db", &f->db); }
bool Get(Reader& r, Drop* f) {
  return r.Str("tenant", &f->tenant) && r.Str("db", &f->db) && r.U64("db_id", &f->db_id);
}
bool Get(Reader& r, Heartbeat* f) { return r.I64("primary_time_ms", &f->primary_time_ms); }
bool Get(Reader& r, Error* f) { return r.Str("message", &f->message); }

// The frame of variant index `i`, default-constructed (std::variant has no
// run-time emplace by index).
template <size_t I = 0>
Frame MakeFrame(size_t i) {
  if constexpr (I + 1 < std::variant_size_v<Frame>) {
    if (i != I) return MakeFrame<I + 1>(i);
  }
  return Frame(std::in_place_index<I>);
}

}  // namespace

const char* FrameName(const Frame& f) { return kNames[f.index()]; }

tenancy::Status ValidateFrame(const Frame& f) {
  if (Status s = std::visit([](const auto& v) { return Check(v); }, f); !s.ok()) return s;
  Sizer sizer;
  std::visit([&](const auto& v) { Put(sizer, v); }, f);
  const uint64_t size = kFrameHeaderSize + sizer.size();
  if (size > kMaxFrameBytes) {
    return Bad(FrameName(f), "encoded size " + Str(size) + " exceeds kMaxFrameBytes (" +
                                 Str(kMaxFrameBytes) + ")");
  }
  return Status::Ok();
}

std::string EncodeFrame(const Frame& f) {
  assert(ValidateFrame(f).ok());
  std::string out;
  out.append(kMagic, 4);
  out.push_back(static_cast<char>(f.index() + 1));
  out.push_back(static_cast<char>(kStreamVersion));
  out.append(2 + 4 + 4, '\0');  // reserved, frame_len and crc, filled in below
  Writer w(&out);
  std::visit([&](const auto& v) { Put(w, v); }, f);
  const uint32_t frame_len = static_cast<uint32_t>(out.size());
  const uint32_t crc = BodyCrc(out.data() + kFrameHeaderSize, out.size() - kFrameHeaderSize);
  for (int i = 0; i < 4; ++i) {
    out[kOffFrameLen + i] = static_cast<char>(frame_len >> (8 * i));
    out[kOffCrc + i] = static_cast<char>(crc >> (8 * i));
  }
  return out;
}

tenancy::Result<Frame> DecodeFrame(std::string_view bytes) {
  // 1. Header and framing, before any field is trusted.
  if (bytes.size() < kFrameHeaderSize) {
    return Bad("header", "truncated (" + Str(bytes.size()) + " bytes)");
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Bad("magic", "not \"TFSF\"");
  const uint8_t version = static_cast<uint8_t>(p[kOffVersion]);
  if (version != kStreamVersion) return Bad("version", "unknown version " + Str(version));
  const uint8_t type = static_cast<uint8_t>(p[kOffType]);
  if (type == 0 || type > std::variant_size_v<Frame>)
    return Bad("type", "unknown type " + Str(type));
  if (GetLe(p + kOffReserved, 2) != 0) return Bad("reserved", "not zero");
  const uint32_t frame_len = static_cast<uint32_t>(GetLe(p + kOffFrameLen, 4));
  if (bytes.size() > kMaxFrameBytes) {
    return Bad("frame_len", "input of " + Str(bytes.size()) + " bytes exceeds kMaxFrameBytes (" +
                                Str(kMaxFrameBytes) + ")");
  }
  if (frame_len != bytes.size()) {
    return Bad("frame_len", Str(frame_len) + ", but the input is " + Str(bytes.size()) + " bytes");
  }
  // 2. Integrity, before any field is read.
  const char* body = p + kFrameHeaderSize;
  const size_t body_len = bytes.size() - kFrameHeaderSize;
  if (BodyCrc(body, body_len) != static_cast<uint32_t>(GetLe(p + kOffCrc, 4))) {
    return Bad("crc", "mismatch");
  }

  // 3. The type's fields, then nothing else.
  Frame frame = MakeFrame(type - 1);
  Reader r(body, body_len, kNames[type - 1]);
  std::visit([&](auto& v) { Get(r, &v); }, frame);
  if (!r.ok()) return r.status();
  if (r.remaining() != 0) {
    return Bad(r.type(), Str(r.remaining()) + " unexpected bytes after the fields");
  }

  // 4. The value rules (names, ranges, order); size is within bounds already.
  if (Status s = std::visit([](const auto& v) { return Check(v); }, frame); !s.ok()) return s;
  return frame;
}

tenancy::Status DecodeMessage(std::string_view message,
                              const std::function<tenancy::Status(const Frame&)>& fn) {
  if (message.empty()) return tenancy::Status::InvalidArgument("stream frame: empty message");
  while (!message.empty()) {
    if (message.size() < kFrameHeaderSize) {
      return tenancy::Status::InvalidArgument("stream frame: truncated header in message");
    }
    uint32_t len;
    std::memcpy(&len, message.data() + 8, 4);
    if (len < kFrameHeaderSize || len > message.size()) {
      return tenancy::Status::InvalidArgument("stream frame: frame_len " + std::to_string(len) +
                                              " does not fit the message");
    }
    auto frame = DecodeFrame(message.substr(0, len));
    if (!frame.ok()) return frame.status();
    if (tenancy::Status s = fn(frame.value()); !s.ok()) return s;
    message.remove_prefix(len);
  }
  return tenancy::Status::Ok();
}

}  // namespace replication

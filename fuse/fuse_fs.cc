#define FUSE_USE_VERSION 314
#include "fuse/fuse_fs.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fuse/errno.h"
#include "metrics/metrics.h"
#include "metrics/log.h"

namespace fuse {

using tenancy::File;
using tenancy::Result;
using tenancy::Status;
using tenancy::Store;
using tenancy::Tenant;

namespace {

// Everything below the mount changes only through this daemon, so the kernel
// may cache names and attributes for as long as it likes; when tenantfs itself
// changes a file behind the kernel's back (a replica's applier) it invalidates
// explicitly. A replica caches no negative entries: names appear unannounced.
constexpr double kCacheSeconds = 86400.0;

// SPEC: <mount>/.primary on a replica. Never a tenant name (those cannot start with '.').
constexpr std::string_view kPrimaryName = ".primary";

// Thread ids (gettid) of registered applier threads; 0 = free slot. Lock-free:
// a replica's open() checks it only when an application asks for write access.
std::atomic<pid_t> g_appliers[FuseServer::kMaxApplierThreads];

bool IsApplierThread(pid_t tid) {
  if (tid <= 0) return false;
  for (auto& slot : g_appliers) {
    if (slot.load(std::memory_order_acquire) == tid) return true;
  }
  return false;
}

// Distinct table keys for a database's -pos node (never a File's or Tenant's address).
const void* PosKey(const tenancy::Database* db) { return reinterpret_cast<const char*>(db) + 1; }

// One kernel inode. ino == the Node's address (root: FUSE_ROOT_ID). A node lives
// while the kernel holds lookups on it; it pins the one core object it stands
// for. Kept small (24 bytes, stored in its table entry): every known database
// has a node for its main file. A file node needs no tenant of its own: it is
// file->db().tenant().
struct Node {
  enum class Type : uint8_t { kRoot, kTenant, kFile, kPos, kPrimary };
  explicit Node(Type static_type) : nlookup(0), type(static_type) {}  // kRoot, kPrimary
  explicit Node(std::shared_ptr<Tenant> t) : tenant(std::move(t)), nlookup(0), type(Type::kTenant) {}
  explicit Node(std::shared_ptr<File> f) : file(std::move(f)), nlookup(0), type(Type::kFile) {}
  explicit Node(std::shared_ptr<tenancy::Database> d)
      : db(std::move(d)), nlookup(0), type(Type::kPos) {}
  ~Node() {
    switch (type) {
      case Type::kTenant: tenant.~shared_ptr(); break;
      case Type::kFile: file.~shared_ptr(); break;
      case Type::kPos: db.~shared_ptr(); break;
      case Type::kRoot:
      case Type::kPrimary: break;
    }
  }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The core object this node is found by in the NodeTable.
  const void* key() const {
    return type == Type::kTenant ? static_cast<const void*>(tenant.get())
           : type == Type::kFile ? static_cast<const void*>(file.get())
           : type == Type::kPos  ? PosKey(db.get())
                                 : static_cast<const void*>(this);
  }

  // The member type names is the live one (none for kRoot, kPrimary).
  union {
    std::shared_ptr<Tenant> tenant;         // kTenant
    std::shared_ptr<File> file;             // kFile
    std::shared_ptr<tenancy::Database> db;  // kPos
  };
  uint64_t nlookup : 56;  // guarded by the node's shard mutex (2^56 lookups: never)
  const Type type : 8;
};

// Maps core objects to their live node, so that every lookup of one file gives
// the kernel the same inode (POSIX locks and the shared -shm mapping live on the
// kernel inode). Nodes live in the table's entries (one allocation each; the
// entries of an unordered_map never move). Sharded: no global lock on the data path.
class NodeTable {
 public:
  // Finds or makes the node for object (a Tenant, a File, or a Database for its
  // -pos node) and counts one kernel lookup on it.
  template <typename T>
  Node* Ref(std::shared_ptr<T> object) {
    const void* key = KeyOf(object.get());
    Shard& s = ShardFor(key);
    std::lock_guard lock(s.mu);
    auto [it, inserted] = s.nodes.try_emplace(key, std::move(object));
    Node* n = &it->second;
    if (inserted && n->type == Node::Type::kTenant) {
      std::lock_guard tlock(tenants_mu_);
      tenant_nodes_.emplace(n->tenant->name(), n);
    }
    ++n->nlookup;
    return n;
  }

  void Forget(Node* node, uint64_t n) {
    const void* key = node->key();
    Shard& s = ShardFor(key);
    std::unique_lock lock(s.mu);
    node->nlookup = node->nlookup > n ? node->nlookup - n : 0;
    if (node->nlookup > 0) return;
    if (node->type == Node::Type::kTenant) {
      std::lock_guard tlock(tenants_mu_);
      auto [b, e] = tenant_nodes_.equal_range(node->tenant->name());
      for (auto t = b; t != e; ++t) {
        if (t->second == node) {
          tenant_nodes_.erase(t);
          break;
        }
      }
    }
    // Destroyed after the unlock: the node may hold the last reference to a
    // File, whose Database goes with it.
    auto gone = s.nodes.extract(key);
    lock.unlock();
  }

  // The addresses (inode numbers) of the live nodes of tenants called `name`:
  // usually one, more while the kernel still holds a removed incarnation. Only
  // the numbers: the nodes may be forgotten as soon as this returns.
  std::vector<uintptr_t> TenantInos(std::string_view name) {
    std::vector<uintptr_t> out;
    std::lock_guard tlock(tenants_mu_);
    auto [b, e] = tenant_nodes_.equal_range(std::string(name));
    for (auto t = b; t != e; ++t) out.push_back(reinterpret_cast<uintptr_t>(t->second));
    return out;
  }

  // The live node for key, or null. No reference is taken.
  Node* Find(const void* key) {
    Shard& s = ShardFor(key);
    std::lock_guard lock(s.mu);
    auto it = s.nodes.find(key);
    return it == s.nodes.end() ? nullptr : &it->second;
  }

 private:
  static const void* KeyOf(const Tenant* t) { return t; }
  static const void* KeyOf(const File* f) { return f; }
  static const void* KeyOf(const tenancy::Database* d) { return PosKey(d); }

  struct Shard {
    std::mutex mu;  // leaf
    std::unordered_map<const void*, Node> nodes;
  };
  std::mutex tenants_mu_;  // after a Shard::mu
  std::unordered_multimap<std::string, Node*> tenant_nodes_;  // guarded by tenants_mu_
  Shard& ShardFor(const void* key) {
    return shards_[(reinterpret_cast<uintptr_t>(key) >> 4) % kShards];
  }
  static constexpr size_t kShards = 64;
  Shard shards_[kShards];
};

struct Handle {
  std::shared_ptr<File> file;
  // False for an application's handle on a replica's db, journal or -wal: its
  // writes fail with EROFS even though the open was granted (a -wal opened
  // read-write by a WAL reader).
  bool may_write = true;
};

struct DirHandle {
  std::vector<std::string> names;
  std::vector<mode_t> types;
};

}  // namespace

struct FuseServer::Impl {
  Store* store = nullptr;
  tenancy::Executor* executor = nullptr;
  Options options;
  fuse_session* se = nullptr;
  bool mounted = false;
  std::atomic<pthread_t> loop_thread{pthread_t{}};  // set by Run, read by Exit (another thread)
  NodeTable nodes;
  Node root{Node::Type::kRoot};
  // <mount>/.primary (replica); static like root, never forgotten.
  Node primary{Node::Type::kPrimary};
  double negative_timeout = kCacheSeconds;  // 0 on a replica: names appear behind our back
  std::atomic<bool> notify_ok{false};       // mounted: invalidations may reach the kernel

  // The text of .primary ("URL\n"), or "" when there is none now.
  std::string PrimaryText() const {
    if (!options.read_only || !options.primary_url) return "";
    std::string url = options.primary_url();
    return url.empty() ? url : url + "\n";
  }

  Node* NodeOf(fuse_ino_t ino) {
    if (ino == FUSE_ROOT_ID) return &root;
    return reinterpret_cast<Node*>(ino);
  }
  fuse_ino_t InoOf(Node* n) {
    return n == &root ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(n);
  }
  // Nodes that live as long as the server: the kernel's forgets do not free them.
  bool IsStatic(fuse_ino_t ino) {
    return ino == FUSE_ROOT_ID || ino == reinterpret_cast<fuse_ino_t>(&primary);
  }
};

namespace {

FuseServer::Impl* Ctx(fuse_req_t req) {
  return static_cast<FuseServer::Impl*>(fuse_req_userdata(req));
}

void ReplyStatus(fuse_req_t req, const Status& s) { fuse_reply_err(req, ToErrno(s)); }

using Op = metrics::FuseOp;

// Runs fn, answering EIO if it throws: no exception escapes into libfuse.
template <typename Fn>
void GuardUntimed(fuse_req_t req, Op op, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    LOG_ERROR("fuse handler threw", {{"op", metrics::FuseOpName(op)}, {"error", e.what()}});
    fuse_reply_err(req, EIO);
  } catch (...) {
    LOG_ERROR("fuse handler threw", {{"op", metrics::FuseOpName(op)}});
    fuse_reply_err(req, EIO);
  }
}

// GuardUntimed, and counts and times the request (tenantfs_fuse_request_*{op}):
// the handler's own time — for a queued write, until it is queued or done.
template <typename Fn>
void Guard(fuse_req_t req, Op op, Fn&& fn) {
  auto started = std::chrono::steady_clock::now();
  metrics::Metrics* m = Ctx(req)->options.metrics;  // req is gone once answered
  GuardUntimed(req, op, std::forward<Fn>(fn));
  if (m != nullptr) {
    m->ObserveFuse(op, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
}

Result<struct stat> StatPos(FuseServer::Impl* c, Node* n) {
  auto st = c->store->StatTenant(n->db->tenant());
  if (!st.ok()) return st;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = Store::kPosFileSize;
  st->st_blocks = 1;
  return st;
}

// .primary: a 0444 file as big as its current text; NotFound while there is none.
Result<struct stat> StatPrimary(FuseServer::Impl* c) {
  std::string text = c->PrimaryText();
  if (text.empty()) return Status::NotFound("no primary known");
  auto st = c->store->StatRoot();
  if (!st.ok()) return st;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(text.size());
  st->st_blocks = 1;
  return st;
}

Result<struct stat> StatNode(FuseServer::Impl* c, Node* n) {
  Result<struct stat> st = n->type == Node::Type::kRoot      ? c->store->StatRoot()
                           : n->type == Node::Type::kTenant  ? c->store->StatTenant(*n->tenant)
                           : n->type == Node::Type::kPos     ? StatPos(c, n)
                           : n->type == Node::Type::kPrimary ? StatPrimary(c)
                                                             : c->store->StatFile(*n->file);
  if (st.ok()) st->st_ino = c->InoOf(n);
  return st;
}

void ReplyEntry(fuse_req_t req, FuseServer::Impl* c, Node* n, const struct stat& st,
                double timeout = kCacheSeconds) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.ino = c->InoOf(n);
  e.generation = 1;
  e.attr = st;
  e.attr.st_ino = e.ino;
  e.attr_timeout = timeout;
  e.entry_timeout = timeout;
  if (fuse_reply_entry(req, &e) != 0 && !c->IsStatic(e.ino)) {
    // The kernel did not take the reference (e.g. the request was interrupted).
    c->nodes.Forget(n, 1);
  }
}

// A cached negative entry: the name stays absent until a create through the
// kernel makes it. Names tenantfs makes appear on its own (-pos, .primary, and
// on a replica every name: the applier makes them) are not cached.
void ReplyNoEntry(fuse_req_t req, double timeout) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.ino = 0;
  e.entry_timeout = timeout;
  fuse_reply_entry(req, &e);
}

bool IsPosName(const char* name) {
  auto parsed = tenancy::ParseFileName(name);
  return parsed && parsed->kind == tenancy::FileKind::kPos;
}

// ---- Replica policy (fuse/README.md "Replicas") ----
// Applications may not change anything but what SQLite's readers of a WAL
// database need: -wal and -shm created and opened read-write, -shm written and
// truncated. Applier threads of this daemon may open any existing file read-write.

bool FromApplier(fuse_req_t req) { return IsApplierThread(fuse_req_ctx(req)->pid); }

bool IsKind(Node* n, tenancy::FileKind kind) {
  return n->type == Node::Type::kFile && n->file->kind() == kind;
}

// May this request change node n's data or metadata?
bool MayModify(FuseServer::Impl* c, fuse_req_t req, Node* n) {
  if (!c->options.read_only) return true;
  return IsKind(n, tenancy::FileKind::kShm) || FromApplier(req);
}

// May a create of `name` proceed? A replica's readers create -wal and -shm only.
bool MayCreate(FuseServer::Impl* c, const char* name) {
  if (!c->options.read_only) return true;
  auto parsed = tenancy::ParseFileName(name);
  return parsed &&
         (parsed->kind == tenancy::FileKind::kWal || parsed->kind == tenancy::FileKind::kShm);
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  // Locks: no getlk/setlk handlers, so the kernel keeps POSIX locks itself
  // (fuse/README.md). Data: cached across opens, invalidated explicitly.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA) conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // open(O_TRUNC) then reaches us as a setattr of size 0, queued like any
  // truncation (libfuse asks for ATOMIC_O_TRUNC by default, and open ignores it).
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, Op::kLookup, [&] {
    auto* c = Ctx(req);
    Node* p = c->NodeOf(parent);
    switch (p->type) {
      case Node::Type::kRoot: {
        if (name == kPrimaryName) {
          // Present only while a replica knows its primary: never cached either way.
          auto st = StatPrimary(c);
          if (!st.ok()) return ReplyNoEntry(req, 0);
          return ReplyEntry(req, c, &c->primary, st.value(), 0);
        }
        auto t = c->store->LookupTenant(name);
        if (!t.ok()) {
          if (t.status().code() == Status::Code::kNotFound) {
            return ReplyNoEntry(req, c->negative_timeout);
          }
          return ReplyStatus(req, t.status());
        }
        auto st = c->store->StatTenant(*t.value());
        if (!st.ok()) return ReplyStatus(req, st.status());
        Node* n = c->nodes.Ref(t.value());
        return ReplyEntry(req, c, n, st.value());
      }
      case Node::Type::kTenant: {
        if (IsPosName(name)) {
          auto db = c->store->LookupPos(p->tenant, name);
          if (!db.ok()) {
            if (db.status().code() == Status::Code::kNotFound) return ReplyNoEntry(req, 0);
            return ReplyStatus(req, db.status());
          }
          Node* n = c->nodes.Ref(db.value());
          auto st = StatPos(c, n);
          if (!st.ok()) {
            c->nodes.Forget(n, 1);
            return ReplyStatus(req, st.status());
          }
          return ReplyEntry(req, c, n, st.value(), 0);
        }
        auto f = c->store->LookupFile(p->tenant, name);
        if (!f.ok()) {
          if (f.status().code() == Status::Code::kNotFound) {
            return ReplyNoEntry(req, c->negative_timeout);
          }
          return ReplyStatus(req, f.status());
        }
        auto st = c->store->StatFile(*f.value());
        if (!st.ok()) return ReplyStatus(req, st.status());
        Node* n = c->nodes.Ref(f.value());
        return ReplyEntry(req, c, n, st.value());
      }
      case Node::Type::kFile:
      case Node::Type::kPos:
      case Node::Type::kPrimary:
        return (void)fuse_reply_err(req, ENOTDIR);
    }
  });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  auto* c = Ctx(req);
  if (!c->IsStatic(ino)) c->nodes.Forget(c->NodeOf(ino), nlookup);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  auto* c = Ctx(req);
  for (size_t i = 0; i < count; ++i) {
    if (!c->IsStatic(forgets[i].ino)) {
      c->nodes.Forget(c->NodeOf(forgets[i].ino), forgets[i].nlookup);
    }
  }
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, Op::kGetattr, [&] {
    auto* c = Ctx(req);
    Node* n = c->NodeOf(ino);
    auto st = StatNode(c, n);
    if (!st.ok()) return ReplyStatus(req, st.status());
    fuse_reply_attr(req, &st.value(), n->type == Node::Type::kPrimary ? 0 : kCacheSeconds);
  });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               fuse_file_info* fi) {
  Guard(req, Op::kSetattr, [&] {
    auto* c = Ctx(req);
    Node* n = c->NodeOf(ino);
    if (!MayModify(c, req, n)) return (void)fuse_reply_err(req, EROFS);
    if (n->type == Node::Type::kPos || n->type == Node::Type::kPrimary) {
      return (void)fuse_reply_err(req, EPERM);
    }
    if (n->type != Node::Type::kFile) {
      // Tenant directories and the root keep the mode they were made with.
      if (to_set & (FUSE_SET_ATTR_SIZE)) return (void)fuse_reply_err(req, EISDIR);
      auto st = StatNode(c, n);
      if (!st.ok()) return ReplyStatus(req, st.status());
      return (void)fuse_reply_attr(req, &st.value(), kCacheSeconds);
    }
    File& f = *n->file;
    Status s;
    if (to_set & FUSE_SET_ATTR_MODE) s = c->store->SetMode(f, attr->st_mode);
    if (s.ok() && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
      uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
      gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
      s = c->store->SetOwner(f, uid, gid);
    }
    if (s.ok() && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
      struct timespec times[2];
      times[0].tv_nsec = UTIME_OMIT;
      times[1].tv_nsec = UTIME_OMIT;
      if (to_set & FUSE_SET_ATTR_ATIME_NOW) times[0].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_ATIME) times[0] = attr->st_atim;
      if (to_set & FUSE_SET_ATTR_MTIME_NOW) times[1].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_MTIME) times[1] = attr->st_mtim;
      s = c->store->SetTimes(f, times);
    }
    if (!s.ok()) return ReplyStatus(req, s);
    if (!(to_set & FUSE_SET_ATTR_SIZE)) {
      auto st = StatNode(c, n);
      if (!st.ok()) return ReplyStatus(req, st.status());
      return (void)fuse_reply_attr(req, &st.value(), kCacheSeconds);
    }
    // Truncation is a write: it goes through the database's queue.
    std::shared_ptr<File> file = n->file;
    Status acq = file->Acquire();
    if (!acq.ok()) return ReplyStatus(req, acq);
    c->store->Truncate(file, attr->st_size, [req, c, n, file](Status ts) {
      GuardUntimed(req, Op::kSetattr, [&] {
        if (!ts.ok()) {
          file->Release();
          return ReplyStatus(req, ts);
        }
        auto st = StatNode(c, n);
        file->Release();
        if (!st.ok()) return ReplyStatus(req, st.status());
        fuse_reply_attr(req, &st.value(), kCacheSeconds);
      });
    });
  });
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Guard(req, Op::kMkdir, [&] {
    auto* c = Ctx(req);
    if (c->options.read_only) return (void)fuse_reply_err(req, EROFS);
    Node* p = c->NodeOf(parent);
    if (p->type != Node::Type::kRoot) {
      return ReplyStatus(req, Status::NotSupported("nested directories are not supported"));
    }
    auto t = c->store->CreateTenant(name, mode);
    if (!t.ok()) return ReplyStatus(req, t.status());
    auto st = c->store->StatTenant(*t.value());
    if (!st.ok()) return ReplyStatus(req, st.status());
    Node* n = c->nodes.Ref(t.value());
    ReplyEntry(req, c, n, st.value());
  });
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, Op::kRmdir, [&] {
    auto* c = Ctx(req);
    if (c->options.read_only) return (void)fuse_reply_err(req, EROFS);
    Node* p = c->NodeOf(parent);
    if (p->type == Node::Type::kTenant) {
      auto f = c->store->LookupFile(p->tenant, name);
      return (void)fuse_reply_err(req, f.ok() ? ENOTDIR : ENOENT);
    }
    if (p->type != Node::Type::kRoot) return (void)fuse_reply_err(req, ENOTDIR);
    ReplyStatus(req, c->store->RemoveTenant(name));
  });
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, Op::kUnlink, [&] {
    auto* c = Ctx(req);
    if (c->options.read_only) return (void)fuse_reply_err(req, EROFS);
    Node* p = c->NodeOf(parent);
    if (p->type == Node::Type::kRoot) {
      auto t = c->store->LookupTenant(name);
      return (void)fuse_reply_err(req, t.ok() ? EISDIR : ENOENT);
    }
    if (p->type != Node::Type::kTenant) return (void)fuse_reply_err(req, ENOTDIR);
    auto parsed = tenancy::ParseFileName(name);
    bool is_db = parsed && parsed->kind == tenancy::FileKind::kMain;
    std::string db_name = parsed ? parsed->db : "";
    c->store->Unlink(p->tenant, name, [req, c, parent, is_db, db_name](Status s) {
      ReplyStatus(req, s);
      if (!s.ok() || !is_db) return;
      // The companions went too, behind the kernel's back: drop its names for
      // them. Not from this thread: the kernel may still hold the directory lock
      // until our reply is processed, and the notify would wait for it.
      c->executor->Run([c, parent, db_name] {
        for (auto kind : {tenancy::FileKind::kJournal, tenancy::FileKind::kWal,
                          tenancy::FileKind::kShm}) {
          std::string n = tenancy::MakeFileName(db_name, kind);
          fuse_lowlevel_notify_inval_entry(c->se, parent, n.c_str(), n.size());
        }
      });
    });
  });
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Guard(req, Op::kCreate, [&] {
    auto* c = Ctx(req);
    if (!MayCreate(c, name)) return (void)fuse_reply_err(req, EROFS);
    Node* p = c->NodeOf(parent);
    if (p->type != Node::Type::kTenant) {
      return ReplyStatus(req, Status::NotSupported("only databases live in tenant directories"));
    }
    if (!S_ISREG(mode)) return ReplyStatus(req, Status::NotSupported("only regular files"));
    bool exclusive = (fi->flags & O_EXCL) != 0;
    fuse_file_info info = *fi;
    std::shared_ptr<Tenant> tenant = p->tenant;
    // On a replica only -wal and -shm get here, and only -shm is written.
    auto parsed = tenancy::ParseFileName(name);
    bool may_write = !c->options.read_only || (parsed && parsed->kind == tenancy::FileKind::kShm);
    c->store->CreateFile(tenant, name, mode, exclusive,
                         [req, c, info, may_write](Result<std::shared_ptr<File>> f) mutable {
      GuardUntimed(req, Op::kCreate, [&] {
        if (!f.ok()) return ReplyStatus(req, f.status());
        std::shared_ptr<File> file = std::move(f.value());
        Status acq = file->Acquire();
        if (!acq.ok()) return ReplyStatus(req, acq);
        auto st = c->store->StatFile(*file);
        if (!st.ok()) {
          file->Release();
          return ReplyStatus(req, st.status());
        }
        Node* n = c->nodes.Ref(file);
        fuse_entry_param e;
        std::memset(&e, 0, sizeof(e));
        e.ino = c->InoOf(n);
        e.generation = 1;
        e.attr = st.value();
        e.attr.st_ino = e.ino;
        e.attr_timeout = kCacheSeconds;
        e.entry_timeout = kCacheSeconds;
        auto* h = new Handle{file, may_write};
        info.fh = reinterpret_cast<uint64_t>(h);
        info.keep_cache = 1;
        if (fuse_reply_create(req, &e, &info) != 0) {
          c->nodes.Forget(n, 1);
          file->Release();
          delete h;
        }
      });
    });
  });
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, Op::kOpen, [&] {
    auto* c = Ctx(req);
    Node* n = c->NodeOf(ino);
    bool wants_write = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
    bool may_write = true;
    if (c->options.read_only && wants_write && !FromApplier(req)) {
      // SQLite answers EROFS on the database or journal by reopening it
      // read-only; a WAL reader needs -wal and -shm read-write, but only -shm
      // is written (its read marks).
      bool reader_rw = (IsKind(n, tenancy::FileKind::kWal) && !(fi->flags & O_TRUNC)) ||
                       IsKind(n, tenancy::FileKind::kShm);
      if (!reader_rw) return (void)fuse_reply_err(req, EROFS);
      may_write = IsKind(n, tenancy::FileKind::kShm);
    }
    if (n->type == Node::Type::kPos || n->type == Node::Type::kPrimary) {
      if (wants_write) {
        return (void)fuse_reply_err(req, EACCES);  // a 0444 file, even for root
      }
      if (n->type == Node::Type::kPrimary && c->PrimaryText().empty()) {
        return (void)fuse_reply_err(req, ENOENT);
      }
      fi->fh = 0;
      fi->direct_io = 1;  // always the current text, never a cached page
      fuse_reply_open(req, fi);
      return;
    }
    if (n->type != Node::Type::kFile) return (void)fuse_reply_err(req, EISDIR);
    // A name the kernel still caches for a file tenantfs removed behind its back
    // (a companion of an unlinked database): ESTALE makes the kernel look the
    // name up again instead of opening the old file.
    if (n->file->unlinked()) return (void)fuse_reply_err(req, ESTALE);
    Status s = n->file->Acquire();
    if (!s.ok()) return ReplyStatus(req, s);
    auto* h = new Handle{n->file, may_write};
    fi->fh = reinterpret_cast<uint64_t>(h);
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0) {
      n->file->Release();
      delete h;
    }
  });
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h == nullptr) return (void)fuse_reply_err(req, 0);  // a -pos or .primary handle
  h->file->Release();
  delete h;
  fuse_reply_err(req, 0);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, Op::kRead, [&] {
    auto* c = Ctx(req);
    auto* h = reinterpret_cast<Handle*>(fi->fh);
    if (h == nullptr && c->NodeOf(ino)->type == Node::Type::kPrimary) {
      std::string text = c->PrimaryText();  // "" once the primary is unknown: EOF
      size_t from = std::min(static_cast<size_t>(off), text.size());
      fuse_reply_buf(req, text.data() + from, std::min(size, text.size() - from));
      return;
    }
    if (h == nullptr) {  // -pos
      Node* n = c->NodeOf(ino);
      c->store->ReadPosition(n->db, [req, size, off](Result<tenancy::Position> pos) {
        if (!pos.ok()) return ReplyStatus(req, pos.status());
        std::string text = Store::FormatPosition(pos.value());
        size_t from = std::min(static_cast<size_t>(off), text.size());
        fuse_reply_buf(req, text.data() + from, std::min(size, text.size() - from));
      });
      return;
    }
    thread_local std::vector<char> buf;
    if (buf.size() < size) buf.resize(size);
    auto n = c->store->Read(*h->file, buf.data(), size, off);
    if (!n.ok()) return ReplyStatus(req, n.status());
    fuse_reply_buf(req, buf.data(), n.value());
  });
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
             fuse_file_info* fi) {
  Guard(req, Op::kWrite, [&] {
    auto* c = Ctx(req);
    auto* h = reinterpret_cast<Handle*>(fi->fh);
    if (!h->may_write) return (void)fuse_reply_err(req, EROFS);
    // The payload belongs to this worker's receive buffer: copy before queueing.
    c->store->Write(h->file, std::string(data, size), off, [req](Result<size_t> n) {
      if (!n.ok()) return ReplyStatus(req, n.status());
      fuse_reply_write(req, n.value());
    });
  });
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Guard(req, Op::kFsync, [&] {
    auto* c = Ctx(req);
    auto* h = reinterpret_cast<Handle*>(fi->fh);
    c->store->Fsync(h->file, datasync != 0, [req](Status s) { ReplyStatus(req, s); });
  });
}

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) {
  Guard(req, Op::kOther, [&] {
    auto* c = Ctx(req);
    auto* h = reinterpret_cast<Handle*>(fi->fh);
    if (!h->may_write) return (void)fuse_reply_err(req, EROFS);
    c->store->Fallocate(h->file, mode, offset, length, [req](Status s) { ReplyStatus(req, s); });
  });
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, Op::kOther, [&] {
    auto* c = Ctx(req);
    Node* n = c->NodeOf(ino);
    auto* d = new DirHandle;
    d->names = {".", ".."};
    d->types = {S_IFDIR, S_IFDIR};
    Result<std::vector<std::string>> names = std::vector<std::string>{};
    mode_t type = S_IFDIR;
    if (n->type == Node::Type::kRoot) {
      names = c->store->ListTenants();
      if (!c->PrimaryText().empty()) {
        d->names.emplace_back(kPrimaryName);
        d->types.push_back(S_IFREG);
      }
    } else if (n->type == Node::Type::kTenant) {
      names = c->store->ListFiles(*n->tenant);
      type = S_IFREG;
    } else {
      delete d;
      return (void)fuse_reply_err(req, ENOTDIR);
    }
    if (!names.ok()) {
      delete d;
      return ReplyStatus(req, names.status());
    }
    for (auto& name : names.value()) {
      bool is_db = n->type == Node::Type::kTenant && tenancy::ParseFileName(name)->kind ==
                                                          tenancy::FileKind::kMain;
      if (is_db) {
        d->names.push_back(tenancy::MakeFileName(name, tenancy::FileKind::kPos));
        d->types.push_back(S_IFREG);
      }
      d->names.push_back(std::move(name));
      d->types.push_back(type);
    }
    fi->fh = reinterpret_cast<uint64_t>(d);
    fi->cache_readdir = 0;
    if (fuse_reply_open(req, fi) != 0) delete d;
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, Op::kReaddir, [&] {
    auto* d = reinterpret_cast<DirHandle*>(fi->fh);
    std::vector<char> buf(size);
    size_t used = 0;
    for (size_t i = static_cast<size_t>(off); i < d->names.size(); ++i) {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_mode = d->types[i];
      // d_ino is informational only; the kernel looks names up before use.
      st.st_ino = std::hash<std::string>{}(d->names[i]) | 1;
      size_t need = fuse_add_direntry(req, buf.data() + used, size - used, d->names[i].c_str(),
                                      &st, static_cast<off_t>(i + 1));
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void OpReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Guard(req, Op::kOther, [&] {
    auto* c = Ctx(req);
    Node* n = c->NodeOf(ino);
    if (n->type != Node::Type::kTenant) return (void)fuse_reply_err(req, 0);
    ReplyStatus(req, c->store->SyncTenantDir(*n->tenant));
  });
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) {
  auto* c = Ctx(req);
  struct statvfs sv;
  if (::statvfs(c->store->tenants_dir().c_str(), &sv) != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

// EPERM, or on a replica EROFS (which Linux checks first on a read-only mount).
void OpNotSupported(fuse_req_t req) {
  fuse_reply_err(req, Ctx(req)->options.read_only ? EROFS : EPERM);
}
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { OpNotSupported(req); }
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { OpNotSupported(req); }
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { OpNotSupported(req); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) {
  OpNotSupported(req);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.mkdir = OpMkdir;
  ops.rmdir = OpRmdir;
  ops.unlink = OpUnlink;
  ops.create = OpCreate;
  ops.open = OpOpen;
  ops.release = OpRelease;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.fsync = OpFsync;
  ops.fallocate = OpFallocate;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.releasedir = OpReleasedir;
  ops.fsyncdir = OpFsyncdir;
  ops.statfs = OpStatfs;
  ops.symlink = OpSymlink;
  ops.link = OpLink;
  ops.mknod = OpMknod;
  ops.rename = OpRename;
  // No flush (close needs no round trip), no getlk/setlk/flock (kernel-local
  // locks), no access (default_permissions): see fuse/README.md.
  return ops;
}();

void WakeHandler(int) {}

}  // namespace

FuseServer::FuseServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FuseServer::~FuseServer() {
  Unmount();
  if (impl_->se != nullptr) fuse_session_destroy(impl_->se);
}

Result<std::unique_ptr<FuseServer>> FuseServer::Mount(tenancy::Store* store,
                                                      tenancy::Executor* executor,
                                                      const Options& options) {
  auto impl = std::make_unique<Impl>();
  impl->store = store;
  impl->executor = executor;
  impl->options = options;
  if (options.read_only) impl->negative_timeout = 0;

  std::vector<std::string> argv_s = {"tenantfs", "-o",
                                     "fsname=tenantfs,subtype=tenantfs,default_permissions"};
  if (options.allow_other) argv_s.back() += ",allow_other";
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  impl->se = fuse_session_new(&args, &kOps, sizeof(kOps), impl.get());
  if (impl->se == nullptr) return Status::InvalidArgument("fuse_session_new failed");
  if (fuse_session_mount(impl->se, options.mount_dir.c_str()) != 0) {
    fuse_session_destroy(impl->se);
    impl->se = nullptr;
    return Status::InvalidArgument("cannot mount FUSE at " + options.mount_dir +
                                   " (is /dev/fuse available and the dir empty?)");
  }
  impl->mounted = true;
  impl->notify_ok.store(true);
  return std::unique_ptr<FuseServer>(new FuseServer(std::move(impl)));
}

Status FuseServer::Run() {
  impl_->loop_thread.store(pthread_self());
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = WakeHandler;  // no SA_RESTART: interrupts the loop's wait
  sigaction(SIGUSR1, &sa, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);

  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(impl_->options.max_threads));
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  int rc = fuse_session_loop_mt(impl_->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  // Requests handed to the executor finish and reply before we unmount.
  impl_->executor->Drain();
  if (rc != 0 && !fuse_session_exited(impl_->se)) {
    return Status::FromErrno(rc < 0 ? -rc : EIO, "fuse loop");
  }
  return Status::Ok();
}

void FuseServer::Exit() {
  fuse_session_exit(impl_->se);
  pthread_t loop = impl_->loop_thread.load();
  if (loop != pthread_t{}) pthread_kill(loop, SIGUSR1);
}

void FuseServer::Unmount() {
  if (!impl_->mounted) return;
  impl_->mounted = false;
  impl_->notify_ok.store(false);
  fuse_session_unmount(impl_->se);
}

bool FuseServer::RegisterApplierThread() {
  pid_t tid = ::gettid();
  for (auto& slot : g_appliers) {
    if (slot.load(std::memory_order_acquire) == tid) return true;
  }
  for (auto& slot : g_appliers) {
    pid_t free_slot = 0;
    if (slot.compare_exchange_strong(free_slot, tid, std::memory_order_acq_rel)) return true;
  }
  LOG_ERROR("too many applier threads", {{"max", std::to_string(kMaxApplierThreads)}});
  return false;
}

void FuseServer::UnregisterApplierThread() {
  pid_t tid = ::gettid();
  for (auto& slot : g_appliers) {
    pid_t mine = tid;
    slot.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
  }
}

// The notify writes to /dev/fuse and returns once the kernel has dropped what
// it caches; that may wait on FUSE requests (directory locks, dirty -shm pages
// written back), hence the REQUIRES in the header. ENOENT: the kernel holds no
// such inode or name, which is what we wanted.
void FuseServer::InvalidateData(const tenancy::File* file) { InvalidateData(file, {}); }

void FuseServer::InvalidateData(const tenancy::File* file,
                                const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  if (file == nullptr || !impl_->notify_ok.load()) return;
  Node* n = impl_->nodes.Find(file);
  if (n == nullptr) return;
  // Only the number is used: the node may be forgotten meanwhile (the kernel
  // then answers ENOENT). Every call also drops the attributes.
  fuse_ino_t ino = impl_->InoOf(n);
  auto one = [&](off_t off, off_t len) {
    int rc = fuse_lowlevel_notify_inval_inode(impl_->se, ino, off, len);
    if (rc != 0 && rc != -ENOENT) {
      LOG_WARN("inode invalidation failed", {{"file", file->path()}, {"error", std::strerror(-rc)}});
    }
    return rc;
  };
  if (ranges.empty()) return (void)one(0, 0);
  for (const auto& [off, len] : ranges) {
    if (one(static_cast<off_t>(off), static_cast<off_t>(len)) == -ENOENT) return;
  }
}

void FuseServer::InvalidateEntry(std::string_view tenant, std::string_view name) {
  if (tenant.empty() || !impl_->notify_ok.load()) return;
  auto notify = [this](fuse_ino_t parent, std::string_view n) {
    int rc = fuse_lowlevel_notify_inval_entry(impl_->se, parent, n.data(), n.size());
    if (rc != 0 && rc != -ENOENT) {
      LOG_WARN("entry invalidation failed",
               {{"name", std::string(n)}, {"error", std::strerror(-rc)}});
    }
  };
  if (name.empty()) return notify(FUSE_ROOT_ID, tenant);
  // Under every inode the kernel holds for a tenant of that name; none: the
  // kernel caches nothing below it.
  for (uintptr_t ino : impl_->nodes.TenantInos(tenant)) notify(ino, name);
}

}  // namespace fuse

#include "replication/stream_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "metrics/log.h"
#include "metrics/metrics.h"
#include "replication/apply_lock.h"
#include "replication/stream_frames.h"
#include "replication/stream_keys.h"
#include "tenancy/changeset.h"
#include "tenancy/crc64.h"
#include "tenancy/file_io.h"
#include "tenancy/store.h"

namespace replication {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using tenancy::Capture;
using tenancy::ChangeSet;
using tenancy::Position;
using tenancy::Result;
using tenancy::Status;

namespace {

// Parses "http://host:port[/...]".
bool ParseUrl(const std::string& url, std::string* host, std::string* port) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  rest = rest.substr(0, rest.find('/'));
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return false;
  *host = rest.substr(0, colon);
  *port = rest.substr(colon + 1);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return true;
}

// A snapshot being received: the pages that differ, at their offsets in a
// sparse temp file, and which pages those are.
struct Staging {
  ~Staging() {
    if (fd >= 0) ::close(fd);
  }
  int fd = -1;
  std::string path;
  uint32_t page_size = 0;
  std::vector<uint32_t> present;  // pgnos written, unsorted, may repeat

  Status Put(uint32_t pgno, const char* image) {
    present.push_back(pgno);
    return tenancy::PwriteFull(fd, image, page_size, uint64_t{pgno - 1} * page_size, path);
  }
};

}  // namespace

Result<std::string> ReadClusterId(const std::string& data_dir) {
  std::string path = data_dir + "/CLUSTER";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return Status::FromErrno(errno, "open " + path);
  }
  char buf[128];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  if (n < 0) return Status::FromErrno(errno, "read " + path);
  std::string id(buf, static_cast<size_t>(n));
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

Status WriteClusterId(const std::string& data_dir, const std::string& id) {
  std::string path = data_dir + "/CLUSTER";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  std::string line = id + "\n";
  Status s = tenancy::PwriteFull(fd, line.data(), line.size(), 0, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Status::FromErrno(errno, "sync " + tmp);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Status::FromErrno(errno, "rename " + tmp);
  return s;
}

Result<std::string> EnsureClusterId(const std::string& data_dir) {
  auto id = ReadClusterId(data_dir);
  if (!id.ok() || !id->empty()) return id;
  std::random_device rd;
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  if (Status s = WriteClusterId(data_dir, buf); !s.ok()) return s;
  return std::string(buf);
}

struct StreamClient::Impl {
  explicit Impl(Options opts) : o(std::move(opts)) {}

  // ---- apply queues ----
  struct Task {
    enum class Kind { kApply, kSnapshot, kDrop, kHashes } kind = Kind::kApply;
    uint64_t gen = 0;
    std::string raw;                   // kApply: the record as received (decoded by the applier)
    int64_t commit_ms = 0;             // kApply: its commit time on the primary
    std::shared_ptr<Staging> staging;  // kSnapshot
    SnapshotEnd end;                   // kSnapshot
  };
  struct DbQueue {
    std::deque<Task> tasks;
    bool running = false;
  };

  void Enqueue(const std::string& key, Task task) {
    std::lock_guard lock(qmu);
    DbQueue& q = queues[key];
    q.tasks.push_back(std::move(task));
    if (!q.running && q.tasks.size() == 1) {
      ready.push_back(key);
      qcv.notify_one();
    }
  }

  void WorkerLoop() {
    if (o.applier_thread_started) o.applier_thread_started();
    while (true) {
      std::string key;
      std::deque<Task> tasks;
      {
        std::unique_lock lock(qmu);
        qcv.wait(lock, [&] { return stopping || !ready.empty(); });
        if (stopping) return;
        key = std::move(ready.front());
        ready.pop_front();
        DbQueue& q = queues[key];
        q.running = true;
        tasks.swap(q.tasks);
        ++active;
      }
      Process(key, tasks);
      {
        std::lock_guard lock(qmu);
        DbQueue& q = queues[key];
        q.running = false;
        if (!q.tasks.empty()) {
          ready.push_back(key);
          qcv.notify_one();
        } else {
          queues.erase(key);
        }
        --active;
        qcv.notify_all();
      }
    }
  }

  void Process(const std::string& key, std::deque<Task>& tasks) {
    auto [t, d] = SplitKey(key);
    while (!tasks.empty()) {
      if (tasks.front().gen != gen.load()) {  // from a connection that ended
        tasks.pop_front();
        continue;
      }
      Status s;
      Task::Kind kind = tasks.front().kind;
      if (kind == Task::Kind::kApply) {
        std::vector<ChangeSet> batch;
        while (s.ok() && !tasks.empty() && tasks.front().kind == Task::Kind::kApply &&
               tasks.front().gen == gen.load()) {
          auto cs = tenancy::DecodeChangeSet(tasks.front().raw);
          tasks.pop_front();
          if (!cs.ok()) {
            s = Status::DataLoss("corrupt change set for " + key + ": " + cs.status().ToString());
          } else if (cs->tenant != t || cs->db != d) {
            s = Status::InvalidArgument("stream: change set of " + cs->tenant + "/" + cs->db + " sent for " + key);
          } else {
            batch.push_back(std::move(cs.value()));
          }
        }
        // What decoded before a bad record still applies (it follows).
        Status applied = batch.empty() ? Status::Ok() : ApplyBatch(t, d, std::move(batch));
        if (s.ok()) s = applied;
      } else {
        Task task = std::move(tasks.front());
        tasks.pop_front();
        if (kind == Task::Kind::kSnapshot) s = InstallSnapshot(t, d, task);
        if (kind == Task::Kind::kDrop) s = DropDb(t, d);
        if (kind == Task::Kind::kHashes) s = SendHashes(t, d);
      }
      if (!s.ok()) {
        LOG_WARN("replica apply failed; reconnecting to re-sync the database",
                 {{"db", key}, {"error", s.ToString()}});
        tasks.clear();
        FailSession("apply of " + key + " failed");
        return;
      }
    }
  }

  Result<std::shared_ptr<tenancy::Database>> OpenDb(const std::string& t, const std::string& d) {
    bool existed = o.store->OpenDatabase(t, d, false).ok();
    auto db = o.store->OpenDatabase(t, d, true);
    if (db.ok() && !existed && o.invalidate_entry) {
      o.invalidate_entry(t, "");
      o.invalidate_entry(t, d);
    }
    return db;
  }

  Result<std::unique_ptr<ApplyLock>> Lock(const std::string& t, const std::string& d) {
    std::string path = o.mount_dir + "/" + t + "/" + d;
    Result<std::unique_ptr<ApplyLock>> lock = Status::Unavailable("not tried");
    for (int attempt = 0; attempt < 3 && !stopping_flag.load(); ++attempt) {
      lock = ApplyLock::Acquire(path, o.lock_timeout);
      if (lock.ok() || lock.status().code() != Status::Code::kDeadlineExceeded) return lock;
      LOG_WARN("a reader holds the database; apply waits", {{"db", t + "/" + d}, {"error", lock.status().ToString()}});
    }
    return lock;
  }

  // ranges: byte ranges that changed; empty = the whole file.
  void Invalidate(const std::string& t, const std::string& d,
                  const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
    if (!o.invalidate_data) return;
    auto tenant = o.store->LookupTenant(t);
    if (!tenant.ok()) return;
    auto file = o.store->LookupFile(tenant.value(), d);
    if (file.ok()) o.invalidate_data(file.value().get(), ranges);
  }

  // The byte ranges a batch wrote, merged into runs of consecutive pages; past
  // kMaxRanges runs (or on a page size change) the whole file.
  static std::vector<std::pair<uint64_t, uint64_t>> ChangedRanges(const std::vector<ChangeSet>& batch) {
    constexpr size_t kMaxRanges = 64;
    std::vector<uint32_t> pages;
    uint32_t ps = batch.empty() ? 0 : batch.front().page_size;
    for (const auto& cs : batch) {
      if (cs.page_size != ps || (cs.flags & ChangeSet::kFlagSnapshot)) return {};
      pages.insert(pages.end(), cs.pgnos.begin(), cs.pgnos.end());
    }
    std::sort(pages.begin(), pages.end());
    pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (size_t i = 0; i < pages.size();) {
      size_t j = i + 1;
      while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
      runs.emplace_back(uint64_t{pages[i] - 1} * ps, uint64_t(j - i) * ps);
      if (runs.size() > kMaxRanges) return {};
      i = j;
    }
    if (runs.empty()) return {};
    return runs;
  }

  // The apply step both kinds of work share: SQLite's locks through the mount,
  // write(capture) on the database's queue, then — whatever was written, even
  // after a failure — the kernel's cached pages dropped and a WAL database's
  // index reset so readers reload, then the locks released. *after: the
  // position reached.
  Status UnderLock(const std::string& t, const std::string& d,
                   const std::function<Status(Capture&)>& write, Position* after,
                   const std::vector<std::pair<uint64_t, uint64_t>>& ranges = {}) {
    auto db = OpenDb(t, d);
    if (!db.ok()) return db.status();
    auto lock = Lock(t, d);
    if (!lock.ok()) return lock.status();
    Status s = o.store->RunOn(db.value(), [&](Capture& c) {
      Status w = write(c);
      *after = c.position();
      return w;
    });
    // On failure the file may have changed anywhere: drop all of it.
    Invalidate(t, d, s.ok() ? ranges : std::vector<std::pair<uint64_t, uint64_t>>{});
    if (lock.value()->wal()) {
      Status r = lock.value()->ResetWalIndex(after->pages);
      if (s.ok()) s = r;
    }
    lock.value()->Release();
    return s;
  }

  // Consecutive change sets of one database as one record covering their TXID
  // range (FORMAT.md allows min_txid < max_txid): the newest image of every page,
  // the first pre-checksum, the last post-checksum and size. Applying it writes
  // each page once and appends one record, instead of one per transaction (a
  // catch-up of 1,200 one-row transactions touches a handful of pages). Runs of
  // snapshots or of another page size are not merged.
  static std::vector<ChangeSet> Merge(std::vector<ChangeSet> batch) {
    constexpr size_t kMaxMergedBytes = 64u << 20;
    std::vector<ChangeSet> out;
    std::map<uint32_t, std::string_view> pages;  // of the run being merged
    size_t run_start = 0;
    auto flush = [&](size_t end) {  // batch[run_start, end) -> out
      if (end - run_start == 1) {
        out.push_back(std::move(batch[run_start]));
      } else if (end > run_start) {
        const ChangeSet& first = batch[run_start];
        const ChangeSet& last = batch[end - 1];
        ChangeSet m;
        m.db_id = last.db_id;
        m.tenant = last.tenant;
        m.db = last.db;
        m.min_txid = first.min_txid;
        m.max_txid = last.max_txid;
        m.page_size = last.page_size;
        m.commit_pages = last.commit_pages;
        m.timestamp_ms = last.timestamp_ms;
        m.pre_checksum = first.pre_checksum;
        m.post_checksum = last.post_checksum;
        for (const auto& [p, image] : pages) {
          if (p > m.commit_pages) continue;  // cut by a later transaction
          m.pgnos.push_back(p);
          m.pages.append(image);
        }
        out.push_back(std::move(m));
      }
      pages.clear();
      run_start = end;
    };
    size_t bytes = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const ChangeSet& cs = batch[i];
      bool joins = i > run_start && (cs.flags & ChangeSet::kFlagSnapshot) == 0 &&
                   (batch[run_start].flags & ChangeSet::kFlagSnapshot) == 0 &&
                   cs.page_size == batch[run_start].page_size && cs.db_id == batch[run_start].db_id &&
                   cs.min_txid == batch[i - 1].max_txid + 1 && bytes < kMaxMergedBytes;
      if (!joins) {
        flush(i);
        bytes = 0;
      }
      for (size_t k = 0; k < cs.pgnos.size(); ++k) {
        auto [it, fresh] = pages.insert_or_assign(
            cs.pgnos[k], std::string_view(cs.pages).substr(k * size_t{cs.page_size}, cs.page_size));
        if (fresh) bytes += cs.page_size;
      }
    }
    flush(batch.size());
    return out;
  }

  Status ApplyBatch(const std::string& t, const std::string& d, std::vector<ChangeSet> batch) {
    auto ranges = ChangedRanges(batch);
    std::vector<ChangeSet> merged = Merge(std::move(batch));
    Position after;
    Status s = UnderLock(t, d, [&](Capture& c) {
      for (const auto& cs : merged) {
        if (Status a = c.ApplyRemote(cs); !a.ok()) return a;
      }
      return Status::Ok();
    }, &after, ranges);
    if (!s.ok()) return s;
    QueueAck(t, d, after);
    return Status::Ok();
  }

  Status InstallSnapshot(const std::string& t, const std::string& d, const Task& task) {
    Staging& st = *task.staging;
    std::sort(st.present.begin(), st.present.end());
    st.present.erase(std::unique(st.present.begin(), st.present.end()), st.present.end());
    Position pos;
    pos.txid = task.end.txid;
    pos.checksum = task.end.checksum;
    pos.db_id = task.end.db_id;
    pos.page_size = st.page_size;
    pos.pages = task.end.commit_pages;
    auto copy_staged = [&](int fd) {
      std::vector<char> buf(st.page_size);
      for (uint32_t p : st.present) {
        if (p > pos.pages) break;
        uint64_t off = uint64_t{p - 1} * st.page_size;
        Status r = tenancy::PreadFull(st.fd, buf.data(), buf.size(), off,
                                      tenancy::ShortRead::kDataLoss, st.path);
        if (!r.ok()) return r;
        if (Status w = tenancy::PwriteFull(fd, buf.data(), buf.size(), off, "database"); !w.ok()) {
          return w;
        }
      }
      return Status::Ok();
    };
    Position after;
    Status s = UnderLock(t, d, [&](Capture& c) { return c.InstallSnapshot(pos, copy_staged); }, &after);
    if (!s.ok()) return s;
    LOG_INFO("snapshot applied", {{"db", t + "/" + d}, {"txid", std::to_string(pos.txid)},
                                  {"pages_received", std::to_string(st.present.size())}});
    QueueAck(t, d, after);
    return Status::Ok();
  }

  Status DropDb(const std::string& t, const std::string& d) {
    if (d.empty()) {
      Status s = o.store->RemoveTenant(t);
      if (o.invalidate_entry) o.invalidate_entry(t, "");
      return s.ok() || s.code() == Status::Code::kNotFound || s.code() == Status::Code::kNotEmpty
                 ? Status::Ok()
                 : s;
    }
    Status s = o.store->DropDatabase(t, d);
    if (o.invalidate_entry) {
      for (const char* suffix : {"", "-journal", "-wal", "-shm", "-pos"}) o.invalidate_entry(t, d + suffix);
    }
    LOG_INFO("database dropped (deleted on the primary)", {{"db", t + "/" + d}});
    return s;
  }

  Status SendHashes(const std::string& t, const std::string& d) {
    auto db = o.store->OpenDatabase(t, d, false);
    constexpr uint32_t kPer = 8192;
    if (!db.ok()) {
      Hashes h;
      h.tenant = t;
      h.db = d;
      h.last = true;
      Send(h);
      return Status::Ok();
    }
    uint32_t first = 1;
    while (true) {
      Hashes h;
      h.tenant = t;
      h.db = d;
      h.first_pgno = first;
      Status s = o.store->RunOn(db.value(), [&](Capture& c) {
        return c.PageCrcs(first, kPer, &h.page_size, &h.crcs);
      });
      if (!s.ok()) return s;
      h.last = h.crcs.size() < kPer;
      first += static_cast<uint32_t>(h.crcs.size());
      if (h.page_size == 0) h.crcs.clear();
      Send(h);
      if (h.last) return Status::Ok();
    }
  }

  // ---- the connection (its io_context runs on the connection thread) ----
  void Send(Frame f) {
    std::lock_guard lock(smu);
    if (session_ioc == nullptr) return;
    asio::post(*session_ioc, [this, f = std::move(f), g = gen.load()]() mutable {
      if (g != gen.load() || ws == nullptr) return;
      out.push_back(EncodeFrame(f));
      if (out.size() == 1) DoWrite();
    });
  }

  void QueueAck(const std::string& t, const std::string& d, const Position& p) {
    std::lock_guard lock(smu);
    if (session_ioc == nullptr) return;
    DbPosition dp;
    dp.tenant = t;
    dp.db = d;
    dp.db_id = p.db_id;
    dp.txid = p.txid;
    dp.checksum = p.checksum;
    asio::post(*session_ioc, [this, dp = std::move(dp), g = gen.load()]() mutable {
      if (g != gen.load() || ws == nullptr) return;
      pending_acks[Key(dp.tenant, dp.db)] = std::move(dp);
      if (pending_acks.size() >= kMaxPositionsPerFrame) return FlushAcks();
      if (!ack_timer_armed) {
        ack_timer_armed = true;
        ack_timer->expires_after(std::chrono::milliseconds(10));
        ack_timer->async_wait([this, g](beast::error_code ec) {
          if (ec || g != gen.load()) return;
          ack_timer_armed = false;
          FlushAcks();
        });
      }
    });
  }

  void FlushAcks() {  // io thread
    if (pending_acks.empty() || ws == nullptr) return;
    replication::Ack a;
    for (auto& [k, v] : pending_acks) a.dbs.push_back(std::move(v));
    pending_acks.clear();
    out.push_back(EncodeFrame(Frame(std::move(a))));
    if (out.size() == 1) DoWrite();
  }

  void DoWrite() {  // io thread; out.front() is being written
    ws->async_write(asio::buffer(out.front()), [this](beast::error_code ec, size_t n) {
      if (ec) return FailSession("write: " + ec.message());
      if (o.metrics) o.metrics->AddStreamBytes(metrics::StreamDirection::kSent, n);
      out.pop_front();
      if (!out.empty()) DoWrite();
    });
  }

  void FailSession(const std::string& why) {
    std::lock_guard lock(smu);
    if (session_ioc == nullptr) return;
    asio::post(*session_ioc, [this, why] {
      if (fail_reason.empty()) fail_reason = why;
      if (ws) {
        beast::error_code ec;
        beast::get_lowest_layer(*ws).socket().close(ec);
      }
    });
  }

  void DoRead() {
    ws->async_read(in, [this](beast::error_code ec, size_t n) {
      if (ec) {
        if (fail_reason.empty()) fail_reason = "connection lost: " + ec.message();
        read_done = true;  // the watchdog stops; the io_context runs out of work
        return;
      }
      if (o.metrics) o.metrics->AddStreamBytes(metrics::StreamDirection::kReceived, n);
      {
        std::lock_guard lock(smu);
        last_heard_ms = NowMs();
      }
      auto data = in.cdata();
      Status s = DecodeMessage(std::string_view(static_cast<const char*>(data.data()), data.size()),
                               [this](const Frame& f) { return Handle(f); });
      in.consume(in.size());
      if (!s.ok()) {
        LOG_WARN("stream frame rejected; reconnecting", {{"error", s.ToString()}});
        if (fail_reason.empty()) fail_reason = s.ToString();
        beast::error_code ec2;
        beast::get_lowest_layer(*ws).socket().close(ec2);
        read_done = true;
        return;
      }
      DoRead();
    });
  }

  Status Handle(const Frame& f) {  // io thread
    if (auto* w = std::get_if<Welcome>(&f)) {
      auto local = ReadClusterId(o.data_dir);
      if (!local.ok()) return local.status();
      if (local->empty()) {
        if (Status s = WriteClusterId(o.data_dir, w->cluster_id); !s.ok()) return s;
      } else if (local.value() != w->cluster_id) {
        cluster_mismatch = true;
        return Status::FailedPrecondition("primary " + o.primary_url + " belongs to cluster " +
                                          w->cluster_id + ", this replica to " + local.value() +
                                          "; refusing its stream");
      }
      welcomed = true;
      {
        std::lock_guard lock(smu);
        connected = o.primary_url;  // the URL this replica follows (what .primary shows)
      }
      LOG_INFO("replicating from primary", {{"primary", o.primary_url}, {"node", w->node_id}});
      return Status::Ok();
    }
    if (!welcomed) {
      if (auto* e = std::get_if<Error>(&f)) {
        if (e->message.find("cluster id") != std::string::npos) cluster_mismatch = true;
        return Status::Unavailable("primary refused this replica: " + e->message);
      }
      return Status::InvalidArgument(std::string("stream: ") + FrameName(f) + " before welcome");
    }
    if (auto* c = std::get_if<ChangeSetChunk>(&f)) {
      std::string key = Key(c->tenant, c->db);
      std::string& buf = partial[key];
      if (c->offset != buf.size() || c->record_len > (uint64_t{4} << 30) ||
          buf.size() + c->bytes.size() > c->record_len) {
        return Status::InvalidArgument("stream: change-set piece out of order for " + key);
      }
      buf += c->bytes;
      if (buf.size() < c->record_len) return Status::Ok();
      std::string record = std::move(buf);
      partial.erase(key);
      auto st = staging.find(key);
      if (st == staging.end()) {
        // Decoding (CRC, LZ4) happens on the applier threads, off this one.
        auto h = tenancy::PeekChangeSetHeader(record);
        if (!h.ok()) return Status::DataLoss("corrupt change set for " + key + ": " + h.status().ToString());
        Task task;
        task.kind = Task::Kind::kApply;
        task.gen = gen.load();
        task.commit_ms = h->timestamp_ms;
        task.raw = std::move(record);
        Enqueue(key, std::move(task));
        return Status::Ok();
      }
      auto cs = tenancy::DecodeChangeSet(record);
      if (!cs.ok()) return Status::DataLoss("corrupt change set for " + key + ": " + cs.status().ToString());
      if (cs->tenant != c->tenant || cs->db != c->db) {
        return Status::InvalidArgument("stream: change set names " + cs->tenant + "/" + cs->db + " in a piece for " + key);
      }
      {  // a snapshot's fix-up
        Staging& sg = *st->second;
        if (cs->page_size != sg.page_size) return Status::InvalidArgument("stream: fix-up page size differs");
        for (size_t i = 0; i < cs->pgnos.size(); ++i) {
          if (Status s = sg.Put(cs->pgnos[i], cs->pages.data() + i * size_t{sg.page_size}); !s.ok()) return s;
        }
        return Status::Ok();
      }
    }
    if (auto* b = std::get_if<SnapshotBegin>(&f)) {
      std::string key = Key(b->tenant, b->db);
      auto sg = std::make_shared<Staging>();
      sg->path = o.data_dir + "/tmp/snapshot-" + b->tenant + "-" + b->db + "-" + std::to_string(gen.load());
      sg->fd = ::open(sg->path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (sg->fd < 0) return Status::FromErrno(errno, "create " + sg->path);
      ::unlink(sg->path.c_str());  // the fd keeps it; nothing is left after a crash
      sg->page_size = b->page_size;
      staging[key] = sg;
      return Status::Ok();
    }
    if (auto* p = std::get_if<SnapshotPages>(&f)) {
      std::string key = Key(p->tenant, p->db);
      auto st = staging.find(key);
      if (st == staging.end() || st->second->page_size != p->page_size) {
        return Status::InvalidArgument("stream: snapshot pages without a snapshot for " + key);
      }
      for (size_t i = 0; i < p->pgnos.size(); ++i) {
        if (Status s = st->second->Put(p->pgnos[i], p->images.data() + i * size_t{p->page_size}); !s.ok()) return s;
      }
      return Status::Ok();
    }
    if (auto* e = std::get_if<SnapshotEnd>(&f)) {
      std::string key = Key(e->tenant, e->db);
      auto st = staging.find(key);
      if (st == staging.end()) return Status::InvalidArgument("stream: snapshot end without a snapshot for " + key);
      Task task;
      task.kind = Task::Kind::kSnapshot;
      task.gen = gen.load();
      task.staging = std::move(st->second);
      task.end = *e;
      staging.erase(st);
      Enqueue(key, std::move(task));
      return Status::Ok();
    }
    if (auto* h = std::get_if<HashesRequest>(&f)) {
      Task task;
      task.kind = Task::Kind::kHashes;
      task.gen = gen.load();
      Enqueue(Key(h->tenant, h->db), std::move(task));
      return Status::Ok();
    }
    if (auto* d = std::get_if<Drop>(&f)) {
      Task task;
      task.kind = Task::Kind::kDrop;
      task.gen = gen.load();
      Enqueue(Key(d->tenant, d->db), std::move(task));
      return Status::Ok();
    }
    if (std::holds_alternative<Heartbeat>(f)) return Status::Ok();
    if (auto* e = std::get_if<Error>(&f)) return Status::Unavailable("primary: " + e->message);
    return Status::InvalidArgument(std::string("stream: unexpected ") + FrameName(f));
  }

  // Waits until no apply task of an older connection runs or waits.
  void DrainQueues() {
    std::unique_lock lock(qmu);
    for (auto& [k, q] : queues) {
      std::erase_if(q.tasks, [&](const Task& t) { return t.gen != gen.load(); });
    }
    qcv.wait_for(lock, std::chrono::seconds(30), [&] {
      if (stopping) return true;
      if (active > 0) return false;
      return std::all_of(queues.begin(), queues.end(), [](auto& kv) { return kv.second.tasks.empty(); });
    });
  }

  Status Announce(websocket::stream<beast::tcp_stream>& w) {
    auto dbs = o.store->ListDatabases();
    if (!dbs.ok()) return dbs.status();
    auto cluster = ReadClusterId(o.data_dir);
    if (!cluster.ok()) return cluster.status();
    Hello hello;
    hello.cluster_id = cluster.value();
    hello.node_id = o.node_id;
    w.write(asio::buffer(EncodeFrame(Frame(hello))));
    Positions batch;
    for (const auto& [t, d] : dbs.value()) {
      auto db = o.store->OpenDatabase(t, d, false);
      if (!db.ok()) continue;
      Position p;
      Status s = o.store->RunOn(db.value(), [&](Capture& c) {
        p = c.position();
        return Status::Ok();
      });
      if (!s.ok()) {
        LOG_WARN("cannot read a database's position; it will be re-sent", {{"db", t + "/" + d}, {"error", s.ToString()}});
        p = Position();
      }
      DbPosition dp;
      dp.tenant = t;
      dp.db = d;
      dp.txid = p.txid;
      dp.db_id = p.txid == 0 ? 0 : p.db_id;
      dp.checksum = p.txid == 0 ? tenancy::kEmptyChecksum : p.checksum;
      batch.dbs.push_back(std::move(dp));
      if (batch.dbs.size() == kMaxPositionsPerFrame) {
        w.write(asio::buffer(EncodeFrame(Frame(batch))));
        batch.dbs.clear();
      }
    }
    if (!batch.dbs.empty()) w.write(asio::buffer(EncodeFrame(Frame(batch))));
    w.write(asio::buffer(EncodeFrame(Frame(Ready{}))));
    return Status::Ok();
  }

  Status RunSession() {
    std::string host, port;
    if (!ParseUrl(o.primary_url, &host, &port)) {
      return Status::InvalidArgument("bad primary URL " + o.primary_url);
    }
    asio::io_context ioc;
    websocket::stream<beast::tcp_stream> w(ioc);
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(host, port, ec);
    if (ec) return Status::Unavailable("resolve " + host + ": " + ec.message());
    beast::get_lowest_layer(w).socket().open(results.begin()->endpoint().protocol(), ec);
    if (ec) return Status::Unavailable("socket: " + ec.message());
    beast::get_lowest_layer(w).socket().connect(*results.begin(), ec);
    if (ec) return Status::Unavailable("connect " + o.primary_url + ": " + ec.message());
    beast::get_lowest_layer(w).socket().set_option(tcp::no_delay(true), ec);
    std::string token = o.token;
    w.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
      if (!token.empty()) req.set(beast::http::field::authorization, "Bearer " + token);
      req.set(beast::http::field::user_agent, "tenantfs-replica");
    }));
    w.binary(true);
    w.read_message_max(kMaxMessageBytes);
    websocket::response_type res;
    w.handshake(res, host + ":" + port, "/v1/stream", ec);
    if (ec) {
      if (res.result() == beast::http::status::unauthorized) {
        unauthorized = true;
        return Status::Unavailable("primary " + o.primary_url +
                                   " refused the stream: 401 Unauthorized (check http.token)");
      }
      return Status::Unavailable("stream handshake with " + o.primary_url + ": " + ec.message() +
                                 (res.result_int() ? " (HTTP " + std::to_string(res.result_int()) + ")" : ""));
    }
    gen.fetch_add(1);
    DrainQueues();
    try {
      if (Status s = Announce(w); !s.ok()) return s;
    } catch (const boost::system::system_error& e) {
      return Status::Unavailable(std::string("announce: ") + e.what());
    }
    beast::get_lowest_layer(w).expires_never();  // the websocket's own timeouts apply
    // Liveness is ours: the primary sends a heartbeat every second, and a
    // watchdog closes the connection when nothing arrived for idle_timeout.
    w.set_option(websocket::stream_base::timeout{std::chrono::seconds(5),
                                                 websocket::stream_base::none(), false});
    asio::steady_timer timer(ioc);
    asio::steady_timer watchdog(ioc);
    std::function<void()> arm = [&] {
      watchdog.expires_after(std::chrono::milliseconds(250));
      watchdog.async_wait([&](beast::error_code ec) {
        if (ec || ws == nullptr || read_done) return;
        int64_t heard;
        {
          std::lock_guard lock(smu);
          heard = last_heard_ms;
        }
        if (NowMs() - heard > o.idle_timeout.count()) {
          if (fail_reason.empty()) {
            fail_reason = "nothing heard from the primary for " + std::to_string(o.idle_timeout.count()) + " ms";
          }
          beast::error_code ec2;
          beast::get_lowest_layer(w).socket().close(ec2);
          return;
        }
        arm();
      });
    };
    {
      std::lock_guard lock(smu);
      session_ioc = &ioc;
      ws = &w;
      ack_timer = &timer;
      last_heard_ms = NowMs();
    }
    fail_reason.clear();
    welcomed = false;
    read_done = false;
    DoRead();
    arm();
    ioc.run();
    {
      std::lock_guard lock(smu);
      session_ioc = nullptr;
      ws = nullptr;
      ack_timer = nullptr;
      connected.clear();
    }
    gen.fetch_add(1);  // tasks received on this connection are void now
    out.clear();
    partial.clear();
    staging.clear();
    pending_acks.clear();
    ack_timer_armed = false;
    return Status::Unavailable(fail_reason.empty() ? "stream closed" : fail_reason);
  }

  void ConnectLoop() {
    std::mt19937_64 rng(std::random_device{}());
    int failures = 0;
    while (!stopping_flag.load()) {
      auto started = std::chrono::steady_clock::now();
      unauthorized = false;
      cluster_mismatch = false;
      Status s = RunSession();
      if (stopping_flag.load()) break;
      bool long_session = std::chrono::steady_clock::now() - started > std::chrono::seconds(10);
      failures = welcomed && long_session ? 0 : failures + 1;
      auto base = std::min<int64_t>(o.max_backoff.count(),
                                    o.min_backoff.count() << std::min(failures, 16));
      if (unauthorized || cluster_mismatch) base = o.max_backoff.count();
      std::uniform_int_distribution<int64_t> jitter(base / 2, std::max<int64_t>(base / 2, base));
      auto delay = std::chrono::milliseconds(jitter(rng));
      if (unauthorized || cluster_mismatch) {
        LOG_ERROR("replica cannot follow the primary", {{"primary", o.primary_url}, {"error", s.ToString()}});
      } else {
        LOG_WARN("replication stream down; reconnecting",
                 {{"primary", o.primary_url}, {"error", s.ToString()}, {"retry_ms", std::to_string(delay.count())}});
      }
      std::unique_lock lock(smu);
      stop_cv.wait_for(lock, delay, [&] { return stopping_flag.load(); });
    }
  }

  Options o;
  std::thread conn_thread;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping_flag{false};
  std::atomic<uint64_t> gen{0};

  std::mutex qmu;  // guards queues, ready, active, stopping
  std::condition_variable qcv;
  std::unordered_map<std::string, DbQueue> queues;
  std::deque<std::string> ready;
  int active = 0;
  bool stopping = false;

  mutable std::mutex smu;  // guards the session pointers, connected, last_heard_ms
  std::condition_variable stop_cv;
  asio::io_context* session_ioc = nullptr;
  websocket::stream<beast::tcp_stream>* ws = nullptr;  // deref on the io thread only
  asio::steady_timer* ack_timer = nullptr;
  std::string connected;
  int64_t last_heard_ms = 0;

  // io thread (connection thread) only.
  beast::flat_buffer in;
  std::deque<std::string> out;
  std::unordered_map<std::string, std::string> partial;
  std::unordered_map<std::string, std::shared_ptr<Staging>> staging;
  std::unordered_map<std::string, DbPosition> pending_acks;
  bool ack_timer_armed = false;
  std::string fail_reason;
  bool welcomed = false;
  bool read_done = false;
  bool unauthorized = false;
  bool cluster_mismatch = false;
};

StreamClient::StreamClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<StreamClient>> StreamClient::Start(Options options) {
  std::string host, port;
  if (!ParseUrl(options.primary_url, &host, &port)) {
    return Status::InvalidArgument("lease.primary-url: cannot parse '" + options.primary_url +
                                   "' (want http://host:port)");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl* p = impl.get();
  for (int i = 0; i < std::max(1, p->o.appliers); ++i) p->workers.emplace_back([p] { p->WorkerLoop(); });
  p->conn_thread = std::thread([p] { p->ConnectLoop(); });
  return std::unique_ptr<StreamClient>(new StreamClient(std::move(impl)));
}

StreamClient::~StreamClient() { Stop(); }

void StreamClient::Stop() {
  Impl& m = *impl_;
  if (m.stopping_flag.exchange(true)) return;
  {
    std::lock_guard lock(m.smu);
    if (m.session_ioc) m.session_ioc->stop();
    m.stop_cv.notify_all();
  }
  if (m.conn_thread.joinable()) m.conn_thread.join();
  {
    std::lock_guard lock(m.qmu);
    m.stopping = true;
    m.qcv.notify_all();
  }
  for (auto& w : m.workers) w.join();
  m.workers.clear();
}

std::string StreamClient::connected_primary() const {
  std::lock_guard lock(impl_->smu);
  return impl_->connected;
}

double StreamClient::lag_seconds() const {
  Impl& m = *impl_;
  int64_t now = NowMs();
  int64_t worst = 0;
  {
    std::lock_guard lock(m.smu);
    if (m.connected.empty()) return m.last_heard_ms == 0 ? 0.0 : (now - m.last_heard_ms) / 1000.0;
  }
  std::lock_guard lock(m.qmu);
  for (const auto& [k, q] : m.queues) {
    for (const auto& t : q.tasks) {
      if (t.kind == Impl::Task::Kind::kApply) {
        worst = std::max(worst, now - t.commit_ms);
        break;
      }
    }
  }
  return std::max<int64_t>(0, worst) / 1000.0;
}

uint64_t StreamClient::databases_behind() const {
  Impl& m = *impl_;
  std::lock_guard lock(m.qmu);
  uint64_t n = 0;
  for (const auto& [k, q] : m.queues) n += (!q.tasks.empty() || q.running) ? 1 : 0;
  return n;
}

}  // namespace replication

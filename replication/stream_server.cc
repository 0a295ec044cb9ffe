#include "replication/stream_server.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "metrics/log.h"
#include "metrics/metrics.h"
#include "replication/stream_frames.h"
#include "replication/stream_keys.h"
#include "tenancy/crc64.h"
#include "tenancy/store.h"

namespace replication {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using tenancy::Capture;
using tenancy::ChangeSet;
using tenancy::Position;
using tenancy::Status;

namespace {

constexpr size_t kWindowBytes = 4u << 20;  // outbound bytes queued per replica

}  // namespace

// One replica's connection: an async reader on the socket's strand and a
// sender thread. Shared by the hub, the handlers in flight and the sender.
class ReplicaConn : public std::enable_shared_from_this<ReplicaConn> {
 public:
  ReplicaConn(StreamHub* hub, tcp::socket socket)
      : hub_(hub), ws_(std::move(socket)) {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec);
    peer_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~ReplicaConn() {
    if (sender_.joinable()) sender_.detach();  // never: Stop joins; belt and braces
  }

  void Start(beast::http::request<beast::http::empty_body> req, beast::flat_buffer buffer) {
    // The HTTP session's buffer is capped for headers; frames need up to
    // kMaxFrameBytes (read_message_max), so take over its bytes, not the buffer.
    auto leftover = buffer.data();
    in_.commit(asio::buffer_copy(in_.prepare(leftover.size()), leftover));
    beast::error_code nd;
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), nd);  // small frames, now
    ws_.binary(true);
    ws_.read_message_max(kMaxMessageBytes);
    // Replicas answer pings (Beast does it for them): a dead one is noticed
    // within the idle time even while the primary has nothing to send.
    ws_.set_option(websocket::stream_base::timeout{std::chrono::seconds(10),
                                                    std::chrono::seconds(30), true});
    auto self = shared_from_this();
    ws_.async_accept(req, [self](beast::error_code ec) {
      if (ec) {
        LOG_WARN("stream handshake failed", {{"peer", self->peer_}, {"error", ec.message()}});
        return self->Close();
      }
      self->DoRead();
    });
    sender_ = std::thread([self] { self->SendLoop(); });
  }

  void Notify(const std::string& key) {
    std::lock_guard lock(mu_);
    if (!ready_ || closed_) return;
    if (dirty_set_.insert(key).second) {
      dirty_.push_back(key);
      cv_.notify_all();
    }
  }

  // From any thread.
  void Close() {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      cv_.notify_all();
    }
    auto self = shared_from_this();
    asio::post(ws_.get_executor(), [self] {
      beast::error_code ec;
      beast::get_lowest_layer(self->ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
      beast::get_lowest_layer(self->ws_).socket().close(ec);
    });
  }

  void Join() {
    if (sender_.joinable() && sender_.get_id() != std::this_thread::get_id()) sender_.join();
  }

  ReplicaInfo Info() {
    std::lock_guard lock(mu_);
    ReplicaInfo info;
    info.node_id = replica_node_;
    info.peer = peer_;
    info.databases = sent_.size();
    int64_t now = NowMs();
    for (const auto& [key, sent] : sent_) {
      auto it = acked_.find(key);
      uint64_t acked = it == acked_.end() ? 0 : it->second;
      if (acked < sent.txid) {
        ++info.behind;
        if (sent.timestamp_ms > 0) {
          info.lag_seconds = std::max(info.lag_seconds, (now - sent.timestamp_ms) / 1000.0);
        }
      }
    }
    return info;
  }

 private:
  struct SentPos {
    uint64_t txid = 0;
    int64_t timestamp_ms = 0;
  };
  // The snapshot of one database in progress (sender thread only).
  struct Snapshot {
    enum class Phase { kWaitHashes, kBegin, kPages, kFixup } phase = Phase::kBegin;
    std::vector<uint64_t> replica_crcs;  // index pgno-1; empty = send every page
    uint32_t page_size = 0;
    uint32_t next = 1;
    Position base;  // the primary's position when the first chunk was read
    uint64_t pages_sent = 0;
    uint64_t fix_next = 0;  // next fix-up TXID (0: fix-ups not started)
    uint64_t fixups = 0;
    Position end;  // the position the fix-ups sent so far lead to
    tenancy::ChangeLog::Cursor cursor;
  };
  // What the replica has (or will have once it applies what was sent).
  struct DbState {
    uint64_t db_id = 0, txid = 0, checksum = tenancy::kEmptyChecksum;
    bool known = false;  // the replica has this database
    std::unique_ptr<Snapshot> snap;
    tenancy::ChangeLog::Cursor cursor;  // where the next record to send starts
  };

  tenancy::Store& store() { return *hub_->options().store; }

  // ---- reading (strand) ----
  void DoRead() {
    auto self = shared_from_this();
    ws_.async_read(in_, [self](beast::error_code ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(beast::error_code ec, size_t n) {
    if (ec) {
      if (ec != websocket::error::closed && ec != asio::error::operation_aborted) {
        LOG_INFO("replica stream ended", {{"peer", peer_}, {"node", replica_node_}, {"why", ec.message()}});
      }
      return Close();
    }
    if (auto* m = hub_->options().metrics) m->AddStreamBytes(metrics::StreamDirection::kReceived, n);
    auto data = in_.cdata();
    bool keep = true;
    Status s = DecodeMessage(std::string_view(static_cast<const char*>(data.data()), data.size()),
                             [&](const Frame& f) {
                               keep = Handle(f);
                               return keep ? Status::Ok() : Status::Unavailable("closing");
                             });
    in_.consume(in_.size());
    if (!keep) return Close();
    if (!s.ok()) {
      LOG_WARN("bad frame from replica", {{"peer", peer_}, {"error", s.ToString()}});
      return Close();
    }
    DoRead();
  }

  bool Handle(const Frame& f) {
    if (auto* h = std::get_if<Hello>(&f)) {
      {
        std::lock_guard lock(mu_);
        replica_node_ = h->node_id;
      }
      if (h->version != kStreamVersion) return Refuse("stream version " + std::to_string(h->version) + " not supported");
      if (!h->cluster_id.empty() && h->cluster_id != hub_->options().cluster_id) {
        return Refuse("cluster id mismatch: replica belongs to " + h->cluster_id + ", this primary to " +
                      hub_->options().cluster_id);
      }
      hello_ = true;
      return true;
    }
    if (!hello_) return Refuse("expected hello");
    if (auto* p = std::get_if<Positions>(&f)) {
      for (const auto& d : p->dbs) announced_.push_back(d);
      return true;
    }
    if (std::holds_alternative<Ready>(f)) {
      std::lock_guard lock(mu_);
      ready_ = true;
      cv_.notify_all();
      return true;
    }
    if (auto* a = std::get_if<Ack>(&f)) {
      std::lock_guard lock(mu_);
      for (const auto& d : a->dbs) acked_[Key(d.tenant, d.db)] = d.txid;
      return true;
    }
    if (auto* h = std::get_if<Hashes>(&f)) {
      std::lock_guard lock(mu_);
      auto& acc = hashes_[Key(h->tenant, h->db)];
      acc.page_size = h->page_size;
      if (h->first_pgno == acc.crcs.size() + 1) acc.crcs.insert(acc.crcs.end(), h->crcs.begin(), h->crcs.end());
      if (h->last) {
        acc.done = true;
        std::string key = Key(h->tenant, h->db);
        if (dirty_set_.insert(key).second) dirty_.push_back(key);
        cv_.notify_all();
      }
      return true;
    }
    if (auto* e = std::get_if<Error>(&f)) {
      LOG_WARN("replica reported an error", {{"peer", peer_}, {"error", e->message}});
      return false;
    }
    return Refuse(std::string("unexpected frame ") + FrameName(f));
  }

  bool Refuse(const std::string& why) {
    LOG_WARN("refusing replica", {{"peer", peer_}, {"node", replica_node_}, {"why", why}});
    {
      std::lock_guard lock(mu_);
      if (ready_) return false;  // the sender may be writing: just close
    }
    Error e;
    e.message = why.substr(0, kMaxErrorBytes);
    std::string bytes = EncodeFrame(Frame(e));
    beast::error_code ec;
    ws_.write(asio::buffer(bytes), ec);  // on the strand; the stream is idle otherwise before Ready
    return false;
  }

  // ---- writing ----
  // Queues a frame; blocks the sender while the window is full. False once closed.
  bool Send(const Frame& f) {
    std::string bytes = EncodeFrame(f);
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || out_bytes_ < kWindowBytes; });
    if (closed_) return false;
    out_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    if (!writing_) {
      writing_ = true;
      auto self = shared_from_this();
      asio::post(ws_.get_executor(), [self] { self->DoWrite(); });
    }
    return true;
  }

  // Writes every queued frame that fits in one message (kMaxMessageBytes):
  // a catch-up of many small records costs a few large writes, not one each.
  void DoWrite() {
    size_t frames = 0;
    {
      std::lock_guard lock(mu_);
      if (out_.empty() || closed_) {
        writing_ = false;
        return;
      }
      batch_.clear();
      for (const std::string& f : out_) {  // only this strand pops
        if (frames > 0 && batch_.size() + f.size() > kMaxMessageBytes) break;
        batch_ += f;
        ++frames;
      }
    }
    auto self = shared_from_this();
    ws_.async_write(asio::buffer(batch_), [self, frames](beast::error_code ec, size_t n) {
      if (ec) return self->Close();
      if (auto* m = self->hub_->options().metrics) m->AddStreamBytes(metrics::StreamDirection::kSent, n);
      {
        std::lock_guard lock(self->mu_);
        for (size_t i = 0; i < frames; ++i) {
          self->out_bytes_ -= self->out_.front().size();
          self->out_.pop_front();
        }
        self->cv_.notify_all();
      }
      self->DoWrite();
    });
  }

  bool SendRecord(const std::string& t, const std::string& d, const std::string& record) {
    ++records_sent_;
    for (size_t off = 0; off < record.size(); off += kMaxChunkBytes) {
      ChangeSetChunk c;
      c.tenant = t;
      c.db = d;
      c.record_len = record.size();
      c.offset = off;
      c.bytes = record.substr(off, kMaxChunkBytes);
      uint64_t every = hub_->options().corrupt_every;
      if (every != 0 && ++chunks_sent_ % every == 0 && !c.bytes.empty()) {
        c.bytes[c.bytes.size() / 2] ^= 0x10;  // test hook: a corrupted record
      }
      if (!Send(c)) return false;
    }
    return true;
  }

  // ---- the sender thread ----
  void SendLoop() {
    SendUntilClosed();
    Close();
    hub_->Remove(this);
  }

  void SendUntilClosed() {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(30), [&] { return ready_ || closed_; });
      if (closed_ || !ready_) return;
    }
    Welcome w;
    w.cluster_id = hub_->options().cluster_id;
    w.node_id = hub_->options().node_id;
    w.primary_url = hub_->options().advertise_url.substr(0, kMaxUrlBytes);
    if (!Send(w)) return;
    // The replica's databases, then every database here: each gets one look.
    std::vector<std::string> keys;
    for (const auto& a : announced_) {  // complete: Ready came after every Positions
      std::string key = Key(a.tenant, a.db);
      DbState& st = dbs_[key];
      st.known = true;
      st.db_id = a.db_id;
      st.txid = a.txid;
      st.checksum = a.checksum;
      keys.push_back(key);
    }
    auto all = store().ListDatabases();
    if (all.ok()) {
      for (const auto& [t, d] : all.value()) keys.push_back(Key(t, d));
    }
    LOG_INFO("replica connected", {{"peer", peer_}, {"node", replica_node_},
                                   {"databases", std::to_string(announced_.size())}});
    {
      std::lock_guard lock(mu_);
      for (auto& k : keys) {
        if (dirty_set_.insert(k).second) dirty_.push_back(k);
      }
    }
    auto last_send = std::chrono::steady_clock::now();
    const auto beat = std::chrono::milliseconds(hub_->options().heartbeat_ms);
    // Catch-up progress goes to the log: every 5 s while it lasts, and once at the end.
    const auto connected_at = std::chrono::steady_clock::now();
    auto next_progress = connected_at + std::chrono::seconds(5);
    bool caught_up = false;
    while (true) {
      std::string key;
      size_t left = 0;
      {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, last_send + beat, [&] { return closed_ || !dirty_.empty(); });
        if (closed_) return;
        if (!dirty_.empty()) {
          key = std::move(dirty_.front());
          dirty_.pop_front();
          dirty_set_.erase(key);
        }
        left = dirty_.size();
      }
      if (!caught_up && key.empty()) {
        caught_up = true;
        LOG_INFO("replica caught up",
                 {{"peer", peer_}, {"node", replica_node_},
                  {"ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - connected_at)
                                            .count())},
                  {"records", std::to_string(records_sent_)},
                  {"snapshot_pages", std::to_string(snapshot_pages_sent_)}});
      } else if (!caught_up && std::chrono::steady_clock::now() >= next_progress) {
        next_progress += std::chrono::seconds(5);
        LOG_INFO("catching up replica", {{"peer", peer_}, {"node", replica_node_},
                                         {"databases_left", std::to_string(left + 1)},
                                         {"records", std::to_string(records_sent_)},
                                         {"snapshot_pages", std::to_string(snapshot_pages_sent_)}});
      }
      if (key.empty()) {
        Heartbeat h;
        h.primary_time_ms = NowMs();
        if (!Send(h)) return;
        last_send = std::chrono::steady_clock::now();
        continue;
      }
      bool more = false;
      Status s = Step(key, &more);
      if (!s.ok()) {
        LOG_WARN("stream step failed", {{"peer", peer_}, {"db", key}, {"error", s.ToString()}});
        if (closed_flag()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        more = true;
      }
      last_send = std::chrono::steady_clock::now();
      if (more) {
        std::lock_guard lock(mu_);
        if (dirty_set_.insert(key).second) dirty_.push_back(key);
      }
    }
  }

  bool closed_flag() {
    std::lock_guard lock(mu_);
    return closed_;
  }

  void NoteSent(const std::string& key, uint64_t txid, int64_t ts) {
    std::lock_guard lock(mu_);
    sent_[key] = SentPos{txid, ts};
  }

  // One bounded piece of work for one database. *more: call again soon.
  Status Step(const std::string& key, bool* more) {
    auto [t, d] = SplitKey(key);
    DbState& st = dbs_[key];
    auto db = store().OpenDatabase(t, d, false);
    if (!db.ok()) {
      if (db.status().code() != Status::Code::kNotFound) return db.status();
      if (st.known) {
        Drop drop;
        drop.tenant = t;
        drop.db = d;
        drop.db_id = st.db_id;
        if (!Send(drop)) return Status::Unavailable("closed");
      }
      dbs_.erase(key);
      std::lock_guard lock(mu_);
      sent_.erase(key);
      return Status::Ok();
    }
    if (st.snap) return SnapshotStep(t, d, db.value(), st, more);

    Position p;
    std::vector<std::string> records;
    Position last;
    bool need_snapshot = false;
    Status s = store().RunOn(db.value(), [&](Capture& c) {
      p = c.position();
      if (st.known && st.db_id == p.db_id && st.txid == p.txid && st.checksum == p.checksum) {
        return Status::Ok();
      }
      if (p.txid == 0) return Status::Ok();  // nothing committed yet
      bool same_line = !st.known || st.txid == 0 || st.db_id == p.db_id;
      if (!same_line || st.txid > p.txid || (st.txid == p.txid && st.checksum != p.checksum)) {
        need_snapshot = true;
        return Status::Ok();
      }
      uint64_t want = st.txid + 1;
      uint64_t have_checksum = st.txid == 0 ? tenancy::kEmptyChecksum : st.checksum;
      bool first = true;
      // Records go out as the log holds them; the replica verifies each one.
      Status fs = c.log()->ReadRaw(
          &st.cursor, want, hub_->options().batch_bytes,
          [&](std::string_view raw, const tenancy::ChangeSetHeader& h) {
            bool snapshot = (h.flags & ChangeSet::kFlagSnapshot) != 0;
            if (first && !snapshot && (h.min_txid != want || h.pre_checksum != have_checksum)) {
              need_snapshot = true;  // trimmed past the replica's position, or it diverged
              return false;
            }
            first = false;
            records.emplace_back(raw);
            last.txid = h.max_txid;
            last.checksum = h.post_checksum;
            last.db_id = h.db_id;
            last.timestamp_ms = h.timestamp_ms;
            return true;
          });
      if (fs.ok() && first && !need_snapshot) need_snapshot = true;  // nothing retained after it
      return fs;
    });
    if (!s.ok()) return s;
    if (need_snapshot) {
      st.snap = std::make_unique<Snapshot>();
      if (st.known && st.txid > 0) {
        {
          std::lock_guard lock(mu_);
          hashes_.erase(key);
        }
        st.snap->phase = Snapshot::Phase::kWaitHashes;
        HashesRequest hr;
        hr.tenant = t;
        hr.db = d;
        if (!Send(hr)) return Status::Unavailable("closed");
        return Status::Ok();  // the replica's last Hashes frame makes it dirty again
      }
      *more = true;
      return Status::Ok();
    }
    for (const auto& r : records) {
      if (!SendRecord(t, d, r)) return Status::Unavailable("closed");
    }
    if (!records.empty()) {
      st.known = true;
      st.db_id = last.db_id;
      st.txid = last.txid;
      st.checksum = last.checksum;
      NoteSent(key, last.txid, last.timestamp_ms);
      *more = last.txid < p.txid;
    }
    return Status::Ok();
  }

  Status SnapshotStep(const std::string& t, const std::string& d,
                      const std::shared_ptr<tenancy::Database>& db, DbState& st, bool* more) {
    Snapshot& sn = *st.snap;
    const std::string key = Key(t, d);
    if (sn.phase == Snapshot::Phase::kWaitHashes) {
      std::lock_guard lock(mu_);
      auto it = hashes_.find(key);
      if (it == hashes_.end() || !it->second.done) return Status::Ok();
      sn.replica_crcs = std::move(it->second.crcs);
      sn.page_size = it->second.page_size;  // the replica's; a different size sends everything
      hashes_.erase(it);
      sn.phase = Snapshot::Phase::kBegin;
    }
    bool busy = false;
    if (sn.phase == Snapshot::Phase::kBegin) {
      Status s = store().RunOn(db, [&](Capture& c) {
        if (c.in_transaction()) {
          busy = true;
          return Status::Ok();
        }
        sn.base = c.position();
        return Status::Ok();
      });
      if (!s.ok()) return s;
      if (busy) return Retry(more);
      if (sn.page_size != sn.base.page_size) sn.replica_crcs.clear();
      sn.page_size = sn.base.page_size;
      SnapshotBegin b;
      b.tenant = t;
      b.db = d;
      b.db_id = sn.base.db_id;
      b.page_size = sn.page_size;
      b.base_txid = sn.base.txid;
      if (!Send(b)) return Status::Unavailable("closed");
      LOG_INFO("sending snapshot", {{"peer", peer_}, {"db", key}, {"txid", std::to_string(sn.base.txid)},
                                    {"pages", std::to_string(sn.base.pages)},
                                    {"replica_pages", std::to_string(sn.replica_crcs.size())}});
      sn.phase = sn.page_size == 0 ? Snapshot::Phase::kFixup : Snapshot::Phase::kPages;
      *more = true;
      return Status::Ok();
    }
    if (sn.phase == Snapshot::Phase::kPages) {
      std::vector<uint32_t> pgnos;
      std::string images;
      uint32_t next = 0;
      bool restart = false;
      uint32_t max = static_cast<uint32_t>(
          std::max<size_t>(1, std::min(hub_->options().snapshot_chunk_pages, kMaxChunkBytes / sn.page_size)));
      Status s = store().RunOn(db, [&](Capture& c) {
        if (c.in_transaction()) {
          busy = true;
          return Status::Ok();
        }
        Position now = c.position();
        if (now.page_size != sn.page_size || now.db_id != sn.base.db_id) {
          restart = true;  // VACUUM changed the page size, or a new incarnation
          return Status::Ok();
        }
        return c.ReadCommitted(sn.next, max, &pgnos, &images, &next);
      });
      if (!s.ok()) return s;
      if (busy) return Retry(more);
      if (restart) {
        st.snap.reset();
        *more = true;
        return Status::Ok();
      }
      SnapshotPages sp;
      sp.tenant = t;
      sp.db = d;
      sp.page_size = sn.page_size;
      for (size_t i = 0; i < pgnos.size(); ++i) {
        uint32_t p = pgnos[i];
        const char* img = images.data() + i * sn.page_size;
        if (p <= sn.replica_crcs.size() &&
            sn.replica_crcs[p - 1] == tenancy::PageCrc(p, img, sn.page_size)) {
          continue;  // the replica has this page already
        }
        sp.pgnos.push_back(p);
        sp.images.append(img, sn.page_size);
      }
      if (!sp.pgnos.empty()) {
        sn.pages_sent += sp.pgnos.size();
        snapshot_pages_sent_ += sp.pgnos.size();
        if (!Send(sp)) return Status::Unavailable("closed");
      }
      sn.next = next;
      if (next == 0) sn.phase = Snapshot::Phase::kFixup;
      *more = true;
      return Status::Ok();
    }
    // kFixup: the change sets committed since base repair pages read before
    // them; sent a bounded batch per step, like ordinary catch-up.
    if (sn.fix_next == 0) {
      sn.fix_next = sn.base.txid + 1;
      sn.end = sn.base;
    }
    std::vector<std::string> records;
    bool trimmed = false, done = false;
    Status s = store().RunOn(db, [&](Capture& c) {
      uint64_t tail = c.position().txid;
      if (tail < sn.fix_next) {
        done = true;
        return Status::Ok();
      }
      bool first = true;
      Status fs = c.log()->ReadRaw(
          &sn.cursor, sn.fix_next, hub_->options().batch_bytes,
          [&](std::string_view raw, const tenancy::ChangeSetHeader& h) {
            if (first && h.min_txid > sn.fix_next) {
              trimmed = true;
              return false;
            }
            first = false;
            records.emplace_back(raw);
            sn.end.txid = h.max_txid;
            sn.end.checksum = h.post_checksum;
            sn.end.pages = h.commit_pages;
            sn.end.timestamp_ms = h.timestamp_ms;
            return true;
          });
      if (fs.ok() && first) trimmed = true;
      done = !trimmed && sn.end.txid >= tail;
      return fs;
    });
    if (!s.ok()) return s;
    if (trimmed) {  // retention outran the snapshot: start again
      st.snap.reset();
      *more = true;
      return Status::Ok();
    }
    for (const auto& r : records) {
      if (!SendRecord(t, d, r)) return Status::Unavailable("closed");
    }
    sn.fixups += records.size();
    sn.fix_next = sn.end.txid + 1;
    *more = true;
    if (!done) return Status::Ok();
    const Position& end = sn.end;
    SnapshotEnd e;
    e.tenant = t;
    e.db = d;
    e.db_id = sn.base.db_id;
    e.txid = end.txid;
    e.checksum = end.checksum;
    e.commit_pages = end.pages;
    if (!Send(e)) return Status::Unavailable("closed");
    LOG_INFO("snapshot sent", {{"peer", peer_}, {"db", key}, {"txid", std::to_string(end.txid)},
                               {"pages_sent", std::to_string(sn.pages_sent)},
                               {"fixups", std::to_string(sn.fixups)}});
    st.known = true;
    st.db_id = sn.base.db_id;
    st.txid = end.txid;
    st.checksum = end.checksum;
    NoteSent(key, end.txid, end.timestamp_ms);
    st.snap.reset();  // commits since the fix-ups follow as ordinary change sets
    return Status::Ok();
  }

  // A rollback transaction is open: look again shortly (other databases first).
  Status Retry(bool* more) {
    *more = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return Status::Ok();
  }

  struct HashAcc {
    uint32_t page_size = 0;
    std::vector<uint64_t> crcs;
    bool done = false;
  };

  StreamHub* const hub_;
  websocket::stream<beast::tcp_stream> ws_;
  std::string peer_;
  beast::flat_buffer in_;
  std::string batch_;  // the message being written (strand only)
  std::thread sender_;
  // Reader-only (strand) until Ready; the sender reads announced_ after Ready.
  bool hello_ = false;
  std::vector<DbPosition> announced_;
  // Sender-only.
  std::unordered_map<std::string, DbState> dbs_;
  uint64_t chunks_sent_ = 0;
  uint64_t records_sent_ = 0;
  uint64_t snapshot_pages_sent_ = 0;

  std::mutex mu_;  // leaf
  std::condition_variable cv_;
  bool ready_ = false;   // guarded by mu_
  bool closed_ = false;  // guarded by mu_
  std::string replica_node_;  // guarded by mu_ (the strand's reads need no lock: it is the only writer)
  std::deque<std::string> dirty_;            // guarded by mu_
  std::unordered_set<std::string> dirty_set_;  // guarded by mu_
  std::deque<std::string> out_;              // guarded by mu_
  size_t out_bytes_ = 0;                     // guarded by mu_
  bool writing_ = false;                     // guarded by mu_
  std::unordered_map<std::string, SentPos> sent_;    // guarded by mu_
  std::unordered_map<std::string, uint64_t> acked_;  // guarded by mu_
  std::unordered_map<std::string, HashAcc> hashes_;  // guarded by mu_
};

StreamHub::StreamHub(Options options) : options_(std::move(options)) {}

StreamHub::~StreamHub() { Stop(); }

void StreamHub::Accept(tcp::socket socket, beast::http::request<beast::http::empty_body> request,
                       beast::flat_buffer buffer) {
  auto conn = std::make_shared<ReplicaConn>(this, std::move(socket));
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    // Forget connections that ended.
    conns_.push_back(conn);
  }
  conn->Start(std::move(request), std::move(buffer));
}

void StreamHub::Notify(const std::string& tenant, const std::string& db) {
  std::string key = Key(tenant, db);
  std::lock_guard lock(mu_);
  for (auto& c : conns_) c->Notify(key);
}

std::vector<ReplicaInfo> StreamHub::Replicas() {
  std::vector<std::shared_ptr<ReplicaConn>> conns;
  {
    std::lock_guard lock(mu_);
    conns = conns_;
  }
  std::vector<ReplicaInfo> out;
  for (auto& c : conns) out.push_back(c->Info());
  return out;
}

void StreamHub::Remove(ReplicaConn* conn) {
  std::shared_ptr<ReplicaConn> gone;
  {
    std::lock_guard lock(mu_);
    auto it = std::find_if(conns_.begin(), conns_.end(), [&](auto& c) { return c.get() == conn; });
    if (it == conns_.end()) return;
    gone = *it;
    conns_.erase(it);
  }
}

void StreamHub::Stop() {
  std::vector<std::shared_ptr<ReplicaConn>> conns;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    conns.swap(conns_);
  }
  for (auto& c : conns) c->Close();
  for (auto& c : conns) c->Join();
}

}  // namespace replication

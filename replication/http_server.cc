#include "replication/http_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "metrics/log.h"
#include "metrics/metrics.h"
#include "replication/stream_server.h"
#include "tenancy/store.h"

namespace replication {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr size_t kFileChunk = 256 * 1024;        // export: bytes per write
constexpr size_t kReadBufferLimit = 64 * 1024;   // the connection's read buffer
constexpr size_t kLingerDiscardLimit = 4 << 20;  // refused bodies read and dropped
constexpr auto kLingerTimeout = 2s;
constexpr const char* kServerName = "tenantfs";

// Owns a file that is removed with it.
struct TempFile {
  std::string path;
  explicit TempFile(std::string p) : path(std::move(p)) {}
  ~TempFile() {
    if (!path.empty()) ::unlink(path.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
};

// Creates an empty temp file "<dir>/<prefix>XXXXXX".
std::shared_ptr<TempFile> MakeTempFile(const std::string& dir, const char* prefix,
                                       std::string* error) {
  std::string tmpl = dir + "/" + prefix + "XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot create a temp file in " + dir + ": " + std::strerror(errno);
    return nullptr;
  }
  ::close(fd);
  return std::make_shared<TempFile>(tmpl);
}

struct UniqueFd {
  int fd = -1;
  UniqueFd() = default;
  explicit UniqueFd(int f) : fd(f) {}
  UniqueFd(UniqueFd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// What a request handler answers: a small body, or a file streamed from fd.
struct Reply {
  http::status status = http::status::ok;
  std::string body;
  std::string content_type = "application/json";
  UniqueFd file;  // when valid: the body is this file's first file_size bytes
  uint64_t file_size = 0;
  bool close = false;  // close the connection afterwards (e.g. a body left unread)
  std::vector<std::pair<http::field, std::string>> headers;
};

Reply Error(int status, std::string_view message) {
  Reply r;
  r.status = static_cast<http::status>(status);
  r.body = JsonError(message);
  return r;
}

Reply Text(std::string body, std::string content_type = "text/plain; charset=utf-8") {
  Reply r;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  return r;
}

Reply Json(std::string body) { return Text(std::move(body), "application/json"); }

// Splits HOST:PORT / [V6]:PORT.
bool SplitAddr(const std::string& addr, std::string* host, std::string* port) {
  if (!addr.empty() && addr[0] == '[') {
    size_t close = addr.find(']');
    if (close == std::string::npos || close + 2 > addr.size() || addr[close + 1] != ':')
      return false;
    *host = addr.substr(1, close - 1);
    *port = addr.substr(close + 2);
    return true;
  }
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return false;
  *host = addr.substr(0, colon);
  *port = addr.substr(colon + 1);
  return !host->empty() && !port->empty();
}

// Temp files are ours alone: whatever a killed daemon left is garbage.
void RemoveStaleTempFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.rfind("export-", 0) == 0 || name.rfind("import-", 0) == 0) {
      ::unlinkat(::dirfd(d), e->d_name, 0);
    }
  }
  ::closedir(d);
}

class Session;

}  // namespace

struct HttpServer::Impl {
  explicit Impl(Options o)
      : opts(std::move(o)),
        acceptor(asio::make_strand(ioc)),
        accept_timer(acceptor.get_executor()),
        work(static_cast<size_t>(std::max(1, opts.work_threads))),
        tmp_dir(opts.node.data_dir + "/tmp") {}

  void DoAccept();
  void OnAccept(beast::error_code ec, tcp::socket socket);

  void Register(const std::shared_ptr<Session>& s);
  void Unregister(Session* s, bool was_busy);
  void SetBusy(bool busy);
  // Runs f(session) on every live session's strand.
  void ForEachSession(const std::function<void(const std::shared_ptr<Session>&)>& f);

  Options opts;
  // Declared before the io_context: handlers it still holds when destroyed
  // release their sessions, which unregister here.
  std::mutex mu;  // leaf; guards sessions and busy
  std::condition_variable cv;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  size_t busy = 0;  // sessions with a request in flight

  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer accept_timer;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  asio::thread_pool work;
  std::vector<std::thread> threads;
  const std::string tmp_dir;
  uint16_t port = 0;
  bool started = false;
  bool stopped = false;
  std::atomic<bool> stopping{false};  // no new accepts, no more keep-alive
  StopFlag abort{false};              // transfers in progress give up
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), buffer_(kReadBufferLimit), server_(server) {}
  ~Session() { server_->Unregister(this, busy_); }

  void Run() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoReadHeader(); });
  }
  // From any thread: close now if no request is in flight / close regardless.
  void CloseIfIdle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->Close();
    });
  }
  void CloseNow() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->Close(); });
  }

 private:
  const NodeContext& ctx() const { return server_->opts.node; }

  void SetBusy(bool busy) {
    if (busy_ == busy) return;
    busy_ = busy;
    server_->SetBusy(busy);
  }

  void DoReadHeader() {
    if (closed_) return;
    if (server_->stopping.load()) return Close();
    header_.emplace();
    header_->header_limit(static_cast<std::uint32_t>(server_->opts.header_limit));
    // Body sizes are judged per route once the header is in (only import takes one).
    header_->body_limit(std::numeric_limits<std::uint64_t>::max());
    body_.reset();
    stream_.expires_after(server_->opts.idle_timeout);
    http::async_read_header(stream_, buffer_, *header_,
                            beast::bind_front_handler(&Session::OnReadHeader, shared_from_this()));
  }

  void OnReadHeader(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::error::eof) {
      return Close();
    }
    SetBusy(true);
    started_ = std::chrono::steady_clock::now();
    version_ = 11;
    keep_alive_ = false;
    method_ = "-";
    target_ = "-";
    if (ec == http::error::header_limit) {
      return Send(Error(431, "request header fields over " +
                                 std::to_string(server_->opts.header_limit) + " bytes"),
                  /*close=*/true);
    }
    if (ec == http::error::buffer_overflow) {
      return Send(Error(431, "request header fields too large"), true);
    }
    if (ec) {
      // Garbage, a bad method, target, version or header: the stream cannot be
      // trusted any more, so answer and close.
      if (ec == http::error::partial_message) return Close();
      return Send(Error(400, "malformed request: " + ec.message()), true);
    }
    Handle();
  }

  void Handle() {
    auto& req = header_->get();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    method_ = std::string(req.method_string());
    target_ = std::string(req.target());
    const bool has_body = header_->chunked() || header_->content_length().value_or(0) > 0;
    route_ = ParseRoute(req.target());
    using K = Route::Kind;

    if (route_.v1 && !ctx().token.empty() &&
        !BearerMatches(req[http::field::authorization], ctx().token)) {
      Reply r = Error(401, "missing or wrong bearer token");
      r.headers.emplace_back(http::field::www_authenticate, "Bearer");
      return Send(std::move(r), has_body);
    }
    if (route_.kind == K::kNotFound) {
      return Send(
          Error(404, "no such endpoint: " + std::string(req.target().substr(
                                                0, std::min<size_t>(req.target().size(), 200)))),
          has_body);
    }
    if (req.method_string() != route_.method) {
      Reply r = Error(405, "method " + method_ + " not allowed here; use " + route_.method);
      r.headers.emplace_back(http::field::allow, route_.method);
      return Send(std::move(r), has_body);
    }
    if (route_.kind == K::kBadName) return Send(Error(400, route_.error), has_body);
    if (has_body && route_.kind != K::kImport) {
      return Send(Error(413, "this endpoint takes no request body"), true);
    }
    switch (route_.kind) {
      case K::kHealthz:
        return Send(Text("ok"), false);
      case K::kMetrics:
        return RunBlocking([server = server_]() {
          if (server->opts.node.metrics == nullptr) return Error(404, "no metrics in this build");
          return Text(server->opts.node.metrics->Serialize(),
                      "text/plain; version=0.0.4; charset=utf-8");
        });
      case K::kInfo:
        return RunBlocking([server = server_]() { return Json(InfoJson(server->opts.node)); });
      case K::kDbs:
        return RunBlocking(
            [server = server_]() { return Json(DbsJson(server->opts.node, server->abort)); });
      case K::kExport:
        return RunBlocking([server = server_, t = route_.tenant, d = route_.db]() {
          return Export(server, t, d);
        });
      case K::kImport:
        return StartImport(has_body);
      case K::kWait:
        return StartWait(req.target());
      case K::kStream:
        return StartStream();
      case K::kPromote:
        return Send(Error(501, "promotion needs lease.type etcd, which this build lacks"), false);
      default:
        return Send(Error(404, "no such endpoint"), false);
    }
  }

  // GET /v1/stream: hand the connection to the stream hub (primary only).
  void StartStream() {
    const NodeContext& c = ctx();
    if (c.hub == nullptr) {
      return Send(Error(403, "this node is a replica; stream from the primary"), false);
    }
    if (!websocket::is_upgrade(header_->get())) {
      return Send(Error(400, "/v1/stream needs a WebSocket upgrade"), false);
    }
    SetBusy(false);
    closed_ = true;  // the socket is the hub's now
    stream_.expires_never();
    c.hub->Accept(stream_.release_socket(), header_->release(), std::move(buffer_));
  }

  // GET /v1/dbs/{t}/{d}/wait?txid=N&timeout_ms=M: 200 once the TXID is reached.
  void StartWait(std::string_view target) {
    uint64_t txid = 0;
    int64_t timeout_ms = 0;
    bool have_txid = false;
    size_t q = target.find('?');
    std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
      size_t eq = kv.find('=');
      if (eq == std::string_view::npos) continue;
      std::string key(kv.substr(0, eq)), val(kv.substr(eq + 1));
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(val.c_str(), &end, 10);
      if (val.empty() || *end != 0 || errno != 0 || val[0] == '-') {
        return Send(Error(400, "bad " + key + " '" + val.substr(0, 40) + "': want a number"), false);
      }
      if (key == "txid") {
        txid = v;
        have_txid = true;
      } else if (key == "timeout_ms") {
        timeout_ms = static_cast<int64_t>(std::min<unsigned long long>(v, 3600000));
      }
    }
    if (!have_txid) return Send(Error(400, "wait needs txid=N"), false);
    wait_deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    wait_txid_ = txid;
    asio::post(server_->work, [self = shared_from_this(), t = route_.tenant, d = route_.db] {
      auto db = self->ctx().store->OpenDatabase(t, d, false);
      std::shared_ptr<tenancy::Database> found;
      if (db.ok()) {
        tenancy::Status s = self->ctx().store->RunOn(db.value(), [](tenancy::Capture&) {
          return tenancy::Status::Ok();
        });
        if (s.ok()) found = db.value();
      }
      asio::post(self->stream_.get_executor(), [self, found, name = t + "/" + d] {
        if (!found) return self->Send(Error(404, "no database '" + name + "'"), false);
        self->wait_db_ = found;
        self->PollWait();
      });
    });
  }

  void PollWait() {
    if (closed_) return;
    uint64_t have = wait_db_->capture().position().txid;
    if (have >= wait_txid_ || std::chrono::steady_clock::now() >= wait_deadline_ ||
        server_->stopping.load()) {
      wait_db_.reset();
      if (have >= wait_txid_) return Send(Json("{\"txid\": " + std::to_string(have) + "}\n"), false);
      return Send(Error(504, "TXID " + std::to_string(wait_txid_) + " not reached in time (at " +
                                 std::to_string(have) + ")"),
                  false);
    }
    if (!wait_timer_) wait_timer_.emplace(stream_.get_executor());
    wait_timer_->expires_after(std::chrono::milliseconds(1));
    wait_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->PollWait();
    });
  }

  static Reply Export(HttpServer::Impl* server, const std::string& t, const std::string& d) {
    const NodeContext& ctx = server->opts.node;
    auto tenant = ctx.store->LookupTenant(t);
    if (!tenant.ok()) return Error(404, "no tenant '" + t + "'");
    if (!ctx.store->LookupFile(tenant.value(), d).ok()) {
      return Error(404, "no database '" + t + "/" + d + "'");
    }
    std::string err;
    auto tmp = MakeTempFile(server->tmp_dir, "export-", &err);
    if (!tmp) return Error(500, err);
    TransferError te = RunTransferProcess(
        ctx.helper_exe, "snapshot", ctx.mount_dir + "/" + t + "/" + d, tmp->path, server->abort);
    if (!te.ok()) return Error(te.http_status, te.message);
    Reply r;
    r.file = UniqueFd(::open(tmp->path.c_str(), O_RDONLY | O_CLOEXEC));
    if (r.file.fd < 0) return Error(500, "open " + tmp->path + ": " + std::strerror(errno));
    struct stat st;
    if (::fstat(r.file.fd, &st) != 0)
      return Error(500, "stat " + tmp->path + ": " + std::strerror(errno));
    r.file_size = static_cast<uint64_t>(st.st_size);
    r.content_type = "application/vnd.sqlite3";
    r.headers.emplace_back(http::field::content_disposition, "attachment; filename=\"" + d + "\"");
    return r;  // tmp is unlinked here; the open fd keeps the data until sent
  }

  void StartImport(bool has_body) {
    const NodeContext& c = ctx();
    if (!c.primary) {
      return Send(Error(403, "this node is a replica; import on the primary"), has_body);
    }
    if (!c.store->LookupTenant(route_.tenant).ok()) {
      return Send(Error(404, "no tenant '" + route_.tenant + "'"), has_body);
    }
    uint64_t limit = server_->opts.max_import_bytes;
    if (header_->content_length() && *header_->content_length() > limit) {
      return Send(
          Error(413, "body of " + std::to_string(*header_->content_length()) +
                         " bytes is over the import limit of " + std::to_string(limit) + " bytes"),
          true);
    }
    if (!has_body) return Send(Error(400, "not a SQLite database: file is empty"), false);
    std::string err;
    import_file_ = MakeTempFile(server_->tmp_dir, "import-", &err);
    if (!import_file_) return Send(Error(500, err), true);
    bool expect_continue = beast::iequals(header_->get()[http::field::expect], "100-continue");
    body_.emplace(std::move(*header_));
    header_.reset();
    body_->body_limit(limit);
    beast::error_code ec;
    body_->get().body().open(import_file_->path.c_str(), beast::file_mode::write, ec);
    if (ec) return Send(Error(500, "open " + import_file_->path + ": " + ec.message()), true);
    if (expect_continue) {
      continue_.emplace(http::status::continue_, version_);
      stream_.expires_after(server_->opts.idle_timeout);
      return http::async_write(stream_, *continue_,
                               [self = shared_from_this()](beast::error_code ec, size_t) {
                                 if (ec) return self->Close();
                                 self->DoReadBody();
                               });
    }
    DoReadBody();
  }

  void DoReadBody() {
    stream_.expires_after(server_->opts.idle_timeout);
    http::async_read_some(stream_, buffer_, *body_,
                          beast::bind_front_handler(&Session::OnReadBody, shared_from_this()));
  }

  void OnReadBody(beast::error_code ec, size_t) {
    if (ec == http::error::body_limit) {
      import_file_.reset();
      return Send(Error(413, "body is over the import limit of " +
                                 std::to_string(server_->opts.max_import_bytes) + " bytes"),
                  true);
    }
    if (ec) {
      // The client went away or stalled: nothing was applied.
      LOG_DEBUG("http: import body not received", {{"error", ec.message()}});
      import_file_.reset();
      return Close();
    }
    if (!body_->is_done()) return DoReadBody();
    body_->get().body().close();
    body_.reset();
    RunBlocking([server = server_, tmp = std::move(import_file_), t = route_.tenant,
                 d = route_.db]() { return Import(server, tmp, t, d); });
  }

  static Reply Import(HttpServer::Impl* server, const std::shared_ptr<TempFile>& tmp,
                      const std::string& t, const std::string& d) {
    const NodeContext& ctx = server->opts.node;
    TransferError te = ValidateDatabaseFile(tmp->path, server->abort);
    if (!te.ok()) return Error(te.http_status, te.message);
    std::string tenant_dir = ctx.mount_dir + "/" + t;
    struct stat st;
    if (::stat(tenant_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Error(404, "no tenant '" + t + "'");
    }
    te = RunTransferProcess(ctx.helper_exe, "replace", tmp->path, tenant_dir + "/" + d,
                            server->abort);
    if (!te.ok()) return Error(te.http_status, te.message);
    std::string err;
    std::string pos = PositionJson(ctx, t, d, &err);
    if (pos.empty()) return Error(500, "imported, but reading the new position failed: " + err);
    LOG_INFO("imported database", {{"tenant", t}, {"db", d}});
    return Json(pos);
  }

  // Runs job on the work pool, then sends its reply from this strand.
  void RunBlocking(std::function<Reply()> job) {
    asio::post(server_->work, [self = shared_from_this(), job = std::move(job)]() mutable {
      Reply r;
      try {
        r = job();
      } catch (const std::exception& e) {
        r = Error(500, std::string("internal error: ") + e.what());
      } catch (...) {
        r = Error(500, "internal error");
      }
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(r)]() mutable { self->Send(std::move(r), false); });
    });
  }

  void Send(Reply r, bool close) {
    if (closed_) return;
    close = close || r.close || !keep_alive_ || server_->stopping.load();
    status_ = static_cast<int>(r.status);
    if (r.file.fd >= 0) return SendFile(std::move(r), close);
    res_.emplace(r.status, version_);
    res_->set(http::field::server, kServerName);
    res_->set(http::field::content_type, r.content_type);
    for (auto& [f, v] : r.headers) res_->set(f, v);
    res_->body() = std::move(r.body);
    res_->keep_alive(!close);
    res_->prepare_payload();
    stream_.expires_after(server_->opts.idle_timeout);
    http::async_write(stream_, *res_,
                      beast::bind_front_handler(&Session::OnWrite, shared_from_this(), close));
  }

  void SendFile(Reply r, bool close) {
    file_ = std::move(r.file);
    file_size_ = r.file_size;
    file_off_ = 0;
    file_close_ = close;
    chunk_.resize(kFileChunk);
    file_res_.emplace(r.status, version_);
    file_res_->set(http::field::server, kServerName);
    file_res_->set(http::field::content_type, r.content_type);
    for (auto& [f, v] : r.headers) file_res_->set(f, v);
    file_res_->content_length(file_size_);
    file_res_->keep_alive(!close);
    file_res_->body().data = nullptr;
    file_res_->body().more = true;
    file_sr_.emplace(*file_res_);
    stream_.expires_after(server_->opts.idle_timeout);
    http::async_write_header(stream_, *file_sr_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               if (ec) return self->Close();
                               self->DoFileChunk();
                             });
  }

  void DoFileChunk() {
    size_t want = static_cast<size_t>(std::min<uint64_t>(chunk_.size(), file_size_ - file_off_));
    ssize_t n = 0;
    if (want > 0) {
      n = ::pread(file_.fd, chunk_.data(), want, static_cast<off_t>(file_off_));
      if (n <= 0) {
        // The length is promised already: all we can do is cut the connection.
        LOG_ERROR("http: export read failed",
                  {{"error", n < 0 ? std::strerror(errno) : "short file"}});
        return Close();
      }
    }
    file_off_ += static_cast<uint64_t>(n);
    file_res_->body().data = n > 0 ? chunk_.data() : nullptr;
    file_res_->body().size = static_cast<size_t>(n);
    file_res_->body().more = file_off_ < file_size_;
    stream_.expires_after(server_->opts.idle_timeout);
    http::async_write(stream_, *file_sr_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec == http::error::need_buffer) ec = {};
                        if (ec) return self->Close();
                        if (!self->file_sr_->is_done()) return self->DoFileChunk();
                        self->file_.reset();
                        self->file_sr_.reset();
                        self->file_res_.reset();
                        self->chunk_.clear();
                        self->chunk_.shrink_to_fit();
                        self->OnWrite(self->file_close_, {}, 0);
                      });
  }

  void OnWrite(bool close, beast::error_code ec, size_t) {
    auto ms = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - started_)
                  .count() /
              1000.0;
    LOG_DEBUG("http", {{"method", method_},
                       {"target", target_},
                       {"status", std::to_string(status_)},
                       {"ms", std::to_string(ms)}});
    res_.reset();
    continue_.reset();
    SetBusy(false);
    if (ec) return Close();
    if (close) return LingeringClose();
    DoReadHeader();
  }

  // After an answer to a request whose body we did not read: stop sending,
  // read and drop what the client still sends (bounded), then close. Closing
  // with unread input would reset the connection and could destroy the answer
  // before the client reads it.
  void LingeringClose() {
    if (closed_) return;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    discard_left_ = kLingerDiscardLimit;
    chunk_.resize(16 * 1024);
    DoDiscard();
  }

  void DoDiscard() {
    stream_.expires_after(kLingerTimeout);
    stream_.async_read_some(asio::buffer(chunk_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec || n >= self->discard_left_) return self->Close();
                              self->discard_left_ -= n;
                              self->DoDiscard();
                            });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    SetBusy(false);
    import_file_.reset();
    file_.reset();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  HttpServer::Impl* const server_;
  bool busy_ = false;
  bool closed_ = false;

  // The request in flight.
  std::optional<http::request_parser<http::empty_body>> header_;
  std::shared_ptr<tenancy::Database> wait_db_;
  uint64_t wait_txid_ = 0;
  std::chrono::steady_clock::time_point wait_deadline_;
  std::optional<asio::steady_timer> wait_timer_;
  std::optional<http::request_parser<http::file_body>> body_;
  std::shared_ptr<TempFile> import_file_;
  Route route_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  std::string method_, target_;
  int status_ = 0;
  std::chrono::steady_clock::time_point started_;

  // The answer in flight.
  std::optional<http::response<http::string_body>> res_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<http::buffer_body>> file_res_;
  std::optional<http::response_serializer<http::buffer_body>> file_sr_;
  UniqueFd file_;
  uint64_t file_size_ = 0, file_off_ = 0;
  bool file_close_ = false;
  std::vector<char> chunk_;
  size_t discard_left_ = 0;
};

}  // namespace

// ------------------------------------------------------------------ server

void HttpServer::Impl::DoAccept() {
  acceptor.async_accept(asio::make_strand(ioc), beast::bind_front_handler(&Impl::OnAccept, this));
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (stopping.load() || ec == asio::error::operation_aborted) return;
  if (ec) {
    // Out of fds, most likely: pause instead of spinning.
    LOG_WARN("http: accept failed", {{"error", ec.message()}});
    accept_timer.expires_after(100ms);
    accept_timer.async_wait([this](beast::error_code wec) {
      if (!wec && !stopping.load()) DoAccept();
    });
    return;
  }
  bool full;
  {
    std::lock_guard lock(mu);
    full = sessions.size() >= opts.max_connections;
  }
  if (full) {
    beast::error_code ignored;
    socket.close(ignored);
  } else {
    auto session = std::make_shared<Session>(std::move(socket), this);
    Register(session);
    session->Run();
  }
  DoAccept();
}

void HttpServer::Impl::Register(const std::shared_ptr<Session>& s) {
  std::lock_guard lock(mu);
  sessions.emplace(s.get(), s);
}

void HttpServer::Impl::Unregister(Session* s, bool was_busy) {
  std::lock_guard lock(mu);
  sessions.erase(s);
  if (was_busy && busy > 0) --busy;
  cv.notify_all();
}

void HttpServer::Impl::SetBusy(bool b) {
  std::lock_guard lock(mu);
  if (b) {
    ++busy;
  } else if (busy > 0) {
    --busy;
  }
  cv.notify_all();
}

void HttpServer::Impl::ForEachSession(
    const std::function<void(const std::shared_ptr<Session>&)>& f) {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mu);
    for (auto& [p, w] : sessions) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) f(s);  // outside mu: a last reference dropped here unregisters
}

tenancy::Result<std::unique_ptr<HttpServer>> HttpServer::Listen(Options options) {
  std::string host, port_text;
  if (!SplitAddr(options.addr, &host, &port_text)) {
    return tenancy::Status::InvalidArgument("expected HOST:PORT, got '" + options.addr + "'");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  if (::mkdir(impl->tmp_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return tenancy::Status::FromErrno(errno, "mkdir " + impl->tmp_dir);
  }
  RemoveStaleTempFiles(impl->tmp_dir);

  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto results = resolver.resolve(host, port_text, tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return tenancy::Status::InvalidArgument("cannot resolve '" + host + "': " + ec.message());
  }
  tcp::endpoint endpoint = results.begin()->endpoint();
  tcp::acceptor& a = impl->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) ::fcntl(a.native_handle(), F_SETFD, FD_CLOEXEC);
  if (!ec) a.bind(endpoint, ec);
  if (ec == asio::error::address_in_use) return tenancy::Status::AlreadyExists("address in use");
  if (ec && ec.value() == EADDRNOTAVAIL) {
    return tenancy::Status::InvalidArgument("address not available on this host");
  }
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return tenancy::Status::FromErrno(ec.value(), ec.message());
  impl->port = a.local_endpoint(ec).port();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(0ms); }

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::Start(tenancy::Store* store, StreamHub* hub, StreamClient* client) {
  Impl& s = *impl_;
  if (s.started) return;
  s.started = true;
  if (store != nullptr) s.opts.node.store = store;
  s.opts.node.hub = hub;
  s.opts.node.client = client;
  s.guard.emplace(s.ioc.get_executor());
  asio::post(s.acceptor.get_executor(), [&s] { s.DoAccept(); });
  for (int i = 0; i < std::max(1, s.opts.io_threads); ++i) {
    s.threads.emplace_back([&s] {
      while (true) {
        try {
          s.ioc.run();
          return;
        } catch (const std::exception& e) {
          LOG_ERROR("http: handler threw", {{"error", e.what()}});
        } catch (...) {
          LOG_ERROR("http: handler threw");
        }
      }
    });
  }
  LOG_INFO("http listening", {{"addr", s.opts.addr}, {"port", std::to_string(s.port)}});
}

void HttpServer::Stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  s.stopping.store(true);
  if (s.started) {
    // Stop accepting; idle connections go now, busy ones after their answer.
    std::promise<void> closed;
    asio::post(s.acceptor.get_executor(), [&s, &closed] {
      beast::error_code ec;
      s.acceptor.close(ec);
      s.accept_timer.cancel();
      closed.set_value();
    });
    closed.get_future().wait();
    s.ForEachSession([](const std::shared_ptr<Session>& x) { x->CloseIfIdle(); });
    {
      std::unique_lock lock(s.mu);
      s.cv.wait_for(lock, grace, [&s] { return s.busy == 0; });
    }
    // What is still running is abandoned: transfers roll back, sockets close.
    s.abort.store(true);
    s.ForEachSession([](const std::shared_ptr<Session>& x) { x->CloseNow(); });
    {
      std::unique_lock lock(s.mu);
      s.cv.wait_for(lock, 2s, [&s] { return s.sessions.empty(); });
    }
    s.guard.reset();
    s.ioc.stop();
    for (auto& t : s.threads) t.join();
    s.threads.clear();
  } else {
    beast::error_code ec;
    s.acceptor.close(ec);
  }
  s.abort.store(true);
  s.work.join();
}

}  // namespace replication

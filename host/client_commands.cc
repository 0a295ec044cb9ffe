#include "host/client_commands.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/json/src.hpp>  // Boost.JSON header-only: this is its one translation unit
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tenancy/names.h"

namespace host {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

// How long the client waits without any progress: while bytes flow, and while
// the server works (a snapshot or an integrity check of a big database).
constexpr auto kStallTransfer = 60s;
constexpr auto kStallServerWork = 3600s;
constexpr size_t kChunk = 1 << 20;

int Fail(int code, const std::string& what, const std::string& why) {
  std::fprintf(stderr, "tenantfs: %s: %s\n", what.c_str(), why.c_str());
  return code;
}

struct Url {
  std::string host, port, base;  // base: the URL without a trailing '/'
};

std::optional<Url> ParseUrl(const std::string& url, std::string* why) {
  constexpr std::string_view kHttp = "http://";
  if (url.rfind("https://", 0) == 0) {
    *why = "https is not supported; use http://";
    return std::nullopt;
  }
  if (url.rfind(kHttp, 0) != 0) {
    *why = "expected http://HOST:PORT, got '" + url + "'";
    return std::nullopt;
  }
  std::string rest = url.substr(kHttp.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) {
    *why = "expected http://HOST:PORT without a path, got '" + url + "'";
    return std::nullopt;
  }
  Url u;
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string::npos) {
      *why = "bad IPv6 host in '" + url + "'";
      return std::nullopt;
    }
    u.host = rest.substr(1, close - 1);
    u.port = close + 1 < rest.size() && rest[close + 1] == ':' ? rest.substr(close + 2) : "80";
  } else {
    size_t colon = rest.rfind(':');
    u.host = rest.substr(0, colon);
    u.port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  }
  if (u.host.empty() || u.port.empty() ||
      u.port.find_first_not_of("0123456789") != std::string::npos) {
    *why = "expected http://HOST:PORT, got '" + url + "'";
    return std::nullopt;
  }
  u.base = std::string(kHttp) + rest;
  return u;
}

// Cuts a blocked read or write when nothing moved for too long: shutdown(2) on
// the socket from this thread makes the blocked call return.
class Watchdog {
 public:
  explicit Watchdog(int fd) : fd_(fd), thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Arm(std::chrono::seconds limit) {
    std::lock_guard lock(mu_);
    deadline_ = Clock::now() + limit;
  }
  bool fired() const { return fired_.load(); }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    while (!done_) {
      if (Clock::now() >= deadline_) {
        fired_.store(true);
        ::shutdown(fd_, SHUT_RDWR);
        return;
      }
      cv_.wait_until(lock, std::min(deadline_, Clock::now() + 1s));
    }
  }
  const int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Clock::time_point deadline_ = Clock::now() + kStallTransfer;
  std::atomic<bool> fired_{false};
  std::thread thread_;  // last: starts after the fields above exist
};

// One HTTP/1.1 connection, synchronous.
class Client {
 public:
  Client(Url url, std::string token) : url_(std::move(url)), token_(std::move(token)) {}

  // Connects; on failure *why says why.
  bool Connect(std::string* why) {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(url_.host, url_.port, ec);
    if (!ec) stream_.connect(results, ec);
    if (ec) {
      *why = "cannot connect to " + url_.base + ": " + ec.message();
      return false;
    }
    watchdog_.emplace(stream_.socket().native_handle());
    return true;
  }

  template <typename Body>
  void Prepare(http::request<Body>& req) {
    req.set(http::field::host, url_.host + ":" + url_.port);
    req.set(http::field::user_agent, "tenantfs-cli");
    if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  }

  // A simple GET whose answer is small.
  bool Get(const std::string& target, int* status, std::string* body, std::string* why) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    Prepare(req);
    beast::error_code ec;
    Arm(kStallServerWork);
    http::write(stream_, req, ec);
    if (!ec) return ReadSmallResponse(status, body, why);
    *why = Explain(ec, "sending the request");
    return false;
  }

  // Reads a whole (small) response.
  bool ReadSmallResponse(int* status, std::string* body, std::string* why) {
    http::response_parser<http::string_body> p;
    p.body_limit(64ull << 20);
    beast::error_code ec;
    http::read(stream_, buffer_, p, ec);
    if (ec) {
      *why = Explain(ec, "reading the answer");
      return false;
    }
    *status = static_cast<int>(p.get().result_int());
    *body = std::move(p.get().body());
    return true;
  }

  void Arm(std::chrono::seconds s) {
    if (watchdog_) watchdog_->Arm(s);
  }

  std::string Explain(const beast::error_code& ec, const std::string& doing) const {
    if (watchdog_ && watchdog_->fired()) {
      return "timed out " + doing + " (no progress)";
    }
    return doing + ": " + ec.message();
  }

  beast::tcp_stream& stream() { return stream_; }
  beast::flat_buffer& buffer() { return buffer_; }

 private:
  Url url_;
  std::string token_;
  asio::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  std::optional<Watchdog> watchdog_;
};

// "STATUS message" from an error response: the JSON "error" when there is one.
std::string DescribeHttpError(int status, const std::string& body) {
  std::string msg;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec && v.is_object() && v.as_object().contains("error") &&
      v.as_object().at("error").is_string()) {
    msg = std::string(v.as_object().at("error").as_string());
  } else {
    msg = body.substr(0, body.find('\n'));
    if (msg.size() > 200) msg = msg.substr(0, 200) + "...";
  }
  return std::to_string(status) + (msg.empty() ? "" : " " + msg);
}

bool SplitTenantDb(const std::string& arg, std::string* tenant, std::string* db) {
  size_t slash = arg.find('/');
  if (slash == std::string::npos) return false;
  *tenant = arg.substr(0, slash);
  *db = arg.substr(slash + 1);
  return tenancy::IsValidName(*tenant) && tenancy::IsValidName(*db);
}

std::string HumanBytes(uint64_t n) {
  char buf[32];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else if (n < (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  } else if (n < (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", n / 1048576.0);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", n / 1073741824.0);
  }
  return buf;
}

// Progress on stderr when it is a terminal, at most ten times a second.
class Progress {
 public:
  Progress(std::string what, uint64_t total)
      : what_(std::move(what)), total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}
  void Update(uint64_t done, bool force = false) {
    if (!tty_) return;
    auto now = Clock::now();
    if (!force && now - last_ < 100ms) return;
    last_ = now;
    shown_ = true;
    if (total_ > 0) {
      std::fprintf(stderr, "\r%s: %s of %s (%d%%)   ", what_.c_str(), HumanBytes(done).c_str(),
                   HumanBytes(total_).c_str(), static_cast<int>(done * 100 / total_));
    } else {
      std::fprintf(stderr, "\r%s: %s   ", what_.c_str(), HumanBytes(done).c_str());
    }
    std::fflush(stderr);
  }
  void Note(const char* text) {
    if (!tty_) return;
    std::fprintf(stderr, "\r%s: %s   ", what_.c_str(), text);
    std::fflush(stderr);
    shown_ = true;
  }
  ~Progress() {
    if (shown_) std::fprintf(stderr, "\n");
  }

 private:
  std::string what_;
  uint64_t total_;
  bool tty_;
  bool shown_ = false;
  Clock::time_point last_{};
};

std::string JsonText(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "-";
  if (v.is_bool()) return v.as_bool() ? "yes" : "no";
  return json::serialize(v);
}

std::string Field(const json::object& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() ? "-" : JsonText(it->value());
}

}  // namespace

std::string DefaultUrl(const std::string& http_addr) {
  std::string host, port;
  if (!http_addr.empty() && http_addr[0] == '[') {
    size_t close = http_addr.find(']');
    host = http_addr.substr(1, close == std::string::npos ? 0 : close - 1);
    port = close == std::string::npos ? "" : http_addr.substr(close + 2);
  } else {
    size_t colon = http_addr.rfind(':');
    host = http_addr.substr(0, colon);
    port = colon == std::string::npos ? "" : http_addr.substr(colon + 1);
  }
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "localhost" ||
      host.rfind("127.", 0) == 0) {
    host = "127.0.0.1";
  } else if (host.find(':') != std::string::npos) {
    host = "[" + host + "]";
  }
  return "http://" + host + ":" + port;
}

int RunStatus(const ClientOptions& o) {
  const std::string what = "status";
  std::string why;
  auto url = ParseUrl(o.url, &why);
  if (!url) return Fail(kExitUsage, what, "--url: " + why);
  Client c(*url, o.token);
  if (!c.Connect(&why)) return Fail(kExitRuntime, what, why);
  int status = 0;
  std::string info_body, dbs_body;
  if (!c.Get("/v1/info", &status, &info_body, &why)) return Fail(kExitRuntime, what, why);
  if (status != 200) return Fail(kExitRuntime, what, DescribeHttpError(status, info_body));
  if (!c.Get("/v1/dbs", &status, &dbs_body, &why)) return Fail(kExitRuntime, what, why);
  if (status != 200) return Fail(kExitRuntime, what, DescribeHttpError(status, dbs_body));

  boost::system::error_code ec;
  json::value info = json::parse(info_body, ec);
  if (ec || !info.is_object())
    return Fail(kExitRuntime, what, "bad /v1/info answer from " + url->base);
  json::value dbs = json::parse(dbs_body, ec);
  if (ec || !dbs.is_array())
    return Fail(kExitRuntime, what, "bad /v1/dbs answer from " + url->base);
  const json::object& i = info.as_object();
  std::string out;
  out += "node:      " + Field(i, "node") + "\n";
  out += "role:      " + Field(i, "role") + "\n";
  out += "primary:   " + Field(i, "primary") + "\n";
  out += "tenants:   " + Field(i, "tenants") + "\n";
  out += "databases: " + Field(i, "databases") + " (" + Field(i, "databases_open") + " open)\n";

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"TENANT", "DB", "TXID", "CHECKSUM", "SIZE", "OPEN", "JOURNAL"});
  for (const json::value& v : dbs.as_array()) {
    if (!v.is_object()) continue;
    const json::object& d = v.as_object();
    rows.push_back({Field(d, "tenant"), Field(d, "db"), Field(d, "txid"), Field(d, "checksum"),
                    Field(d, "size_bytes"), Field(d, "open"), Field(d, "journal_mode")});
  }
  if (rows.size() > 1) {
    std::vector<size_t> width(rows[0].size(), 0);
    for (auto& r : rows) {
      for (size_t k = 0; k < r.size(); ++k) width[k] = std::max(width[k], r[k].size());
    }
    out += "\n";
    for (auto& r : rows) {
      std::string line;
      for (size_t k = 0; k < r.size(); ++k) {
        line += r[k];
        if (k + 1 < r.size()) line += std::string(width[k] - r[k].size() + 2, ' ');
      }
      out += line + "\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (std::fflush(stdout) != 0)
    return Fail(kExitRuntime, what, "writing to stdout: " + std::string(std::strerror(errno)));
  return kExitOk;
}

int RunImport(const ClientOptions& o, const std::string& tenant_db, const std::string& file) {
  const std::string what = "import " + tenant_db;
  std::string tenant, db, why;
  if (!SplitTenantDb(tenant_db, &tenant, &db)) {
    return Fail(kExitUsage, what, "expected TENANT/DB with valid names");
  }
  auto url = ParseUrl(o.url, &why);
  if (!url) return Fail(kExitUsage, what, "--url: " + why);
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Fail(kExitRuntime, what, file + ": " + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return Fail(kExitRuntime, what, file + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Fail(kExitRuntime, what, file + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  Client c(*url, o.token);
  if (!c.Connect(&why)) return Fail(kExitRuntime, what, why);
  http::request<http::buffer_body> req{http::verb::put, "/v1/dbs/" + tenant + "/" + db + "/import",
                                       11};
  c.Prepare(req);
  req.set(http::field::content_type, "application/vnd.sqlite3");
  // The server answers a refusal (bad token, unknown tenant, too large) before
  // we send a byte of the body.
  req.set(http::field::expect, "100-continue");
  req.content_length(size);
  req.body().data = nullptr;
  req.body().more = true;
  http::request_serializer<http::buffer_body> sr{req};
  beast::error_code ec;
  c.Arm(kStallTransfer);
  http::write_header(c.stream(), sr, ec);
  if (ec) return Fail(kExitRuntime, what, c.Explain(ec, "sending the request"));

  http::response_parser<http::empty_body> head;
  c.Arm(kStallServerWork);
  http::read_header(c.stream(), c.buffer(), head, ec);
  if (ec) return Fail(kExitRuntime, what, c.Explain(ec, "waiting for the server"));
  if (head.get().result() != http::status::continue_) {
    http::response_parser<http::string_body> rest{std::move(head)};
    rest.body_limit(1 << 20);
    http::read(c.stream(), c.buffer(), rest, ec);
    return Fail(kExitRuntime, what,
                DescribeHttpError(static_cast<int>(rest.get().result_int()), rest.get().body()));
  }

  {
    Progress progress(what, size);
    std::vector<char> buf(kChunk);
    uint64_t sent = 0;
    while (sent < size || !sr.is_done()) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - sent));
      ssize_t n = 0;
      if (want > 0) {
        n = ::pread(fd, buf.data(), want, static_cast<off_t>(sent));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Fail(kExitRuntime, what, file + ": " + std::strerror(errno));
        if (n == 0) return Fail(kExitRuntime, what, file + ": shrank while being sent");
      }
      req.body().data = n > 0 ? buf.data() : nullptr;
      req.body().size = static_cast<size_t>(n);
      req.body().more = sent + static_cast<uint64_t>(n) < size;
      c.Arm(kStallTransfer);
      http::write(c.stream(), sr, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return Fail(kExitRuntime, what, c.Explain(ec, "sending " + file));
      sent += static_cast<uint64_t>(n);
      progress.Update(sent);
      if (n == 0) break;
    }
    progress.Update(sent, true);
    progress.Note("sent; the server checks and applies it");
  }
  int status = 0;
  std::string body;
  c.Arm(kStallServerWork);
  if (!c.ReadSmallResponse(&status, &body, &why)) return Fail(kExitRuntime, what, why);
  if (status != 200) return Fail(kExitRuntime, what, DescribeHttpError(status, body));
  boost::system::error_code jec;
  json::value v = json::parse(body, jec);
  std::string line = "imported " + file + " into " + tenant_db;
  if (!jec && v.is_object()) {
    line +=
        ": txid " + Field(v.as_object(), "txid") + ", checksum " + Field(v.as_object(), "checksum");
  }
  std::printf("%s\n", line.c_str());
  return kExitOk;
}

int RunExport(const ClientOptions& o, const std::string& tenant_db, const std::string& file) {
  const std::string what = "export " + tenant_db;
  std::string tenant, db, why;
  if (!SplitTenantDb(tenant_db, &tenant, &db)) {
    return Fail(kExitUsage, what, "expected TENANT/DB with valid names");
  }
  auto url = ParseUrl(o.url, &why);
  if (!url) return Fail(kExitUsage, what, "--url: " + why);
  Client c(*url, o.token);
  if (!c.Connect(&why)) return Fail(kExitRuntime, what, why);
  http::request<http::empty_body> req{http::verb::get, "/v1/dbs/" + tenant + "/" + db + "/export",
                                      11};
  c.Prepare(req);
  beast::error_code ec;
  c.Arm(kStallTransfer);
  http::write(c.stream(), req, ec);
  if (ec) return Fail(kExitRuntime, what, c.Explain(ec, "sending the request"));

  // The server takes a snapshot before it answers: wait for the server's work.
  http::response_parser<http::empty_body> head;
  c.Arm(kStallServerWork);
  http::read_header(c.stream(), c.buffer(), head, ec);
  if (ec) return Fail(kExitRuntime, what, c.Explain(ec, "waiting for the server"));
  if (head.get().result() != http::status::ok) {
    http::response_parser<http::string_body> rest{std::move(head)};
    rest.body_limit(1 << 20);
    http::read(c.stream(), c.buffer(), rest, ec);
    return Fail(kExitRuntime, what,
                DescribeHttpError(static_cast<int>(rest.get().result_int()), rest.get().body()));
  }
  uint64_t total = head.content_length().value_or(0);
  http::response_parser<http::buffer_body> p{std::move(head)};
  p.body_limit(std::numeric_limits<std::uint64_t>::max());

  const std::string tmp = file + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Fail(kExitRuntime, what, tmp + ": " + std::strerror(errno));
  auto fail_tmp = [&](const std::string& msg) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return Fail(kExitRuntime, what, msg);
  };
  uint64_t got = 0;
  {
    Progress progress(what, total);
    std::vector<char> buf(kChunk);
    while (!p.is_done()) {
      p.get().body().data = buf.data();
      p.get().body().size = buf.size();
      c.Arm(kStallTransfer);
      http::read(c.stream(), c.buffer(), p, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return fail_tmp(c.Explain(ec, "receiving the database"));
      size_t n = buf.size() - p.get().body().size;
      for (size_t off = 0; off < n;) {
        ssize_t w = ::write(fd, buf.data() + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail_tmp(tmp + ": " + std::strerror(errno));
        off += static_cast<size_t>(w);
      }
      got += n;
      progress.Update(got);
    }
    progress.Update(got, true);
  }
  if (total != 0 && got != total) {
    return fail_tmp("got " + std::to_string(got) + " of " + std::to_string(total) + " bytes");
  }
  if (::fsync(fd) != 0) return fail_tmp(tmp + ": fsync: " + std::strerror(errno));
  if (::close(fd) != 0) {
    fd = -1;
    ::unlink(tmp.c_str());
    return Fail(kExitRuntime, what, tmp + ": close: " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Fail(kExitRuntime, what, "rename " + tmp + " to " + file + ": " + std::strerror(err));
  }
  std::printf("exported %s to %s (%s)\n", tenant_db.c_str(), file.c_str(), HumanBytes(got).c_str());
  return kExitOk;
}

}  // namespace host

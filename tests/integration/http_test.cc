// The HTTP API (SPEC "HTTP", "Metrics") against a real daemon: /healthz, the bearer token
// on /v1/ (401 and nothing done), malformed requests answered with a 4xx while the node
// keeps serving, import/export through the mount (a refused import leaves the database
// byte-identical; a round trip keeps the data), the status/import/export commands, and
// /metrics with every SPEC name, accepted by promtool.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

constexpr const char* kToken = "s3cret-token";
constexpr const char* kPromtool = "/usr/bin/promtool";

using it::HttpReply;
using it::SendRaw;

HttpReply Http(int port, const std::string& method, const std::string& target,
               const std::string& token = "", const std::string& body = "",
               bool send_length = false) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  if (!body.empty() || send_length)
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return SendRaw(port, req);
}

std::string Describe(const HttpReply& r) {
  return "\n--- reply (" + std::to_string(r.raw.size()) + " bytes):\n" + r.raw.substr(0, 2000);
}

bool HasHeader(const HttpReply& r, const std::string& line) {
  return r.headers.find(line) != std::string::npos;
}

class HttpTest : public it::MountTest {
 protected:
  it::DaemonOptions Options() override {
    config_ = scratch_->WorkPath("node.yaml");
    it::WriteFile(config_, std::string("http:\n  token: ") + kToken + "\n");
    it::DaemonOptions o;
    o.config_path = config_;
    return o;
  }

  int port() const { return daemon_->port(); }

  // A config for the CLI: the daemon's address (the harness picks the port) and token.
  std::string ClientConfig(const std::string& token = kToken) {
    std::string path = scratch_->WorkPath("client-" + token + ".yaml");
    it::WriteFile(
        path, "http:\n  addr: 127.0.0.1:" + std::to_string(port()) + "\n  token: " + token + "\n");
    return path;
  }

  // A database built natively (outside the mount) with `rows` rows and some blobs.
  std::string MakeSourceDb(const std::string& name, int rows, const std::string& mode = "delete") {
    std::string path = scratch_->WorkPath(name);
    it::Result r = it::SqlClient(
        {"exec", "--mode", mode, path,
         "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);"
         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<" +
             std::to_string(rows) +
             ") INSERT INTO items(name, payload) SELECT 'item-' || x, randomblob(x % 700) FROM c;"
             "CREATE INDEX items_name ON items(name);"});
    EXPECT_TRUE(r.Ok()) << r.Describe();
    return path;
  }

  std::string Digest(const std::string& db, const std::string& table = "items") {
    it::Result r = it::SqlClient({"digest", db, table});
    EXPECT_TRUE(r.Ok()) << r.Describe();
    return it::Trim(r.out);
  }

  void ExpectIntegrityOk(const std::string& db) {
    EXPECT_EQ(it::SqlOk(db, "PRAGMA integrity_check"), "ok") << db;
  }

  // A tenant with one database holding known data, through the mount.
  void MakeExistingDb(const std::string& tenant, const std::string& db) {
    MakeTenant(tenant);
    it::Result r =
        it::SqlClient({"exec", "--mode", "wal", Mnt(tenant + "/" + db),
                       "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);"
                       "INSERT INTO items(name, payload) VALUES ('original', x'00ff00ff');"});
    ASSERT_TRUE(r.Ok()) << r.Describe();
  }

  void ExpectStillServing() {
    HttpReply h = Http(port(), "GET", "/healthz");
    EXPECT_EQ(h.status, 200) << "the node stopped serving" << Describe(h) << daemon_->Describe();
    EXPECT_TRUE(daemon_->Running()) << daemon_->Describe();
  }

  std::string config_;
};

TEST_F(HttpTest, HealthzAnswersOk) {
  HttpReply r = Http(port(), "GET", "/healthz");
  ASSERT_EQ(r.status, 200) << Describe(r);
  EXPECT_EQ(r.body, "ok");
  // Keep-alive: two requests on one connection, two answers.
  HttpReply two = SendRaw(port(),
                          "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                          "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  size_t first = two.raw.find("HTTP/1.1 200");
  ASSERT_NE(first, std::string::npos) << Describe(two);
  EXPECT_NE(two.raw.find("HTTP/1.1 200", first + 1), std::string::npos) << Describe(two);
}

TEST_F(HttpTest, V1NeedsTheBearerToken) {
  for (const char* target : {"/v1/info", "/v1/dbs", "/v1/nothing-here", "/v1/promote"}) {
    for (const std::string& token : {std::string(), std::string("wrong"),
                                     std::string(kToken).substr(0, 5), std::string(kToken) + "x"}) {
      HttpReply r = Http(port(), "GET", target, token);
      EXPECT_EQ(r.status, 401) << target << " with token '" << token << "'" << Describe(r);
      EXPECT_NE(r.body.find("\"error\""), std::string::npos) << Describe(r);
    }
  }
  // Another scheme, or the right token in the wrong header, is no token.
  HttpReply basic = SendRaw(port(),
                            "GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            "Authorization: Basic " +
                                std::string(kToken) + "\r\n\r\n");
  EXPECT_EQ(basic.status, 401) << Describe(basic);
  HttpReply good = Http(port(), "GET", "/v1/info", kToken);
  ASSERT_EQ(good.status, 200) << Describe(good);
  EXPECT_TRUE(HasHeader(good, "Content-Type: application/json")) << Describe(good);
  EXPECT_NE(good.body.find("\"role\": \"primary\""), std::string::npos) << Describe(good);
  // Outside /v1/ no token is needed.
  EXPECT_EQ(Http(port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(Http(port(), "GET", "/metrics").status, 200);
}

TEST_F(HttpTest, ImportWithoutTheTokenChangesNothing) {
  MakeExistingDb("acme", "app.db");
  std::string before_db = it::ReadFile(Backing("acme/app.db"));
  std::string before_pos = it::ReadFile(Mnt("acme/app.db-pos"));
  std::string before_digest = Digest(Mnt("acme/app.db"));
  std::string source = it::ReadFile(MakeSourceDb("other.db", 500));
  for (const std::string& token : {std::string(), std::string("wrong")}) {
    HttpReply r = Http(port(), "PUT", "/v1/dbs/acme/app.db/import", token, source);
    EXPECT_EQ(r.status, 401) << Describe(r);
    // A database that does not exist yet is not created either.
    HttpReply n = Http(port(), "PUT", "/v1/dbs/acme/new.db/import", token, source);
    EXPECT_EQ(n.status, 401) << Describe(n);
  }
  EXPECT_FALSE(it::Exists(Mnt("acme/new.db")));
  EXPECT_FALSE(it::Exists(Backing("acme/new.db")));
  EXPECT_EQ(it::ReadFile(Mnt("acme/app.db-pos")), before_pos);
  EXPECT_EQ(Digest(Mnt("acme/app.db")), before_digest);
  EXPECT_TRUE(it::ReadFile(Backing("acme/app.db")) == before_db) << "backing file changed";
  ExpectStillServing();
}

TEST_F(HttpTest, BadPathsNamesAndMethodsGet4xx) {
  MakeExistingDb("acme", "app.db");
  struct Case {
    std::string method, target;
    int status;
  };
  const Case cases[] = {
      {"GET", "/nope", 404},
      {"GET", "/", 404},
      {"GET", "/v1", 404},
      {"GET", "/v1/dbs/acme", 404},
      {"GET", "/v1/dbs/acme/app.db/frobnicate", 404},
      {"GET", "/v1/dbs/acme/app.db/export/extra", 404},
      {"GET", "/v1/dbs/ac%20me/app.db/export", 400},
      {"GET", "/v1/dbs/../app.db/export", 400},
      {"GET", "/v1/dbs/acme/../export", 400},
      {"GET", "/v1/dbs/acme/app.db-wal/export", 400},
      {"GET", "/v1/dbs/acme/app.db-pos/export", 400},
      {"GET", "/v1/dbs/.hidden/app.db/export", 400},
      {"GET", "/v1/dbs/acme/" + std::string(70, 'a') + "/export", 400},
      {"GET", "/v1/dbs/acme/missing.db/export", 404},
      {"GET", "/v1/dbs/nobody/app.db/export", 404},
      {"PUT", "/v1/dbs/nobody/app.db/import", 404},
      {"POST", "/v1/dbs/acme/app.db/export", 405},
      {"GET", "/v1/dbs/acme/app.db/import", 405},
      {"DELETE", "/v1/dbs", 405},
      {"POST", "/healthz", 405},
      {"GET", "/v1/dbs/acme/app.db/wait", 400},               // no txid
      {"GET", "/v1/dbs/acme/app.db/wait?txid=x1", 400},       // not a number
      {"GET", "/v1/dbs/acme/app.db/wait?txid=-1", 400},
      {"GET", "/v1/dbs/acme/missing.db/wait?txid=1", 404},
      {"GET", "/v1/dbs/acme/app.db/wait?txid=999999&timeout_ms=10", 504},
      {"GET", "/v1/stream", 400},                             // not a WebSocket upgrade
      {"POST", "/v1/promote", 501},
  };
  std::string tiny = "SQLite format 3";  // import bodies: refused before they matter
  for (const Case& c : cases) {
    HttpReply r = Http(port(), c.method, c.target, kToken, c.method == "PUT" ? tiny : "");
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.target << Describe(r);
    EXPECT_NE(r.body.find("{\"error\": \""), std::string::npos)
        << c.method << " " << c.target << Describe(r);
  }
  // An import body over the cap is refused from its Content-Length, before it is sent.
  HttpReply big =
      SendRaw(port(),
              "PUT /v1/dbs/acme/app.db/import HTTP/1.1\r\nHost: x\r\n"
              "Authorization: Bearer " +
                  std::string(kToken) + "\r\nContent-Length: 100000000000\r\n\r\nSQLite format 3");
  EXPECT_EQ(big.status, 413) << Describe(big);
  EXPECT_EQ(it::SqlOk(Mnt("acme/app.db"), "SELECT name FROM items"), "original");
  HttpReply allow = Http(port(), "POST", "/v1/dbs/acme/app.db/export", kToken);
  EXPECT_TRUE(HasHeader(allow, "Allow: GET")) << Describe(allow);
  ExpectStillServing();
}

TEST_F(HttpTest, MalformedRequestsGet4xxAndTheNodeKeepsServing) {
  struct Case {
    const char* what;
    std::string bytes;
    int status;  // 0: the server may just close
  };
  const Case cases[] = {
      {"binary garbage", std::string("\x00\x01\x02\xff\xfe garbage\r\n\r\n", 17), 400},
      {"no method", " /healthz HTTP/1.1\r\n\r\n", 400},
      {"bad version", "GET /healthz HTTP/7.3\r\n\r\n", 400},
      {"bad header line", "GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n", 400},
      {"bad content-length", "GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
      {"two content-lengths",
       "PUT /v1/dbs/a/b/import HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"body where none is taken", "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413},
      {"oversized header",
       "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 431},
      {"too many headers",
       "GET /healthz HTTP/1.1\r\n" +
           [] {
             std::string h;
             for (int i = 0; i < 2000; ++i) h += "X-" + std::to_string(i) + ": v\r\n";
             return h;
           }() +
           "\r\n",
       431},
      {"oversized target", "GET /" + std::string(10000, 'x') + " HTTP/1.1\r\n\r\n", 431},
      {"truncated request", "GET /heal", 0},
      {"empty connection", "", 0},
  };
  for (const Case& c : cases) {
    HttpReply r = SendRaw(port(), c.bytes, /*shut_write=*/true);
    if (c.status != 0) {
      EXPECT_EQ(r.status, c.status) << c.what << Describe(r);
      EXPECT_TRUE(HasHeader(r, "Connection: close")) << c.what << Describe(r);
    } else {
      EXPECT_TRUE(r.status == 0 || (r.status >= 400 && r.status < 500)) << c.what << Describe(r);
    }
    ExpectStillServing();
  }
  // Many connections that never send a byte do not stop others from being served.
  std::vector<int> idle;
  for (int i = 0; i < 50; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
    idle.push_back(fd);
  }
  ExpectStillServing();
  for (int fd : idle) ::close(fd);
  ExpectStillServing();
}

TEST_F(HttpTest, ImportOfANonSqliteFileIsRefusedAndTheDatabaseStaysAsItWas) {
  MakeExistingDb("acme", "app.db");
  std::string before_db = it::ReadFile(Backing("acme/app.db"));
  std::string before_pos = it::ReadFile(Mnt("acme/app.db-pos"));
  // Valid header, corrupt b-tree pages: only integrity_check can tell.
  std::string corrupt = it::ReadFile(MakeSourceDb("corrupt.db", 2000));
  ASSERT_GT(corrupt.size(), 4096u * 4);
  for (size_t i = 4096 * 2 + 100; i < 4096 * 3; ++i) corrupt[i] = static_cast<char>(i * 7);
  struct Case {
    const char* what;
    std::string body;
    std::string message;
  };
  const Case cases[] = {
      {"text", "hello, this is not a database\n", "not a SQLite database: file is not a database"},
      {"random bytes", std::string(8192, '\x5a'), "not a SQLite database: file is not a database"},
      {"header only", std::string("SQLite format 3\0", 16), "not a SQLite database"},
      {"corrupt pages", corrupt, "not a SQLite database"},
  };
  for (const Case& c : cases) {
    HttpReply r = Http(port(), "PUT", "/v1/dbs/acme/app.db/import", kToken, c.body);
    EXPECT_EQ(r.status, 400) << c.what << Describe(r);
    EXPECT_NE(r.body.find("{\"error\": \"" + c.message), std::string::npos)
        << c.what << Describe(r);
  }
  HttpReply empty = Http(port(), "PUT", "/v1/dbs/acme/app.db/import", kToken, "", true);
  EXPECT_EQ(empty.status, 400) << Describe(empty);
  EXPECT_NE(empty.body.find("file is empty"), std::string::npos) << Describe(empty);

  EXPECT_EQ(it::ReadFile(Mnt("acme/app.db-pos")), before_pos);
  EXPECT_TRUE(it::ReadFile(Backing("acme/app.db")) == before_db) << "backing file changed";
  EXPECT_EQ(it::SqlOk(Mnt("acme/app.db"), "SELECT name FROM items"), "original");
  ExpectIntegrityOk(Mnt("acme/app.db"));
  // Refused bodies leave no temp files behind.
  auto tmp = it::ListDir(scratch_->data() + "/tmp");
  ASSERT_TRUE(tmp.has_value());
  EXPECT_TRUE(tmp->empty()) << it::Join(*tmp, ", ");
}

TEST_F(HttpTest, ImportThenExportRoundTripKeepsTheData) {
  MakeExistingDb("acme", "app.db");  // WAL mode, replaced by the import
  MakeTenant("beta");                // no database yet: the import creates it
  for (const std::string& mode : {std::string("delete"), std::string("wal")}) {
    SCOPED_TRACE("source journal mode " + mode);
    std::string source = MakeSourceDb("source-" + mode + ".db", 3000, mode);
    std::string want = Digest(source);
    for (const std::string& target : {std::string("acme/app.db"), "beta/fresh-" + mode + ".db"}) {
      std::string before = it::Trim(it::ReadFile(Mnt(target + "-pos")));  // "" when new
      uint64_t txid_before = before.empty() ? 0 : std::stoull(before.substr(0, 16), nullptr, 16);
      HttpReply r =
          Http(port(), "PUT", "/v1/dbs/" + target + "/import", kToken, it::ReadFile(source));
      ASSERT_EQ(r.status, 200) << target << Describe(r);
      // The answer carries the new position, the same the -pos file shows; the
      // import is one transaction.
      std::string pos = it::Trim(it::ReadFile(Mnt(target + "-pos")));
      ASSERT_EQ(pos.size(), 33u) << pos;
      uint64_t txid = std::stoull(pos.substr(0, 16), nullptr, 16);
      EXPECT_EQ(txid, txid_before + 1) << target << ": before " << before << ", after " << pos;
      EXPECT_NE(r.body.find("\"txid\": " + std::to_string(txid) + ","), std::string::npos)
          << pos << Describe(r);
      EXPECT_NE(r.body.find("\"checksum\": \"" + pos.substr(17) + "\""), std::string::npos)
          << pos << Describe(r);
      EXPECT_EQ(Digest(Mnt(target)), want) << target;
      ExpectIntegrityOk(Mnt(target));

      HttpReply e = Http(port(), "GET", "/v1/dbs/" + target + "/export", kToken);
      ASSERT_EQ(e.status, 200) << target << Describe(e).substr(0, 500);
      EXPECT_TRUE(HasHeader(e, "Content-Type: application/vnd.sqlite3")) << e.headers;
      EXPECT_TRUE(HasHeader(e, "Content-Length: " + std::to_string(e.body.size()))) << e.headers;
      std::string out = scratch_->WorkPath("exported-" + mode + ".db");
      ::unlink(out.c_str());
      it::WriteFile(out, e.body);
      EXPECT_EQ(Digest(out), want) << target;
      ExpectIntegrityOk(out);
    }
  }
  // The listing shows both databases, with their positions.
  HttpReply dbs = Http(port(), "GET", "/v1/dbs", kToken);
  ASSERT_EQ(dbs.status, 200) << Describe(dbs);
  std::string app_pos = it::Trim(it::ReadFile(Mnt("acme/app.db-pos")));
  EXPECT_NE(dbs.body.find("\"tenant\": \"acme\", \"db\": \"app.db\", \"txid\": " +
                          std::to_string(std::stoull(app_pos.substr(0, 16), nullptr, 16)) +
                          ", \"checksum\": \"" + app_pos.substr(17) + "\""),
            std::string::npos)
      << app_pos << Describe(dbs);
  EXPECT_NE(dbs.body.find("\"db\": \"fresh-wal.db\""), std::string::npos) << Describe(dbs);
  HttpReply info = Http(port(), "GET", "/v1/info", kToken);
  EXPECT_NE(info.body.find("\"tenants\": 2, \"databases\": 3"), std::string::npos)
      << Describe(info);
}

TEST_F(HttpTest, ListingShowsPositionsAndOpenDatabases) {
  MakeExistingDb("acme", "app.db");  // just written: its backing fd stays open (LRU)
  std::string pos = it::Trim(it::ReadFile(Mnt("acme/app.db-pos")));
  ASSERT_EQ(pos.size(), 33u) << pos;
  HttpReply dbs = Http(port(), "GET", "/v1/dbs", kToken);
  ASSERT_EQ(dbs.status, 200) << Describe(dbs);
  std::string size = std::to_string(it::FileSize(Backing("acme/app.db")));
  EXPECT_NE(dbs.body.find("{\"tenant\": \"acme\", \"db\": \"app.db\", \"txid\": " +
                          std::to_string(std::stoull(pos.substr(0, 16), nullptr, 16)) +
                          ", \"checksum\": \"" + pos.substr(17) + "\", \"size_bytes\": " + size +
                          ", \"open\": true, \"journal_mode\": \"wal\"}"),
            std::string::npos)
      << pos << " size " << size << Describe(dbs);
  HttpReply info = Http(port(), "GET", "/v1/info", kToken);
  ASSERT_EQ(info.status, 200) << Describe(info);
  EXPECT_NE(info.body.find("\"tenants\": 1, \"databases\": 1, \"databases_open\": 1, "
                           "\"max_open\": 256, \"backing_fds\": "),
            std::string::npos)
      << Describe(info);
  EXPECT_NE(info.body.find("\"fd_exhaustions\": 0, \"captures_loaded\": "), std::string::npos)
      << Describe(info);
  EXPECT_NE(info.body.find(", \"replicas\": []}"), std::string::npos) << Describe(info);
  HttpReply m = Http(port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("\ntenantfs_databases_open 1\n"), std::string::npos);
}

TEST_F(HttpTest, ExportIsASnapshotWhileAWriterGoesOn) {
  MakeTenant("acme");
  std::string db = Mnt("acme/busy.db");
  it::Result init = it::SqlClient({"bank-init", db, "wal", "50", "1000"});
  ASSERT_TRUE(init.Ok()) << init.Describe();
  it::Child writer = it::Spawn({it::kSqlClientBin, "bank-write", db, "wal", "0", "1000", "50"});
  // Snapshots while the writer runs (at least five, bounded).
  for (int i = 0; i < 60 && (i < 5 || writer.Running()); ++i) {
    HttpReply e = Http(port(), "GET", "/v1/dbs/acme/busy.db/export", kToken);
    ASSERT_EQ(e.status, 200) << Describe(e).substr(0, 500);
    std::string out = scratch_->WorkPath("snap-" + std::to_string(i) + ".db");
    it::WriteFile(out, e.body);
    ExpectIntegrityOk(out);
    // The balance total is invariant in every committed state.
    EXPECT_EQ(it::SqlOk(out, "SELECT sum(balance) FROM accounts"), std::to_string(50 * 1000));
  }
  it::Result w = writer.Wait(120s);
  EXPECT_TRUE(w.Ok()) << w.Describe();
}

TEST_F(HttpTest, CliStatusImportExport) {
  MakeExistingDb("acme", "app.db");
  std::string cfg = ClientConfig();
  std::string source = MakeSourceDb("cli-source.db", 1500);
  std::string want = Digest(source);

  it::Result st = it::Run({it::kTenantfsBin, "status", "--config", cfg}, 60s);
  ASSERT_TRUE(st.Ok()) << st.Describe();
  EXPECT_NE(st.out.find("role:      primary"), std::string::npos) << st.out;
  std::string pos = it::Trim(it::ReadFile(Mnt("acme/app.db-pos")));
  EXPECT_NE(st.out.find(pos.substr(17)), std::string::npos) << "checksum missing\n" << st.out;
  EXPECT_NE(st.out.find("app.db"), std::string::npos) << st.out;

  it::Result imp =
      it::Run({it::kTenantfsBin, "import", "--config", cfg, "acme/app.db", source}, 120s);
  ASSERT_TRUE(imp.Ok()) << imp.Describe();
  EXPECT_EQ(Digest(Mnt("acme/app.db")), want);
  ExpectIntegrityOk(Mnt("acme/app.db"));

  std::string out = scratch_->WorkPath("cli-export.db");
  it::Result exp =
      it::Run({it::kTenantfsBin, "export", "--url", "http://127.0.0.1:" + std::to_string(port()),
               "--token", kToken, "acme/app.db", out},
              120s);
  ASSERT_TRUE(exp.Ok()) << exp.Describe();
  EXPECT_FALSE(it::Exists(out + ".tmp"));
  EXPECT_EQ(Digest(out), want);
  ExpectIntegrityOk(out);

  // Failures: exit 1 and one line naming the thing and the node's reason.
  std::string junk = scratch_->WorkPath("junk.bin");
  it::WriteFile(junk, "this is not a database at all\n");
  it::Result bad = it::Run({it::kTenantfsBin, "import", "--config", cfg, "acme/app.db", junk}, 60s);
  EXPECT_TRUE(bad.exited && bad.exit_code == 1) << bad.Describe();
  EXPECT_EQ(it::Trim(bad.err),
            "tenantfs: import acme/app.db: 400 not a SQLite database: file is not a database")
      << bad.Describe();
  EXPECT_EQ(Digest(Mnt("acme/app.db")), want) << "a refused import changed the database";

  it::Result noauth = it::Run({it::kTenantfsBin, "status", "--config", ClientConfig("wrong")}, 60s);
  EXPECT_TRUE(noauth.exited && noauth.exit_code == 1) << noauth.Describe();
  EXPECT_NE(noauth.err.find("tenantfs: status: 401"), std::string::npos) << noauth.Describe();

  it::Result refused_import = it::Run(
      {it::kTenantfsBin, "import", "--config", ClientConfig("wrong"), "acme/app.db", source}, 60s);
  EXPECT_TRUE(refused_import.exited && refused_import.exit_code == 1) << refused_import.Describe();
  EXPECT_NE(refused_import.err.find("401"), std::string::npos) << refused_import.Describe();

  it::Result missing = it::Run(
      {it::kTenantfsBin, "export", "--config", cfg, "acme/none.db", scratch_->WorkPath("none.db")},
      60s);
  EXPECT_TRUE(missing.exited && missing.exit_code == 1) << missing.Describe();
  EXPECT_NE(missing.err.find("tenantfs: export acme/none.db: 404"), std::string::npos)
      << missing.Describe();
  EXPECT_FALSE(it::Exists(scratch_->WorkPath("none.db.tmp")));

  it::Result usage =
      it::Run({it::kTenantfsBin, "import", "--config", cfg, "no-slash", source}, 60s);
  EXPECT_TRUE(usage.exited && usage.exit_code == 2) << usage.Describe();
  it::Result refused = it::Run({it::kTenantfsBin, "status", "--url", "http://127.0.0.1:1"}, 60s);
  EXPECT_TRUE(refused.exited && refused.exit_code == 1) << refused.Describe();
  EXPECT_NE(refused.err.find("cannot connect to http://127.0.0.1:1"), std::string::npos)
      << refused.Describe();
}

TEST_F(HttpTest, MetricsHaveEverySpecNameAndPassPromtool) {
  MakeExistingDb("acme", "app.db");
  it::SqlOk(Mnt("acme/app.db"), "INSERT INTO items(name) VALUES ('more')");
  HttpReply r = Http(port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200) << Describe(r);
  EXPECT_TRUE(HasHeader(r, "Content-Type: text/plain; version=0.0.4")) << r.headers;
  for (const char* name :
       {"tenantfs_databases", "tenantfs_databases_open", "tenantfs_database_evictions_total",
        "tenantfs_open_fds", "tenantfs_max_fds", "tenantfs_resident_memory_bytes",
        "tenantfs_fuse_requests_total", "tenantfs_fuse_request_duration_seconds",
        "tenantfs_commits_total", "tenantfs_commit_duration_seconds", "tenantfs_write_queue_depth",
        "tenantfs_retention_bytes", "tenantfs_is_primary", "tenantfs_replicas_connected",
        "tenantfs_replication_lag_seconds", "tenantfs_replication_databases_behind",
        "tenantfs_stream_bytes_total"}) {
    EXPECT_NE(r.body.find(std::string("\n# TYPE ") + name + " "), std::string::npos) << name;
  }
  EXPECT_NE(r.body.find("\ntenantfs_databases 1\n"), std::string::npos) << r.body.substr(0, 3000);
  EXPECT_NE(r.body.find("\ntenantfs_is_primary 1\n"), std::string::npos);
  EXPECT_EQ(r.body.find("\ntenantfs_commits_total 0\n"), std::string::npos)
      << "commits not counted";
  EXPECT_EQ(r.body.find("\ntenantfs_open_fds 0\n"), std::string::npos);
  // The hot paths report: FUSE writes were counted and timed, commits timed.
  EXPECT_NE(r.body.find("\ntenantfs_fuse_requests_total{op=\"write\"} "), std::string::npos);
  EXPECT_EQ(r.body.find("\ntenantfs_fuse_requests_total{op=\"write\"} 0\n"), std::string::npos);
  EXPECT_EQ(r.body.find("\ntenantfs_fuse_request_duration_seconds_count{op=\"write\"} 0\n"),
            std::string::npos);
  EXPECT_EQ(r.body.find("\ntenantfs_commit_duration_seconds_count 0\n"), std::string::npos);

  ASSERT_TRUE(it::Exists(kPromtool))
      << kPromtool << " is missing: run scripts/deps (package prometheus)";
  std::string file = scratch_->WorkPath("metrics.txt");
  it::WriteFile(file, r.body);
  it::SpawnOptions so;
  so.stdin_path = file;
  it::Result check = it::Run({kPromtool, "check", "metrics"}, 60s, so);
  EXPECT_TRUE(check.Ok()) << check.Describe();
}

TEST_F(HttpTest, ATakenPortStopsStartUpWithNothingMounted) {
  std::string mnt = scratch_->WorkPath("mnt2"), data = scratch_->WorkPath("data2");
  std::string addr = "127.0.0.1:" + std::to_string(port());
  it::Result r = it::Run(
      {it::kTenantfsBin, "mount", "--mount-dir", mnt, "--data-dir", data, "--http-addr", addr},
      30s);
  if (r.timed_out) it::LazyUnmount(mnt);
  EXPECT_TRUE(r.exited && r.exit_code == 2) << r.Describe();
  EXPECT_NE(r.err.find("http.addr " + addr + ": address in use"), std::string::npos)
      << r.Describe();
  EXPECT_TRUE(it::MountTypesAt(mnt).empty());
  ExpectStillServing();
}

TEST_F(HttpTest, ShutdownDoesNotWaitForIdleConnections) {
  // A keep-alive connection left open and a half-sent request: SIGTERM still
  // unmounts cleanly (TearDown-like checks in StopDaemon).
  int fds[2];
  for (int& fd : fds) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  std::string keep = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fds[0], keep.data(), keep.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(keep.size()));
  char buf[512];
  ASSERT_GT(::recv(fds[0], buf, sizeof buf, 0), 0);
  std::string half = "GET /v1/info HTTP/1.1\r\nHo";
  ::send(fds[1], half.data(), half.size(), MSG_NOSIGNAL);
  StopDaemon();
  for (int fd : fds) ::close(fd);
}

}  // namespace

#include "host/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace host {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string Hostname() {
  char buf[256] = {};
  EXPECT_EQ(gethostname(buf, sizeof(buf) - 1), 0);
  return buf;
}

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool Contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Parses text that must be accepted.
Config Parse(const std::string& yaml) {
  Config c;
  auto err = ParseConfig(yaml, &c);
  EXPECT_FALSE(err) << "rejected:\n" << yaml << "\nwith: " << err->message;
  return c;
}

// Parses text that must be rejected; returns the message, checked to be one line.
std::string ParseError(const std::string& yaml) {
  Config c;
  c.fuse_dir = "/sentinel";
  auto err = ParseConfig(yaml, &c);
  if (!err) {
    ADD_FAILURE() << "accepted:\n" << yaml;
    return "";
  }
  EXPECT_EQ(c.fuse_dir, "/sentinel") << "output written despite the error";
  EXPECT_FALSE(Contains(err->message, "\n")) << err->message;
  EXPECT_FALSE(err->message.empty());
  return err->message;
}

// A config that passes validation, for tests that change one thing.
Config Valid() {
  Config c;
  c.node_id = "node-a";
  c.fuse_dir = "/mnt/tenantfs";
  c.data_dir = "/var/lib/tenantfs";
  return c;
}

std::string ValidateError(const Config& c) {
  auto err = ValidateConfig(c);
  if (!err) {
    ADD_FAILURE() << "validated: fuse.dir=" << c.fuse_dir << " data.dir=" << c.data_dir
                  << " http.addr=" << c.http_addr;
    return "";
  }
  EXPECT_FALSE(Contains(err->message, "\n")) << err->message;
  return err->message;
}

// A scratch directory removed after each test.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "host_config_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& content) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  fs::path dir_;
};

// ---- Defaults -------------------------------------------------------------------

TEST(ConfigDefaults, EmptyTextGivesSpecDefaults) {
  Config c = Parse("");
  EXPECT_EQ(c.node_id, Hostname());
  EXPECT_EQ(c.fuse_dir, "/mnt/tenantfs");
  EXPECT_FALSE(c.allow_other);
  EXPECT_EQ(c.data_dir, "/var/lib/tenantfs");
  EXPECT_EQ(c.retention, milliseconds(24 * 3600 * 1000));
  EXPECT_EQ(c.retention_max_bytes, 0u);
  EXPECT_EQ(c.max_open, 256);
  EXPECT_EQ(c.idle_timeout, milliseconds(60000));
  EXPECT_EQ(c.http_addr, "127.0.0.1:20202");
  EXPECT_EQ(c.http_token, "");
  EXPECT_EQ(c.lease_type, "static");
  EXPECT_TRUE(c.lease_candidate);
  EXPECT_EQ(c.advertise_url, "http://127.0.0.1:20202");
  EXPECT_EQ(c.primary_url, "");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.log_format, "text");
  EXPECT_FALSE(ValidateConfig(c));
}

TEST(ConfigDefaults, CommentsOnlyAndEmptySectionsGiveDefaults) {
  Config expected;
  expected.node_id = Hostname();
  EXPECT_EQ(Parse("# nothing here\n"), expected);
  EXPECT_EQ(Parse("node:\n  # id: x\nfuse:\nlog:\n"), expected);
}

TEST(ConfigDefaults, NodeIdDefaultsToHostnameAndCanBeSet) {
  EXPECT_EQ(Parse("node:\n  id: node-b\n").node_id, "node-b");
  EXPECT_EQ(Parse("fuse:\n  dir: /x\n").node_id, Hostname());
  EXPECT_EQ(Parse("node:\n  id: \"\"\n").node_id, Hostname());
}

// ---- Every key ------------------------------------------------------------------

TEST(ConfigParse, EveryKeyIsRead) {
  Config c = Parse(R"(
node:
  id: node-b
fuse:
  dir: /srv/mnt
  allow-other: true
data:
  dir: /srv/data
  retention: 5m
  retention-max-bytes: 64MiB
handles:
  max-open: 1000
  idle-timeout: 250ms
http:
  addr: 0.0.0.0:8080
  token: s3cret
lease:
  type: etcd
  candidate: false
  advertise-url: http://10.0.0.2:8080
  primary-url: http://10.0.0.1:8080
log:
  level: debug
  format: json
)");
  EXPECT_EQ(c.node_id, "node-b");
  EXPECT_EQ(c.fuse_dir, "/srv/mnt");
  EXPECT_TRUE(c.allow_other);
  EXPECT_EQ(c.data_dir, "/srv/data");
  EXPECT_EQ(c.retention, milliseconds(5 * 60 * 1000));
  EXPECT_EQ(c.retention_max_bytes, 64u << 20);
  EXPECT_EQ(c.max_open, 1000);
  EXPECT_EQ(c.idle_timeout, milliseconds(250));
  EXPECT_EQ(c.http_addr, "0.0.0.0:8080");
  EXPECT_EQ(c.http_token, "s3cret");
  EXPECT_EQ(c.lease_type, "etcd");
  EXPECT_FALSE(c.lease_candidate);
  EXPECT_EQ(c.advertise_url, "http://10.0.0.2:8080");
  EXPECT_EQ(c.primary_url, "http://10.0.0.1:8080");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.log_format, "json");
  EXPECT_FALSE(ValidateConfig(c));
}

TEST(ConfigParse, FlowStyleAndQuotedValuesWork) {
  Config c = Parse("{fuse: {dir: '/a b'}, data: {dir: \"/c\"}, log: {level: \"warn\"}}");
  EXPECT_EQ(c.fuse_dir, "/a b");
  EXPECT_EQ(c.data_dir, "/c");
  EXPECT_EQ(c.log_level, "warn");
}

TEST(ConfigParse, EmptyStringValueIsEmpty) {
  EXPECT_EQ(Parse("http:\n  token:\n").http_token, "");
  EXPECT_EQ(Parse("lease:\n  primary-url: \"\"\n").primary_url, "");
}

TEST(ConfigParse, BoolsAcceptTrueAndFalse) {
  EXPECT_TRUE(Parse("fuse:\n  allow-other: true\n").allow_other);
  EXPECT_FALSE(Parse("fuse:\n  allow-other: false\n").allow_other);
  EXPECT_FALSE(Parse("lease:\n  candidate: false\n  primary-url: http://p:1\n").lease_candidate);
}

// ---- Durations and sizes --------------------------------------------------------

TEST(ConfigDuration, GoodValues) {
  EXPECT_EQ(ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(ParseDuration("30s"), milliseconds(30000));
  EXPECT_EQ(ParseDuration("5m"), milliseconds(300000));
  EXPECT_EQ(ParseDuration("24h"), milliseconds(86400000));
  EXPECT_EQ(ParseDuration("0s"), milliseconds(0));
  EXPECT_EQ(ParseDuration("1h30m"), milliseconds(5400000));
}

TEST(ConfigDuration, BadValues) {
  for (const char* bad :
       {"", "30", "0", "abc", "s", "ms", "30 s", " 30s", "30s ", "-5s", "+5s", "5sec", "5S", "1.5s",
        "5d", "5s5", "99999999999999999999h", "9999999999999999h"}) {
    EXPECT_FALSE(ParseDuration(bad)) << "'" << bad << "'";
  }
}

TEST(ConfigDuration, KeysUseDurations) {
  EXPECT_EQ(Parse("data:\n  retention: 24h\n").retention, milliseconds(86400000));
  EXPECT_EQ(Parse("handles:\n  idle-timeout: 30s\n").idle_timeout, milliseconds(30000));

  std::string msg = ParseError("data:\n  retention: 30\n");
  EXPECT_TRUE(StartsWith(msg, "data.retention: ")) << msg;
  EXPECT_TRUE(Contains(msg, "'30'")) << msg;
  EXPECT_TRUE(Contains(msg, "ms, s, m, h")) << msg;

  msg = ParseError("handles:\n  idle-timeout: soon\n");
  EXPECT_TRUE(StartsWith(msg, "handles.idle-timeout: ")) << msg;
  msg = ParseError("handles:\n  idle-timeout: [1s]\n");
  EXPECT_TRUE(StartsWith(msg, "handles.idle-timeout: ")) << msg;
  msg = ParseError("data:\n  retention:\n");
  EXPECT_TRUE(StartsWith(msg, "data.retention: ")) << msg;
}

TEST(ConfigSize, GoodValues) {
  EXPECT_EQ(ParseSize("0"), 0u);
  EXPECT_EQ(ParseSize("512"), 512u);
  EXPECT_EQ(ParseSize("10KiB"), 10u * 1024);
  EXPECT_EQ(ParseSize("64MiB"), 64u * 1024 * 1024);
  EXPECT_EQ(ParseSize("2GiB"), uint64_t{2} * 1024 * 1024 * 1024);
}

TEST(ConfigSize, BadValues) {
  for (const char* bad : {"", "KiB", "10KB", "10k", "10kib", "10 KiB", "-1", "1.5GiB", "10B",
                          "1TiB", "0x10", "99999999999999999999", "99999999999GiB"}) {
    EXPECT_FALSE(ParseSize(bad)) << "'" << bad << "'";
  }
}

TEST(ConfigSize, KeyUsesSizes) {
  EXPECT_EQ(Parse("data:\n  retention-max-bytes: 1GiB\n").retention_max_bytes, 1u << 30);
  EXPECT_EQ(Parse("data:\n  retention-max-bytes: 4096\n").retention_max_bytes, 4096u);
  std::string msg = ParseError("data:\n  retention-max-bytes: 10MB\n");
  EXPECT_TRUE(StartsWith(msg, "data.retention-max-bytes: ")) << msg;
  EXPECT_TRUE(Contains(msg, "KiB, MiB, GiB")) << msg;
}

// ---- Unknown keys and wrong types -----------------------------------------------

TEST(ConfigStrict, UnknownNestedKeyNamesDottedKey) {
  std::string msg = ParseError("data:\n  dir: /d\n  retension: 5h\n");
  EXPECT_TRUE(StartsWith(msg, "unknown key 'data.retension'")) << msg;
  EXPECT_TRUE(Contains(msg, "line 3")) << msg;
  EXPECT_TRUE(Contains(msg, "did you mean 'data.retention'")) << msg;
}

TEST(ConfigStrict, UnknownSectionNamesIt) {
  std::string msg = ParseError("fuse:\n  dir: /m\nmetrics:\n  port: 9\n");
  EXPECT_TRUE(StartsWith(msg, "unknown key 'metrics'")) << msg;
}

TEST(ConfigStrict, KeysBelongToTheirSection) {
  // `dir` exists under fuse and data, but not under http.
  std::string msg = ParseError("http:\n  dir: /x\n");
  EXPECT_TRUE(StartsWith(msg, "unknown key 'http.dir'")) << msg;
  // A flat key at the top level is not the dotted key.
  msg = ParseError("fuse.dir: /x\n");
  EXPECT_TRUE(StartsWith(msg, "unknown key 'fuse.dir'")) << msg;
}

TEST(ConfigStrict, MapWhereScalarExpected) {
  std::string msg = ParseError("data:\n  dir:\n    path: /x\n");
  EXPECT_TRUE(StartsWith(msg, "data.dir: ")) << msg;
  EXPECT_TRUE(Contains(msg, "a map")) << msg;
  msg = ParseError("http:\n  addr: [a, b]\n");
  EXPECT_TRUE(StartsWith(msg, "http.addr: ")) << msg;
  msg = ParseError("node:\n  id: {a: 1}\n");
  EXPECT_TRUE(StartsWith(msg, "node.id: ")) << msg;
}

TEST(ConfigStrict, ScalarWhereSectionExpected) {
  std::string msg = ParseError("data: /var/lib/tenantfs\n");
  EXPECT_TRUE(StartsWith(msg, "data: ")) << msg;
  msg = ParseError("log: [debug]\n");
  EXPECT_TRUE(StartsWith(msg, "log: ")) << msg;
}

TEST(ConfigStrict, TopLevelMustBeAMap) {
  ParseError("just a string\n");
  ParseError("- fuse\n- data\n");
}

TEST(ConfigStrict, BadBool) {
  std::string msg = ParseError("fuse:\n  allow-other: yes please\n");
  EXPECT_TRUE(StartsWith(msg, "fuse.allow-other: ")) << msg;
  EXPECT_TRUE(Contains(msg, "'yes please'")) << msg;
  msg = ParseError("lease:\n  candidate: 2\n");
  EXPECT_TRUE(StartsWith(msg, "lease.candidate: ")) << msg;
  msg = ParseError("lease:\n  candidate:\n");
  EXPECT_TRUE(StartsWith(msg, "lease.candidate: ")) << msg;
  msg = ParseError("fuse:\n  allow-other: {x: 1}\n");
  EXPECT_TRUE(StartsWith(msg, "fuse.allow-other: ")) << msg;
}

TEST(ConfigStrict, BadMaxOpen) {
  for (const char* bad : {"-1", "0", "abc", "1.5", "99999999999", "[1]", "", "1e3"}) {
    std::string msg = ParseError(std::string("handles:\n  max-open: ") + bad + "\n");
    EXPECT_TRUE(StartsWith(msg, "handles.max-open: ")) << bad << " -> " << msg;
  }
  EXPECT_EQ(Parse("handles:\n  max-open: 1\n").max_open, 1);
}

TEST(ConfigStrict, DuplicateKeyIsAnError) {
  std::string msg = ParseError("fuse:\n  dir: /a\n  dir: /b\n");
  EXPECT_TRUE(StartsWith(msg, "fuse.dir: ")) << msg;
  EXPECT_TRUE(Contains(msg, "duplicate")) << msg;
  msg = ParseError("fuse:\n  dir: /a\nfuse:\n  allow-other: true\n");
  EXPECT_TRUE(StartsWith(msg, "fuse: ")) << msg;
}

TEST(ConfigStrict, KeyErrorsCarryTheLine) {
  std::string msg = ParseError("fuse:\n  dir: /m\n\nhandles:\n  max-open: lots\n");
  EXPECT_TRUE(Contains(msg, "line 5")) << msg;
}

TEST(ConfigStrict, MoreThanOneDocumentIsAnError) {
  ParseError("fuse:\n  dir: /a\n---\nfuse:\n  dir: /b\n");
}

// ---- YAML syntax ----------------------------------------------------------------

TEST(ConfigSyntax, ErrorNamesTheLine) {
  std::string msg = ParseError("fuse:\n  dir: /m\ndata:\n  dir: [a, b\n");
  EXPECT_TRUE(Contains(msg, "YAML")) << msg;
  EXPECT_TRUE(Contains(msg, "line 5")) << msg;  // the end of input, where ']' was due

  msg = ParseError("fuse:\n  dir: /m\n  allow-other: a: b\n");
  EXPECT_TRUE(Contains(msg, "line 3")) << msg;
}

TEST(ConfigSyntax, UnterminatedQuoteIsAnError) {
  // yaml-cpp alone would take the rest of the file as the value.
  std::string msg = ParseError("data:\n  dir: \"/var/lib\nfuse:\n  dir: /m\n");
  EXPECT_TRUE(Contains(msg, "line 2")) << msg;
  ParseError("data:\n  dir: '/var/lib\n");
  // Escaped quotes inside closed strings are fine.
  EXPECT_EQ(Parse("node:\n  id: \"a\\\"b\"\n").node_id, "a\"b");
  EXPECT_EQ(Parse("node:\n  id: 'it''s'\n").node_id, "it's");
}

// ---- Validation: directories ----------------------------------------------------

TEST(ConfigValidate, ValidConfigPasses) { EXPECT_FALSE(ValidateConfig(Valid())); }

TEST(ConfigValidate, EmptyDirs) {
  Config c = Valid();
  c.fuse_dir = "";
  EXPECT_TRUE(StartsWith(ValidateError(c), "fuse.dir: "));
  c = Valid();
  c.data_dir = "";
  EXPECT_TRUE(StartsWith(ValidateError(c), "data.dir: "));
}

TEST(ConfigValidate, DataDirInsideMountIsRejected) {
  struct Case {
    const char* mount;
    const char* data;
  };
  const Case bad[] = {
      {"/mnt/t", "/mnt/t"},            // same dir
      {"/mnt/t/", "/mnt/t"},           // trailing slash
      {"/mnt/t", "/mnt/t/"},           //
      {"/mnt/t//", "/mnt//t"},         // doubled slashes
      {"/mnt/t", "/mnt/t/data"},       // inside
      {"/mnt/t", "/mnt/t/a/b/c/"},     // deep inside
      {"/mnt/t", "/mnt/t/../t/data"},  // ".." that comes back
      {"/mnt/./t", "/mnt/t/./data"},   // "."
      {"/mnt/x/../t", "/mnt/t/data"},  // ".." in the mount dir
      {"/", "/var/lib/tenantfs"},      // everything is inside "/"
      {"mnt", "mnt/data"},             // relative
      {"./mnt", "mnt"},                // relative, same
  };
  for (const auto& t : bad) {
    Config c = Valid();
    c.fuse_dir = t.mount;
    c.data_dir = t.data;
    std::string msg = ValidateError(c);
    EXPECT_TRUE(StartsWith(msg, "data.dir: ")) << t.mount << " / " << t.data << " -> " << msg;
    EXPECT_TRUE(Contains(msg, "fuse.dir")) << msg;
  }
}

TEST(ConfigValidate, DataDirOutsideMountIsAccepted) {
  struct Case {
    const char* mount;
    const char* data;
  };
  const Case good[] = {
      {"/mnt/t", "/mnt/tdata"},      // shares a prefix, not a directory
      {"/mnt/t", "/mnt/t/../data"},  // ".." leaves the mount
      {"/mnt/t", "/var/lib/t"},
      {"mnt", "data"},
  };
  for (const auto& t : good) {
    Config c = Valid();
    c.fuse_dir = t.mount;
    c.data_dir = t.data;
    auto err = ValidateConfig(c);
    EXPECT_FALSE(err) << t.mount << " / " << t.data << " -> " << err->message;
  }
}

TEST(ConfigValidate, MountInsideDataDirIsRejected) {
  Config c = Valid();
  c.data_dir = "/var/lib/tenantfs";
  c.fuse_dir = "/var/lib/tenantfs/mnt";
  std::string msg = ValidateError(c);
  EXPECT_TRUE(StartsWith(msg, "fuse.dir: ")) << msg;
}

TEST_F(ConfigFileTest, DataDirInsideMountThroughSymlinkIsRejected) {
  fs::create_directories(dir_ / "real-mount");
  fs::create_symlink(dir_ / "real-mount", dir_ / "link");
  Config c = Valid();
  c.fuse_dir = (dir_ / "real-mount").string();
  c.data_dir = (dir_ / "link" / "data").string();  // need not exist yet
  std::string msg = ValidateError(c);
  EXPECT_TRUE(StartsWith(msg, "data.dir: ")) << msg;
  EXPECT_TRUE(Contains(msg, "resolves to")) << msg;

  // And the other way round: the mount given through the link.
  c.fuse_dir = (dir_ / "link").string();
  c.data_dir = (dir_ / "real-mount").string();
  EXPECT_TRUE(StartsWith(ValidateError(c), "data.dir: "));

  // A symlinked data dir that points elsewhere is fine.
  fs::create_directories(dir_ / "elsewhere");
  fs::create_symlink(dir_ / "elsewhere", dir_ / "real-mount-data");
  c.fuse_dir = (dir_ / "real-mount").string();
  c.data_dir = (dir_ / "real-mount-data").string();
  auto err = ValidateConfig(c);
  EXPECT_FALSE(err) << err->message;
}

// ---- Validation: lease, http, log ------------------------------------------------

TEST(ConfigValidate, ReplicaWithoutPrimaryUrl) {
  Config c = Valid();
  c.lease_candidate = false;
  auto err = ValidateConfig(c);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "lease.primary-url: a replica needs the primary's URL");

  c.primary_url = "http://10.0.0.1:20202";
  EXPECT_FALSE(ValidateConfig(c));

  // With etcd the primary is discovered, not configured.
  c.primary_url = "";
  c.lease_type = "etcd";
  EXPECT_FALSE(ValidateConfig(c));
}

TEST(ConfigValidate, UrlsMustBeHttp) {
  Config c = Valid();
  c.primary_url = "10.0.0.1:20202";
  EXPECT_TRUE(StartsWith(ValidateError(c), "lease.primary-url: "));
  c = Valid();
  c.advertise_url = "";
  EXPECT_TRUE(StartsWith(ValidateError(c), "lease.advertise-url: "));
  c.advertise_url = "https://node-a.example:443";
  EXPECT_FALSE(ValidateConfig(c));
}

TEST(ConfigValidate, LeaseType) {
  Config c = Valid();
  c.lease_type = "consul";
  std::string msg = ValidateError(c);
  EXPECT_TRUE(StartsWith(msg, "lease.type: ")) << msg;
  EXPECT_TRUE(Contains(msg, "consul")) << msg;
}

TEST(ConfigValidate, HttpAddr) {
  for (const char* good :
       {"127.0.0.1:20202", "0.0.0.0:1", "localhost:65535", "[::1]:8080", "node-a.example:80"}) {
    Config c = Valid();
    c.http_addr = good;
    auto err = ValidateConfig(c);
    EXPECT_FALSE(err) << good << " -> " << err->message;
  }
  for (const char* bad : {"", "foo", "20202", ":8080", "127.0.0.1:", "127.0.0.1:0",
                          "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http", "127.0.0.1:080808",
                          "::1:8080", "[::1]8080", "[::1]:", "http://127.0.0.1:80"}) {
    Config c = Valid();
    c.http_addr = bad;
    std::string msg = ValidateError(c);
    EXPECT_TRUE(StartsWith(msg, "http.addr: ")) << "'" << bad << "' -> " << msg;
  }
}

TEST(ConfigValidate, LogEnums) {
  for (const char* level : {"debug", "info", "warn", "error"}) {
    Config c = Valid();
    c.log_level = level;
    EXPECT_FALSE(ValidateConfig(c)) << level;
  }
  Config c = Valid();
  c.log_level = "verbose";
  EXPECT_TRUE(StartsWith(ValidateError(c), "log.level: "));
  c.log_level = "INFO";
  EXPECT_TRUE(StartsWith(ValidateError(c), "log.level: "));
  c = Valid();
  c.log_format = "json";
  EXPECT_FALSE(ValidateConfig(c));
  c.log_format = "xml";
  EXPECT_TRUE(StartsWith(ValidateError(c), "log.format: "));
}

TEST(ConfigValidate, MaxOpenAndNodeId) {
  Config c = Valid();
  c.max_open = 0;
  EXPECT_TRUE(StartsWith(ValidateError(c), "handles.max-open: "));
  c = Valid();
  c.node_id = "";
  EXPECT_TRUE(StartsWith(ValidateError(c), "node.id: "));
}

// ---- Token file -----------------------------------------------------------------

TEST_F(ConfigFileTest, TokenFileIsReadAndTrimmed) {
  std::string path = Write("token", "s3cret\n");
  EXPECT_EQ(Parse("http:\n  token-file: " + path + "\n").http_token, "s3cret");
  path = Write("token-crlf", "s3cret\r\n");
  EXPECT_EQ(Parse("http:\n  token-file: " + path + "\n").http_token, "s3cret");
  path = Write("token-bare", "s3cret");
  EXPECT_EQ(Parse("http:\n  token-file: " + path + "\n").http_token, "s3cret");
}

TEST_F(ConfigFileTest, TokenFileErrorsNameTheKey) {
  std::string missing = (dir_ / "missing").string();
  std::string msg = ParseError("http:\n  token-file: " + missing + "\n");
  EXPECT_TRUE(StartsWith(msg, "http.token-file: ")) << msg;
  EXPECT_TRUE(Contains(msg, missing)) << msg;

  msg = ParseError("http:\n  token-file: " + dir_.string() + "\n");  // a directory
  EXPECT_TRUE(StartsWith(msg, "http.token-file: ")) << msg;

  msg = ParseError("http:\n  token-file: " + Write("empty", "\n") + "\n");
  EXPECT_TRUE(StartsWith(msg, "http.token-file: ")) << msg;
  EXPECT_TRUE(Contains(msg, "empty")) << msg;

  msg = ParseError("http:\n  token-file: " + Write("two-lines", "abc\ndef\n") + "\n");
  EXPECT_TRUE(StartsWith(msg, "http.token-file: ")) << msg;

  msg = ParseError("http:\n  token: a\n  token-file: " + Write("t", "b\n") + "\n");
  EXPECT_TRUE(StartsWith(msg, "http.token-file: ")) << msg;
  EXPECT_TRUE(Contains(msg, "not both")) << msg;
}

TEST(ConfigToken, TokenWithWhitespaceIsRejected) {
  std::string msg = ParseError("http:\n  token: \"two words\"\n");
  EXPECT_TRUE(StartsWith(msg, "http.token: ")) << msg;
}

// ---- LoadConfig -----------------------------------------------------------------

TEST_F(ConfigFileTest, LoadConfigReadsFileAndAppliesOverrides) {
  std::string path = Write("c.yaml",
                           "fuse:\n  dir: /srv/mnt\ndata:\n  dir: /srv/data\n"
                           "http:\n  addr: 127.0.0.1:1234\n");
  Config c;
  auto err = LoadConfig(path, {}, &c);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(c.fuse_dir, "/srv/mnt");
  EXPECT_EQ(c.data_dir, "/srv/data");
  EXPECT_EQ(c.http_addr, "127.0.0.1:1234");

  Overrides o;
  o.mount_dir = "/other/mnt";
  o.data_dir = "/other/data";
  o.http_addr = "0.0.0.0:9999";
  err = LoadConfig(path, o, &c);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(c.fuse_dir, "/other/mnt");
  EXPECT_EQ(c.data_dir, "/other/data");
  EXPECT_EQ(c.http_addr, "0.0.0.0:9999");
}

TEST_F(ConfigFileTest, LoadConfigValidatesAfterOverrides) {
  std::string path = Write("c.yaml", "fuse:\n  dir: /srv/mnt\ndata:\n  dir: /srv/data\n");
  Overrides o;
  o.data_dir = "/srv/mnt/data";
  Config c;
  c.fuse_dir = "/sentinel";
  auto err = LoadConfig(path, o, &c);
  ASSERT_TRUE(err);
  EXPECT_TRUE(StartsWith(err->message, "data.dir: ")) << err->message;
  EXPECT_EQ(c.fuse_dir, "/sentinel");

  o = {};
  o.http_addr = "nonsense";
  err = LoadConfig(path, o, &c);
  ASSERT_TRUE(err);
  EXPECT_TRUE(StartsWith(err->message, "http.addr: ")) << err->message;
}

TEST_F(ConfigFileTest, LoadConfigValidatesEnumsAndCombinations) {
  Config c;
  auto err = LoadConfig(Write("a.yaml", "log:\n  level: loud\n"), {}, &c);
  ASSERT_TRUE(err);
  EXPECT_TRUE(StartsWith(err->message, "log.level: ")) << err->message;

  err = LoadConfig(Write("b.yaml", "lease:\n  candidate: false\n"), {}, &c);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "lease.primary-url: a replica needs the primary's URL");

  err = LoadConfig(Write("c.yaml", "fuse:\n  dir: \"\"\n"), {}, &c);
  ASSERT_TRUE(err);
  EXPECT_TRUE(StartsWith(err->message, "fuse.dir: ")) << err->message;
}

TEST_F(ConfigFileTest, LoadConfigMissingFile) {
  Config c;
  auto err = LoadConfig((dir_ / "nope.yaml").string(), {}, &c);
  ASSERT_TRUE(err);
  EXPECT_TRUE(Contains(err->message, "cannot read")) << err->message;
  EXPECT_FALSE(Contains(err->message, "\n"));
}

TEST(ConfigLoad, EmptyPathMeansDefaults) {
  Config c;
  auto err = LoadConfig("", {}, &c);
  ASSERT_FALSE(err) << err->message;
  Config expected;
  expected.node_id = Hostname();
  EXPECT_EQ(c, expected);
}

// ---- Default YAML ---------------------------------------------------------------

TEST(ConfigDefaultYaml, RoundTripsToTheDefaults) {
  std::string yaml = DefaultConfigYaml();
  Config c = Parse(yaml);
  Config expected;
  expected.node_id = Hostname();
  EXPECT_EQ(c, expected) << yaml;
  EXPECT_FALSE(ValidateConfig(c));
}

TEST(ConfigDefaultYaml, ShowsEveryKeyWithComments) {
  std::string yaml = DefaultConfigYaml();
  EXPECT_TRUE(Contains(yaml, "#"));
  const std::vector<std::pair<std::string, std::vector<std::string>>> sections = {
      {"node", {"id"}},
      {"fuse", {"dir", "allow-other"}},
      {"data", {"dir", "retention", "retention-max-bytes"}},
      {"handles", {"max-open", "idle-timeout"}},
      {"http", {"addr", "token", "token-file"}},
      {"lease", {"type", "candidate", "advertise-url", "primary-url"}},
      {"log", {"level", "format"}},
  };
  for (const auto& [section, keys] : sections) {
    size_t at = yaml.find("\n" + section + ":\n");
    ASSERT_NE(at, std::string::npos) << section;
    // Each key appears after its section header and before the next section.
    size_t next = std::string::npos;
    for (const auto& [other, unused] : sections) {
      size_t o = yaml.find("\n" + other + ":\n");
      if (o > at && o < next) next = o;
    }
    std::string body = yaml.substr(at, next == std::string::npos ? std::string::npos : next - at);
    for (const auto& key : keys) {
      EXPECT_TRUE(Contains(body, " " + key + ": ")) << section << "." << key << " in\n" << body;
    }
  }
}

TEST(ConfigDefaultYaml, EditedDefaultStillParses) {
  // The file is meant to be copied and edited: uncommenting the examples works.
  std::string yaml = DefaultConfigYaml();
  size_t id = yaml.find("# id: ");
  ASSERT_NE(id, std::string::npos);
  yaml.erase(id, 2);
  EXPECT_EQ(Parse(yaml).node_id, "node-a");
}

}  // namespace
}  // namespace host

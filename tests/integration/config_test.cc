// Start-up refusals (SPEC "Command line", "Configuration"): a bad config or an already
// mounted mount dir stops `tenantfs mount` with exit 2 and one stderr line naming the
// offending key or thing, and nothing gets mounted.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "harness.h"

namespace {

using namespace std::chrono_literals;

struct BadConfig {
  const char* name;
  std::string yaml;       // "@M@" is replaced with the scratch mount dir
  std::string must_name;  // the key (or thing) the one-line message must name
  bool pass_dirs = true;  // pass --mount-dir/--data-dir (else only the config's dirs count)
};

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "integration tests mount FUSE and need root";
    scratch_ = std::make_unique<it::Scratch>();
  }
  void TearDown() override {
    EXPECT_TRUE(it::MountTypesAt(scratch_->mnt()).empty())
        << "something is mounted at " << scratch_->mnt() << " after a refused start";
    scratch_.reset();
  }

  // Runs `tenantfs mount ...`, bounded: a daemon that wrongly starts serving is killed
  // at the deadline (and its mount removed by the Scratch teardown).
  it::Result Mount(const std::vector<std::string>& args) {
    std::vector<std::string> argv{it::kTenantfsBin, "mount"};
    argv.insert(argv.end(), args.begin(), args.end());
    it::Result r = it::Run(argv, 15s);
    if (r.timed_out) it::LazyUnmount(scratch_->mnt());
    return r;
  }

  // Exit 2, exactly one non-empty stderr line, naming `name`.
  void ExpectRefused(const it::Result& r, const std::string& name, const std::string& what) {
    EXPECT_TRUE(r.exited && r.exit_code == 2)
        << what << ": expected exit status 2 (usage or config error)" << r.Describe();
    std::vector<std::string> lines;
    for (const std::string& l : it::SplitLines(r.err)) {
      if (!it::Trim(l).empty()) lines.push_back(l);
    }
    EXPECT_EQ(lines.size(), 1u) << what << ": expected one stderr line" << r.Describe();
    EXPECT_NE(r.err.find(name), std::string::npos)
        << what << ": stderr does not name '" << name << "'" << r.Describe();
  }

  std::unique_ptr<it::Scratch> scratch_;
};

class BadConfigTest : public ConfigTest, public ::testing::WithParamInterface<BadConfig> {};

TEST_P(BadConfigTest, RefusedWithExit2AndOneLineNamingTheKey) {
  const BadConfig& c = GetParam();
  std::string yaml = c.yaml;
  for (size_t p; (p = yaml.find("@M@")) != std::string::npos;) yaml.replace(p, 3, scratch_->mnt());
  std::string path = scratch_->WorkPath("tenantfs.yaml");
  it::WriteFile(path, yaml);
  std::string must_name = c.must_name == "@CONFIG@" ? path : c.must_name;
  std::vector<std::string> args{"--config", path, "--http-addr",
                                "127.0.0.1:" + std::to_string(it::FreePort())};
  if (c.pass_dirs) {
    args.insert(args.end(), {"--mount-dir", scratch_->mnt(), "--data-dir", scratch_->data()});
  }
  ExpectRefused(Mount(args), must_name, std::string(c.name) + " (config:\n" + yaml + ")");
}

INSTANTIATE_TEST_SUITE_P(
    Configs, BadConfigTest,
    ::testing::Values(
        BadConfig{"unknown_key", "node:\n  id: n1\n  colour: blue\n", "colour"},
        BadConfig{"unknown_section", "bogus:\n  x: 1\n", "bogus"},
        BadConfig{"bad_duration", "data:\n  retention: 10 parsecs\n", "retention"},
        BadConfig{"bad_idle_timeout", "handles:\n  idle-timeout: soon\n", "idle-timeout"},
        BadConfig{"bad_size", "data:\n  retention-max-bytes: 12 apples\n", "retention-max-bytes"},
        BadConfig{"wrong_type", "handles:\n  max-open: lots\n", "max-open"},
        BadConfig{"data_dir_inside_mount", "fuse:\n  dir: @M@\ndata:\n  dir: @M@/data\n",
                  "data.dir", false},
        BadConfig{"replica_without_primary_url", "lease:\n  type: static\n  candidate: false\n",
                  "primary-url"},
        BadConfig{"malformed_yaml", "node: [unclosed\n  id: x\n", "@CONFIG@"}),
    [](const ::testing::TestParamInfo<BadConfig>& i) { return std::string(i.param.name); });

TEST_F(ConfigTest, DataDirFlagInsideMountDirIsRefused) {
  it::Result r = Mount({"--mount-dir", scratch_->mnt(), "--data-dir", scratch_->mnt() + "/data",
                        "--http-addr", "127.0.0.1:" + std::to_string(it::FreePort())});
  ExpectRefused(r, "data", "--data-dir inside --mount-dir");
}

TEST_F(ConfigTest, UnknownFlagIsAUsageError) {
  it::Result r =
      Mount({"--mount-dir", scratch_->mnt(), "--data-dir", scratch_->data(), "--no-such-flag"});
  ExpectRefused(r, "--no-such-flag", "unknown flag");
}

TEST_F(ConfigTest, MissingConfigFileIsRefused) {
  std::string path = scratch_->WorkPath("does-not-exist.yaml");
  it::Result r =
      Mount({"--config", path, "--mount-dir", scratch_->mnt(), "--data-dir", scratch_->data()});
  ExpectRefused(r, path, "missing config file");
}

TEST_F(ConfigTest, MountDirAlreadyServedByAnotherTenantfsIsRefused) {
  it::Daemon first(scratch_->mnt(), scratch_->data());
  std::string why;
  ASSERT_TRUE(first.Start(&why)) << why;
  ASSERT_EQ(mkdir((scratch_->mnt() + "/acme").c_str(), 0755), 0) << it::ErrnoName(errno);

  std::string other_data = scratch_->WorkPath("data2");
  ASSERT_EQ(mkdir(other_data.c_str(), 0755), 0);
  it::Result r = Mount({"--mount-dir", scratch_->mnt(), "--data-dir", other_data, "--http-addr",
                        "127.0.0.1:" + std::to_string(it::FreePort())});
  // (A wrongly started second daemon was killed at the deadline; its mount, if any,
  // was detached above, which also detached the first one: the checks below then fail.)
  ExpectRefused(r, scratch_->mnt(), "second tenantfs on a served mount dir");

  // The first node is untouched and still serving.
  EXPECT_TRUE(first.Running()) << first.Describe();
  std::vector<std::string> types = it::MountTypesAt(scratch_->mnt());
  EXPECT_EQ(it::Join(types, ","), "fuse.tenantfs") << "expected exactly the first mount";
  auto listing = it::ListDir(scratch_->mnt());
  ASSERT_TRUE(listing) << it::ErrnoName(errno);
  EXPECT_EQ(it::Join(*listing, " "), "acme");
  EXPECT_EQ(it::SqlOk(scratch_->mnt() + "/acme/app.db", "CREATE TABLE t(x); SELECT 'ok';"), "ok");

  it::Result stop = first.Stop(60s);
  EXPECT_TRUE(stop.Ok()) << "first tenantfs did not exit 0 on SIGTERM" << stop.Describe();
  if (HasFailure()) std::cerr << first.Describe();
}

}  // namespace

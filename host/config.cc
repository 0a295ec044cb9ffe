#include "host/config.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string_view>
#include <vector>

#include "metrics/log.h"
#include "yaml-cpp/yaml.h"

namespace host {
namespace {

namespace fs = std::filesystem;

// ---- Scalars -------------------------------------------------------------------

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal digits -> value; false on overflow or non-digits.
bool ParseUnsigned(std::string_view s, uint64_t* out) {
  if (!AllDigits(s)) return false;
  uint64_t v = 0;
  for (char c : s) {
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool CheckedMultiply(uint64_t a, uint64_t b, uint64_t* out) {
  if (b != 0 && a > std::numeric_limits<uint64_t>::max() / b) return false;
  *out = a * b;
  return true;
}

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string FormatSize(uint64_t bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = kKiB * 1024, kGiB = kMiB * 1024;
  if (bytes != 0 && bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "GiB";
  if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
  if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  return std::to_string(bytes);
}

// A string as a YAML scalar: bare when that reads back unchanged, else double-quoted.
std::string YamlString(const std::string& s) {
  bool bare = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
           c == '.' || c == '_' || c == '-' || c == ':';
  });
  if (bare && (s[0] == '-' || s[0] == ':')) bare = false;
  if (bare) {
    // Words YAML would read as another type (true, null, ...) must stay strings.
    bool as_bool;
    if (YAML::convert<bool>::decode(YAML::Node(s), as_bool) || s == "null" || s == "Null" ||
        s == "NULL" || s == "~" || AllDigits(s)) {
      bare = false;
    }
  }
  if (bare) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// ---- YAML nodes -----------------------------------------------------------------

std::string LineSuffix(const YAML::Node& node) {
  YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return "";
  return " (line " + std::to_string(mark.line + 1) + ")";
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    default:
      return "nothing";
  }
}

// A key-level failure; turned into "<key>: <what> (line N)".
struct FieldError {
  std::string what;
};
using FieldResult = std::optional<FieldError>;

FieldResult Expected(std::string_view kind, const YAML::Node& node) {
  return FieldError{"expected " + std::string(kind) + ", got " + Describe(node)};
}

// Strings: a missing value (`token:`) is the empty string.
FieldResult ReadString(const YAML::Node& node, std::string* out) {
  if (node.IsNull()) {
    out->clear();
    return std::nullopt;
  }
  if (!node.IsScalar()) return Expected("a string", node);
  *out = node.Scalar();
  return std::nullopt;
}

FieldResult ReadBool(const YAML::Node& node, bool* out) {
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, *out)) {
    return Expected("true or false", node);
  }
  return std::nullopt;
}

FieldResult ReadPositiveInt(const YAML::Node& node, int* out) {
  uint64_t v;
  if (!node.IsScalar() || !ParseUnsigned(node.Scalar(), &v)) {
    return Expected("a positive integer", node);
  }
  if (v == 0) return FieldError{"must be at least 1, got 0"};
  if (v > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    return FieldError{"too large: " + node.Scalar()};
  }
  *out = static_cast<int>(v);
  return std::nullopt;
}

FieldResult ReadDuration(const YAML::Node& node, std::chrono::milliseconds* out) {
  if (!node.IsScalar()) return Expected("a duration such as 30s", node);
  auto d = ParseDuration(node.Scalar());
  if (!d) return FieldError{"bad duration '" + node.Scalar() + "' (use ms, s, m, h, e.g. 30s)"};
  *out = *d;
  return std::nullopt;
}

FieldResult ReadSize(const YAML::Node& node, uint64_t* out) {
  if (!node.IsScalar()) return Expected("a size such as 64MiB", node);
  auto s = ParseSize(node.Scalar());
  if (!s) return FieldError{"bad size '" + node.Scalar() + "' (use bytes, KiB, MiB, GiB)"};
  *out = *s;
  return std::nullopt;
}

// Where http.token-file points; resolved once all keys are read.
struct ParseState {
  std::string token_file;
  bool token_set = false;
  bool token_file_set = false;
  YAML::Node token_file_node;
};

struct Field {
  std::string_view section;
  std::string_view key;
  FieldResult (*apply)(const YAML::Node& value, Config* c, ParseState* state);
};

// The schema: every key SPEC.md defines, and nothing else.
const Field kFields[] = {
    {"node", "id",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->node_id); }},
    {"fuse", "dir",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->fuse_dir); }},
    {"fuse", "allow-other",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadBool(v, &c->allow_other); }},
    {"data", "dir",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->data_dir); }},
    {"data", "retention",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadDuration(v, &c->retention); }},
    {"data", "retention-max-bytes",
     [](const YAML::Node& v, Config* c, ParseState*) {
       return ReadSize(v, &c->retention_max_bytes);
     }},
    {"handles", "max-open",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadPositiveInt(v, &c->max_open); }},
    {"handles", "idle-timeout",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadDuration(v, &c->idle_timeout); }},
    {"http", "addr",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->http_addr); }},
    {"http", "token",
     [](const YAML::Node& v, Config* c, ParseState* s) {
       auto err = ReadString(v, &c->http_token);
       s->token_set = !c->http_token.empty();
       return err;
     }},
    {"http", "token-file",
     [](const YAML::Node& v, Config*, ParseState* s) {
       auto err = ReadString(v, &s->token_file);
       s->token_file_set = !s->token_file.empty();
       s->token_file_node = v;
       return err;
     }},
    {"lease", "type",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->lease_type); }},
    {"lease", "candidate",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadBool(v, &c->lease_candidate); }},
    {"lease", "advertise-url",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->advertise_url); }},
    {"lease", "primary-url",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->primary_url); }},
    {"log", "level",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->log_level); }},
    {"log", "format",
     [](const YAML::Node& v, Config* c, ParseState*) { return ReadString(v, &c->log_format); }},
};

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown key 'data.retension' (line 4; did you mean 'data.retention'?)"
ConfigError UnknownKey(const std::string& dotted, const YAML::Node& key_node,
                       const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 3;  // suggest only near misses
  for (const auto& c : candidates) {
    size_t d = EditDistance(dotted, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  YAML::Mark mark = key_node.Mark();
  std::string msg = "unknown key '" + dotted + "'";
  std::string note;
  if (!mark.is_null() && mark.line >= 0) note = "line " + std::to_string(mark.line + 1);
  if (!best.empty())
    note += (note.empty() ? "" : "; ") + std::string("did you mean '") + best + "'?";
  if (!note.empty()) msg += " (" + note + ")";
  return ConfigError{msg};
}

std::vector<std::string> KnownSections() {
  std::vector<std::string> out;
  for (const auto& f : kFields) {
    if (out.empty() || out.back() != f.section) out.emplace_back(f.section);
  }
  return out;
}

std::vector<std::string> KnownKeys(std::string_view section) {
  std::vector<std::string> out;
  for (const auto& f : kFields) {
    if (f.section == section) out.push_back(std::string(f.section) + "." + std::string(f.key));
  }
  return out;
}

// Bearer tokens go into an HTTP header: no whitespace or control characters.
bool TokenCharsOk(const std::string& token) {
  return std::none_of(token.begin(), token.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7F;
  });
}

// Reads a whole file; on failure returns strerror text.
std::optional<std::string> ReadFile(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return std::string(std::strerror(errno));
  std::string data;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  int read_errno = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (read_errno != 0) return std::string(std::strerror(read_errno));
  *out = std::move(data);
  return std::nullopt;
}

std::optional<ConfigError> ResolveToken(const ParseState& state, Config* c) {
  if (state.token_set && state.token_file_set) {
    return ConfigError{"http.token-file: set either http.token or http.token-file, not both" +
                       LineSuffix(state.token_file_node)};
  }
  if (state.token_file_set) {
    std::string data;
    if (auto err = ReadFile(state.token_file, &data)) {
      return ConfigError{"http.token-file: cannot read '" + state.token_file + "': " + *err};
    }
    while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.pop_back();
    if (data.empty()) {
      return ConfigError{"http.token-file: '" + state.token_file + "' is empty"};
    }
    if (!TokenCharsOk(data)) {
      return ConfigError{"http.token-file: the token in '" + state.token_file +
                         "' contains whitespace or control characters"};
    }
    c->http_token = std::move(data);
  } else if (!TokenCharsOk(c->http_token)) {
    return ConfigError{"http.token: contains whitespace or control characters"};
  }
  return std::nullopt;
}

std::optional<ConfigError> ApplyDocument(const YAML::Node& root, Config* c) {
  if (root.IsNull()) return std::nullopt;  // empty file or comments only: defaults
  if (!root.IsMap()) {
    return ConfigError{"expected a map of sections (node, fuse, data, ...) at the top level, got " +
                       Describe(root) + LineSuffix(root)};
  }
  ParseState state;
  std::set<std::string> seen;
  for (const auto& section_it : root) {
    const YAML::Node& section_key = section_it.first;
    const YAML::Node& section = section_it.second;
    if (!section_key.IsScalar()) {
      return ConfigError{"expected a section name at the top level, got " + Describe(section_key) +
                         LineSuffix(section_key)};
    }
    const std::string& name = section_key.Scalar();
    auto known = KnownSections();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return UnknownKey(name, section_key, known);
    }
    if (!seen.insert(name).second) {
      return ConfigError{name + ": duplicate section" + LineSuffix(section_key)};
    }
    if (section.IsNull()) continue;  // `node:` with every key commented out
    if (!section.IsMap()) {
      return ConfigError{name + ": expected a map of keys, got " + Describe(section) +
                         LineSuffix(section)};
    }
    for (const auto& key_it : section) {
      const YAML::Node& key_node = key_it.first;
      if (!key_node.IsScalar()) {
        return ConfigError{name + ": expected a key name, got " + Describe(key_node) +
                           LineSuffix(key_node)};
      }
      std::string dotted = name + "." + key_node.Scalar();
      const Field* field = nullptr;
      for (const auto& f : kFields) {
        if (f.section == name && f.key == key_node.Scalar()) field = &f;
      }
      if (field == nullptr) return UnknownKey(dotted, key_node, KnownKeys(name));
      if (!seen.insert(dotted).second) {
        return ConfigError{dotted + ": duplicate key" + LineSuffix(key_node)};
      }
      if (auto err = field->apply(key_it.second, c, &state)) {
        return ConfigError{dotted + ": " + err->what + LineSuffix(key_it.second)};
      }
    }
  }
  return ResolveToken(state, c);
}

// yaml-cpp 0.7 accepts a quoted scalar that runs to the end of the input (the
// rest of the file silently becomes the value), so look for the closing quote.
bool QuoteClosed(const std::string& text, size_t pos) {
  const char quote = text[pos];
  for (size_t i = pos + 1; i < text.size(); ++i) {
    if (quote == '"' && text[i] == '\\') {
      ++i;
    } else if (text[i] == quote) {
      if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i;  // '' is an escaped single quote
      } else {
        return true;
      }
    }
  }
  return false;
}

std::optional<ConfigError> CheckQuotes(const std::string& text, const YAML::Node& node) {
  if (node.IsScalar()) {
    YAML::Mark mark = node.Mark();
    if (mark.is_null() || mark.pos < 0 || static_cast<size_t>(mark.pos) >= text.size()) {
      return std::nullopt;
    }
    char c = text[static_cast<size_t>(mark.pos)];
    if ((c == '"' || c == '\'') && !QuoteClosed(text, static_cast<size_t>(mark.pos))) {
      return ConfigError{"YAML syntax error at line " + std::to_string(mark.line + 1) +
                         ", column " + std::to_string(mark.column + 1) +
                         ": quoted string without a closing quote"};
    }
  } else if (node.IsMap()) {
    for (const auto& it : node) {
      if (auto err = CheckQuotes(text, it.first)) return err;
      if (auto err = CheckQuotes(text, it.second)) return err;
    }
  } else if (node.IsSequence()) {
    for (const auto& it : node) {
      if (auto err = CheckQuotes(text, it)) return err;
    }
  }
  return std::nullopt;
}

// ---- Paths ----------------------------------------------------------------------

fs::path StripTrailingSeparator(fs::path p) {
  // lexically_normal keeps "a/b/" as "a/b/" (an empty last element).
  while (!p.has_filename() && p.has_relative_path()) p = p.parent_path();
  return p;
}

fs::path LexicalAbsolute(const std::string& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  return StripTrailingSeparator(abs.lexically_normal());
}

// Follows symlinks through the part of the path that exists.
fs::path Resolved(const fs::path& lexical) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(lexical, ec);
  if (ec) return lexical;
  return StripTrailingSeparator(r.lexically_normal());
}

bool SameOrInside(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

std::optional<ConfigError> CheckDirs(const Config& c) {
  if (c.fuse_dir.empty()) return ConfigError{"fuse.dir: must not be empty"};
  if (c.data_dir.empty()) return ConfigError{"data.dir: must not be empty"};
  fs::path mount = LexicalAbsolute(c.fuse_dir), data = LexicalAbsolute(c.data_dir);
  fs::path real_mount = Resolved(mount), real_data = Resolved(data);
  auto resolves = [](const std::string& given, const fs::path& real) {
    return "'" + given + "' (resolves to '" + real.string() + "')";
  };
  bool lexical = true;
  fs::path m = mount, d = data;
  if (!SameOrInside(d, m) && !SameOrInside(m, d)) {
    lexical = false;
    m = real_mount;
    d = real_data;
  }
  std::string data_name = lexical ? "'" + c.data_dir + "'" : resolves(c.data_dir, real_data);
  std::string mount_name = lexical ? "'" + c.fuse_dir + "'" : resolves(c.fuse_dir, real_mount);
  if (d == m) {
    return ConfigError{"data.dir: " + data_name + " is the same directory as fuse.dir " +
                       mount_name + "; the data dir must be outside the mount"};
  }
  if (SameOrInside(d, m)) {
    return ConfigError{"data.dir: " + data_name + " is inside fuse.dir " + mount_name +
                       "; the data dir must be outside the mount"};
  }
  // The store walks the data dir; a mount inside it would make tenantfs call into
  // its own FUSE file system.
  if (SameOrInside(m, d)) {
    return ConfigError{"fuse.dir: " + mount_name + " is inside data.dir " + data_name +
                       "; the mount must be outside the data dir"};
  }
  return std::nullopt;
}

std::optional<ConfigError> CheckHttpAddr(const std::string& addr) {
  auto bad = [&] {
    return ConfigError{"http.addr: expected HOST:PORT (e.g. 127.0.0.1:20202), got '" + addr + "'"};
  };
  std::string host, port;
  if (!addr.empty() && addr[0] == '[') {  // [::1]:20202
    size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return bad();
    }
    host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string::npos) return bad();
    host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad();  // IPv6 needs brackets
  }
  if (host.empty() || host.find_first_of(" \t/") != std::string::npos) return bad();
  uint64_t p;
  if (port.size() > 5 || !ParseUnsigned(port, &p) || p < 1 || p > 65535) {
    return ConfigError{"http.addr: port must be 1..65535, got '" + port + "' in '" + addr + "'"};
  }
  return std::nullopt;
}

bool IsHttpUrl(const std::string& url) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.size() > scheme.size() && url.compare(0, scheme.size(), scheme) == 0) {
      return url.find_first_of(" \t\r\n") == std::string::npos;
    }
  }
  return false;
}

}  // namespace

std::optional<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  // One or more <digits><unit> groups ("90s", "1h30m"); a bare number is ambiguous.
  if (text.empty()) return std::nullopt;
  uint64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    uint64_t value;
    if (!ParseUnsigned(std::string_view(text).substr(start, i - start), &value)) {
      return std::nullopt;
    }
    start = i;
    while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') ++i;
    std::string_view unit = std::string_view(text).substr(start, i - start);
    uint64_t factor;
    if (unit == "ms") {
      factor = 1;
    } else if (unit == "s") {
      factor = 1000;
    } else if (unit == "m") {
      factor = 60'000;
    } else if (unit == "h") {
      factor = 3'600'000;
    } else {
      return std::nullopt;
    }
    uint64_t ms;
    if (!CheckedMultiply(value, factor, &ms) ||
        ms > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - total) {
      return std::nullopt;
    }
    total += ms;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(total));
}

std::optional<uint64_t> ParseSize(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  uint64_t value;
  if (!ParseUnsigned(std::string_view(text).substr(0, digits), &value)) return std::nullopt;
  std::string_view unit = std::string_view(text).substr(digits);
  uint64_t factor;
  if (unit.empty()) {
    factor = 1;
  } else if (unit == "KiB") {
    factor = uint64_t{1} << 10;
  } else if (unit == "MiB") {
    factor = uint64_t{1} << 20;
  } else if (unit == "GiB") {
    factor = uint64_t{1} << 30;
  } else {
    return std::nullopt;
  }
  uint64_t bytes;
  if (!CheckedMultiply(value, factor, &bytes)) return std::nullopt;
  return bytes;
}

std::optional<ConfigError> ParseConfig(const std::string& yaml_text, Config* out) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::Exception& e) {
    std::string where;
    if (!e.mark.is_null()) {
      where = " at line " + std::to_string(e.mark.line + 1) + ", column " +
              std::to_string(e.mark.column + 1);
    }
    return ConfigError{"YAML syntax error" + where + ": " + e.msg};
  }
  if (docs.size() > 1) {
    return ConfigError{"expected one YAML document, found " + std::to_string(docs.size())};
  }
  Config c;
  try {
    if (!docs.empty()) {
      if (auto err = CheckQuotes(yaml_text, docs[0])) return err;
      if (auto err = ApplyDocument(docs[0], &c)) return err;
    }
  } catch (const YAML::Exception& e) {  // not expected: every access is type-checked
    return ConfigError{std::string("YAML error: ") + e.what()};
  }
  if (c.node_id.empty()) c.node_id = Hostname();
  *out = std::move(c);
  return std::nullopt;
}

std::optional<ConfigError> LoadConfig(const std::string& path, const Overrides& overrides,
                                      Config* out) {
  std::string text;
  if (!path.empty()) {
    if (auto err = ReadFile(path, &text)) return ConfigError{"cannot read: " + *err};
  }
  Config c;
  if (auto err = ParseConfig(text, &c)) return err;
  if (overrides.mount_dir) c.fuse_dir = *overrides.mount_dir;
  if (overrides.data_dir) c.data_dir = *overrides.data_dir;
  if (overrides.http_addr) c.http_addr = *overrides.http_addr;
  if (auto err = ValidateConfig(c)) return err;
  *out = std::move(c);
  return std::nullopt;
}

std::optional<ConfigError> ValidateConfig(const Config& config) {
  const Config& c = config;
  if (c.node_id.empty()) return ConfigError{"node.id: must not be empty"};
  if (auto err = CheckDirs(c)) return err;
  if (c.max_open < 1) {
    return ConfigError{"handles.max-open: must be at least 1, got " + std::to_string(c.max_open)};
  }
  if (c.retention.count() < 0) return ConfigError{"data.retention: must not be negative"};
  if (c.idle_timeout.count() < 0) return ConfigError{"handles.idle-timeout: must not be negative"};
  if (auto err = CheckHttpAddr(c.http_addr)) return err;
  if (!TokenCharsOk(c.http_token)) {
    return ConfigError{"http.token: contains whitespace or control characters"};
  }
  if (c.lease_type != "static" && c.lease_type != "etcd") {
    return ConfigError{"lease.type: must be static or etcd, got '" + c.lease_type + "'"};
  }
  if (!IsHttpUrl(c.advertise_url)) {
    return ConfigError{"lease.advertise-url: expected an http:// or https:// URL, got '" +
                       c.advertise_url + "'"};
  }
  if (!c.primary_url.empty() && !IsHttpUrl(c.primary_url)) {
    return ConfigError{"lease.primary-url: expected an http:// or https:// URL, got '" +
                       c.primary_url + "'"};
  }
  if (c.lease_type == "static" && !c.lease_candidate && c.primary_url.empty()) {
    return ConfigError{"lease.primary-url: a replica needs the primary's URL"};
  }
  metrics::LogLevel level;
  if (!metrics::ParseLogLevel(c.log_level, &level)) {
    return ConfigError{"log.level: must be debug, info, warn or error, got '" + c.log_level + "'"};
  }
  metrics::LogFormat format;
  if (!metrics::ParseLogFormat(c.log_format, &format)) {
    return ConfigError{"log.format: must be text or json, got '" + c.log_format + "'"};
  }
  return std::nullopt;
}

std::string DefaultConfigYaml() {
  const Config d;
  std::string out =
      "# tenantfs configuration. Every key is optional; the values below are the\n"
      "# defaults. Durations take ms, s, m, h (e.g. 250ms, 30s, 5m, 24h); sizes take\n"
      "# plain bytes or KiB, MiB, GiB. Unknown keys are errors.\n";
  auto section = [&](const char* name) { out += std::string(name) + ":\n"; };
  auto key = [&](const std::string& k, const std::string& v, const char* comment,
                 bool commented_out = false) {
    std::string line = std::string(commented_out ? "  # " : "  ") + k + ": " + v;
    if (comment != nullptr && *comment != '\0') {
      if (line.size() < 30) line.resize(30, ' ');
      line += std::string(" # ") + comment;
    }
    out += line + "\n";
  };
  section("node");
  key("id", "node-a", "default: this machine's hostname", true);
  section("fuse");
  key("dir", YamlString(d.fuse_dir), "where the tenants' databases appear");
  key("allow-other", d.allow_other ? "true" : "false",
      "let other users in; needs user_allow_other in /etc/fuse.conf");
  section("data");
  key("dir", YamlString(d.data_dir), "backing files; must not be inside fuse.dir");
  key("retention", FormatDuration(d.retention), "change sets kept for replica catch-up");
  key("retention-max-bytes", FormatSize(d.retention_max_bytes), "per node; 0 = no size bound");
  section("handles");
  key("max-open", std::to_string(d.max_open), "backing fds kept open at once (LRU over databases)");
  key("idle-timeout", FormatDuration(d.idle_timeout), "close a backing database idle this long");
  section("http");
  key("addr", YamlString(d.http_addr), "HOST:PORT for the API, /metrics and replication");
  key("token", YamlString(d.http_token), "bearer token for /v1/; empty = no auth");
  key("token-file", "/etc/tenantfs/token", "or read the token from a file (not both)", true);
  section("lease");
  key("type", YamlString(d.lease_type), "static | etcd");
  key("candidate", d.lease_candidate ? "true" : "false", "static: true = this node is the primary");
  key("advertise-url", YamlString(d.advertise_url), "how other nodes reach this one");
  key("primary-url", YamlString(d.primary_url), "static replicas: the primary's URL");
  section("log");
  key("level", YamlString(d.log_level), "debug | info | warn | error");
  key("format", YamlString(d.log_format), "text | json");
  return out;
}

}  // namespace host

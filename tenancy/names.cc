#include "tenancy/names.h"

namespace tenancy {

namespace {
constexpr std::string_view kSuffixes[] = {"", "-journal", "-wal", "-shm", "-pos"};

bool IsFirstChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}
}  // namespace

std::string_view FileSuffix(FileKind kind) { return kSuffixes[static_cast<int>(kind)]; }

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!IsFirstChar(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!IsFirstChar(c) && c != '.') return false;
  }
  return true;
}

std::optional<FileName> ParseFileName(std::string_view name) {
  // Longest suffix first is not needed: no suffix is a suffix of another.
  for (int k = 1; k <= 4; ++k) {
    std::string_view suffix = kSuffixes[k];
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      std::string_view db = name.substr(0, name.size() - suffix.size());
      if (!IsValidName(db)) return std::nullopt;
      return FileName{std::string(db), static_cast<FileKind>(k)};
    }
  }
  if (!IsValidName(name)) return std::nullopt;
  return FileName{std::string(name), FileKind::kMain};
}

std::string MakeFileName(std::string_view db, FileKind kind) {
  std::string out(db);
  out += FileSuffix(kind);
  return out;
}

}  // namespace tenancy

// Names of tenants, databases and the files SQLite keeps beside a database.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tenancy {

// The files of one database, as they appear in a tenant directory.
enum class FileKind { kMain = 0, kJournal = 1, kWal = 2, kShm = 3, kPos = 4 };
inline constexpr int kBackedFileKinds = 4;  // kMain..kShm have backing files; kPos is virtual.

// "", "-journal", "-wal", "-shm", "-pos".
std::string_view FileSuffix(FileKind kind);

// SPEC: [A-Za-z0-9_-][A-Za-z0-9._-]{0,63}. Tenants and databases share the rule.
bool IsValidName(std::string_view name);

struct FileName {
  std::string db;  // the database name
  FileKind kind;
};

// Splits "app.db-wal" into {"app.db", kWal}. A database name that is itself invalid,
// or that would read as a companion ("x-wal" as a database), gives nullopt.
std::optional<FileName> ParseFileName(std::string_view name);

std::string MakeFileName(std::string_view db, FileKind kind);

}  // namespace tenancy

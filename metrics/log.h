// Logging: one line per event, text or JSON, to stderr. Thread-safe.
//
//   LOG_INFO("mounted", {{"dir", dir}, {"databases", std::to_string(n)}});
//
// Text:  2026-11-26T05:09:52.123Z INFO mounted dir=/mnt/tenantfs databases=3
// JSON:  {"ts":"2026-11-26T05:09:52.123Z","level":"info","msg":"mounted","dir":"/mnt/tenantfs","databases":"3"}
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace metrics {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText, kJson };

using LogField = std::pair<std::string_view, std::string_view>;

// Set once at start-up (before threads start); defaults info/text.
void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
// "debug"/"info"/"warn"/"error", "text"/"json"; false when unknown.
bool ParseLogLevel(std::string_view s, LogLevel* out);
bool ParseLogFormat(std::string_view s, LogFormat* out);
bool LogEnabled(LogLevel level);

void Log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});

}  // namespace metrics

#define LOG_DEBUG(...) \
  do { if (::metrics::LogEnabled(::metrics::LogLevel::kDebug)) ::metrics::Log(::metrics::LogLevel::kDebug, __VA_ARGS__); } while (0)
#define LOG_INFO(...) ::metrics::Log(::metrics::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) ::metrics::Log(::metrics::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) ::metrics::Log(::metrics::LogLevel::kError, __VA_ARGS__)

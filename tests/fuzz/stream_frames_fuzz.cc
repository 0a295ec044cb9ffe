// libFuzzer target for the replication stream's frame decoder
// (replication/stream_frames.h).
//
// Each input is decoded twice: as given, which exercises the header, length and CRC
// checks, and "resealed" (magic, version, reserved, frame_len and CRC rewritten to
// fit, the type byte kept), so mutations reach the field, count, name and LZ4 checks
// behind the CRC instead of dying at "crc: mismatch". Whatever decodes must be valid
// and survive encode + decode unchanged; anything else, a crash, or a sanitizer
// report is a bug.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "replication/stream_frames.h"
#include "tenancy/crc64.h"

namespace {

void PutLe(std::string* s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) (*s)[at + i] = static_cast<char>(v >> (8 * i));
}

void CheckRoundTrip(std::string_view bytes) {
  tenancy::Result<replication::Frame> dec = replication::DecodeFrame(bytes);
  if (!dec.ok()) {
    if (dec.status().code() != tenancy::Status::Code::kInvalidArgument) std::abort();
    if (dec.status().message().rfind("stream frame: ", 0) != 0) std::abort();
    return;
  }
  if (!replication::ValidateFrame(*dec).ok()) std::abort();
  const std::string enc = replication::EncodeFrame(*dec);
  if (enc.size() > replication::kMaxFrameBytes) std::abort();
  tenancy::Result<replication::Frame> again = replication::DecodeFrame(enc);
  if (!again.ok() || !(*again == *dec)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckRoundTrip(input);
  // The same bytes as a message of several frames: every frame it yields must
  // survive a re-encode and decode unchanged.
  (void)replication::DecodeMessage(input, [&](const replication::Frame& f) {
    auto again = replication::DecodeFrame(replication::EncodeFrame(f));
    if (!again.ok() || !(again.value() == f)) __builtin_trap();
    return tenancy::Status::Ok();
  });

  if (size < replication::kFrameHeaderSize || size > replication::kMaxFrameBytes) return 0;
  std::string sealed(input);
  std::memcpy(sealed.data(), "TFSF", 4);
  sealed[5] = static_cast<char>(replication::kStreamVersion);
  PutLe(&sealed, 6, 0, 2);
  PutLe(&sealed, 8, size, 4);
  PutLe(&sealed, 12, tenancy::Crc64(sealed.data() + 16, size - 16), 4);
  CheckRoundTrip(sealed);
  return 0;
}

// libFuzzer target for the change-set decoder (tenancy/changeset.h).
//
// Each input is decoded twice: as given, which exercises framing and the CRC check,
// and "resealed" (header and trailer lengths, end magic and CRC rewritten to fit),
// so mutations reach the field, page-number and LZ4 checks behind the CRC instead
// of dying at "checksum mismatch". Whatever decodes must survive encode + decode
// unchanged; anything else, or a crash, or a sanitizer report, is a bug.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "tenancy/changeset.h"
#include "tenancy/crc64.h"

namespace {

void PutLe(std::string* s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) (*s)[at + i] = static_cast<char>(v >> (8 * i));
}

void CheckRoundTrip(std::string_view bytes) {
  tenancy::Result<tenancy::ChangeSet> dec = tenancy::DecodeChangeSet(bytes);
  if (!dec.ok()) {
    if (dec.status().code() != tenancy::Status::Code::kInvalidArgument) std::abort();
    return;
  }
  if (!tenancy::ValidateChangeSet(*dec).ok()) std::abort();
  const std::string enc = tenancy::EncodeChangeSet(*dec);
  tenancy::Result<tenancy::ChangeSet> again = tenancy::DecodeChangeSet(enc);
  if (!again.ok() || !(*again == *dec)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckRoundTrip(input);

  if (size < tenancy::kChangeSetHeaderSize + tenancy::kChangeSetTrailerSize) return 0;
  std::string sealed(input);
  const size_t body = size - tenancy::kChangeSetTrailerSize;
  PutLe(&sealed, 16, size, 4);        // header record length
  PutLe(&sealed, body + 8, size, 4);  // trailer record length
  std::memcpy(sealed.data() + body + 12, "TFCE", 4);
  PutLe(&sealed, body, tenancy::Crc64(sealed.data(), body), 8);
  CheckRoundTrip(sealed);
  return 0;
}

// Replay: rebuilds a database file from a base (empty, or a snapshot at a known
// TXID) plus change sets, verifying every pre- and post-apply checksum.
// Used by `tenantfs replay`, by tests, and later by replicas applying the stream.
// Thread safety: a Replayer is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tenancy/changeset.h"
#include "tenancy/status.h"

namespace tenancy {

class Replayer {
 public:
  // Opens (creating if missing) the target file and computes its checksum
  // (a full read: the target is about to be written anyway). `txid` is the
  // position the target file is at (0 for an empty file).
  static Result<std::unique_ptr<Replayer>> Open(const std::string& path, uint64_t txid);
  ~Replayer();

  // Applies cs. REQUIRES: cs.min_txid == txid() + 1 (or any, for a snapshot).
  // Fails without writing if cs.pre_checksum differs from the target's
  // checksum; after writing, fails if the result differs from cs.post_checksum.
  Status Apply(const ChangeSet& cs);
  Status Sync();

  uint64_t txid() const { return txid_; }
  uint64_t checksum() const { return checksum_; }

 private:
  Replayer(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  const std::string path_;
  int fd_;
  uint64_t txid_ = 0;
  uint64_t checksum_ = 0;
  uint32_t page_size_ = 0;
  uint32_t pages_ = 0;
};

}  // namespace tenancy

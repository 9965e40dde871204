// fusefs::protocol: the INIT negotiation, and the allow_root access policy.
//
// NegotiateInit() decides the whole INIT answer from the kernel's offer and our configuration:
// the protocol minor (the smaller of the kernel's and abi::kMinor), max_write / max_pages, the
// background limits, and the feature flags. We ask for: asynchronous reads and direct I/O,
// big writes with max_pages, explicit invalidation only (the page cache survives our own
// mtime changes), the kernel write-back cache when configured, FUSE_INIT_EXT whenever the
// kernel offers it (flags2 carries the io_uring bit), and FUSE_OVER_IO_URING when io_uring is
// wanted and the kernel offers it. We never ask for atomic O_TRUNC (unless configured), splice,
// automatic invalidation, POSIX/BSD lock forwarding or killpriv handling: the kernel's local
// defaults are right for a single regular file.
//
// AccessPolicy is what libfuse 3.14 did for `allow_root` in its request loop, made explicit:
// with allow_root the mount is mounted allow_other (the kernel lets everyone through) and we
// refuse, with EACCES, requests from users other than the owner and root, except operations on
// files that are already open (they carry a file handle) and requests that get no answer.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fusefs/protocol/codec.h"

namespace qedfuse::fusefs::protocol {

enum class IoUringMode { kAuto, kOn, kOff };
// "auto", "on", "off".
const char* IoUringModeName(IoUringMode m);
bool ParseIoUringMode(std::string_view s, IoUringMode* out);

struct SessionConfig {
  uint32_t max_write = 1u << 20;
  uint16_t max_background = 16;
  uint16_t congestion_threshold = 12;
  bool writeback_cache = true;  // ask for the kernel write-back cache
  bool atomic_o_trunc = false;  // let open(O_TRUNC) reach us as OPEN instead of SETATTR
  IoUringMode io_uring = IoUringMode::kAuto;
  // The transport can run FUSE over io_uring here (a 128-byte-SQE ring could be created).
  bool io_uring_available = false;
};

// What both sides agreed on.
struct Negotiated {
  uint32_t minor = 0;
  uint64_t offered = 0;  // the kernel's flags (flags | flags2 << 32)
  uint64_t flags = 0;    // the flags we answered
  uint32_t max_write = 0;
  uint16_t max_pages = 0;
  uint32_t max_readahead = 0;
  bool writeback_cache = false;
  bool io_uring = false;

  // The largest READ or WRITE payload, and what a ring entry's payload buffer must hold.
  std::size_t max_payload() const;
  DecodeContext decode_context() const { return {flags, max_payload()}; }
};

struct InitOutcome {
  int error = 0;        // > 0: answer INIT with this errno (the mount fails); see message
  std::string message;  // why (error), or a note worth logging
  // The kernel offered another major version: |out| carries only ours; it will ask again.
  bool other_major = false;
  fuse_init_out out{};
  Negotiated negotiated;
};

InitOutcome NegotiateInit(const InitArgs& in, const SessionConfig& config);

// A one-line summary of the flags ("ASYNC_READ|WRITEBACK_CACHE|...") for the log.
std::string InitFlagNames(uint64_t flags);

class AccessPolicy {
 public:
  // Everyone the kernel lets through (no allow_root).
  static AccessPolicy Anyone() { return AccessPolicy(false, 0); }
  // allow_root: the owner |owner| and root only, except for open-file operations.
  static AccessPolicy OwnerAndRoot(uid_t owner) { return AccessPolicy(true, owner); }

  bool Allows(const Decoded& request) const;

 private:
  AccessPolicy(bool restrict, uid_t owner) : restrict_(restrict), owner_(owner) {}
  bool restrict_;
  uid_t owner_;
};

}  // namespace qedfuse::fusefs::protocol

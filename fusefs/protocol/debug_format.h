// fusefs::protocol: one-line descriptions of requests and replies for the -d (debug) log.
//
//   request 18 READ node 1 uid 1000 pid 4242: fh 0 offset 8192 size 4096
//   reply 18 READ: 4096 bytes
//   reply 19 LOOKUP: ENOENT (No such file or directory)
// Names and data are never printed, only their sizes (a name from a user may hold anything).
#pragma once

#include <cstdint>
#include <string>

#include "fusefs/protocol/codec.h"

namespace qedfuse::fusefs::protocol {

std::string FormatRequest(const Decoded& request);
std::string FormatReply(uint64_t unique, uint32_t opcode, const Reply& reply);

}  // namespace qedfuse::fusefs::protocol

// INIT negotiation (protocol version, sizes, flags, io_uring modes) and the allow_root policy.
#include <gtest/gtest.h>

#include "fusefs/protocol/session.h"

namespace qedfuse::fusefs::protocol {
namespace {

// What Linux 6.18 offers (abridged), with FUSE over io_uring enabled.
InitArgs Kernel(uint32_t minor = 44, bool uring = true) {
  InitArgs in;
  in.major = 7;
  in.minor = minor;
  in.max_readahead = 128 << 10;
  in.flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES |
             FUSE_AUTO_INVAL_DATA | FUSE_ASYNC_DIO | FUSE_WRITEBACK_CACHE | FUSE_SPLICE_READ |
             FUSE_MAX_PAGES | FUSE_EXPLICIT_INVAL_DATA | FUSE_SETXATTR_EXT | abi::kInitExt;
  if (uring) in.flags |= abi::kOverIoUring;
  return in;
}

TEST(FuseSession, AsksForWhatASingleFileNeeds) {
  SessionConfig c;
  InitOutcome o = NegotiateInit(Kernel(), c);
  ASSERT_EQ(o.error, 0) << o.message;
  const Negotiated& n = o.negotiated;
  EXPECT_EQ(n.minor, 42u);  // the smaller of the two
  EXPECT_EQ(o.out.major, 7u);
  EXPECT_EQ(o.out.minor, 42u);
  for (uint64_t f :
       {uint64_t{FUSE_ASYNC_READ}, uint64_t{FUSE_ASYNC_DIO}, uint64_t{FUSE_MAX_PAGES},
        uint64_t{FUSE_EXPLICIT_INVAL_DATA}, uint64_t{FUSE_WRITEBACK_CACHE}, abi::kInitExt}) {
    EXPECT_NE(n.flags & f, 0u) << InitFlagNames(f);
  }
  for (uint64_t f :
       {uint64_t{FUSE_ATOMIC_O_TRUNC}, uint64_t{FUSE_AUTO_INVAL_DATA}, uint64_t{FUSE_SPLICE_READ},
        uint64_t{FUSE_POSIX_LOCKS}, uint64_t{FUSE_SETXATTR_EXT}, abi::kOverIoUring}) {
    EXPECT_EQ(n.flags & f, 0u) << InitFlagNames(f);
  }
  EXPECT_TRUE(n.writeback_cache);
  EXPECT_FALSE(n.io_uring);  // the transport could not set up a ring (io_uring_available)
  EXPECT_EQ(o.out.max_write, 1u << 20);
  EXPECT_EQ(o.out.max_pages, 256u);
  EXPECT_EQ(o.out.max_background, 16u);
  EXPECT_EQ(o.out.congestion_threshold, 12u);
  EXPECT_EQ(o.out.max_readahead, 128u << 10);
  EXPECT_EQ(o.out.flags, static_cast<uint32_t>(n.flags));
  EXPECT_EQ(o.out.flags2, static_cast<uint32_t>(n.flags >> 32));
  EXPECT_EQ(n.max_payload(), std::size_t{1} << 20);
  EXPECT_EQ(n.decode_context().max_payload, std::size_t{1} << 20);
}

TEST(FuseSession, NeverGrantsWhatTheKernelDidNotOffer) {
  InitArgs in = Kernel(38, false);
  in.flags &= ~static_cast<uint64_t>(FUSE_WRITEBACK_CACHE | FUSE_EXPLICIT_INVAL_DATA);
  SessionConfig c;
  c.io_uring_available = true;
  InitOutcome o = NegotiateInit(in, c);
  ASSERT_EQ(o.error, 0);
  EXPECT_EQ(o.negotiated.flags & ~in.flags, 0u);
  EXPECT_FALSE(o.negotiated.writeback_cache);
  EXPECT_FALSE(o.negotiated.io_uring);
  EXPECT_EQ(o.out.minor, 38u);
}

TEST(FuseSession, IoUringModes) {
  SessionConfig c;
  c.io_uring_available = true;
  c.io_uring = IoUringMode::kAuto;
  EXPECT_TRUE(NegotiateInit(Kernel(), c).negotiated.io_uring);
  EXPECT_NE(NegotiateInit(Kernel(), c).out.flags2 & (1u << 9), 0u);
  EXPECT_FALSE(NegotiateInit(Kernel(44, false), c).negotiated.io_uring);
  c.io_uring = IoUringMode::kOff;
  EXPECT_FALSE(NegotiateInit(Kernel(), c).negotiated.io_uring);
  EXPECT_EQ(NegotiateInit(Kernel(), c).out.flags2 & (1u << 9), 0u);
  c.io_uring = IoUringMode::kOn;
  EXPECT_TRUE(NegotiateInit(Kernel(), c).negotiated.io_uring);
  // On demands it: a kernel without it, or no ring here, fails INIT with the reason.
  InitOutcome o = NegotiateInit(Kernel(44, false), c);
  EXPECT_EQ(o.error, EPROTO);
  EXPECT_NE(o.message.find("enable_uring"), std::string::npos) << o.message;
  c.io_uring_available = false;
  o = NegotiateInit(Kernel(), c);
  EXPECT_EQ(o.error, EPROTO);
  EXPECT_NE(o.message.find("128-byte SQEs"), std::string::npos) << o.message;
}

TEST(FuseSession, WritebackAndTruncateChoices) {
  SessionConfig c;
  c.writeback_cache = false;
  c.atomic_o_trunc = true;
  InitOutcome o = NegotiateInit(Kernel(), c);
  EXPECT_FALSE(o.negotiated.writeback_cache);
  EXPECT_NE(o.negotiated.flags & FUSE_ATOMIC_O_TRUNC, 0u);
}

TEST(FuseSession, Versions) {
  SessionConfig c;
  InitArgs in = Kernel();
  in.minor = abi::kMinMinor - 1;
  InitOutcome o = NegotiateInit(in, c);
  EXPECT_EQ(o.error, EPROTO);
  EXPECT_NE(o.message.find("too old"), std::string::npos);
  in.major = 6;
  in.minor = 99;
  EXPECT_EQ(NegotiateInit(in, c).error, EPROTO);
  in.major = 8;
  o = NegotiateInit(in, c);
  EXPECT_EQ(o.error, 0);
  EXPECT_TRUE(o.other_major);
  EXPECT_EQ(o.out.major, 7u);
}

TEST(FuseSession, MaxWriteSetsPagesAndPayload) {
  SessionConfig c;
  c.max_write = 128 << 10;
  InitOutcome o = NegotiateInit(Kernel(), c);
  EXPECT_EQ(o.out.max_write, 128u << 10);
  EXPECT_EQ(o.out.max_pages, 32u);
  EXPECT_EQ(o.negotiated.max_payload(), std::size_t{128} << 10);
  c.max_write = 1000;  // below a page: raised to one
  EXPECT_EQ(NegotiateInit(Kernel(), c).negotiated.max_payload(), 8192u);
}

TEST(FuseSession, FlagNames) {
  EXPECT_EQ(InitFlagNames(0), "0");
  EXPECT_EQ(InitFlagNames(FUSE_ASYNC_READ | abi::kOverIoUring), "ASYNC_READ|OVER_IO_URING");
  EXPECT_EQ(InitFlagNames(uint64_t{1} << 63), "0x8000000000000000");
}

TEST(FuseSession, IoUringModeNames) {
  IoUringMode m;
  EXPECT_TRUE(ParseIoUringMode("on", &m));
  EXPECT_EQ(m, IoUringMode::kOn);
  EXPECT_TRUE(ParseIoUringMode("off", &m));
  EXPECT_EQ(m, IoUringMode::kOff);
  EXPECT_TRUE(ParseIoUringMode("auto", &m));
  EXPECT_EQ(m, IoUringMode::kAuto);
  EXPECT_FALSE(ParseIoUringMode("yes", &m));
}

Decoded Req(uint32_t opcode, uint32_t uid, Args args = std::monostate{}) {
  Decoded d;
  d.header.opcode = opcode;
  d.header.uid = uid;
  d.args = args;
  d.no_reply = opcode == FUSE_FORGET || opcode == FUSE_INTERRUPT;
  return d;
}

TEST(FuseAccessPolicy, AnyoneAllowsEveryone) {
  AccessPolicy p = AccessPolicy::Anyone();
  EXPECT_TRUE(p.Allows(Req(FUSE_GETATTR, 1234)));
  EXPECT_TRUE(p.Allows(Req(FUSE_OPEN, 1234)));
}

TEST(FuseAccessPolicy, AllowRootLetsOwnerAndRootAndOpenFiles) {
  AccessPolicy p = AccessPolicy::OwnerAndRoot(1000);
  EXPECT_TRUE(p.Allows(Req(FUSE_OPEN, 1000)));
  EXPECT_TRUE(p.Allows(Req(FUSE_OPEN, 0)));
  EXPECT_FALSE(p.Allows(Req(FUSE_OPEN, 1001)));
  EXPECT_FALSE(p.Allows(Req(FUSE_SETATTR, 1001, SetattrArgs{})));
  EXPECT_FALSE(p.Allows(Req(FUSE_GETATTR, 1001, GetattrArgs{})));
  EXPECT_FALSE(p.Allows(Req(FUSE_STATFS, 1001)));
  EXPECT_FALSE(p.Allows(Req(FUSE_GETXATTR, 1001)));
  // Operations on a file someone allowed already opened.
  for (uint32_t op :
       {FUSE_READ, FUSE_WRITE, FUSE_FLUSH, FUSE_FSYNC, FUSE_RELEASE, FUSE_FALLOCATE, FUSE_LSEEK}) {
    EXPECT_TRUE(p.Allows(Req(op, 1001))) << op;
  }
  EXPECT_TRUE(p.Allows(Req(FUSE_GETATTR, 1001, GetattrArgs{FUSE_GETATTR_FH, 1})));
  SetattrArgs ftruncate{};
  ftruncate.in.valid = FATTR_FH | FATTR_SIZE;
  EXPECT_TRUE(p.Allows(Req(FUSE_SETATTR, 1001, ftruncate)));
  // Requests without an answer are never refused.
  EXPECT_TRUE(p.Allows(Req(FUSE_FORGET, 1001)));
}

}  // namespace
}  // namespace qedfuse::fusefs::protocol

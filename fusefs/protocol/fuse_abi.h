// The FUSE kernel ABI as the codec uses it: <linux/fuse.h> plus the definitions of protocol 7.42
// that older userspace headers lack (Debian bookworm ships protocol 7.38).
//
// Everything added here comes from protocol 7.39-7.42 and keeps the kernel's layout exactly; the
// names live in our namespace so that a newer <linux/fuse.h> never clashes with them:
//   7.39  FUSE_STATX and its structures (fuse_sx_time, fuse_statx, fuse_statx_in/out);
//   7.42  FUSE over io_uring: the FUSE_OVER_IO_URING init flag (flags2 bit 9), the per-entry
//         header buffer (fuse_uring_req_header: in_out, op_in, ring_ent_in_out), the 80-byte SQE
//         command (fuse_uring_cmd_req) and the two commands REGISTER and COMMIT_AND_FETCH.
// The sizes are asserted below, so a mistake cannot go unnoticed.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>

namespace qedfuse::fusefs::abi {

// The protocol version the codec implements. The kernel and we use the smaller of the two minors.
inline constexpr uint32_t kMajor = 7;
inline constexpr uint32_t kMinor = 42;
// The oldest kernel protocol served: 7.28 (Linux 4.20) has max_pages and copy_file_range.
inline constexpr uint32_t kMinMinor = 28;

// Init flags beyond the 32 bits of fuse_init_in.flags: bit N >= 32 travels as bit N - 32 of
// flags2 (only when FUSE_INIT_EXT is set).
inline constexpr uint64_t kInitExt = uint64_t{1} << 30;            // FUSE_INIT_EXT (7.36)
inline constexpr uint64_t kDirectIoAllowMmap = uint64_t{1} << 36;  // 7.39
inline constexpr uint64_t kOverIoUring = uint64_t{1} << 41;        // FUSE_OVER_IO_URING (7.42)

// Opcodes newer than 7.38.
inline constexpr uint32_t kOpStatx = 52;            // FUSE_STATX (7.39)
inline constexpr uint32_t kOpCopyFileRange64 = 53;  // FUSE_COPY_FILE_RANGE_64 (7.45)

// FUSE_STATX (7.39): the kernel's statx(2) layout.
struct SxTime {
  int64_t tv_sec;
  uint32_t tv_nsec;
  int32_t reserved;
};
struct Statx {
  uint32_t mask;
  uint32_t blksize;
  uint64_t attributes;
  uint32_t nlink;
  uint32_t uid;
  uint32_t gid;
  uint16_t mode;
  uint16_t spare0;
  uint64_t ino;
  uint64_t size;
  uint64_t blocks;
  uint64_t attributes_mask;
  SxTime atime;
  SxTime btime;
  SxTime ctime;
  SxTime mtime;
  uint32_t rdev_major;
  uint32_t rdev_minor;
  uint32_t dev_major;
  uint32_t dev_minor;
  uint64_t spare2[14];
};
struct StatxIn {
  uint32_t getattr_flags;
  uint32_t reserved;
  uint64_t fh;
  uint32_t sx_flags;
  uint32_t sx_mask;
};
struct StatxOut {
  uint64_t attr_valid;
  uint32_t attr_valid_nsec;
  uint32_t flags;
  uint64_t spare[2];
  Statx stat;
};

// FUSE_COPY_FILE_RANGE_64 (7.45) answers with a 64-bit count.
struct CopyFileRangeOut {
  uint64_t bytes_copied;
};

// FUSE over io_uring (7.42). Each ring entry registers two buffers: a header buffer laid out as
// UringReqHeader and a payload buffer. For a request the kernel writes the fuse_in_header to
// in_out, the opcode's first (fixed-size) argument to op_in, every further argument (names, write
// data) to the payload buffer, and the payload's size and the commit id to ring_ent_in_out. A
// reply puts the fuse_out_header in in_out and every reply argument in the payload buffer, with
// their total size in ring_ent_in_out.payload_sz.
inline constexpr std::size_t kUringInOutSize = 128;
inline constexpr std::size_t kUringOpInSize = 128;

struct UringEntInOut {
  uint64_t flags;
  uint64_t commit_id;   // the request's unique; given back in UringCmdReq::commit_id
  uint32_t payload_sz;  // bytes used in the payload buffer, in either direction
  uint32_t padding;
  uint64_t reserved;
};

struct UringReqHeader {
  unsigned char in_out[kUringInOutSize];
  unsigned char op_in[kUringOpInSize];
  UringEntInOut ring_ent_in_out;
};

// UringCmdReq goes in the 80-byte command area of a 128-byte SQE (IORING_SETUP_SQE128), with
// IORING_OP_URING_CMD on the /dev/fuse descriptor and the command in sqe->cmd_op.
enum UringCmd : uint32_t {
  kUringCmdRegister = 1,        // register an entry (sqe->addr: iovec[2] = header, payload)
  kUringCmdCommitAndFetch = 2,  // send the reply in the entry's buffers and wait for the next
};

struct UringCmdReq {
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};

static_assert(sizeof(fuse_in_header) == 40);
static_assert(sizeof(fuse_out_header) == 16);
static_assert(sizeof(fuse_init_in) == 64, "protocol >= 7.36 headers expected");
static_assert(sizeof(fuse_init_out) == 64);
static_assert(sizeof(Statx) == 256);
static_assert(sizeof(StatxIn) == 24);
static_assert(sizeof(StatxOut) == 288);
static_assert(sizeof(UringEntInOut) == 32);
static_assert(sizeof(UringReqHeader) == 288);
static_assert(sizeof(UringCmdReq) == 24);

}  // namespace qedfuse::fusefs::abi

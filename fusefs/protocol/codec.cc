// The FUSE request decoder and reply encoders (see codec.h).
//
// Decoding is a cursor over the two spans: every read checks the remaining length first and
// copies with memcpy (buffers carry no alignment promise). The per-opcode first-argument sizes
// are those the kernel sends at the protocol minors we accept (>= abi::kMinMinor), where no
// compat-size variants remain except SETXATTR's (8 bytes unless FUSE_SETXATTR_EXT was agreed).
#include "fusefs/protocol/codec.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace qedfuse::fusefs::protocol {
namespace {

struct OpInfo {
  const char* name;
  std::size_t first_arg;  // bytes of the fixed first argument
};

// Indexed by opcode; a null name marks a hole in the numbering.
constexpr OpInfo kOps[] = {
    /* 0 */ {nullptr, 0},
    /* 1 */ {"LOOKUP", 0},
    /* 2 */ {"FORGET", sizeof(fuse_forget_in)},
    /* 3 */ {"GETATTR", sizeof(fuse_getattr_in)},
    /* 4 */ {"SETATTR", sizeof(fuse_setattr_in)},
    /* 5 */ {"READLINK", 0},
    /* 6 */ {"SYMLINK", 0},
    /* 7 */ {nullptr, 0},
    /* 8 */ {"MKNOD", sizeof(fuse_mknod_in)},
    /* 9 */ {"MKDIR", sizeof(fuse_mkdir_in)},
    /* 10 */ {"UNLINK", 0},
    /* 11 */ {"RMDIR", 0},
    /* 12 */ {"RENAME", sizeof(fuse_rename_in)},
    /* 13 */ {"LINK", sizeof(fuse_link_in)},
    /* 14 */ {"OPEN", sizeof(fuse_open_in)},
    /* 15 */ {"READ", sizeof(fuse_read_in)},
    /* 16 */ {"WRITE", sizeof(fuse_write_in)},
    /* 17 */ {"STATFS", 0},
    /* 18 */ {"RELEASE", sizeof(fuse_release_in)},
    /* 19 */ {nullptr, 0},
    /* 20 */ {"FSYNC", sizeof(fuse_fsync_in)},
    /* 21 */ {"SETXATTR", FUSE_COMPAT_SETXATTR_IN_SIZE},
    /* 22 */ {"GETXATTR", sizeof(fuse_getxattr_in)},
    /* 23 */ {"LISTXATTR", sizeof(fuse_getxattr_in)},
    /* 24 */ {"REMOVEXATTR", 0},
    /* 25 */ {"FLUSH", sizeof(fuse_flush_in)},
    /* 26 */ {"INIT", sizeof(fuse_init_in)},
    /* 27 */ {"OPENDIR", sizeof(fuse_open_in)},
    /* 28 */ {"READDIR", sizeof(fuse_read_in)},
    /* 29 */ {"RELEASEDIR", sizeof(fuse_release_in)},
    /* 30 */ {"FSYNCDIR", sizeof(fuse_fsync_in)},
    /* 31 */ {"GETLK", sizeof(fuse_lk_in)},
    /* 32 */ {"SETLK", sizeof(fuse_lk_in)},
    /* 33 */ {"SETLKW", sizeof(fuse_lk_in)},
    /* 34 */ {"ACCESS", sizeof(fuse_access_in)},
    /* 35 */ {"CREATE", sizeof(fuse_create_in)},
    /* 36 */ {"INTERRUPT", sizeof(fuse_interrupt_in)},
    /* 37 */ {"BMAP", sizeof(fuse_bmap_in)},
    /* 38 */ {"DESTROY", 0},
    /* 39 */ {"IOCTL", sizeof(fuse_ioctl_in)},
    /* 40 */ {"POLL", sizeof(fuse_poll_in)},
    /* 41 */ {"NOTIFY_REPLY", sizeof(fuse_notify_retrieve_in)},
    /* 42 */ {"BATCH_FORGET", sizeof(fuse_batch_forget_in)},
    /* 43 */ {"FALLOCATE", sizeof(fuse_fallocate_in)},
    /* 44 */ {"READDIRPLUS", sizeof(fuse_read_in)},
    /* 45 */ {"RENAME2", sizeof(fuse_rename2_in)},
    /* 46 */ {"LSEEK", sizeof(fuse_lseek_in)},
    /* 47 */ {"COPY_FILE_RANGE", sizeof(fuse_copy_file_range_in)},
    /* 48 */ {"SETUPMAPPING", sizeof(fuse_setupmapping_in)},
    /* 49 */ {"REMOVEMAPPING", sizeof(fuse_removemapping_in)},
    /* 50 */ {"SYNCFS", sizeof(fuse_syncfs_in)},
    /* 51 */ {"TMPFILE", sizeof(fuse_create_in)},
    /* 52 */ {"STATX", sizeof(abi::StatxIn)},
    /* 53 */ {"COPY_FILE_RANGE_64", sizeof(fuse_copy_file_range_in)},
};
constexpr uint32_t kOpCount = sizeof(kOps) / sizeof(kOps[0]);
static_assert(kOpCount == abi::kOpCopyFileRange64 + 1);

const OpInfo* Info(uint32_t opcode) {
  if (opcode >= kOpCount || kOps[opcode].name == nullptr) return nullptr;
  return &kOps[opcode];
}

// Reads the first argument as a T. The span may be longer than T only on io_uring, where the
// kernel's op_in size is derived from lengths; we accept exactly sizeof(T).
template <typename T>
bool LoadFirst(std::span<const std::byte> arg, T* out) {
  if (arg.size() != sizeof(T)) return false;
  std::memcpy(out, arg.data(), sizeof(T));
  return true;
}

// Takes a NUL-terminated name off the front of |p|.
bool TakeName(std::span<std::byte>* p, std::string_view* name) {
  const void* nul = std::memchr(p->data(), 0, p->size());
  if (nul == nullptr) return false;
  const std::size_t n = static_cast<std::size_t>(static_cast<const std::byte*>(nul) - p->data());
  *name = std::string_view(reinterpret_cast<const char*>(p->data()), n);
  *p = p->subspan(n + 1);
  return true;
}

class Decoder {
 public:
  Decoder(const RequestBytes& b, const DecodeContext& ctx, Decoded* out)
      : b_(b), ctx_(ctx), out_(out), payload_(b.payload) {}

  void Run();

 private:
  void Fail(int err, const char* why) {
    out_->args = std::monostate{};
    out_->error = err;
    out_->problem = why;
  }
  // For requests with a first argument only.
  template <typename T>
  bool First(T* v) {
    if (!LoadFirst(b_.first_arg, v)) {
      Fail(EINVAL, "first argument has the wrong size");
      return false;
    }
    return true;
  }
  bool NoPayload() {
    if (!payload_.empty()) {
      Fail(EINVAL, "unexpected bytes after the arguments");
      return false;
    }
    return true;
  }
  bool NoFirstArg() {
    if (!b_.first_arg.empty()) {
      Fail(EINVAL, "unexpected first argument");
      return false;
    }
    return true;
  }
  bool Name(std::string_view* name) {
    if (!TakeName(&payload_, name)) {
      Fail(EINVAL, "name is not NUL-terminated");
      return false;
    }
    return true;
  }
  template <typename Fixed>
  void FixedOnly(auto make) {
    Fixed in;
    if (First(&in) && NoPayload()) out_->args = make(in);
  }

  void Init();
  void Read();
  void Write();
  void Setxattr();
  void BatchForget();
  void Ioctl();

  const RequestBytes& b_;
  const DecodeContext& ctx_;
  Decoded* out_;
  std::span<std::byte> payload_;
};

void Decoder::Run() {
  const fuse_in_header& h = b_.header;
  out_->header = h;
  const OpInfo* info = Info(h.opcode);
  if (info == nullptr) return Fail(ENOSYS, "unknown opcode");
  // Extensions (security context, supplementary groups) trail the arguments. We never ask for
  // them, so they are only skipped.
  const std::size_t ext = std::size_t{h.total_extlen} * 8;
  if (ext > payload_.size()) return Fail(EINVAL, "extension length exceeds the request");
  payload_ = payload_.first(payload_.size() - ext);

  switch (h.opcode) {
    case FUSE_INIT:
      return Init();
    case FUSE_DESTROY:
      if (NoFirstArg() && NoPayload()) out_->args = DestroyArgs{};
      return;
    case FUSE_LOOKUP: {
      LookupArgs a;
      if (NoFirstArg() && Name(&a.name) && NoPayload()) out_->args = a;
      return;
    }
    case FUSE_FORGET:
      return FixedOnly<fuse_forget_in>(
          [](const fuse_forget_in& in) { return ForgetArgs{in.nlookup}; });
    case FUSE_BATCH_FORGET:
      return BatchForget();
    case FUSE_GETATTR:
      return FixedOnly<fuse_getattr_in>([](const fuse_getattr_in& in) {
        return GetattrArgs{in.getattr_flags, in.fh};
      });
    case FUSE_SETATTR:
      return FixedOnly<fuse_setattr_in>([](const fuse_setattr_in& in) { return SetattrArgs{in}; });
    case FUSE_ACCESS:
      return FixedOnly<fuse_access_in>(
          [](const fuse_access_in& in) { return AccessArgs{in.mask}; });
    case FUSE_OPEN:
    case FUSE_OPENDIR:
      return FixedOnly<fuse_open_in>([](const fuse_open_in& in) {
        return OpenArgs{in.flags, in.open_flags};
      });
    case FUSE_READ:
    case FUSE_READDIR:
    case FUSE_READDIRPLUS:
      return Read();
    case FUSE_WRITE:
      return Write();
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
      return FixedOnly<fuse_release_in>([](const fuse_release_in& in) {
        return ReleaseArgs{in.fh, in.flags, in.release_flags, in.lock_owner};
      });
    case FUSE_FLUSH:
      return FixedOnly<fuse_flush_in>([](const fuse_flush_in& in) {
        return FlushArgs{in.fh, in.lock_owner};
      });
    case FUSE_FSYNC:
    case FUSE_FSYNCDIR:
      return FixedOnly<fuse_fsync_in>([](const fuse_fsync_in& in) {
        return FsyncArgs{in.fh, in.fsync_flags};
      });
    case FUSE_STATFS:
      if (NoFirstArg() && NoPayload()) out_->args = StatfsArgs{};
      return;
    case FUSE_SYNCFS:
      return FixedOnly<fuse_syncfs_in>([](const fuse_syncfs_in&) { return SyncfsArgs{}; });
    case FUSE_FALLOCATE:
      return FixedOnly<fuse_fallocate_in>([](const fuse_fallocate_in& in) {
        return FallocateArgs{in.fh, in.offset, in.length, in.mode};
      });
    case FUSE_LSEEK:
      return FixedOnly<fuse_lseek_in>([](const fuse_lseek_in& in) {
        return LseekArgs{in.fh, in.offset, in.whence};
      });
    case FUSE_INTERRUPT:
      return FixedOnly<fuse_interrupt_in>(
          [](const fuse_interrupt_in& in) { return InterruptArgs{in.unique}; });
    case FUSE_GETXATTR: {
      fuse_getxattr_in in;
      GetxattrArgs a;
      if (First(&in) && Name(&a.name) && NoPayload()) {
        a.size = in.size;
        out_->args = a;
      }
      return;
    }
    case FUSE_LISTXATTR:
      return FixedOnly<fuse_getxattr_in>(
          [](const fuse_getxattr_in& in) { return ListxattrArgs{in.size}; });
    case FUSE_SETXATTR:
      return Setxattr();
    case FUSE_REMOVEXATTR: {
      RemovexattrArgs a;
      if (NoFirstArg() && Name(&a.name) && NoPayload()) out_->args = a;
      return;
    }
    case FUSE_GETLK:
    case FUSE_SETLK:
    case FUSE_SETLKW: {
      const bool wait = h.opcode == FUSE_SETLKW;
      return FixedOnly<fuse_lk_in>([wait](const fuse_lk_in& in) {
        return LockArgs{in.fh, in.owner, in.lk, in.lk_flags, wait};
      });
    }
    case FUSE_BMAP:
      return FixedOnly<fuse_bmap_in>([](const fuse_bmap_in& in) {
        return BmapArgs{in.block, in.blocksize};
      });
    case FUSE_IOCTL:
      return Ioctl();
    case FUSE_POLL:
      return FixedOnly<fuse_poll_in>([](const fuse_poll_in& in) {
        return PollArgs{in.fh, in.kh, in.flags, in.events};
      });
    case FUSE_COPY_FILE_RANGE:
    case abi::kOpCopyFileRange64: {
      const bool wide = h.opcode == abi::kOpCopyFileRange64;
      return FixedOnly<fuse_copy_file_range_in>([wide](const fuse_copy_file_range_in& in) {
        return CopyFileRangeArgs{in.fh_in,   in.off_in, in.nodeid_out, in.fh_out,
                                 in.off_out, in.len,    in.flags,      wide};
      });
    }
    case abi::kOpStatx:
      return FixedOnly<abi::StatxIn>([](const abi::StatxIn& in) {
        return StatxArgs{in.getattr_flags, in.fh, in.sx_flags, in.sx_mask};
      });
    case FUSE_NOTIFY_REPLY:
      // Data for a FUSE_NOTIFY_RETRIEVE we never send: the kernel expects no answer.
      out_->no_reply = true;
      return Fail(ENOSYS, "unexpected NOTIFY_REPLY");
    default:
      // Namespace operations (MKNOD, MKDIR, RENAME, CREATE, ...) and DAX mappings: known, but
      // meaningless for a single file. Their arguments are not needed.
      out_->args = NamespaceArgs{};
      return;
  }
}

void Decoder::Init() {
  // Kernels before 7.36 send 16 bytes (no flags2); newer ones 64.
  constexpr std::size_t kOldInitIn = 16;
  const auto arg = b_.first_arg;
  if (arg.size() < kOldInitIn || !payload_.empty()) return Fail(EINVAL, "short INIT");
  fuse_init_in in{};
  std::memcpy(&in, arg.data(), std::min(arg.size(), sizeof(in)));
  InitArgs a;
  a.major = in.major;
  a.minor = in.minor;
  a.max_readahead = in.max_readahead;
  a.flags = in.flags;
  if ((in.flags & abi::kInitExt) != 0 && arg.size() >= offsetof(fuse_init_in, flags2) + 4) {
    a.flags |= uint64_t{in.flags2} << 32;
  }
  out_->args = a;
}

void Decoder::Read() {
  fuse_read_in in;
  if (!First(&in) || !NoPayload()) return;
  if (ctx_.max_payload != 0 && in.size > ctx_.max_payload) {
    return Fail(EINVAL, "READ larger than the negotiated maximum");
  }
  out_->args = ReadArgs{in.fh, in.offset, in.size, in.read_flags, in.flags};
}

void Decoder::Write() {
  fuse_write_in in;
  if (!First(&in)) return;
  if (payload_.size() != in.size) return Fail(EINVAL, "WRITE payload differs from its size");
  if (ctx_.max_payload != 0 && in.size > ctx_.max_payload) {
    return Fail(EINVAL, "WRITE larger than the negotiated maximum");
  }
  out_->args = WriteArgs{in.fh, in.offset, in.write_flags, in.flags, payload_};
}

void Decoder::Setxattr() {
  // 16 bytes with FUSE_SETXATTR_EXT, else the 8-byte compat layout (size, flags).
  const std::size_t want = FirstArgSize(FUSE_SETXATTR, ctx_);
  if (b_.first_arg.size() != want) return Fail(EINVAL, "first argument has the wrong size");
  fuse_setxattr_in in{};
  std::memcpy(&in, b_.first_arg.data(), want);
  SetxattrArgs a;
  if (!Name(&a.name)) return;
  if (payload_.size() != in.size) return Fail(EINVAL, "SETXATTR value differs from its size");
  a.flags = in.flags;
  a.setxattr_flags = in.setxattr_flags;
  a.value = payload_;
  out_->args = a;
}

void Decoder::BatchForget() {
  fuse_batch_forget_in in;
  if (!First(&in)) return;
  if (payload_.size() != std::size_t{in.count} * sizeof(fuse_forget_one)) {
    return Fail(EINVAL, "BATCH_FORGET entries differ from their count");
  }
  out_->args = BatchForgetArgs{payload_, in.count};
}

void Decoder::Ioctl() {
  fuse_ioctl_in in;
  if (!First(&in)) return;
  if (payload_.size() != in.in_size) return Fail(EINVAL, "IOCTL input differs from its size");
  out_->args = IoctlArgs{in.fh, in.flags, in.cmd, in.arg, in.out_size, payload_};
}

void SplitTime(double seconds, uint64_t* sec, uint32_t* nsec) {
  if (!(seconds > 0)) {
    *sec = 0;
    *nsec = 0;
    return;
  }
  double whole = std::floor(seconds);
  *sec = static_cast<uint64_t>(whole);
  *nsec = static_cast<uint32_t>((seconds - whole) * 1e9);
}

}  // namespace

std::size_t FirstArgSize(uint32_t opcode, const DecodeContext& ctx) {
  if (opcode == FUSE_SETXATTR && (ctx.flags & FUSE_SETXATTR_EXT) != 0) {
    return sizeof(fuse_setxattr_in);
  }
  const OpInfo* info = Info(opcode);
  return info == nullptr ? 0 : info->first_arg;
}

bool SplitMessage(std::span<std::byte> message, const DecodeContext& ctx, RequestBytes* out,
                  const char** why) {
  if (message.size() < sizeof(fuse_in_header)) {
    *why = "message shorter than fuse_in_header";
    return false;
  }
  std::memcpy(&out->header, message.data(), sizeof(fuse_in_header));
  if (out->header.len != message.size()) {
    *why = "length field disagrees with the message";
    return false;
  }
  auto body = message.subspan(sizeof(fuse_in_header));
  // INIT's first argument is its whole body (its size changed across versions).
  std::size_t n =
      out->header.opcode == FUSE_INIT ? body.size() : FirstArgSize(out->header.opcode, ctx);
  n = std::min(n, body.size());
  out->first_arg = body.first(n);
  out->payload = body.subspan(n);
  return true;
}

Decoded Decode(const RequestBytes& bytes, const DecodeContext& ctx) {
  Decoded d;
  Decoder(bytes, ctx, &d).Run();
  const uint32_t op = bytes.header.opcode;
  if (op == FUSE_FORGET || op == FUSE_BATCH_FORGET || op == FUSE_INTERRUPT) d.no_reply = true;
  return d;
}

const char* OpcodeName(uint32_t opcode) {
  const OpInfo* info = Info(opcode);
  if (info != nullptr) return info->name;
  if (opcode == CUSE_INIT) return "CUSE_INIT";
  return "UNKNOWN";
}

fuse_out_header MakeOutHeader(uint64_t unique, const Reply& reply) {
  fuse_out_header h{};
  h.unique = unique;
  h.error = -reply.error();
  h.len =
      static_cast<uint32_t>(sizeof(fuse_out_header) + (reply.error() != 0 ? 0 : reply.body_size()));
  return h;
}

fuse_attr MakeAttr(const struct stat& st) {
  fuse_attr a{};
  a.ino = st.st_ino;
  a.size = static_cast<uint64_t>(st.st_size);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink = static_cast<uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = static_cast<uint32_t>(st.st_rdev);
  a.blksize = static_cast<uint32_t>(st.st_blksize);
  return a;
}

fuse_attr_out MakeAttrOut(const struct stat& st, double timeout) {
  fuse_attr_out out{};
  SplitTime(timeout, &out.attr_valid, &out.attr_valid_nsec);
  out.attr = MakeAttr(st);
  return out;
}

abi::StatxOut MakeStatxOut(const struct stat& st, double timeout) {
  abi::StatxOut out{};
  SplitTime(timeout, &out.attr_valid, &out.attr_valid_nsec);
  abi::Statx& sx = out.stat;
  // STATX_TYPE | MODE | NLINK | UID | GID | ATIME | MTIME | CTIME | INO | SIZE | BLOCKS
  sx.mask = 0x7ff;
  sx.blksize = static_cast<uint32_t>(st.st_blksize);
  sx.nlink = static_cast<uint32_t>(st.st_nlink);
  sx.uid = st.st_uid;
  sx.gid = st.st_gid;
  sx.mode = static_cast<uint16_t>(st.st_mode);
  sx.ino = st.st_ino;
  sx.size = static_cast<uint64_t>(st.st_size);
  sx.blocks = static_cast<uint64_t>(st.st_blocks);
  sx.atime = {st.st_atim.tv_sec, static_cast<uint32_t>(st.st_atim.tv_nsec), 0};
  sx.mtime = {st.st_mtim.tv_sec, static_cast<uint32_t>(st.st_mtim.tv_nsec), 0};
  sx.ctime = {st.st_ctim.tv_sec, static_cast<uint32_t>(st.st_ctim.tv_nsec), 0};
  return out;
}

fuse_entry_out MakeEntryOut(const struct stat& st, double entry_timeout, double attr_timeout) {
  fuse_entry_out out{};
  out.nodeid = st.st_ino;
  SplitTime(entry_timeout, &out.entry_valid, &out.entry_valid_nsec);
  SplitTime(attr_timeout, &out.attr_valid, &out.attr_valid_nsec);
  out.attr = MakeAttr(st);
  return out;
}

fuse_open_out MakeOpenOut(uint64_t fh, uint32_t open_flags) {
  fuse_open_out out{};
  out.fh = fh;
  out.open_flags = open_flags;
  return out;
}

fuse_statfs_out MakeStatfsOut(const struct statvfs& st) {
  fuse_statfs_out out{};
  out.st.blocks = st.f_blocks;
  out.st.bfree = st.f_bfree;
  out.st.bavail = st.f_bavail;
  out.st.files = st.f_files;
  out.st.ffree = st.f_ffree;
  out.st.bsize = static_cast<uint32_t>(st.f_bsize);
  out.st.namelen = static_cast<uint32_t>(st.f_namemax);
  out.st.frsize = static_cast<uint32_t>(st.f_frsize);
  return out;
}

}  // namespace qedfuse::fusefs::protocol

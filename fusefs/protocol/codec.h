// fusefs::protocol: the one decoder of FUSE requests and encoder of FUSE replies.
//
// A request reaches us in one of two shapes, and both become the same RequestBytes:
//   - /dev/fuse: one contiguous message, fuse_in_header | first argument | further arguments.
//     SplitMessage() cuts it at the opcode's first-argument size (FirstArgSize());
//   - io_uring: the ring entry's header buffer holds the fuse_in_header (in_out) and the first
//     argument (op_in), its payload buffer the further arguments (see fuse_abi.h); the transport
//     builds RequestBytes from those two buffers directly.
// Decode() turns RequestBytes into a Decoded: the header and a typed argument struct (a variant
// with one alternative per opcode), with every length checked: an argument shorter than its
// struct, a name without its terminating NUL, a WRITE whose payload differs from its size field,
// or a READ larger than the negotiated maximum is answered EINVAL (EIO for a broken header), and
// an opcode we do not know ENOSYS. Nothing is read outside the given spans, and the typed
// arguments refer into the request's own buffers (names, WRITE data): they live as long as the
// buffers do, which the transport's Request guarantees.
//
// Replies are described by a Reply (an errno, or a small argument struct copied inline plus an
// optional data span) that each transport lays out its own way: writev() of out header, struct
// and data on /dev/fuse; out header into in_out and struct + data into the payload buffer on
// io_uring. The Make*() helpers build the reply structs from our own types.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <variant>

#include "fusefs/protocol/fuse_abi.h"

namespace qedfuse::fusefs::protocol {

// What the decoder needs to know about the session: the flags both sides agreed on at INIT and
// the largest READ/WRITE payload (0 before INIT).
struct DecodeContext {
  uint64_t flags = 0;
  std::size_t max_payload = 0;
};

// A request split into its three parts (see above).
struct RequestBytes {
  fuse_in_header header{};
  std::span<const std::byte> first_arg;  // the opcode's fixed argument struct
  std::span<std::byte> payload;          // everything after it (names, values, write data)
};

// The size of the first argument the kernel sends for |opcode| (0: none, or only names follow).
// INIT's is its whole body. Unknown opcodes: 0.
std::size_t FirstArgSize(uint32_t opcode, const DecodeContext& ctx);

// Splits a /dev/fuse message. Fails (false, |*why| set) if it is shorter than a header or its
// length field disagrees with the bytes received.
bool SplitMessage(std::span<std::byte> message, const DecodeContext& ctx, RequestBytes* out,
                  const char** why);

// ---- Typed request arguments, one struct per opcode --------------------------------------

struct InitArgs {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t max_readahead = 0;
  uint64_t flags = 0;  // flags | flags2 << 32 (flags2 only with FUSE_INIT_EXT)
};
struct DestroyArgs {};
struct LookupArgs {
  std::string_view name;
};
struct ForgetArgs {
  uint64_t nlookup = 0;
};
struct BatchForgetArgs {
  // The entries (fuse_forget_one); possibly unaligned, read with memcpy.
  std::span<const std::byte> entries;
  uint32_t count = 0;
};
struct GetattrArgs {
  uint32_t getattr_flags = 0;
  uint64_t fh = 0;
};
struct SetattrArgs {
  fuse_setattr_in in{};  // valid: FATTR_* bits
};
struct AccessArgs {
  uint32_t mask = 0;
};
struct OpenArgs {  // OPEN and OPENDIR
  uint32_t flags = 0;
  uint32_t open_flags = 0;
};
struct ReadArgs {  // READ, READDIR and READDIRPLUS
  uint64_t fh = 0;
  uint64_t offset = 0;
  uint32_t size = 0;
  uint32_t read_flags = 0;
  uint32_t flags = 0;
};
struct WriteArgs {
  uint64_t fh = 0;
  uint64_t offset = 0;
  uint32_t write_flags = 0;
  uint32_t flags = 0;
  std::span<std::byte> data;  // exactly fuse_write_in.size bytes, in the request's buffer
};
struct ReleaseArgs {  // RELEASE and RELEASEDIR
  uint64_t fh = 0;
  uint32_t flags = 0;
  uint32_t release_flags = 0;
  uint64_t lock_owner = 0;
};
struct FlushArgs {
  uint64_t fh = 0;
  uint64_t lock_owner = 0;
};
struct FsyncArgs {  // FSYNC and FSYNCDIR
  uint64_t fh = 0;
  uint32_t fsync_flags = 0;
};
struct StatfsArgs {};
struct SyncfsArgs {};
struct FallocateArgs {
  uint64_t fh = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t mode = 0;
};
struct LseekArgs {
  uint64_t fh = 0;
  uint64_t offset = 0;
  uint32_t whence = 0;
};
struct InterruptArgs {
  uint64_t unique = 0;
};
struct GetxattrArgs {
  uint32_t size = 0;
  std::string_view name;
};
struct ListxattrArgs {
  uint32_t size = 0;
};
struct SetxattrArgs {
  uint32_t flags = 0;
  uint32_t setxattr_flags = 0;
  std::string_view name;
  std::span<const std::byte> value;
};
struct RemovexattrArgs {
  std::string_view name;
};
struct LockArgs {  // GETLK, SETLK, SETLKW
  uint64_t fh = 0;
  uint64_t owner = 0;
  fuse_file_lock lk{};
  uint32_t lk_flags = 0;
  bool wait = false;  // SETLKW
};
struct BmapArgs {
  uint64_t block = 0;
  uint32_t blocksize = 0;
};
struct IoctlArgs {
  uint64_t fh = 0;
  uint32_t flags = 0;
  uint32_t cmd = 0;
  uint64_t arg = 0;
  uint32_t out_size = 0;
  std::span<const std::byte> in_data;
};
struct PollArgs {
  uint64_t fh = 0;
  uint64_t kh = 0;
  uint32_t flags = 0;
  uint32_t events = 0;
};
struct CopyFileRangeArgs {  // COPY_FILE_RANGE and COPY_FILE_RANGE_64
  uint64_t fh_in = 0;
  uint64_t off_in = 0;
  uint64_t nodeid_out = 0;
  uint64_t fh_out = 0;
  uint64_t off_out = 0;
  uint64_t len = 0;
  uint64_t flags = 0;
  bool wide = false;  // COPY_FILE_RANGE_64: the reply is CopyFileRangeOut
};
struct StatxArgs {
  uint32_t getattr_flags = 0;
  uint64_t fh = 0;
  uint32_t sx_flags = 0;
  uint32_t sx_mask = 0;
};
// An opcode we know that makes no sense for a single regular file (MKDIR, RENAME, ...). Its
// arguments are not parsed; the answer is ENOSYS unless the handler knows better.
struct NamespaceArgs {};

using Args = std::variant<std::monostate, InitArgs, DestroyArgs, LookupArgs, ForgetArgs,
                          BatchForgetArgs, GetattrArgs, SetattrArgs, AccessArgs, OpenArgs, ReadArgs,
                          WriteArgs, ReleaseArgs, FlushArgs, FsyncArgs, StatfsArgs, SyncfsArgs,
                          FallocateArgs, LseekArgs, InterruptArgs, GetxattrArgs, ListxattrArgs,
                          SetxattrArgs, RemovexattrArgs, LockArgs, BmapArgs, IoctlArgs, PollArgs,
                          CopyFileRangeArgs, StatxArgs, NamespaceArgs>;

// The outcome of decoding one request.
struct Decoded {
  fuse_in_header header{};
  Args args;  // monostate when error != 0
  // > 0: the request is malformed or unknown; answer this errno (unless no_reply).
  int error = 0;
  const char* problem = nullptr;  // what was wrong, for the log (static string)
  // The kernel expects no answer: FORGET, BATCH_FORGET, INTERRUPT (answered only with EAGAIN,
  // which we never use), and messages too broken to answer.
  bool no_reply = false;
};

Decoded Decode(const RequestBytes& bytes, const DecodeContext& ctx);

// The name of an opcode ("READ"; "UNKNOWN" for opcodes we do not know). Static storage.
const char* OpcodeName(uint32_t opcode);

// ---- Replies ----------------------------------------------------------------------------

// An answer: an errno, or success with an argument struct (copied inline) and/or data (not
// copied: the span must stay valid until the transport has sent it, which happens inside Send()).
class Reply {
 public:
  static constexpr std::size_t kInlineMax = sizeof(abi::StatxOut);

  static Reply Error(int err) noexcept {
    Reply r;
    r.error_ = err > 0 ? err : EIO;
    return r;
  }
  static Reply Ok() noexcept { return Reply(); }
  template <typename T>
  static Reply Struct(const T& value) noexcept {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kInlineMax);
    Reply r;
    std::memcpy(r.inline_.data(), &value, sizeof(T));
    r.inline_size_ = sizeof(T);
    return r;
  }
  // Data of a READ, GETXATTR, LISTXATTR, ... reply.
  static Reply Data(std::span<const std::byte> data) noexcept {
    Reply r;
    r.data_ = data;
    return r;
  }
  // A struct followed by data (IOCTL).
  template <typename T>
  static Reply StructAndData(const T& value, std::span<const std::byte> data) noexcept {
    Reply r = Struct(value);
    r.data_ = data;
    return r;
  }

  int error() const noexcept { return error_; }  // 0 = success
  std::span<const std::byte> inline_bytes() const noexcept {
    return {inline_.data(), inline_size_};
  }
  std::span<const std::byte> data() const noexcept { return data_; }
  std::size_t body_size() const noexcept { return inline_size_ + data_.size(); }

 private:
  int error_ = 0;
  std::size_t inline_size_ = 0;
  std::array<std::byte, kInlineMax> inline_{};
  std::span<const std::byte> data_;
};

// The out header of a reply to |unique| carrying |body_size| bytes.
fuse_out_header MakeOutHeader(uint64_t unique, const Reply& reply);

// Reply structs from our own types (timeouts in seconds). The one-field replies are built in
// place: Reply::Struct(fuse_write_out{.size = n}), fuse_lseek_out{.offset = o}, ...
fuse_attr MakeAttr(const struct stat& st);
fuse_attr_out MakeAttrOut(const struct stat& st, double timeout);
abi::StatxOut MakeStatxOut(const struct stat& st, double timeout);
fuse_entry_out MakeEntryOut(const struct stat& st, double entry_timeout, double attr_timeout);
fuse_open_out MakeOpenOut(uint64_t fh, uint32_t open_flags);
fuse_statfs_out MakeStatfsOut(const struct statvfs& st);

}  // namespace qedfuse::fusefs::protocol

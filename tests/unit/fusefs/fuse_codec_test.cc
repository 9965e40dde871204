// The FUSE request decoder and reply encoders: every opcode with good, short, oversized and
// wrong-length messages, both message shapes (/dev/fuse and io_uring), and the debug lines.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fusefs/protocol/codec.h"
#include "fusefs/protocol/debug_format.h"

namespace qedfuse::fusefs::protocol {
namespace {

constexpr std::size_t kMax = 1 << 20;
const DecodeContext kCtx{0, kMax};

// A /dev/fuse message: header, first argument, payload.
std::vector<std::byte> Message(uint32_t opcode, const void* arg, std::size_t arg_size,
                               std::string_view payload = {}, uint16_t extlen = 0) {
  fuse_in_header h{};
  h.len = static_cast<uint32_t>(sizeof(h) + arg_size + payload.size());
  h.opcode = opcode;
  h.unique = 42;
  h.nodeid = FUSE_ROOT_ID;
  h.uid = 1000;
  h.total_extlen = extlen;
  std::vector<std::byte> m(h.len);
  std::memcpy(m.data(), &h, sizeof(h));
  if (arg_size > 0) std::memcpy(m.data() + sizeof(h), arg, arg_size);
  if (!payload.empty())
    std::memcpy(m.data() + sizeof(h) + arg_size, payload.data(), payload.size());
  return m;
}

template <typename T>
std::vector<std::byte> Typed(uint32_t opcode, const T& arg, std::string_view payload = {}) {
  return Message(opcode, &arg, sizeof(arg), payload);
}

Decoded DecodeMessage(std::vector<std::byte>& m, const DecodeContext& ctx = kCtx) {
  RequestBytes b;
  const char* why = nullptr;
  EXPECT_TRUE(SplitMessage(m, ctx, &b, &why)) << why;
  return Decode(b, ctx);
}

// Every opcode whose whole request is one fixed struct, with the variant alternative it yields.
struct FixedCase {
  uint32_t opcode;
  std::size_t size;
  std::size_t variant_index;
};

template <typename T>
constexpr std::size_t IndexOf() {
  return Args(T{}).index();
}

const FixedCase kFixed[] = {
    {FUSE_FORGET, sizeof(fuse_forget_in), IndexOf<ForgetArgs>()},
    {FUSE_GETATTR, sizeof(fuse_getattr_in), IndexOf<GetattrArgs>()},
    {FUSE_SETATTR, sizeof(fuse_setattr_in), IndexOf<SetattrArgs>()},
    {FUSE_ACCESS, sizeof(fuse_access_in), IndexOf<AccessArgs>()},
    {FUSE_OPEN, sizeof(fuse_open_in), IndexOf<OpenArgs>()},
    {FUSE_OPENDIR, sizeof(fuse_open_in), IndexOf<OpenArgs>()},
    {FUSE_READ, sizeof(fuse_read_in), IndexOf<ReadArgs>()},
    {FUSE_READDIR, sizeof(fuse_read_in), IndexOf<ReadArgs>()},
    {FUSE_READDIRPLUS, sizeof(fuse_read_in), IndexOf<ReadArgs>()},
    {FUSE_RELEASE, sizeof(fuse_release_in), IndexOf<ReleaseArgs>()},
    {FUSE_RELEASEDIR, sizeof(fuse_release_in), IndexOf<ReleaseArgs>()},
    {FUSE_FLUSH, sizeof(fuse_flush_in), IndexOf<FlushArgs>()},
    {FUSE_FSYNC, sizeof(fuse_fsync_in), IndexOf<FsyncArgs>()},
    {FUSE_FSYNCDIR, sizeof(fuse_fsync_in), IndexOf<FsyncArgs>()},
    {FUSE_SYNCFS, sizeof(fuse_syncfs_in), IndexOf<SyncfsArgs>()},
    {FUSE_FALLOCATE, sizeof(fuse_fallocate_in), IndexOf<FallocateArgs>()},
    {FUSE_LSEEK, sizeof(fuse_lseek_in), IndexOf<LseekArgs>()},
    {FUSE_INTERRUPT, sizeof(fuse_interrupt_in), IndexOf<InterruptArgs>()},
    {FUSE_LISTXATTR, sizeof(fuse_getxattr_in), IndexOf<ListxattrArgs>()},
    {FUSE_GETLK, sizeof(fuse_lk_in), IndexOf<LockArgs>()},
    {FUSE_SETLK, sizeof(fuse_lk_in), IndexOf<LockArgs>()},
    {FUSE_SETLKW, sizeof(fuse_lk_in), IndexOf<LockArgs>()},
    {FUSE_BMAP, sizeof(fuse_bmap_in), IndexOf<BmapArgs>()},
    {FUSE_POLL, sizeof(fuse_poll_in), IndexOf<PollArgs>()},
    {FUSE_COPY_FILE_RANGE, sizeof(fuse_copy_file_range_in), IndexOf<CopyFileRangeArgs>()},
    {abi::kOpCopyFileRange64, sizeof(fuse_copy_file_range_in), IndexOf<CopyFileRangeArgs>()},
    {abi::kOpStatx, sizeof(abi::StatxIn), IndexOf<StatxArgs>()},
    {FUSE_STATFS, 0, IndexOf<StatfsArgs>()},
    {FUSE_DESTROY, 0, IndexOf<DestroyArgs>()},
};

TEST(FuseCodec, FixedArgumentOpcodes) {
  for (const FixedCase& c : kFixed) {
    SCOPED_TRACE(OpcodeName(c.opcode));
    std::vector<std::byte> arg(c.size, std::byte{0});
    auto good = Message(c.opcode, arg.data(), arg.size());
    Decoded d = DecodeMessage(good);
    EXPECT_EQ(d.error, 0) << (d.problem ? d.problem : "");
    EXPECT_EQ(d.args.index(), c.variant_index);
    EXPECT_EQ(d.header.unique, 42u);
    const bool no_reply = c.opcode == FUSE_FORGET || c.opcode == FUSE_INTERRUPT;
    EXPECT_EQ(d.no_reply, no_reply);

    auto oversized = Message(c.opcode, arg.data(), arg.size(), "x");
    d = DecodeMessage(oversized);
    EXPECT_EQ(d.error, EINVAL);
    EXPECT_TRUE(std::holds_alternative<std::monostate>(d.args));
    EXPECT_EQ(d.no_reply, no_reply);  // a broken FORGET still gets no answer

    if (c.size > 0) {
      auto shorter = Message(c.opcode, arg.data(), arg.size() - 1);
      d = DecodeMessage(shorter);
      EXPECT_EQ(d.error, EINVAL);
      auto empty = Message(c.opcode, nullptr, 0);
      d = DecodeMessage(empty);
      EXPECT_EQ(d.error, EINVAL);
    }
  }
}

TEST(FuseCodec, SplitRejectsBrokenHeaders) {
  fuse_getattr_in in{};
  auto m = Typed(FUSE_GETATTR, in);
  RequestBytes b;
  const char* why = nullptr;
  // Shorter than a header.
  EXPECT_FALSE(SplitMessage(std::span<std::byte>(m).first(39), kCtx, &b, &why));
  EXPECT_NE(why, nullptr);
  // Length field larger and smaller than the message.
  auto* h = reinterpret_cast<fuse_in_header*>(m.data());
  h->len += 1;
  EXPECT_FALSE(SplitMessage(m, kCtx, &b, &why));
  h->len -= 2;
  EXPECT_FALSE(SplitMessage(m, kCtx, &b, &why));
  h->len += 1;
  EXPECT_TRUE(SplitMessage(m, kCtx, &b, &why));
}

TEST(FuseCodec, UnknownOpcodeIsEnosys) {
  for (uint32_t op : {0u, 7u, 19u, 54u, 4096u, 0xffffffffu}) {
    auto m = Message(op, nullptr, 0, "abc");
    Decoded d = DecodeMessage(m);
    EXPECT_EQ(d.error, ENOSYS) << op;
    EXPECT_FALSE(d.no_reply);
  }
}

TEST(FuseCodec, ReadChecksSizeAgainstMaximum) {
  fuse_read_in in{};
  in.fh = 3;
  in.offset = 8192;
  in.size = 4096;
  auto m = Typed(FUSE_READ, in);
  Decoded d = DecodeMessage(m);
  ASSERT_EQ(d.error, 0);
  const auto& a = std::get<ReadArgs>(d.args);
  EXPECT_EQ(a.fh, 3u);
  EXPECT_EQ(a.offset, 8192u);
  EXPECT_EQ(a.size, 4096u);
  in.size = kMax + 1;
  auto big = Typed(FUSE_READ, in);
  EXPECT_EQ(DecodeMessage(big).error, EINVAL);
  in.size = kMax;
  auto max = Typed(FUSE_READ, in);
  EXPECT_EQ(DecodeMessage(max).error, 0);
}

TEST(FuseCodec, WritePayloadMustMatchItsSize) {
  fuse_write_in in{};
  in.offset = 512;
  in.size = 5;
  auto m = Typed(FUSE_WRITE, in, "hello");
  Decoded d = DecodeMessage(m);
  ASSERT_EQ(d.error, 0);
  const auto& a = std::get<WriteArgs>(d.args);
  EXPECT_EQ(a.offset, 512u);
  ASSERT_EQ(a.data.size(), 5u);
  EXPECT_EQ(std::memcmp(a.data.data(), "hello", 5), 0);
  // The data is not copied: it points into the message.
  EXPECT_EQ(a.data.data(), m.data() + sizeof(fuse_in_header) + sizeof(fuse_write_in));

  auto shorter = Typed(FUSE_WRITE, in, "hell");
  EXPECT_EQ(DecodeMessage(shorter).error, EINVAL);
  auto longer = Typed(FUSE_WRITE, in, "hello!");
  EXPECT_EQ(DecodeMessage(longer).error, EINVAL);
  in.size = 0;
  auto empty = Typed(FUSE_WRITE, in);
  EXPECT_EQ(DecodeMessage(empty).error, 0);
  // Larger than the negotiated maximum.
  DecodeContext small{0, 4};
  in.size = 5;
  auto big = Typed(FUSE_WRITE, in, "hello");
  EXPECT_EQ(DecodeMessage(big, small).error, EINVAL);
}

TEST(FuseCodec, NamesMustBeTerminated) {
  using namespace std::string_literals;
  for (uint32_t op : {uint32_t{FUSE_LOOKUP}, uint32_t{FUSE_REMOVEXATTR}}) {
    SCOPED_TRACE(OpcodeName(op));
    auto good = Message(op, nullptr, 0, "name\0"s);
    Decoded d = DecodeMessage(good);
    ASSERT_EQ(d.error, 0);
    std::string_view name = op == FUSE_LOOKUP ? std::get<LookupArgs>(d.args).name
                                              : std::get<RemovexattrArgs>(d.args).name;
    EXPECT_EQ(name, "name");
    auto unterminated = Message(op, nullptr, 0, "name");
    EXPECT_EQ(DecodeMessage(unterminated).error, EINVAL);
    auto trailing = Message(op, nullptr, 0, "name\0x"s);
    EXPECT_EQ(DecodeMessage(trailing).error, EINVAL);
    auto empty = Message(op, nullptr, 0);
    EXPECT_EQ(DecodeMessage(empty).error, EINVAL);
  }
}

TEST(FuseCodec, Xattrs) {
  using namespace std::string_literals;
  fuse_getxattr_in g{};
  g.size = 64;
  auto get = Typed(FUSE_GETXATTR, g, "user.a\0"s);
  Decoded d = DecodeMessage(get);
  ASSERT_EQ(d.error, 0);
  EXPECT_EQ(std::get<GetxattrArgs>(d.args).name, "user.a");
  EXPECT_EQ(std::get<GetxattrArgs>(d.args).size, 64u);
  auto get_bad = Typed(FUSE_GETXATTR, g, "user.a");
  EXPECT_EQ(DecodeMessage(get_bad).error, EINVAL);

  // SETXATTR without FUSE_SETXATTR_EXT: the 8-byte first argument.
  uint32_t compat[2] = {3, 1};  // size, flags
  auto set = Message(FUSE_SETXATTR, compat, sizeof(compat), "user.a\0xyz"s);
  d = DecodeMessage(set);
  ASSERT_EQ(d.error, 0);
  const auto& s = std::get<SetxattrArgs>(d.args);
  EXPECT_EQ(s.name, "user.a");
  EXPECT_EQ(s.value.size(), 3u);
  EXPECT_EQ(s.flags, 1u);
  auto set_short_value = Message(FUSE_SETXATTR, compat, sizeof(compat), "user.a\0xy"s);
  EXPECT_EQ(DecodeMessage(set_short_value).error, EINVAL);
  // With FUSE_SETXATTR_EXT the first argument is 16 bytes.
  DecodeContext ext{FUSE_SETXATTR_EXT, kMax};
  fuse_setxattr_in full{};
  full.size = 3;
  auto set_ext = Typed(FUSE_SETXATTR, full, "user.a\0xyz"s);
  EXPECT_EQ(DecodeMessage(set_ext, ext).error, 0);
  EXPECT_EQ(DecodeMessage(set, ext).error, EINVAL);
}

TEST(FuseCodec, BatchForgetCountsEntries) {
  fuse_batch_forget_in in{};
  in.count = 2;
  fuse_forget_one one[2] = {{1, 5}, {1, 6}};
  std::string payload(reinterpret_cast<const char*>(one), sizeof(one));
  auto m = Typed(FUSE_BATCH_FORGET, in, payload);
  Decoded d = DecodeMessage(m);
  ASSERT_EQ(d.error, 0);
  EXPECT_TRUE(d.no_reply);
  EXPECT_EQ(std::get<BatchForgetArgs>(d.args).count, 2u);
  in.count = 3;
  auto bad = Typed(FUSE_BATCH_FORGET, in, payload);
  d = DecodeMessage(bad);
  EXPECT_EQ(d.error, EINVAL);
  EXPECT_TRUE(d.no_reply);
}

TEST(FuseCodec, IoctlInputMatchesItsSize) {
  fuse_ioctl_in in{};
  in.cmd = 0x1234;
  in.in_size = 2;
  auto m = Typed(FUSE_IOCTL, in, "ab");
  Decoded d = DecodeMessage(m);
  ASSERT_EQ(d.error, 0);
  EXPECT_EQ(std::get<IoctlArgs>(d.args).cmd, 0x1234u);
  auto bad = Typed(FUSE_IOCTL, in, "abc");
  EXPECT_EQ(DecodeMessage(bad).error, EINVAL);
}

TEST(FuseCodec, InitOldAndNewLayouts) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = 44;
  in.max_readahead = 131072;
  in.flags = FUSE_ASYNC_READ | static_cast<uint32_t>(abi::kInitExt);
  in.flags2 = 1u << 9;  // FUSE_OVER_IO_URING
  auto m = Typed(FUSE_INIT, in);
  Decoded d = DecodeMessage(m, DecodeContext{});
  ASSERT_EQ(d.error, 0);
  const auto& a = std::get<InitArgs>(d.args);
  EXPECT_EQ(a.minor, 44u);
  EXPECT_EQ(a.flags & abi::kOverIoUring, abi::kOverIoUring);
  // Without FUSE_INIT_EXT, flags2 is ignored.
  in.flags = FUSE_ASYNC_READ;
  auto no_ext = Typed(FUSE_INIT, in);
  EXPECT_EQ(std::get<InitArgs>(DecodeMessage(no_ext).args).flags, uint64_t{FUSE_ASYNC_READ});
  // Kernels before 7.36 send 16 bytes.
  auto old = Message(FUSE_INIT, &in, 16);
  d = DecodeMessage(old);
  ASSERT_EQ(d.error, 0);
  EXPECT_EQ(std::get<InitArgs>(d.args).max_readahead, 131072u);
  auto broken = Message(FUSE_INIT, &in, 15);
  EXPECT_EQ(DecodeMessage(broken).error, EINVAL);
}

TEST(FuseCodec, NamespaceOpcodesAreKnownButNotParsed) {
  for (uint32_t op : {FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME, FUSE_LINK,
                      FUSE_SYMLINK, FUSE_READLINK, FUSE_CREATE, FUSE_RENAME2, FUSE_TMPFILE}) {
    auto m = Message(op, nullptr, 0, std::string(64, 'x'));
    Decoded d = DecodeMessage(m);
    EXPECT_EQ(d.error, 0) << OpcodeName(op);
    EXPECT_TRUE(std::holds_alternative<NamespaceArgs>(d.args));
  }
  auto reply = Message(FUSE_NOTIFY_REPLY, nullptr, 0, std::string(40, 'x'));
  Decoded d = DecodeMessage(reply);
  EXPECT_TRUE(d.no_reply);
}

TEST(FuseCodec, ExtensionsAreSkippedAndBounded) {
  using namespace std::string_literals;
  // LOOKUP with one 8-byte extension after the name.
  auto m = Message(FUSE_LOOKUP, nullptr, 0, "a\0"s + std::string(8, 'e'), 1);
  Decoded d = DecodeMessage(m);
  ASSERT_EQ(d.error, 0);
  EXPECT_EQ(std::get<LookupArgs>(d.args).name, "a");
  auto over = Message(FUSE_LOOKUP, nullptr, 0, "a\0"s, 1);
  EXPECT_EQ(DecodeMessage(over).error, EINVAL);
}

TEST(FuseCodec, RingShapedRequest) {
  // io_uring: the first argument and the payload come from two separate buffers.
  fuse_write_in in{};
  in.offset = 4096;
  in.size = 3;
  std::vector<std::byte> payload(8192);
  std::memcpy(payload.data(), "abc", 3);
  RequestBytes b;
  b.header.len = sizeof(fuse_in_header) + sizeof(in) + 3;
  b.header.opcode = FUSE_WRITE;
  b.header.unique = 9;
  b.first_arg = std::span<const std::byte>(reinterpret_cast<const std::byte*>(&in), sizeof(in));
  b.payload = std::span<std::byte>(payload).first(3);
  Decoded d = Decode(b, kCtx);
  ASSERT_EQ(d.error, 0);
  EXPECT_EQ(std::get<WriteArgs>(d.args).data.data(), payload.data());
}

TEST(FuseCodec, OutHeaders) {
  fuse_out_header h = MakeOutHeader(5, Reply::Error(ENOENT));
  EXPECT_EQ(h.len, sizeof(fuse_out_header));
  EXPECT_EQ(h.error, -ENOENT);
  EXPECT_EQ(h.unique, 5u);
  EXPECT_EQ(Reply::Error(0).error(), EIO);  // never a success by mistake
  h = MakeOutHeader(6, Reply::Struct(fuse_write_out{.size = 7}));
  EXPECT_EQ(h.len, sizeof(fuse_out_header) + sizeof(fuse_write_out));
  EXPECT_EQ(h.error, 0);
  std::byte data[100];
  Reply r = Reply::StructAndData(fuse_lseek_out{.offset = 1}, data);
  EXPECT_EQ(MakeOutHeader(7, r).len, sizeof(fuse_out_header) + sizeof(fuse_lseek_out) + 100);
  EXPECT_EQ(MakeOutHeader(8, Reply::Ok()).len, sizeof(fuse_out_header));
}

TEST(FuseCodec, ReplyStructs) {
  struct stat st {};
  st.st_ino = 1;
  st.st_size = 12345;
  st.st_mode = S_IFREG | 0600;
  st.st_uid = 7;
  st.st_mtim = {100, 5};
  fuse_attr_out a = MakeAttrOut(st, 1.5);
  EXPECT_EQ(a.attr_valid, 1u);
  EXPECT_EQ(a.attr_valid_nsec, 500000000u);
  EXPECT_EQ(a.attr.size, 12345u);
  EXPECT_EQ(a.attr.mode, S_IFREG | 0600u);
  EXPECT_EQ(a.attr.uid, 7u);
  EXPECT_EQ(a.attr.mtime, 100u);
  EXPECT_EQ(a.attr.mtimensec, 5u);
  abi::StatxOut sx = MakeStatxOut(st, 0);
  EXPECT_EQ(sx.stat.size, 12345u);
  EXPECT_EQ(sx.stat.mtime.tv_sec, 100);
  EXPECT_EQ(sx.attr_valid, 0u);
  struct statvfs vfs {};
  vfs.f_blocks = 10;
  vfs.f_bsize = 4096;
  EXPECT_EQ(MakeStatfsOut(vfs).st.blocks, 10u);
  EXPECT_EQ(MakeOpenOut(3, FOPEN_DIRECT_IO).open_flags, uint32_t{FOPEN_DIRECT_IO});
}

TEST(FuseCodec, DebugLines) {
  using namespace std::string_literals;
  fuse_read_in in{};
  in.offset = 8192;
  in.size = 4096;
  auto m = Typed(FUSE_READ, in);
  std::string line = FormatRequest(DecodeMessage(m));
  EXPECT_NE(line.find("request 42 READ"), std::string::npos) << line;
  EXPECT_NE(line.find("offset 8192 size 4096"), std::string::npos) << line;
  // Names are never printed, only their size.
  auto lookup = Message(FUSE_LOOKUP, nullptr, 0, "secret\0"s);
  line = FormatRequest(DecodeMessage(lookup));
  EXPECT_EQ(line.find("secret"), std::string::npos) << line;
  auto bad = Message(FUSE_LOOKUP, nullptr, 0, "x");
  EXPECT_NE(FormatRequest(DecodeMessage(bad)).find("bad request"), std::string::npos);
  EXPECT_EQ(FormatReply(42, FUSE_LOOKUP, Reply::Error(ENOENT)),
            "reply 42 LOOKUP: ENOENT (No such file or directory)");
  EXPECT_EQ(FormatReply(43, FUSE_WRITE, Reply::Struct(fuse_write_out{.size = 1})),
            "reply 43 WRITE: 8 bytes");
  EXPECT_EQ(FormatReply(44, FUSE_FLUSH, Reply::Ok()), "reply 44 FLUSH: ok");
}

}  // namespace
}  // namespace qedfuse::fusefs::protocol

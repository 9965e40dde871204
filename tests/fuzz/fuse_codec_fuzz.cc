// libFuzzer target over the FUSE request decoder (fusefs/protocol): raw request bytes in, a
// decoded request or an error answer out. The first input byte chooses the shape and the session:
//   bit 0: 0 = one /dev/fuse message (the rest of the input), 1 = an io_uring entry (the next
//          byte is the first-argument length, taken off the rest after a 40-byte header; what
//          follows is the payload);
//   bit 1: FUSE_SETXATTR_EXT agreed; bit 2: a small negotiated maximum payload (4 KiB).
// Besides "no crash, no sanitizer report" it checks what the transports rely on:
//  - every span in the decoded arguments lies inside the request's buffers;
//  - a decoded WRITE carries exactly its size field's bytes, a READ never more than the maximum;
//  - names contain no NUL; an error names its problem; FORGET/INTERRUPT never get an answer;
//  - the reply, debug line and (for INIT) the negotiation can be built from any decoded request.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <variant>

#include "fusefs/protocol/codec.h"
#include "fusefs/protocol/debug_format.h"
#include "fusefs/protocol/session.h"
#include "fuzz/fuzz_options.h"

namespace {

using namespace qedfuse::fusefs::protocol;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuse_codec_fuzz: property violated: %s\n", what);
  std::abort();
}

struct Buffers {
  std::span<const std::byte> a, b;
  bool Inside(const void* p, std::size_t n) const {
    auto in = [&](std::span<const std::byte> s) {
      auto lo = reinterpret_cast<std::uintptr_t>(s.data());
      auto x = reinterpret_cast<std::uintptr_t>(p);
      return x >= lo && x <= lo + s.size() && n <= lo + s.size() - x;
    };
    return n == 0 || in(a) || in(b);
  }
};

void CheckName(std::string_view name, const Buffers& bufs) {
  if (!bufs.Inside(name.data(), name.size() + 1)) Fail("name outside the request");
  if (name.find('\0') != std::string_view::npos) Fail("name with a NUL");
}

void Check(const Decoded& d, const RequestBytes& bytes, const DecodeContext& ctx,
           const Buffers& bufs) {
  const uint32_t op = d.header.opcode;
  if ((op == FUSE_FORGET || op == FUSE_BATCH_FORGET || op == FUSE_INTERRUPT) && !d.no_reply) {
    Fail("a FORGET or INTERRUPT would be answered");
  }
  if (d.error != 0) {
    if (d.problem == nullptr) Fail("an error without a problem");
    if (!std::holds_alternative<std::monostate>(d.args)) Fail("an error with arguments");
    return;
  }
  if (const auto* w = std::get_if<WriteArgs>(&d.args)) {
    uint32_t size;
    std::memcpy(&size, bytes.first_arg.data() + offsetof(fuse_write_in, size), 4);
    if (w->data.size() != size) Fail("WRITE data differs from its size");
    if (ctx.max_payload != 0 && w->data.size() > ctx.max_payload) Fail("WRITE over the maximum");
    if (!bufs.Inside(w->data.data(), w->data.size())) Fail("WRITE data outside the request");
  } else if (const auto* r = std::get_if<ReadArgs>(&d.args)) {
    if (ctx.max_payload != 0 && r->size > ctx.max_payload) Fail("READ over the maximum");
  } else if (const auto* l = std::get_if<LookupArgs>(&d.args)) {
    CheckName(l->name, bufs);
  } else if (const auto* g = std::get_if<GetxattrArgs>(&d.args)) {
    CheckName(g->name, bufs);
  } else if (const auto* s = std::get_if<SetxattrArgs>(&d.args)) {
    CheckName(s->name, bufs);
    if (!bufs.Inside(s->value.data(), s->value.size())) Fail("xattr value outside the request");
  } else if (const auto* rm = std::get_if<RemovexattrArgs>(&d.args)) {
    CheckName(rm->name, bufs);
  } else if (const auto* bf = std::get_if<BatchForgetArgs>(&d.args)) {
    if (bf->entries.size() != std::size_t{bf->count} * sizeof(fuse_forget_one)) {
      Fail("BATCH_FORGET entries differ from their count");
    }
    if (!bufs.Inside(bf->entries.data(), bf->entries.size())) Fail("entries outside the request");
  } else if (const auto* io = std::get_if<IoctlArgs>(&d.args)) {
    if (!bufs.Inside(io->in_data.data(), io->in_data.size())) Fail("IOCTL data outside");
  } else if (const auto* in = std::get_if<InitArgs>(&d.args)) {
    SessionConfig c;
    c.io_uring_available = (in->flags & 1) != 0;
    InitOutcome o = NegotiateInit(*in, c);
    if (o.error == 0 && !o.other_major && (o.negotiated.flags & ~in->flags) != 0) {
      Fail("INIT granted a flag the kernel did not offer");
    }
    if (o.error != 0 && o.message.empty()) Fail("INIT refused without a reason");
  }
}

void Exercise(const RequestBytes& bytes, const DecodeContext& ctx, const Buffers& bufs) {
  Decoded d = Decode(bytes, ctx);
  Check(d, bytes, ctx, bufs);
  volatile std::size_t sink = FormatRequest(d).size();
  Reply r = d.error != 0 ? Reply::Error(d.error) : Reply::Struct(fuse_write_out{.size = 1});
  sink = sink + FormatReply(d.header.unique, d.header.opcode, r).size();
  fuse_out_header h = MakeOutHeader(d.header.unique, r);
  if (h.len < sizeof(fuse_out_header)) Fail("out header shorter than itself");
  (void)AccessPolicy::OwnerAndRoot(1000).Allows(d);
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  DecodeContext ctx;
  ctx.flags = (mode & 2) ? FUSE_SETXATTR_EXT : 0;
  ctx.max_payload = (mode & 4) ? 4096 : 1 << 20;
  ++data;
  --size;
  if ((mode & 1) == 0) {
    // /dev/fuse: the message in a buffer of exactly its size, so ASan sees any overrun.
    auto msg = std::make_unique<std::byte[]>(size);
    if (size > 0) std::memcpy(msg.get(), data, size);
    std::span<std::byte> m(msg.get(), size);
    RequestBytes bytes;
    const char* why = nullptr;
    if (!SplitMessage(m, ctx, &bytes, &why)) {
      if (why == nullptr) Fail("split failed without a reason");
      return 0;
    }
    Exercise(bytes, ctx, Buffers{m, {}});
    return 0;
  }
  // io_uring: header, first-argument length, first argument (op_in), payload.
  if (size < sizeof(fuse_in_header) + 1) return 0;
  RequestBytes bytes;
  std::memcpy(&bytes.header, data, sizeof(fuse_in_header));
  std::size_t arg_len = std::min<std::size_t>(data[sizeof(fuse_in_header)], 128);
  const uint8_t* rest = data + sizeof(fuse_in_header) + 1;
  std::size_t rest_size = size - sizeof(fuse_in_header) - 1;
  arg_len = std::min(arg_len, rest_size);
  auto op_in = std::make_unique<std::byte[]>(arg_len);
  if (arg_len > 0) std::memcpy(op_in.get(), rest, arg_len);
  const std::size_t payload_len = rest_size - arg_len;
  auto payload = std::make_unique<std::byte[]>(payload_len);
  if (payload_len > 0) std::memcpy(payload.get(), rest + arg_len, payload_len);
  bytes.first_arg = {op_in.get(), arg_len};
  bytes.payload = {payload.get(), payload_len};
  Exercise(bytes, ctx, Buffers{bytes.first_arg, bytes.payload});
  return 0;
}

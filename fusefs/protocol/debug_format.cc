// Debug formatting of decoded requests and of replies (see debug_format.h).
#include "fusefs/protocol/debug_format.h"

#include <cstring>
#include <string_view>
#include <variant>

#include "absl/strings/str_cat.h"
#include "fusefs/protocol/session.h"

namespace qedfuse::fusefs::protocol {
namespace {

template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

std::string ArgsText(const Args& args) {
  return std::visit(
      Overloaded{
          [](const std::monostate&) { return std::string(); },
          [](const InitArgs& a) {
            return absl::StrCat("protocol ", a.major, ".", a.minor, " max_readahead ",
                                a.max_readahead, " flags ", InitFlagNames(a.flags));
          },
          [](const LookupArgs& a) { return absl::StrCat("name of ", a.name.size(), " bytes"); },
          [](const ForgetArgs& a) { return absl::StrCat("nlookup ", a.nlookup); },
          [](const BatchForgetArgs& a) { return absl::StrCat(a.count, " nodes"); },
          [](const GetattrArgs& a) {
            return absl::StrCat("flags 0x", absl::Hex(a.getattr_flags), " fh ", a.fh);
          },
          [](const SetattrArgs& a) {
            std::string s = absl::StrCat("valid 0x", absl::Hex(a.in.valid));
            if (a.in.valid & FATTR_SIZE) absl::StrAppend(&s, " size ", a.in.size);
            if (a.in.valid & FATTR_MODE) absl::StrAppend(&s, " mode 0", absl::Hex(a.in.mode));
            if (a.in.valid & FATTR_UID) absl::StrAppend(&s, " uid ", a.in.uid);
            if (a.in.valid & FATTR_GID) absl::StrAppend(&s, " gid ", a.in.gid);
            if (a.in.valid & FATTR_FH) absl::StrAppend(&s, " fh ", a.in.fh);
            return s;
          },
          [](const AccessArgs& a) { return absl::StrCat("mask 0", absl::Hex(a.mask)); },
          [](const OpenArgs& a) { return absl::StrCat("flags 0x", absl::Hex(a.flags)); },
          [](const ReadArgs& a) {
            return absl::StrCat("fh ", a.fh, " offset ", a.offset, " size ", a.size);
          },
          [](const WriteArgs& a) {
            return absl::StrCat("fh ", a.fh, " offset ", a.offset, " size ", a.data.size(),
                                " flags 0x", absl::Hex(a.write_flags));
          },
          [](const ReleaseArgs& a) {
            return absl::StrCat("fh ", a.fh, " flags 0x", absl::Hex(a.release_flags));
          },
          [](const FlushArgs& a) { return absl::StrCat("fh ", a.fh); },
          [](const FsyncArgs& a) {
            return absl::StrCat("fh ", a.fh, " flags 0x", absl::Hex(a.fsync_flags));
          },
          [](const FallocateArgs& a) {
            return absl::StrCat("fh ", a.fh, " offset ", a.offset, " length ", a.length, " mode 0x",
                                absl::Hex(a.mode));
          },
          [](const LseekArgs& a) {
            return absl::StrCat("fh ", a.fh, " offset ", a.offset, " whence ", a.whence);
          },
          [](const InterruptArgs& a) { return absl::StrCat("request ", a.unique); },
          [](const GetxattrArgs& a) {
            return absl::StrCat("size ", a.size, " name of ", a.name.size(), " bytes");
          },
          [](const ListxattrArgs& a) { return absl::StrCat("size ", a.size); },
          [](const SetxattrArgs& a) {
            return absl::StrCat("value of ", a.value.size(), " bytes, name of ", a.name.size(),
                                " bytes");
          },
          [](const RemovexattrArgs& a) {
            return absl::StrCat("name of ", a.name.size(), " bytes");
          },
          [](const LockArgs& a) {
            return absl::StrCat("fh ", a.fh, " type ", a.lk.type, " ", a.lk.start, "-", a.lk.end);
          },
          [](const BmapArgs& a) { return absl::StrCat("block ", a.block); },
          [](const IoctlArgs& a) {
            return absl::StrCat("fh ", a.fh, " cmd 0x", absl::Hex(a.cmd), " in ", a.in_data.size(),
                                " out ", a.out_size);
          },
          [](const PollArgs& a) { return absl::StrCat("fh ", a.fh, " events 0x", a.events); },
          [](const CopyFileRangeArgs& a) {
            return absl::StrCat("fh ", a.fh_in, " offset ", a.off_in, " -> node ", a.nodeid_out,
                                " offset ", a.off_out, " length ", a.len);
          },
          [](const StatxArgs& a) {
            return absl::StrCat("fh ", a.fh, " mask 0x", absl::Hex(a.sx_mask));
          },
          [](const auto&) { return std::string(); },
      },
      args);
}

}  // namespace

std::string FormatRequest(const Decoded& d) {
  const fuse_in_header& h = d.header;
  std::string s = absl::StrCat("request ", h.unique, " ", OpcodeName(h.opcode), " node ", h.nodeid,
                               " uid ", h.uid, " pid ", h.pid);
  if (d.error != 0) {
    absl::StrAppend(&s, ": bad request (", d.problem != nullptr ? d.problem : "?", ")");
    return s;
  }
  std::string args = ArgsText(d.args);
  if (!args.empty()) absl::StrAppend(&s, ": ", args);
  return s;
}

std::string FormatReply(uint64_t unique, uint32_t opcode, const Reply& reply) {
  std::string s = absl::StrCat("reply ", unique, " ", OpcodeName(opcode), ": ");
  if (reply.error() != 0) {
    const char* name = strerrorname_np(reply.error());
    absl::StrAppend(&s, name != nullptr ? name : "errno", " (", std::strerror(reply.error()), ")");
  } else if (reply.body_size() == 0) {
    absl::StrAppend(&s, "ok");
  } else {
    absl::StrAppend(&s, reply.body_size(), " bytes");
  }
  return s;
}

}  // namespace qedfuse::fusefs::protocol

// qedimg map: the extents of an image as `qemu-img map` prints them. JSON lists every extent
// (start, length, depth, present, zero, data, offset) with neighbours merged when all of those
// agree and host offsets are contiguous; the human format lists only the extents whose data is
// stored somewhere, with the file that holds them.
//
// Extents come from BlockBackend::GetStatus, which walks the backing chain (depth 0 is the image
// itself, 1 its backing file, ...).

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

namespace qedfuse::tools {
namespace {

struct MapArgs : ReadImageArgs {
  OutputFormat output = OutputFormat::kHuman;
  uint64_t start = 0;
  std::optional<uint64_t> max_length;
};

struct Extent {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;
  bool present = false;
  bool zero = false;
  bool data = false;
  std::optional<uint64_t> offset;
  std::string filename;
};

// qemu-img's entry_mergeable().
bool Mergeable(const Extent& cur, const Extent& next) {
  if (cur.length == 0) return false;
  if (cur.zero != next.zero || cur.data != next.data || cur.depth != next.depth ||
      cur.present != next.present || cur.filename != next.filename ||
      cur.offset.has_value() != next.offset.has_value()) {
    return false;
  }
  if (cur.offset && *cur.offset + cur.length != *next.offset) return false;
  return true;
}

// Prints |e|; in human mode it may rewrite |next| so that extents the format does not
// distinguish (hole, zero, zero+data) merge, as qemu-img does.
bool Dump(OutputFormat fmt, const Extent& e, Extent* next) {
  if (fmt == OutputFormat::kHuman) {
    if (e.data && !e.offset) {
      Error("File contains external, encrypted or compressed clusters.");
      return false;
    }
    if (e.data && !e.zero) {
      std::string s = absl::StrFormat("%#x", e.start);
      std::string l = absl::StrFormat("%#x", e.length);
      std::string o = absl::StrFormat("%#x", e.offset.value_or(0));
      std::printf("%-16s%-16s%-16s%s\n", s.c_str(), l.c_str(), o.c_str(),
                  Printable(e.filename).c_str());
    }
    if (next != nullptr && (!next->data || next->zero)) {
      next->data = false;
      next->zero = true;
    }
    return true;
  }
  std::printf(
      "{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, "
      "\"zero\": %s, \"data\": %s",
      static_cast<unsigned long long>(e.start), static_cast<unsigned long long>(e.length), e.depth,
      e.present ? "true" : "false", e.zero ? "true" : "false", e.data ? "true" : "false");
  if (e.offset) std::printf(", \"offset\": %llu", static_cast<unsigned long long>(*e.offset));
  std::printf("}");
  if (next != nullptr) std::printf(",\n");
  return true;
}

coro::Task<int> RunMap(MapArgs args) {
  block::OpenReport report;
  std::unique_ptr<block::BlockBackend> backend =
      co_await OpenImageOrReport(ReadOnlyOpenOptions(args), OpenPurpose::kRead, &report);
  if (!backend) co_return kExitFailure;

  // File names per depth: the name as given for the top, resolved names below it.
  std::vector<std::string> names{args.image};
  std::vector<std::string> formats{report.format};
  for (std::size_t i = 1; i < report.chain.size(); ++i) {
    names.push_back(report.chain[i].path);
    formats.push_back(report.chain[i].format);
  }

  uint64_t length = backend->length();
  uint64_t end = length;
  if (args.max_length) end = std::min(length, args.start + std::min(*args.max_length, length));
  int rc = kExitOk;
  if (args.output == OutputFormat::kHuman) {
    std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
  } else {
    std::printf("[");
  }
  Extent cur;
  for (uint64_t off = args.start; off < end;) {
    uint64_t want = std::min<uint64_t>(end - off, uint64_t{1} << 30);
    auto st = co_await backend->GetStatus(off, want);
    if (!st) {
      Error(absl::StrFormat("Could not read the status of offset %llu: %s",
                            static_cast<unsigned long long>(off), st.error().message()));
      rc = kExitFailure;
      break;
    }
    Extent next;
    next.start = off;
    next.length = std::min(st->length, want);
    next.depth = st->depth;
    next.present = st->present;
    next.zero = st->zero;
    next.data = st->data;
    next.offset = st->offset;
    std::size_t layer = static_cast<std::size_t>(next.depth);
    if (!next.offset && next.present && layer < formats.size() && formats[layer] == "raw") {
      // A raw file maps every guest byte to the same host offset, holes included; qemu-img
      // reports that offset for zero extents of raw layers too.
      next.offset = off;
    }
    if (next.offset) {  // qemu-img names the file only for extents with a host offset
      std::size_t d = static_cast<std::size_t>(next.depth);
      next.filename = d < names.size() ? names[d] : "";
    }
    if (next.length == 0) {
      Error("Block status returned an empty extent");
      rc = kExitFailure;
      break;
    }
    off += next.length;
    if (Mergeable(cur, next)) {
      cur.length += next.length;
      continue;
    }
    if (cur.length > 0 && !Dump(args.output, cur, &next)) {
      rc = kExitFailure;
      break;
    }
    cur = next;
  }
  if (rc == kExitOk && cur.length > 0 && !Dump(args.output, cur, nullptr)) rc = kExitFailure;
  if (args.output == OutputFormat::kJson) std::printf("]\n");
  absl::Status closed = co_await backend->Close();
  if (!closed.ok()) Error(closed);
  co_return rc;
}

}  // namespace

int MapCommand(int argc, char** argv) {
  MapArgs args;
  auto size_option = [](const char* name, const char* what, auto* target) {
    return CommandOption{name, 0, true, [what, target](const char* argument) {
                           std::optional<uint64_t> v = ParseSizeArgument(what, argument);
                           if (v) *target = *v;
                           return v.has_value();
                         }};
  };
  const CommandOption options[] = {OutputOption(&args.output),
                                   size_option("start-offset", "start offset", &args.start),
                                   size_option("max-length", "max length", &args.max_length)};
  if (auto rc = ParseReadImageCommand("map", argc, argv, &args, options)) return *rc;
  if (!CheckFormatName(args.format)) return kExitFailure;
  coro::EventLoop loop;
  return loop.RunSync(RunMap(std::move(args)));
}

}  // namespace qedfuse::tools

// qedimg create: writes a new QED image through qed::CreateImage, byte-identical to
// `qemu-img create -f qed` with the same options. Like qemu-img, the backing file is opened to
// check it (and to take its size when SIZE is omitted). Unlike qemu-img 7.2,
// -F may be omitted: the backing file's format is then probed once, now, and a raw backing file
// is recorded as raw (so it is never probed again at open).

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "qedfuse/block/image_create.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

namespace qedfuse::tools {
namespace {

struct CreateArgs {
  qed::CreateOptions create;
  bool table_size_given = false;
  bool quiet = false;
  std::optional<uint64_t> size_arg;
};

// Opens the backing file (read-only, shared) to learn its size and format.
coro::Task<absl::Status> InspectBacking(const std::string& path, const std::string& format,
                                        uint64_t* size, std::string* probed_format) {
  block::OpenOptions opts;
  opts.path = path;
  opts.name = absl::StrFormat("backing file '%s'", path);  // messages name it once
  opts.format = format;
  opts.read_only = true;
  opts.lock = false;  // only reads the size; a running user of the file is fine
  block::OpenReport report;
  auto opened = co_await block::OpenImage(opts, &report);
  if (!opened.ok()) {
    co_return absl::Status(opened.status().code(),
                           absl::StrCat("Could not open ", opened.status().message()));
  }
  std::unique_ptr<block::BlockBackend> backend = std::move(*opened);
  *size = backend->length();
  *probed_format =
      report.format.empty() ? std::string(backend->driver().format_name()) : report.format;
  co_return co_await backend->Close();
}

coro::Task<int> RunCreate(CreateArgs args) {
  qed::CreateOptions& c = args.create;
  c.size = args.size_arg;
  if (!c.backing_file.empty() && (c.backing_format.empty() || !c.size)) {
    uint64_t backing_size = 0;
    std::string probed;
    std::string path = block::QemuBackingPath(c.path, c.backing_file);
    absl::Status st = co_await InspectBacking(path, c.backing_format, &backing_size, &probed);
    if (!st.ok()) {
      Error(absl::StrFormat("%s: %s", c.path, st.message()));
      co_return kExitFailure;
    }
    if (!c.size) c.size = backing_size;
    if (c.backing_format.empty() && probed == "raw") c.backing_format = "raw";
  }
  if (!c.size) {
    Error(absl::StrFormat("%s: Image creation needs a size parameter", c.path));
    co_return kExitFailure;
  }
  if (!args.quiet) {
    std::string line = absl::StrFormat("Formatting '%s', fmt=qed size=%llu", c.path,
                                       static_cast<unsigned long long>(*c.size));
    if (!c.backing_file.empty()) {
      line += " backing_file=" + c.backing_file;
      if (!c.backing_format.empty()) line += " backing_fmt=" + c.backing_format;
    }
    line += absl::StrFormat(" cluster_size=%u", c.cluster_size);
    if (args.table_size_given) line += absl::StrFormat(" table_size=%u", c.table_size);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  absl::Status st = qed::CreateImage(c);
  if (!st.ok()) {
    Error(absl::StrFormat("%s: %s", c.path, st.message()));
    HintOnLockConflict(st, OpenPurpose::kWrite);
    co_return kExitFailure;
  }
  co_return kExitOk;
}

// Applies one "-o key=value" pair shared by create and convert. Returns false (after printing
// an error) for unknown keys or bad values.
bool ApplyOption(const std::string& image, const std::string& key, const std::string& value,
                 qed::CreateOptions* c, bool* table_size_given) {
  if (key == "cluster_size" || key == "table_size") {
    auto v = ParseSizeParameter(image, key, value, UINT32_MAX);
    if (!v) return false;
    if (key == "cluster_size") {
      c->cluster_size = static_cast<uint32_t>(*v);
    } else {
      c->table_size = static_cast<uint32_t>(*v);
      if (table_size_given != nullptr) *table_size_given = true;
    }
    return true;
  }
  if (key == "backing_file") {
    c->backing_file = value;
    return true;
  }
  if (key == "backing_fmt") {
    c->backing_format = value;
    return true;
  }
  Error(absl::StrFormat("%s: Invalid parameter '%s'", image, key));
  return false;
}

}  // namespace

// Shared with convert: parses a -o list into |c|.
bool ParseCreateOptions(const std::string& image, const std::vector<std::string>& lists,
                        qed::CreateOptions* c, bool* table_size_given) {
  for (const std::string& list : lists) {
    std::vector<std::pair<std::string, std::string>> kv;
    absl::Status st = ParseOptionList(list, &kv);
    if (!st.ok()) {
      Error(st);
      return false;
    }
    for (const auto& [k, v] : kv) {
      if (!ApplyOption(image, k, v, c, table_size_given)) return false;
    }
  }
  return true;
}

int CreateCommand(int argc, char** argv) {
  CreateArgs args;
  std::vector<std::string> option_lists;
  std::string backing;
  std::string backing_fmt;
  auto format = [](const char* argument) {
    if (std::string(argument) != "qed") {
      Error(std::string("qedimg creates QED images only, not '") + argument + "'");
      return false;
    }
    return true;
  };
  auto option_list = [&option_lists](const char* argument) {
    option_lists.emplace_back(argument);
    return true;
  };
  const CommandOption options[] = {{nullptr, 'f', true, format},
                                   {nullptr, 'o', true, option_list},
                                   TextOption(nullptr, 'b', &backing),
                                   TextOption(nullptr, 'F', &backing_fmt),
                                   FlagOption("quiet", 'q', &args.quiet)};
  if (auto rc = ParseCommandOptions("create", argc, argv, options)) return *rc;
  if (optind >= argc) {
    Error("Expecting image file name");
    PrintUsage("create", true);
    return kExitFailure;
  }
  if (argc - optind > 2) {
    Error("Too many arguments");
    PrintUsage("create", true);
    return kExitFailure;
  }
  qed::CreateOptions& co = args.create;
  co.path = argv[optind];
  if (!ParseCreateOptions(co.path, option_lists, &co, &args.table_size_given)) return kExitFailure;
  if (!backing.empty()) co.backing_file = backing;
  if (!backing_fmt.empty()) co.backing_format = backing_fmt;
  if (!co.backing_format.empty() && co.backing_format != "raw" && co.backing_format != "qed") {
    Error(absl::StrFormat("%s: Unsupported backing format '%s' (supported: raw, qed)", co.path,
                          co.backing_format));
    return kExitFailure;
  }
  if (co.backing_file.empty() && !co.backing_format.empty()) {
    Error(absl::StrFormat("%s: -F (backing format) given without -b (backing file)", co.path));
    return kExitFailure;
  }
  if (optind + 1 < argc) {
    bool out_of_range = false;
    bool is_number = ParseSize(argv[optind + 1], &out_of_range).has_value() || out_of_range;
    auto size = ParseSizeArgument("image size", argv[optind + 1]);
    if (!size) {
      // Past qemu-img's range, the limit of the image's geometry is the useful figure.
      std::string capacity = QedCapacityText(co.cluster_size, co.table_size);
      if (is_number && !capacity.empty()) Error(co.path + ": " + capacity);
      return kExitFailure;
    }
    args.size_arg = *size;
  }
  coro::EventLoop loop;
  return loop.RunSync(RunCreate(std::move(args)));
}

}  // namespace qedfuse::tools

// qedimg resize: grows the virtual size of an image (QED: rewrites image_size in the header;
// raw: extends the file). Shrinking is refused, as `qemu-img resize` refuses it for QED: data
// past the new end would silently disappear while its clusters stay allocated.

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"
#include "qedfuse/base/errors.h"
#include "qedfuse/block/image_info.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

namespace qedfuse::tools {
namespace {

struct ResizeArgs {
  std::string image;
  std::string format;
  std::string size_text;
  bool quiet = false;
};

coro::Task<int> RunResize(ResizeArgs args) {
  char sign = 0;
  std::string text = args.size_text;
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
    sign = text[0];
    text.erase(0, 1);
  }
  auto amount = ParseSizeParameter("", "size", text);
  if (!amount) co_return kExitFailure;

  block::OpenOptions opts;
  opts.path = args.image;
  opts.format = args.format;
  opts.read_only = false;
  std::unique_ptr<block::BlockBackend> backend =
      co_await OpenImageOrReport(opts, OpenPurpose::kWrite);
  if (!backend) co_return kExitFailure;
  uint64_t current = backend->length();
  uint64_t target = *amount;
  bool bad = false;
  if (sign == '+') {
    bad = target > UINT64_MAX - current;
    target = current + target;
  } else if (sign == '-') {
    bad = target > current;
    target = current - target;
  }
  int rc = kExitOk;
  if (bad) {
    Error("Invalid image size specified");
    rc = kExitFailure;
  } else if (target < current) {
    Error(absl::StrFormat(
        "Shrinking images is currently not supported (%s is %llu bytes, requested %llu)",
        args.image, static_cast<unsigned long long>(current),
        static_cast<unsigned long long>(target)));
    rc = kExitFailure;
  } else if (target > current) {
    auto r = co_await backend->Truncate(target);
    if (!r) {
      if (r.error() == make_error_code(Errc::kOutOfRange)) {
        std::string why = "is not a multiple of 512";
        if (target % 512 == 0) {
          why = "is more than the image can hold";
          if (std::optional<block::QedHeaderInfo> h = block::QedHeaderOf(*backend)) {
            why += ": " + QedCapacityText(h->cluster_size, h->table_size);
          }
        }
        Error(absl::StrFormat("Invalid image size specified: %u bytes %s", target, why));
      } else {
        Error(absl::StrFormat("Error resizing image: %s", r.error().message()));
      }
      rc = kExitFailure;
    } else {
      auto f = co_await backend->Flush();
      if (!f) {
        Error(absl::StrFormat("Error resizing image: %s", f.error().message()));
        rc = kExitFailure;
      }
    }
  }
  absl::Status closed = co_await backend->Close();
  if (!closed.ok()) {
    Error(closed);
    rc = kExitFailure;
  }
  if (rc == kExitOk && !args.quiet) std::printf("Image resized.\n");
  co_return rc;
}

}  // namespace

int ResizeCommand(int argc, char** argv) {
  ResizeArgs args;
  const CommandOption options[] = {FlagOption("quiet", 'q', &args.quiet),
                                   TextOption("format", 'f', &args.format)};
  if (auto rc = ParseCommandOptions("resize", argc, argv, options)) return *rc;
  // "IMAGE -- -1G": a "--" between the two operands only protects a negative size.
  if (argc - optind == 3 && std::string_view(argv[optind + 1]) == "--") {
    argv[optind + 1] = argv[optind];
    ++optind;
  }
  if (!CheckOperandCount("resize", argc - optind, 2, "Expecting image file name and size")) {
    return kExitFailure;
  }
  args.image = argv[optind];
  args.size_text = argv[optind + 1];
  if (!CheckFormatName(args.format)) return kExitFailure;
  coro::EventLoop loop;
  return loop.RunSync(RunResize(std::move(args)));
}

}  // namespace qedfuse::tools

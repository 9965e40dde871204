// qedimg check: consistency check of a QED image with `qemu-img check`'s findings, output and
// exit codes:
//   0  no corruption and no leak        2  corruptions remain
//   3  only leaked clusters remain      1  the check could not run or hit I/O errors
//   63 the format has no check (raw)
// The image is opened for checking (block::OpenOptions::for_check: no repair at open, the
// NEED_CHECK flag untouched), read-only unless -r is given. With -r the first pass repairs, then
// a second pass without repair produces the figures that are printed, together with the counts
// fixed by the first pass, as qemu-img does ("Double checking the fixed image now...").
// Leaks use correct cluster arithmetic (qemu-img over-counts them on large images, quirk Q4).

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "qedfuse/block/image_info.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

namespace qedfuse::tools {
namespace {

constexpr int kExitCorrupt = 2;
constexpr int kExitLeaks = 3;
constexpr int kExitNotSupported = 63;

struct CheckArgs : ReadImageArgs {
  OutputFormat output = OutputFormat::kHuman;
  bool repair = false;
  bool quiet = false;
  bool progress = false;
};

void PrintHuman(const qed::CheckReport& r) {
  if (r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (r.corruptions != 0) {
      std::printf(
          "\n%llu errors were found on the image.\n"
          "Data may be corrupted, or further writes to the image may corrupt it.\n",
          static_cast<unsigned long long>(r.corruptions));
    }
    if (r.leaks != 0) {
      std::printf(
          "\n%llu leaked clusters were found on the image.\n"
          "This means waste of disk space, but no harm to data.\n",
          static_cast<unsigned long long>(r.leaks));
    }
    if (r.check_errors != 0) {
      std::printf("\n%llu internal errors have occurred during the check.\n",
                  static_cast<unsigned long long>(r.check_errors));
    }
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0) {
    double total = static_cast<double>(r.total_clusters);
    double alloc = static_cast<double>(r.allocated_clusters);
    std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters),
                static_cast<unsigned long long>(r.total_clusters), alloc * 100.0 / total,
                static_cast<double>(r.fragmented_clusters) * 100.0 / alloc, 0.0);
  }
  if (r.file_size != 0) {
    std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.file_size));
  }
}

void PrintJson(const qed::CheckReport& r, const std::string& filename) {
  // qemu-img leaves out every count that is zero, except check-errors.
  JsonObject o;
  o.Add("filename", filename);
  o.Add("format", "qed");
  o.Add("check-errors", r.check_errors);
  if (r.corruptions) o.Add("corruptions", r.corruptions);
  if (r.leaks) o.Add("leaks", r.leaks);
  if (r.corruptions_fixed) o.Add("corruptions-fixed", r.corruptions_fixed);
  if (r.leaks_fixed) o.Add("leaks-fixed", r.leaks_fixed);
  if (r.file_size) o.Add("image-end-offset", r.file_size);
  if (r.total_clusters) o.Add("total-clusters", r.total_clusters);
  if (r.allocated_clusters) o.Add("allocated-clusters", r.allocated_clusters);
  if (r.fragmented_clusters) o.Add("fragmented-clusters", r.fragmented_clusters);
  std::printf("%s\n", o.Render(0).c_str());
}

coro::Task<int> RunCheck(CheckArgs args) {
  block::OpenOptions opts = ReadOnlyOpenOptions(args);
  opts.read_only = !args.repair;
  opts.for_check = true;
  block::OpenReport report;
  std::unique_ptr<block::BlockBackend> backend = co_await OpenImageOrReport(
      opts, args.repair ? OpenPurpose::kWrite : OpenPurpose::kRead, &report);
  if (!backend) co_return kExitFailure;
  if (!qed::CanCheck(*backend)) {
    absl::Status closed = co_await backend->Close();
    (void)closed;
    Error("This image format does not support checks");
    co_return kExitNotSupported;
  }

  Progress progress(args.progress);
  progress.Update(0, 1);
  auto first = co_await qed::CheckOpenImage(*backend, args.repair);
  Result<qed::CheckReport> result = std::move(first);
  if (result && args.repair && (result->corruptions_fixed != 0 || result->leaks_fixed != 0)) {
    uint64_t corruptions_fixed = result->corruptions_fixed;
    uint64_t leaks_fixed = result->leaks_fixed;
    progress.Finish();
    if (args.output == OutputFormat::kHuman && !args.quiet) {
      std::printf(
          "The following inconsistencies were found and repaired:\n\n"
          "    %llu leaked clusters\n    %llu corruptions\n\n"
          "Double checking the fixed image now...\n",
          static_cast<unsigned long long>(leaks_fixed),
          static_cast<unsigned long long>(corruptions_fixed));
    }
    auto second = co_await qed::CheckOpenImage(*backend, false);
    result = std::move(second);
    if (result) {
      result->corruptions_fixed = corruptions_fixed;
      result->leaks_fixed = leaks_fixed;
    }
  }
  progress.Update(1, 1);
  progress.Finish();
  absl::Status closed = co_await backend->Close();

  if (!result) {
    Error(absl::StrFormat("Check failed: %s", result.error().message()));
    co_return kExitFailure;
  }
  const qed::CheckReport& r = *result;
  if (!args.quiet) {
    if (args.output == OutputFormat::kJson) {
      PrintJson(r, args.image);
    } else {
      PrintHuman(r);
    }
  }
  if (!closed.ok()) {
    Error(closed);
    co_return kExitFailure;
  }
  if (r.check_errors != 0) {
    Error("Check failed");
    co_return kExitFailure;
  }
  if (r.corruptions != 0) co_return kExitCorrupt;
  if (r.leaks != 0) co_return kExitLeaks;
  co_return kExitOk;
}

}  // namespace

int CheckCommand(int argc, char** argv) {
  CheckArgs args;
  args.progress = StdoutIsTty();
  bool progress_flag = false;
  // QED has one repair mode: both values repair invalid entries; leaks stay (as in QEMU).
  auto repair = [&args](const char* argument) {
    if (std::strcmp(argument, "leaks") != 0 && std::strcmp(argument, "all") != 0) {
      Error("Unknown option for -r (expecting 'leaks' or 'all'): " + std::string(argument));
      return false;
    }
    args.repair = true;
    return true;
  };
  const CommandOption options[] = {OutputOption(&args.output),
                                   {"repair", 'r', true, repair},
                                   FlagOption("quiet", 'q', &args.quiet),
                                   FlagOption("progress", 'p', &progress_flag)};
  if (auto rc = ParseReadImageCommand("check", argc, argv, &args, options)) return *rc;
  if (args.repair && args.force_share) {
    Error("--force-share/-U is not allowed together with -r");
    return kExitFailure;
  }
  if (!CheckFormatName(args.format)) return kExitFailure;
  // The progress indicator shares stdout with the report: only for human output, never quiet.
  args.progress =
      (args.progress || progress_flag) && args.output == OutputFormat::kHuman && !args.quiet;
  coro::EventLoop loop;
  return loop.RunSync(RunCheck(std::move(args)));
}

}  // namespace qedfuse::tools

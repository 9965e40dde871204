// qedimg info: what `qemu-img info` prints for a QED or raw image (same human lines, same JSON
// keys in the same order), plus a "Format specific information" block with the QED geometry,
// feature bits, the need-check flag as stored on disk, and the resolved backing chain.
//
// The image is opened read-only (for_check: never repaired) through block::OpenImage, so an
// image the block layer would refuse (bad header, unknown features) is reported the same way
// here; the numbers come from the opened layers (block::DescribeLayers). Like qemu-img, plain
// `info` describes one file and does not open its backing file (BackingPolicy::kNone): the
// backing lines come from the image's header, so an image whose backing file is missing or
// unreadable is still shown. --backing-chain opens the whole chain under the --backing policy
// and fails when a file of it cannot be opened.

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "qedfuse/block/image_info.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

namespace qedfuse::tools {
namespace {

using block::LayerInfo;

struct InfoArgs : ReadImageArgs {
  OutputFormat output = OutputFormat::kHuman;
  bool backing_chain = false;
};

JsonObject LayerJson(const LayerInfo& l, const std::vector<LayerInfo>* below) {
  JsonObject o;
  o.Add("virtual-size", l.virtual_size);
  o.Add("filename", l.filename);
  if (l.qed) o.Add("cluster-size", static_cast<uint64_t>(l.qed->cluster_size));
  o.Add("format", l.format);
  o.Add("actual-size", l.actual_size);
  if (!l.backing_name.empty()) {
    o.Add("backing-filename", l.backing_name);
    o.Add("full-backing-filename", l.full_backing);
    if (!l.backing_format.empty()) o.Add("backing-filename-format", l.backing_format);
  }
  // qemu-img 7.2 shows false here for QED even when the bit is set (quirk Q6); this is the bit
  // as stored on disk.
  o.Add("dirty-flag", l.qed ? l.qed->need_check : false);
  if (l.qed) {
    const block::QedHeaderInfo& h = *l.qed;
    JsonObject data;
    data.Add("table-size", static_cast<uint64_t>(h.table_size));
    data.Add("header-size", static_cast<uint64_t>(h.header_size));
    data.Add("features", h.features);
    data.Add("compat-features", h.compat_features);
    data.Add("autoclear-features", h.autoclear_features);
    data.Add("need-check", h.need_check);
    data.Add("l1-table-offset", h.l1_table_offset);
    data.Add("file-size", l.file_size);
    // The files opened below this one, with --backing-chain only (plain info opens none).
    if (below != nullptr) {
      JsonArray chain;
      for (const LayerInfo& b : *below) chain.emplace_back(b.filename);
      data.Add("backing-chain", std::move(chain));
    }
    JsonObject spec;
    spec.Add("type", "qed");
    spec.Add("data", std::move(data));
    o.Add("format-specific", std::move(spec));
  }
  return o;
}

void PrintHuman(const LayerInfo& l, const std::vector<LayerInfo>& below) {
  std::printf("image: %s\n", Printable(l.filename).c_str());
  std::printf("file format: %s\n", l.format.c_str());
  std::printf("virtual size: %s (%llu bytes)\n", HumanSize(l.virtual_size).c_str(),
              static_cast<unsigned long long>(l.virtual_size));
  std::printf("disk size: %s\n", HumanSize(l.actual_size).c_str());
  if (!l.qed) return;
  const block::QedHeaderInfo& h = *l.qed;
  std::printf("cluster_size: %u\n", h.cluster_size);
  if (!l.backing_name.empty()) {
    if (l.full_backing != l.backing_name) {
      std::printf("backing file: %s (actual path: %s)\n", Printable(l.backing_name).c_str(),
                  Printable(l.full_backing).c_str());
    } else {
      std::printf("backing file: %s\n", Printable(l.backing_name).c_str());
    }
    if (!l.backing_format.empty()) {
      std::printf("backing file format: %s\n", l.backing_format.c_str());
    }
  }
  std::printf("Format specific information:\n");
  std::printf("    table size: %u\n", h.table_size);
  std::printf("    header size: %u\n", h.header_size);
  std::printf("    features: 0x%llx (%s)\n", static_cast<unsigned long long>(h.features),
              block::QedFeatureNames(h.features).c_str());
  if (h.compat_features != 0) {
    std::printf("    compat features: 0x%llx\n",
                static_cast<unsigned long long>(h.compat_features));
  }
  if (h.autoclear_features != 0) {
    std::printf("    autoclear features: 0x%llx\n",
                static_cast<unsigned long long>(h.autoclear_features));
  }
  std::printf("    need check: %s\n", h.need_check ? "yes" : "no");
  std::printf("    l1 table offset: 0x%llx\n", static_cast<unsigned long long>(h.l1_table_offset));
  std::printf("    file size: %llu\n", static_cast<unsigned long long>(l.file_size));
  if (!below.empty()) {
    std::vector<std::string> names;
    for (const LayerInfo& b : below) names.push_back(Printable(b.filename) + " (" + b.format + ")");
    std::printf("    backing chain: %s\n", absl::StrJoin(names, " -> ").c_str());
  }
}

coro::Task<int> RunInfo(InfoArgs args) {
  block::OpenOptions opts = ReadOnlyOpenOptions(args);
  opts.for_check = true;  // report the image as it is; never repair while inspecting
  if (!args.backing_chain) opts.backing = block::BackingPolicy::kNone;
  block::OpenReport report;
  std::unique_ptr<block::BlockBackend> backend =
      co_await OpenImageOrReport(opts, OpenPurpose::kRead, &report);
  if (!backend) co_return kExitFailure;
  if (!report.chain.empty()) report.chain[0].path = args.image;  // shown as given
  // Read-only and for_check: what the open read is what the files hold.
  const std::vector<LayerInfo> layers = block::DescribeLayers(*backend, report.chain);
  const std::vector<LayerInfo>* chain = &layers;
  absl::Status closed = co_await backend->Close();
  if (!closed.ok()) Error(closed);

  std::size_t shown = args.backing_chain ? chain->size() : 1;
  if (args.output == OutputFormat::kJson) {
    if (args.backing_chain) {
      JsonArray arr;
      for (std::size_t i = 0; i < shown; ++i) {
        std::vector<LayerInfo> below(chain->begin() + static_cast<long>(i) + 1, chain->end());
        arr.emplace_back(LayerJson((*chain)[i], &below));
      }
      std::printf("%s\n", JsonValue(std::move(arr)).Render(0).c_str());
    } else {
      std::printf("%s\n", LayerJson(chain->front(), nullptr).Render(0).c_str());
    }
    co_return kExitOk;
  }
  for (std::size_t i = 0; i < shown; ++i) {
    if (i > 0) std::printf("\n");
    std::vector<LayerInfo> below(chain->begin() + static_cast<long>(i) + 1, chain->end());
    PrintHuman((*chain)[i], below);
  }
  co_return kExitOk;
}

}  // namespace

int InfoCommand(int argc, char** argv) {
  InfoArgs args;
  const CommandOption options[] = {OutputOption(&args.output),
                                   FlagOption("backing-chain", 0, &args.backing_chain)};
  if (auto rc = ParseReadImageCommand("info", argc, argv, &args, options)) return *rc;
  if (!CheckFormatName(args.format)) return kExitFailure;
  coro::EventLoop loop;
  return loop.RunSync(RunInfo(std::move(args)));
}

}  // namespace qedfuse::tools

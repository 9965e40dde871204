// Layer descriptions and the check of an open image, read from the driver graph; see
// qedfuse/block/image_info.h. This is the one place outside the drivers that knows their
// concrete types (as the format table does).
#include "qedfuse/block/image_info.h"

#include "absl/strings/str_format.h"
#include "block/qed/qed_driver.h"
#include "block/qed/qed_format.h"
#include "qedfuse/base/errors.h"

namespace qedfuse::block {
namespace {

QedHeaderInfo HeaderInfo(const qed::Header& h) {
  QedHeaderInfo i;
  i.cluster_size = h.cluster_size;
  i.table_size = h.table_size;
  i.header_size = h.header_size;
  i.features = h.features;
  i.compat_features = h.compat_features;
  i.autoclear_features = h.autoclear_features;
  i.l1_table_offset = h.l1_table_offset;
  i.need_check = h.need_check();
  return i;
}

}  // namespace

std::vector<LayerInfo> DescribeLayers(BlockBackend& image, const std::vector<ChainLink>& chain) {
  std::vector<LayerInfo> layers;
  BlockDriver* node = &image.driver();
  for (std::size_t i = 0; i < chain.size() && node != nullptr; ++i) {
    LayerInfo l;
    l.filename = chain[i].path;
    l.format = chain[i].format;
    l.virtual_size = node->length();
    l.file_size = node->length();
    l.actual_size = node->AllocatedBytes();
    BlockDriver* below = nullptr;
    if (auto* q = dynamic_cast<qed::QedDriver*>(node)) {
      l.qed = HeaderInfo(q->header());
      l.file_size = q->file().length();
      l.backing_name = q->backing_filename();
      below = q->backing();
      // The file below as QEMU names it, whether or not it was opened (qemu-img info shows it
      // without opening it).
      if (!l.backing_name.empty()) l.full_backing = QemuBackingPath(l.filename, l.backing_name);
      if (!l.backing_name.empty() && (q->header().features & qed::kFeatureBackingFormatNoProbe)) {
        l.backing_format = "raw";
      }
    }
    layers.push_back(std::move(l));
    node = below;
  }
  return layers;
}

std::optional<QedHeaderInfo> QedHeaderOf(BlockBackend& image) {
  if (auto* q = dynamic_cast<qed::QedDriver*>(&image.driver())) return HeaderInfo(q->header());
  return std::nullopt;
}

std::string QedFeatureNames(uint64_t features) {
  if (features == 0) return "none";
  std::string out;
  auto add = [&out](const std::string& s) {
    if (!out.empty()) out += ", ";
    out += s;
  };
  if (features & qed::kFeatureBackingFile) add("backing-file");
  if (features & qed::kFeatureNeedCheck) add("need-check");
  if (features & qed::kFeatureBackingFormatNoProbe) add("backing-format-no-probe");
  uint64_t unknown = features & ~qed::kKnownFeatures;
  if (unknown != 0) add(absl::StrFormat("unknown 0x%x", unknown));
  return out;
}

}  // namespace qedfuse::block

namespace qedfuse::qed {

bool CanCheck(block::BlockBackend& image) {
  return dynamic_cast<QedDriver*>(&image.driver()) != nullptr;
}

coro::Task<Result<CheckReport>> CheckOpenImage(block::BlockBackend& image, bool repair) {
  auto* q = dynamic_cast<QedDriver*>(&image.driver());
  if (q == nullptr) co_return Unexpected(Errc::kNotSupported);
  co_return co_await q->Check(repair);
}

}  // namespace qedfuse::qed

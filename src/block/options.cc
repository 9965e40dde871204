// The option vocabulary's helpers: backing policy names, the chain description, QEMU's backing
// name rule. See options.h.
#include "qedfuse/block/options.h"

#include "absl/strings/str_cat.h"
#include "qedfuse/base/enum_names.h"

namespace qedfuse::block {

namespace {
// "null" is also accepted when parsing, as QEMU's name for "no backing file".
constexpr EnumName<BackingPolicy> kBackingPolicyNames[] = {{BackingPolicy::kFollow, "follow"},
                                                           {BackingPolicy::kConfined, "confined"},
                                                           {BackingPolicy::kNone, "none"}};
}  // namespace

std::string_view BackingPolicyName(BackingPolicy p) {
  return NameOf(kBackingPolicyNames, p, "follow");
}

std::optional<BackingPolicy> ParseBackingPolicy(std::string_view name) {
  if (name == "null") return BackingPolicy::kNone;
  return ValueOf(kBackingPolicyNames, name);
}

std::string DescribeChain(const std::vector<ChainLink>& chain) {
  std::string text;
  for (const ChainLink& l : chain) {
    if (!text.empty()) absl::StrAppend(&text, " -> ");
    absl::StrAppend(&text, l.path, " (", l.format, ")");
    if (l.backing_ignored) absl::StrAppend(&text, " [backing file '", l.backing_name, "' ignored]");
  }
  return text;
}

std::string QemuBackingPath(const std::string& image_path, const std::string& stored) {
  const std::size_t slash = image_path.rfind('/');
  if (stored.empty() || stored.front() == '/' || slash == std::string::npos) return stored;
  return image_path.substr(0, slash + 1) + stored;
}

}  // namespace qedfuse::block

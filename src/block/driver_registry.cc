// Format table: qed (probed by magic) and raw (the fallback).
#include "block/driver_registry.h"

#include <array>

#include "block/raw/raw_driver.h"

// Declared weak until the QED driver is linked into every binary; a missing definition makes
// the "qed" format unavailable instead of failing the link. Same signatures as qed_driver.h.
namespace qedfuse::qed {
__attribute__((weak)) bool ProbeQed(std::span<const std::byte> first_bytes);
__attribute__((weak)) coro::Task<absl::StatusOr<std::unique_ptr<block::BlockDriver>>> OpenQed(
    std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
    block::ChainContext& chain, block::OpenReport* report);
}  // namespace qedfuse::qed

namespace qedfuse::block {
namespace {

coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenRaw(std::unique_ptr<BlockDriver> file,
                                                                 const OpenOptions& /*options*/,
                                                                 ChainContext& /*chain*/,
                                                                 OpenReport* /*report*/) {
  co_return std::make_unique<RawDriver>(std::move(file));
}

const std::array<FormatInfo, 2> kFormats = {{
    {"qed", &qed::ProbeQed, &qed::OpenQed, /*has_metadata=*/true},
    {"raw", nullptr, &OpenRaw, /*has_metadata=*/false},
}};

}  // namespace

std::span<const FormatInfo> Formats() { return kFormats; }

const FormatInfo* FindFormat(std::string_view name) {
  for (const FormatInfo& f : kFormats) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const FormatInfo& ProbeFormat(std::span<const std::byte> head) {
  for (const FormatInfo& f : kFormats) {
    if (f.probe != nullptr && f.probe(head)) return f;
  }
  return *FindFormat("raw");
}

}  // namespace qedfuse::block

// The table of image formats OpenDriver() knows (QEMU's BlockDriver list, an explicit table
// with no static registration): a name, a probe over the first bytes of the file, and an opener
// that builds the format node on top of the already-open protocol node.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "block/backing_chain.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

// How many leading bytes of a file the probes look at.
inline constexpr std::size_t kProbeBytes = 512;

using FormatOpenFn = coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> (*)(
    std::unique_ptr<BlockDriver> file, const OpenOptions& options, ChainContext& chain,
    OpenReport* report);

struct FormatInfo {
  std::string_view name;
  // True if |head| (kProbeBytes, zero-padded past the end of a short file) is this format.
  // Null for formats that are never probed (raw is the fallback).
  bool (*probe)(std::span<const std::byte> head);
  FormatOpenFn open;
  // The format keeps its own metadata in the file (QEMU also refuses others write/resize then).
  bool has_metadata;
};

// Every known format, probed formats first.
std::span<const FormatInfo> Formats();

// The format called |name|, or nullptr.
const FormatInfo* FindFormat(std::string_view name);

// The first format whose probe accepts |head|; raw if none does. Never null.
const FormatInfo& ProbeFormat(std::span<const std::byte> head);

// The name of an image format we do not serve (qcow2, vmdk, vdi, vhdx, vpc, luks, ...) whose
// signature |head| carries, or an empty view. A probe that falls back to raw must not serve such
// a file as a disk: its bytes are another format's metadata, and a write would corrupt it.
std::string_view ForeignFormat(std::span<const std::byte> head);

}  // namespace qedfuse::block

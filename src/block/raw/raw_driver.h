// block::RawDriver: the raw format, a passthrough over a protocol node (QEMU's raw-format).
//
// Guest offset == file offset; the length is the file's. It exists as the control case for
// tests and benchmarks and to serve raw backing files. A FilterDriver that changes nothing but
// its name: every data-path call reaches the child unchanged, so the child's limits apply.
#pragma once

#include <memory>
#include <utility>

#include "qedfuse/block/filter_driver.h"

namespace qedfuse::block {

class RawDriver final : public FilterDriver {
 public:
  explicit RawDriver(std::unique_ptr<BlockDriver> file) : FilterDriver(std::move(file)) {}

  std::string_view format_name() const override { return "raw"; }
};

}  // namespace qedfuse::block

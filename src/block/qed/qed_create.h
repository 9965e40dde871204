// Image creation, byte-identical to `qemu-img create -f qed` (docs/qed-format.md §12).
#pragma once

#include "block/qed/qed_format.h"
#include "qedfuse/block/image_create.h"

namespace qedfuse::qed {

// CreateOptions and CreateImage are public (qedfuse/block/image_create.h).

}  // namespace qedfuse::qed

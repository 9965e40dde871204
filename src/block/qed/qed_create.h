// Image creation, byte-identical to `qemu-img create -f qed` (qed-format.md §8.1).
#pragma once

#include "block/qed/qed_format.h"
#include "qedfuse/block/image_create.h"

namespace qedfuse::qed {

// CreateOptions and CreateImage are public (qedfuse/block/image_create.h).

}  // namespace qedfuse::qed

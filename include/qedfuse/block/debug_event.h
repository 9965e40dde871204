// block::DebugEvent: points in a format driver's I/O path that tests can hook (QEMU's
// BLKDBG_EVENT / blkdebug).
//
// A format driver announces what its *next* child I/O is for, right before issuing it:
//
//   file_->Annotate(DebugEvent::kL2Update);      // tells the child what comes next
//   QEDFUSE_CO_TRY(co_await file_->Write(l2_offset, iov));
//
// BlockDriver::Annotate() is a no-op on ordinary drivers (FileProtocol, RawDriver, MemFile), so
// production code pays one virtual call per event. FaultInjectionDriver
// (src/block/debug/fault_injection_driver.h) overrides it: a rule keyed on an event is armed when
// the event is announced and then applies to the next child I/O (fails it with an errno, or holds
// it at a breakpoint until the test resumes it). Announcing an event never fails and never
// suspends; a driver that has no child I/O to follow an event may still announce it.
#pragma once

#include <cstdint>
#include <iterator>
#include <string_view>

#include "qedfuse/base/enum_names.h"

namespace qedfuse::block {

enum class DebugEvent : uint8_t {
  kL1Update,        // before writing (part of) the L1 table
  kL2Load,          // before reading an L2 table into the cache
  kL2Update,        // before writing L2 entries of an existing table
  kL2AllocWrite,    // before writing a newly allocated L2 table
  kCowRead,         // before reading backing data for copy-on-write
  kCowWrite,        // before writing copy-on-write padding
  kWriteData,       // before writing guest data
  kReadData,        // before reading guest data
  kHeaderUpdate,    // before rewriting the image header
  kFlush,           // before flushing the child
  kNeedCheckSet,    // before the header write that sets NEED_CHECK
  kNeedCheckClear,  // before the header write that clears NEED_CHECK
  kRelocate,        // before writing the copy of a cluster or table that compaction moves
};

inline constexpr int kDebugEventCount = 13;

inline constexpr EnumName<DebugEvent> kDebugEventNames[] = {
    {DebugEvent::kL1Update, "l1_update"},
    {DebugEvent::kL2Load, "l2_load"},
    {DebugEvent::kL2Update, "l2_update"},
    {DebugEvent::kL2AllocWrite, "l2_alloc_write"},
    {DebugEvent::kCowRead, "cow_read"},
    {DebugEvent::kCowWrite, "cow_write"},
    {DebugEvent::kWriteData, "write_data"},
    {DebugEvent::kReadData, "read_data"},
    {DebugEvent::kHeaderUpdate, "header_update"},
    {DebugEvent::kFlush, "flush"},
    {DebugEvent::kNeedCheckSet, "need_check_set"},
    {DebugEvent::kNeedCheckClear, "need_check_clear"},
    {DebugEvent::kRelocate, "relocate"},
};
static_assert(std::size(kDebugEventNames) == kDebugEventCount, "every DebugEvent has a name");

constexpr std::string_view DebugEventName(DebugEvent e) {
  return NameOf(kDebugEventNames, e, "unknown");
}

}  // namespace qedfuse::block

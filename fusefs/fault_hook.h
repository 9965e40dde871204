// --debug-fault=RULE: fault injection on a live mount (a testing aid; see qedfuse(1), DEBUGGING
// OPTIONS). Each rule becomes a block::FaultRule of a block::FaultInjectionDriver put between the
// top image's format driver and its file (OpenOptions::wrap_image_file), so the image-file
// operations the rule picks fail with the chosen errno, and the FUSE client sees that errno.
//
// Rule syntax: comma-separated KEY=VALUE items, each key at most once.
//   io=any|read|write|flush|zero|truncate   kind of image-file operation to fail (default any)
//   event=NAME        fail the next matching operation after the QED driver announces NAME
//                     (l1_update, l2_load, l2_update, l2_alloc_write, cow_read, cow_write,
//                     write_data, read_data, header_update, flush, need_check_set,
//                     need_check_clear); without it the rule matches operations directly
//   error=NAME        errno of the failure: EIO (default), ENOSPC, EDQUOT, EROFS, EFBIG
//   skip=N            let N matching operations (or, with event=, announcements) pass first
//   count=N|always    how often the rule fires (default 1)
//   armed=PATH        the rule is active only while the file PATH exists: it is checked (one
//                     access(2)) before every image-file operation; skip and count start afresh
//                     each time PATH appears, so a test creates PATH when the setup is done
//   die               once the rule has fired, every later image-file operation fails with EIO
//                     (the "disk died here" point; the image is left as after a crash)
//   delay=MS          instead of failing, hold each operation the rule picks and let it through
//                     within MS milliseconds (a slow or stalled disk; excludes error= and die)
// Without armed=, a rule is active from the open onwards (the open's own reads count).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "qedfuse/block/debug/fault_injection_driver.h"

namespace qedfuse::fusefs {

struct ParsedFaultRule {
  block::FaultRule rule;
  std::string armed_path;  // empty: always active
  // delay=MS: the rule holds operations (rule.suspend) for up to this long; zero otherwise.
  std::chrono::milliseconds delay{0};
  std::string text;  // the rule as given, for messages
};

// Parses one --debug-fault rule; InvalidArgument naming the problem if it is malformed.
absl::StatusOr<ParsedFaultRule> ParseFaultRule(std::string_view text);

}  // namespace qedfuse::fusefs

// Messages and names made safe to print: control characters (a stranger's file name may carry
// terminal escapes) shown as \xHH, and words that run to kilobytes cut to their head and tail.
// The one place where both qedimg's error output and the daemon's log sink get this.
#pragma once

#include <string>
#include <string_view>

namespace qedfuse {

// |message| with control characters other than newline shown as \xHH, and any word (between
// spaces and newlines) longer than 200 shown characters cut to its head and tail, so that no
// message runs to kilobytes (a name gone wild).
std::string ReadableMessage(std::string_view message);
// |text| with every control character, newline included, shown as \xHH: names taken from an
// image, as human-readable output prints them (JSON output escapes them its own way).
std::string Printable(std::string_view text);

}  // namespace qedfuse

// ReadableMessage and Printable; see readable.h.
#include "qedfuse/base/readable.h"

#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace qedfuse {
namespace {

// ReadableMessage shortens words whose escaped form is longer than kLongWord to at most
// kWordHead + kWordTail shown characters.
constexpr std::size_t kLongWord = 200;
constexpr std::size_t kWordHead = 96;
constexpr std::size_t kWordTail = 32;

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }
// In a message, a newline is a line break the message meant.
bool NeedsEscape(unsigned char c) { return IsControl(c) && c != '\n'; }
std::size_t EscapedSize(unsigned char c) { return NeedsEscape(c) ? 4 : 1; }
bool Continuation(unsigned char c) { return (c & 0xC0) == 0x80; }  // inside a UTF-8 character

void AppendEscaped(std::string_view s, std::string* out,
                   bool (*escape)(unsigned char) = NeedsEscape) {
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (escape(c)) {
      absl::StrAppendFormat(out, "\\x%02x", c);
    } else {
      out->push_back(ch);
    }
  }
}

void AppendWord(std::string_view word, std::string* out) {
  std::size_t shown = 0;
  for (char c : word) shown += EscapedSize(static_cast<unsigned char>(c));
  if (shown <= kLongWord) {
    AppendEscaped(word, out);
    return;
  }
  // Cut at whole characters and whole escapes: the head and tail keep at most kWordHead and
  // kWordTail shown characters.
  std::size_t head = 0;
  for (std::size_t n = 0; head < word.size(); ++head) {
    n += EscapedSize(static_cast<unsigned char>(word[head]));
    if (n > kWordHead) break;
  }
  while (head > 0 && Continuation(static_cast<unsigned char>(word[head]))) --head;
  std::size_t tail = word.size();
  for (std::size_t n = 0; tail > head; --tail) {
    n += EscapedSize(static_cast<unsigned char>(word[tail - 1]));
    if (n > kWordTail) break;
  }
  while (tail < word.size() && Continuation(static_cast<unsigned char>(word[tail]))) ++tail;
  AppendEscaped(word.substr(0, head), out);
  absl::StrAppendFormat(out, "...[%u bytes not shown]...", tail - head);
  AppendEscaped(word.substr(tail), out);
}

}  // namespace

std::string ReadableMessage(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  std::size_t start = 0;
  while (true) {
    std::size_t end = message.find_first_of(" \n", start);
    if (end == std::string_view::npos) end = message.size();
    AppendWord(message.substr(start, end - start), &out);
    if (end == message.size()) break;
    out.push_back(message[end]);
    start = end + 1;
  }
  return out;
}

std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendEscaped(text, &out, IsControl);
  return out;
}

}  // namespace qedfuse

// Implementation of the qedimg helpers; see tool_util.h.
#include "src/tools/tool_util.h"

#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_format.h"
#include "qedfuse/block/image_create.h"
#include "src/tools/commands.h"

namespace qedfuse::tools {
namespace {
__extension__ typedef unsigned __int128 U128;  // GCC/Clang extension; exact 64x64 products
}  // namespace

void Error(std::string_view message) {
  std::string text = ReadableMessage(message);
  std::fprintf(stderr, "%s: %s\n", kProgram, text.c_str());
}

void Hint(std::string_view line) {
  std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
}

void Error(const absl::Status& status) {
  std::string msg(status.message());
  if (msg.empty()) msg = status.ToString();
  Error(msg);
}

bool ParseOutputOption(const char* text, OutputFormat* out) {
  std::optional<OutputFormat> f = ParseOutputFormat(text);
  if (!f) {
    Error("--output must be used with human or json as argument.");
    return false;
  }
  *out = *f;
  return true;
}

bool CheckOperandCount(const char* command, int operands, int count, const char* too_few,
                       const char* too_many) {
  if (operands == count) return true;
  Error(operands < count ? too_few : too_many);
  PrintUsage(command, true);
  return false;
}

bool CheckFormatName(const std::string& format) {
  if (format.empty() || format == "qed" || format == "raw") return true;
  Error("Unknown file format '" + format + "' (supported: qed, raw)");
  return false;
}

namespace {

// ParseSize, telling an overflow (*overflow = true) from a syntax error.
std::optional<uint64_t> ParseSizeChecked(std::string_view text, bool* overflow) {
  std::string_view s = text;
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  // Hexadecimal: plain bytes, no suffix and no fraction (qemu accepts the same).
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    uint64_t v = 0;
    for (char c : s.substr(2)) {
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return std::nullopt;
      }
      if (v > (UINT64_MAX >> 4)) {
        *overflow = true;
        return std::nullopt;
      }
      v = (v << 4) | static_cast<uint64_t>(d);
    }
    return v;
  }
  std::size_t i = 0;
  uint64_t whole = 0;
  bool digits = false;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    // Keep scanning on overflow: "99999999999999999999x" is a syntax error, not a range one.
    if (whole > (UINT64_MAX - d) / 10) *overflow = true;
    whole = *overflow ? whole : whole * 10 + d;
    digits = true;
    ++i;
  }
  // Fraction, kept as an exact decimal numerator/denominator (at most 18 digits).
  uint64_t frac_num = 0;
  uint64_t frac_den = 1;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (frac_den < 1000000000000000000ull) {
        frac_num = frac_num * 10 + static_cast<uint64_t>(s[i] - '0');
        frac_den *= 10;
      }
      digits = true;
      ++i;
    }
  }
  if (!digits) return std::nullopt;
  unsigned shift = 0;
  if (i < s.size()) {
    switch (s[i]) {
      case 'b':
      case 'B':
        shift = 0;
        break;
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      case 'p':
      case 'P':
        shift = 50;
        break;
      case 'e':
      case 'E':
        shift = 60;
        break;
      default:
        *overflow = false;
        return std::nullopt;
    }
    ++i;
  }
  if (i != s.size()) {
    *overflow = false;
    return std::nullopt;
  }
  if (*overflow || (shift > 0 && whole > (UINT64_MAX >> shift))) {
    *overflow = true;
    return std::nullopt;
  }
  uint64_t value = whole << shift;
  if (frac_num != 0) {
    // frac_num / frac_den * 2^shift, truncated; computed in 128 bits to avoid overflow.
    U128 f = (static_cast<U128>(frac_num) << shift) / frac_den;
    if (f > UINT64_MAX - value) {
      *overflow = true;
      return std::nullopt;
    }
    value += static_cast<uint64_t>(f);
  }
  return value;
}

}  // namespace

std::optional<uint64_t> ParseSize(std::string_view text, bool* out_of_range) {
  bool overflow = false;
  std::optional<uint64_t> v = ParseSizeChecked(text, &overflow);
  if (out_of_range != nullptr) *out_of_range = overflow;
  return v;
}

std::optional<uint64_t> ParseSizeArgument(std::string_view what, std::string_view text,
                                          uint64_t max) {
  bool overflow = false;
  std::optional<uint64_t> v = ParseSize(text, &overflow);
  if (!v && !overflow) {
    Error(
        absl::StrFormat("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what));
    Error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    return std::nullopt;
  }
  if (!v || *v > max) {
    Error(absl::StrFormat("Invalid %s specified. Must be between 0 and %u.", what, max));
    return std::nullopt;
  }
  return v;
}

std::optional<uint64_t> ParseSizeParameter(std::string_view context, std::string_view name,
                                           std::string_view value, uint64_t max) {
  std::string prefix = context.empty() ? "" : std::string(context) + ": ";
  bool overflow = false;
  std::optional<uint64_t> v = ParseSize(value, &overflow);
  if (!v && !overflow) {
    Error(
        absl::StrFormat("%sParameter '%s' expects a non-negative number below 2^64", prefix, name));
    Hint("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-");
    Hint("and exabytes, respectively.");
    return std::nullopt;
  }
  if (!v || *v > max) {
    Error(absl::StrFormat("%sValue '%s' is out of range for parameter '%s'", prefix, value, name));
    return std::nullopt;
  }
  return v;
}

std::string QedCapacityText(uint32_t cluster_size, uint32_t table_size) {
  std::optional<uint64_t> max = qed::MaxVirtualSize(cluster_size, table_size);
  if (!max) return "";
  return absl::StrFormat(
      "with cluster_size=%u and table_size=%u a QED image holds at most %u "
      "bytes (%s)",
      cluster_size, table_size, *max, HumanSize(*max));
}

block::OpenOptions ReadOnlyOpenOptions(const ReadImageArgs& args) {
  block::OpenOptions opts;
  opts.path = args.image;
  opts.format = args.format;
  opts.read_only = true;
  opts.lock = !args.force_share;
  opts.backing = args.backing;
  return opts;
}

coro::Task<std::unique_ptr<block::BlockBackend>> OpenImageOrReport(
    const block::OpenOptions& options, OpenPurpose purpose, block::OpenReport* report) {
  auto opened = co_await block::OpenImage(options, report);
  if (!opened.ok()) {
    Error(absl::StrFormat("Could not open '%s': %s", options.path, opened.status().message()));
    HintOnLockConflict(opened.status(), purpose);
    co_return nullptr;
  }
  co_return std::move(*opened);
}

void HintOnLockConflict(const absl::Status& status, OpenPurpose purpose) {
  // The block layer reports a lock held by another process, and nothing else, as kUnavailable.
  if (status.code() != absl::StatusCode::kUnavailable) return;
  if (purpose == OpenPurpose::kRead) {
    Hint("Use -U (--force-share) to read it while the other process has it open; what you see");
    Hint("may be inconsistent while that process writes.");
  } else {
    Hint("It cannot be changed while another process (qemu, qemu-storage-daemon, a qedfuse");
    Hint("mount) has it open: stop that process or unmount it first.");
  }
}

std::string HumanSize(uint64_t bytes) {
  static constexpr const char* kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  // Same rule as QEMU: switch to the next unit once the value reaches 1000 of the current one.
  int exp = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exp);
  int i = (exp - 1) / 10;
  if (i < 0) i = 0;
  if (i > 6) i = 6;
  double div = std::ldexp(1.0, i * 10);
  return absl::StrFormat("%0.3g %sB", static_cast<double>(bytes) / div, kSuffixes[i]);
}

absl::Status ParseOptionList(std::string_view text,
                             std::vector<std::pair<std::string, std::string>>* out) {
  std::string cur;
  std::vector<std::string> items;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        cur.push_back(',');
        ++i;
        continue;
      }
      items.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    cur.push_back(text[i]);
  }
  items.push_back(std::move(cur));
  for (const std::string& item : items) {
    if (item.empty()) continue;
    std::size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    if (key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Invalid option list: '%s'", std::string(text)));
    }
    out->emplace_back(key, eq == std::string::npos ? "on" : item.substr(eq + 1));
  }
  return absl::OkStatus();
}

namespace {

// QEMU's QDict bucket for |key| (tdb_hash modulo QDICT_BUCKET_MAX).
unsigned QdictBucket(const std::string& key) {
  uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (std::size_t i = 0; i < key.size(); ++i) {
    value += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  }
  return (1103515243u * value + 12345u) % 512u;
}

std::string Spaces(int n) { return std::string(static_cast<std::size_t>(n), ' '); }

}  // namespace

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04X", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

JsonObject& JsonObject::Add(std::string key, JsonValue value) {
  entries_.emplace_back(std::move(key), std::move(value));
  return *this;
}

std::string JsonObject::Render(int indent) const {
  if (entries_.empty()) return "{}";
  std::vector<std::size_t> order(entries_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [this](std::size_t a, std::size_t b) {
    unsigned ba = QdictBucket(entries_[a].first);
    unsigned bb = QdictBucket(entries_[b].first);
    if (ba != bb) return ba < bb;
    return a > b;  // newest first within a bucket (list head insertion)
  });
  std::string out = "{\n";
  for (std::size_t k = 0; k < order.size(); ++k) {
    const auto& [key, value] = entries_[order[k]];
    out += Spaces(indent + 4) + JsonQuote(key) + ": " + value.Render(indent + 4);
    out += (k + 1 < order.size()) ? ",\n" : "\n";
  }
  out += Spaces(indent) + "}";
  return out;
}

std::string JsonValue::Render(int indent) const {
  if (const auto* i = std::get_if<int64_t>(&v_)) return absl::StrFormat("%d", *i);
  if (const auto* b = std::get_if<bool>(&v_)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&v_)) return JsonQuote(*s);
  if (const auto* o = std::get_if<JsonObject>(&v_)) return o->Render(indent);
  const auto& a = std::get<JsonArray>(v_);
  if (a.empty()) return "[]";
  std::string out = "[\n";
  for (std::size_t k = 0; k < a.size(); ++k) {
    out += Spaces(indent + 4) + a[k].Render(indent + 4);
    out += (k + 1 < a.size()) ? ",\n" : "\n";
  }
  out += Spaces(indent) + "]";
  return out;
}

std::optional<OutputFormat> ParseOutputFormat(std::string_view text) {
  if (text == "human") return OutputFormat::kHuman;
  if (text == "json") return OutputFormat::kJson;
  return std::nullopt;
}

void Progress::Update(uint64_t done, uint64_t total) {
  if (!enabled_ || finished_) return;
  int hundredths =
      total == 0 ? 10000
                 : static_cast<int>(std::min<U128>(10000, static_cast<U128>(done) * 10000 / total));
  if (started_ && hundredths == last_) return;
  started_ = true;
  last_ = hundredths;
  std::printf("    (%d.%02d/100%%)\r", hundredths / 100, hundredths % 100);
  std::fflush(stdout);
}

void Progress::Finish() {
  if (!enabled_ || finished_) return;
  if (!started_ || last_ != 10000) {
    std::printf("    (100.00/100%%)\r");
  }
  std::printf("\n");
  std::fflush(stdout);
  finished_ = true;
}

bool StdoutIsTty() { return ::isatty(STDOUT_FILENO) == 1; }

bool ParseBackingOption(const char* text, block::BackingPolicy* out) {
  std::optional<block::BackingPolicy> p = block::ParseBackingPolicy(text);
  if (!p) {
    Error(absl::StrCat("Invalid --backing value '", text, "' (use follow, confined or none)"));
    return false;
  }
  *out = *p;
  return true;
}

CommandOption FlagOption(const char* long_name, char short_name, bool* target) {
  return {long_name, short_name, false, [target](const char*) {
            *target = true;
            return true;
          }};
}

CommandOption TextOption(const char* long_name, char short_name, std::string* target) {
  return {long_name, short_name, true, [target](const char* argument) {
            *target = argument;
            return true;
          }};
}

CommandOption BackingOption(block::BackingPolicy* target) {
  return {"backing", 0, true,
          [target](const char* argument) { return ParseBackingOption(argument, target); }};
}

CommandOption OutputOption(OutputFormat* target) {
  return {"output", 0, true,
          [target](const char* argument) { return ParseOutputOption(argument, target); }};
}

std::optional<int> ParseCommandOptions(const char* command, int argc, char** argv,
                                       std::span<const CommandOption> options) {
  // getopt_long reports a long-only option by a code above every char; index i gets kLongOnly + i.
  constexpr int kLongOnly = 256;
  std::string short_options = "+h";
  std::vector<option> long_options{{"help", no_argument, nullptr, 'h'}};
  for (std::size_t i = 0; i < options.size(); ++i) {
    const CommandOption& o = options[i];
    assert(o.long_name != nullptr || o.short_name != 0);
    assert(o.short_name != 'h');
    if (o.short_name != 0) {
      short_options += o.short_name;
      if (o.has_argument) short_options += ':';
    }
    if (o.long_name != nullptr) {
      int code = o.short_name != 0 ? o.short_name : kLongOnly + static_cast<int>(i);
      long_options.push_back(
          {o.long_name, o.has_argument ? required_argument : no_argument, nullptr, code});
    }
  }
  long_options.push_back({nullptr, 0, nullptr, 0});

  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, short_options.c_str(), long_options.data(), nullptr)) != -1) {
    if (c == 'h') {
      PrintUsage(command, false);
      return kExitOk;
    }
    auto it = std::find_if(options.begin(), options.end(), [&](const CommandOption& o) {
      return o.short_name != 0 ? c == o.short_name : c == kLongOnly + (&o - options.data());
    });
    if (it == options.end()) {  // '?': getopt_long has named the unknown option
      PrintUsage(command, true);
      return kExitFailure;
    }
    if (!it->apply(optarg)) return kExitFailure;
  }
  return std::nullopt;
}

std::optional<int> ParseReadImageCommand(const char* command, int argc, char** argv,
                                         ReadImageArgs* args,
                                         std::span<const CommandOption> options) {
  std::vector<CommandOption> all{BackingOption(&args->backing)};
  all.insert(all.end(), options.begin(), options.end());
  all.push_back(FlagOption("force-share", 'U', &args->force_share));
  all.push_back(TextOption("format", 'f', &args->format));
  if (std::optional<int> rc = ParseCommandOptions(command, argc, argv, all)) return rc;
  if (!CheckOperandCount(command, argc - optind, 1, "Expecting one image file name")) {
    return kExitFailure;
  }
  args->image = argv[optind];
  return std::nullopt;
}

}  // namespace qedfuse::tools

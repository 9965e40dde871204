// Helpers shared by the qedimg subcommands: size parsing and printing in qemu-img's
// conventions, "-o key=value,..." option lists, a JSON object writer that emits keys in the
// same order as qemu-img (so outputs can be compared with diff), the progress indicator, and
// error reporting with the program's name.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "qedfuse/base/readable.h"
#include "qedfuse/block/open.h"

namespace qedfuse::tools {

inline constexpr const char* kProgram = "qedimg";

// Exit codes shared by every subcommand (check has more, see img_check.cc).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;

// Prints "qedimg: <message>" to stderr, made readable first (ReadableMessage).
void Error(std::string_view message);
// Prints "qedimg: <status message>" to stderr.
void Error(const absl::Status& status);
// Prints |line| to stderr without the program prefix: the advice qemu-img prints on the line
// after an error ("Try 'qedimg --help' for more information").
void Hint(std::string_view line);

// ReadableMessage and Printable: qedfuse/base/readable.h.

// Parses a size such as "1048576", "64k", "1.5G", "2T" (suffixes b/k/M/G/T/P/E, case-insensitive,
// powers of 1024, like qemu-img). Returns nullopt on syntax errors or overflow; |out_of_range|,
// when given, tells which (true: the value does not fit in 64 bits).
std::optional<uint64_t> ParseSize(std::string_view text, bool* out_of_range = nullptr);

// A size given as an operand or option value (qemu-img's cvtnum): on a syntax error, or a value
// above |max|, prints qemu-img's message naming |what| ("image size", "start offset") and returns
// nullopt.
std::optional<uint64_t> ParseSizeArgument(std::string_view what, std::string_view text,
                                          uint64_t max = INT64_MAX);

// The value of a size parameter (an -o key, resize's SIZE): on failure prints qemu-img's
// message for parameter |name|, after "|context|: " when |context| is not empty.
std::optional<uint64_t> ParseSizeParameter(std::string_view context, std::string_view name,
                                           std::string_view value, uint64_t max = UINT64_MAX);

// "with cluster_size=65536 and table_size=4 a QED image holds at most 70368744177664 bytes
// (64 TiB)", or "" for a geometry QED does not allow.
std::string QedCapacityText(uint32_t cluster_size, uint32_t table_size);

// Who opens an image, for OpenImageOrReport's advice on a lock held by another process.
enum class OpenPurpose {
  kRead,   // a command that only reads and takes -U (info, check, map, convert's source)
  kWrite,  // a command that changes the image (resize, check -r, convert's target)
};
// The arguments of every command that reads an image: the image, -f, -U and --backing.
struct ReadImageArgs {
  block::BackingPolicy backing = block::BackingPolicy::kFollow;
  std::string image;
  std::string format;  // empty: probe
  bool force_share = false;
};
// The options to open |args.image| only for reading: read-only, locked unless -U.
block::OpenOptions ReadOnlyOpenOptions(const ReadImageArgs& args);
// Opens the image |options| name with block::OpenImage (filling |report| when not null). On
// failure prints "Could not open 'IMAGE': reason" and HintOnLockConflict's advice for |purpose|,
// and returns nullptr.
coro::Task<std::unique_ptr<block::BlockBackend>> OpenImageOrReport(
    const block::OpenOptions& options, OpenPurpose purpose, block::OpenReport* report = nullptr);
// When |status| is a lock conflict (another process has the image open), prints what to do
// about it: -U for commands that only read, stopping the other user for those that write.
void HintOnLockConflict(const absl::Status& status, OpenPurpose purpose);

// qemu's size_to_str(): "580 KiB", "1 GiB", "1.5 MiB" (three significant digits).
std::string HumanSize(uint64_t bytes);

// Splits "a=1,b=2" into key/value pairs, in order. An element without '=' maps to "on".
// ",," is an escaped comma inside a value, as in qemu's option syntax. Empty keys are errors.
absl::Status ParseOptionList(std::string_view text,
                             std::vector<std::pair<std::string, std::string>>* out);

// A JSON value tree just big enough for qemu-img's outputs.
class JsonValue;
using JsonArray = std::vector<JsonValue>;

// An object whose keys print in the order QEMU's QDict iterates them: by bucket of the key's
// hash (tdb_hash modulo 512), and within a bucket the most recently inserted key first.
class JsonObject {
 public:
  JsonObject& Add(std::string key, JsonValue value);
  bool empty() const;
  std::string Render(int indent) const;

 private:
  std::vector<std::pair<std::string, JsonValue>> entries_;
};

class JsonValue {
 public:
  JsonValue(int64_t v) : v_(v) {}                         // NOLINT
  JsonValue(uint64_t v) : v_(static_cast<int64_t>(v)) {}  // NOLINT
  JsonValue(int v) : v_(static_cast<int64_t>(v)) {}       // NOLINT
  JsonValue(bool v) : v_(v) {}                            // NOLINT
  JsonValue(std::string v) : v_(std::move(v)) {}          // NOLINT
  JsonValue(const char* v) : v_(std::string(v)) {}        // NOLINT
  JsonValue(JsonObject v) : v_(std::move(v)) {}           // NOLINT
  JsonValue(JsonArray v) : v_(std::move(v)) {}            // NOLINT

  // Pretty-printed like QEMU's qobject_to_json_pretty (4 spaces a level), starting at |indent|.
  std::string Render(int indent) const;

 private:
  std::variant<int64_t, bool, std::string, JsonObject, JsonArray> v_;
};

// Defined once JsonValue is complete (the entries vector needs it).
inline bool JsonObject::empty() const { return entries_.empty(); }

// QEMU's JSON string escaping (quotes included).
std::string JsonQuote(std::string_view s);

// Output formats of info/check/map.
enum class OutputFormat { kHuman, kJson };
// Parses the value of --output; nullopt if it is neither "human" nor "json".
std::optional<OutputFormat> ParseOutputFormat(std::string_view text);

// Argument checks shared by the subcommands. Each prints its own error (and, for operand
// counts, the subcommand's usage on stderr) and returns false; the caller then exits with
// kExitFailure.

// The value of --output: "human" or "json".
bool ParseOutputOption(const char* text, OutputFormat* out);
// Exactly |count| operands left after the options (argv[optind..argc)).
bool CheckOperandCount(const char* command, int operands, int count, const char* too_few,
                       const char* too_many = "Too many arguments");
// A -f/-O format name: empty (probe), "qed" or "raw".
bool CheckFormatName(const std::string& format);

// --backing=follow|confined|none (see block::BackingPolicy); prints the error and returns false
// on a bad value.
bool ParseBackingOption(const char* text, block::BackingPolicy* out);

// One option of a subcommand's command line and what seeing it does.
struct CommandOption {
  const char* long_name;  // "--name", or nullptr for a short-only option
  char short_name;        // "-c", or 0 for a long-only option
  bool has_argument;
  // Applies the option to the command's arguments; |argument| is nullptr when the option takes
  // none. Returns false after reporting a bad value (the command then exits with kExitFailure).
  std::function<bool(const char* argument)> apply;
};
// The shapes most options have: a switch that sets |*target|, a value copied into |*target|.
CommandOption FlagOption(const char* long_name, char short_name, bool* target);
CommandOption TextOption(const char* long_name, char short_name, std::string* target);
// --backing and --output, checked by ParseBackingOption and ParseOutputOption.
CommandOption BackingOption(block::BackingPolicy* target);
CommandOption OutputOption(OutputFormat* target);

// Parses the options of subcommand |command| as qemu-img does (getopt_long, stopping at the first
// operand so that a negative size stays an operand), with -h/--help added to |options|. Returns
// nullopt when the command goes on with its operands, argv[optind..argc); otherwise the exit code
// the command returns at once: kExitOk after printing the usage for --help, kExitFailure after an
// unknown option (usage on stderr) or a value an option rejected.
std::optional<int> ParseCommandOptions(const char* command, int argc, char** argv,
                                       std::span<const CommandOption> options);
// ParseCommandOptions for a command that reads the one image it names (info, check, map): the
// options every such command takes (--backing, -U/--force-share, -f/--format, into |args|) and
// the command's own |options|, then exactly one operand, stored in args->image. Returns nullopt
// when the command goes on, otherwise the exit code it returns at once.
std::optional<int> ParseReadImageCommand(const char* command, int argc, char** argv,
                                         ReadImageArgs* args,
                                         std::span<const CommandOption> options);

// A qemu-img style progress indicator: "    (12.34/100%)\r" on stdout, rewritten at most once
// per percent-hundredth, and a newline on Finish(). Disabled unless |enabled|.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  ~Progress() { Finish(); }
  void Update(uint64_t done, uint64_t total);
  void Finish();

 private:
  bool enabled_;
  bool started_ = false;
  bool finished_ = false;
  int last_ = -1;
};

// True if stdout is a terminal (progress shown by default, like qemu-img's -p on a TTY).
bool StdoutIsTty();

}  // namespace qedfuse::tools

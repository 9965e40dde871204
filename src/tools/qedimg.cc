// qedimg: create, inspect, check, map, resize and convert QED images, following qemu-img's
// command-line conventions, output formats and exit codes. Each subcommand lives in its own
// img_<name>.cc; this file only dispatches and prints help.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "qedfuse/base/log.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

#ifndef QEDFUSE_VERSION
#define QEDFUSE_VERSION "unknown"
#endif

namespace qedfuse::tools {
namespace {

struct CommandEntry {
  const char* name;
  int (*run)(int, char**);
  const char* synopsis;
};

constexpr CommandEntry kCommands[] = {
    {"create", CreateCommand,
     "create [-q] [-o cluster_size=N,table_size=N] [-b BACKING [-F raw|qed]] IMAGE [SIZE]"},
    {"info", InfoCommand,
     "info [--output=human|json] [--backing-chain] [--backing=POLICY] [-f FMT] [-U] IMAGE"},
    {"check", CheckCommand,
     "check [-q] [-p] [-r leaks|all] [--output=human|json] [--backing=POLICY] [-f FMT] [-U] "
     "IMAGE"},
    {"map", MapCommand,
     "map [--output=human|json] [--start-offset=OFFSET] [--max-length=LEN] [--backing=POLICY] "
     "[-f FMT] [-U] "
     "IMAGE"},
    {"resize", ResizeCommand, "resize [-q] [-f FMT] IMAGE [+]SIZE"},
    {"convert", ConvertCommand,
     "convert [-p] [-q] [-U] [-n [--target-is-zero]] [-f raw|qed] [-O raw|qed] "
     "[-o cluster_size=N,table_size=N] [--backing=POLICY] SRC DST"},
};

constexpr const char* kHelpTail = R"(
Commands:
  create   create a QED image (byte-identical to 'qemu-img create -f qed')
  info     show virtual size, disk usage, geometry, features, need-check flag, backing chain
  check    check consistency; -r leaks|all repairs invalid table entries
  map      list the extents of the image: data, zero, unallocated, from a backing file
  resize   grow the virtual size (shrinking is refused)
  convert  copy between raw and QED (-O raw|qed), keeping zero areas sparse; the target may be
           a new or existing file, a block device, or (-n) an existing image written into

SIZE accepts the suffixes k, M, G, T, P, E (powers of 1024) and is rounded up to 512 bytes.

Exit codes: 0 success; 1 error (for check: could not check); check also returns 2 when
corruptions remain, 3 when only leaked clusters remain, 63 when the format has no check.

See qedimg(1) for details.
)";

void PrintVersion() {
  std::printf("qedimg version %s\n", QEDFUSE_VERSION);
  std::printf("Tool for QED disk images, part of qedfuse.\n");
}

}  // namespace

void PrintUsage(const char* command, bool to_stderr) {
  FILE* out = to_stderr ? stderr : stdout;
  bool any = false;
  for (const CommandEntry& c : kCommands) {
    if (command[0] != '\0' && std::strcmp(command, c.name) != 0) continue;
    if (!any) std::fprintf(out, "Usage:\n");
    std::fprintf(out, "  qedimg %s\n", c.synopsis);
    any = true;
  }
  if (command[0] == '\0') {
    std::fprintf(out, "  qedimg --help | --version\n%s", kHelpTail);
  } else {
    std::fprintf(out, "Run 'qedimg --help' for more information.\n");
  }
}

}  // namespace qedfuse::tools

int main(int argc, char** argv) {
  using namespace qedfuse::tools;
  qedfuse::SetLogProgram("qedimg");  // block-layer reports (corruption, I/O errors) name us
  // Top-level mistakes get one line and a pointer to --help, as in qemu-img; the full help is
  // only printed when asked for.
  auto bad_usage = [](const std::string& message) {
    Error(message);
    Hint("Try 'qedimg --help' for more information");
    return kExitFailure;
  };
  if (argc < 2) return bad_usage("Not enough arguments");
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    PrintUsage("", false);
    return kExitOk;
  }
  if (cmd == "--version" || cmd == "-V") {
    PrintVersion();
    return kExitOk;
  }
  for (const auto& c : kCommands) {
    if (cmd == c.name) {
      // getopt prefixes its messages with argv[0]: make them read "qedimg: ...".
      static char program[] = "qedimg";
      argv[1] = program;
      return c.run(argc - 1, argv + 1);
    }
  }
  if (cmd.size() > 1 && cmd[0] == '-') {
    return bad_usage("unrecognized option '" + std::string(cmd) + "'");
  }
  return bad_usage("Command not found: " + std::string(cmd));
}

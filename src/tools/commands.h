// The qedimg subcommands. Each takes the arguments after the subcommand name (argv[0] is the
// subcommand itself, as getopt expects) and returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "qedfuse/block/image_create.h"

namespace qedfuse::tools {

int CreateCommand(int argc, char** argv);
int InfoCommand(int argc, char** argv);
int CheckCommand(int argc, char** argv);
int MapCommand(int argc, char** argv);
int ResizeCommand(int argc, char** argv);
int ConvertCommand(int argc, char** argv);

// Applies "-o" lists (cluster_size, table_size, backing_file, backing_fmt) to |c|; prints an
// error naming |image| and returns false on an unknown key or a bad value (create, convert).
bool ParseCreateOptions(const std::string& image, const std::vector<std::string>& lists,
                        qed::CreateOptions* c, bool* table_size_given);

// Prints the usage of one subcommand (or of all, for an empty name) to stdout, or stderr.
void PrintUsage(const char* command, bool to_stderr);

}  // namespace qedfuse::tools

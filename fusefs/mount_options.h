// fusefs::MountOptions: the command line of `qedfuse`, parsed without side effects.
//
// Two spellings are accepted for every setting, so that both people and mount(8) can drive the
// daemon: GNU-style long options (--read-only, --cache=none, ...) and FUSE-style `-o` lists
// (-o ro,cache=none,...). Options may come before or after the two positional arguments, because
// mount.fuse3 runs `qedfuse IMAGE MOUNTPOINT -o OPTS` for an /etc/fstab line of type
// fuse.qedfuse. Options that only matter to mount(8) or /etc/fstab (defaults, noauto, user,
// _netdev, x-systemd.*, ...) are accepted and ignored; mount flags the kernel understands
// (nosuid, nodev, noexec, allow_other, ...) are handed to libfuse; anything else is an error.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fusefs/protocol/session.h"
#include "qedfuse/block/open.h"

namespace qedfuse::fusefs {

struct MountOptions {
  std::string image;       // IMAGE as given on the command line
  std::string mountpoint;  // MOUNTPOINT as given on the command line

  std::string format = "qed";  // "qed" or "raw"
  bool read_only = false;
  block::CacheMode cache = block::CacheMode::kWriteback;
  block::AioMode aio = block::AioMode::kAuto;
  // Kernel page cache in write-back mode (FUSE_CAP_WRITEBACK_CACHE). Unset = decided from
  // |cache|: on for cache=writeback, off for cache=none.
  std::optional<bool> writeback_cache;
  std::optional<std::chrono::milliseconds> need_check_delay;
  // --io-uring=, -o io_uring=: FUSE over io_uring (on: the mount fails without it) or /dev/fuse
  // (off; auto, the default, is /dev/fuse for now: see FuseFrontend::Mount()).
  protocol::IoUringMode io_uring = protocol::IoUringMode::kAuto;
  block::BackingPolicy backing = block::BackingPolicy::kFollow;  // --backing=
  // --poll-us=, -o poll_us=: the longest the event loop busy-polls the io_uring queues before
  // it sleeps (adaptive below this; 0 never polls). Only the io_uring transport polls.
  std::chrono::microseconds poll_limit{kDefaultPollLimit};
  static constexpr std::chrono::microseconds kDefaultPollLimit{50};
  static constexpr std::chrono::microseconds kMaxPollLimit{10'000};

  bool foreground = false;  // -f: stay attached to the terminal
  bool debug = false;       // -d: log every request to stderr (implies foreground)
  bool allow_other = false;
  // allow_root: like allow_other, but only the mounting user and root may use the file.
  bool allow_root = false;
  // Owner and permissions of the mounted file: uid=/gid= (default: the mounting user), and
  // umask= (the mode becomes 0666 & ~umask; default 0600).
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<mode_t> umask;
  // --log-file=PATH, -o log_file=PATH: where the daemon's messages go (appended).
  std::string log_file;
  // -o auto_unmount: if the daemon dies, a watcher process removes its dead mount.
  bool auto_unmount = false;

  // -o remount: change the flags (ro/rw, nosuid, ...) of the live mount on MOUNTPOINT instead of
  // mounting. |mount_flags| lists every flag-type option given, in order (ro, rw, nosuid, ...),
  // for the remount to apply over the current ones; |mount_time_settings| names the settings
  // given that only take effect when mounting (cache=, aio=, ...), which a remount reports as
  // unchanged.
  bool remount = false;
  std::vector<std::string> mount_flags;
  std::vector<std::string> mount_time_settings;
  // Options of an existing FUSE mount that mount(8) hands back on a remount (user_id=,
  // group_id=, max_read=, ...): accepted with remount only.
  std::vector<std::string> existing_mount_options;

  // Testing aids, documented in qedfuse(1) under DEBUGGING OPTIONS.
  // --debug-log-writes=FILE: record every write and flush reaching the image file, and every
  // guest write and fsync, in FILE (for crash-state replay; see tests/crash_sweep).
  std::string debug_log_writes;
  // --debug-fault=RULE (repeatable): fail chosen image-file operations (fault injection).
  std::vector<std::string> debug_faults;

  // Mount options handed to libfuse/the kernel verbatim (nosuid, nodev, fsname=..., ...).
  std::vector<std::string> fuse_options;

  bool show_help = false;
  bool show_version = false;

  // Whether the kernel page cache runs in write-back mode, after defaults are applied.
  bool EffectiveWritebackCache() const {
    return writeback_cache.value_or(cache == block::CacheMode::kWriteback);
  }
  // Permission bits of the mounted file; a read-only mount has no write bits.
  mode_t FileMode(bool read_only_mount) const {
    mode_t mode = umask ? (0666 & ~*umask) : 0600;
    return read_only_mount ? (mode & ~mode_t{0222}) : mode;
  }
};

// Parses argv (argv[0] is the program name). Errors are InvalidArgument with a message fit to
// print after "qedfuse: ". --help and --version set the flags and skip positional checks.
absl::StatusOr<MountOptions> ParseCommandLine(int argc, const char* const* argv);

// The text printed by --help.
std::string UsageText(const char* program);

}  // namespace qedfuse::fusefs

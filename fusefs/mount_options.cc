// Command-line parsing for qedfuse (see mount_options.h).
#include "fusefs/mount_options.h"

#include <charconv>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "fusefs/fault_hook.h"

namespace qedfuse::fusefs {
namespace {

using std::string_view;

absl::Status Bad(string_view msg) { return absl::InvalidArgumentError(std::string(msg)); }

std::string S(string_view sv) { return std::string(sv); }

bool StartsWith(string_view s, string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

absl::StatusOr<bool> ParseOnOff(string_view name, string_view value) {
  if (value == "on" || value == "yes" || value == "true" || value == "1") return true;
  if (value == "off" || value == "no" || value == "false" || value == "0") return false;
  return Bad(absl::StrCat("invalid value '", S(value), "' for ", S(name), " (use on or off)"));
}

absl::Status SetCache(MountOptions& o, string_view value) {
  if (value == "writeback") {
    o.cache = block::CacheMode::kWriteback;
  } else if (value == "none" || value == "direct") {
    o.cache = block::CacheMode::kNone;
  } else {
    return Bad(absl::StrCat("invalid cache mode '", S(value), "' (use writeback or none)"));
  }
  return absl::OkStatus();
}

absl::Status SetAio(MountOptions& o, string_view value) {
  if (value == "io_uring") {
    o.aio = block::AioMode::kIoUring;
  } else if (value == "threads") {
    o.aio = block::AioMode::kThreads;
  } else if (value == "auto") {
    o.aio = block::AioMode::kAuto;
  } else {
    return Bad(absl::StrCat("invalid aio mode '", S(value), "' (use io_uring or threads)"));
  }
  return absl::OkStatus();
}

absl::Status SetIoUring(MountOptions& o, string_view value) {
  if (!protocol::ParseIoUringMode(value, &o.io_uring)) {
    return Bad(absl::StrCat("invalid io_uring mode '", S(value), "' (use auto, on or off)"));
  }
  return absl::OkStatus();
}

absl::Status SetFormat(MountOptions& o, string_view value) {
  if (value != "qed" && value != "raw") {
    return Bad(absl::StrCat("unsupported format '", S(value), "' (use qed or raw)"));
  }
  o.format = S(value);
  return absl::OkStatus();
}

absl::Status SetBacking(MountOptions& o, string_view value) {
  std::optional<block::BackingPolicy> p = block::ParseBackingPolicy(value);
  if (!p) {
    return Bad(
        absl::StrCat("invalid backing policy '", S(value), "' (use follow, confined or none)"));
  }
  o.backing = *p;
  return absl::OkStatus();
}

absl::Status SetLogFile(MountOptions& o, string_view value) {
  if (value.empty()) return Bad("the log file name must not be empty");
  o.log_file = S(value);
  return absl::OkStatus();
}

// A whole decimal number from 0 to |max|.
std::optional<long long> ParseCount(string_view value, long long max) {
  long long n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < 0 || n > max) {
    return std::nullopt;
  }
  return n;
}

absl::Status SetNeedCheckDelay(MountOptions& o, string_view value) {
  std::optional<long long> ms = ParseCount(value, std::numeric_limits<long long>::max());
  if (!ms) {
    return Bad(absl::StrCat("invalid need-check delay '", S(value), "' (milliseconds expected)"));
  }
  o.need_check_delay = std::chrono::milliseconds(*ms);
  return absl::OkStatus();
}

absl::Status SetPollLimit(MountOptions& o, string_view value) {
  constexpr long long kMax = MountOptions::kMaxPollLimit.count();
  std::optional<long long> us = ParseCount(value, kMax);
  if (!us) {
    return Bad(absl::StrCat("invalid polling time '", S(value), "' (microseconds from 0 to ", kMax,
                            " expected)"));
  }
  o.poll_limit = std::chrono::microseconds(*us);
  return absl::OkStatus();
}

// uid=N / gid=N: a decimal id (not -1, which chown(2) reserves for "unchanged").
absl::Status SetId(std::optional<uid_t>& out, string_view name, string_view value) {
  static_assert(std::is_same_v<uid_t, gid_t>);
  uid_t id = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
      id == static_cast<uid_t>(-1)) {
    return Bad(absl::StrCat("invalid ", S(name), " '", S(value), "' (a number expected)"));
  }
  out = id;
  return absl::OkStatus();
}

absl::Status SetUmask(MountOptions& o, string_view value) {
  unsigned mask = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), mask, 8);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || mask > 0777) {
    return Bad(absl::StrCat("invalid umask '", S(value), "' (an octal number up to 0777)"));
  }
  o.umask = static_cast<mode_t>(mask);
  return absl::OkStatus();
}

// Options that only mean something to mount(8) or /etc/fstab; accepted and dropped.
bool IsFstabOnly(string_view opt) {
  static constexpr string_view kIgnored[] = {
      "defaults", "auto",   "noauto", "user", "nouser", "users",    "owner",      "group",
      "_netdev",  "nofail", "silent", "loud", "nomand", "iversion", "noiversion",
  };
  for (string_view k : kIgnored) {
    if (opt == k) return true;
  }
  return StartsWith(opt, "x-") || StartsWith(opt, "comment=") || StartsWith(opt, "helper=");
}

// Access-time flags: mount(8) passes them on, a remount applies them; at mount time the kernel
// default (relatime) is kept, as before.
bool IsAtimeFlag(string_view opt) {
  static constexpr string_view kFlags[] = {
      "relatime", "norelatime", "strictatime", "nostrictatime",
      "lazytime", "nolazytime", "diratime",    "nodiratime",
  };
  for (string_view k : kFlags) {
    if (opt == k) return true;
  }
  return false;
}

// Options the kernel shows for a live FUSE mount, which mount(8) passes back on a remount.
bool IsExistingFuseOption(string_view opt) {
  return StartsWith(opt, "user_id=") || StartsWith(opt, "group_id=") ||
         StartsWith(opt, "max_read=") || StartsWith(opt, "blksize=") ||
         StartsWith(opt, "rootmode=");
}

// Mount flags and options libfuse passes to the kernel for us.
bool IsKernelOption(string_view opt) {
  static constexpr string_view kFlags[] = {
      "suid", "nosuid", "dev",     "nodev", "exec",    "noexec",
      "sync", "async",  "dirsync", "atime", "noatime",
  };
  for (string_view k : kFlags) {
    if (opt == k) return true;
  }
  return StartsWith(opt, "fsname=") || StartsWith(opt, "subtype=") || StartsWith(opt, "context=") ||
         StartsWith(opt, "fscontext=") || StartsWith(opt, "defcontext=") ||
         StartsWith(opt, "rootcontext=");
}

// An option with a value: its name and the function that parses and applies the value.
struct ValueOption {
  string_view name;
  absl::Status (*apply)(MountOptions&, string_view);
};

// The -o options NAME=VALUE that are set once at mount time (kept for the remount message).
constexpr ValueOption kMountValueOptions[] = {
    {"umask", SetUmask},      {"cache", SetCache},       {"aio", SetAio},
    {"io_uring", SetIoUring}, {"format", SetFormat},     {"need_check_delay", SetNeedCheckDelay},
    {"backing", SetBacking},  {"poll_us", SetPollLimit},
};

const ValueOption* FindValueOption(std::span<const ValueOption> table, string_view name) {
  for (const ValueOption& v : table) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

absl::Status ApplyMountOption(MountOptions& o, string_view opt) {
  if (opt.empty() || IsFstabOnly(opt)) return absl::OkStatus();
  string_view name = opt;
  string_view value;
  bool has_value = false;
  if (auto eq = opt.find('='); eq != string_view::npos) {
    name = opt.substr(0, eq);
    value = opt.substr(eq + 1);
    has_value = true;
  }
  if (opt == "ro" || opt == "read_only") {
    o.read_only = true;
    o.mount_flags.emplace_back("ro");
  } else if (opt == "rw") {
    o.read_only = false;
    o.mount_flags.emplace_back("rw");
  } else if (opt == "remount") {
    o.remount = true;
  } else if (opt == "auto_unmount") {
    o.auto_unmount = true;
    o.mount_time_settings.emplace_back(opt);
  } else if (IsAtimeFlag(opt)) {
    o.mount_flags.emplace_back(opt);
  } else if (IsExistingFuseOption(opt)) {
    o.existing_mount_options.emplace_back(opt);
  } else if (opt == "allow_other") {
    o.allow_other = true;
  } else if (opt == "allow_root") {
    o.allow_root = true;
  } else if (opt == "default_permissions") {
    // Always on: the kernel checks the file's mode and owner on every access. A remount passes
    // it back with the live mount's other flags.
    o.mount_flags.emplace_back(opt);
  } else if ((name == "uid" || name == "gid") && has_value) {
    o.mount_time_settings.emplace_back(opt);
    return SetId(name == "uid" ? o.uid : o.gid, name, value);
  } else if (const ValueOption* v = FindValueOption(kMountValueOptions, name);
             v != nullptr && has_value) {
    o.mount_time_settings.emplace_back(opt);
    return v->apply(o, value);
  } else if (name == "log_file" && has_value) {
    return SetLogFile(o, value);
  } else if (opt == "debug") {
    o.debug = true;
    o.mount_time_settings.emplace_back(opt);
  } else if (name == "writeback_cache") {
    o.mount_time_settings.emplace_back(opt);
    if (!has_value) {
      o.writeback_cache = true;
    } else {
      auto on = ParseOnOff("writeback_cache", value);
      if (!on.ok()) return on.status();
      o.writeback_cache = *on;
    }
  } else if (opt == "no_writeback_cache") {
    o.writeback_cache = false;
    o.mount_time_settings.emplace_back(opt);
  } else if (IsKernelOption(opt)) {
    o.fuse_options.emplace_back(opt);
    o.mount_flags.emplace_back(opt);
  } else {
    return Bad(absl::StrCat("unknown mount option '", S(opt), "'"));
  }
  return absl::OkStatus();
}

absl::Status ApplyMountOptionList(MountOptions& o, string_view list) {
  // Comma-separated; a backslash escapes the next character (as in libfuse's -o parser).
  std::string cur;
  for (std::size_t i = 0; i <= list.size(); ++i) {
    if (i == list.size() || list[i] == ',') {
      if (absl::Status s = ApplyMountOption(o, cur); !s.ok()) return s;
      cur.clear();
    } else if (list[i] == '\\' && i + 1 < list.size()) {
      cur.push_back(list[++i]);
    } else {
      cur.push_back(list[i]);
    }
  }
  return absl::OkStatus();
}

// Long options that take a value: --name=value or --name value.
absl::Status SetWritebackFlag(MountOptions& o, string_view value) {
  auto on = ParseOnOff("--writeback-cache", value);
  if (!on.ok()) return on.status();
  o.writeback_cache = *on;
  return absl::OkStatus();
}

absl::Status SetDebugLogWrites(MountOptions& o, string_view v) {
  if (v.empty()) return Bad("--debug-log-writes needs a file name");
  o.debug_log_writes = S(v);
  return absl::OkStatus();
}

absl::Status AddDebugFault(MountOptions& o, string_view v) {
  if (v.empty()) return Bad("--debug-fault needs a rule");
  // Malformed rules are a usage error, reported before anything is opened.
  if (absl::StatusOr<ParsedFaultRule> rule = ParseFaultRule(v); !rule.ok()) return rule.status();
  o.debug_faults.push_back(S(v));
  return absl::OkStatus();
}

constexpr ValueOption kValueOptions[] = {
    {"--log-file", SetLogFile},
    {"--debug-log-writes", SetDebugLogWrites},
    {"--debug-fault", AddDebugFault},
    {"--cache", SetCache},
    {"--aio", SetAio},
    {"--io-uring", SetIoUring},
    {"--format", SetFormat},
    {"--need-check-delay", SetNeedCheckDelay},
    {"--backing", SetBacking},
    {"--poll-us", SetPollLimit},
    {"--writeback-cache", SetWritebackFlag},
};

}  // namespace

absl::StatusOr<MountOptions> ParseCommandLine(int argc, const char* const* argv) {
  MountOptions o;
  std::vector<string_view> positional;
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    string_view arg = argv[i];
    if (only_positional || arg.empty() || arg[0] != '-' || arg == "-") {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
    } else if (arg == "-h" || arg == "--help") {
      o.show_help = true;
    } else if (arg == "-V" || arg == "--version") {
      o.show_version = true;
    } else if (arg == "-f" || arg == "--foreground") {
      o.foreground = true;
    } else if (arg == "-d" || arg == "--debug") {
      o.debug = true;
    } else if (arg == "-s") {
      // libfuse's "single-threaded" flag: always true here, accepted for compatibility.
    } else if (arg == "-r" || arg == "--read-only") {
      if (absl::Status s = ApplyMountOption(o, "ro"); !s.ok()) return s;
    } else if (arg == "--allow-other") {
      if (absl::Status s = ApplyMountOption(o, "allow_other"); !s.ok()) return s;
    } else if (arg == "--no-writeback-cache") {
      if (absl::Status s = ApplyMountOption(o, "no_writeback_cache"); !s.ok()) return s;
    } else if (arg == "-o") {
      if (i + 1 >= argc) return Bad("option '-o' needs an argument");
      if (absl::Status s = ApplyMountOptionList(o, argv[++i]); !s.ok()) return s;
    } else if (StartsWith(arg, "-o")) {
      if (absl::Status s = ApplyMountOptionList(o, arg.substr(2)); !s.ok()) return s;
    } else {
      bool matched = false;
      for (const ValueOption& vo : kValueOptions) {
        if (arg == vo.name) {
          if (i + 1 >= argc) return Bad(absl::StrCat("option '", S(vo.name), "' needs a value"));
          if (absl::Status s = vo.apply(o, argv[++i]); !s.ok()) return s;
          matched = true;
        } else if (StartsWith(arg, vo.name) && arg.size() > vo.name.size() &&
                   arg[vo.name.size()] == '=') {
          if (absl::Status s = vo.apply(o, arg.substr(vo.name.size() + 1)); !s.ok()) return s;
          matched = true;
        }
        if (matched) {
          if (vo.name != "--log-file") o.mount_time_settings.emplace_back(vo.name);
          break;
        }
      }
      if (!matched) return Bad(absl::StrCat("unknown option '", S(arg), "'"));
    }
  }
  if (o.debug) o.foreground = true;
  if (o.allow_other && o.allow_root) return Bad("allow_other and allow_root cannot be combined");
  if (o.show_help || o.show_version) return o;
  if (!o.remount && !o.existing_mount_options.empty()) {
    return Bad(absl::StrCat("unknown mount option '", o.existing_mount_options.front(),
                            "' (the kernel sets it; it is accepted only with remount)"));
  }
  if (positional.empty()) return Bad("missing IMAGE and MOUNTPOINT arguments");
  if (positional.size() == 1) return Bad("missing MOUNTPOINT argument");
  if (positional.size() > 2) {
    return Bad(absl::StrCat("unexpected argument '", S(positional[2]), "'"));
  }
  o.image = S(positional[0]);
  o.mountpoint = S(positional[1]);
  if (o.image.empty()) return Bad("IMAGE must not be empty");
  if (o.mountpoint.empty()) return Bad("MOUNTPOINT must not be empty");
  return o;
}

std::string UsageText(const char* program) {
  return absl::StrCat("Usage: ", program, " [OPTIONS] IMAGE MOUNTPOINT [-o OPT[,OPT...]]\n",
                      R"(
Presents the QED disk image IMAGE as one raw file at MOUNTPOINT (a FUSE mount over a regular
file; the file is created if it does not exist, and may be IMAGE itself). The command returns
once the mount is live; unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`.
SIGTERM, SIGINT or SIGHUP unmount too, unless the file is still in use (then it stays mounted).

Options:
  -r, --read-only            open the image read-only (writes fail with EROFS)
      --cache=writeback|none none: O_DIRECT on the image file, no kernel write-back cache
      --writeback-cache=on|off
                             kernel write-back caching of the mounted file
                             (default: on with cache=writeback, off with cache=none)
      --aio=io_uring|threads image file I/O backend (default: io_uring when available)
      --io-uring=auto|on|off FUSE requests over io_uring (Linux 6.14+, when the kernel's
                             /sys/module/fuse/parameters/enable_uring is Y): on uses it or
                             refuses to mount, off and auto (the default, for now) use
                             /dev/fuse
      --poll-us=N            with FUSE over io_uring, busy-poll for new requests for up
                             to N microseconds before sleeping (default 50; adaptive,
                             so an idle mount sleeps; 0: never poll)
      --format=qed|raw       image format (default: qed)
      --need-check-delay=MS  delay before a dirty QED image is marked clean (default 5000)
      --backing=follow|confined|none
                             the backing file the image names: open it (default; a name
                             outside the image's directory is logged), open it only if it
                             resolves inside the image's directory, or ignore it (reads
                             as zeros)
      --allow-other          let other users access the mount, as the file's mode allows
                             (default mode 0600; non-root users need user_allow_other)
      --log-file=PATH        append the daemon's messages to PATH (default: syslog when
                             /dev/log exists, else the command's standard error)
  -f, --foreground           do not daemonise; log to stderr
  -d, --debug                log every FUSE request and reply to stderr (implies -f)
      --debug-fault=RULE     testing: make image-file I/O fail or stall (see qedfuse(1))
      --debug-log-writes=FILE
                             testing: log image and client writes and flushes
  -h, --help                 show this help
  -V, --version              show the version
  -o OPT[,OPT...]            FUSE-style options: ro, rw, allow_other, allow_root, uid=N,
                             gid=N, umask=OCTAL (mode 0666 & ~umask), cache=..., aio=...,
                             writeback_cache=on|off, io_uring=auto|on|off, format=...,
                             need_check_delay=MS, poll_us=N,
                             backing=follow|confined|none, log_file=PATH,
                             nosuid, nodev, noexec, fsname=..., debug; /etc/fstab-only
                             options (defaults, noauto, user, _netdev, ...) are ignored
  -o auto_unmount            if the daemon dies (kill -9, crash), fusermount3 removes the
                             mount, instead of leaving a dead one ("Transport endpoint is not
                             connected") that needs `umount MOUNTPOINT`
  -o remount,ro|rw           make the live mount on MOUNTPOINT read-only or writable again
                             (root only; what `mount -o remount,ro MOUNTPOINT` runs)

/etc/fstab:  /path/disk.qed  /path/disk.raw  fuse.qedfuse  defaults  0 0
)");
}

}  // namespace qedfuse::fusefs

#!/usr/bin/env bash
# Installs every Debian (bookworm) package needed to build, test and benchmark qedfuse and to
# run its demo. Idempotent: when everything is already installed it does nothing and prints
# nothing; otherwise it runs `apt-get update` once and installs only what is missing.
set -euo pipefail

packages=(
  # build
  meson ninja-build g++ pkg-config
  libboost1.81-dev libfuse3-dev libabsl-dev liburing-dev
  # unit tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # integration tests, oracle and demo
  fuse3 qemu-utils qemu-system-common fio e2fsprogs util-linux kmod procps psmisc python3 xxd
  # fuzzing and sanitizer runtimes
  clang libclang-rt-14-dev
  # plots and man pages
  gnuplot-nox groff mandoc
)

# One dpkg-query for all packages; names it does not know are simply absent from its output.
declare -A installed=()
while read -r name status; do
  [[ "$status" == "installed" ]] && installed["$name"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
  [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "install-deps.sh: missing packages (${missing[*]}) and not root; run as root" >&2
      exit 1
    fi
  fi
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
            -o Dpkg::Options::=--force-confold)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update \
    </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends \
    "${apt_opts[@]}" "${missing[@]}" </dev/null
fi

# Loop devices and FUSE are kernel features; load the modules if they are modular and absent.
# Silent: a kernel with them built in (or a container that cannot load modules) is fine.
if [[ $(id -u) -eq 0 ]] && command -v modprobe >/dev/null 2>&1; then
  [[ -e /dev/loop-control ]] || modprobe -q loop 2>/dev/null || true
  [[ -e /dev/fuse ]] || modprobe -q fuse 2>/dev/null || true
fi
exit 0

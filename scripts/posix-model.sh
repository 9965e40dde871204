#!/usr/bin/env bash
# Campaign of the POSIX model exerciser (tests/integration/posix_model.py) over the configuration
# matrix: mounting user (root, and uid 65534 mounting its own image through fusermount3) x kernel
# cache mode (wb: --writeback-cache=on, nowb: --writeback-cache=off, none: --cache=none) x aio
# backend (io_uring, threads). Each run gets its own seed, image and mount; runs repeat over the
# matrix with new seeds until the time or round budget is spent.
#
#   scripts/posix-model.sh [OPTIONS] [-- EXERCISER-ARGS...]      (as root)
#
#   --qedfuse PATH     daemon to test (default: $QEDFUSE, else build/fusefs/qedfuse)
#   --seconds N        start rounds until N seconds have passed (default 600)
#   --rounds N         exactly N rounds over the matrix (overrides --seconds)
#   --first-seed N     seed of the first run; run k uses N + k (default 1)
#   --ops N            operations per run (default 2000)
#   --phases N         mounts per run: N - 1 remounts, clean or after kill -9 (default 5)
#   --users LIST       root,nobody (default both)
#   --modes LIST       wb,nowb,none (default all three)
#   --aio LIST         io_uring,threads (default both)
#   --base DIR         work in DIR (default: a new /tmp/qedfuse-model.XXXXXX)
#   --keep             keep the work directories of failed runs (image, daemon output)
#   --stop             stop at the first failed run
#
# Extra daemon options come from QEDFUSE_EXTRA_OPTS (e.g. QEDFUSE_EXTRA_OPTS="--io-uring=on");
# arguments after `--` go to every exerciser run (e.g. `-- --skip=crash --max-size 67108864`).
# Each run prints one line; a failed run also prints the exerciser's report (the failed check,
# the seed, the last operations and a command that repeats the run). At the end: the failures
# grouped by check, then
#   COUNTS: posix_model: R runs (C configurations, F failed), N ops (kind n, ...),
#           M remounts (K after kill -9), S s
# Exit status 0 only if every run passed.
set -uo pipefail

die() {
  echo "posix-model.sh: $*" >&2
  exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exerciser=$root/tests/integration/posix_model.py
qedfuse=${QEDFUSE:-$root/build/fusefs/qedfuse}
seconds=600 rounds="" first_seed=1 ops=2000 phases=5
users=root,nobody modes=wb,nowb,none aios=io_uring,threads
base="" keep=0 stop=0
while [ $# -gt 0 ]; do
  case $1 in
    --qedfuse) qedfuse=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --first-seed) first_seed=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --phases) phases=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --aio) aios=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --stop) stop=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
extra_args=("$@")
for n in "$seconds" "$first_seed" "$ops" "$phases" ${rounds:+"$rounds"}; do
  [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a number"
done
[ "$(id -u)" = 0 ] || die "run as root (it mounts as root and as uid 65534)"
[ -x "$qedfuse" ] || die "no qedfuse binary at $qedfuse (use --qedfuse)"
qedfuse=$(cd "$(dirname "$qedfuse")" && pwd)/$(basename "$qedfuse")
for t in qemu-img fusermount3 setpriv python3 dd cp; do
  command -v "$t" >/dev/null || die "$t is not installed"
done

if [ -n "$base" ]; then
  mkdir -p "$base"
  base=$(cd "$base" && pwd)
  own_base=0
else
  base=$(mktemp -d /tmp/qedfuse-model.XXXXXX)
  own_base=1
fi
chmod 711 "$base"  # uid 65534 must reach its own run directories inside

# kill_leftovers DIR: a run that hung, was interrupted or timed out may leave its daemon and
# mount behind (the command lines of both the exerciser and the daemon name the run directory).
# First abort the FUSE connections of mounts below DIR, as any process working there sees them
# (uid 65534's runs mount in a private namespace), so that nothing stays blocked on them.
kill_leftovers() {
  local p conn
  for p in $(pgrep -f -- "$1/"); do
    awk -v b="$1/" 'index($5, b) == 1 { split($3, d, ":"); print d[2] }' "/proc/$p/mountinfo"
  done 2>/dev/null | sort -u | while read -r conn; do
    if [ -w "/sys/fs/fuse/connections/$conn/abort" ]; then
      echo 1 >"/sys/fs/fuse/connections/$conn/abort"
    fi
  done
  for p in $(pgrep -x qedfuse); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$1/" && kill -9 "$p"
  done
  awk -v b="$1/" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo |
    while read -r m; do umount -l "$m"; done
}
cleanup() {
  local rc=$?
  set +e
  kill_leftovers "$base"
  if [ "$own_base" = 1 ] && { [ "$keep" = 0 ] || [ "$failed" = 0 ]; }; then rm -rf "$base"; fi
  exit "$rc"
}
failed=0
trap cleanup EXIT
trap 'exit 130' INT TERM

# The unprivileged user needs /dev/fuse (Debian's udev rule makes it 0666). Where it is not
# usable by uid 65534 (e.g. a container without udev), its runs bind a 0666 node of the same
# device over /dev/fuse in a private mount namespace, leaving the host's node alone.
as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
nobody_prefix=()
if [[ ,$users, == *,nobody,* ]] && ! "${as_nobody[@]}" test -r /dev/fuse -a -w /dev/fuse; then
  command -v unshare >/dev/null || die "unshare is not installed"
  node=$base/fuse-dev
  rm -f "$node"
  mknod -m 666 "$node" c "$((0x$(stat -c %t /dev/fuse)))" "$((0x$(stat -c %T /dev/fuse)))"
  nobody_prefix=(unshare --mount --propagation private
                 sh -c 'mount --bind "$0" /dev/fuse && exec "$@"' "$node")
  echo "posix-model: /dev/fuse is not usable by uid 65534 here; its runs use a 0666 node" \
    "in a private mount namespace"
fi
py=$(command -v python3)
nobody_py=$py
if [[ ,$users, == *,nobody,* ]] && ! "${as_nobody[@]}" "$py" -c '' 2>/dev/null; then
  nobody_py=/usr/bin/python3  # e.g. python3 from a per-user installation in root's home
fi

declare -A mode_args=(
  [wb]="--cache=writeback --writeback-cache=on"
  [nowb]="--cache=writeback --writeback-cache=off"
  [none]="--cache=none"
)
configs=()
for u in ${users//,/ }; do
  for m in ${modes//,/ }; do
    [ -n "${mode_args[$m]:-}" ] || die "unknown mode $m"
    for a in ${aios//,/ }; do configs+=("$u $m $a"); done
  done
done

start=$SECONDS
run=0 nops=0 nremounts=0 ncrashes=0
declare -A kinds=() failures=()
done_configs=()
round=0
while :; do
  if [ -n "$rounds" ]; then
    [ "$round" -lt "$rounds" ] || break
  elif [ "$round" -gt 0 ] && [ $((SECONDS - start)) -ge "$seconds" ]; then
    break
  fi
  for c in "${configs[@]}"; do
    read -r u m a <<<"$c"
    seed=$((first_seed + run))
    run=$((run + 1))
    dir=$base/run-$seed
    rm -rf "$dir"
    mkdir -p "$dir"
    # shellcheck disable=SC2206
    args=(--dir "$dir" --qedfuse "$qedfuse" --seed "$seed" --ops "$ops" --phases "$phases"
          ${mode_args[$m]} --aio="$a" "${extra_args[@]}")
    if [ "$u" = nobody ]; then
      chown 65534:65534 "$dir"
      cmd=("${nobody_prefix[@]}" "${as_nobody[@]}" "$nobody_py" "$exerciser" "${args[@]}")
    else
      cmd=("$py" "$exerciser" "${args[@]}")
    fi
    t0=$SECONDS
    QEDFUSE_EXTRA_OPTS=${QEDFUSE_EXTRA_OPTS:-} timeout -k 10 $((600 + ops)) "${cmd[@]}" \
      >"$dir/out" 2>&1 </dev/null
    rc=$?
    [ "$rc" = 0 ] || kill_leftovers "$dir"
    result=$(sed -n 's/^RESULT //p' "$dir/out" | tail -n1)
    declare -A r=()
    for kv in $result; do r[${kv%%=*}]=${kv#*=}; done
    nops=$((nops + ${r[ops]:-0}))
    nremounts=$((nremounts + ${r[remounts]:-0}))
    ncrashes=$((ncrashes + ${r[crashes]:-0}))
    IFS=, read -ra ks <<<"${r[kinds]:-}"
    for k in "${ks[@]}"; do kinds[${k%%:*}]=$((${kinds[${k%%:*}]:-0} + ${k##*:})); done
    [[ " ${done_configs[*]} " == *" $u/$m/$a "* ]] || done_configs+=("$u/$m/$a")
    label="run $run seed $seed [$u $m $a]"
    if [ "$rc" = 0 ]; then
      echo "posix-model: $label: pass (${r[ops]} ops, ${r[remounts]} remounts," \
        "${r[crashes]} after kill -9) $((SECONDS - t0)) s"
      rm -rf "$dir"
      continue
    fi
    failed=$((failed + 1))
    check=$(sed -n 's/^FAIL check=\([^ ]*\).*/\1/p' "$dir/out" | head -n1)
    [ -n "$check" ] || check="exit-status-$rc"
    failures[$check]+=" $seed[$u,$m,$a]"
    echo "posix-model: $label: FAIL ($check) after $((SECONDS - t0)) s"
    sed -n '/^FAIL /,/^RESULT /p' "$dir/out" | sed '$d' | sed 's/^/    /'
    [ "$rc" = 1 ] || tail -n 20 "$dir/out" | sed 's/^/    | /'
    if [ "$u" = nobody ]; then
      echo "    (repeat it as uid 65534 in a directory it owns:" \
        "${nobody_prefix[*]:+${nobody_prefix[*]} }${as_nobody[*]} $nobody_py ...)"
    fi
    if [ "$keep" = 1 ]; then echo "    kept: $dir"; else rm -rf "$dir"; fi
    [ "$stop" = 1 ] && break 2
  done
  round=$((round + 1))
done

for check in "${!failures[@]}"; do
  echo "posix-model: failed check $check: seeds${failures[$check]}"
done
kind_list=$(for k in "${!kinds[@]}"; do echo "$k ${kinds[$k]}"; done | sort | paste -sd, - |
  sed 's/,/, /g')
echo "COUNTS: posix_model: $run runs (${#done_configs[@]} configurations, $failed failed)," \
  "$nops ops (${kind_list:-none}), $nremounts remounts ($ncrashes after kill -9)," \
  "$((SECONDS - start)) s"
[ "$failed" = 0 ]

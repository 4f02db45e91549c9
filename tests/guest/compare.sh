#!/usr/bin/env bash
# One command for the whole guest comparison: build co9p (release) and the kit, then run the
# same workload from a real Linux 9p client (TCG guest, 1 vCPU, cache=none) against each
# server in turn, and print one table of seconds per step, a column per server, and each
# peer's time divided by co9p's (above 1: co9p is faster).
#
#   tests/guest/compare.sh                    # co9p (HostFs), diod, QEMU virtio-9p
#   SERVERS="co9p diod" MB=16 FILES=200 tests/guest/compare.sh
#
# One guest mounts every server at once and runs each phase of the workload on each mount
# in turn (see boot.sh). Env: WORK [/tmp/co9p-guest], SERVERS [co9p diod virtio] (co9p-64k:
# co9p at diod's msize, 65536), and boot.sh's MSIZE MB FILES TREE TAR CACHE.
# Exit status: non-zero if any run failed a CHECK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export WORK=${WORK:-/tmp/co9p-guest} CACHE=${CACHE:-none}
SERVERS=${SERVERS:-co9p diod virtio}
mkdir -p "$WORK"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v diod >/dev/null || need+=(diod)
  [ ${#need[@]} = 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -z "${CO9P:-}" ]; then
  # Its own target dir: other checkouts may build a different co9p into the shared one.
  CARGO_TARGET_DIR=${GUEST_TARGET_DIR:-$ROOT/target/guest} cargo build -q --release --bin co9p --manifest-path "$ROOT/Cargo.toml"
  export CO9P=${GUEST_TARGET_DIR:-$ROOT/target/guest}/release/co9p
fi
"$(dirname "$0")/kit.sh"

fail=0
SERVERS="$SERVERS" "$(dirname "$0")/boot.sh" | tee "$WORK/result.txt" | grep -E 'FAIL|GUEST|boot:|got' || fail=1
grep -q '^WORKLOAD done' "$WORK/result.txt" && ! grep -q '^CHECK FAIL' "$WORK/result.txt" || fail=1
for s in $SERVERS; do
  echo "$s: $(grep -c "^CHECK ok $s:" "$WORK/result.txt") checks ok, $(grep -c "^CHECK FAIL $s:" "$WORK/result.txt") failed"
done

echo
echo "seconds per step (TCG guest, 1 vCPU, cache=$CACHE; ratio = peer / ${SERVERS%% *}: above 1, ${SERVERS%% *} is faster)"
awk -v servers="$SERVERS" '
  BEGIN { n = split(servers, name, " ") }
  $1 == "TIME" { if (!($3 in seen)) { seen[$3] = 1; step[++m] = $3 } t[$2, $3] = $4 }
  END {
    printf "%-16s", "step"; for (i = 1; i <= n; i++) printf " %9s", name[i]
    for (i = 2; i <= n; i++) printf " %12s", name[i] "/" name[1]; printf "\n"
    for (j = 1; j <= m; j++) { s = step[j]; printf "%-16s", s
      for (i = 1; i <= n; i++) printf " %9s", ((name[i], s) in t) ? t[name[i], s] : "-"
      for (i = 2; i <= n; i++) { a = t[name[1], s]; b = t[name[i], s]
        if (a > 0 && b != "") printf " %12.2f", b / a; else printf " %12s", "-" }
      printf "\n" } }' "$WORK/result.txt"
exit $fail

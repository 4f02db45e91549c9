#!/usr/bin/env bash
# One command for the whole guest comparison: build co9p (release) and the kit, then run the
# same workload from a real Linux 9p client (TCG guest, 1 vCPU, cache=none) against each
# server in turn, and print one table of seconds per step, a column per server, and each
# peer's time divided by co9p's (above 1: co9p is faster).
#
#   tests/guest/compare.sh                    # co9p (HostFs), diod, QEMU virtio-9p
#   SERVERS="co9p diod" MB=16 FILES=200 tests/guest/compare.sh
#
# Env: WORK [/tmp/co9p-guest], SERVERS [co9p diod virtio], MSIZE [262144], and boot.sh's
# MB FILES TREE TAR CACHE. co9p-64k in SERVERS runs co9p at diod's msize (65536).
# Exit status: non-zero if any run failed a CHECK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export WORK=${WORK:-/tmp/co9p-guest}
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
for s in $SERVERS; do
  case $s in
    co9p-64k) args=(SERVER=co9p MSIZE=65536) ;;
    *) args=(SERVER="$s") ;;
  esac
  echo "== $s"
  env "${args[@]}" LABEL="$s" "$(dirname "$0")/boot.sh" | tee "$WORK/result-$s.txt" | grep -E 'CHECK FAIL|GUEST|boot:|got' || true
  grep -q '^WORKLOAD done' "$WORK/result-$s.txt" && ! grep -q '^CHECK FAIL' "$WORK/result-$s.txt" || { echo "!! $s failed"; fail=1; }
  echo "   $(grep -c '^CHECK ok' "$WORK/result-$s.txt") checks ok, $(grep -c '^CHECK FAIL' "$WORK/result-$s.txt") failed"
done

echo
echo "seconds per step (TCG guest, 1 vCPU, cache=none; ratio = peer / co9p, >1 means co9p is faster)"
for s in $SERVERS; do echo "$s $WORK/result-$s.txt"; done | awk '
  { name[++n] = $1; while ((getline l < $2) > 0) { split(l, f, " ");
      if (f[1] == "TIME") { if (!(f[2] in seen)) { seen[f[2]] = 1; step[++m] = f[2] } t[$1, f[2]] = f[3] } } }
  END {
    printf "%-16s", "step"; for (i = 1; i <= n; i++) printf " %9s", name[i]
    for (i = 2; i <= n; i++) printf " %12s", name[i] "/" name[1]; printf "\n"
    for (j = 1; j <= m; j++) { s = step[j]; printf "%-16s", s
      for (i = 1; i <= n; i++) printf " %9s", ((name[i], s) in t) ? t[name[i], s] : "-"
      for (i = 2; i <= n; i++) { a = t[name[1], s]; b = t[name[i], s]
        if (a > 0 && b != "") printf " %12.2f", b / a; else printf " %12s", "-" }
      printf "\n" } }'
exit $fail

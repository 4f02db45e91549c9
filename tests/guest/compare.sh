#!/usr/bin/env bash
# One command for the whole guest comparison: build co9p (release) and the kit, then run the
# same workload from a real Linux 9p client (TCG guest, 1 vCPU, cache=none) against each
# server, and print one table of seconds per step, a column per server, totals, and each
# peer's time divided by the reference's (co9p-vhost when it runs, else the first server;
# above 1: the reference is faster).
#
#   tests/guest/compare.sh      # co9p-vhost virtio virtio-mapped virtiofs co9p diod
#   SERVERS="co9p diod" MB=16 FILES=200 tests/guest/compare.sh
#
# One guest mounts every server at once and runs each phase of the workload on each mount
# in turn (see boot.sh for the labels). Env: WORK [/tmp/co9p-guest], SERVERS [as above],
# QEMU [forky's (forky.sh) when a server needs vhost-user (co9p-vhost, vhost9p, virtiofs),
# else qemu-system-x86_64 on PATH], VIRTIOFSD [the one next to QEMU, if any], REF [the
# reference column], and boot.sh's OUT MSIZE MB FILES TREE TAR CACHE CO9P_VHOST_ARGS.
# Exit status: non-zero if any run failed a CHECK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export WORK=${WORK:-/tmp/co9p-guest} CACHE=${CACHE:-none}
SERVERS=${SERVERS:-co9p-vhost virtio virtio-mapped virtiofs co9p diod}
mkdir -p "$WORK"
export OUT=${OUT:-$WORK}
mkdir -p "$OUT"

vhost=
for s in $SERVERS; do case $s in co9p-vhost|vhost9p|virtiofs) vhost=1 ;; esac; done
if [ -z "${QEMU:-}" ] && [ -n "$vhost" ]; then
  # bookworm's QEMU 7.2 has no user-creatable vhost-user-test-device-pci: forky's 11.
  bin=$("$(dirname "$0")/forky.sh" | tail -1) || { echo "compare: forky.sh cannot provide QEMU 11; set QEMU or drop co9p-vhost/vhost9p/virtiofs from SERVERS" >&2; exit 1; }
  export QEMU=$bin/qemu-system-x86_64
fi
if [ -n "${QEMU:-}" ] && [ -z "${VIRTIOFSD:-}" ] && [ -x "$(dirname "$QEMU")/virtiofsd" ]; then
  VIRTIOFSD=$(dirname "$QEMU")/virtiofsd
  export VIRTIOFSD
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  [ -n "${QEMU:-}" ] || command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  case " $SERVERS " in *" diod "*) command -v diod >/dev/null || need+=(diod) ;; esac
  [ ${#need[@]} = 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -z "${CO9P:-}" ]; then
  # Its own target dir: other checkouts may build a different co9p into the shared one.
  CARGO_TARGET_DIR=${GUEST_TARGET_DIR:-$ROOT/target/guest} cargo build -q --release --bin co9p --manifest-path "$ROOT/Cargo.toml"
  export CO9P=${GUEST_TARGET_DIR:-$ROOT/target/guest}/release/co9p
fi
"$(dirname "$0")/kit.sh"

fail=0
SERVERS="$SERVERS" "$(dirname "$0")/boot.sh" | tee "$OUT/result.txt" | grep -E 'FAIL|GUEST|boot:|got|SERVERLOG' || fail=1
grep -q '^WORKLOAD done' "$OUT/result.txt" && ! grep -q '^CHECK FAIL' "$OUT/result.txt" || fail=1
for s in $SERVERS; do
  echo "$s: $(grep -c "^CHECK ok $s:" "$OUT/result.txt") checks ok, $(grep -c "^CHECK FAIL $s:" "$OUT/result.txt") failed"
done

REF=${REF:-}
[ -n "$REF" ] || case " $SERVERS " in *" co9p-vhost "*) REF=co9p-vhost ;; *) REF=${SERVERS%% *} ;; esac
echo
echo "seconds per step (TCG guest, 1 vCPU, cache=$CACHE, msize=${MSIZE:-262144}; $(grep -m1 -o 'QEMU emulator version [^ ]*' "$OUT/result.txt");"
echo "X/ref = X's time / ref's, ref = $REF: above 1, $REF is faster; metadata = create, stat, ls -l, rm, the tree steps)"
awk -v servers="$SERVERS" -v ref="$REF" '
  function row(label, s,   i, a, b) {
    printf "%-16s", label
    for (i = 1; i <= n; i++) printf " %13s", ((name[i], s) in t) ? sprintf("%.2f", t[name[i], s]) : "-"
    for (i = 1; i <= n; i++) { if (name[i] == ref) continue
      a = t[ref, s]; b = t[name[i], s]
      if (a > 0 && ((name[i], s) in t)) printf " %17.2f", b / a; else printf " %17s", "-" }
    printf "\n" }
  BEGIN { n = split(servers, name, " ") }
  $1 == "TIME" { if (!($3 in seen)) { seen[$3] = 1; step[++m] = $3 } t[$2, $3] = $4
    t[$2, "total"] += $4
    if ($3 ~ /^(create|stat|ls-l|rm)_[0-9]+$|^(mkdir_tree|find_tree|mkdir_deep40|rm_tree)$/) t[$2, "metadata"] += $4 }
  END {
    printf "%-16s", "step"; for (i = 1; i <= n; i++) printf " %13s", name[i]
    for (i = 1; i <= n; i++) if (name[i] != ref) printf " %17s", name[i] "/ref"
    printf "\n"
    for (j = 1; j <= m; j++) row(step[j], step[j])
    row("metadata", "metadata"); row("total", "total") }' "$OUT/result.txt"
exit $fail

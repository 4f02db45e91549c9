#!/usr/bin/env bash
# Boot the guest kit (kit.sh) under qemu-system-x86_64 -accel tcg with one vCPU against one
# 9p server, run the workload, print its TIME/CHECK lines. Exit 0 only if the workload ran
# to the end and no CHECK failed.
#
#   SERVER=co9p|diod|virtio  tests/guest/boot.sh
#
#   SERVER  co9p: `$CO9P serve --export EXPORT` on 127.0.0.1:PORT, guest mounts trans=tcp
#           diod: `diod -f -n -c /dev/null` on 127.0.0.1:PORT (it caps msize at 64 KiB)
#           virtio: QEMU's own virtio-9p (-virtfs local, security_model=none), trans=virtio
#   WORK    kit dir [/tmp/co9p-guest]        CO9P   co9p binary [co9p on PATH]
#   MSIZE   requested msize [262144]         CACHE  9p cache mode [none]
#   MB FILES TREE TAR   workload size [64 1000 1 1]
#   PORT    [random free]   TIMEOUT seconds [900]   MEM [768M]   CO9P_ARGS extra serve args
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/co9p-guest}
SERVER=${SERVER:-co9p}
CO9P=${CO9P:-co9p}
MSIZE=${MSIZE:-262144} CACHE=${CACHE:-none}
MB=${MB:-64} FILES=${FILES:-1000} TREE=${TREE:-1} TAR=${TAR:-1}
TIMEOUT=${TIMEOUT:-900} MEM=${MEM:-768M}
LABEL=${LABEL:-$SERVER}
EXPORT=$WORK/export-$LABEL
LOG=$WORK/console-$LABEL.log
[ -f "$WORK/vmlinuz" ] && [ -f "$WORK/initramfs.cpio.gz" ] || { echo "boot: no kit in $WORK (run kit.sh)"; exit 2; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }; done; }
PORT=${PORT:-$(free_port)}
rm -rf "$EXPORT" && mkdir -p "$EXPORT"
EXPORT=$(cd "$EXPORT" && pwd -P)

APPEND="console=ttyS0 quiet loglevel=3 panic=-1 p9msize=$MSIZE p9cache=$CACHE p9mb=$MB p9files=$FILES p9tree=$TREE p9tar=$TAR"
SRV=
trap '[ -z "$SRV" ] || { kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null; }; true' EXIT
case "$SERVER" in
  co9p) # shellcheck disable=SC2086
        "$CO9P" serve --export "$EXPORT" --listen "tcp:127.0.0.1:$PORT" ${CO9P_ARGS:-} > "$WORK/server-$LABEL.log" 2>&1 & SRV=$! ;;
  diod) diod -f -n -c /dev/null -l "127.0.0.1:$PORT" -e "$EXPORT" > "$WORK/server-$LABEL.log" 2>&1 & SRV=$! ;;
  virtio) ;;
  *) echo "boot: SERVER must be co9p, diod or virtio"; exit 2 ;;
esac
if [ -n "$SRV" ]; then
  APPEND="$APPEND p9mode=tcp p9port=$PORT p9aname=$EXPORT"
  DEV=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  kill -0 "$SRV" 2>/dev/null || { echo "boot: $SERVER did not start:"; cat "$WORK/server-$LABEL.log"; exit 1; }
else
  APPEND="$APPEND p9mode=virtio"
  DEV=(-virtfs "local,path=$EXPORT,mount_tag=host0,security_model=none")
fi

echo "boot: $LABEL ($SERVER) export=$EXPORT msize=$MSIZE cache=$CACHE mb=$MB files=$FILES, $(qemu-system-x86_64 --version | head -1)"
set +e
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m "$MEM" \
  -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel "$WORK/vmlinuz" -initrd "$WORK/initramfs.cpio.gz" -append "$APPEND" \
  "${DEV[@]}" < /dev/null > "$LOG" 2>&1
rc=$?
set -e
tr -d '\r' < "$LOG" | grep -E '^(TIME|CHECK|GUEST|WORKLOAD| +[a-z].*: got)' || true
[ $rc = 0 ] || echo "boot: qemu exit status $rc (console: $LOG)"
grep -q '^WORKLOAD done' "$LOG" && ! grep -q '^CHECK FAIL' "$LOG"

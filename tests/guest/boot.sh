#!/usr/bin/env bash
# Boot the guest kit (kit.sh) under qemu-system-x86_64 -accel tcg with one vCPU, mount every
# server in SERVERS at once (/mnt/LABEL), run the workload phase by phase over all of them,
# print its TIME/CHECK lines. Exit 0 only if the workload ran to the end and no CHECK failed.
#
#   SERVERS="co9p diod virtio" tests/guest/boot.sh
#
#   SERVERS  labels among:
#            co9p      `$CO9P serve --export DIR` on 127.0.0.1:PORT, guest mounts trans=tcp
#            co9p-64k  the same at msize 65536 (diod's cap)
#            diod      `diod -f -n -c /dev/null` on 127.0.0.1:PORT (it caps msize at 64 KiB)
#            virtio    QEMU's own virtio-9p (-virtfs local, security_model=none), trans=virtio
#   WORK    kit dir [/tmp/co9p-guest]        CO9P   co9p binary [co9p on PATH]
#   MSIZE   requested msize [262144]         CACHE  9p cache mode [none]
#   MB FILES TREE TAR   workload size [64 1000 1 1]
#   TIMEOUT seconds [1800]   MEM [768M]   CO9P_ARGS extra `co9p serve` args
set -euo pipefail
WORK=${WORK:-/tmp/co9p-guest}
SERVERS=${SERVERS:-co9p}
CO9P=${CO9P:-co9p}
MSIZE=${MSIZE:-262144} CACHE=${CACHE:-none}
MB=${MB:-64} FILES=${FILES:-1000} TREE=${TREE:-1} TAR=${TAR:-1}
TIMEOUT=${TIMEOUT:-1800} MEM=${MEM:-768M}
LOG=$WORK/console.log
[ -f "$WORK/vmlinuz" ] && [ -f "$WORK/initramfs.cpio.gz" ] || { echo "boot: no kit in $WORK (run kit.sh)"; exit 2; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }; done; }

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; true' EXIT
MOUNTS= DEV=() NET=
for s in $SERVERS; do
  export_dir=$WORK/export-$s
  rm -rf "$export_dir" && mkdir -p "$export_dir" && export_dir=$(cd "$export_dir" && pwd -P)
  port=$(free_port) msize=$MSIZE
  case $s in
    co9p|co9p-64k)
      [ $s = co9p-64k ] && msize=65536
      # shellcheck disable=SC2086
      "$CO9P" serve --export "$export_dir" --listen "tcp:127.0.0.1:$port" ${CO9P_ARGS:-} > "$WORK/server-$s.log" 2>&1 & ;;
    diod)
      diod -f -n -c /dev/null -l "127.0.0.1:$port" -e "$export_dir" > "$WORK/server-$s.log" 2>&1 & ;;
    virtio)
      DEV+=(-virtfs "local,path=$export_dir,mount_tag=host0,security_model=none")
      MOUNTS="$MOUNTS,$s:$msize:virtio:host0"
      continue ;;
    *) echo "boot: unknown server $s"; exit 2 ;;
  esac
  PIDS+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "boot: $s did not start:"; cat "$WORK/server-$s.log"; exit 1; }
  MOUNTS="$MOUNTS,$s:$msize:tcp:$port:$export_dir"
  NET=1
done
[ -z "$NET" ] || DEV+=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 p9mounts=${MOUNTS#,} p9cache=$CACHE p9mb=$MB p9files=$FILES p9tree=$TREE p9tar=$TAR"

echo "boot: $SERVERS, msize=$MSIZE cache=$CACHE mb=$MB files=$FILES tree=$TREE tar=$TAR, $(qemu-system-x86_64 --version | head -1), tcg, 1 vCPU"
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

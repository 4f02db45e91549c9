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
#            virtio-mapped  the same with security_model=mapped-xattr
#            virtiofs  `$VIRTIOFSD --cache never` on a socket, vhost-user-fs-pci, -t virtiofs
#            co9p-vhost  `$CO9P vhost-user` (co9p's vhost-user daemon) on a socket, as vhost9p;
#                      not killed: once QEMU has exited it must exit by itself, status 0
#                      (its frontend is gone), within DAEMON_WAIT seconds [10] -- a CHECK
#            vhost9p   a vhost-user 9p backend already listening on $VHOST_SOCKET, as QEMU's
#                      generic vhost-user-test-device-pci (virtio-id 9, one queue, config =
#                      the 9p mount tag), guest mounts trans=virtio,aname=$VHOST_ANAME; needs
#                      a QEMU whose vhost-user-test-device-pci is user-creatable (forky.sh)
#            (with virtiofs or vhost9p all guest RAM is a shared memfd, as vhost-user needs)
#   WORK    kit dir [/tmp/co9p-guest]        CO9P   co9p binary [co9p on PATH]
#   OUT     this run's dir: console.log, server-LABEL.log, export-LABEL/, sockets [$WORK]
#           (sockets go to a private dir under /tmp instead if OUT's path is too long for one)
#   QEMU    qemu-system-x86_64 to run [on PATH], e.g. $(tests/guest/forky.sh | tail -1)/qemu-system-x86_64
#   VIRTIOFSD  virtiofsd [on PATH or /usr/libexec]   VIRTIOFSD_ARGS [--cache never]
#   VHOST_SOCKET  vhost9p's backend socket   TAG its 9p mount tag [co9p]   VHOST_ANAME [none]
#   VHOST_VQ_SIZE  its queue size [128, as QEMU's virtio-9p]
#   MSIZE   requested msize [262144]         CACHE  9p cache mode [none]
#   MB FILES TREE TAR   workload size [64 1000 1 1]
#   TIMEOUT seconds [1800]   MEM [768M]   CO9P_ARGS extra `co9p serve` args
#   CO9P_VHOST_ARGS extra `co9p vhost-user` args   QEMU_ARGS extra QEMU args (e.g. -trace vhost_dev_st*)
#   REBOOT  1: the guest reboots once mid-workload: its first boot mounts every share,
#           writes a marker into each, starts writes, reads and creates on them and runs
#           `reboot -f` (sysrq: `echo b > /proc/sysrq-trigger`, no shutdown at all); the
#           second boot (markers found) checks and removes them and runs the workload.
#           The servers stay up across it (QEMU without -no-reboot; a third boot is
#           stopped as a reboot loop).
set -euo pipefail
WORK=${WORK:-/tmp/co9p-guest}
SERVERS=${SERVERS:-co9p}
CO9P=${CO9P:-co9p}
MSIZE=${MSIZE:-262144} CACHE=${CACHE:-none}
MB=${MB:-64} FILES=${FILES:-1000} TREE=${TREE:-1} TAR=${TAR:-1}
TIMEOUT=${TIMEOUT:-1800} MEM=${MEM:-768M} DAEMON_WAIT=${DAEMON_WAIT:-10} REBOOT=${REBOOT:-0}
QEMU=${QEMU:-qemu-system-x86_64}
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
LOG=$OUT/console.log
SOCKS=$OUT TMPSOCKS=
if [ ${#OUT} -gt 70 ]; then  # a unix socket's path has at most 107 bytes
  TMPSOCKS=$(mktemp -d /tmp/co9p-boot.XXXXXX) SOCKS=$TMPSOCKS
fi
[ -f "$WORK/vmlinuz" ] && [ -f "$WORK/initramfs.cpio.gz" ] || { echo "boot: no kit in $WORK (run kit.sh)"; exit 2; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }; done; }

PIDS=()      # servers stopped when this script exits
SELF_EXIT=() # LABEL:PID of daemons that must exit by themselves once QEMU is gone
# (`|| true`: under set -e a failing kill/wait here would replace the script's exit status)
trap 'for p in "${PIDS[@]}" "${SELF_EXIT[@]#*:}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
      [ -z "$TMPSOCKS" ] || rm -rf "$TMPSOCKS"' EXIT
MOUNTS= DEV=() NET= SHARED=
for s in $SERVERS; do
  export_dir=$OUT/export-$s
  rm -rf "$export_dir" && mkdir -p "$export_dir" && export_dir=$(cd "$export_dir" && pwd -P)
  port=$(free_port) msize=$MSIZE
  case $s in
    co9p|co9p-64k)
      [ $s = co9p-64k ] && msize=65536
      # shellcheck disable=SC2086
      "$CO9P" serve --export "$export_dir" --listen "tcp:127.0.0.1:$port" ${CO9P_ARGS:-} > "$OUT/server-$s.log" 2>&1 & ;;
    diod)
      diod -f -n -c /dev/null -l "127.0.0.1:$port" -e "$export_dir" > "$OUT/server-$s.log" 2>&1 & ;;
    virtio|virtio-mapped)
      model=none tag=host0
      [ $s = virtio ] || model=mapped-xattr tag=host1
      DEV+=(-virtfs "local,path=$export_dir,mount_tag=$tag,security_model=$model")
      MOUNTS="$MOUNTS,$s:$msize:virtio:$tag"
      continue ;;
    virtiofs)
      for v in "${VIRTIOFSD:-}" "$(command -v virtiofsd)" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd ""; do
        [ -n "$v" ] && [ -x "$v" ] && break
      done
      [ -n "$v" ] || { echo "boot: no virtiofsd (set VIRTIOFSD, e.g. from forky.sh)"; exit 2; }
      VIRTIOFSD=$v
      sock=$SOCKS/virtiofs-$s.sock
      rm -f "$sock"
      # shellcheck disable=SC2086
      "$VIRTIOFSD" --socket-path "$sock" --shared-dir "$export_dir" ${VIRTIOFSD_ARGS:---cache never} > "$OUT/server-$s.log" 2>&1 &
      PIDS+=($!)
      for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
      [ -S "$sock" ] || { echo "boot: virtiofsd did not start:"; cat "$OUT/server-$s.log"; exit 1; }
      DEV+=(-chardev "socket,id=c-$s,path=$sock" -device "vhost-user-fs-pci,chardev=c-$s,tag=$s")
      MOUNTS="$MOUNTS,$s:$msize:virtiofs:$s"
      SHARED=1
      continue ;;
    co9p-vhost)
      # co9p's own vhost-user daemon on this export: the vhost9p device below, started here.
      VHOST_SOCKET=$SOCKS/$s.sock
      rm -f "$VHOST_SOCKET"
      # shellcheck disable=SC2086
      "$CO9P" vhost-user --socket-path "$VHOST_SOCKET" --export "$export_dir" --tag "$s" \
        --msize "$MSIZE" ${CO9P_VHOST_ARGS:-} > "$OUT/server-$s.log" 2>&1 &
      SELF_EXIT+=("$s:$!")
      for _ in $(seq 100); do [ -S "$VHOST_SOCKET" ] && break; sleep 0.1; done
      [ -S "$VHOST_SOCKET" ] || { echo "boot: co9p vhost-user did not start:"; cat "$OUT/server-$s.log"; exit 1; }
      DEV+=(-chardev "socket,id=c-$s,path=$VHOST_SOCKET"
            -device "vhost-user-test-device-pci,chardev=c-$s,virtio-id=9,num_vqs=1,vq_size=${VHOST_VQ_SIZE:-128},config_size=$((2 + ${#s}))")
      MOUNTS="$MOUNTS,$s:$msize:virtio:$s"
      SHARED=1
      continue ;;
    vhost9p)
      [ -S "${VHOST_SOCKET:-}" ] || { echo "boot: vhost9p needs VHOST_SOCKET, a listening vhost-user socket"; exit 2; }
      tag=${TAG:-co9p}
      # virtio_9p_config: le16 tag_len, then the tag (no NUL); the backend serves it
      # (VHOST_USER_GET_CONFIG) and offers VIRTIO_9P_MOUNT_TAG.
      DEV+=(-chardev "socket,id=c-$s,path=$VHOST_SOCKET"
            -device "vhost-user-test-device-pci,chardev=c-$s,virtio-id=9,num_vqs=1,vq_size=${VHOST_VQ_SIZE:-128},config_size=$((2 + ${#tag}))")
      MOUNTS="$MOUNTS,$s:$msize:virtio:$tag:${VHOST_ANAME:-}"
      SHARED=1
      continue ;;
    *) echo "boot: unknown server $s"; exit 2 ;;
  esac
  PIDS+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "boot: $s did not start:"; cat "$OUT/server-$s.log"; exit 1; }
  MOUNTS="$MOUNTS,$s:$msize:tcp:$port:$export_dir"
  NET=1
done
[ -z "$NET" ] || DEV+=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
# vhost-user backends map guest RAM: it must be a shared file (memfd), not anonymous memory.
[ -z "$SHARED" ] || DEV+=(-object "memory-backend-memfd,id=mem,size=$MEM,share=on" -machine memory-backend=mem)
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 p9mounts=${MOUNTS#,} p9cache=$CACHE p9mb=$MB p9files=$FILES p9tree=$TREE p9tar=$TAR"
NOREBOOT=-no-reboot RB=
case $REBOOT in
  0|"") ;;
  1|reboot|sysrq) APPEND="$APPEND p9reboot=$REBOOT" NOREBOOT= RB=", a reboot mid-I/O ($REBOOT)" ;;
  *) echo "boot: REBOOT is 0, 1 (reboot -f) or sysrq"; exit 2 ;;
esac

echo "boot: $SERVERS, msize=$MSIZE cache=$CACHE mb=$MB files=$FILES tree=$TREE tar=$TAR$RB, $("$QEMU" --version | head -1), tcg, 1 vCPU"
: > "$LOG"
set +e
# shellcheck disable=SC2086
timeout -k 10 "$TIMEOUT" "$QEMU" -accel tcg -cpu max -smp 1 -m "$MEM" \
  -nodefaults -no-user-config -display none -serial stdio $NOREBOOT \
  -kernel "$WORK/vmlinuz" -initrd "$WORK/initramfs.cpio.gz" -append "$APPEND" \
  "${DEV[@]}" ${QEMU_ARGS:-} < /dev/null > "$LOG" 2>&1 &
qemu=$!
loop=
if [ -z "$NOREBOOT" ]; then
  # Every boot prints `GUEST init`; a guest that reboots once more (e.g. it panicked) is stopped.
  while kill -0 $qemu 2>/dev/null; do
    if [ "$(grep -c '^GUEST init' "$LOG")" -gt 2 ]; then loop=1; kill $qemu; break; fi
    sleep 0.5
  done
fi
wait $qemu
rc=$?
set -e
tr -d '\r' < "$LOG" | grep -E '^(TIME|CHECK|GUEST|WORKLOAD| +[a-z].*: got)' || true
[ $rc = 0 ] || echo "boot: qemu exit status $rc (console: $LOG)"
[ -z "$loop" ] || echo "boot: the guest booted a third time (a reboot loop): stopped"

# Daemons whose frontend was QEMU: gone with it, they exit by themselves, status 0.
host_fail=
for d in "${SELF_EXIT[@]}"; do
  s=${d%%:*} pid=${d#*:}
  for _ in $(seq $((DAEMON_WAIT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "CHECK FAIL $s: daemon exits by itself after QEMU (still running after ${DAEMON_WAIT}s; killed)"
    host_fail=1
  else
    drc=0; wait "$pid" || drc=$?
    if [ $drc = 0 ]; then echo "CHECK ok $s: daemon exits by itself after QEMU, status 0"
    else echo "CHECK FAIL $s: daemon exits by itself after QEMU (status $drc)"; host_fail=1; fi
  fi
done
# Warnings and errors the servers logged (a clean run has none).
for s in $SERVERS; do
  f=$OUT/server-$s.log
  [ -f "$f" ] || continue
  sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E ' (WARN|ERROR) |panicked' | head -5 | sed "s/^/SERVERLOG $s: /" || true
done
[ -z "$host_fail" ] && [ -z "$loop" ] && grep -q '^WORKLOAD done' "$LOG" && ! grep -q '^CHECK FAIL' "$LOG"

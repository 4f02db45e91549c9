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
#            virtiofs  `$VIRTIOFSD --cache never` on a socket, vhost-user-fs-pci, -t virtiofs
#            co9p-vhost  `$CO9P vhost-user` (co9p's vhost-user daemon) on a socket, as vhost9p
#            vhost9p   a vhost-user 9p backend already listening on $VHOST_SOCKET, as QEMU's
#                      generic vhost-user-test-device-pci (virtio-id 9, one queue, config =
#                      the 9p mount tag), guest mounts trans=virtio,aname=$VHOST_ANAME; needs
#                      a QEMU whose vhost-user-test-device-pci is user-creatable (forky.sh)
#            (with virtiofs or vhost9p all guest RAM is a shared memfd, as vhost-user needs)
#   WORK    kit dir [/tmp/co9p-guest]        CO9P   co9p binary [co9p on PATH]
#   QEMU    qemu-system-x86_64 to run [on PATH], e.g. $(tests/guest/forky.sh | tail -1)/qemu-system-x86_64
#   VIRTIOFSD  virtiofsd [on PATH or /usr/libexec]   VIRTIOFSD_ARGS [--cache never]
#   VHOST_SOCKET  vhost9p's backend socket   TAG its 9p mount tag [co9p]   VHOST_ANAME [none]
#   VHOST_VQ_SIZE  its queue size [128, as QEMU's virtio-9p]
#   MSIZE   requested msize [262144]         CACHE  9p cache mode [none]
#   MB FILES TREE TAR   workload size [64 1000 1 1]
#   TIMEOUT seconds [1800]   MEM [768M]   CO9P_ARGS extra `co9p serve` args
#   CO9P_VHOST_ARGS extra `co9p vhost-user` args
set -euo pipefail
WORK=${WORK:-/tmp/co9p-guest}
SERVERS=${SERVERS:-co9p}
CO9P=${CO9P:-co9p}
MSIZE=${MSIZE:-262144} CACHE=${CACHE:-none}
MB=${MB:-64} FILES=${FILES:-1000} TREE=${TREE:-1} TAR=${TAR:-1}
TIMEOUT=${TIMEOUT:-1800} MEM=${MEM:-768M}
QEMU=${QEMU:-qemu-system-x86_64}
LOG=$WORK/console.log
[ -f "$WORK/vmlinuz" ] && [ -f "$WORK/initramfs.cpio.gz" ] || { echo "boot: no kit in $WORK (run kit.sh)"; exit 2; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }; done; }

PIDS=()
# (`|| true`: under set -e a failing kill/wait here would replace the script's exit status)
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT
MOUNTS= DEV=() NET= SHARED=
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
    virtiofs)
      for v in "${VIRTIOFSD:-}" "$(command -v virtiofsd)" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd ""; do
        [ -n "$v" ] && [ -x "$v" ] && break
      done
      [ -n "$v" ] || { echo "boot: no virtiofsd (set VIRTIOFSD, e.g. from forky.sh)"; exit 2; }
      VIRTIOFSD=$v
      sock=$WORK/virtiofs-$s.sock
      rm -f "$sock"
      # shellcheck disable=SC2086
      "$VIRTIOFSD" --socket-path "$sock" --shared-dir "$export_dir" ${VIRTIOFSD_ARGS:---cache never} > "$WORK/server-$s.log" 2>&1 &
      PIDS+=($!)
      for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
      [ -S "$sock" ] || { echo "boot: virtiofsd did not start:"; cat "$WORK/server-$s.log"; exit 1; }
      DEV+=(-chardev "socket,id=c-$s,path=$sock" -device "vhost-user-fs-pci,chardev=c-$s,tag=$s")
      MOUNTS="$MOUNTS,$s:$msize:virtiofs:$s"
      SHARED=1
      continue ;;
    co9p-vhost)
      # co9p's own vhost-user daemon on this export: the vhost9p device below, started here.
      VHOST_SOCKET=$WORK/$s.sock
      rm -f "$VHOST_SOCKET"
      # shellcheck disable=SC2086
      "$CO9P" vhost-user --socket-path "$VHOST_SOCKET" --export "$export_dir" --tag "$s" \
        --msize "$MSIZE" ${CO9P_VHOST_ARGS:-} > "$WORK/server-$s.log" 2>&1 &
      PIDS+=($!)
      for _ in $(seq 100); do [ -S "$VHOST_SOCKET" ] && break; sleep 0.1; done
      [ -S "$VHOST_SOCKET" ] || { echo "boot: co9p vhost-user did not start:"; cat "$WORK/server-$s.log"; exit 1; }
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
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "boot: $s did not start:"; cat "$WORK/server-$s.log"; exit 1; }
  MOUNTS="$MOUNTS,$s:$msize:tcp:$port:$export_dir"
  NET=1
done
[ -z "$NET" ] || DEV+=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
# vhost-user backends map guest RAM: it must be a shared file (memfd), not anonymous memory.
[ -z "$SHARED" ] || DEV+=(-object "memory-backend-memfd,id=mem,size=$MEM,share=on" -machine memory-backend=mem)
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 p9mounts=${MOUNTS#,} p9cache=$CACHE p9mb=$MB p9files=$FILES p9tree=$TREE p9tar=$TAR"

echo "boot: $SERVERS, msize=$MSIZE cache=$CACHE mb=$MB files=$FILES tree=$TREE tar=$TAR, $("$QEMU" --version | head -1), tcg, 1 vCPU"
set +e
timeout "$TIMEOUT" "$QEMU" -accel tcg -cpu max -smp 1 -m "$MEM" \
  -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel "$WORK/vmlinuz" -initrd "$WORK/initramfs.cpio.gz" -append "$APPEND" \
  "${DEV[@]}" < /dev/null > "$LOG" 2>&1
rc=$?
set -e
tr -d '\r' < "$LOG" | grep -E '^(TIME|CHECK|GUEST|WORKLOAD| +[a-z].*: got)' || true
[ $rc = 0 ] || echo "boot: qemu exit status $rc (console: $LOG)"
grep -q '^WORKLOAD done' "$LOG" && ! grep -q '^CHECK FAIL' "$LOG"

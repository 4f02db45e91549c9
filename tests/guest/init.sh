#!/bin/sh
# /init of the guest kit (busybox ash): load the 9p and virtiofs modules, mount each share
# given on the kernel command line under /mnt/LABEL, run /workload.sh over all of them, power off.
#   p9mounts=LABEL:MSIZE:tcp:PORT:ANAME,LABEL:MSIZE:virtio:TAG[:ANAME],LABEL:MSIZE:virtiofs:TAG,...
#            (tcp servers at 10.0.2.2, which is the host's 127.0.0.1; virtiofs: no msize or
#            cache option, the daemon sets the caching)
#   p9cache=none  p9mb=MiB  p9files=N  p9tree=0|1  p9tar=0|1
#   p9reboot=1|sysrq  (absent: no reboot) the first boot writes /mnt/LABEL/.reboot-marker
#            into every share, starts writes, reads and creates/removes on each, and after
#            REBOOT_AFTER seconds reboots in the middle of them: `reboot -f` (1) or
#            `echo b > /proc/sysrq-trigger` (sysrq: no device shutdown, no sync); the boot
#            that finds a marker checks it, removes what the first boot left and goes on.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

echo "GUEST init"
MOUNTS= CACHE=none MB=64 FILES=1000 TREE=1 TAR=1 REBOOT= REBOOT_AFTER=2
for w in $(cat /proc/cmdline); do
  case "$w" in
    p9mounts=*) MOUNTS=${w#*=} ;; p9cache=*) CACHE=${w#*=} ;;
    p9mb=*) MB=${w#*=} ;;         p9files=*) FILES=${w#*=} ;; p9tree=*) TREE=${w#*=} ;;
    p9tar=*) TAR=${w#*=} ;;       p9reboot=*) REBOOT=${w#*=} ;;
  esac
done

bye() { echo "GUEST end $*"; sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }

for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" || bye "insmod $m failed"; done
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
LABELS=
for spec in $(echo "$MOUNTS" | tr , ' '); do
  IFS=: read -r label msize trans a b <<EOM
$spec
EOM
  mkdir -p "/mnt/$label"
  OPTS="version=9p2000.L,msize=$msize,cache=$CACHE"
  if [ "$trans" = tcp ]; then
    mount -t 9p -o "trans=tcp,port=$a,$OPTS,aname=$b" 10.0.2.2 "/mnt/$label"
  elif [ "$trans" = virtiofs ]; then
    mount -t virtiofs "$a" "/mnt/$label"
  else
    mount -t 9p -o "trans=virtio,$OPTS${b:+,aname=$b}" "$a" "/mnt/$label"
  fi || { dmesg | tail -5; bye "mount $label failed"; }
  echo "GUEST mount $label: $(grep " /mnt/$label " /proc/mounts)"
  LABELS="$LABELS $label"
done

if [ -n "$REBOOT" ] && [ "$REBOOT" != 0 ]; then
  first=1
  for label in $LABELS; do [ -e "/mnt/$label/.reboot-marker" ] && first=; done
  if [ -n "$first" ]; then
    for label in $LABELS; do
      M=/mnt/$label
      echo "before reboot" > $M/.reboot-marker && sync || echo "CHECK FAIL $label: write the reboot marker"
      # 16 MiB rewritten over and over, read back over and over, files created and removed
      ( while :; do dd if=/dev/zero of=$M/.reboot-fill bs=1M count=16 conv=notrunc 2>/dev/null; done ) &
      ( while :; do cat $M/.reboot-fill > /dev/null 2>&1; done ) &
      ( i=0; while :; do echo $i > $M/.reboot-f$((i % 8)); rm -f $M/.reboot-f$(((i + 4) % 8)); i=$((i + 1)); done ) &
    done
    sleep "$REBOOT_AFTER"
    for label in $LABELS; do
      echo "GUEST $label before the reboot: fill $(stat -c %s /mnt/$label/.reboot-fill 2>&1), $(ls -A /mnt/$label | wc -l) entries"
    done
    if [ "$REBOOT" = sysrq ]; then
      echo "GUEST reboot (sysrq b) mid-I/O"
      echo b > /proc/sysrq-trigger
    else
      echo "GUEST reboot -f mid-I/O"
      reboot -f
    fi
    sleep 30
    bye "the reboot did not happen"
  fi
  echo "GUEST rebooted"
  for label in $LABELS; do
    M=/mnt/$label
    if [ "$(cat $M/.reboot-marker 2>&1)" = "before reboot" ]; then
      echo "CHECK ok $label: marker kept across the reboot"
    else
      echo "CHECK FAIL $label: marker kept across the reboot"
    fi
    rm -f $M/.reboot-marker $M/.reboot-fill $M/.reboot-f[0-7]
    if [ -z "$(ls -A $M)" ]; then
      echo "CHECK ok $label: the first boot's files removed"
    else
      echo "CHECK FAIL $label: the first boot's files removed (left: $(ls -A $M | tr '\n' ' '))"
    fi
  done
fi

. /workload.sh
for label in $LABELS; do
  umount "/mnt/$label" && echo "CHECK ok $label: umount" || echo "CHECK FAIL $label: umount"
done
bye "workload done"

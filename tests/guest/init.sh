#!/bin/sh
# /init of the guest kit (busybox ash): load the 9p and virtiofs modules, mount each share
# given on the kernel command line under /mnt/LABEL, run /workload.sh over all of them, power off.
#   p9mounts=LABEL:MSIZE:tcp:PORT:ANAME,LABEL:MSIZE:virtio:TAG[:ANAME],LABEL:MSIZE:virtiofs:TAG,...
#            (tcp servers at 10.0.2.2, which is the host's 127.0.0.1; virtiofs: no msize or
#            cache option, the daemon sets the caching)
#   p9cache=none  p9mb=MiB  p9files=N  p9tree=0|1  p9tar=0|1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

MOUNTS= CACHE=none MB=64 FILES=1000 TREE=1 TAR=1
for w in $(cat /proc/cmdline); do
  case "$w" in
    p9mounts=*) MOUNTS=${w#*=} ;; p9cache=*) CACHE=${w#*=} ;;
    p9mb=*) MB=${w#*=} ;;         p9files=*) FILES=${w#*=} ;; p9tree=*) TREE=${w#*=} ;;
    p9tar=*) TAR=${w#*=} ;;
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

. /workload.sh
for label in $LABELS; do
  umount "/mnt/$label" && echo "CHECK ok $label: umount" || echo "CHECK FAIL $label: umount"
done
bye "workload done"

#!/bin/sh
# /init of the guest kit (busybox ash): load the 9p modules, mount the share on /mnt, run
# /workload.sh, power off. Parameters come from the kernel command line (boot.sh sets them):
#   p9mode=tcp|virtio   p9port=PORT  p9aname=ANAME   (tcp: server at 10.0.2.2, the host's 127.0.0.1)
#   p9msize=BYTES  p9cache=none  p9mb=MiB  p9files=N  p9tree=0|1  p9tar=0|1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

MODE=tcp PORT=5640 ANAME= MSIZE=262144 CACHE=none MB=64 FILES=1000 TREE=1 TAR=1
for w in $(cat /proc/cmdline); do
  case "$w" in
    p9mode=*) MODE=${w#*=} ;;   p9port=*) PORT=${w#*=} ;;   p9aname=*) ANAME=${w#*=} ;;
    p9msize=*) MSIZE=${w#*=} ;; p9cache=*) CACHE=${w#*=} ;; p9mb=*) MB=${w#*=} ;;
    p9files=*) FILES=${w#*=} ;; p9tree=*) TREE=${w#*=} ;;   p9tar=*) TAR=${w#*=} ;;
  esac
done

bye() { echo "GUEST end $*"; sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }

for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" || bye "insmod $m failed"; done
OPTS="version=9p2000.L,msize=$MSIZE,cache=$CACHE"
if [ "$MODE" = tcp ]; then
  ip link set lo up && ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
  mount -t 9p -o "trans=tcp,port=$PORT,$OPTS${ANAME:+,aname=$ANAME}" 10.0.2.2 /mnt
else
  mount -t 9p -o "trans=virtio,$OPTS" host0 /mnt
fi || { dmesg | tail -5; bye "mount failed"; }
echo "GUEST mount $(grep ' /mnt ' /proc/mounts)"

M=/mnt . /workload.sh
umount /mnt && echo "CHECK ok umount" || echo "CHECK FAIL umount"
bye "workload done"

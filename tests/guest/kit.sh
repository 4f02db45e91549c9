#!/usr/bin/env bash
# Build the guest kit: a Debian kernel and busybox-static fetched with `apt-get download`
# (extracted under $WORK, nothing installed into /boot), and a small initramfs whose /init
# (init.sh) mounts 9p (and virtiofs) shares and runs workload.sh.
#
#   WORK=/tmp/co9p-guest tests/guest/kit.sh      ->  $WORK/vmlinuz  $WORK/initramfs.cpio.gz
#
# Host tools: apt-get, dpkg, cpio, kmod (depmod/modprobe to order the modules), gzip.
# As root on Debian, missing ones are installed. Exit status 77: the kit cannot be built
# here (no apt, no package, not root to install tools) -- callers report a skip.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/co9p-guest}
KPKG=${KPKG:-}   # e.g. linux-image-6.1.0-56-amd64; default: what linux-image-amd64 depends on
mkdir -p "$WORK/debs"
cd "$WORK/debs"
skip() { echo "kit: cannot build the guest kit: $*" >&2; exit 77; }

command -v apt-get >/dev/null || skip "no apt-get"
need=()
for t in cpio:cpio depmod:kmod dpkg:dpkg gzip:gzip; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || skip "missing ${need[*]} (apt-get install ${need[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || skip "apt-get install ${need[*]} failed"
fi

# 1. Packages (downloaded once, kept in $WORK/debs).
if [ -z "$KPKG" ]; then
  KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || skip "apt knows no linux-image-amd64 (apt-get update?)"
fi
KVER=${KPKG#linux-image-}
for p in "$KPKG" busybox-static; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" >/dev/null 2>&1 || skip "apt-get download $p failed"
done
[ -d "root/lib/modules/$KVER" ] || dpkg -x "${KPKG}"_*.deb root
[ -x bb/bin/busybox ] || dpkg -x busybox-static_*.deb bb
# The kernel package ships no modules.dep (its postinst makes one); make it here.
[ -f "root/lib/modules/$KVER/modules.dep" ] || depmod -b root "$KVER"

# 2. The initramfs tree: busybox, the 9p and virtiofs modules in dependency order, /init.
IRD="$WORK/initramfs"
rm -rf "$IRD"
mkdir -p "$IRD"/{bin,dev,proc,sys,mnt,tmp,etc,lib/modules}
cp bb/bin/busybox "$IRD/bin/busybox"
ln -s busybox "$IRD/bin/sh"
for m in virtio_pci virtio_net 9pnet_virtio 9pnet_fd 9p virtiofs; do  # 9pnet_fd: trans=tcp
  modprobe -d root -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$IRD/lib/modules/"
  basename "$ko" >> "$IRD/etc/modules.order"
done
cp "$HERE/init.sh" "$IRD/init"
cp "$HERE/workload.sh" "$IRD/workload.sh"
chmod +x "$IRD/init"
cp "root/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
( cd "$IRD" && find . | cpio -o -H newc --quiet | gzip -1 ) > "$WORK/initramfs.cpio.gz"
echo "kit: $KPKG, busybox $(dpkg-deb -f busybox-static_*.deb Version), $(wc -l < "$IRD/etc/modules.order") modules -> $WORK/vmlinuz, $WORK/initramfs.cpio.gz"

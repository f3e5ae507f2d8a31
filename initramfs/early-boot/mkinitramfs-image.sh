#!/bin/sh
# mkinitramfs-image.sh OUT DM_ULOGD_BINARY WORKDIR [CONFDIR...]
#
# Builds an initramfs for Debian's cloud kernel with Debian's own mkinitramfs
# (initramfs-tools-core) and the project's initramfs-tools files, exactly as
# update-initramfs would on a host where they are installed:
#
#   1. WORKDIR/kernel: the kernel laid out as a root file system with
#      modules.dep (kernel-tree.sh).
#   2. WORKDIR/confdir: a configuration directory like /etc/initramfs-tools:
#      initramfs.conf (copied from /etc/initramfs-tools unless a CONFDIR has
#      one), hooks/dm-ulogd and scripts/init-top/dm-ulogd from
#      initramfs/initramfs-tools/, then each CONFDIR copied over it (the
#      tests add a modules list and a local-top script that assembles the root
#      mirror).
#   3. mkinitramfs -d WORKDIR/confdir -o OUT KVER with DM_ULOGD pointing the
#      hook at the binary, in a private mount namespace (unshare -m) where
#      /lib/modules/KVER and /boot are the kernel tree's: mkinitramfs reads
#      modules from /lib/modules/KVER and the kernel config from /boot, and
#      has no option to look elsewhere. The host's own /lib/modules and /boot
#      are never written (empty mount points are created if missing).
#
# Needs root (mount namespace) and initramfs-tools-core (host-deps.sh).
# Prints OUT.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUT DM_ULOGD_BINARY WORKDIR [CONFDIR...]" >&2; exit 2; }
out=$1
bin=$2
work=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
project=$(dirname "$here")

[ -x "$bin" ] || { echo "mkinitramfs-image.sh: no executable $bin" >&2; exit 1; }
command -v mkinitramfs >/dev/null || { echo "mkinitramfs-image.sh: no mkinitramfs (run host-deps.sh)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
case $out in /*) ;; *) out=$(pwd)/$out ;; esac

mkdir -p "$work"
work=$(cd "$work" && pwd)
# shellcheck disable=SC2046 # "DIR KVER": two words
set -- $(sh "$here/kernel-tree.sh" "$work/kernel") "$@"
kroot=$1
kver=$2
shift 2

conf=$work/confdir
rm -rf "$conf"
mkdir -p "$conf/hooks" "$conf/scripts/init-top" "$conf/conf.d"
install -m 755 "$project/initramfs-tools/hooks/dm-ulogd" "$conf/hooks/dm-ulogd"
install -m 755 "$project/initramfs-tools/scripts/init-top/dm-ulogd" "$conf/scripts/init-top/dm-ulogd"
for extra in "$@"; do
    cp -R "$extra/." "$conf/"
done
[ -f "$conf/initramfs.conf" ] || cp /etc/initramfs-tools/initramfs.conf "$conf/initramfs.conf"

mkdir -p /lib/modules /boot
mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
# shellcheck disable=SC2016
DM_ULOGD=$bin unshare --mount --propagation private sh -eu -c '
    kroot=$1 kver=$2 conf=$3 out=$4
    mount -t tmpfs -o mode=0755 early-boot-modules /lib/modules
    mkdir /lib/modules/$kver
    mount --bind "$kroot/lib/modules/$kver" "/lib/modules/$kver"
    mount -t tmpfs -o mode=0755 early-boot-boot /boot
    cp "$kroot/boot/config-$kver" "$kroot/boot/System.map-$kver" /boot/
    mkinitramfs -d "$conf" -o "$out" "$kver"
' mkinitramfs-ns "$kroot" "$kver" "$conf" "$tmpout"
mv -f "$tmpout" "$out"
echo "$out"

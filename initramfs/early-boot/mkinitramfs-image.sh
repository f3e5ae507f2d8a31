#!/bin/sh
# mkinitramfs-image.sh OUT DESTDIR WORKDIR [CONFDIR...]
#
# Builds an initramfs for Debian's cloud kernel with Debian's own mkinitramfs
# (initramfs-tools-core) and dm-ulogd as `make install DESTDIR=DESTDIR`
# installed it, exactly as update-initramfs would on a host where it is
# installed:
#
#   1. WORKDIR/kernel: the kernel laid out as a root file system with
#      modules.dep (kernel-tree.sh).
#   2. WORKDIR/confdir: a configuration directory like /etc/initramfs-tools:
#      initramfs.conf (copied from /etc/initramfs-tools unless a CONFDIR has
#      one), then each CONFDIR copied over it (the tests add a modules list
#      and a local-top script that assembles the root mirror).
#   3. mkinitramfs -d WORKDIR/confdir -o OUT KVER in a private mount
#      namespace (unshare -m) where
#      - /usr/share/initramfs-tools and /usr/sbin are overlays with DESTDIR's
#        on top: the hook and the init-top script are found where the package
#        installs them, and the hook copies /usr/sbin/dm-ulogd, its default;
#      - /lib/modules/KVER and /boot are the kernel tree's: mkinitramfs reads
#        modules from /lib/modules/KVER and the kernel config from /boot, and
#        has no option to look elsewhere.
#      The host's own directories are never written (empty mount points are
#      created under /lib/modules and /boot if missing).
#
# Needs root (mount namespace), overlayfs and initramfs-tools-core
# (host-deps.sh).
# Prints OUT.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUT DESTDIR WORKDIR [CONFDIR...]" >&2; exit 2; }
out=$1
destdir=$2
work=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)

for f in usr/sbin/dm-ulogd usr/share/initramfs-tools/hooks/dm-ulogd usr/share/initramfs-tools/scripts/init-top/dm-ulogd; do
    [ -x "$destdir/$f" ] || { echo "mkinitramfs-image.sh: no executable $destdir/$f (make install DESTDIR=$destdir)" >&2; exit 1; }
done
command -v mkinitramfs >/dev/null || { echo "mkinitramfs-image.sh: no mkinitramfs (run host-deps.sh)" >&2; exit 1; }
destdir=$(cd "$destdir" && pwd)
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
mkdir -p "$conf/conf.d"
for extra in "$@"; do
    cp -R "$extra/." "$conf/"
done
[ -f "$conf/initramfs.conf" ] || cp /etc/initramfs-tools/initramfs.conf "$conf/initramfs.conf"

mkdir -p /lib/modules /boot
mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
# shellcheck disable=SC2016
unshare --mount --propagation private sh -eu -c '
    kroot=$1 kver=$2 conf=$3 out=$4 destdir=$5
    for d in usr/share/initramfs-tools usr/sbin; do
        mount -t overlay early-boot-installed -o "lowerdir=$destdir/$d:/$d" "/$d" || {
            echo "mkinitramfs-image.sh: cannot overlay $destdir/$d on /$d (overlayfs needed)" >&2
            exit 1
        }
    done
    mount -t tmpfs -o mode=0755 early-boot-modules /lib/modules
    mkdir /lib/modules/$kver
    mount --bind "$kroot/lib/modules/$kver" "/lib/modules/$kver"
    mount -t tmpfs -o mode=0755 early-boot-boot /boot
    cp "$kroot/boot/config-$kver" "$kroot/boot/System.map-$kver" /boot/
    mkinitramfs -d "$conf" -o "$out" "$kver"
' mkinitramfs-ns "$kroot" "$kver" "$conf" "$tmpout" "$destdir"
mv -f "$tmpout" "$out"
echo "$out"

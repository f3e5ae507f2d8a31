#!/bin/sh
# dracut-image.sh OUT DESTDIR WORKDIR [MODULE_DIR...] [-- DRACUT_ARGS...]
#
# Builds a systemd-based initrd for Debian's cloud kernel with the real dracut
# (dracut-core) and dm-ulogd as `make install DESTDIR=DESTDIR` installed it,
# as `dracut -f` would on a host where it is installed:
#
#   1. WORKDIR/kernel: the kernel laid out as a root file system with
#      modules.dep (kernel-tree.sh); dracut reads it through --kmoddir.
#   2. WORKDIR/modules.d: a copy of each MODULE_DIR (the tests add one that
#      assembles the root mirror).
#   3. dracut --kver KVER --kmoddir ... with no host configuration (--conf
#      /dev/null, an empty --confdir), not host-only, and exactly the modules
#      named by -m below plus their dependencies, in a private mount namespace
#      (unshare -m) where /usr/lib/dracut/modules.d and /usr/sbin are
#      overlays with DESTDIR's (and WORKDIR/modules.d) on top: dracut finds
#      90dm-ulogd where the package installs it, and the module copies
#      /usr/sbin/dm-ulogd, its default. The host's directories are never
#      written.
#
# DRACUT_ARGS are passed on (e.g. --add-drivers "virtio_pci virtio_blk").
# Prints OUT.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUT DESTDIR WORKDIR [MODULE_DIR...] [-- DRACUT_ARGS...]" >&2; exit 2; }
out=$1
destdir=$2
work=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)

for f in usr/sbin/dm-ulogd usr/lib/dracut/modules.d/90dm-ulogd/module-setup.sh; do
    [ -x "$destdir/$f" ] || { echo "dracut-image.sh: no executable $destdir/$f (make install DESTDIR=$destdir)" >&2; exit 1; }
done
command -v dracut >/dev/null || { echo "dracut-image.sh: no dracut (run host-deps.sh)" >&2; exit 1; }
destdir=$(cd "$destdir" && pwd)
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
mkdir -p "$work"
work=$(cd "$work" && pwd)

mods=""
while [ $# -gt 0 ]; do
    [ "$1" = "--" ] && { shift; break; }
    mods="$mods $(cd "$1" && pwd)"
    shift
done

# shellcheck disable=SC2046 # "DIR KVER": two words
set -- $(sh "$here/kernel-tree.sh" "$work/kernel") "$@"
kroot=$1
kver=$2
shift 2

extra_dir=$work/modules.d
rm -rf "$extra_dir"
mkdir -p "$extra_dir" "$work/dracut-conf.d"
extra=""
for m in $mods; do
    cp -R "$m" "$extra_dir/${m##*/}"
    name=${m##*/}
    extra="$extra ${name#[0-9][0-9]}"
done

mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
# Modules: a systemd initrd (systemd, systemd-initrd, dracut-systemd and
# their dependencies), udev rules, block-device root, dm-ulogd, the extras.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private sh -eu -c '
    destdir=$1 extra_dir=$2
    shift 2
    mount -t overlay early-boot-installed \
        -o "lowerdir=$destdir/usr/lib/dracut/modules.d:$extra_dir:/usr/lib/dracut/modules.d" \
        /usr/lib/dracut/modules.d &&
        mount -t overlay early-boot-installed -o "lowerdir=$destdir/usr/sbin:/usr/sbin" /usr/sbin || {
        echo "dracut-image.sh: cannot overlay $destdir on /usr/lib/dracut/modules.d and /usr/sbin (overlayfs needed)" >&2
        exit 1
    }
    exec dracut "$@"
' dracut-ns "$destdir" "$extra_dir" --quiet --force \
    --conf /dev/null --confdir "$work/dracut-conf.d" \
    --kver "$kver" --kmoddir "$kroot/lib/modules/$kver" \
    --no-hostonly --no-hostonly-cmdline --no-early-microcode \
    --modules "systemd systemd-initrd dracut-systemd udev-rules base fs-lib rootfs-block dm dm-ulogd$extra" \
    "$@" "$tmpout"
mv -f "$tmpout" "$out"
echo "$out"

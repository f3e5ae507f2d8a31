#!/bin/sh
# dracut-image.sh OUT DM_ULOGD_BINARY WORKDIR [MODULE_DIR...] [-- DRACUT_ARGS...]
#
# Builds a systemd-based initrd for Debian's cloud kernel with the real dracut
# (dracut-core) and the project's module, as `dracut -f` would on a host where
# initramfs/dracut/90dm-ulogd is installed in /usr/lib/dracut/modules.d:
#
#   1. WORKDIR/kernel: the kernel laid out as a root file system with
#      modules.dep (kernel-tree.sh); dracut reads it through --kmoddir.
#   2. WORKDIR/dracut-base: dracut's base directory (dracutbasedir) as
#      symbolic links to /usr/lib/dracut, with modules.d holding links to
#      every installed module plus a copy of initramfs/dracut/90dm-ulogd and
#      of each MODULE_DIR (the tests add one that assembles the root mirror).
#      The host's /usr/lib/dracut is not modified.
#   3. DM_ULOGD=BINARY dracut --kver KVER --kmoddir ... with no host
#      configuration (--conf /dev/null, an empty --confdir), not host-only,
#      and exactly the modules named by -m below plus their dependencies.
#
# DRACUT_ARGS are passed on (e.g. --add-drivers "virtio_pci virtio_blk").
# Prints OUT.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUT DM_ULOGD_BINARY WORKDIR [MODULE_DIR...] [-- DRACUT_ARGS...]" >&2; exit 2; }
out=$1
bin=$2
work=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
project=$(dirname "$here")

[ -x "$bin" ] || { echo "dracut-image.sh: no executable $bin" >&2; exit 1; }
command -v dracut >/dev/null || { echo "dracut-image.sh: no dracut (run host-deps.sh)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
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

base=$work/dracut-base
rm -rf "$base"
mkdir -p "$base/modules.d" "$work/dracut-conf.d"
for f in /usr/lib/dracut/*; do
    [ "${f##*/}" = modules.d ] && continue
    ln -s "$f" "$base/${f##*/}"
done
for m in /usr/lib/dracut/modules.d/*; do
    ln -s "$m" "$base/modules.d/${m##*/}"
done
rm -f "$base/modules.d/90dm-ulogd"
cp -R "$project/dracut/90dm-ulogd" "$base/modules.d/90dm-ulogd"
extra=""
for m in $mods; do
    rm -rf "$base/modules.d/${m##*/}"
    cp -R "$m" "$base/modules.d/${m##*/}"
    name=${m##*/}
    extra="$extra ${name#[0-9][0-9]}"
done

mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
# Modules: a systemd initrd (systemd, systemd-initrd, dracut-systemd and
# their dependencies), udev rules, block-device root, dm-ulogd, the extras.
DM_ULOGD=$bin dracutbasedir=$base dracut --quiet --force \
    --conf /dev/null --confdir "$work/dracut-conf.d" \
    --kver "$kver" --kmoddir "$kroot/lib/modules/$kver" \
    --no-hostonly --no-hostonly-cmdline --no-early-microcode \
    --modules "systemd systemd-initrd dracut-systemd udev-rules base fs-lib rootfs-block dm dm-ulogd$extra" \
    "$@" "$tmpout"
mv -f "$tmpout" "$out"
echo "$out"

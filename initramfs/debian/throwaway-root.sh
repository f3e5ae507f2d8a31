#!/bin/sh
# throwaway-root.sh DIR [--kernel KROOT KVER] [--apt-cache CACHEDIR] -- CMD [ARG...]
#
# Runs CMD chrooted in a throwaway copy of this host's root file system, for
# testing the package with the host's own packages (dpkg, init-system-helpers,
# initramfs-tools-core, ...) without touching the host:
#
#   DIR/root   an overlay: lower layer /, upper layer DIR/upper (where every
#              change made in the root lands, and stays between calls: the
#              same DIR is the same root), work dir DIR/work
#   /dev       bind-mounted from the host; /proc and /sys fresh instances
#   /run       an empty tmpfs, as in a chroot: no systemd runs there, so the
#              maintainer scripts enable units but start none
#   --kernel   KROOT/lib/modules/KVER bind-mounted on /lib/modules/KVER and
#              KROOT/boot/{vmlinuz,config,System.map}-KVER copied into /boot: a
#              kernel installed as far as update-initramfs is concerned
#   --apt-cache  CACHEDIR bind-mounted on /var/cache/apt/archives (downloads
#              kept across runs)
#
# Everything happens in a private mount namespace (unshare --mount): nothing
# is mounted on the host, and nothing outside DIR is written. Needs root and
# overlayfs. Exits with CMD's status.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 DIR [--kernel KROOT KVER] [--apt-cache CACHEDIR] -- CMD [ARG...]" >&2; exit 2; }
dir=$1
shift
kroot="" kver="" cache=""
while [ $# -gt 0 ]; do
    case $1 in
    --kernel) kroot=$2 kver=$3; shift 3 ;;
    --apt-cache) cache=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "throwaway-root.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -ge 1 ] || { echo "throwaway-root.sh: no command" >&2; exit 2; }
mkdir -p "$dir/upper" "$dir/work" "$dir/root"
dir=$(cd "$dir" && pwd)
[ -z "$cache" ] || { mkdir -p "$cache/partial"; cache=$(cd "$cache" && pwd); }
[ -z "$kroot" ] || kroot=$(cd "$kroot" && pwd)

# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --propagation private sh -eu -c '
    dir=$1 kroot=$2 kver=$3 cache=$4
    shift 4
    root=$dir/root
    mount -t overlay dmulogd-throwaway \
        -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$root" || {
        echo "throwaway-root.sh: cannot mount an overlay of / on $root (overlayfs needed)" >&2
        exit 1
    }
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount -t tmpfs -o mode=0755 dmulogd-throwaway-run "$root/run"
    if [ -n "$kroot" ]; then
        mkdir -p "$root/lib/modules/$kver" "$root/boot"
        mount --bind "$kroot/lib/modules/$kver" "$root/lib/modules/$kver"
        for f in vmlinuz config System.map; do
            [ -e "$root/boot/$f-$kver" ] || cp "$kroot/boot/$f-$kver" "$root/boot/"
        done
    fi
    [ -z "$cache" ] || mount --bind "$cache" "$root/var/cache/apt/archives"
    exec chroot "$root" "$@"
' throwaway-root "$dir" "$kroot" "$kver" "$cache" "$@"

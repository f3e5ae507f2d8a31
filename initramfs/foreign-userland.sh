#!/bin/sh
# foreign-userland.sh ARCH: the guest userland of a foreign architecture
# (aarch64, s390x) from Debian's .debs, for build-image.sh. Prints the
# directory it was unpacked into; its .files lists (one a line, absolute
# paths inside it) busybox, dmsetup, fio, every shared library they need
# (their ELF NEEDED entries, transitively) and the dynamic loader.
#
# Nothing is installed on the host: `apt-get download PKG:ARCH` and
# `dpkg -x`. A library's package is the one that owns the same library on the
# host (dmsetup and fio are installed there by setup-host.sh; Debian names
# library packages alike on every architecture). Needs
# `dpkg --add-architecture` of the Debian architecture (setup-arch.sh).
# Idempotent: a complete directory is reused. Cache: DMULOGD_CACHE (default
# initramfs/cache), the directory is CACHE/userland-ARCH, the .debs CACHE/deb.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 aarch64|s390x" >&2; exit 2; }
arch=$1
case $arch in
    aarch64) debarch=arm64 triplet=aarch64-linux-gnu ;;
    s390x) debarch=s390x triplet=s390x-linux-gnu ;;
    *) echo "foreign-userland.sh: unknown architecture $arch (aarch64, s390x)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
cache=${DMULOGD_CACHE:-$here/cache}
root=$cache/userland-$arch
dl=$cache/deb
mkdir -p "$dl"
exec 8>"$cache/.userland-$arch.lock"
flock 8

if [ -f "$root/.files" ]; then
    echo "$root"
    exit 0
fi
host_triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

rm -rf "$root.tmp"
mkdir -p "$root.tmp"

# unpack PKG...: download (once) and unpack each package of the architecture.
unpack() {
    get=""
    for p in "$@"; do
        ls "$dl/${p}"_*_"$debarch".deb >/dev/null 2>&1 || get="$get $p:$debarch"
    done
    if [ -n "$get" ]; then
        echo "foreign-userland.sh: downloading$get" >&2
        # shellcheck disable=SC2086
        (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root $get >/dev/null) || {
            echo "foreign-userland.sh: apt-get download$get failed (dpkg --add-architecture $debarch and apt-get update: initramfs/setup-arch.sh)" >&2
            exit 1
        }
    fi
    for p in "$@"; do
        dpkg -x "$(ls "$dl/${p}"_*_"$debarch".deb | head -n1)" "$root.tmp"
    done
}

# find_lib NAME: the library's path inside the root, or nothing. Beyond the
# loader's own directories, a library under a RUNPATH directory
# (libceph-common in /usr/lib/TRIPLET/ceph) is found where it is unpacked,
# and copied to the same path.
find_lib() {
    for d in lib/$triplet usr/lib/$triplet lib usr/lib; do
        [ -e "$root.tmp/$d/$1" ] && { echo "/$d/$1"; return 0; }
    done
    found=$(cd "$root.tmp" && find lib usr/lib -name "$1" 2>/dev/null | head -n1)
    [ -z "$found" ] || echo "/$found"
}

needed() {
    readelf -d "$root.tmp$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

unpack busybox-static dmsetup fio libc6
bins="/bin/busybox /sbin/dmsetup /usr/bin/fio"
for b in $bins; do
    [ -f "$root.tmp$b" ] || { echo "foreign-userland.sh: no $b in the $debarch packages" >&2; exit 1; }
done
interp=$(readelf -l "$root.tmp/usr/bin/fio" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || { echo "foreign-userland.sh: fio:$debarch names no program interpreter" >&2; exit 1; }

# The NEEDED closure: unpack the owners of missing libraries and scan the
# libraries found, until nothing is missing and nothing new was found.
files="$bins $interp"
while :; do
    missing="" pkgs="" before=$files
    for f in $files; do
        [ "$f" = /bin/busybox ] && continue
        for lib in $(needed "$f"); do
            path=$(find_lib "$lib")
            if [ -n "$path" ]; then
                case " $files " in *" $path "*) ;; *) files="$files $path" ;; esac
            else
                case " $missing " in *" $lib "*) continue ;; esac
                missing="$missing $lib"
                owner=$(dpkg -S "$lib" 2>/dev/null | grep "/$host_triplet/\(.*/\)\{0,1\}$lib\$" |
                    sed -n 's/^\([^:,]*\)[:,].*/\1/p' | head -n1)
                [ -n "$owner" ] || {
                    echo "foreign-userland.sh: $f needs $lib, and no host package owns it to name its $debarch package" >&2
                    exit 1
                }
                case " $pkgs " in *" $owner "*) ;; *) pkgs="$pkgs $owner" ;; esac
            fi
        done
    done
    if [ -z "$missing" ]; then
        [ "$files" != "$before" ] || break
        continue
    fi
    # shellcheck disable=SC2086
    unpack $pkgs
    for lib in $missing; do
        [ -n "$(find_lib "$lib")" ] || {
            echo "foreign-userland.sh: $lib not in$pkgs ($debarch)" >&2
            exit 1
        }
    done
done

echo "$files" | tr ' ' '\n' | sed '/^$/d' >"$root.tmp/.files"
rm -rf "$root"
mv "$root.tmp" "$root"
echo "$root"

#!/bin/sh
# Fetch Debian 12's cloud kernel (the unsigned image package that
# linux-image-cloud-amd64 depends on) into initramfs/cache/ and unpack it there.
# Idempotent: a kernel already unpacked is reused. Prints the vmlinuz path.
#
# Environment:
#   DMULOGD_KERNEL_PKG  exact package name to use instead of resolving it
#   DMULOGD_CACHE       cache directory (default: initramfs/cache next to this script)
#
# The unpacked tree is CACHE/kernel/ (boot/vmlinuz-*, lib/modules/*/...).
# CACHE/kernel/.pkg holds the package name and version that was unpacked.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${DMULOGD_CACHE:-$here/cache}
mkdir -p "$cache"
# Serialise concurrent callers (cargo runs tests in parallel).
exec 9>"$cache/.fetch.lock"
flock 9

kdir=$cache/kernel

find_vmlinuz() {
    for f in "$kdir"/boot/vmlinuz-*; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

if [ -f "$kdir/.pkg" ] && v=$(find_vmlinuz); then
    echo "$v"
    exit 0
fi

pkg=${DMULOGD_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
    # linux-image-cloud-amd64 depends on linux-image-X.Y.Z-N-cloud-amd64 (signed);
    # the same kernel unsigned is that name plus -unsigned.
    dep=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: *\(linux-image-[^ ]*\).*/\1/p' | head -n1)
    if [ -z "$dep" ]; then
        echo "fetch-kernel.sh: apt-cache knows no linux-image-cloud-amd64; run apt-get update" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        dep=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
            | sed -n 's/^ *Depends: *\(linux-image-[^ ]*\).*/\1/p' | head -n1)
    fi
    [ -n "$dep" ] || { echo "fetch-kernel.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
    case $dep in
        *-unsigned) pkg=$dep ;;
        *) if apt-cache show "$dep-unsigned" >/dev/null 2>&1; then pkg=$dep-unsigned; else pkg=$dep; fi ;;
    esac
fi

dl=$cache/deb
mkdir -p "$dl"
deb=$(ls "$dl"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    echo "fetch-kernel.sh: downloading $pkg" >&2
    # As root, apt's _apt sandbox user cannot write into the cache: say so.
    (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null) || {
        echo "fetch-kernel.sh: apt-get download $pkg failed" >&2; exit 1; }
    deb=$(ls "$dl"/"${pkg}"_*.deb | head -n1)
fi

rm -rf "$kdir.tmp"
mkdir -p "$kdir.tmp"
dpkg -x "$deb" "$kdir.tmp"
dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >"$kdir.tmp/.pkg"
rm -rf "$kdir"
mv "$kdir.tmp" "$kdir"
find_vmlinuz || { echo "fetch-kernel.sh: no boot/vmlinuz-* in $deb" >&2; exit 1; }

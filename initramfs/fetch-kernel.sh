#!/bin/sh
# Fetch Debian 12's kernel for the guest architecture into initramfs/cache/ and
# unpack it there. Idempotent: a kernel already unpacked is reused. Prints the
# vmlinuz path.
#
#   x86_64, i686  linux-image-cloud-amd64's unsigned image package (i686
#                 binaries run on the 64-bit kernel: the compat syscalls)
#   aarch64       linux-image-cloud-arm64's unsigned image package (arm64)
#   s390x         linux-image-s390x's image package (s390x, big-endian)
# The foreign ones need `dpkg --add-architecture arm64 s390x` (setup-arch.sh).
#
# Environment:
#   DMULOGD_ARCH        guest architecture (default x86_64)
#   DMULOGD_KERNEL_PKG  exact package name to use instead of resolving it
#   DMULOGD_CACHE       cache directory (default: initramfs/cache next to this script)
#
# The unpacked tree is CACHE/kernel/ for x86_64 and i686, CACHE/kernel-ARCH/
# for the others (boot/vmlinuz-*, lib/modules/*/...). Its .pkg holds the
# package name and version that was unpacked.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${DMULOGD_CACHE:-$here/cache}
arch=${DMULOGD_ARCH:-x86_64}
case $arch in
    x86_64 | i686) meta=linux-image-cloud-amd64 debarch=amd64 kdir=$cache/kernel ;;
    aarch64) meta=linux-image-cloud-arm64 debarch=arm64 kdir=$cache/kernel-aarch64 ;;
    s390x) meta=linux-image-s390x debarch=s390x kdir=$cache/kernel-s390x ;;
    *) echo "fetch-kernel.sh: unknown DMULOGD_ARCH $arch (x86_64, i686, aarch64, s390x)" >&2; exit 2 ;;
esac
mkdir -p "$cache"
# Serialise concurrent callers (cargo runs tests in parallel).
exec 9>"$cache/.fetch.lock"
flock 9

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

# The host's own architecture needs no ":arch" qualifier.
qual=""
[ "$debarch" = "$(dpkg --print-architecture)" ] || qual=:$debarch

resolve() {
    apt-cache depends "$meta$qual" 2>/dev/null |
        sed -n 's/^ *Depends: *\(linux-image-[^ :]*\).*/\1/p' | head -n1
}

pkg=${DMULOGD_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
    # The meta package depends on linux-image-X.Y.Z-N-FLAVOUR (signed where
    # Debian signs); the same kernel unsigned is that name plus -unsigned.
    dep=$(resolve)
    if [ -z "$dep" ]; then
        echo "fetch-kernel.sh: apt-cache knows no $meta$qual; run apt-get update" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        dep=$(resolve)
    fi
    [ -n "$dep" ] || {
        echo "fetch-kernel.sh: cannot resolve $meta$qual (foreign architectures need initramfs/setup-arch.sh)" >&2
        exit 1
    }
    case $dep in
        *-unsigned) pkg=$dep ;;
        *) if apt-cache show "$dep-unsigned$qual" >/dev/null 2>&1; then pkg=$dep-unsigned; else pkg=$dep; fi ;;
    esac
fi

dl=$cache/deb
mkdir -p "$dl"
deb=$(ls "$dl"/"${pkg}"_*_"$debarch".deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    echo "fetch-kernel.sh: downloading $pkg$qual" >&2
    # As root, apt's _apt sandbox user cannot write into the cache: say so.
    (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$pkg$qual" >/dev/null) || {
        echo "fetch-kernel.sh: apt-get download $pkg$qual failed" >&2; exit 1; }
    deb=$(ls "$dl"/"${pkg}"_*_"$debarch".deb | head -n1)
fi

rm -rf "$kdir.tmp"
mkdir -p "$kdir.tmp"
dpkg -x "$deb" "$kdir.tmp"
dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >"$kdir.tmp/.pkg"
rm -rf "$kdir"
mv "$kdir.tmp" "$kdir"
find_vmlinuz || { echo "fetch-kernel.sh: no boot/vmlinuz-* in $deb" >&2; exit 1; }

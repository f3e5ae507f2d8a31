#!/bin/sh
# Fetch a Debian cloud kernel for the guest architecture into initramfs/cache/
# and unpack it there. Idempotent: a kernel already unpacked is reused. Prints
# the vmlinuz path.
#
#   x86_64, i686  linux-image-cloud-amd64's unsigned image package (i686
#                 binaries run on the 64-bit kernel: the compat syscalls)
#   aarch64       linux-image-cloud-arm64's unsigned image package (arm64)
#   s390x         linux-image-s390x's image package (s390x, big-endian)
# The foreign ones need `dpkg --add-architecture arm64 s390x` (setup-arch.sh).
#
# The release is Debian 12 (bookworm, 6.1) by default, through the host's own
# apt sources. DMULOGD_KERNEL picks another release for x86_64 and i686
# (docs/kernels.md):
#   bookworm | 6.1    Debian 12 (the default)
#   bullseye | 5.10   Debian 11: linux-image-5.10.0-N-cloud-amd64
#   trixie   | 6.12   Debian 13: linux-image-6.12.N+deb13-cloud-amd64
# Another release's package index comes through a private apt configuration
# under CACHE/apt-RELEASE/ (its own sources.list, lists, package cache and an
# empty dpkg status); the host's sources and lists stay untouched.
#
# Environment:
#   DMULOGD_ARCH        guest architecture (default x86_64)
#   DMULOGD_KERNEL      Debian release of the kernel (above; default bookworm)
#   DMULOGD_KERNEL_PKG  exact package name to use instead of resolving it
#   DMULOGD_CACHE       cache directory (default: initramfs/cache next to this script)
#
# The unpacked tree is CACHE/kernel/ for x86_64 and i686, CACHE/kernel-ARCH/
# for the others, CACHE/kernel-RELEASE/ for another release (boot/vmlinuz-*,
# and lib/modules/VERSION/ or, on Debian 13, usr/lib/modules/VERSION/). Its
# .pkg holds the package name and version that was unpacked.
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
release=${DMULOGD_KERNEL:-bookworm}
case $release in
    bookworm | 6.1) release=bookworm ;;
    bullseye | 5.10) release=bullseye ;;
    trixie | 6.12) release=trixie ;;
    *) echo "fetch-kernel.sh: unknown DMULOGD_KERNEL $release (bookworm or 6.1, bullseye or 5.10, trixie or 6.12)" >&2; exit 2 ;;
esac
if [ "$release" != bookworm ]; then
    [ "$debarch" = amd64 ] || {
        echo "fetch-kernel.sh: DMULOGD_KERNEL=$release is for x86_64 and i686 only; unset it for $arch" >&2
        exit 2
    }
    kdir=$cache/kernel-$release
fi
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

# apt's options: none for the host's release; for another one a private
# configuration whose only sources are that release and its security updates.
apt_opts=""
if [ "$release" != bookworm ]; then
    apt=$cache/apt-$release
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/sources.list.d" "$apt/preferences.d"
    : >"$apt/status"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || { echo "fetch-kernel.sh: no $keyring (apt-get install debian-archive-keyring)" >&2; exit 1; }
    for suite in "$release" "$release-security"; do
        case $suite in *-security) url=http://deb.debian.org/debian-security ;; *) url=http://deb.debian.org/debian ;; esac
        echo "deb [arch=$debarch signed-by=$keyring] $url $suite main"
    done >"$apt/sources.list"
    apt_opts="-o Dir::Etc::sourcelist=$apt/sources.list -o Dir::Etc::sourceparts=$apt/sources.list.d
        -o Dir::Etc::preferencesparts=$apt/preferences.d -o Dir::State::Lists=$apt/lists
        -o Dir::State::status=$apt/status -o Dir::Cache=$apt -o Dir::Cache::archives=$apt/archives
        -o APT::Architectures::=$debarch"
    if [ ! -f "$apt/lists/.updated" ]; then
        echo "fetch-kernel.sh: reading Debian $release's package index into $apt" >&2
        # shellcheck disable=SC2086 # apt_opts is a list of words
        apt-get $apt_opts -o APT::Sandbox::User=root -qq update >/dev/null || {
            echo "fetch-kernel.sh: apt-get update of Debian $release failed: is deb.debian.org reachable?" >&2
            exit 1
        }
        : >"$apt/lists/.updated"
    fi
fi

resolve() {
    # shellcheck disable=SC2086 # apt_opts is a list of words
    apt-cache $apt_opts depends "$meta$qual" 2>/dev/null |
        sed -n 's/^ *Depends: *\(linux-image-[^ :]*\).*/\1/p' | head -n1
}

pkg=${DMULOGD_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
    # The meta package depends on linux-image-X.Y.Z-N-FLAVOUR (signed where
    # Debian signs); the same kernel unsigned is that name plus -unsigned.
    dep=$(resolve)
    if [ -z "$dep" ]; then
        echo "fetch-kernel.sh: apt-cache knows no $meta$qual; run apt-get update" >&2
        # shellcheck disable=SC2086 # apt_opts is a list of words
        apt-get $apt_opts -o APT::Sandbox::User=root update -qq >/dev/null 2>&1 || true
        dep=$(resolve)
    fi
    [ -n "$dep" ] || {
        echo "fetch-kernel.sh: cannot resolve $meta$qual (foreign architectures need initramfs/setup-arch.sh)" >&2
        exit 1
    }
    case $dep in
        *-unsigned) pkg=$dep ;;
        # shellcheck disable=SC2086 # apt_opts is a list of words
        *) if apt-cache $apt_opts show "$dep-unsigned$qual" >/dev/null 2>&1; then pkg=$dep-unsigned; else pkg=$dep; fi ;;
    esac
fi

dl=$cache/deb
mkdir -p "$dl"
cached() { ls "$dl"/"$1"_*_"$debarch".deb 2>/dev/null | head -n1; }
download() {
    echo "fetch-kernel.sh: downloading $1$qual" >&2
    # As root, apt's _apt sandbox user cannot write into the cache: say so.
    # shellcheck disable=SC2086 # apt_opts is a list of words
    (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root $apt_opts "$1$qual" >/dev/null)
}
deb=$(cached "$pkg")
signed=${pkg%-unsigned}
[ -n "$deb" ] || [ "$signed" = "$pkg" ] || deb=$(cached "$signed")
if [ -z "$deb" ]; then
    if download "$pkg"; then
        deb=$(cached "$pkg")
    # The same kernel signed: the mirror may lack an -unsigned package its
    # index lists (Debian 11's security updates, seen 2026-12).
    elif [ "$signed" != "$pkg" ] && download "$signed"; then
        deb=$(cached "$signed")
    elif [ "$release" != bookworm ] && [ -z "${DMULOGD_FETCH_REFRESHED:-}" ] && [ -z "${DMULOGD_KERNEL_PKG:-}" ]; then
        # The private index may be older than the archive, which has moved
        # on to a newer kernel: read it again and start over, once.
        echo "fetch-kernel.sh: $pkg$qual is gone from the archive; reading Debian $release's index again" >&2
        rm -f "$apt/lists/.updated"
        export DMULOGD_FETCH_REFRESHED=1
        exec 9>&- # the lock: the new run takes it again
        exec sh "$0"
    else
        echo "fetch-kernel.sh: apt-get download $pkg$qual failed" >&2
        exit 1
    fi
fi

rm -rf "$kdir.tmp"
mkdir -p "$kdir.tmp"
dpkg -x "$deb" "$kdir.tmp"
dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >"$kdir.tmp/.pkg"
rm -rf "$kdir"
mv "$kdir.tmp" "$kdir"
find_vmlinuz || { echo "fetch-kernel.sh: no boot/vmlinuz-* in $deb" >&2; exit 1; }

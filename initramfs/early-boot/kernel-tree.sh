#!/bin/sh
# kernel-tree.sh DIR
#
# Makes DIR a private copy of Debian's cloud kernel (initramfs/fetch-kernel.sh)
# laid out like a root file system, for the image builders:
#   DIR/boot/vmlinuz-KVER, DIR/boot/config-KVER
#   DIR/lib/modules/KVER/...   with modules.dep & co. (depmod -b DIR KVER)
# The module files are hard links into the fetch cache when possible (copies
# otherwise); the cache itself is not modified. Idempotent; serialised by a
# lock. Prints "DIR KVER".
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
here=$(cd "$(dirname "$0")" && pwd)

vmlinuz=$("$here/../fetch-kernel.sh")
ktree=$(dirname "$(dirname "$vmlinuz")")
kver=${vmlinuz##*/vmlinuz-}

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
stamp="$dir/.ready"
want="$kver $(cat "$ktree/.pkg" 2>/dev/null || true)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$dir $kver"
    exit 0
fi
rm -rf "${dir:?}/lib" "${dir:?}/boot"
mkdir -p "$dir/lib/modules" "$dir/boot"
cp -al "$ktree/lib/modules/$kver" "$dir/lib/modules/" 2>/dev/null ||
    cp -a "$ktree/lib/modules/$kver" "$dir/lib/modules/"
cp "$ktree/boot/config-$kver" "$ktree/boot/vmlinuz-$kver" "$ktree/boot/System.map-$kver" "$dir/boot/"
depmod -b "$dir" "$kver"
[ -s "$dir/lib/modules/$kver/modules.dep" ] || { echo "kernel-tree.sh: depmod made no modules.dep" >&2; exit 1; }
echo "$want" >"$stamp"
echo "$dir $kver"

#!/bin/sh
# make-root.sh OUT.img SIZE INIT
#
# Builds a real root file system for the early-boot tests: an ext4 image of
# SIZE (truncate syntax, e.g. 64M) made with `mkfs.ext4 -d`, holding
#   busybox (static) and its applets, dmsetup with its shared libraries (ldd),
#   INIT as /sbin/init, /etc/os-release (systemd's switch-root checks the new
#   root is an OS tree), /etc/passwd, and empty /dev /proc /sys /run /tmp
#   mount points (the initramfs moves its own there before switch_root).
# dm-ulogd is deliberately absent: the daemon serving after switch_root can
# only be the one started in the initramfs. Prints OUT.img.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 OUT.img SIZE INIT" >&2; exit 2; }
out=$1
size=$2
init=$3

stage=$(mktemp -d "${TMPDIR:-/tmp}/dmulogd-root.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage"/bin "$stage"/sbin "$stage"/usr/bin "$stage"/usr/sbin "$stage"/etc \
    "$stage"/dev "$stage"/proc "$stage"/sys "$stage"/run "$stage"/tmp "$stage"/root \
    "$stage"/data "$stage"/mnt

bb=$(command -v busybox) || { echo "make-root.sh: no busybox (busybox-static)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
    echo "make-root.sh: $bb is dynamically linked; install busybox-static" >&2
    exit 1
fi
cp "$bb" "$stage/bin/busybox"
"$bb" --list-full | while read -r applet; do
    case $applet in */busybox | "") continue ;; esac
    mkdir -p "$stage/$(dirname "$applet")"
    ln -sf /bin/busybox "$stage/$applet"
done

copy_with_libs() {
    src=$1
    mkdir -p "$stage$(dirname "$src")"
    cp -L "$src" "$stage$src"
    ldd "$src" | while read -r a b c _; do
        case $b in "=>") lib=$c ;; *) lib=$a ;; esac
        case $lib in /*) ;; *) continue ;; esac
        [ -e "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}
copy_with_libs "$(command -v dmsetup)"

rm -f "$stage/sbin/init"
cp "$init" "$stage/sbin/init"
chmod 755 "$stage/sbin/init"
cat >"$stage/etc/os-release" <<'OS'
NAME="dm-ulogd early-boot test root"
ID=dmulogd-test
PRETTY_NAME="dm-ulogd early-boot test root (busybox)"
OS
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"
: >"$stage/etc/fstab"

mkdir -p "$(dirname "$out")"
rm -f "$out"
truncate -s "$size" "$out"
mkfs.ext4 -q -F -L dmroot -d "$stage" "$out"
echo "$out"

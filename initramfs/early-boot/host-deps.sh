#!/bin/sh
# Host packages for the early-boot tests and image builders, on Debian 12, as
# root. Idempotent and quiet when everything is there.
#
#   initramfs-tools-core  Debian's mkinitramfs (the image builder itself;
#                         the initramfs-tools package adds only the kernel
#                         postinst hooks and update-initramfs triggers)
#   dracut-core           dracut itself, without the `dracut` package that
#                         conflicts with initramfs-tools and installs kernel
#                         hooks: both builders coexist on the host
#   systemd, udev         what dracut copies into a systemd initrd, and
#                         systemd-analyze for `verify`
#   e2fsprogs             mkfs.ext4 -d for the guest's root file system
#   man-db                man(1): systemd-analyze verify resolves Documentation=man:
#   busybox-static, dmsetup, cpio, qemu-system-x86: see initramfs/setup-host.sh
#
# Nothing here changes how the host itself boots: neither package installs
# kernel hooks, and no image is written under /boot.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sh "$here/../setup-host.sh"

PKGS="initramfs-tools-core dracut-core systemd udev e2fsprogs busybox-static dmsetup cpio man-db"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "host-deps.sh: need root to install:$missing" >&2; exit 1; }
    echo "host-deps.sh: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Another apt may be running (parallel tests, other users): wait for it.
    exec 8>/run/dmulogd-host-deps.lock
    flock 8
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
fi
for c in mkinitramfs unmkinitramfs lsinitramfs dracut lsinitrd systemd-analyze mkfs.ext4 unshare man flock; do
    command -v "$c" >/dev/null 2>&1 || { echo "host-deps.sh: $c missing after install" >&2; exit 1; }
done

#!/bin/bash
# shellcheck disable=SC2154 # moddir, initdir, systemdsystemunitdir, SYSTEMCTL: set by dracut
# dracut module for dm-ulogd, the device-mapper userspace dirty-log server.
#
# Puts the static daemon, the kernel modules of dm-mirror with a userspace
# log, dm-ulogd-initrd.service and, when /etc/dm-ulogd/mirrors exists, the
# configuration and dm-ulogd-assemble.service into systemd-based dracut
# images. The first unit starts the daemon early in the initrd, before udev
# coldplug, dracut's initqueue, cryptsetup and local file systems, i.e.
# before anything can load a mirror table with a `userspace` log; the daemon
# then keeps serving after the switch to the real root (see
# dm-ulogd-initrd.service). The second assembles the configured mirrors
# after coldplug and before the root device is awaited, so
# root=/dev/mapper/NAME needs nothing but the mirror's configuration line.
#
# Installed by `make install` or the Debian package as
# /usr/lib/dracut/modules.d/90dm-ulogd/; rebuild the image with dracut -f
# (also after changing the configuration). It is included by default once
# installed. A configuration that does not parse fails the build.
#
# Environment: DM_ULOGD, the binary to copy (default /usr/sbin/dm-ulogd);
# DM_ULOGD_CONFIG, the configuration to copy (default /etc/dm-ulogd/mirrors).

# called by dracut
check() {
    require_binaries "${DM_ULOGD:-/usr/sbin/dm-ulogd}" || return 1
    return 0
}

# called by dracut
depends() {
    # dm: dmsetup and device-mapper's udev rules. systemd: the unit is the
    # only way this module starts the daemon.
    echo dm systemd
    return 0
}

# called by dracut
installkernel() {
    # The netlink connector (CONFIG_CONNECTOR) is built into Debian's kernels.
    hostonly='' instmods dm-mod dm-log dm-region-hash dm-mirror dm-log-userspace
}

# called by dracut
install() {
    inst_simple "${DM_ULOGD:-/usr/sbin/dm-ulogd}" /usr/sbin/dm-ulogd || {
        dfatal "dm-ulogd: cannot install ${DM_ULOGD:-/usr/sbin/dm-ulogd}"
        return 1
    }
    inst_multiple -o modprobe
    inst_simple "$moddir/dm-ulogd-initrd.service" "$systemdsystemunitdir/dm-ulogd-initrd.service"
    $SYSTEMCTL -q --root "$initdir" enable dm-ulogd-initrd.service

    local conf="${DM_ULOGD_CONFIG:-/etc/dm-ulogd/mirrors}" err
    [ -f "$conf" ] || return 0
    if ! err=$("${DM_ULOGD:-/usr/sbin/dm-ulogd}" assemble --all --check --config "$conf" 2>&1 >/dev/null); then
        dfatal "dm-ulogd: $err"
        return 1
    fi
    inst_simple "$conf" /etc/dm-ulogd/mirrors
    inst_simple "$moddir/dm-ulogd-assemble.service" "$systemdsystemunitdir/dm-ulogd-assemble.service"
    # The binary's place in the image, whatever SBINDIR the host has.
    sed -i 's|^ExecStart=[^ ]*/dm-ulogd |ExecStart=/usr/sbin/dm-ulogd |' \
        "$initdir$systemdsystemunitdir/dm-ulogd-assemble.service"
    $SYSTEMCTL -q --root "$initdir" enable dm-ulogd-assemble.service
}

#!/bin/bash
# shellcheck disable=SC2154 # moddir, initdir, systemdsystemunitdir, SYSTEMCTL: set by dracut
# Test-only dracut module of the early-boot test: records the state around
# the assembly of the root mirror in the initrd (which the project's module
# does, from /etc/dm-ulogd/mirrors) with tests/early-boot/assemble-root.sh
# (path in $DMULOGD_TEST_ASSEMBLE), run by dmulogd-test-root.service before
# dm-ulogd-assemble.service and by dmulogd-test-assembled.service after it,
# both before the root device is waited for. It also installs the
# host unit initramfs/systemd/dm-ulogd.service (path in $DMULOGD_HOST_UNIT)
# with a drop-in ordering it after dm-ulogd-initrd.service: under the
# initrd's systemd, its ExecCondition must find the pid file locked by the
# initrd daemon and skip the unit (the situation on a host whose root is on a
# dm-ulogd mirror).

check() { return 255; }

depends() {
    echo dm-ulogd
    return 0
}

install() {
    [ -f "${DMULOGD_TEST_ASSEMBLE:-}" ] || {
        dfatal "dmulogd-test: set DMULOGD_TEST_ASSEMBLE to tests/early-boot/assemble-root.sh"
        return 1
    }
    [ -f "${DMULOGD_HOST_UNIT:-}" ] || {
        dfatal "dmulogd-test: set DMULOGD_HOST_UNIT to initramfs/systemd/dm-ulogd.service"
        return 1
    }
    inst_multiple sh cat sleep mkdir rm tr head tail dd od awk sed dmesg sync systemctl flock true
    inst_simple "$DMULOGD_HOST_UNIT" "$systemdsystemunitdir/dm-ulogd.service"
    mkdir -p "$initdir$systemdsystemunitdir/dm-ulogd.service.d"
    printf '[Unit]\nAfter=dm-ulogd-initrd.service\n' >"$initdir$systemdsystemunitdir/dm-ulogd.service.d/early-boot-test.conf"
    $SYSTEMCTL -q --root "$initdir" enable dm-ulogd.service
    inst_simple "$DMULOGD_TEST_ASSEMBLE" /usr/libexec/dmulogd-test/assemble-root.sh
    for u in dmulogd-test-root.service dmulogd-test-assembled.service; do
        inst_simple "$moddir/$u" "$systemdsystemunitdir/$u"
        $SYSTEMCTL -q --root "$initdir" enable "$u"
    done
}

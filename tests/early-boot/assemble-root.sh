#!/bin/sh
# Test-only: records, for the real root's /sbin/init
# (tests/early-boot/root-init.sh), what the initramfs did around the assembly
# of the root mirror "dmroot". It assembles nothing: the project's own boot
# script (initramfs-tools: scripts/local-top/dm-ulogd) or unit (dracut:
# dm-ulogd-assemble.service) does, from the configuration line in
# tests/early-boot/mirrors that the hook or the module copied into the image
# as /etc/dm-ulogd/mirrors: dmroot over /dev/vda and /dev/vdb, a disk log on
# /dev/vdc, region size 1024 sectors.
#
# Two moments, named by the first argument or, for initramfs-tools, by where
# the script is installed:
#   before  initramfs-tools: scripts/init-premount/dmulogd-test-root (after
#           init-top/dm-ulogd started the daemon, before local-top);
#           dracut: dmulogd-test-root.service, before dm-ulogd-assemble.service.
#   after   initramfs-tools: scripts/local-top/dmulogd-test-assembled (PREREQ
#           dm-ulogd); dracut: dmulogd-test-assembled.service, after
#           dm-ulogd-assemble.service, before the root device is awaited.
#
# Records in /run/dmulogd-test/ (/run is moved to the real root at switch_root):
#   daemon-pid        the pid of the dm-ulogd that listened here
#   log-before        the log device before assembly: its first 16 bytes (hex;
#                     the header) and how many of the 128 clean bits are set
#   assembly-status   `dmsetup status dmroot` right after the assembly
#   builder           initramfs-tools or dracut
#   units             dracut only: "DAEMON_ACTIVE TRIGGER_START HOST_RESULT HOST_STATE":
#                     when dm-ulogd-initrd.service became active and when
#                     systemd-udev-trigger.service (coldplug) started, in
#                     monotonic microseconds, and the Result and ActiveState
#                     of the host unit dm-ulogd.service, which the test
#                     module runs here after the initrd daemon
# On failure it prints "DMULOGD-RESULT: FAIL ..." and powers off.
case ${1:-} in
prereqs)
    case $0 in */local-top/*) echo dm-ulogd ;; esac
    exit 0
    ;;
esac
moment=${1:-}
case $0 in
*/init-premount/*) moment=before ;;
*/local-top/*) moment=after ;;
esac

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
out=/run/dmulogd-test
mkdir -p "$out"
con=/dev/console

say() { echo "early-boot(initramfs): $*" >"$con"; }
die() {
    {
        echo "early-boot(initramfs): $*"
        echo "--- dmsetup table"; dmsetup table 2>&1
        echo "--- kernel log (last 40 lines)"; dmesg 2>/dev/null | tail -40
        printf '\nDMULOGD-RESULT: FAIL initramfs: %s\n' "$*"
    } >"$con" 2>&1
    sync
    echo o >/proc/sysrq-trigger
    sleep 60
    exit 1
}

builder=dracut
[ -f /scripts/functions ] && builder=initramfs-tools
echo "$builder" >"$out/builder"

if [ "$moment" = after ]; then
    [ "$(cat /run/dm-ulogd.pid 2>/dev/null)" = "$(cat "$out/daemon-pid")" ] ||
        die "dm-ulogd is not the daemon that listened before the assembly"
    # The project's script or unit made /dev/mapper/dmroot (with udev, through it).
    [ -b /dev/mapper/dmroot ] || die "/dev/mapper/dmroot does not exist after the assembly: $(dm-ulogd status 2>&1 | tail -n 2)"
    st=$(dmsetup status dmroot) || die "dmsetup status dmroot failed"
    echo "$st" >"$out/assembly-status"
    say "dmroot assembled from /etc/dm-ulogd/mirrors: $st"
    exit 0
fi
[ "$moment" = before ] || die "assemble-root.sh: say before or after (got '$moment')"

# The disks: two legs and the log; the real root later uses /dev/vdd.
for d in vda vdb vdc vdd; do
    n=0
    while [ ! -b /dev/$d ] && [ $n -lt 300 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    [ -b /dev/$d ] || die "/dev/$d did not appear"
done

# The daemon the boot script (initramfs-tools) or unit (dracut) started.
[ -s /run/dm-ulogd.pid ] || die "no /run/dm-ulogd.pid: dm-ulogd was not started before local-top"
pid=$(cat /run/dm-ulogd.pid)
[ -d /proc/"$pid" ] || die "dm-ulogd (pid $pid) is not running"
echo "$pid" >"$out/daemon-pid"
argv0=$(tr '\0' '\n' </proc/"$pid"/cmdline | head -n 1)
say "dm-ulogd pid $pid, argv[0] '$argv0'"

# The log as the previous boot left it (read with O_DIRECT).
dd if=/dev/vdc iflag=direct bs=1M count=1 of="$out/log-image" 2>/dev/null || die "cannot read /dev/vdc"
header=$(od -An -tx1 -v -N 16 "$out/log-image" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
clean=$(od -An -tu1 -v -j 1024 -N 16 "$out/log-image" |
    awk '{ for (i = 1; i <= NF; i++) { b = $i; for (k = 0; k < 8; k++) { if (b % 2 == 1) c++; b = int(b / 2) } } } END { print c + 0 }')
rm -f "$out/log-image"
echo "$header $clean" >"$out/log-before"
say "log device before assembly: header '$header', $clean/128 regions clean"

if [ "$builder" = dracut ]; then
    d=$(systemctl show -P ActiveEnterTimestampMonotonic dm-ulogd-initrd.service)
    u=$(systemctl show -P ExecMainStartTimestampMonotonic systemd-udev-trigger.service)
    # The host unit, started after the initrd daemon: its ExecCondition
    # finds the pid file locked, so it is skipped rather than failed.
    n=0
    while :; do
        hs=$(systemctl show -P ActiveState dm-ulogd.service)
        case $hs in activating | deactivating | reloading) ;; *) break ;; esac
        [ $n -lt 100 ] || break
        sleep 0.1
        n=$((n + 1))
    done
    hr=$(systemctl show -P Result dm-ulogd.service)
    echo "$d $u $hr $hs" >"$out/units"
    say "dm-ulogd-initrd.service active at ${d}us, udev coldplug started at ${u}us; host unit dm-ulogd.service: $hs ($hr)"
fi

exit 0

#!/bin/sh
# Test-only: assembles the guest's root file system device in the initramfs,
# the way LVM or an administrator's local-top script would: the mirror
# "dmroot" over /dev/vda and /dev/vdb whose dirty log is served by dm-ulogd,
# a `disk` log on /dev/vdc, region size 1024 sectors.
#
# initramfs-tools: installed as scripts/local-top/dmulogd-test-root (runs after
# init-top/dm-ulogd started the daemon, before the root device is waited for).
# dracut: run by dmulogd-test-root.service, ordered after the daemon's unit.
#
# Records for the real root's /sbin/init (tests/early-boot/root-init.sh), in
# /run/dmulogd-test/ (/run is moved to the real root at switch_root):
#   daemon-pid        the pid of the dm-ulogd that listened here
#   log-before        the log device before assembly: its first 16 bytes (hex;
#                     the header) and how many of the 128 clean bits are set
#   assembly-status   `dmsetup status dmroot` right after the table was loaded
#   builder           initramfs-tools or dracut
#   units             dracut only: "DAEMON_ACTIVE TRIGGER_START HOST_RESULT HOST_STATE":
#                     when dm-ulogd-initrd.service became active and when
#                     systemd-udev-trigger.service (coldplug) started, in
#                     monotonic microseconds, and the Result and ActiveState
#                     of the host unit dm-ulogd.service, which the test
#                     module runs here after the initrd daemon
# On failure it prints "DMULOGD-RESULT: FAIL ..." and powers off.
case ${1:-} in
prereqs) exit 0 ;;
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

sectors=$(cat /sys/block/vda/size)
[ "$sectors" = "$(cat /sys/block/vdb/size)" ] || die "legs differ in size"
table="0 $sectors mirror userspace 5 dmulogd-early-boot-root disk 2 /dev/vdc 1024 2 /dev/vda 0 /dev/vdb 0"
dmsetup create dmroot --table "$table" >"$out/create.log" 2>&1 ||
    die "dmsetup create dmroot failed: $(cat "$out/create.log")"
st=$(dmsetup status dmroot) || die "dmsetup status dmroot failed"
echo "$st" >"$out/assembly-status"
say "assembled dmroot: $st"
# udev makes /dev/mapper/dmroot; wait for it like the root device wait would.
n=0
while [ ! -b /dev/mapper/dmroot ] && [ $n -lt 100 ]; do
    sleep 0.1
    n=$((n + 1))
done
[ -b /dev/mapper/dmroot ] || die "/dev/mapper/dmroot did not appear"
exit 0

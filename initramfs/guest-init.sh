#!/bin/sh
# /init of the dm-ulogd test initramfs (busybox sh). Installed by build-image.sh.
#
# Kernel command line parameters it reads:
#   dmulogd.scenario=NAME  run /scenarios/NAME.sh; missing or "shell": interactive shell
#   dmulogd.disks=N        wait for N virtio disks (/dev/vda, /dev/vdb, ...)
#   dmulogd.timeout=SECS   guest-side watchdog: after SECS, dump state and FAIL
#
# Prints exactly one line "DMULOGD-RESULT: PASS" or "DMULOGD-RESULT: FAIL <reason>"
# on the console (see /scenarios/lib.sh), then powers off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
export DM_DISABLE_UDEV=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /dev/mapper
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm

cmdline_param() {
    for w in $(cat /proc/cmdline); do
        case $w in "$1"=*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}

scenario=$(cmdline_param dmulogd.scenario || true)
disks=$(cmdline_param dmulogd.disks || echo 0)
gtimeout=$(cmdline_param dmulogd.timeout || echo 0)

. /scenarios/lib.sh

# Modules, in dependency order (there is no modules.dep: plain insmod).
while read -r m; do
    [ -n "$m" ] || continue
    if ! insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err; then
        # Already built in or loaded is fine; anything else is reported.
        if ! grep -q 'File exists' /tmp/insmod.err; then
            echo "init: insmod $m: $(cat /tmp/insmod.err)"
        fi
    fi
done </lib/modules/load-order

# Wait for the virtio disks.
i=0
for d in a b c d e f g h; do
    [ "$i" -lt "$disks" ] || break
    n=0
    while [ ! -b "/dev/vd$d" ] && [ "$n" -lt 100 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    [ -b "/dev/vd$d" ] || { [ -n "$scenario" ] && [ "$scenario" != shell ] && fail "disk /dev/vd$d did not appear"; }
    i=$((i + 1))
done

# Anything logged to /dev/log (a daemon that detached) lands in /tmp/syslog.
syslogd -O /tmp/syslog 2>/dev/null

if [ -z "$scenario" ] || [ "$scenario" = shell ]; then
    export DMULOGD_SHELL=1
    echo "dm-ulogd test initramfs: $(uname -r); scenarios in /scenarios, helpers: . /scenarios/lib.sh"
    echo "exit the shell to power off"
    setsid cttyhack sh -l
    sync
    poweroff -f
fi

if [ ! -f "/scenarios/$scenario.sh" ]; then
    fail "no scenario /scenarios/$scenario.sh"
fi

if [ "$gtimeout" -gt 0 ] 2>/dev/null; then
    (
        sleep "$gtimeout"
        echo "init: scenario $scenario still running after ${gtimeout}s"
        echo "--- blocked tasks (sysrq w)"
        echo w >/proc/sysrq-trigger 2>/dev/null
        sleep 1
        fail "guest timeout after ${gtimeout}s"
    ) &
fi

echo "init: running scenario $scenario"
start=$(cut -d' ' -f1 /proc/uptime)
sh "/scenarios/$scenario.sh"
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "init: scenario $scenario exited $rc (uptime $start -> $end)"
if [ "$rc" -eq 0 ]; then
    pass
else
    fail "scenario exited with status $rc"
fi

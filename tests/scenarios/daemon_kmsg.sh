#!/bin/sh
# With --daemon, dm-ulogd logs to the kernel log (/dev/kmsg), and every line
# must get there, bursts too: the kernel rate-limits what one open /dev/kmsg
# file may write (10 lines per 5 s unless printk.devkmsg=on) and drops the rest
# silently. Twelve mirrors are created back to back (a "created" line each),
# then SIGUSR1 asks for the summary (a header and one line per log at once):
# every one of those lines must be in the kernel log.
. /scenarios/lib.sh

N=12
start_daemon
i=0
while [ $i -lt $N ]; do
    make_legs m$i 2048
    i=$((i + 1))
done
i=0
while [ $i -lt $N ]; do
    create_mirror m$i 2048 userspace dmulogd-kmsg-$i core 1024 nosync >/dev/null
    i=$((i + 1))
done
sleep 1
kill -USR1 "$(daemon_pid)"
sleep 2
missing=""
i=0
while [ $i -lt $N ]; do
    dmesg | grep -q "dm-ulogd\\[.*log dmulogd-kmsg-$i created" || missing="$missing created-$i"
    dmesg | grep -q "dm-ulogd\\[.*log dmulogd-kmsg-$i luid " || missing="$missing summary-$i"
    i=$((i + 1))
done
dmesg | grep -q "dm-ulogd\\[.*$N live log(s)" || missing="$missing summary-header"
log "dm-ulogd lines in the kernel log: $(daemon_lines | wc -l)"
[ -z "$missing" ] ||
    fail "dm-ulogd lines missing from the kernel log:$missing (the kernel's /dev/kmsg rate limit drops lines a daemon writes in a burst)"
i=0
while [ $i -lt $N ]; do
    remove_dev m$i
    i=$((i + 1))
done
pass

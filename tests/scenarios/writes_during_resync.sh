#!/bin/sh
# Writes ahead of a running resync (PROTOCOL.md section 9, IS_REMOTE_RECOVERING):
# the kernel answers "recovering" by itself, for 250 ms after each question,
# for every region at or above the server's in_sync_hint, and dm-raid1 then
# requeues the write behind a 200 ms timer. On one node nothing recovers
# elsewhere, so dm-ulogd's hint stays at region_count - 1 until all regions
# are in sync. 40 random 4 KiB writes ahead of the resync point must take at
# most 1.5x the time they take on the kernel's own core log, in this boot.
. /scenarios/lib.sh

SECTORS=262144   # 128 MiB
REGION=256       # 1024 regions of 128 KiB
WRITES=40

# delayed_legs NAME: legs whose second one delays writes by 20 ms, so the
# resync (a copy to leg 1 per region) runs for half a minute.
delayed_legs() {
    carve "${1}_0" $SECTORS "$(disk_n 0)"
    carve "${1}_1raw" $SECTORS "$(disk_n 1)"
    run dmsetup create "${1}_1" --table "0 $SECTORS delay /dev/mapper/${1}_1raw 0 0 /dev/mapper/${1}_1raw 0 20" >/dev/null
    [ -b "/dev/mapper/${1}_1" ] || run dmsetup mknodes "${1}_1" >/dev/null
}

# Offsets (in 4 KiB blocks) in the upper half of the mirror, far ahead of the
# resync, the same for both logs.
awk -v n=$WRITES -v blocks=$((SECTORS / 8)) 'BEGIN { srand(7); for (i = 0; i < n; i++) print int(blocks / 2 + rand() * (blocks / 2 - 1)) }' >/tmp/offsets

centis() { awk '{ printf "%d\n", $1 * 100 }' /proc/uptime; }

# timed_writes NAME: the centiseconds the writes take, one at a time.
timed_writes() {
    _t0=$(centis)
    while read -r _b; do
        dd if=/dev/urandom of="/dev/mapper/$1" bs=4k count=1 seek="$_b" oflag=direct 2>/dev/null ||
            fail "$1: write at block $_b failed"
    done </tmp/offsets
    echo $(( $(centis) - _t0 ))
}

start_daemon
delayed_legs k
delayed_legs u
create_mirror k $SECTORS core $REGION
t_kernel=$(timed_writes k)
r_kernel=$(sync_ratio k)
remove_dev k
create_mirror u $SECTORS userspace dmulogd-resync-writes core $REGION
t_ulogd=$(timed_writes u)
r_ulogd=$(sync_ratio u)
remove_dev u
log "RESYNC-WRITES: $WRITES writes ahead of the resync: kernel core log $t_kernel cs (in sync $r_kernel after), dm-ulogd core $t_ulogd cs (in sync $r_ulogd after)"
[ "${r_kernel%%/*}" -lt 1024 ] && [ "${r_ulogd%%/*}" -lt 1024 ] ||
    fail "a resync finished before the writes did: the comparison means nothing ($r_kernel, $r_ulogd)"
[ $((t_ulogd * 10)) -le $((t_kernel * 15)) ] ||
    fail "writes during the resync took $t_ulogd cs on dm-ulogd, $t_kernel cs on the kernel's core log: more than 1.5x"
pass

#!/bin/sh
# Writes ahead of a running resync (PROTOCOL.md section 9, IS_REMOTE_RECOVERING):
# the kernel answers "recovering" by itself, for 250 ms after each question,
# for every region at or above the server's in_sync_hint, and dm-raid1 then
# requeues the write behind a 200 ms timer. On one node nothing recovers
# elsewhere, so dm-ulogd's hint stays at region_count - 1 until all regions
# are in sync. 40 random 4 KiB writes ahead of the resync point must take at
# most 1.5x the time they take on the kernel's own core log, in this boot,
# and at most 1.5x their time on a dm-ulogd mirror with no resync running.
#
# The legs take 100 ms per write (a slow disk). On instant legs the first
# comparison measures only the daemon's round trips (each write asks IN_SYNC):
# under TCG 40 writes took 0.36 s on the kernel's log and 0.59 s on
# dm-ulogd, the core-log gap the benchmarks report, while the throttle this
# test is about costs 200 ms and more per write (11 s for 40 before).
. /scenarios/lib.sh

SECTORS=262144   # 128 MiB
REGION=256       # 1024 regions of 128 KiB
WRITES=40

# delayed_legs NAME: legs that take 100 ms per write (a write ahead of the
# resync goes to the primary leg only), so the resync (a copy to leg 1 per
# region) runs for minutes.
delayed_legs() {
    for _leg in 0 1; do
        carve "${1}_${_leg}raw" $SECTORS "$(disk_n $_leg)"
        run dmsetup create "${1}_${_leg}" --table "0 $SECTORS delay /dev/mapper/${1}_${_leg}raw 0 0 /dev/mapper/${1}_${_leg}raw 0 100" >/dev/null
        [ -b "/dev/mapper/${1}_${_leg}" ] || run dmsetup mknodes "${1}_${_leg}" >/dev/null
    done
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
delayed_legs n
create_mirror k $SECTORS core $REGION
t_kernel=$(timed_writes k)
r_kernel=$(sync_ratio k)
remove_dev k
create_mirror u $SECTORS userspace dmulogd-resync-writes core $REGION
t_ulogd=$(timed_writes u)
r_ulogd=$(sync_ratio u)
remove_dev u
create_mirror n $SECTORS userspace dmulogd-resync-none core $REGION nosync
t_none=$(timed_writes n)
remove_dev n
log "RESYNC-WRITES: $WRITES writes ahead of the resync: kernel core log $t_kernel cs (in sync $r_kernel after), dm-ulogd core $t_ulogd cs (in sync $r_ulogd after); dm-ulogd with no resync $t_none cs"
[ "${r_kernel%%/*}" -lt 1024 ] && [ "${r_ulogd%%/*}" -lt 1024 ] ||
    fail "a resync finished before the writes did: the comparison means nothing ($r_kernel, $r_ulogd)"
[ $((t_ulogd * 10)) -le $((t_kernel * 15)) ] ||
    fail "writes during the resync took $t_ulogd cs on dm-ulogd, $t_kernel cs on the kernel's core log: more than 1.5x"
[ $((t_ulogd * 10)) -le $((t_none * 15)) ] ||
    fail "writes during the resync took $t_ulogd cs on dm-ulogd, $t_none cs with no resync: more than 1.5x"
pass

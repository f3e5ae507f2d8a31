#!/bin/sh
# SIGTERM at once after a failed table load (issue 23, section 2). A load
# whose log device is mounted fails after its CTR (the kernel's
# dm_get_device cannot hold the device the daemon named) and leaves a log
# that no DTR will ever free; a second load names another device and is
# served; `dmsetup remove` of that only mirror; then SIGTERM at once, about
# a second after the failed CTR, before that log has been idle the 5 s the
# daemon waits before it judges such a log. No table names it, so the
# daemon must be gone within 6 s of the SIGTERM (`systemctl stop` would
# otherwise wait 90 s and SIGKILL it).
#
# When the kernel gives the second load the failed load's luid (the address
# of its log context, freed and at once reused: 18-20 of 20 rounds of the
# plain sequence on 5.10, 6.1 and 6.12), the second log takes that log's
# place and nothing is left to judge: such a round proves nothing. So the
# first round is the plain sequence and each later round, should the luid
# have been reused, holds the freed context with a placeholder (a core-log
# mirror of another uuid, loaded between the two loads, removed before the
# only mirror is), until the failed load's log outlives the remove.
. /scenarios/lib.sh

SECTORS=32768    # 16 MiB
REGION=1024      # 32 regions
UUID=dmulogd-sigterm-failed-load
ROUNDS=6
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Failed to register|error adding target to table|dm-log-userspace|Error creating mirror dirty log|table: .*: mirror: |EXT4-fs'

# gone PID: the process has exited (or is a zombie nobody reaped yet).
gone() {
    kill -0 "$1" 2>/dev/null || return 0
    [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" = Z ]
}

# give_up REASON: fail, with x_log unmounted first, so that in a parts.sh
# boot the next part's reset can remove it.
give_up() {
    umount /mnt/x 2>/dev/null
    fail "$@"
}

start_daemon
pid=$(daemon_pid)
make_legs m0 $SECTORS
make_log x_log 4096
make_log y_log 2048
zero_dev /dev/mapper/y_log
run mke2fs -q /dev/mapper/x_log >/dev/null
mkdir -p /mnt/x
run mount -t ext4 /dev/mapper/x_log /mnt/x

make_legs p $SECTORS
round=1
while :; do
    reused_before=$(kmsg_count 'reuses the id of a log whose table load failed')
    t=$(mirror_table m0 $SECTORS userspace $UUID disk /dev/mapper/x_log $REGION)
    if dmsetup create m0 --table "$t" >/tmp/create.err 2>&1; then
        give_up "round $round: a mirror whose log device is mounted was created"
    fi
    failed_at=$(now_ds)
    dmsetup remove m0 >/dev/null 2>&1
    [ $round -eq 1 ] || create_mirror p $SECTORS userspace "placeholder-$round" core $REGION nosync
    create_mirror m0 $SECTORS userspace $UUID disk /dev/mapper/y_log $REGION
    [ $round -eq 1 ] || remove_dev p
    remove_dev m0
    reused=$(( $(kmsg_count 'reuses the id of a log whose table load failed') - reused_before ))
    [ "$reused" -eq 0 ] && break
    log "round $round: the second load reused the failed load's luid: nothing left behind, again"
    [ $round -lt $ROUNDS ] || give_up "the kernel reused the failed load's luid in all $ROUNDS rounds: no round left a failed load's log behind"
    round=$((round + 1))
done

kill -TERM "$pid"
sent_at=$(now_ds)
log "round $round: SIGTERM $(( (sent_at - failed_at) * 100 )) ms after the failed load, the only mirror removed"
while ! gone "$pid"; do
    if [ $(( $(now_ds) - sent_at )) -ge 60 ]; then
        daemon_lines | tail -8 >>"$_CONSOLE"
        give_up "dm-ulogd (pid $pid) still runs 6 s after SIGTERM with no mirror left (the failed load's log kept it)"
    fi
    sleep 0.1
done
log "dm-ulogd exited $(( ($(now_ds) - sent_at) * 100 )) ms after SIGTERM"
rm -f "$DMULOGD_PIDFILE"
run umount /mnt/x
pass

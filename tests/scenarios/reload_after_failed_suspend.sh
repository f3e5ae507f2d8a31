#!/bin/sh
# The old table's DTR does not write its stale bits over the new table's log
# (issue 24, section 2).
#
# A reload gives the new table's log (same uuid and log device, new luid)
# its RESUME before the old table's log gets its DTR. Here the old log has
# work it could not do: region D is dirty on the log device (its write was
# held in flight by a dm-delay leg while the log device was swapped for
# `error`), the write's clear failed to reach the device, and so did the
# POSTSUSPEND's write. From then on a status request every 0.3 s keeps the
# daemon from its idle write-back (2 s without requests), which would
# otherwise write the old log's bits as soon as the device works again,
# before the reload. The log device is restored and the table reloaded:
# the new log reads D dirty and resyncs it, its copy held 10 s by the
# dm-delay leg. While that resync runs, D must stay dirty on the log device
# (a crash would otherwise trust a half-copied region); the old log, whose
# bits say D is clean, must write nothing once the new log has loaded the
# device. Then the resync ends, D is recorded clean, the legs agree.
. /scenarios/lib.sh
. /scenarios/fault_lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
NR=16
UUID=dmulogd-reload-after-failed-suspend
D=6
# The old table's POSTSUSPEND fails (its log device is `error`).
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='raid1: log postsuspend failed'

# leg_delay MS: writes to leg 1 (a dm-delay) take MS ms; reads and cache
# flushes are not delayed.
leg_delay() {
    run dmsetup suspend m_1
    run dmsetup load m_1 --table "0 $SECTORS delay /dev/mapper/m_1raw 0 0 /dev/mapper/m_1raw 0 $1 /dev/mapper/m_1raw 0 0"
    run dmsetup resume m_1
}

# busy_start NAME / busy_stop: `dmsetup status NAME` every 0.3 s in the
# background (each one a request to dm-ulogd), and its end.
busy_start() {
    rm -f /tmp/busy.stop
    (
        while [ ! -f /tmp/busy.stop ]; do
            dmsetup status "$1" >/dev/null 2>&1
            sleep 0.3
        done
    ) &
    busy=$!
}
busy_stop() {
    touch /tmp/busy.stop
    wait $busy
}

start_daemon
carve m_0 $SECTORS "$(disk_n 0)"
carve m_1raw $SECTORS "$(disk_n 1)"
run dmsetup create m_1 --table "0 $SECTORS delay /dev/mapper/m_1raw 0 0" >/dev/null
[ -b /dev/mapper/m_1 ] || run dmsetup mknodes m_1 >/dev/null
make_log m_log 2048
zero_dev /dev/mapper/m_log
create_mirror m $SECTORS userspace $UUID disk /dev/mapper/m_log $REGION
wait_in_sync m 60
wait_clean_count /dev/mapper/m_log $NR $NR 10 || fail "not all $NR regions clean on the log device after the sync"

# Region D's write, held 4 s on leg 1: marked dirty on the log device.
leg_delay 4000
dd if=/dev/urandom of=/dev/mapper/m bs=4k count=1 seek=$((D * REGION / 8)) oflag=direct 2>/tmp/dd.err &
w=$!
sleep 1
kill -0 $w 2>/dev/null || fail "region $D's write finished before the log device could be swapped"
[ "$(log_bit /dev/mapper/m_log $D)" = 0 ] || fail "region $D is not dirty on the log device while its write is in flight"
failures=$(kmsg_count "dm-ulogd\\[.*log device $(devnum m_log): .* failed")
table_to_error m_log
wait $w || fail "region $D's write failed: $(cat /tmp/dd.err)"
# Its clear reaches the log; the idle write-back cannot write it.
wait_kmsg "dm-ulogd\\[.*log device $(devnum m_log): .* failed" $((failures + 1)) 10 ||
    fail "no failed write to the log device after region $D's write completed"
run dmsetup suspend m
busy_start m
log "suspended with the log device failing"
table_restore m_log
[ "$(log_bit /dev/mapper/m_log $D)" = 0 ] || fail "region $D is not dirty on the log device after the failed writes"

# Reload: the resync of D (dirty on the device) takes 10 s on leg 1.
leg_delay 10000
t=$(mirror_table m $SECTORS userspace $UUID disk /dev/mapper/m_log $REGION)
run dmsetup load m --table "$t"
run dmsetup resume m
t0=$(now_ds)
busy_stop
log "reloaded: $(mirror_status m)"
sleep 3
ratio=$(sync_ratio m)
bit=$(log_bit /dev/mapper/m_log $D)
log "3 s after the reload: $ratio in sync, region $D's clean bit on the log device: $bit"
[ "$ratio" = "$((NR - 1))/$NR" ] || fail "$ratio in sync 3 s after the reload ($((NR - 1))/$NR expected: region $D is resyncing)"
[ "$bit" = 0 ] || fail "region $D is recorded clean on the log device while the new table resyncs it (the old table's log wrote over the new one's device)"
[ "$(log_clean_count /dev/mapper/m_log $NR)" = $((NR - 1)) ] ||
    fail "$(log_clean_count /dev/mapper/m_log $NR)/$NR regions clean on the log device during the resync ($((NR - 1)) expected)"
_ls=$(mirror_log_status m)
[ "$_ls" = "3 disk $(devnum m_log) A" ] || fail "log status '$_ls' after the reload (a new log: A)"

wait_in_sync m 60
log "region $D resynced $(( ($(now_ds) - t0) / 10 )) s after the reload"
leg_delay 0
wait_clean_count /dev/mapper/m_log $NR $NR 15 ||
    fail "$(log_clean_count /dev/mapper/m_log $NR)/$NR regions clean on the log device 15 s after the resync"
compare_legs m_0 m_1
daemon_alive || fail "dm-ulogd died"
remove_dev m
c=$(log_clean_count /dev/mapper/m_log $NR)
[ "$c" = $NR ] || fail "$c/$NR regions clean on the log device after the remove"
[ "$(state_files)" = 0 ] || fail "state files left after the remove: $(ls "$DMULOGD_STATE_DIR")"
pass

#!/bin/sh
# The device under a dm-ulogd disk log fails (its linear table is swapped for
# the `error` target) while its mirror takes writes: FLUSH answers -EIO, the
# log's status shows D, the kernel marks the log failed, dm-ulogd keeps serving
# every other mirror (and takes new ones) without flooding the kernel log, and
# once the device is back and the mirror resumed, the log works again.
#
# What dm-raid1 does with a failed log (drivers/md/dm-raid1.c, do_writes): a
# failed flush sets ms->log_failure for the rest of the table's life.
# - m0, default features: writes go on to both legs regardless; the log is
#   "failed" only in its status. After the device is back, a suspend and
#   resume makes dm-ulogd re-read it and flushes succeed; the status stays D,
#   as the kernel's disk log keeps log_dev_failed for the log's life
#   (dm-log.c resets it only when a log is created).
# - m1, `handle_errors`: every write after the failure is held for user space
#   to act (dmeventd would replace the log). A resume does not clear
#   log_failure, so the held write is released by reloading the table
#   (suspend --noflush, load, resume), as LVM does; the new table's log
#   trusts its device.
# - m2 (core log) and m3 (a new disk-log mirror created during the failure)
#   take writes and reach sync meanwhile.
. /scenarios/lib.sh
. /scenarios/fault_lib.sh

SECTORS=65536    # 32 MiB
REGION=1024      # 64 regions
NR=64

start_daemon
for m in m0 m1 m2 m3; do
    make_legs $m $SECTORS
    write_random /dev/mapper/${m}_0 2 4
done
for m in m0 m1 m3; do
    make_log ${m}_log 2048
    zero_dev /dev/mapper/${m}_log
done
create_mirror m0 $SECTORS userspace dmulogd-logfail-m0 disk /dev/mapper/m0_log $REGION
MIRROR_FEATURES="1 handle_errors" create_mirror m1 $SECTORS userspace dmulogd-logfail-m1 disk /dev/mapper/m1_log $REGION
create_mirror m2 $SECTORS userspace dmulogd-logfail-m2 core $REGION
for m in m0 m1 m2; do
    wait_in_sync $m 60
done
for m in m0 m1; do
    _ls=$(mirror_log_status $m)
    [ "$_ls" = "3 disk $(devnum ${m}_log) A" ] || fail "$m: log status '$_ls' before the failure"
done
log "in sync: $(mirror_status m0)"

# ---------------------------------------------------------------- m0
rm -f /tmp/load.stop /tmp/load.fail
verify_load m0 24 &
l0=$!
sleep 1
errors=$(daemon_errors | wc -l)
noise=$(daemon_lines | grep -c '^<1[12]>')
table_to_error m0_log
t_fail=$(now_ds)
run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((28 * 256)) oflag=direct >/dev/null
wait_log_health m0 D 20
log "m0 with its log device failed: $(mirror_status m0)"
wait_kmsg "dm-ulogd\\[.*log device $(devnum m0_log).*failed" 1 10 ||
    fail "m0: no dm-ulogd line about the failed write to its log device"
wait_kmsg 'dm-ulogd\[.*dmulogd-logfail-m0.*FLUSH.*(I/O error|EIO)' 1 10 ||
    fail "m0: no dm-ulogd line saying FLUSH failed with EIO"
[ "$(in_sync_count m0)" = $NR ] || fail "m0: $(sync_ratio m0) with its log device failed"

# Every other mirror is served: m2 (core) and m1 take writes and sync, and a
# new disk-log mirror m3 is created, written and synced.
write_random /dev/mapper/m2 2 10
write_random /dev/mapper/m1 1 10
create_mirror m3 $SECTORS userspace dmulogd-logfail-m3 disk /dev/mapper/m3_log $REGION
write_random /dev/mapper/m3 2 10
for m in m1 m2 m3; do
    wait_in_sync $m 60
    compare_mirror $m
done
[ "$(mirror_log_status m1)" = "3 disk $(devnum m1_log) A" ] || fail "m1's log status changed: $(mirror_log_status m1)"
[ "$(mirror_log_status m3)" = "3 disk $(devnum m3_log) A" ] || fail "m3: log status $(mirror_log_status m3)"
sleep 1
kill -0 $l0 2>/dev/null || fail "m0's write load stopped while its log device failed: $(cat /tmp/load.fail 2>/dev/null)"
# Failed writes repeat on every flush; the log must say so without flooding
# the kernel log (and the console): at most 20 lines plus 3 a second.
secs=$(( ($(now_ds) - t_fail) / 10 ))
noise=$(( $(daemon_lines | grep -c '^<1[12]>') - noise ))
log "while m0's log device failed: $(( $(daemon_errors | wc -l) - errors )) dm-ulogd error lines, $noise error and warning lines in all, in $secs s"
[ $noise -le $((20 + 3 * secs)) ] ||
    fail "dm-ulogd wrote $noise error and warning lines to the kernel log in $secs s while m0's log device failed: $(daemon_lines | tail -2 | head -1)"

table_restore m0_log
log "m0 after its device came back, before a resume: $(mirror_log_status m0)"
run dmsetup suspend m0
run dmsetup resume m0
log "m0 resumed: $(mirror_status m0)"
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 disk $(devnum m0_log) D" ] || fail "m0: log status '$_ls' after the device came back and the mirror resumed (the kernel keeps D)"
errors=$(daemon_errors | wc -l)
sleep 2
touch /tmp/load.stop
wait $l0
[ -f /tmp/load.fail ] && fail "$(cat /tmp/load.fail)"
log "m0 load: $(cat /tmp/load.m0.jobs) verified fio jobs"
write_random /dev/mapper/m0 2 26
wait_in_sync m0 60
[ "$(daemon_errors | wc -l)" = "$errors" ] ||
    fail "m0: dm-ulogd still reports errors after the device came back: $(daemon_errors | tail -1)"
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 disk $(devnum m0_log) D" ] || fail "m0: log status '$_ls' after more writes (sticky D expected)"
compare_mirror m0

# ---------------------------------------------------------------- m1
table_to_error m1_log
dd if=/dev/urandom of=/dev/mapper/m1 bs=4k count=1 seek=$((20 * 256)) oflag=direct 2>/tmp/dd.m1 &
w=$!
wait_log_health m1 D 20
sleep 3
kill -0 $w 2>/dev/null || fail "m1 (handle_errors): a write finished after its log failed: $(cat /tmp/dd.m1)"
log "m1 (handle_errors) holds the write after its log failed: $(mirror_status m1)"
# m2 and m0 are served while m1 holds a write.
write_random /dev/mapper/m2 1 20
write_random /dev/mapper/m0 1 20
wait_in_sync m2 60
wait_in_sync m0 60
table_restore m1_log
table=$(dmsetup table m1)
run dmsetup suspend --noflush m1
run dmsetup load m1 --table "$table"
run dmsetup resume m1
log "m1 reloaded: $(mirror_status m1)"
_n=0
while kill -0 $w 2>/dev/null; do
    _n=$((_n + 1))
    [ $_n -lt 200 ] || fail "m1: the held write did not finish within 20 s of the reload"
    sleep 0.1
done
wait $w || fail "m1: the held write failed after the reload: $(cat /tmp/dd.m1)"
_ls=$(mirror_log_status m1)
[ "$_ls" = "3 disk $(devnum m1_log) A" ] || fail "m1: log status '$_ls' after the reload"
write_random /dev/mapper/m1 2 24
wait_in_sync m1 60
compare_mirror m1

daemon_alive || fail "dm-ulogd died"
for m in m0 m1 m2 m3; do
    remove_dev $m
done
for m in m0 m1 m3; do
    check_log_header /dev/mapper/${m}_log $NR
    c=$(log_clean_count /dev/mapper/${m}_log $NR)
    [ "$c" = $NR ] || fail "$m: $c/$NR regions clean on its log device after the table was removed"
done
[ "$(state_files)" = 0 ] || fail "state files left after the tables were removed: $(ls "$DMULOGD_STATE_DIR")"
pass

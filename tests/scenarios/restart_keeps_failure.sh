#!/bin/sh
# A disk log's failures survive a daemon restart (issue 26, section 2).
#
# The kernel's own disk log keeps its failure flags for the log's life:
# log_dev_failed (status D) and flush_failed (after the mirror's legs could
# not be flushed, no region is recorded clean any more). dm-ulogd keeps them
# in the log's state file, so a kill -9 and a restart must not make a failed
# log look healthy or record clears clean again:
# - the log device (a dm-linear) is swapped for `error` under a write: the
#   FLUSH fails, status D; the device comes back;
# - a leg's cache flush fails: a write, then leg 1 is suspended with a
#   table loaded that fails writes and flushes (dm-flakey), so the idle
#   write-back's leg flush waits there and fails at the resume; dm-ulogd
#   records every region dirty on its device;
# - kill -9 and restart; the kernel reconnects the log (state file in /run):
#   the status still ends in D, a new write's clear is not recorded clean
#   (no region of the log device goes from dirty to clean);
# - a table reload starts a new log: status A, it resyncs the regions its
#   device records dirty and records them clean; after the remove every
#   region is clean.
. /scenarios/lib.sh
. /scenarios/fault_lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
NR=16
UUID=dmulogd-restart-keeps-failure
# The restart: the first request after it finds no log (-ESRCH) and the
# kernel reconnects.
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Userspace log server not found'

start_daemon
make_legs f $SECTORS
make_log f_log 2048
zero_dev /dev/mapper/f_log
create_mirror f $SECTORS userspace $UUID disk /dev/mapper/f_log $REGION
wait_in_sync f 60
wait_clean_count /dev/mapper/f_log $NR $NR 10 || fail "not all $NR regions clean on the log device after the sync"
logdev="disk $(devnum f_log)"
[ "$(mirror_log_status f)" = "3 $logdev A" ] || fail "log status '$(mirror_log_status f)' before the failures"

# ---------------------------------------------------------------- D
table_to_error f_log
write_region /dev/mapper/f 1 $REGION
wait_log_health f D 20
table_restore f_log
log "log device failed and back: $(mirror_status f)"

# ---------------------------------------------------------------- legs flush
# The idle write-back comes 2 s after the write's CLEAR: leg 1 must be
# suspended before that. Under a loaded host the suspend may come late; then
# the clear is written (with a good leg flush) and another region is tried.
legs_failed=""
for r in 3 4 5; do
    write_region /dev/mapper/f $r $REGION
    hold_then_fail_writes f_1
    sleep 3
    run dmsetup resume f_1
    if wait_kmsg "dm-ulogd\\[.*log device $(devnum f_log): the mirror's legs cannot be flushed" 1 10; then
        legs_failed=$r
        table_restore f_1
        break
    fi
    log "region $r: the leg flush came before leg 1 was suspended; again"
    table_restore f_1
done
[ -n "$legs_failed" ] || fail "no leg flush of f's log failed in three tries"
wait_clean_count /dev/mapper/f_log $NR 0 10 ||
    fail "$(log_clean_count /dev/mapper/f_log $NR)/$NR regions still clean on the log device 10 s after its leg flush failed (all dirty expected)"
before=$(mirror_log_status f)
log "legs flush failed after region $legs_failed's write; all regions dirty on the log device; log status '$before'"
[ "$before" = "3 $logdev D" ] || fail "log status '$before' before the restart (D expected)"

# ---------------------------------------------------------------- restart
reconnects=$(kmsg_count 'Reconnected to userspace log server')
kill_daemon
start_daemon
after=$(mirror_log_status f)
log "after the restart: $(mirror_status f)"
wait_kmsg 'Reconnected to userspace log server' $((reconnects + 1)) 10 ||
    fail "the status after the restart was answered without a reconnect"
[ "$(kmsg_count 'created on reconnect with no saved state')" = 0 ] ||
    fail "the log was reconnected without its saved state"
[ "$after" = "3 $logdev D" ] || problem "log status '$after' after the restart (D expected: the failed device must not look healthy)"
for r in 6 7; do
    write_region /dev/mapper/f $r $REGION
done
sleep 4    # two idle write-backs' time
c=$(log_clean_count /dev/mapper/f_log $NR)
log "after writes to regions 6 and 7 and 4 s idle: $c/$NR regions clean on the log device"
[ "$c" = 0 ] || problem "$c/$NR regions recorded clean on the log device after the restart (its legs flush failed before: none may be)"
[ "$(mirror_log_status f)" = "3 $logdev D" ] || problem "log status '$(mirror_log_status f)' after writes following the restart"

# ---------------------------------------------------------------- reload
t=$(dmsetup table f)
run dmsetup suspend f
c=$(log_clean_count /dev/mapper/f_log $NR)
[ "$c" = 0 ] || problem "$c/$NR regions recorded clean on the log device after the suspend"
run dmsetup load f --table "$t"
run dmsetup resume f
log "reloaded: $(mirror_status f)"
# The new log reads its device, all dirty: the whole mirror is resynced.
wait_in_sync f 120
[ "$(mirror_log_status f)" = "3 $logdev A" ] || problem "log status '$(mirror_log_status f)' after the reload (a new log: A)"
write_region /dev/mapper/f 8 $REGION
wait_clean_count /dev/mapper/f_log $NR $NR 15 ||
    problem "$(log_clean_count /dev/mapper/f_log $NR)/$NR regions clean on the log device 15 s after the reloaded mirror synced"
compare_mirror f
fail_on_problems

daemon_alive || fail "dm-ulogd died"
remove_dev f
check_log_header /dev/mapper/f_log $NR
c=$(log_clean_count /dev/mapper/f_log $NR)
[ "$c" = $NR ] || fail "$c/$NR regions clean on the log device after the remove"
[ "$(state_files)" = 0 ] || fail "state files left after the remove: $(ls "$DMULOGD_STATE_DIR")"
pass

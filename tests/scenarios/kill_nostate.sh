#!/bin/sh
# dm-ulogd killed with SIGKILL under write load, and its state directory wiped
# before it starts again: the kernel reconnects logs the daemon knows nothing
# about. Be safe: the core log (m0) takes every region as out of sync (its
# in-sync count drops to 0, and climbs back to full once the mirror is
# resumed and resyncs); the disk log (m1) trusts its device: right after the
# reconnect, at least every region clean on the device at the kill is in
# sync. No write is lost (fio verifies every block it wrote), the legs are
# identical at the end and hold a pattern written across the kill.
#
# The kernel caches "all in sync" (dm-log-userspace's in_sync_hint) until the
# next resume and asks for no resync work before it; the reconnect path does
# not reset it. So the scenario suspends and resumes both mirrors after the
# reconnect, as an operator would.
. /scenarios/lib.sh

SECTORS=65536    # 32 MiB
REGION=1024      # 64 regions
NR=64
PATTERN_MB=26
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Request timed out|Unable to send log request|Userspace log server not found'

start_daemon
for m in m0 m1; do
    make_legs $m $SECTORS
    write_random /dev/mapper/${m}_0 4 4
done
make_log m1_log 2048
zero_dev /dev/mapper/m1_log
create_mirror m0 $SECTORS userspace dmulogd-nostate-m0 core $REGION
create_mirror m1 $SECTORS userspace dmulogd-nostate-m1 disk /dev/mapper/m1_log $REGION
wait_in_sync m0 90
wait_in_sync m1 90
log "both in sync: $(sync_ratio m0) $(sync_ratio m1)"

run dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 >/dev/null
rm -f /tmp/load.stop /tmp/load.fail
verify_load m0 24 &
l0=$!
verify_load m1 24 &
l1=$!
dd if=/tmp/pattern of=/dev/mapper/m0 bs=4k seek=$((PATTERN_MB * 256)) oflag=direct 2>/tmp/dd.m0 &
p0=$!
dd if=/tmp/pattern of=/dev/mapper/m1 bs=4k seek=$((PATTERN_MB * 256)) oflag=direct 2>/tmp/dd.m1 &
p1=$!
sample_sync /tmp/samples m0 m1
sleep 2.5
# Under a loaded host a status can take seconds: kill only once both
# mirrors have been sampled under the load.
_n=0
while ! grep -q ' m1 [0-9]' /tmp/samples 2>/dev/null; do
    [ $_n -lt 300 ] || fail "no in-sync sample of m1 within 30 s"
    sleep 0.1
    _n=$((_n + 1))
done

t_kill=$(now_ds)
kill_daemon
# Nobody writes the log device while the daemon is down.
clean=$(log_clean_count /dev/mapper/m1_log $NR)
log "m1: $clean/$NR regions clean on its log device at the kill"
rm -f "$DMULOGD_STATE_DIR"/log-*
[ "$(state_files)" = 0 ] || fail "cannot wipe the state directory"
start_daemon
t_start=$(now_ds)
run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((30 * 256)) oflag=direct >/dev/null
t_m0=$(now_ds)
run dd if=/dev/urandom of=/dev/mapper/m1 bs=4k count=1 seek=$((30 * 256)) oflag=direct >/dev/null
t_m1=$(now_ds)
wait_kmsg 'Reconnected to userspace log server' 2 10 ||
    fail "writes went through but the kernel reconnected fewer than two logs"
[ "$(kmsg_count 'created on reconnect from its saved state')" = 0 ] || fail "a log was restored from a wiped state directory"
log "RECONNECT nostate: restart $(( (t_start - t_kill) * 100 )) ms after the kill; writes through again after m0 $(( (t_m0 - t_start) * 100 )) ms, m1 $(( (t_m1 - t_start) * 100 )) ms; status $(sync_ratio m0) $(sync_ratio m1)"

sleep 4
touch /tmp/load.stop
wait $p0 || fail "pattern write to m0 failed across the kill: $(cat /tmp/dd.m0)"
wait $p1 || fail "pattern write to m1 failed across the kill: $(cat /tmp/dd.m1)"
wait $l0
wait $l1
stop_sampling /tmp/samples
[ -f /tmp/load.fail ] && fail "$(cat /tmp/load.fail) (data written across the kill was lost, or a write failed)"
log "load: $(cat /tmp/load.m0.jobs) + $(cat /tmp/load.m1.jobs) verified fio jobs"

before0=$(min_sample /tmp/samples m0 0 "$t_kill")
before1=$(min_sample /tmp/samples m1 0 "$t_kill")
after0=$(min_sample /tmp/samples m0 "$t_start")
after1=$(min_sample /tmp/samples m1 "$t_start")
log "lowest in-sync counts: m0 $before0 before the kill, $after0 after; m1 $before1 before, $after1 after ($clean clean on the device); now $(sync_ratio m0) $(sync_ratio m1)"
[ "$before0" = $NR ] && [ "$before1" = $NR ] || fail "in-sync counts $before0 $before1 before the kill"
[ -n "$after0" ] && [ "$after0" -ge 0 ] && [ "$after0" -lt $NR ] ||
    fail "m0 (core, no saved state): in-sync count never dropped after the reconnect (lowest $after0): regions were trusted with no state to say they are in sync"
[ "$(in_sync_count m0)" -lt $NR ] || fail "m0: $(sync_ratio m0) in sync before any resync"
[ -n "$after1" ] && [ "$after1" -ge "$clean" ] ||
    fail "m1 (disk, no saved state): in-sync count $after1 after the reconnect, but $clean regions were clean on its device$(_t=$(reconnect_trouble) && echo "; kernel: $_t")"

for m in m0 m1; do
    run dmsetup suspend $m
    run dmsetup resume $m
    log "$m resumed: $(sync_ratio $m)"
done
[ "$(in_sync_count m1)" -ge "$clean" ] || fail "m1: $(sync_ratio m1) after resume, $clean clean on its device"
wait_in_sync m0 120
wait_in_sync m1 120
compare_mirror m0
compare_mirror m1
legs_hold_pattern "the kill"
daemon_alive || fail "dm-ulogd died"
remove_dev m0
remove_dev m1
check_log_header /dev/mapper/m1_log $NR
[ "$(log_clean_count /dev/mapper/m1_log $NR)" = $NR ] || fail "m1: regions dirty on its log device after the table was removed"
[ "$(state_files)" = 0 ] || fail "state files left after the tables were removed: $(ls "$DMULOGD_STATE_DIR")"
pass

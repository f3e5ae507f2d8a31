#!/bin/sh
# After a restart, the suspend of a disk log not reconnected yet, whose log
# device hangs, stalls only that mirror (issue 27, section 1).
#
# dm-ulogd is killed (-9) and restarted while mirror ha is idle, so its log
# is not reconnected; mirror hb is written after the restart (reconnected).
# ha's log device (a dm-linear) is suspended, then `dmsetup suspend ha`: the
# kernel sends the POSTSUSPEND of a log the daemon does not know, and the
# daemon writes the log's saved bits to its device (after a leg flush), as
# the old table's last image. That write waits on the suspended device; it
# must go through the engine with the POSTSUSPEND's answer parked, not block
# the loop: meanwhile hb keeps at least half of its write rate (fio QD1
# random 4 KiB writes, measured after the restart before and during the
# hang; the hang lasts 11 s, under the kernel's 15 s request timeout), and
# `dmsetup suspend ha` is still waiting. Once the log device is resumed the
# suspend completes, the device holds the saved image (all clean), and ha
# resumes, reconnects and works.
. /scenarios/lib.sh
. /scenarios/bench_lib.sh
. /scenarios/fault_lib.sh

SECTORS=65536    # 32 MiB
REGION=1024      # 64 regions
NR=64
MEASURE=5        # seconds per rate measurement
# hb's rate during the hang over its rate before, at least: with the loop
# blocked (2fa7c2d) it is 0, every write of hb waiting out the hang; with
# the write-back in the engine it measured 0.95 and 1.09, and 0.66 beside other
# guests loading the host's two cores.
MIN_RATIO=0.5
HANG=11          # seconds ha's log device stays suspended
# The restart: the first request of a log finds no log (-ESRCH) and the
# kernel reconnects it; PRESUSPEND and POSTSUSPEND do not reconnect, so the
# kernel warns that ha's log presuspend failed.
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Userspace log server not found|raid1: log presuspend failed'

start_daemon
for m in ha hb; do
    make_legs $m $SECTORS
    make_log ${m}_log 2048
    zero_dev /dev/mapper/${m}_log
done
create_mirror ha $SECTORS userspace dmulogd-hung-ha disk /dev/mapper/ha_log $REGION
create_mirror hb $SECTORS userspace dmulogd-hung-hb disk /dev/mapper/hb_log $REGION
wait_in_sync ha 60
wait_in_sync hb 60
write_region /dev/mapper/ha 3 $REGION
sleep 3    # the idle write-back records region 3 clean again
[ "$(log_clean_count /dev/mapper/ha_log $NR)" = $NR ] || fail "not all $NR regions of ha clean on its log device before the kill"

kill_daemon
start_daemon
# hb is reconnected by its first write; ha is not touched (not even its status).
write_region /dev/mapper/hb 1 $REGION
set -- $(fio_terse /dev/mapper/hb $MEASURE --rw=randwrite --bs=4k --ioengine=psync --iodepth=1)
before=$1
log "hb after the restart: $before IOPS"
[ "${before%.*}" -gt 0 ] || fail "hb wrote nothing after the restart"

run dmsetup suspend ha_log
t0=$(now_ds)
log "ha_log ($(devnum ha_log)) suspended: its I/O is held"
dmsetup suspend ha 2>/tmp/suspend.err &
susp=$!
rm -f /tmp/suspend.waited
(
    sleep $HANG
    ! kill -0 $susp 2>/dev/null || touch /tmp/suspend.waited
    dmsetup resume ha_log
) &
resumer=$!
sleep 1
set -- $(fio_terse /dev/mapper/hb $MEASURE --rw=randwrite --bs=4k --ioengine=psync --iodepth=1)
during=$1
held=$(( ($(now_ds) - t0) / 10 ))
log "hb while ha's suspend waits on its log device: $during IOPS (measured up to $held s into the hang)"
[ "$(kmsg_count 'raid1: log presuspend failed')" -le 1 ] || problem "more than one presuspend failure in the kernel log"
ratio=$(awk -v b="$before" -v d="$during" 'BEGIN { printf "%.2f", d / b }')
log "hb keeps $ratio of its write rate while ha's log device hangs ($during vs $before IOPS)"
awk -v b="$before" -v d="$during" -v m=$MIN_RATIO 'BEGIN { exit !(d >= m * b) }' ||
    problem "hb fell to $ratio of its write rate while ha's suspend waited on its hung log device (at least $MIN_RATIO required)"
wait $resumer
log "ha_log resumed after $(( ($(now_ds) - t0) / 10 )) s"
[ -f /tmp/suspend.waited ] ||
    problem "dmsetup suspend ha finished while ha's log device was suspended: its POSTSUSPEND wrote nothing there ($(cat /tmp/suspend.err))"
_n=0
while kill -0 $susp 2>/dev/null; do
    _n=$((_n + 1))
    [ $_n -lt 100 ] || fail "dmsetup suspend ha did not finish within 10 s of its log device's resume"
    sleep 0.1
done
wait $susp || fail "dmsetup suspend ha failed: $(cat /tmp/suspend.err)"
log "ha suspended $(( ($(now_ds) - t0) / 10 )) s after its log device was"
echo "RESULT restart_suspend_hung_log before_iops=$before during_iops=$during ratio=$ratio"
fail_on_problems

# The POSTSUSPEND wrote the saved image: header and every region clean.
check_log_header /dev/mapper/ha_log $NR
c=$(log_clean_count /dev/mapper/ha_log $NR)
[ "$c" = $NR ] || fail "$c/$NR regions of ha clean on its log device after its suspend"
run dmsetup resume ha
write_region /dev/mapper/ha 5 $REGION
wait_in_sync ha 60
wait_in_sync hb 60
for m in ha hb; do
    _ls=$(mirror_log_status $m)
    [ "$_ls" = "3 disk $(devnum ${m}_log) A" ] || fail "$m: log status '$_ls' at the end"
    compare_mirror $m
done
daemon_alive || fail "dm-ulogd died"
for m in ha hb; do
    remove_dev $m
    c=$(log_clean_count /dev/mapper/${m}_log $NR)
    [ "$c" = $NR ] || fail "$m: $c/$NR regions clean on its log device after the remove"
done
[ "$(state_files)" = 0 ] || fail "state files left after the removes: $(ls "$DMULOGD_STATE_DIR")"
pass

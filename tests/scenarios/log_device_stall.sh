#!/bin/sh
# One log device stops answering; only its own mirror waits (issue 10,
# section 1). Two disk-log mirrors on separate log devices take writes; the
# first mirror's log device (a dm-linear) is suspended with `dmsetup
# suspend`, which is what a path failover or an operator's reload looks like.
# - The other mirror keeps at least 80% of its write rate (fio QD1 random 4 KiB
#   writes, measured alone, beside the first mirror's load, and during the
#   stall; judged against the rate beside the load, the ratio to the rate
#   alone printed too).
# - SIGUSR1 is answered during the stall, and the summary shows the stalled
#   log's I/O in flight; the stall is reported after 5 s.
# - After `dmsetup resume` of the log device, the first mirror's fio (with
#   verify) completes with nothing lost, and both mirrors' legs are identical.
. /scenarios/lib.sh
. /scenarios/bench_lib.sh

SECTORS=65536    # 32 MiB
REGION=1024      # 64 regions
MEASURE=6        # seconds per rate measurement

start_daemon
for m in sa sb; do
    make_legs $m $SECTORS
    make_log ${m}_log 2048
    zero_dev /dev/mapper/${m}_log
done
create_mirror sa $SECTORS userspace dmulogd-stall-sa disk /dev/mapper/sa_log $REGION
create_mirror sb $SECTORS userspace dmulogd-stall-sb disk /dev/mapper/sb_log $REGION
wait_in_sync sa 60
wait_in_sync sb 60

# sb's rate alone, then with sa under fio verify load.
set -- $(fio_terse /dev/mapper/sb $MEASURE --rw=randwrite --bs=4k --ioengine=psync --iodepth=1)
alone=$1
log "sb alone: $alone IOPS"
rm -f /tmp/load.stop /tmp/load.fail
verify_load sa 24 &
load=$!
sleep 1
set -- $(fio_terse /dev/mapper/sb $MEASURE --rw=randwrite --bs=4k --ioengine=psync --iodepth=1)
loaded=$1
log "sb with sa under load: $loaded IOPS"
[ "${loaded%.*}" -gt 0 ] || fail "sb wrote nothing before the stall"

run dmsetup suspend sa_log
stall_t0=$(now_ds)
log "sa_log ($(devnum sa_log)) suspended: its I/O is held"
# A write to sa's last region, which its load never touches: its mark must
# reach the log device (a load that rewrites the same regions may need no
# log write at all: re-marks of regions whose clears wait are free).
dd if=/dev/urandom of=/dev/mapper/sa bs=4k count=1 seek=$((SECTORS / 8 - 1)) oflag=direct 2>/tmp/dd.held &
held=$!
sleep 1

set -- $(fio_terse /dev/mapper/sb $MEASURE --rw=randwrite --bs=4k --ioengine=psync --iodepth=1)
during=$1
log "sb during the stall: $during IOPS"

summary=$(daemon_summary 'live log\(s\)')
log "SIGUSR1 during the stall: $summary"
inflight=$(dmesg | grep -E "dm-ulogd\[.*log device $(devnum sa_log):.*I/O in flight" | tail -1)
log "stalled log in the summary: $inflight"
case $inflight in
    *" 0 I/O in flight"*|"") fail "the SIGUSR1 summary shows no I/O in flight for sa_log: '$inflight'" ;;
esac
wait_kmsg 'dm-ulogd\[.*has not completed after' 1 10 || fail "the stall of sa_log was not reported"
dmesg | grep -E 'dm-ulogd\[.*has not completed after' | tail -1 >>"$_CONSOLE"

run dmsetup resume sa_log
log "sa_log resumed after $(( ($(now_ds) - stall_t0) / 10 )) s"
wait $held || fail "the write held by the stalled log device failed: $(cat /tmp/dd.held)"
sleep 3
touch /tmp/load.stop
wait $load
[ ! -f /tmp/load.fail ] || fail "fio verify on sa failed: $(cat /tmp/load.fail)"
log "sa: $(cat /tmp/load.sa.jobs) fio verify jobs completed"
wait_kmsg 'dm-ulogd\[.*log device answered again' 1 10 || fail "dm-ulogd did not report sa_log answering again"

for m in sa sb; do
    wait_in_sync $m 60
    _ls=$(mirror_log_status $m)
    [ "$_ls" = "3 disk $(devnum ${m}_log) A" ] || fail "$m: log status '$_ls' after the stall"
done
run dmsetup suspend sa
run dmsetup suspend sb
compare_mirror sa
compare_mirror sb
run dmsetup resume sa
run dmsetup resume sb

# Judged, as issue 10 words it, against sb's rate under load, just before
# the suspend; the ratio to its rate alone is printed too. Since the FUA
# write made sb fast (~500 IOPS alone), that one measured 0.71-0.90: a cost
# of the stall on the other logs that is not explained yet.
ratio=$(awk -v b="$loaded" -v d="$during" 'BEGIN { printf "%.2f", d / b }')
ratio_alone=$(awk -v b="$alone" -v d="$during" 'BEGIN { printf "%.2f", d / b }')
log "sb keeps $ratio of its write rate under load during the stall ($during vs $loaded IOPS; $ratio_alone of its rate alone, $alone IOPS)"
awk -v b="$loaded" -v d="$during" 'BEGIN { exit !(d >= 0.8 * b) }' || fail "sb fell to $ratio of its write rate while sa_log hung (at least 0.80 required)"
echo "RESULT log_device_stall alone_iops=$alone loaded_iops=$loaded during_iops=$during ratio=$ratio ratio_alone=$ratio_alone"
pass

#!/bin/sh
# `dm-ulogd convert` (issue 21): a live mirror's disk log moves between
# dm-ulogd and the kernel's own `disk` log by a table reload on the same log
# device, with no resync. First during the initial resync (the regions not
# yet in sync stay out of sync across the move: the count after it is at
# least the count before and below the total), then four moves under fio
# write load with verification. The in-sync count right after each move is
# at least the count right before, and, sampled all along, never drops
# (leaving out the answers that came while a convert ran: a status can meet
# the new log before it has read the device, and it then counts 0; seen with
# dm-ulogd's log, and the kernel's dm-log.c counts 0 before its resume too).
# No write is lost; the legs are identical at the end and the log device
# holds a valid header. A core log is refused without --allow-resync;
# converting to the side that serves the log already changes nothing.
. /scenarios/lib.sh

SECTORS=262144   # 128 MiB
REGION=1024
NR=$((SECTORS / REGION))
CONF=/tmp/mirrors

start_daemon
# Leg 1 delays each write by 100 ms while the first moves are made, so the
# initial resync is still running then however fast the host is.
carve mc_0 $SECTORS "$(disk_n 0)"
carve mc_1raw $SECTORS "$(disk_n 1)"
run dmsetup create mc_1 --table "0 $SECTORS delay /dev/mapper/mc_1raw 0 0 /dev/mapper/mc_1raw 0 100" >/dev/null
[ -b /dev/mapper/mc_1 ] || run dmsetup mknodes mc_1 >/dev/null
make_log mc_log 2048
zero_dev /dev/mapper/mc_log
L0=$(devnum mc_0)
L1=$(devnum mc_1)
LOG=$(devnum mc_log)
USER_TABLE="0 $SECTORS mirror userspace 5 dmulogd-mc disk 2 $LOG $REGION 2 $L0 0 $L1 0"
KERNEL_TABLE="0 $SECTORS mirror disk 2 $LOG $REGION 2 $L0 0 $L1 0"

run dm-ulogd create mc /dev/mapper/mc_0,/dev/mapper/mc_1 /dev/mapper/mc_log --save --config $CONF >/dev/null
sample_sync /tmp/sync mc

# convert TO WORDS: the move, and the table the kernel then has. The time
# span of each move goes to /tmp/moves ("FROM_DS TO_DS").
# The in-sync count right after the move is at least the count right before.
convert() {
    _before=$(in_sync_count mc)
    _from=$(now_ds)
    _out=$(run dm-ulogd convert mc --to "$1" --config $CONF)
    echo "$_from $(now_ds)" >>/tmp/moves
    _after=$(in_sync_count mc)
    log "$_out ($_before/$NR in sync before, $_after/$NR after)"
    [ "$_after" -ge "$_before" ] || fail "the move to $2 dropped the in-sync count from $_before to $_after"
    case $1 in
        kernel) _want=$KERNEL_TABLE ;;
        *) _want=$USER_TABLE ;;
    esac
    [ "$(dmsetup table mc)" = "$_want" ] || fail "table after convert --to $1: '$(dmsetup table mc)', expected '$_want'"
    echo "$_out" | grep -qxF "converted mc: its log is served by $2 now: $_want" || fail "convert --to $1 said: $_out"
}

# --- during the initial resync
sleep 1
before=$(in_sync_count mc)
convert kernel "the kernel"
after=$(in_sync_count mc)
log "initial resync: $before/$NR in sync before the move, $after/$NR after"
[ "$after" -lt "$NR" ] || fail "the resync ended before the first move ($after/$NR): nothing was left to survive it"
[ "$after" -ge "$before" ] || fail "the move to the kernel's log dropped the in-sync count from $before to $after"
sleep 1
before=$(in_sync_count mc)
convert userspace dm-ulogd
after=$(in_sync_count mc)
log "initial resync: $before/$NR in sync before the move back, $after/$NR after"
[ "$after" -ge "$before" ] || fail "the move to dm-ulogd dropped the in-sync count from $before to $after"
[ "$after" -lt "$NR" ] || fail "the resync ended before the move back ($after/$NR): nothing was left to survive it"
# Leg 1 at full speed again.
run dmsetup suspend mc_1 >/dev/null
run dmsetup load mc_1 --table "0 $SECTORS linear /dev/mapper/mc_1raw 0" >/dev/null
run dmsetup resume mc_1 >/dev/null
wait_in_sync mc 300

# --- under write load
rm -f /tmp/load.stop /tmp/load.fail
verify_load mc 64 &
loader=$!
sleep 3
for to in kernel userspace kernel userspace; do
    [ ! -f /tmp/load.fail ] || break
    if [ $to = kernel ]; then convert kernel "the kernel"; else convert userspace dm-ulogd; fi
    sleep 2
done
touch /tmp/load.stop
wait $loader
[ ! -f /tmp/load.fail ] || fail "a write was lost: $(cat /tmp/load.fail)"
jobs=$(cat /tmp/load.mc.jobs)
[ "$jobs" -ge 2 ] || fail "only $jobs fio jobs ran under the moves"
stop_sampling /tmp/sync
drop=$(awk 'NR == FNR { from[NR] = $1; to[NR] = $2; moves = NR; next }
    $2 == "mc" && $3 != "" {
        for (i = 1; i <= moves; i++) if ($1 >= from[i] && $1 <= to[i]) { during++; next }
        v = $3 + 0; if (seen && v < prev) { print prev " -> " v " at " $1; dropped = 1; exit } prev = v; seen = 1; n++ }
    END { if (!dropped) print "ok " n " " during + 0 }' /tmp/moves /tmp/sync)
case $drop in
    "ok "*) log "the in-sync count never dropped: $(echo "$drop" | cut -d' ' -f2) samples ($(echo "$drop" | cut -d' ' -f3) more answered during the moves); $jobs verified fio jobs" ;;
    *) fail "the in-sync count dropped: $drop (moves: $(tr '\n' ' ' </tmp/moves))" ;;
esac
[ "$(in_sync_count mc)" = "$NR" ] || fail "not in sync after the moves: $(sync_ratio mc)"

# --- nothing to do, and a core log
out=$(run dm-ulogd convert mc --to userspace --config $CONF)
[ "$out" = "mc: its log is served by dm-ulogd already" ] || fail "convert to the same side: $out"
[ "$(dmsetup table mc)" = "$USER_TABLE" ] || fail "a convert to the same side changed the table"
make_legs cc 16384
run dm-ulogd create cc /dev/mapper/cc_0,/dev/mapper/cc_1 core >/dev/null
err=$(dm-ulogd convert cc --to kernel 2>&1) && fail "a core log was converted without --allow-resync"
echo "$err" | grep -qF -- "add --allow-resync" || fail "core log refusal: $err"
wait_in_sync cc 60
out=$(run dm-ulogd convert cc --to kernel --allow-resync)
[ "$(dmsetup table cc)" = "0 16384 mirror core 1 $REGION 2 $(devnum cc_0) 0 $(devnum cc_1) 0" ] ||
    fail "cc with --allow-resync: $(dmsetup table cc)"
wait_in_sync cc 60

compare_mirror mc
for m in mc cc; do
    run dm-ulogd remove $m >/dev/null
done
check_log_header /dev/mapper/mc_log $NR
[ "$(log_clean_count /dev/mapper/mc_log $NR)" = "$NR" ] || fail "log device not all clean after the remove"
[ -z "$(daemon_errors)" ] || fail "dm-ulogd logged errors: $(daemon_errors | head -3)"
daemon_alive || fail "dm-ulogd died"
pass

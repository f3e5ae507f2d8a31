# Body of kill_core and kill_disk (sourced after lib.sh with LOGTYPE=core|disk).
#
# dm-ulogd is killed with SIGKILL while two mirrors take writes (m0; m1 with
# integrated_flush), twice, and started again each time with the same options. The kernel's reconnect path (a CTR with its NUL, RESUME, the request
# again) must bring both logs back from their state files within seconds, no
# region that was in sync before a kill may be resynced after it, and no write
# may be lost.
#
# - Both mirrors reach full sync before the first kill and take no failed
#   writes, so every region stays in sync: the in-sync count, sampled about
#   every 0.3 s from before the first kill to the end of the load, must never
#   drop below the full count (a lost state shows as a drop to 0, a core log
#   resyncing everything; the kernel would not even resync it before the next
#   resume, as it caches "all in sync" until then).
# - Load: per mirror a loop of fio jobs (2 MiB of 4 KiB random writes at queue
#   depth 8, then fio reads every block back and checks its crc32c and offset:
#   a lost write fails the job), plus one dd pass writing a 4 MiB random
#   pattern that spans the first kill.
# - After each restart one 4 KiB write per mirror measures when writes go
#   through again; it waits while a request that was in flight at the kill
#   times out (15 s, then the kernel resends it and reconnects).
# - Then the load stops, the mirrors must be in sync with identical legs, and
#   both legs hold the pattern.
# - Last, a kill while the mirrors are idle, so that the first request after
#   the restart is a write's IN_SYNC for a region the mirror does not cache:
#   that write must still reach both legs.
# - Disk logs: after the tables are removed the log devices hold a valid
#   header and every region clean.

SECTORS=65536       # 32 MiB
REGION=1024         # 512 KiB: 64 regions
NR=64
KILLS="2.5 1.2"     # seconds of load before each kill
FIO_MB=24           # fio at [0, 24) MiB
PATTERN_MB=26       # the dd pattern at [26, 30) MiB
PROBE_MB=30         # one 4 KiB write per restart at [30, 32) MiB
# A request in flight at a kill times out and is resent (15 s); a request
# that finds no daemon fails to send; the new daemon answers -ESRCH for a log
# it does not know yet. All three make the kernel reconnect, and say so.
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Request timed out|Unable to send log request|Userspace log server not found'

log_args() { # NAME
    if [ "$LOGTYPE" = disk ]; then
        echo "disk /dev/mapper/${1}_log $REGION"
    else
        echo "core $REGION"
    fi
}

start_daemon
for m in m0 m1; do
    make_legs $m $SECTORS
    write_random /dev/mapper/${m}_0 4 4
    if [ "$LOGTYPE" = disk ]; then
        make_log ${m}_log 2048
        zero_dev /dev/mapper/${m}_log
    fi
done
# m2: 8 MiB; its leg 1 is a dm-delay device, made to delay writes by 4 s
# later, to hold a write in flight across a kill.
carve m2_0 16384 "$(disk_n 0)"
carve m2_1raw 16384 "$(disk_n 1)"
run dmsetup create m2_1 --table "0 16384 delay /dev/mapper/m2_1raw 0 0" >/dev/null
[ -b /dev/mapper/m2_1 ] || run dmsetup mknodes m2_1 >/dev/null
if [ "$LOGTYPE" = disk ]; then
    make_log m2_log 2048
    zero_dev /dev/mapper/m2_log
fi
# shellcheck disable=SC2046
create_mirror m2 16384 userspace dmulogd-kill-$LOGTYPE-m2 $(log_args m2)
# shellcheck disable=SC2046
create_mirror m0 $SECTORS userspace dmulogd-kill-$LOGTYPE-m0 $(log_args m0)
# shellcheck disable=SC2046
create_mirror m1 $SECTORS userspace dmulogd-kill-$LOGTYPE-m1 integrated_flush $(log_args m1)
wait_in_sync m0 90
wait_in_sync m1 90
wait_in_sync m2 90
log "both in sync: $(sync_ratio m0) $(sync_ratio m1)"

run dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 >/dev/null
rm -f /tmp/load.stop /tmp/load.fail
verify_load m0 $FIO_MB &
l0=$!
verify_load m1 $FIO_MB &
l1=$!
dd if=/tmp/pattern of=/dev/mapper/m0 bs=4k seek=$((PATTERN_MB * 256)) oflag=direct 2>/tmp/dd.m0 &
p0=$!
dd if=/tmp/pattern of=/dev/mapper/m1 bs=4k seek=$((PATTERN_MB * 256)) oflag=direct 2>/tmp/dd.m1 &
p1=$!
t_load=$(now_ds)
sample_sync /tmp/samples m0 m1

k=0
worst=0
for delay in $KILLS; do
    k=$((k + 1))
    sleep "$delay"
    reconnects=$(kmsg_count 'Reconnected to userspace log server')
    t_kill=$(now_ds)
    kill_daemon
    start_daemon
    t_start=$(now_ds)
    run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((PROBE_MB * 256 + k)) oflag=direct >/dev/null
    t_m0=$(now_ds)
    run dd if=/dev/urandom of=/dev/mapper/m1 bs=4k count=1 seek=$((PROBE_MB * 256 + k)) oflag=direct >/dev/null
    t_m1=$(now_ds)
    # Both writes needed their log, so both logs are back; the kernel says so
    # once per reconnecting caller.
    wait_kmsg 'Reconnected to userspace log server' $((reconnects + 2)) 10 ||
        fail "kill $k: writes went through but the kernel reconnected fewer than two logs"
    [ "$(kmsg_count 'created on reconnect with no saved state')" = 0 ] ||
        fail "kill $k: a log was reconnected without its saved state: $(dmesg | grep -m1 'created on reconnect with no saved state')"
    t_back=$(( (t_m0 > t_m1 ? t_m0 : t_m1) - t_kill ))
    [ $t_back -gt $worst ] && worst=$t_back
    log "RECONNECT $LOGTYPE kill $k: restart $(( (t_start - t_kill) * 100 )) ms after the kill; writes through again after m0 $(( (t_m0 - t_start) * 100 )) ms, m1 $(( (t_m1 - t_start) * 100 )) ms; status $(sync_ratio m0) $(sync_ratio m1)"
    [ $t_back -le 600 ] || fail "kill $k: writes went through again only $((t_back / 10)) s after the kill"
done
sleep 2
touch /tmp/load.stop
wait $p0 || fail "pattern write to m0 failed across the kills: $(cat /tmp/dd.m0)"
wait $p1 || fail "pattern write to m1 failed across the kills: $(cat /tmp/dd.m1)"
wait $l0
wait $l1
stop_sampling /tmp/samples
[ -f /tmp/load.fail ] && fail "$(cat /tmp/load.fail) (data written across a kill was lost, or a write failed)"
log "load: $(cat /tmp/load.m0.jobs) + $(cat /tmp/load.m1.jobs) verified fio jobs in $(( ($(now_ds) - t_load) / 10 )) s; $k kills, writes back within $((worst * 100)) ms of a kill at worst"
[ "$(cat /tmp/load.m0.jobs)" -ge 1 ] && [ "$(cat /tmp/load.m1.jobs)" -ge 1 ] || fail "a fio job did not finish"

for m in m0 m1; do
    lo=$(min_sample /tmp/samples $m)
    n=$(grep -c " $m " /tmp/samples)
    log "$m: lowest in-sync count over $n samples across the kills: $lo/$NR"
    if [ "$lo" != $NR ]; then
        grep " $m " /tmp/samples | awk -v f=$NR '$3 + 0 != f' | head -5 >>"$_CONSOLE"
        _ins=$(reconnect_trouble)
        fail "$m: in-sync count dropped to $lo/$NR across the kills, now $(sync_ratio $m) (-1: the status failed); regions in sync before a kill were reported out of sync${_ins:+; kernel: $_ins}"
    fi
done

wait_in_sync m0 120
wait_in_sync m1 120
compare_mirror m0
compare_mirror m1
legs_hold_pattern "the first kill"

# The first request after a restart is the IN_SYNC of a write to a region the
# mirror does not cache (idle mirrors drop clean regions from their cache).
sleep 2
reconnects=$(kmsg_count 'Reconnected to userspace log server')
kill_daemon
start_daemon
t_start=$(now_ds)
run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((10 * 256)) oflag=direct >/dev/null
run dd if=/dev/urandom of=/dev/mapper/m1 bs=4k count=1 seek=$((10 * 256)) oflag=direct >/dev/null
log "RECONNECT $LOGTYPE idle kill: writes through again $(( ($(now_ds) - t_start) * 100 )) ms after the restart"
wait_kmsg 'Reconnected to userspace log server' $((reconnects + 2)) 10 ||
    fail "idle kill: writes went through but the kernel reconnected fewer than two logs"
log "after the idle kill: $(sync_ratio m0) $(sync_ratio m1)"
[ "$(in_sync_count m0)" = $NR ] && [ "$(in_sync_count m1)" = $NR ] ||
    fail "idle kill: in-sync counts $(sync_ratio m0) $(sync_ratio m1)"
for m in m0 m1; do
    wait_in_sync $m 60
    if legs_differ ${m}_0 ${m}_1 >/tmp/legs.where; then
        _ins=$(reconnect_trouble)
        fail "idle kill: $m reports $(sync_ratio $m) in sync but its legs differ at $(cat /tmp/legs.where) (the first write after the restart reached one leg only${_ins:+; kernel: $_ins})"
    fi
    log "$m: legs identical after the idle kill"
done

# A write in flight at the kill (m2's leg 1 holds it for 4 s) and two callers
# that reconnect the log: two status requests that found no daemon. The
# kernel sends CTR and RESUME once per caller, so the restored log gets a
# RESUME while it is live and the write's region is marked: every region must
# stay in sync.
[ "$(in_sync_count m2)" = 16 ] || fail "m2: $(sync_ratio m2) before the in-flight kill"
run dmsetup suspend m2_1
run dmsetup load m2_1 --table "0 16384 delay /dev/mapper/m2_1raw 0 0 /dev/mapper/m2_1raw 0 4000"
run dmsetup resume m2_1
dd if=/dev/urandom of=/dev/mapper/m2 bs=4k count=1 seek=$((5 * 128)) oflag=direct 2>/dev/null &
w=$!
sleep 1
reconnects=$(kmsg_count 'Reconnected to userspace log server')
kill_daemon
kill -0 $w 2>/dev/null || fail "m2: the delayed write finished before the kill"
dmsetup status m2 >/tmp/status.1 2>&1 &
s1=$!
dmsetup status m2 >/tmp/status.2 2>&1 &
s2=$!
sleep 0.5
start_daemon
wait $s1
wait $s2
wait $w || fail "m2: the write in flight across the kill failed"
log "in-flight kill: status seen by the two reconnecting callers: '$(awk '{print $7}' /tmp/status.1)' '$(awk '{print $7}' /tmp/status.2)', now $(sync_ratio m2); $(( $(kmsg_count 'Reconnected to userspace log server') - reconnects )) reconnects"
for f in /tmp/status.1 /tmp/status.2; do
    grep -q ' 16/16 ' $f || fail "in-flight kill: a reconnecting caller saw '$(cat $f)', expected 16/16 in sync"
done
[ "$(in_sync_count m2)" = 16 ] ||
    fail "in-flight kill: m2 is $(sync_ratio m2) in sync after the restart: the region with a write in flight was taken out of sync"
wait_in_sync m2 60
compare_mirror m2

daemon_alive || fail "dm-ulogd died"
# m0 and m1 had no request since the last restart: the daemon knows them only
# from their state files when the kernel sends PRESUSPEND, POSTSUSPEND and DTR,
# which it sends once, never through a reconnect.
remove_dev m0
remove_dev m1
remove_dev m2
_w=$(dmesg | grep -m1 -E 'log (pre|post)suspend failed')
[ -z "$_w" ] || fail "removing m0 and m1, whose logs the restarted daemon had not seen yet: kernel: $_w"
if [ "$LOGTYPE" = disk ]; then
    for m in m0 m1 m2; do
        nr=$NR
        [ $m = m2 ] && nr=16
        check_log_header /dev/mapper/${m}_log $nr
        c=$(log_clean_count /dev/mapper/${m}_log $nr)
        [ "$c" = $nr ] || fail "$m: only $c/$nr regions clean on its log device after the table was removed"
    done
    log "log devices: valid headers, every region clean"
fi
# Nothing of a removed log may stay behind, m0 and m1 included.
[ "$(kmsg_count 'created on reconnect with no saved state')" = 0 ] ||
    fail "a log was reconnected without its saved state: $(dmesg | grep -m1 'created on reconnect with no saved state')"
[ "$(state_files)" = 0 ] ||
    fail "state files left after the tables were removed (logs the restarted daemon knew only from their state files): $(ls "$DMULOGD_STATE_DIR")"
pass

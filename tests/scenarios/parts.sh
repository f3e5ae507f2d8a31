#!/bin/sh
# Several scenarios in one boot (the architecture tests of tests/arch.rs,
# where each boot under TCG costs 10-20 s): the scenarios named on the kernel
# command line as dmulogd.parts=a,b,c run one after the other, unchanged.
#
# Each part runs as its own `sh /scenarios/PART.sh` with DMULOGD_SHELL=1, so
# its pass/fail ends the part instead of powering off, and with /dev/console
# bound to a file that is copied to the real console with its verdict line
# renamed "part PART: PASS|FAIL ..." (only this scenario's verdict is a
# DMULOGD-RESULT line). A part passes if it exits 0 with a PASS line and no
# FAIL line. Between parts: the kernel log is cleared (each part's kernel log
# check sees its own lines), every dm device removed, the daemon killed and
# its state, pid file and /tmp files removed. The disks are not reused: carve
# keeps allocating fresh space (its /run/carve.* state is kept), so each part
# sees never-written (zero) legs as on a fresh boot. After a failed part the
# others still run; the verdict lists the failed parts.
#
# Each part runs in its own session (setsid), and the part's whole process
# group is killed when it ends, so a failed part's background load (fio
# loops, samplers) cannot outlive it. A watchdog turns a hang into a FAIL:
# a part still running after dmulogd.part_timeout=SECS (default 300), or a
# reset still running after 120 s, dumps to the console what can be read
# without waiting on a log (dmsetup status, which would wait forever for a
# daemon that is gone, runs in the background for 5 s) and powers off with a
# FAIL naming the part.
. /scenarios/lib.sh

parts=$(boot_param dmulogd.parts | tr , ' ')
[ -n "$parts" ] || fail "parts: no dmulogd.parts=a,b,c on the kernel command line"
part_timeout=$(boot_param dmulogd.part_timeout)
part_timeout=${part_timeout:-300}
# dmulogd.trace=1: each part runs traced (trace_setup) into a 32 MiB ring,
# which a hang dump prints the end of.
trace_parts=$(boot_param dmulogd.trace)
# dmulogd.trace_dev=DEV (a spare disk): the dump also writes all of that
# trace there as text.
trace_dev=$(boot_param dmulogd.trace_dev)
exec 7>/dev/console
failed=""
for p in $parts; do
    [ -f "/scenarios/$p.sh" ] || fail "parts: no scenario /scenarios/$p.sh"
done

# reset: what a fresh boot would give the next part.
reset() {
    # A part that failed between a kill and a restart leaves its logs without
    # a daemon: removing them would wait forever for one. A new daemon takes
    # them back from their state files.
    if ! daemon_listening && [ -n "$(dmsetup table 2>/dev/null | grep ' mirror userspace ')" ]; then
        echo "parts: no dm-ulogd serves the logs left behind: starting one to remove them" >&7
        dm-ulogd --daemon --pidfile "$DMULOGD_PIDFILE" >>"$DMULOGD_LOG" 2>&1
    fi
    # A failed part may leave a device suspended (a held leg): resume every
    # device first (a log's resume needs the daemon: started above), or
    # removing a mirror above a suspended leg waits forever.
    for _d in $(dmsetup info -c --noheadings -o name 2>/dev/null); do
        dmsetup resume "$_d" >/dev/null 2>&1
    done
    # A killed part's I/O may hold a device open until its log answers
    # again: retry for 60 s.
    _deadline=$(($(now_ds) + 600))
    while dmsetup remove_all >/dev/null 2>&1
        [ -n "$(dmsetup ls 2>/dev/null | grep -v 'No devices found')" ]; do
        if [ "$(now_ds)" -ge "$_deadline" ]; then
            echo "parts: dm devices left behind: $(dmsetup ls)" >&7
            return 1
        fi
        sleep 0.5
    done
    _p=$(cat "$DMULOGD_PIDFILE" 2>/dev/null)
    [ -z "$_p" ] || kill -9 "$_p" 2>/dev/null
    _deadline=$(($(now_ds) + 100))
    while daemon_listening; do
        [ "$(now_ds)" -lt "$_deadline" ] || { echo "parts: dm-ulogd still listens after kill -9" >&7; return 1; }
        sleep 0.05
    done
    rm -rf /run/dm-ulogd "$DMULOGD_PIDFILE" /run/dmulogd-result.lock
    find /tmp -mindepth 1 -maxdepth 1 ! -name syslog ! -name 'part.*' -exec rm -rf {} +
    dmesg -c >/dev/null
}

# hang_dump WHAT: what a hung part or reset left, read without touching a
# log (dmsetup table and info answer from the kernel alone), to the console.
hang_dump() {
    {
        echo "=== watchdog: $1"
        echo "=== dm-ulogd listening: $(daemon_listening && echo yes || echo no), pid file: $(cat "$DMULOGD_PIDFILE" 2>/dev/null)"
        echo "=== processes: pid, name, state, wchan, command (kernel threads only when blocked)"
        for _s in /proc/[0-9]*/stat; do
            _d=${_s%/stat}
            read -r _pid _comm _state _rest 2>/dev/null <"$_s" || continue
            # (test -s is no use: /proc files have size 0)
            _cmd=$(tr '\0' ' ' 2>/dev/null <"$_d/cmdline" | cut -c1-100)
            [ -n "$_cmd" ] || [ "$_state" = D ] || continue
            echo "$_pid $_comm $_state $(cat "$_d/wchan" 2>/dev/null) $_cmd"
        done
        echo "=== kernel stacks of blocked tasks"
        for _s in /proc/[0-9]*/stat; do
            _d=${_s%/stat}
            read -r _pid _comm _state _rest 2>/dev/null <"$_s" || continue
            [ "$_state" = D ] || continue
            echo "--- $_pid $_comm"
            cat "$_d/stack" 2>/dev/null
        done
        echo "=== dmsetup table"
        dmsetup table 2>&1
        # Where the stuck bios are: queued in a dm device (its inflight
        # counts a bio from submission to completion) or at a disk below.
        echo "=== block devices in flight: name, reads writes"
        for _b in /sys/block/*; do
            _n=$(cat "$_b/dm/name" 2>/dev/null) || _n=
            echo "${_b##*/}${_n:+ ($_n)}: $(cat "$_b/inflight" 2>/dev/null)"
        done
        # Does the daemon still answer, and do requests still arrive? Two
        # SIGUSR1 summaries 5 s apart (their request counts are in the
        # kernel log below) and a status in the background (it may never
        # return).
        echo "=== dmsetup status (background, 5 s); SIGUSR1 summaries now and in 5 s"
        dmsetup status >/tmp/hang.status 2>&1 &
        _dp=$(cat "$DMULOGD_PIDFILE" 2>/dev/null)
        [ -z "$_dp" ] || kill -USR1 "$_dp" 2>/dev/null
        sleep 5
        [ -z "$_dp" ] || kill -USR1 "$_dp" 2>/dev/null
        cat /tmp/hang.status
        hang_trace
        echo "=== kernel log, last 150 lines (dm-ulogd logs there under --daemon)"
        dmesg | tail -150
        if [ -s "$DMULOGD_LOG" ]; then
            echo "=== $DMULOGD_LOG, last 50 lines"
            tail -50 "$DMULOGD_LOG"
        fi
        echo "=== end of watchdog dump"
    } >&7 2>&1
}

# trace_setup KB: function tracing of dm-mirror's write and recovery paths,
# the region hash and the userspace log's requests, with the block layer's
# bio events and the work queued and run, into a ring of KB KiB, stopped;
# returns 1 if the kernel has no tracefs or no function tracer. Tracefs
# writes never wait.
T=/sys/kernel/tracing
trace_setup() {
    [ -d $T/events ] || mount -t tracefs nodev $T 2>/dev/null
    [ -w $T/set_ftrace_filter ] || return 1
    echo 0 >$T/tracing_on
    echo nop >$T/current_tracer
    echo "$1" >$T/buffer_size_kb
    : >$T/set_ftrace_filter
    for _f in 'dm_rh_*' do_writes do_reads do_recovery do_mirror delayed_wake_fn \
        delayed_wake write_callback recovery_complete dispatch_bios 'userspace_*' \
        dm_consult_userspace cn_ulog_callback 'dm_ulog_*' mirror_map mirror_end_io \
        queue_bio wakeup_mirrord; do
        echo "$_f" >>$T/set_ftrace_filter 2>/dev/null
    done
    # (an empty filter would trace every function)
    [ -n "$(head -1 $T/set_ftrace_filter)" ] || return 1
    echo function >$T/current_tracer 2>/dev/null || return 1
    for _e in block/block_bio_queue block/block_bio_complete block/block_rq_issue \
        block/block_rq_complete workqueue/workqueue_queue_work \
        workqueue/workqueue_execute_start; do
        echo 1 >$T/events/$_e/enable 2>/dev/null
    done
    : >$T/trace
}

# trace_show WHAT LINES: the last LINES lines of the trace, stopped.
trace_show() {
    echo 0 >$T/tracing_on
    echo "=== $1: $(grep -vc '^#' $T/trace) events, the last $2"
    grep -v '^#' $T/trace | tail -"$2"
}

# hang_trace: what the trace ring holds of the part (dmulogd.trace=1), then
# 4 s of tracing while hung (what still runs, what is asked of the log).
hang_trace() {
    if [ "$trace_parts" = 1 ] && [ "$(cat $T/tracing_on 2>/dev/null)" = 1 ]; then
        echo 0 >$T/tracing_on
        if [ -b "$trace_dev" ]; then
            # All of it, as text, for the host to read from the disk image.
            cat $T/trace >"$trace_dev" 2>/dev/null
            sync
            echo "=== the part's trace written to $trace_dev"
        fi
        trace_show "the trace of the part up to the hang" 5000
    fi
    if ! trace_setup 4096; then
        echo "=== no function tracing (no tracefs or no function tracer)"
        return
    fi
    echo 1 >$T/tracing_on
    sleep 4
    trace_show "4 s of tracing while hung" 300
    echo nop >$T/current_tracer
    echo 0 >$T/events/enable
}

# hung WHAT: the verdict for a hang; a reset after it could hang as well.
hung() {
    hang_dump "$1"
    printf '\nDMULOGD-RESULT: FAIL parts: %s\n' "$1" >&7
    sync
    poweroff -f
    sleep 60
}

# await PID SECONDS WHAT: wait for PID, at most SECONDS, then `hung WHAT`;
# returns PID's exit status.
await() {
    _deadline=$(($(now_ds) + $2 * 10))
    while kill -0 "$1" 2>/dev/null; do
        [ "$(now_ds)" -lt "$_deadline" ] || hung "$3 still running after $2 s"
        sleep 0.5
    done
    wait "$1"
}

reset &
await $! 120 "the reset before the first part" || fail "parts: cannot reset the guest before the first part"
for p in $parts; do
    : >/tmp/part.console
    echo "parts: === $p" >&7
    # The part's console text, live, its verdict renamed.
    # (busybox sed has no -u: a read loop passes each line on at once.)
    tail -f /tmp/part.console 2>/dev/null | while IFS= read -r _l; do
        case $_l in
            "DMULOGD-RESULT: "*) echo "part $p: ${_l#DMULOGD-RESULT: }" ;;
            *) echo "$_l" ;;
        esac
    done >&7 &
    tailer=$!
    mount --bind /tmp/part.console /dev/console || fail "parts: cannot bind /dev/console"
    if [ "$trace_parts" = 1 ]; then
        trace_setup 32768 && echo 1 >$T/tracing_on ||
            echo "parts: dmulogd.trace=1, but this kernel has no function tracer" >&7
    fi
    t0=$(now_ds)
    DMULOGD_SHELL=1 setsid sh "/scenarios/$p.sh" </dev/null >/tmp/part.out 2>&1 &
    part=$!
    await $part "$part_timeout" "part $p"
    rc=$?
    t1=$(now_ds)
    # What the part left running in the background (its own process group).
    kill -9 -$part 2>/dev/null
    umount /dev/console
    sleep 0.3
    kill "$tailer" 2>/dev/null
    sed 's/^DMULOGD-RESULT: /part '"$p"': /' /tmp/part.out >&7
    secs="$(((t1 - t0) / 10)).$(((t1 - t0) % 10))"
    if [ $rc = 0 ] && grep -qx 'DMULOGD-RESULT: PASS' /tmp/part.console &&
        ! grep -q '^DMULOGD-RESULT: FAIL' /tmp/part.console; then
        echo "parts: $p PASS in $secs s" >&7
    else
        echo "parts: $p FAIL (exit $rc) in $secs s" >&7
        failed="$failed $p"
    fi
    reset &
    await $! 120 "the reset after part $p" || { failed="$failed (reset after $p)"; break; }
done
# The verdict to the real console (lib.sh writes to /dev/console, unbound now).
[ -z "$failed" ] || fail "parts failed:$failed"
pass

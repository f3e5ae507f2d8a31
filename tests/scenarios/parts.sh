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
. /scenarios/lib.sh

parts=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^dmulogd\.parts=//p' | tr , ' ')
[ -n "$parts" ] || fail "parts: no dmulogd.parts=a,b,c on the kernel command line"
exec 7>/dev/console
failed=""
for p in $parts; do
    [ -f "/scenarios/$p.sh" ] || fail "parts: no scenario /scenarios/$p.sh"
done

# reset: what a fresh boot would give the next part.
reset() {
    # A failed part may leave a device suspended (a held leg): resume every
    # device first, or removing a mirror above it waits forever.
    for _d in $(dmsetup info -c --noheadings -o name 2>/dev/null); do
        dmsetup resume "$_d" >/dev/null 2>&1
    done
    dmsetup remove_all >/dev/null 2>&1
    if [ -n "$(dmsetup ls 2>/dev/null | grep -v 'No devices found')" ]; then
        echo "parts: dm devices left behind: $(dmsetup ls)" >&7
        return 1
    fi
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

reset || fail "parts: cannot reset the guest before the first part"
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
    t0=$(now_ds)
    DMULOGD_SHELL=1 sh "/scenarios/$p.sh" </dev/null >/tmp/part.out 2>&1
    rc=$?
    t1=$(now_ds)
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
    reset || { failed="$failed (reset after $p)"; break; }
done
# The verdict to the real console (lib.sh writes to /dev/console, unbound now).
[ -z "$failed" ] || fail "parts failed:$failed"
pass

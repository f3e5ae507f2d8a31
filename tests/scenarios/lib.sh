# Helpers for the guest scenarios (busybox sh). Sourced by /init and by every
# scenario: `. /scenarios/lib.sh`.
#
# Verdict: a scenario ends with `pass` or `fail "reason"`, or simply exits
# (status 0 = PASS). Exactly one line "DMULOGD-RESULT: PASS" or
# "DMULOGD-RESULT: FAIL <reason>" reaches the console; the guest then powers off.
#
# Environment a scenario may set before calling helpers:
#   DMULOGD_START=daemon|foreground  how start_daemon runs dm-ulogd (default daemon)
#   DMULOGD_LOG                      the daemon's log file (default /tmp/dm-ulogd.log)
#   MIRROR_FEATURES                  appended to mirror tables, e.g. "1 handle_errors"

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export DM_DISABLE_UDEV=1
DMULOGD_LOG=${DMULOGD_LOG:-/tmp/dm-ulogd.log}
DMULOGD_PIDFILE=${DMULOGD_PIDFILE:-/run/dm-ulogd.pid}
DMULOGD_START=${DMULOGD_START:-daemon}
_RESULT_LOCK=/run/dmulogd-result.lock
# Always appended to (>>): parts.sh binds a regular file over /dev/console,
# and a plain > truncated it at every line, so its forwarder lost lines.
_CONSOLE=/dev/console
[ -w "$_CONSOLE" ] || _CONSOLE=/dev/stdout

# boot_param NAME [DEFAULT]: the value of NAME=VALUE on the kernel command
# line (the first such word), else DEFAULT.
boot_param() {
    for _w in $(cat /proc/cmdline); do
        case $_w in "$1"=*) echo "${_w#*=}"; return 0 ;; esac
    done
    [ $# -lt 2 ] || echo "$2"
}

# ---------------------------------------------------------------- messages

log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*" >>"$_CONSOLE"; }

# Current time in tenths of a second since boot.
now_ds() { awk '{ printf "%d\n", $1 * 10 }' /proc/uptime; }

# ---------------------------------------------------------------- verdict

_power_off() {
    if [ "${DMULOGD_SHELL:-0}" = 1 ]; then
        return 0
    fi
    sync
    poweroff -f
    sleep 60
}

# Dump what helps to understand a failure: kernel log, dm state, daemon log.
dump_state() {
    {
        echo "=== dmsetup table"
        dmsetup table 2>&1
        # A status waits for the daemon forever when it is gone or stuck:
        # at most 10 s, in the background.
        echo "=== dmsetup status"
        dmsetup status >/tmp/dump.status 2>&1 &
        _ds=$!
        _n=0
        while kill -0 $_ds 2>/dev/null && [ $_n -lt 50 ]; do
            sleep 0.2
            _n=$((_n + 1))
        done
        cat /tmp/dump.status
        kill -0 $_ds 2>/dev/null &&
            echo "(dmsetup status has no answer after 10 s: a log request is waiting for dm-ulogd; listening: $(daemon_listening && echo yes || echo no))"
        echo "=== dmesg | tail -50"
        dmesg | tail -50
        if dmesg | grep -q 'dm-ulogd'; then
            echo "=== dm-ulogd lines in the kernel log (--daemon logs to /dev/kmsg; last 100)"
            dmesg | grep 'dm-ulogd' | tail -100
        fi
        if [ -s "$DMULOGD_LOG" ]; then
            echo "=== dm-ulogd log ($DMULOGD_LOG, last 100 lines)"
            tail -100 "$DMULOGD_LOG"
        fi
        if [ -s /tmp/syslog ]; then
            echo "=== syslog (last 50 lines)"
            tail -50 /tmp/syslog
        fi
        echo "=== end of dump"
    } >>"$_CONSOLE" 2>&1
}

# Kernel log lines that make a scenario fail even when everything else passed:
# requests the kernel had to resend or could not send, errors reported by the
# daemon, mirror or log device failures, oopses and warnings. A scenario that
# provokes some of them on purpose sets KERNEL_LOG_ALLOW to an ERE of those.
KERNEL_LOG_DENY='Request timed out|Unable to send log request|Userspace log server not found|Server error|dm-log-userspace.*(rror|ailed)|device-mapper: raid1|device-mapper: dirty region log|Call Trace|BUG:|WARNING:|Oops|hung_task|blocked for more than'
KERNEL_LOG_ALLOW=${KERNEL_LOG_ALLOW:-}

# check_kernel_log: fail if the kernel log has a line matching KERNEL_LOG_DENY
# (and not KERNEL_LOG_ALLOW).
check_kernel_log() {
    if [ -n "$KERNEL_LOG_ALLOW" ]; then
        _bad=$(dmesg | grep -E "$KERNEL_LOG_DENY" | grep -vE "$KERNEL_LOG_ALLOW" | head -5)
    else
        _bad=$(dmesg | grep -E "$KERNEL_LOG_DENY" | head -5)
    fi
    [ -z "$_bad" ] || fail "kernel log: $(echo "$_bad" | head -1)"
}

# fail "reason": dump state, print the FAIL line, power off. Safe to call from
# subshells and command substitutions (writes to the console directly). The
# first verdict wins; a later one waits for the power-off. In the interactive
# shell (DMULOGD_SHELL=1) it does not power off: it exits the scenario script
# (or returns 1 when called from the interactive shell itself).
fail() {
    if mkdir "$_RESULT_LOCK" 2>/dev/null; then
        dump_state
        printf '\nDMULOGD-RESULT: FAIL %s\n' "$*" >>"$_CONSOLE"
        _power_off
        rmdir "$_RESULT_LOCK"
    fi
    _after_verdict 1
}

# pass: check the kernel log (check_kernel_log), print the PASS line, power off.
pass() {
    check_kernel_log
    if mkdir "$_RESULT_LOCK" 2>/dev/null; then
        printf '\nDMULOGD-RESULT: PASS\n' >>"$_CONSOLE"
        _power_off
        rmdir "$_RESULT_LOCK"
    fi
    _after_verdict 0
}

_after_verdict() {
    if [ "${DMULOGD_SHELL:-0}" = 1 ]; then
        case $- in
            *i*) return "$1" ;;
            *) exit "$1" ;;
        esac
    fi
    while :; do sleep 60; done
}

# run CMD...: run a command, fail with its output when it fails.
run() {
    _out=$("$@" 2>&1)
    _rc=$?
    if [ $_rc -ne 0 ]; then
        echo "$_out" >>"$_CONSOLE"
        fail "command failed ($_rc): $*"
    fi
    [ -n "$_out" ] && echo "$_out"
    return 0
}

# ---------------------------------------------------------------- daemon

# Is some process listening on the dm connector group (netlink protocol 11,
# group 7 = bit 0x40 of the Groups column of /proc/net/netlink)?
daemon_listening() {
    while read -r _sk _eth _pid _groups _rest; do
        [ "$_eth" = 11 ] || continue
        [ "$_pid" = 0 ] && continue
        case $_groups in *[!0-9a-fA-F]*|"") continue ;; esac
        if [ $((0x$_groups & 0x40)) -ne 0 ]; then
            return 0
        fi
    done </proc/net/netlink
    return 1
}

# wait_listening SECONDS
wait_listening() {
    _deadline=$(( $(now_ds) + $1 * 10 ))
    while ! daemon_listening; do
        [ "$(now_ds)" -lt "$_deadline" ] || return 1
        sleep 0.1
    done
    return 0
}

# start_daemon [ARGS...]: start dm-ulogd and wait until it listens.
# DMULOGD_START=daemon (default): `dm-ulogd --daemon --pidfile P ARGS`; the parent
# must exit 0 only once the child listens, which is checked.
# DMULOGD_START=foreground: `dm-ulogd ARGS &`, then poll for the listener.
start_daemon() {
    case $DMULOGD_START in
        foreground)
            dm-ulogd "$@" >>"$DMULOGD_LOG" 2>&1 &
            echo $! >"$DMULOGD_PIDFILE"
            wait_listening 10 || fail "dm-ulogd is not listening on connector group 7 after 10 s"
            ;;
        *)
            dm-ulogd --daemon --pidfile "$DMULOGD_PIDFILE" "$@" >>"$DMULOGD_LOG" 2>&1
            _rc=$?
            [ $_rc -eq 0 ] || fail "dm-ulogd --daemon${*:+ $*} exited with status $_rc"
            daemon_listening || fail "dm-ulogd --daemon returned before its child listened"
            ;;
    esac
    log "dm-ulogd started (pid $(daemon_pid))"
}

daemon_pid() { cat "$DMULOGD_PIDFILE" 2>/dev/null; }

daemon_alive() {
    _p=$(daemon_pid)
    [ -n "$_p" ] && kill -0 "$_p" 2>/dev/null
}

# stop_daemon: SIGTERM and wait for it to go (10 s).
stop_daemon() {
    _p=$(daemon_pid)
    [ -n "$_p" ] || return 0
    kill "$_p" 2>/dev/null
    _n=0
    while kill -0 "$_p" 2>/dev/null && [ $_n -lt 100 ]; do
        sleep 0.1
        _n=$((_n + 1))
    done
    kill -0 "$_p" 2>/dev/null && fail "dm-ulogd (pid $_p) did not exit on SIGTERM"
    rm -f "$DMULOGD_PIDFILE"
    return 0
}

# kill_daemon: SIGKILL dm-ulogd and wait (10 s) until nothing listens on the
# connector group any more. The pid file stays (its lock died with the daemon).
kill_daemon() {
    _p=$(daemon_pid)
    [ -n "$_p" ] || fail "kill_daemon: no pid file $DMULOGD_PIDFILE"
    kill -9 "$_p" 2>/dev/null || fail "kill_daemon: dm-ulogd (pid $_p) is not running"
    _deadline=$(( $(now_ds) + 100 ))
    while daemon_listening; do
        [ "$(now_ds)" -lt "$_deadline" ] || fail "kill_daemon: something still listens 10 s after kill -9 $_p"
        sleep 0.05
    done
    log "dm-ulogd (pid $_p) killed with SIGKILL"
}

# The daemon's state directory (--state-dir; scenarios use the default).
DMULOGD_STATE_DIR=${DMULOGD_STATE_DIR:-/run/dm-ulogd}

# state_files: how many log state files the state directory holds.
state_files() {
    _n=0
    for _sf in "$DMULOGD_STATE_DIR"/log-*; do
        [ -e "$_sf" ] && _n=$((_n + 1))
    done
    echo $_n
}

# ---------------------------------------------------------------- kernel log

# kmsg_count ERE: how many kernel log lines match ERE.
kmsg_count() { dmesg | grep -cE "$1"; }

# daemon_lines: dm-ulogd's lines in the kernel log (--daemon logs there),
# with their raw priority: "<11>" error, "<12>" warning, "<14>" info (facility user).
daemon_lines() { dmesg -r | grep -E '^<[0-9]+>\[ *[0-9.]+\] dm-ulogd\['; }

# daemon_errors: dm-ulogd's error lines in the kernel log.
daemon_errors() { daemon_lines | grep '^<11>'; }

# reconnect_trouble: the first kernel line saying a request retried after a
# reconnect had no room for its answer (dm-log-userspace zeroes the reply
# buffer size of a request answered -ESRCH, then sends it again), if any.
reconnect_trouble() { dmesg | grep -m1 'Insufficient space to receive package'; }

# wait_kmsg ERE COUNT SECONDS: until at least COUNT kernel log lines match
# ERE; returns 1 on timeout.
wait_kmsg() {
    _deadline=$(( $(now_ds) + $3 * 10 ))
    while [ "$(kmsg_count "$1")" -lt "$2" ]; do
        [ "$(now_ds)" -lt "$_deadline" ] || return 1
        sleep 0.1
    done
    return 0
}

# daemon_summary ERE: signals dm-ulogd (SIGUSR1: a summary to /dev/kmsg
# under --daemon), waits up to 10 s for a kernel log line matching ERE newer
# than the newest one before (lines carry their time stamp; a count would
# stall once the kernel's log ring wraps) and prints it.
daemon_summary() {
    _before=$(dmesg | grep -E "$1" | tail -1)
    kill -USR1 "$(daemon_pid)" || fail "cannot signal dm-ulogd"
    _deadline=$(( $(now_ds) + 100 ))
    while :; do
        _last=$(dmesg | grep -E "$1" | tail -1)
        [ -n "$_last" ] && [ "$_last" != "$_before" ] && break
        [ "$(now_ds)" -lt "$_deadline" ] || fail "dm-ulogd logged no '$1' line within 10 s of SIGUSR1"
        sleep 0.1
    done
    echo "$_last"
}

# log_device_writes: the writes dm-ulogd has issued to the device of its
# (newest) disk log, from the SIGUSR1 summary ("log device M:m: W writes").
log_device_writes() {
    daemon_summary 'dm-ulogd.*log device [0-9:]*: [0-9]* writes' |
        sed 's/.*: \([0-9][0-9]*\) writes.*/\1/'
}

# ---------------------------------------------------------------- disks

# The disks the host gave us, in order.
disks() {
    for _d in /dev/vda /dev/vdb /dev/vdc /dev/vdd; do
        [ -b "$_d" ] && echo "$_d"
    done
}

# disk_n N: the Nth disk (0-based); the last disk when there are fewer.
disk_n() {
    _i=0
    _last=""
    for _d in $(disks); do
        [ $_i -eq "$1" ] && { echo "$_d"; return 0; }
        _last=$_d
        _i=$((_i + 1))
    done
    [ -n "$_last" ] || fail "no virtio disk: boot with at least one disk"
    echo "$_last"
}

# carve NAME SECTORS DISK: a linear device /dev/mapper/NAME carved from the next
# free SECTORS of DISK (allocation state in /run/carve.*). Starts are 1 MiB aligned.
carve() {
    _name=$1
    _sectors=$2
    _disk=$3
    _state=/run/carve.$(basename "$_disk")
    _off=$(cat "$_state" 2>/dev/null || echo 2048)
    _size=$(blockdev --getsz "$_disk")
    [ $((_off + _sectors)) -le "$_size" ] || fail "carve $_name: $_disk ($_size sectors) is full at $_off"
    run dmsetup create "$_name" --table "0 $_sectors linear $_disk $_off" >/dev/null
    echo $(( (_off + _sectors + 2047) / 2048 * 2048 )) >"$_state"
    [ -b "/dev/mapper/$_name" ] || run dmsetup mknodes "$_name" >/dev/null
}

# make_legs NAME SECTORS: two legs /dev/mapper/NAME_0 (first disk) and
# /dev/mapper/NAME_1 (second disk, or the first one again).
make_legs() {
    carve "${1}_0" "$2" "$(disk_n 0)"
    carve "${1}_1" "$2" "$(disk_n 1)"
}

# make_log NAME [SECTORS]: a log device /dev/mapper/NAME (default 1 MiB) on the first disk.
make_log() {
    carve "$1" "${2:-2048}" "$(disk_n 0)"
}

# zero_dev DEV: overwrite the start of a device (1 MiB) with zeros, e.g. a log device.
zero_dev() {
    run dd if=/dev/zero of="$1" bs=64k count=16 oflag=direct >/dev/null
}

# ---------------------------------------------------------------- tables

# mirror_table NAME SECTORS LOGTYPE LOGARGS...
# Prints a two-leg mirror table over /dev/mapper/NAME_0 and NAME_1 (make_legs).
# LOGTYPE LOGARGS are the log's words without the argument count, e.g.
#   mirror_table m0 131072 core 1024 [nosync]                     (kernel core log)
#   mirror_table m0 131072 disk /dev/mapper/m0_log 1024 [nosync]  (kernel disk log)
#   mirror_table m0 131072 userspace UUID [integrated_flush] core 1024 [nosync]
#   mirror_table m0 131072 userspace UUID disk /dev/mapper/m0_log 1024
# For userspace logs the count covers UUID, integrated_flush, the log type, its
# own count and its args; the inner log type gets the count of its own args.
# MIRROR_FEATURES (e.g. "1 handle_errors") is appended. MIRROR_LEGS, when set,
# replaces the legs' words ("DEV0 OFFSET0 DEV1 OFFSET1"; NAME then only names).
mirror_table() {
    _name=$1
    _sectors=$2
    shift 2
    if [ "$1" = userspace ]; then
        shift
        _uuid=$1
        shift
        _if=""
        if [ "$1" = integrated_flush ]; then
            _if="integrated_flush "
            shift
        fi
        _type=$1
        shift
        _n=$#
        if [ -n "$_if" ]; then _outer=$((_n + 4)); else _outer=$((_n + 3)); fi
        _log="userspace $_outer $_uuid ${_if}$_type $_n $*"
    else
        _type=$1
        shift
        _log="$_type $# $*"
    fi
    echo "0 $_sectors mirror $_log 2 ${MIRROR_LEGS:-/dev/mapper/${_name}_0 0 /dev/mapper/${_name}_1 0}${MIRROR_FEATURES:+ $MIRROR_FEATURES}"
}

# create_mirror NAME SECTORS LOGTYPE LOGARGS...: dmsetup create with mirror_table.
create_mirror() {
    _t=$(mirror_table "$@")
    log "create $1: $_t"
    run dmsetup create "$1" --table "$_t" >/dev/null
    [ -b "/dev/mapper/$1" ] || run dmsetup mknodes "$1" >/dev/null
}

# remove_dev NAME: dmsetup remove, retried briefly while the device is busy.
remove_dev() {
    _n=0
    while ! dmsetup remove "$1" >/tmp/remove.err 2>&1; do
        _n=$((_n + 1))
        [ $_n -lt 20 ] || { cat /tmp/remove.err >>"$_CONSOLE"; fail "dmsetup remove $1 failed"; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------- status

# mirror_status NAME: the status line.
mirror_status() { dmsetup status "$1"; }

# sync_ratio NAME: "X/Y" from the mirror's status.
sync_ratio() {
    dmsetup status "$1" | awk '$3 == "mirror" { n = $4; print $(5 + n); exit }'
}

in_sync_count() { sync_ratio "$1" | cut -d/ -f1; }
region_count() { sync_ratio "$1" | cut -d/ -f2; }

# mirror_log_status NAME: the log's part of the status (after "X/Y 1 AA").
mirror_log_status() {
    dmsetup status "$1" | awk '$3 == "mirror" {
        n = $4; i = 5 + n;          # X/Y
        i += 1; i += $i + 1;        # "1 AA": count then health chars
        s = ""; for (; i <= NF; i++) s = s (s == "" ? "" : " ") $i; print s; exit }'
}

# mirror_health NAME: the leg health characters (e.g. AA).
mirror_health() {
    dmsetup status "$1" | awk '$3 == "mirror" { n = $4; print $(5 + n + 2); exit }'
}

# wait_in_sync NAME TIMEOUT_SECONDS: until X == Y in the status; fails on timeout.
wait_in_sync() {
    _deadline=$(( $(now_ds) + $2 * 10 ))
    _last=""
    while :; do
        _r=$(sync_ratio "$1")
        [ -n "$_r" ] || fail "wait_in_sync $1: no mirror status: $(dmsetup status "$1" 2>&1)"
        if [ "${_r%/*}" = "${_r#*/}" ]; then
            return 0
        fi
        if [ "$(now_ds)" -ge "$_deadline" ]; then
            fail "wait_in_sync $1: still $_r after $2 s: $(dmsetup status "$1" 2>&1)"
        fi
        sleep 0.2
    done
}

# sample_sync FILE NAME...: in the background, about every 0.3 s, append one
# line "DS NAME X/Y" per mirror to FILE (DS: tenths of a second since boot when
# the status came back; X/Y empty when it failed), until stop_sampling FILE.
# A status asked while dm-ulogd is down waits in the kernel until the log is
# reconnected, and one caught in a killed daemon's queue for the kernel's
# 15 s timeout: each mirror has a sampler of its own, so that wait holds up
# only that mirror's samples.
sample_sync() {
    _f=$1
    shift
    rm -f "$_f.stop" "$_f.pid"
    for _m in "$@"; do
        (
            while [ ! -f "$_f.stop" ]; do
                # Stamped when the answer came.
                _r=$(sync_ratio "$_m")
                echo "$(now_ds) $_m $_r"
                sleep 0.3
            done >>"$_f"
        ) &
        echo $! >>"$_f.pid"
    done
}

# stop_sampling FILE: stop sample_sync FILE and wait for it.
stop_sampling() {
    touch "$1.stop"
    # shellcheck disable=SC2046 # one pid per sampler
    wait $(cat "$1.pid") 2>/dev/null
    rm -f "$1.pid"
}

# min_sample FILE NAME [FROM_DS [TO_DS]]: the lowest in-sync count sampled for
# NAME at or after FROM_DS (and before TO_DS); empty when there is no sample.
# A failed status (no X/Y) counts as -1.
min_sample() {
    awk -v n="$2" -v from="${3:-0}" -v to="${4:-999999999}" '
        $2 == n && $1 >= from && $1 < to {
            v = ($3 == "") ? -1 : $3 + 0    # "X/Y" + 0 is X
            if (!seen || v < m) { m = v; seen = 1 } }
        END { if (seen) print m }' "$1"
}

# ---------------------------------------------------------------- data

# write_random DEV MB [OFFSET_MB]: MB MiB of random data with direct I/O
# (dd from /dev/urandom: under TCG faster than starting fio).
write_random() {
    run dd if=/dev/urandom of="$1" bs=1M count="$2" seek="${3:-0}" oflag=direct >/dev/null
}

# write_random_fio DEV MB [OFFSET_MB]: the same with fio, random offsets.
write_random_fio() {
    run fio --name=write_random --filename="$1" --rw=randwrite --bs=64k --direct=1 \
        --ioengine=psync --size="${2}M" --offset="${3:-0}M" --refill_buffers \
        --randrepeat=0 --output=/dev/null >/dev/null
}

# write_region DEV REGION REGION_SECTORS: 4 KiB of random data at the start of a region.
write_region() {
    run dd if=/dev/urandom of="$1" bs=512 count=8 seek=$(($2 * $3)) oflag=direct >/dev/null
}

# fio_load DEV SECONDS [FIO_ARGS...]: random writes with direct I/O for SECONDS.
fio_load() {
    _dev=$1
    _secs=$2
    shift 2
    run fio --name=load --filename="$_dev" --rw=randwrite --bs=4k --direct=1 \
        --ioengine=libaio --iodepth=8 --time_based --runtime="$_secs" \
        --randrepeat=0 --refill_buffers --output=/dev/null "$@" >/dev/null
}

# verify_load NAME AREA_MB: write load with verification on /dev/mapper/NAME
# until /tmp/load.stop exists: fio jobs one after the other, each writing
# 2 MiB of 4 KiB random blocks (queue depth 8, direct I/O) somewhere in the
# first AREA_MB MiB, then reading every block back and checking its crc32c
# and offset, so a lost or misplaced write fails the job. A failed job is
# appended to /tmp/load.fail; the number of verified jobs goes to
# /tmp/load.NAME.jobs. Run it in the background; remove /tmp/load.stop and
# /tmp/load.fail first.
verify_load() {
    _i=0
    _slots=$(( $2 / 2 ))
    while [ ! -f /tmp/load.stop ]; do
        if ! fio --name="$1-$_i" --filename="/dev/mapper/$1" --rw=randwrite --bs=4k \
            --direct=1 --ioengine=libaio --iodepth=8 --size=2M --offset=$(( (_i % _slots) * 2 ))M \
            --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
            --output="/tmp/fio.$1" >/dev/null 2>&1; then
            echo "$1: fio job $_i failed" >>/tmp/load.fail
            cat "/tmp/fio.$1" >>"$_CONSOLE"
            break
        fi
        _i=$((_i + 1))
    done
    echo "$_i" >"/tmp/load.$1.jobs"
}

# legs_differ A B: when devices A and B (paths or names under /dev/mapper)
# differ, print where ("byte N (MiB M)") and return 0; return 1 when they are
# identical. md5sum first (busybox cmp is twice as slow under TCG), cmp only to
# locate a difference. Buffer caches are dropped first so the legs are read
# from the disks.
legs_differ() {
    _a=$1
    _b=$2
    case $_a in /*) ;; *) _a=/dev/mapper/$_a ;; esac
    case $_b in /*) ;; *) _b=/dev/mapper/$_b ;; esac
    blockdev --flushbufs "$_a"
    blockdev --flushbufs "$_b"
    _ma=$(md5sum <"$_a" | cut -d' ' -f1)
    _mb=$(md5sum <"$_b" | cut -d' ' -f1)
    if [ -n "$_ma" ] && [ "$_ma" = "$_mb" ]; then
        _LEGS_MD5=$_ma
        return 1
    fi
    _at=$(cmp "$_a" "$_b" 2>&1 | head -1 | awk '{ sub(",", "", $5); print $5 - 1 }')
    echo "byte $_at (MiB $((_at / 1048576)))"
    return 0
}

# compare_legs A B: fail unless the two devices are identical (legs_differ).
compare_legs() {
    if legs_differ "$1" "$2" >/tmp/legs.where; then
        fail "legs $1 and $2 differ at $(cat /tmp/legs.where)"
    fi
    log "legs $1 and $2 are identical ($_LEGS_MD5)"
}

# compare_mirror NAME: compare_legs NAME_0 NAME_1
compare_mirror() { compare_legs "${1}_0" "${1}_1"; }

# legs_hold_pattern WHEN: fail unless every leg of m0 and m1 holds
# /tmp/pattern at PATTERN_MB MiB, the pattern written across WHEN (the kill
# scenarios).
legs_hold_pattern() {
    _want=$(md5sum </tmp/pattern | cut -d' ' -f1)
    for _leg in m0_0 m0_1 m1_0 m1_1; do
        _got=$(dd if=/dev/mapper/$_leg bs=1M skip=$PATTERN_MB count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        [ "$_got" = "$_want" ] || fail "leg $_leg does not hold the pattern written across $1"
    done
    log "all four legs hold the pattern written across $1"
}

# ---------------------------------------------------------------- on-disk log
# The kernel's disk log format (PROTOCOL.md section 7): header at byte 0
# (magic u32 0x4D695272, version u32, nr_regions u64, little-endian), clean
# bits from byte 1024, region i = bit (i & 7) of byte i >> 3. dm-ulogd's disk
# logs use the same format. Read and written with direct I/O, never while a
# table uses the device.

# devnum NAME: "major:minor" of /dev/mapper/NAME
devnum() {
    dmsetup info -c --noheadings -o major,minor --separator : "$1" | tr -d ' '
}

# log_header DEV: "magic version nr_regions", magic in hex
log_header() {
    # Byte by byte: the header is little-endian on every architecture, and
    # od -t u4 would read it in the guest's own byte order (s390x).
    dd if="$1" bs=512 count=1 iflag=direct 2>/dev/null | od -A n -v -t u1 -N 16 | tr -s ' \n' '  ' | {
        read -r m0 m1 m2 m3 v0 v1 v2 v3 n0 n1 n2 n3 n4 n5 n6 n7
        printf '%x %u %u\n' $((m0 | m1 << 8 | m2 << 16 | m3 << 24)) $((v0 | v1 << 8 | v2 << 16 | v3 << 24)) \
            $((n0 | n1 << 8 | n2 << 16 | n3 << 24 | n4 << 32 | n5 << 40 | n6 << 48 | n7 << 56))
    }
}

# check_log_header DEV NR_REGIONS: fails unless the header is valid for NR_REGIONS.
check_log_header() {
    _h=$(log_header "$1")
    [ "$_h" = "4d695272 2 $2" ] || fail "log header of $1: '$_h', expected '4d695272 2 $2'"
}

# log_bit DEV REGION: the region's clean bit on disk (1 = clean).
log_bit() {
    _byte=$((1024 + $2 / 8))
    _v=$(dd if="$1" bs=512 skip=$((_byte / 512)) count=1 iflag=direct 2>/dev/null |
        od -A n -t u1 -j $((_byte % 512)) -N 1 | tr -d ' ')
    echo $(( (_v >> ($2 % 8)) & 1 ))
}

# log_clean_count DEV NR_REGIONS: how many of the regions are clean on disk.
log_clean_count() {
    _bytes=$(( ($2 + 7) / 8 ))
    dd if="$1" bs=512 skip=2 count=$(( (_bytes + 511) / 512 )) iflag=direct 2>/dev/null |
        od -A n -v -t u1 -N "$_bytes" | awk -v n="$2" '
        { for (i = 1; i <= NF; i++) { v = $i; for (b = 0; b < 8; b++) {
              if (r < n && v % 2 == 1) c++; v = int(v / 2); r++ } } }
        END { print c + 0 }'
}

# log_set_bit DEV REGION 0|1: set a region's clean bit on disk (0 = dirty: the
# region is resynced when the log is loaded).
log_set_bit() {
    _byte=$((1024 + $2 / 8))
    _sec=$((_byte / 512))
    _off=$((_byte % 512))
    run dd if="$1" of=/tmp/sector bs=512 skip=$_sec count=1 iflag=direct >/dev/null
    _v=$(od -A n -t u1 -j $_off -N 1 /tmp/sector | tr -d ' ')
    if [ "$3" = 1 ]; then
        _v=$((_v | (1 << ($2 % 8))))
    else
        _v=$((_v & ~(1 << ($2 % 8)) & 255))
    fi
    # shellcheck disable=SC2059
    printf "\\$(printf %o "$_v")" | dd of=/tmp/sector bs=1 seek=$_off conv=notrunc 2>/dev/null
    run dd if=/tmp/sector of="$1" bs=512 seek=$_sec count=1 oflag=direct >/dev/null
    [ "$(log_bit "$1" "$2")" = "$3" ] || fail "log_set_bit $1 $2 $3 did not stick"
}

# dirty_region LOGDEV REGION LEG REGION_SECTORS: mark a region dirty on disk and
# make LEG differ there, so only a resync of that region makes the legs equal.
dirty_region() {
    log_set_bit "$1" "$2" 0
    write_region "$3" "$2" "$4"
}

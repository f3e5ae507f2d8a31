# Helpers for the benchmark scenarios (bench.sh, bench_smoke.sh); sourced
# after /scenarios/lib.sh. Not a scenario itself.
#
# Every measurement is printed as one machine-readable console line:
#   BENCH <kind> key=value key=value ...
# which initramfs/bench.sh turns into the table.

# bench_line KIND KEY=VALUE...: one result line on the console.
bench_line() {
    printf 'BENCH %s\n' "$*" >>"$_CONSOLE"
}

# Time since boot in milliseconds.
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# cpu_ns PID: CPU time the task has run, in ns (/proc/PID/schedstat,
# field 1: sum_exec_runtime; user and system time together).
cpu_ns() { awk '{ print $1 }' "/proc/$1/schedstat" 2>/dev/null || echo 0; }

# vmrss_kb PID: resident memory (VmRSS) of a process, in KiB.
vmrss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# mem_line STATE REGIONS: the daemon's memory, KiB: VmRSS and its anonymous,
# file and shared-memory parts and VmLck from /proc/PID/status, and rss_kb,
# the resident set from /proc/PID/smaps_rollup. The status counters are
# per-thread caches the kernel folds in lazily (they can lag by dozens of
# pages); smaps_rollup walks the page tables, so rss_kb is exact.
mem_line() {
    bench_line mem state=$1 regions=$2 $(awk '
        $1 == "VmRSS:" { r = r " vmrss_kb=" $2 } $1 == "RssAnon:" { r = r " anon_kb=" $2 }
        $1 == "RssFile:" { r = r " file_kb=" $2 } $1 == "RssShmem:" { r = r " shmem_kb=" $2 }
        $1 == "VmLck:" { r = r " vmlck_kb=" $2 } END { print r }' "/proc/$DPID/status") \
        rss_kb=$(awk '$1 == "Rss:" { print $2 }' "/proc/$DPID/smaps_rollup")
}

# smaps_lines TAG: the daemon's mappings with resident pages, one console line
# each ("SMAPS TAG <range> <perms> <path> rss_kb=N locked_kb=N"), to show
# where its memory is.
smaps_lines() {
    awk -v tag="$1" '
        /^[0-9a-f]+-[0-9a-f]+ / { if (h != "" && rss > 0) print "SMAPS " tag " " h " rss_kb=" rss " locked_kb=" lck
                                 h = $1 " " $2 " " ($6 == "" ? "[anon]" : $6); rss = 0; lck = 0 }
        $1 == "Rss:" { rss = $2 } $1 == "Locked:" { lck = $2 }
        END { if (h != "" && rss > 0) print "SMAPS " tag " " h " rss_kb=" rss " locked_kb=" lck }' \
        "/proc/$DPID/smaps" >>"$_CONSOLE"
}

# The daemon's request counter, from its SIGUSR1 summary line
# ("... live log(s), ...; N requests, ...").
daemon_requests() {
    daemon_summary 'dm-ulogd.*live log\(s\).*requests' |
        sed 's/.*; \([0-9][0-9]*\) requests.*/\1/'
}

# fio_engine: libaio if fio and the kernel take it, else io_uring, else psync.
fio_engine() {
    for _e in libaio io_uring psync; do
        if fio --name=probe --filename=/tmp/fio-probe --size=64k --bs=4k --rw=write \
            --ioengine=$_e --iodepth=2 --output=/dev/null >/dev/null 2>&1; then
            rm -f /tmp/fio-probe
            echo $_e
            return 0
        fi
    done
    rm -f /tmp/fio-probe
    fail "fio runs with none of libaio, io_uring, psync"
}

# fio_terse DEV SECONDS FIO_ARGS...: a time-bounded direct-write fio job on
# DEV; prints "iops kib_per_s p99_us write_kib".
fio_terse() {
    _dev=$1
    _secs=$2
    shift 2
    fio_terse_run --name=bench --filename="$_dev" --time_based --runtime="$_secs" "$@"
}

# fio_terse_run FIO_ARGS...: one direct-I/O fio run; prints "iops kib_per_s
# p99_us write_kib" from fio's terse (v3) output (fields 47-49 and the write
# completion-latency percentile 99) of its first group.
fio_terse_run() {
    _t=$(fio --direct=1 --norandommap --randrepeat=1 --percentile_list=99 \
        --output-format=terse --terse-version=3 "$@" 2>/tmp/fio.err)
    _rc=$?
    if [ $_rc -ne 0 ] || [ -z "$_t" ]; then
        cat /tmp/fio.err >>"$_CONSOLE"
        fail "fio $* failed ($_rc)"
    fi
    echo "$_t" | awk -F';' '$1 == 3 && !done {
        p99 = 0
        for (i = 59; i <= 78; i++) if ($i ~ /^99(\.0*)?%=/) { split($i, a, "="); p99 = a[2] }
        printf "%s %s %s %s\n", $49, $48, p99, $47; done = 1 }'
}

# fio_multi SECONDS FIO_ARGS... -- DEV...: one time-bounded direct-write fio
# run with one job per DEV, all at once, reported as one group; prints
# "iops kib_per_s p99_us write_kib" of the aggregate (p99 over every job's
# completions).
fio_multi() {
    _secs=$1
    shift
    _args=""
    while [ "$1" != -- ]; do _args="$_args $1"; shift; done
    shift
    _jobs=""
    _j=0
    for _d in "$@"; do _jobs="$_jobs --name=m$_j --filename=$_d"; _j=$((_j + 1)); done
    # shellcheck disable=SC2086
    fio_terse_run --group_reporting --time_based --runtime="$_secs" $_args $_jobs
}

# bench_create NAME SECTORS OFFSET LOG...: a mirror NAME of SECTORS whose legs
# are the two leg disks (LEG0, LEG1: whole virtio disks, as a user's mirror
# legs are single devices) from sector OFFSET; LOG as for lib.sh's
# mirror_table.
bench_create() {
    _bname=$1
    _bsec=$2
    _boff=$3
    shift 3
    _bt=$(MIRROR_LEGS="$LEG0 $_boff $LEG1 $_boff" mirror_table "$_bname" "$_bsec" "$@")
    log "create $_bname: $_bt"
    run dmsetup create "$_bname" --table "$_bt" >/dev/null
    [ -b "/dev/mapper/$_bname" ] || run dmsetup mknodes "$_bname" >/dev/null
}

# prime DEV: one 4 KiB direct write at the start of a new mirror, before it
# is measured. For a userspace log the kernel asks IS_REMOTE_RECOVERING at
# the first write (its in_sync_hint starts at 0) and answers "recovering"
# by itself while any other userspace-log mirror asked within the last
# 250 ms (userspace_is_remote_recovering: one static limit for all of
# them), which dm-raid1 retries after 200 ms: mirrors that start at once
# take their first writes ~0.4 s apart. Once per mirror, whatever the
# server; the benchmark measures what follows.
prime() {
    run dd if=/dev/zero of="$1" bs=4k count=1 oflag=direct >/dev/null
}

# log_args CONFIG LOGDEV REGION [sync|nosync]: sets LOGARGS to the
# mirror_table log words of one benchmark configuration:
#   kcore     the kernel's core log          kdisk     the kernel's disk log
#   ucore     dm-ulogd core                  udisk     dm-ulogd disk
#   udisk_if  dm-ulogd disk with integrated_flush
#   null      a userspace core log served by the null responder
# Each userspace log gets a fresh uuid. (Sets a variable rather than printing:
# a command substitution would lose the uuid counter.)
_uuid_n=0
log_args() {
    _uuid_n=$((_uuid_n + 1))
    _u=dmulogd-bench-$1-$_uuid_n
    case $1 in
        kcore) LOGARGS="core $3 $4" ;;
        kdisk) LOGARGS="disk $2 $3 $4" ;;
        ucore|null) LOGARGS="userspace $_u core $3 $4" ;;
        udisk) LOGARGS="userspace $_u disk $2 $3 $4" ;;
        udisk_if) LOGARGS="userspace $_u integrated_flush disk $2 $3 $4" ;;
        *) fail "unknown benchmark configuration $1" ;;
    esac
}

is_userspace() { case $1 in u*|null) return 0 ;; *) return 1 ;; esac; }

# wait_sync_event NAME TIMEOUT_S: until the mirror reports every region in
# sync. Sleeps in `dmsetup wait` (dm-raid1 raises a table event when the
# resync completes) rather than polling, so the waiting costs no CPU.
wait_sync_event() {
    _deadline=$(( $(now_ds) + $2 * 10 ))
    while :; do
        _ev=$(dmsetup info -c --noheadings -o events "$1" | tr -d ' ')
        _r=$(sync_ratio "$1")
        [ -n "$_r" ] || fail "wait_sync_event $1: no mirror status"
        [ "${_r%/*}" = "${_r#*/}" ] && return 0
        [ "$(now_ds)" -lt "$_deadline" ] || fail "resync of $1 not done after $2 s: $_r"
        timeout "$2" dmsetup wait "$1" "$_ev" >/dev/null 2>&1
    done
}

# The null responder (tests/bench/responder.rs), when initramfs/bench.sh
# embedded it in /scenarios/bench_null_responder.sh after a 3-line header:
# configuration `null`, the floor of the kernel's round trips.

# null_setup: sets NULLR to the extracted responder, or "" without one. The
# daemon (DPID) is assumed to be the one listening.
null_setup() {
    NULLR=""
    SERVER=dmulogd
    NULL_PID=""
    if [ -f /scenarios/bench_null_responder.sh ]; then
        tail -n +4 /scenarios/bench_null_responder.sh >/tmp/null_responder &&
            chmod 755 /tmp/null_responder && NULLR=/tmp/null_responder
    fi
}

# use_server dmulogd|null: make that program the one listening on the
# connector (no mirror may exist when it changes).
use_server() {
    [ "$SERVER" = "$1" ] && return 0
    if [ "$1" = null ]; then
        stop_daemon
        "$NULLR" --serve 2>>/tmp/null_responder.log &
        NULL_PID=$!
        wait_listening 10 || fail "the null responder is not listening"
    else
        kill "$NULL_PID"
        wait "$NULL_PID" 2>/dev/null
        _n=0
        while daemon_listening; do
            _n=$((_n + 1))
            [ $_n -lt 100 ] || fail "the null responder still listens"
            sleep 0.1
        done
        start_daemon
        DPID=$(daemon_pid)
    fi
    SERVER=$1
}

# null_requests: the null responder's request count (SIGUSR1 prints it).
null_requests() {
    _before=$(grep -c requests /tmp/null_responder.log 2>/dev/null)
    kill -USR1 "$NULL_PID" || fail "cannot signal the null responder"
    _n=0
    while [ "$(grep -c requests /tmp/null_responder.log)" -le "${_before:-0}" ]; do
        _n=$((_n + 1))
        [ $_n -lt 100 ] || fail "the null responder printed no count within 10 s"
        sleep 0.1
    done
    tail -1 /tmp/null_responder.log | awk '{ print $2 }'
}

# server_requests / server_cpu: the listening program's request count and
# CPU time (ns).
server_requests() { if [ "$SERVER" = null ]; then null_requests; else daemon_requests; fi; }
server_cpu() { if [ "$SERVER" = null ]; then cpu_ns "$NULL_PID"; else cpu_ns "$DPID"; fi; }
server_pid() { if [ "$SERVER" = null ]; then echo "$NULL_PID"; else echo "$DPID"; fi; }

# rounds CONFIGS REVERSED LABEL FUNCTION: FUNCTION CONFIG ROUND for every
# configuration, ROUNDS rounds, the order reversed every other round.
rounds() {
    o_r=1
    while [ $o_r -le "$ROUNDS" ]; do
        if [ $((o_r % 2)) -eq 1 ]; then o_order=$1; else o_order=$2; fi
        for o_cfg in $o_order; do
            log "$3, round $o_r: $o_cfg"
            "$4" "$o_cfg" "$o_r"
        done
        o_r=$((o_r + 1))
    done
}

# job_args NAME: the fio arguments of a benchmark job (ENGINE: fio_engine;
# SEQ_SIZE: the sequential jobs' range, default 256M).
job_args() {
    case $1 in
        randw_qd1) echo "--rw=randwrite --bs=4k --iodepth=1 --ioengine=$ENGINE" ;;
        randw_qd16) echo "--rw=randwrite --bs=4k --iodepth=16 --ioengine=$ENGINE" ;;
        seqw) echo "--rw=write --bs=1M --iodepth=1 --size=${SEQ_SIZE:-256M} --ioengine=$ENGINE" ;;
        seqw4k) echo "--rw=write --bs=4k --iodepth=1 --size=${SEQ_SIZE:-256M} --ioengine=$ENGINE" ;;
        *) fail "unknown benchmark job $1" ;;
    esac
}

# diag_setup: where the diagnostics (bench_probe, bench_pair) start: dm-ulogd
# running (DPID), the null responder unpacked when the image has it, the
# legs LEG0 and LEG1 (the first two disks, whole), a zeroed 4 MiB log device
# /dev/mapper/p_log on the third, and ENGINE.
diag_setup() {
    start_daemon
    DPID=$(daemon_pid)
    null_setup
    LEG0=$(disk_n 0)
    LEG1=$(disk_n 1)
    carve p_log 8192 "$(disk_n 2)"
    zero_dev /dev/mapper/p_log
    ENGINE=$(fio_engine)
}

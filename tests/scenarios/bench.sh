#!/bin/sh
# The benchmark (initramfs/bench.sh; smoke: bench_smoke.sh). In one boot, for
# the same mirror geometry, side by side: the kernel's core and disk logs,
# dm-ulogd core, dm-ulogd disk and dm-ulogd disk with integrated_flush.
#
#   fio, direct I/O, time-bounded, on a small mirror (16,384 regions) and a
#   large one (16,777,216 regions; 2 TiB sparse legs), both created `nosync`
#   (a sync mirror on multi-terabyte legs would resync for ever):
#     randw_qd1   4 KiB random writes, queue depth 1
#     randw_qd16  4 KiB random writes, queue depth 16
#     seqw        1 MiB sequential writes, queue depth 1, over the first 256 MiB
#   resync: time of a full resync of a 4,096-region mirror (created without
#     nosync), kernel core log vs dm-ulogd core, from `dmsetup create` until
#     the status shows every region in sync (dmsetup wait on the table event).
#   dm-ulogd: CPU time (schedstat) and requests answered (its SIGUSR1 summary
#     in the kernel log) over each run; VmRSS idle and holding logs.
#
# Output: "BENCH ..." lines (bench_lib.sh), one per measurement.
# Kernel command line (initramfs/bench.sh sets them through BOOT_APPEND):
#   dmulogd.bench=full|smoke  dmulogd.bench_runtime=SECONDS  dmulogd.bench_rounds=N
# Rounds alternate the order of the configurations (ABCDE, EDCBA, ...) so a
# drift in the host's load weighs on all of them alike.
. /scenarios/lib.sh
. /scenarios/bench_lib.sh

MODE=${BENCH_MODE:-$(bench_param dmulogd.bench full)}
case $MODE in
    smoke) def_runtime=2 def_rounds=1 ;;
    *) MODE=full def_runtime=10 def_rounds=2 ;;
esac
RUNTIME=$(bench_param dmulogd.bench_runtime $def_runtime)
ROUNDS=$(bench_param dmulogd.bench_rounds $def_rounds)

REGION=256                 # sectors: 128 KiB regions
SMALL=16384                # regions of the small mirror (2 GiB)
LARGE=16777216             # regions of the large mirror (2 TiB)
RESYNC=4096                # regions of the resync mirror (512 MiB)
SEQ_SIZE=256M              # range of the sequential job
CONFIGS="kcore kdisk ucore udisk udisk_if"
REVERSED="udisk_if udisk ucore kdisk kcore"

# /dev/kmsg rate-limits writers (10 lines per 5 s); the SIGUSR1 summaries
# that count requests must not be dropped.
echo on >/proc/sys/kernel/printk_devkmsg 2>/dev/null

ENGINE=$(fio_engine)
bench_line info mode=$MODE kernel=$(uname -r) fio=$(fio --version) engine=$ENGINE \
    runtime_s=$RUNTIME rounds=$ROUNDS region_sectors=$REGION cpus=$(nproc) \
    mem_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)

start_daemon
DPID=$(daemon_pid)
sleep 1
bench_line mem state=idle regions=0 vmrss_kb=$(vmrss_kb "$DPID")

# Legs on the first two disks, log devices on the third.
make_legs bl $((LARGE * REGION))
make_legs bs $((SMALL * REGION))
make_legs br $((RESYNC * REGION))
carve bl_log 8192 "$(disk_n 2)"     # 1 KiB header + 2 MiB of bits
carve bs_log 2048 "$(disk_n 2)"
zero_dev /dev/mapper/bl_log
zero_dev /dev/mapper/bs_log

# job NAME: the fio arguments of a job.
job_args() {
    case $1 in
        randw_qd1) echo "--rw=randwrite --bs=4k --iodepth=1 --ioengine=$ENGINE" ;;
        randw_qd16) echo "--rw=randwrite --bs=4k --iodepth=16 --ioengine=$ENGINE" ;;
        seqw) echo "--rw=write --bs=1M --iodepth=1 --size=$SEQ_SIZE --ioengine=$ENGINE" ;;
    esac
}
JOBS="randw_qd1 randw_qd16 seqw"

if [ "$MODE" = full ]; then
    # The legs are sparse files on the host: the first write to a block
    # allocates it. Write every block the measured jobs will write (the same
    # seeded random sequence, the legs faster than any mirror) once first,
    # so no configuration pays for the host's allocation.
    for legs in bs bl; do
        for leg in ${legs}_0 ${legs}_1; do
            log "warm-up: $leg"
            fio_terse /dev/mapper/$leg "$RUNTIME" $(job_args randw_qd16) >/dev/null
            run dd if=/dev/zero of=/dev/mapper/$leg bs=1M count=256 oflag=direct >/dev/null
        done
    done
fi

# measure SIZE REGIONS LEGS LOGDEV CONFIG ROUND
measure() {
    _size=$1 _n=$2 _legs=$3 _logdev=$4 _cfg=$5 _round=$6
    _sectors=$((_n * REGION))
    # shellcheck disable=SC2046
    bench_create m$_legs $_sectors $_legs $(log_args "$_cfg" "$_logdev" $REGION nosync)
    if is_userspace "$_cfg"; then
        bench_line mem state=$_cfg regions=$_n vmrss_kb=$(vmrss_kb "$DPID")
    fi
    for _job in $JOBS; do
        _r0=0 _r1=0 _c0=0 _c1=0
        if is_userspace "$_cfg"; then
            _r0=$(daemon_requests)
            _c0=$(cpu_ns "$DPID")
        fi
        _t0=$(now_ms)
        # shellcheck disable=SC2046
        set -- $(fio_terse /dev/mapper/m$_legs "$RUNTIME" $(job_args $_job))
        _t1=$(now_ms)
        if is_userspace "$_cfg"; then
            _c1=$(cpu_ns "$DPID")
            _r1=$(daemon_requests)
        fi
        bench_line fio size=$_size regions=$_n log=$_cfg job=$_job round=$_round \
            iops=$1 kib_s=$2 p99_us=$3 kib=$4 wall_ms=$((_t1 - _t0)) \
            dreq=$((_r1 - _r0)) dcpu_ns=$((_c1 - _c0))
    done
    remove_dev m$_legs
}

for spec in "small $SMALL bs" "large $LARGE bl"; do
    set -- $spec
    size=$1 n=$2 legs=$3
    r=1
    while [ $r -le "$ROUNDS" ]; do
        if [ $((r % 2)) -eq 1 ]; then order=$CONFIGS; else order=$REVERSED; fi
        for cfg in $order; do
            log "round $r: $size mirror, $cfg"
            measure $size $n $legs /dev/mapper/${legs}_log $cfg $r
        done
        r=$((r + 1))
    done
done

# resync CONFIG ROUND: time of a full resync of the RESYNC-region mirror.
resync() {
    _cfg=$1
    _r0=0 _r1=0 _c0=0 _c1=0
    if is_userspace "$_cfg"; then
        _r0=$(daemon_requests)
        _c0=$(cpu_ns "$DPID")
    fi
    _t0=$(now_ms)
    # shellcheck disable=SC2046
    bench_create mbr $((RESYNC * REGION)) br $(log_args "$_cfg" "" $REGION "")
    wait_sync_event mbr 1200
    _t1=$(now_ms)
    if is_userspace "$_cfg"; then
        _c1=$(cpu_ns "$DPID")
        _r1=$(daemon_requests)
    fi
    remove_dev mbr
    [ "$2" = warmup ] && return 0
    bench_line resync regions=$RESYNC log=$_cfg round=$2 ms=$((_t1 - _t0)) \
        dreq=$((_r1 - _r0)) dcpu_ns=$((_c1 - _c0))
}

if [ "$MODE" = full ]; then
    log "resync warm-up (kcore, not measured): allocates leg 1 on the host"
    resync kcore warmup
fi
r=1
while [ $r -le "$ROUNDS" ]; do
    if [ $((r % 2)) -eq 1 ]; then order="kcore ucore"; else order="ucore kcore"; fi
    for cfg in $order; do
        log "resync round $r: $cfg"
        resync $cfg $r
    done
    r=$((r + 1))
done

# Memory: the daemon holding one core log of 1,000,000 regions (nosync, on
# the large legs).
# shellcheck disable=SC2046
bench_create mmem $((1000000 * REGION)) bl $(log_args ucore "" $REGION nosync)
sleep 0.5
bench_line mem state=core_1000000 regions=1000000 vmrss_kb=$(vmrss_kb "$DPID")
remove_dev mmem
sleep 0.5
bench_line mem state=idle_after regions=0 vmrss_kb=$(vmrss_kb "$DPID")

daemon_alive || fail "dm-ulogd died during the benchmark"
stop_daemon
bench_line done mode=$MODE
pass

#!/bin/sh
# The benchmark (initramfs/bench.sh; smoke: bench_smoke.sh). In one boot, for
# the same mirror geometry, side by side: the kernel's core and disk logs,
# dm-ulogd core, dm-ulogd disk and dm-ulogd disk with integrated_flush.
#
#   fio, direct I/O, time-bounded, on a small mirror (16,384 regions, 8 GiB)
#   and a large one (16,777,216 regions, 8 TiB), both created `nosync` (a sync
#   mirror on multi-terabyte legs would resync for ever). Regions are 512 KiB
#   (the harness scenarios' size, LVM's classic mirror_region_size). The legs
#   are single devices, as a user's are: the first two virtio disks, whole
#   (sparse 8 TiB images on the host; fio touches little of them), every
#   mirror from sector 0 of both. A flush of a leg is one flush of one disk
#   for the kernel's disk log (mirror_flush) and dm-ulogd's leg flushes alike.
#   The first 2 GiB of both legs (the resync mirror and the sequential jobs)
#   are written once before the measurements, so no run pays for the host
#   allocating them.
#     randw_qd1   4 KiB random writes, queue depth 1
#     randw_qd16  4 KiB random writes, queue depth 16
#     seqw        1 MiB sequential writes, queue depth 1, over the first 256 MiB
#     seqw4k      4 KiB sequential writes, queue depth 1, over the first 256 MiB
#                 (a journal or log writer: 128 writes per region in a row)
#   multi: 16 mirrors of 16,384 regions at once (8 GiB each, side by side on
#     the same two leg disks, a disk log each on the third disk), one fio job
#     of 4 KiB random writes at queue depth 1 per mirror: aggregate IOPS and
#     the p99 latency over every job; the kernel's disk log, dm-ulogd disk and
#     dm-ulogd disk with integrated_flush.
#   resync: time of a full resync of a 4,096-region mirror (2 GiB; created
#     without nosync), kernel core log vs dm-ulogd core, from `dmsetup create`
#     until the status shows every region in sync (dmsetup wait on the table
#     event).
#   dm-ulogd: CPU time (schedstat) and requests answered (its SIGUSR1 summary
#     in the kernel log) over each run; VmRSS idle and holding logs.
#
# Output: "BENCH ..." lines (bench_lib.sh), one per measurement.
# Kernel command line (initramfs/bench.sh sets them through BOOT_APPEND):
#   dmulogd.bench=full|smoke  dmulogd.bench_runtime=SECONDS  dmulogd.bench_rounds=N
# Each job runs in ROUNDS rounds over the five logs, back to back, the order
# reversed every other round (ABCDE, EDCBA, ...), so that a drift in the
# host's load weighs on all of them alike; the host reports the median over
# rounds.
. /scenarios/lib.sh
. /scenarios/bench_lib.sh

MODE=${BENCH_MODE:-$(boot_param dmulogd.bench full)}
case $MODE in
    smoke) def_runtime=1 def_rounds=1 RESYNC_REGION=8 MULTI=4 ;;
    *) MODE=full def_runtime=6 def_rounds=5 RESYNC_REGION=1024 MULTI=16 ;;
esac
RUNTIME=$(boot_param dmulogd.bench_runtime $def_runtime)
ROUNDS=$(boot_param dmulogd.bench_rounds $def_rounds)

REGION=1024                # sectors: 512 KiB regions
SMALL=16384                # regions of the small mirror (8 GiB)
LARGE=16777216             # regions of the large mirror (8 TiB)
RESYNC=4096                # regions of the resync mirror (full: 2 GiB; smoke: 16 MiB)
WARM=4194304               # sectors written once at the start of each leg (2 GiB)
SEQ_SIZE=256M              # range of the sequential job
CONFIGS="kcore kdisk ucore udisk udisk_if"
REVERSED="udisk_if udisk ucore kdisk kcore"
MULTI_CONFIGS="kdisk udisk udisk_if"
MULTI_REVERSED="udisk_if udisk kdisk"

# /dev/kmsg rate-limits writers (10 lines per 5 s); the SIGUSR1 summaries
# that count requests must not be dropped.
echo on >/proc/sys/kernel/printk_devkmsg 2>/dev/null

ENGINE=$(fio_engine)
bench_line info mode=$MODE kernel=$(uname -r) fio=$(fio --version) engine=$ENGINE \
    runtime_s=$RUNTIME rounds=$ROUNDS multi=$MULTI region_sectors=$REGION resync_region_sectors=$RESYNC_REGION cpus=$(nproc) \
    mem_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)

start_daemon
DPID=$(daemon_pid)

null_setup
if [ -n "$NULLR" ]; then
    CONFIGS="kcore null ucore kdisk udisk udisk_if"
    REVERSED="udisk_if udisk kdisk ucore null kcore"
fi
sleep 1
mem_line idle 0
smaps_lines idle

# The legs: the first two disks, whole; the log devices on the third disk.
LEG0=$(disk_n 0)
LEG1=$(disk_n 1)
for d in "$LEG0" "$LEG1"; do
    [ "$(blockdev --getsz "$d")" -ge $((LARGE * REGION)) ] ||
        fail "leg disk $d is smaller than the large mirror ($((LARGE * REGION)) sectors): boot with 8 TiB sparse images"
done
[ "$LEG0" != "$LEG1" ] || fail "the benchmark needs two leg disks and a log disk"
carve bl_log 8192 "$(disk_n 2)"     # 1 KiB header + 2 MiB of bits
carve bs_log 2048 "$(disk_n 2)"
zero_dev /dev/mapper/bl_log
zero_dev /dev/mapper/bs_log
i=0
while [ $i -lt $MULTI ]; do
    carve mm_log_$i 2048 "$(disk_n 2)"
    zero_dev /dev/mapper/mm_log_$i
    i=$((i + 1))
done

JOBS="randw_qd1 randw_qd16 seqw seqw4k"

if [ "$MODE" = full ]; then
    # Write the start of the legs once (sparse files allocate on first
    # write) so that the sequential jobs and the resync overwrite allocated
    # blocks in every configuration.
    for d in "$LEG0" "$LEG1"; do
        log "warm-up: writing the first $((WARM / 2048)) MiB of $d"
        run dd if=/dev/zero of="$d" bs=1M count=$((WARM / 2048)) oflag=direct >/dev/null
    done
fi

# measure SIZE REGIONS LOGDEV CONFIG JOB ROUND: one fio run on a fresh
# mirror (its variables are m_*: lib.sh's helpers use _* names of their own).
# Each mirror is made for one run, so that the runs compared with
# each other (the five logs on one job) follow each other within a minute.
measure() {
    m_size=$1 m_n=$2 m_logdev=$3 m_cfg=$4 m_job=$5 m_round=$6
    m_sectors=$((m_n * REGION))
    case $m_cfg in
        null) use_server null ;;
        u*) use_server dmulogd ;;
    esac
    log_args "$m_cfg" "$m_logdev" $REGION nosync
    # shellcheck disable=SC2086
    bench_create m $m_sectors 0 $LOGARGS
    prime /dev/mapper/m
    m_r0=0 m_r1=0 m_c0=0 m_c1=0
    if is_userspace "$m_cfg"; then
        [ "$m_job" = randw_qd1 ] && [ "$m_round" = 1 ] && [ "$m_cfg" != null ] && mem_line $m_cfg $m_n
        m_r0=$(server_requests)
        m_c0=$(server_cpu)
    fi
    m_t0=$(now_ms)
    # shellcheck disable=SC2046
    set -- $(fio_terse /dev/mapper/m "$RUNTIME" $(job_args $m_job))
    m_t1=$(now_ms)
    if is_userspace "$m_cfg"; then
        m_c1=$(server_cpu)
        m_r1=$(server_requests)
    fi
    bench_line fio size=$m_size regions=$m_n log=$m_cfg job=$m_job round=$m_round \
        iops=$1 kib_s=$2 p99_us=$3 kib=$4 wall_ms=$((m_t1 - m_t0)) \
        dreq=$((m_r1 - m_r0)) dcpu_ns=$((m_c1 - m_c0))
    remove_dev m
}

# measure_job CONFIG ROUND: `measure` of the current size and job.
measure_job() { measure $size $n $logdev "$1" $job "$2"; }

# For each mirror size and job: ROUNDS rounds over the logs.
for spec in "small $SMALL bs_log" "large $LARGE bl_log"; do
    set -- $spec
    size=$1 n=$2 logdev=/dev/mapper/$3
    for job in $JOBS; do
        rounds "$CONFIGS" "$REVERSED" "$size mirror, $job" measure_job
    done
done

# multi CONFIG ROUND: MULTI mirrors of SMALL regions at once, one fio job of
# 4 KiB random writes at queue depth 1 on each.
multi() {
    u_cfg=$1 u_round=$2
    u_devs=""
    u_i=0
    while [ $u_i -lt $MULTI ]; do
        log_args "$u_cfg" /dev/mapper/mm_log_$u_i $REGION nosync
        # shellcheck disable=SC2086
        bench_create mm$u_i $((SMALL * REGION)) $((u_i * SMALL * REGION)) $LOGARGS
        u_devs="$u_devs /dev/mapper/mm$u_i"
        prime /dev/mapper/mm$u_i
        u_i=$((u_i + 1))
    done
    u_r0=0 u_r1=0 u_c0=0 u_c1=0
    if is_userspace "$u_cfg"; then
        u_r0=$(daemon_requests)
        u_c0=$(cpu_ns "$DPID")
    fi
    # shellcheck disable=SC2046,SC2086
    set -- $(fio_multi "$RUNTIME" $(job_args randw_qd1) -- $u_devs)
    if is_userspace "$u_cfg"; then
        u_c1=$(cpu_ns "$DPID")
        u_r1=$(daemon_requests)
    fi
    bench_line multi mirrors=$MULTI regions=$SMALL log=$u_cfg job=randw_qd1 round=$u_round \
        iops=$1 kib_s=$2 p99_us=$3 kib=$4 dreq=$((u_r1 - u_r0)) dcpu_ns=$((u_c1 - u_c0))
    for u_d in $u_devs; do remove_dev "${u_d#/dev/mapper/}"; done
}

use_server dmulogd
rounds "$MULTI_CONFIGS" "$MULTI_REVERSED" "$MULTI mirrors at once" multi

# resync CONFIG ROUND: time of a full resync of the RESYNC-region mirror.
resync() {
    s_cfg=$1
    s_r0=0 s_r1=0 s_c0=0 s_c1=0
    if is_userspace "$s_cfg"; then
        s_r0=$(daemon_requests)
        s_c0=$(cpu_ns "$DPID")
    fi
    s_t0=$(now_ms)
    log_args "$s_cfg" "" $RESYNC_REGION ""
    # shellcheck disable=SC2086
    bench_create mbr $((RESYNC * RESYNC_REGION)) 0 $LOGARGS
    wait_sync_event mbr 1200
    s_t1=$(now_ms)
    if is_userspace "$s_cfg"; then
        s_c1=$(cpu_ns "$DPID")
        s_r1=$(daemon_requests)
    fi
    remove_dev mbr
    bench_line resync regions=$RESYNC region_sectors=$RESYNC_REGION log=$s_cfg round=$2 ms=$((s_t1 - s_t0)) \
        dreq=$((s_r1 - s_r0)) dcpu_ns=$((s_c1 - s_c0))
}

use_server dmulogd
rounds "kcore ucore" "ucore kcore" "resync" resync

# Memory: the daemon holding one core log of 1,000,000 regions (nosync, on
# the leg disks).
log_args ucore "" $REGION nosync
# shellcheck disable=SC2086
bench_create mmem $((1000000 * REGION)) 0 $LOGARGS
sleep 0.5
mem_line core_1000000 1000000
smaps_lines core_1000000
remove_dev mmem
sleep 0.5
mem_line idle_after 0

daemon_alive || fail "dm-ulogd died during the benchmark"
stop_daemon
bench_line "done" mode="$MODE"
pass

#!/bin/sh
# Diagnostic (not part of the benchmark): a few logs side by side on one job,
# round after round, the order reversed every other round, for A/B checks of
# a change that the full benchmark's noise would hide. Meant to be booted
# with BOOT_ICOUNT=0 (qemu -icount: one instruction is a nanosecond of guest
# time, so the host's load drops out of everything but idle time).
# Configurations: dmulogd.pair=CFG,CFG (default ucore,null; see log_args in
# bench_lib.sh); job: dmulogd.pair_job = randw_qd1 (default), another of
# bench_lib.sh's job_args, or resync (kernel core against the first
# userspace configuration, a dmulogd.pair_regions-region mirror created in
# sync); rounds:
# dmulogd.pair_rounds (default 2); seconds per fio run: dmulogd.pair_secs
# (default 4); fio mirror size: dmulogd.pair_regions (default 16384; 512 KiB
# regions). Prints per run: "PAIR job=... round=... log=... iops=...
# cpu_ns_req=..." (the server's run time over the requests it counted).
# Boot it by hand with three sparse disks (8 TiB, 8 TiB, 64 MiB), e.g.
#   BOOT_ICOUNT=0 BOOT_MEM=1024M BOOT_APPEND="dmulogd.pair=ucore,null" \
#     initramfs/boot.sh IMAGE bench_pair a.img b.img c.img
# (IMAGE as initramfs/bench.sh builds it, for the null responder).
. /scenarios/lib.sh
. /scenarios/bench_lib.sh
REGION=1024
N=$(boot_param dmulogd.pair_regions 16384)
CFGS=$(boot_param dmulogd.pair "ucore,null" | tr , ' ')
JOB=$(boot_param dmulogd.pair_job randw_qd1)
ROUNDS=$(boot_param dmulogd.pair_rounds 2)
SECS=$(boot_param dmulogd.pair_secs 4)
diag_setup
case $JOB in
    resync) CFGS="kcore ${CFGS%% *}" ;;
    *) JA=$(job_args "$JOB") ;;
esac
REVERSED=$(echo $CFGS | tr ' ' '\n' | sed '1!G;h;$!d' | tr '\n' ' ')

# pair_run CONFIG ROUND
pair_run() {
    case $1 in
        null) use_server null ;;
        *) use_server dmulogd ;;
    esac
    q0=0 c0=0 q1=0 c1=0
    if is_userspace "$1"; then q0=$(server_requests); c0=$(server_cpu); fi
    if [ "$JOB" = resync ]; then
        t0=$(now_ms)
        log_args "$1" "" $REGION ""
        # shellcheck disable=SC2086
        bench_create mp $((N * REGION)) 0 $LOGARGS
        wait_sync_event mp 1200
        set -- "$1" "$2" "$(($(now_ms) - t0))"
    else
        log_args "$1" /dev/mapper/p_log $REGION nosync
        # shellcheck disable=SC2086
        bench_create mp $((N * REGION)) 0 $LOGARGS
        prime /dev/mapper/mp
        # shellcheck disable=SC2086
        set -- "$1" "$2" $(fio_terse /dev/mapper/mp "$SECS" $JA)
    fi
    if is_userspace "$1"; then c1=$(server_cpu); q1=$(server_requests); fi
    remove_dev mp
    req=$((q1 - q0))
    [ "$req" -gt 0 ] || req=1
    if [ "$JOB" = resync ]; then what="ms=$3"; else what="iops=$3 p99_us=$5"; fi
    echo "PAIR job=$JOB round=$2 log=$1 $what requests=$((q1 - q0)) cpu_ns_req=$(((c1 - c0) / req))" >/dev/console
}

rounds "$CFGS" "$REVERSED" "$JOB" pair_run
use_server dmulogd
stop_daemon
pass

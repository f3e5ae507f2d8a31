#!/bin/sh
# Diagnostic (not part of the benchmark): where the time of a userspace-log
# mirror write goes, seen from the kernel. function_graph-traces the
# dm-log-userspace entry points and dm_consult_userspace (one round trip to
# the daemon) during a short fio run per configuration, and prints per
# function: calls and mean duration. Configurations: dmulogd.probe=CFG,CFG
# (default udisk,udisk_if; `null` needs the responder embedded as
# initramfs/bench.sh does); job: dmulogd.probe_job (default randw_qd1),
# seconds: dmulogd.probe_secs (default 2). A second run per configuration
# counts the daemon's system calls per request (raw_syscalls events).
# Mirror size: dmulogd.probe_regions (default 16384; 512 KiB regions; the legs
# are the first two disks, whole, as in bench.sh). Boot it by hand with three
# sparse disks (8 TiB, 8 TiB, 64 MiB: truncate -s), e.g.
#   BOOT_MEM=1024M BOOT_APPEND="dmulogd.probe=ucore,udisk" \
#     initramfs/boot.sh IMAGE bench_probe a.img b.img c.img
. /scenarios/lib.sh
. /scenarios/bench_lib.sh
REGION=1024
N=$(boot_param dmulogd.probe_regions 16384)
CFGS=$(boot_param dmulogd.probe "udisk,udisk_if" | tr , ' ')
JOB=$(boot_param dmulogd.probe_job randw_qd1)
SECS=$(boot_param dmulogd.probe_secs 2)
echo on >/proc/sys/kernel/printk_devkmsg 2>/dev/null
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
T=/sys/kernel/tracing
# Room for every event of a run (the default buffer drops events).
echo 32768 >$T/buffer_size_kb
diag_setup
JA=$(job_args "$JOB")
for cfg in $CFGS; do
    case $cfg in
        null) [ -n "$NULLR" ] || fail "no null responder in this image"; use_server null ;;
        *) use_server dmulogd ;;
    esac
    log_args $cfg /dev/mapper/p_log $REGION nosync
    bench_create mp $((N * REGION)) 0 $LOGARGS
    echo 0 >$T/tracing_on
    echo nop >$T/current_tracer
    echo >$T/trace
    echo 'userspace_* dm_consult_userspace dm_rh_* disk_flush blkdev_fsync blkdev_issue_flush blkdev_write_iter __blkdev_direct_IO_simple __blkdev_direct_IO blkdev_read_iter' >$T/set_ftrace_filter 2>/dev/null ||
        log "set_ftrace_filter failed: $(cat $T/set_ftrace_filter | head -3)"
    echo function_graph >$T/current_tracer
    echo 1 >$T/tracing_on
    set -- $(fio_terse /dev/mapper/mp "$SECS" $JA)
    echo 0 >$T/tracing_on
    bench_line probe log=$cfg job=$JOB iops=$1 p99_us=$3
    # function_graph lines: "cpu) duration us | func();" or "{ ... }" pairs.
    awk -v cfg=$cfg -F'|' '
        NF >= 2 && $1 ~ /us/ {
            d = $1; sub(/ *us.*/, "", d); sub(/.*[^0-9.]/, "", d); d += 0
            f = $2
            if (f ~ /^ *}/) { if (f !~ /\/\*/) next; sub(/.*\/\* */, "", f) } else if (f !~ /\(\);/) next
            sub(/^ */, "", f); sub(/[ (].*/, "", f)
            c[f]++; s[f] += d; if (d > m[f]) m[f] = d; if (d > 10000) slow[f]++
        }
        END { for (f in c) printf "PROBE %s %s calls=%d mean_us=%.1f max_us=%.0f over_10ms=%d total_ms=%.1f\n", cfg, f, c[f], s[f] / c[f], m[f], slow[f], s[f] / 1000 }' $T/trace | sort >>/dev/console
    # Second run: the daemon's system calls (raw_syscalls enter and exit,
    # filtered on its pid), no function tracing: per request how many, and
    # per kind the mean time inside; "user" is the time between a syscall's
    # exit and the next one's entry (the daemon's own code).
    echo nop >$T/current_tracer
    echo >$T/trace
    for e in sys_enter sys_exit; do
        echo "common_pid == $(server_pid)" >$T/events/raw_syscalls/$e/filter
        echo 1 >$T/events/raw_syscalls/$e/enable
    done
    r0=$(server_requests)
    echo 1 >$T/tracing_on
    set -- $(fio_terse /dev/mapper/mp "$SECS" $JA)
    echo 0 >$T/tracing_on
    r1=$(server_requests)
    for e in sys_enter sys_exit; do echo 0 >$T/events/raw_syscalls/$e/enable; done
    awk -v cfg=$cfg -v req=$((r1 - r0)) '
        /sys_(enter|exit): NR/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { ts = substr($i, 1, length($i) - 1) * 1e6; break }
            n = $0; sub(/.*NR /, "", n); sub(/ .*/, "", n)
            if ($0 ~ /sys_enter/) {
                if (lastexit != "") { user += ts - lastexit; nuser++ }
                enter = ts; cur = n; t++
            } else if (enter != "" && n == cur) {
                r = $0; sub(/.*= /, "", r); k = "nr" n ((n == 45 || n == 47) ? ((r + 0 < 0) ? "_err" : "_ok") : "")
                c[k]++; d[k] += ts - enter; lastexit = ts
            }
        }
        END {
            q = req ? req : 1
            printf "PROBE %s syscalls requests=%d per_request=%.2f user_us=%.1f", cfg, req, t / q, nuser ? user / nuser : 0
            for (k in c) printf " %s=%.2f/req,%.1fus", k, c[k] / q, d[k] / c[k]
            printf "\n" }' $T/trace >>/dev/console
    remove_dev mp
done
use_server dmulogd
stop_daemon
pass

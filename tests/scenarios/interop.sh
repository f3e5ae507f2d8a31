#!/bin/sh
# The kernel's `disk` log and dm-ulogd's `disk` log share one on-disk format:
# a mirror moves from one to the other on the same log device without a full
# resync, in both directions. Each hand-over also carries one region marked
# dirty on disk by hand (legs made to differ there): the new log must resync it.
. /scenarios/lib.sh

SECTORS=131072   # 64 MiB
REGION=1024      # 128 regions
NR=128
UUID=dmulogd-test-interop
LOGDEV=/dev/mapper/m0_log

make_legs m0 $SECTORS
make_log m0_log 2048
zero_dev $LOGDEV
write_random /dev/mapper/m0_0 8 4

# handover FROM TO DIRTY_REGION: the table with the FROM log is live and in
# sync; write, remove, dirty a region, load the TO log, check, sync, compare.
handover() {
    for r in 3 50 100; do
        write_region /dev/mapper/m0 $r $REGION
    done
    remove_dev m0
    check_log_header $LOGDEV $NR
    _clean=$(log_clean_count $LOGDEV $NR)
    log "$1 log removed: header '$(log_header $LOGDEV)', $_clean/$NR clean on disk"
    [ "$_clean" -ge $((NR - 3)) ] || fail "$1 log left only $_clean/$NR regions clean"
    dirty_region $LOGDEV "$3" /dev/mapper/m0_1 $REGION
    _clean=$((_clean - 1))
    if [ "$2" = kernel ]; then
        create_mirror m0 $SECTORS disk $LOGDEV $REGION
    else
        create_mirror m0 $SECTORS userspace $UUID disk $LOGDEV $REGION
    fi
    _c=$(in_sync_count m0)
    log "$2 log loaded: $(mirror_status m0)"
    [ "$_c" -ge "$_clean" ] || fail "$2 log after $1 log: in-sync count $_c, but $_clean regions were clean on disk"
    wait_in_sync m0 60
    compare_mirror m0
}

# 1. The kernel's disk log from scratch: full sync.
create_mirror m0 $SECTORS disk $LOGDEV $REGION
wait_in_sync m0 60
compare_mirror m0

start_daemon
# 2. kernel -> dm-ulogd
handover kernel dm-ulogd 9
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 disk $(devnum m0_log) A" ] || fail "dm-ulogd disk log status '$_ls'"
# 3. dm-ulogd -> kernel
handover dm-ulogd kernel 33
# 4. and back once more, kernel -> dm-ulogd
handover kernel dm-ulogd 64
daemon_alive || fail "dm-ulogd died"
remove_dev m0
check_log_header $LOGDEV $NR
pass

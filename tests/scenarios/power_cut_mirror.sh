#!/bin/sh
# Power loss with volatile write caches (tests/power_cut.rs drives it; issue 9,
# issue 24).
#
# Disks (the host serves each through nbdkit): /dev/vda leg 0 behind a
# volatile write-back cache, /dev/vdb leg 1 written through, /dev/vdc a probe
# behind a volatile cache (qemu's virtio-blk: no FUA, flushes only). The log
# device (dm-linear over /dev/nbd0, see LOG_OFFSET) and a second probe
# /dev/nbd1 are attached by this kernel's own NBD client (nbd.ko,
# nbd-client) over qemu's user network, so that the guest sends FUA writes
# as such: a FUA write makes only its own 4 KiB cache block durable, a plain
# write is lost unless a flush completed after it. The
# host reads the probes after the cut (a flushed block must be there, an
# unflushed one lost; on /dev/nbd1 a FUA block must be there too). A mirror
# of 8192 regions of 1 KiB spans the two legs whole. The host cuts the power
# (SIGKILL of qemu and of every nbdkit) while fio writes, so whatever the
# cached disks did not make durable is lost; it boots the guest again on the
# same disks.
#
# Kernel parameters (one boot can do both, verify first):
#   powercut.verify=LOG  assemble the mirror on the log device as the cut left
#                        it (no sync/nosync: the disk log decides what
#                        resyncs), wait for sync, compare the legs region by
#                        region; print one POWERCUT-VERIFY line
#   powercut.load=LOG    leg 1 a copy of leg 0, a fresh mirror on them (zeroed
#                        log, nosync), the probes written, every disk flushed,
#                        fio writing (4 jobs, random 4 KiB direct writes, each
#                        job in its own quarter); print POWERCUT-LOAD-STARTED
#                        once writes reach the legs, then wait for the cut
# LOG: kdisk (the kernel's own disk log), udisk (dm-ulogd disk), udisk_if
# (dm-ulogd disk with integrated_flush).
. /scenarios/lib.sh

LEG0=/dev/vda
LEG1=/dev/vdb
PROBE=/dev/vdc
LOG_NBD=/dev/nbd0
FUA_PROBE=/dev/nbd1
# The log device: nbd0 from sector 5 on, so that the log's image (header in
# sector 0, clean bits in sectors 2 and 3) straddles the 4 KiB cache blocks
# of nbd0's server: sectors 0-2 in block 0, sector 3 (regions 4096-8191) in
# block 1. A FUA write of one bits sector then leaves a plain write of the
# other in the cache (tests/power_cut.rs, LOG_IMAGE_OFFSET).
LOG_OFFSET=5
LOGDEV=/dev/mapper/plog
# The host forwards these guest addresses to the nbdkit of the log and of the
# FUA probe (tests/power_cut.rs, GUEST_NBD_HOST and the disks' ports).
NBD_HOST=10.0.2.100
LOG_PORT=10809
FUA_PROBE_PORT=10810
REGION=2         # sectors: 1 KiB
NR=8192
SECTORS=$((NR * REGION))
REGION_BYTES=$((REGION * 512))

# attach_nbd: the network up, then the log device and the FUA probe through
# nbd.ko; both must take FUA and have a write-back cache.
attach_nbd() {
    run ip link set lo up
    run ip link set eth0 up
    run ip addr add 10.0.2.15/24 dev eth0
    run nbd-client $NBD_HOST $LOG_PORT $LOG_NBD -N "" -b 512 >/dev/null
    run nbd-client $NBD_HOST $FUA_PROBE_PORT $FUA_PROBE -N "" -b 512 >/dev/null
    for _d in $LOG_NBD $FUA_PROBE; do
        _q=/sys/block/${_d#/dev/}/queue
        [ "$(cat $_q/fua)" = 1 ] || fail "$_d: no FUA (queue/fua $(cat $_q/fua)): the guest would emulate it with flushes"
        [ "$(cat $_q/write_cache)" = "write back" ] || fail "$_d: write_cache '$(cat $_q/write_cache)': the guest would send no flushes"
    done
    _s=$(cat /sys/block/${LOG_NBD#/dev/}/size)
    run dmsetup create plog --table "0 $((_s - LOG_OFFSET)) linear $LOG_NBD $LOG_OFFSET" >/dev/null
    [ -b $LOGDEV ] || run dmsetup mknodes plog >/dev/null
}

# mirror_log_words LOG [nosync]
mirror_log_words() {
    _n=$((2 + $# - 1))
    case $1 in
        kdisk) echo "disk $_n $LOGDEV $REGION $2" ;;
        udisk) echo "userspace $((_n + 3)) powercut-udisk disk $_n $LOGDEV $REGION $2" ;;
        udisk_if) echo "userspace $((_n + 4)) powercut-udisk_if integrated_flush disk $_n $LOGDEV $REGION $2" ;;
        *) fail "unknown log '$1' (kdisk, udisk, udisk_if)" ;;
    esac
}

# assemble LOG [nosync]
assemble() {
    [ "$1" = kdisk ] || start_daemon
    # shellcheck disable=SC2046 # the log's words
    _t=$(echo "0 $SECTORS mirror" $(mirror_log_words "$@") "2 $LEG0 0 $LEG1 0")
    log "create m0: $_t"
    run dmsetup create m0 --table "$_t" >/dev/null
    [ -b /dev/mapper/m0 ] || run dmsetup mknodes m0 >/dev/null
}

disassemble() {
    remove_dev m0
    [ "$1" = kdisk ] || stop_daemon
}

# flush_disk DEV: fsync of the block device, an empty flush to its cache.
flush_disk() {
    run dd if=/dev/null of="$1" conv=notrunc,fsync count=0 >/dev/null
}

# clean_regions: the regions the log device records clean, one a line.
clean_regions() {
    dd if=$LOGDEV bs=512 skip=2 count=$(( (NR / 8 + 511) / 512 )) iflag=direct 2>/dev/null |
        od -A n -v -t u1 -N $((NR / 8)) | awk '
        { for (i = 1; i <= NF; i++) { v = $i; for (b = 0; b < 8; b++) {
              if (v % 2 == 1) print r + 0; v = int(v / 2); r++ } } }'
}

# divergent_regions: the regions where the legs differ (read with O_DIRECT),
# one a line. Writes and losses are whole 4 KiB blocks of random data (fio,
# bs=4k), so the first 8 bytes of each 1 KiB tell its version; a cmp of the
# whole legs (LEGS_IDENTICAL=yes|no) backs the count. The lines start with
# "x" so that awk compares them as strings, never as numbers.
divergent_regions() {
    run dd if=$LEG0 of=/tmp/leg0 bs=64k iflag=direct >/dev/null
    run dd if=$LEG1 of=/tmp/leg1 bs=64k iflag=direct >/dev/null
    if cmp -s /tmp/leg0 /tmp/leg1; then LEGS_IDENTICAL=yes; else LEGS_IDENTICAL=no; fi
    for _l in 0 1; do
        hexdump -v -e '"x" 2/4 "%08x" 1/1016 "" "\n"' /tmp/leg$_l >/tmp/leg$_l.blocks
    done
    awk -v per=$((REGION_BYTES / 1024)) '
        NR == FNR { b[FNR] = $0; next }
        b[FNR] != $0 { r = int((FNR - 1) / per); if (!(r in seen)) { seen[r] = 1; print r } }' \
        /tmp/leg0.blocks /tmp/leg1.blocks
    rm -f /tmp/leg0 /tmp/leg1 /tmp/leg0.blocks /tmp/leg1.blocks
}

verify() {
    _h=$(log_header $LOGDEV)
    clean_regions >/tmp/clean.list
    _clean=$(wc -l </tmp/clean.list)
    assemble "$1"
    wait_in_sync m0 120
    disassemble "$1"
    divergent_regions >/tmp/divergent.list
    _div=$(wc -l </tmp/divergent.list)
    _divclean=$(awk 'NR == FNR { clean[$1] = 1; next } ($1 in clean)' /tmp/clean.list /tmp/divergent.list | wc -l)
    _first=$(head -16 /tmp/divergent.list | tr '\n' ',' | sed 's/,$//')
    echo "POWERCUT-VERIFY log=$1 identical=$LEGS_IDENTICAL header=$(echo "$_h" | tr ' ' :) clean_before=$_clean divergent=$_div divergent_clean=$_divclean first=${_first:-none}" >>"$_CONSOLE"
}

load() {
    for _d in $LEG0 $PROBE; do
        _wc=$(cat "/sys/block/${_d#/dev/}/queue/write_cache")
        [ "$_wc" = "write back" ] ||
            fail "$_d: write_cache '$_wc': the guest would send no flushes (qemu needs cache=writeback)"
    done
    run dd if=$LEG0 of=$LEG1 bs=1M iflag=direct oflag=direct >/dev/null
    zero_dev $LOG_NBD
    assemble "$1" nosync
    wait_in_sync m0 10
    # Probe block 0 flushed, block 1 not: the cut must keep the one and lose
    # the other, or the disks do not model a volatile cache.
    run dd if=/dev/urandom of=$PROBE bs=4k count=1 oflag=direct >/dev/null
    flush_disk $PROBE
    run dd if=/dev/urandom of=$PROBE bs=4k count=1 seek=1 oflag=direct >/dev/null
    # The FUA probe: block 0 flushed, block 1 a plain write, then block 2 a
    # FUA write (O_DIRECT|O_DSYNC through Linux AIO, as dm-ulogd writes its
    # log): the cut must keep 0 and 2 and lose 1, or a FUA write is not
    # durable alone, or it flushed what came before it.
    run dd if=/dev/urandom of=$FUA_PROBE bs=4k count=1 oflag=direct >/dev/null
    flush_disk $FUA_PROBE
    run dd if=/dev/urandom of=$FUA_PROBE bs=4k count=1 seek=1 oflag=direct >/dev/null
    run fio --name=fua-probe --filename=$FUA_PROBE --rw=write --bs=4k --size=4k --offset=8k \
        --direct=1 --sync=dsync --ioengine=libaio --output=/dev/null >/dev/null
    for _d in $LEG0 $LEG1 $LOGDEV; do flush_disk $_d; done
    _before=$(awk '{ print $5 }' /sys/block/vdb/stat)
    # Each job writes its own quarter, one write at a time: two writes in
    # flight to one block may land in either order on each leg, and legs
    # that differ so are the workload's doing, not the power cut's.
    _quarter=$((SECTORS * 512 / 4))
    fio --name=powercut --filename=/dev/mapper/m0 --rw=randwrite --bs=4k --direct=1 \
        --ioengine=psync --numjobs=4 --size=$_quarter --offset_increment=$_quarter \
        --time_based --runtime=600 --randrepeat=0 --refill_buffers \
        --output=/dev/null >/dev/null 2>&1 &
    _n=0
    while [ "$(awk '{ print $5 }' /sys/block/vdb/stat)" -le "$_before" ]; do
        _n=$((_n + 1))
        [ $_n -lt 300 ] || fail "fio wrote nothing to the legs in 30 s"
        sleep 0.1
    done
    log "fio writing"
    echo "POWERCUT-LOAD-STARTED log=$1" >>"$_CONSOLE"
    sleep 120
    fail "no power cut 120 s into the load"
}

verify_log=$(boot_param powercut.verify)
load_log=$(boot_param powercut.load)
[ -n "$verify_log$load_log" ] || fail "neither powercut.verify nor powercut.load on the kernel command line"
attach_nbd
[ -z "$verify_log" ] || verify "$verify_log"
[ -z "$load_log" ] || load "$load_log"
pass

#!/bin/sh
# `dm-ulogd examine` on log devices written by the kernel's own `disk` log:
# clean after a sync; dirty while writes are in flight (a suspended leg holds
# them, and the kernel has written their marks to the log before issuing
# them: the state a crash at that moment leaves); the kernel's own reading of
# that dirty image (its in-sync count on load) agrees with examine; the same
# on dm-ulogd's disk log; wrong magic, truncated and unreadable devices get
# exit code 1 and one line. examine never writes: the log device's checksum
# is unchanged, and it works on a read-only device.
. /scenarios/lib.sh

SECTORS=131072   # 64 MiB
REGION=1024      # 128 regions of 512 KiB
NR=128
LOG=/dev/mapper/m0_log

make_legs m0 $SECTORS
make_log m0_log 2048
zero_dev $LOG

# examine_ok ARGS...: the report of a successful examine (exit 0).
examine_ok() {
    _o=$(dm-ulogd examine "$@" 2>&1)
    _rc=$?
    [ $_rc = 0 ] || fail "dm-ulogd examine $* exited $_rc: $_o"
    echo "$_o"
}

# has TEXT LINE: fail unless the report TEXT has the line LINE.
has() {
    echo "$1" | grep -qxF "$2" || { echo "$1" >>"$_CONSOLE"; fail "examine report lacks '$2'"; }
}

# refused DEV TEXT: exit 1, nothing on stdout, one line on stderr holding TEXT.
refused() {
    dm-ulogd examine "$1" >/tmp/ex.out 2>/tmp/ex.err
    _rc=$?
    [ $_rc = 1 ] || fail "examine $1: exit $_rc, expected 1: $(cat /tmp/ex.out /tmp/ex.err)"
    [ ! -s /tmp/ex.out ] || fail "examine $1 printed a report: $(cat /tmp/ex.out)"
    [ "$(wc -l </tmp/ex.err)" = 1 ] || fail "examine $1: not one line: $(cat /tmp/ex.err)"
    grep -qF "$2" /tmp/ex.err || fail "examine $1: '$(cat /tmp/ex.err)' lacks '$2'"
    log "examine $1 (exit 1): $(cat /tmp/ex.err)"
}

# wait_dirty DEV N: until examine reports N dirty regions (10 s).
wait_dirty() {
    _deadline=$(( $(now_ds) + 100 ))
    while ! dm-ulogd examine "$1" | grep -qx "dirty: $2 regions"; do
        [ "$(now_ds)" -lt "$_deadline" ] || fail "examine $1: not $2 dirty regions after 10 s: $(dm-ulogd examine "$1" 2>&1)"
        sleep 0.1
    done
}

# write_held MIRROR REGION...: a 4 KiB direct write at the start of each
# region, in the background (held while a leg is suspended); pids in $held.
write_held() {
    _m=$1
    shift
    for _r in "$@"; do
        dd if=/dev/urandom of="/dev/mapper/$_m" bs=512 count=8 seek=$((_r * REGION)) \
            oflag=direct 2>/dev/null &
        held="$held $!"
    done
}

# 1. A zeroed device is no disk log.
refused $LOG "not a dm disk log: magic 0x00000000 at byte 0, a disk log has 0x4d695272"

# 2. The kernel's disk log after a full sync, table removed: all clean.
create_mirror m0 $SECTORS disk $LOG $REGION
wait_in_sync m0 60
remove_dev m0
check_log_header $LOG $NR
sum=$(md5sum <$LOG)
r=$(examine_ok $LOG --dirty)
log "kernel disk log, synced and removed:
$r"
has "$r" "header: magic 0x4d695272, version 2, $NR regions"
has "$r" "image: 1536 bytes, fits the device"
has "$r" "clean: $NR regions"
has "$r" "dirty: 0 regions"
echo "$r" | grep -q '^dirty regions' && fail "a clean log lists dirty regions: $r"
# By major:minor (a short-lived node), and on a read-only device.
r=$(examine_ok "$(devnum m0_log)")
has "$r" "device: $(devnum m0_log), block device $(devnum m0_log), 1048576 bytes, logical block 512 bytes"
run blockdev --setro $LOG >/dev/null
r=$(examine_ok $LOG)
run blockdev --setrw $LOG >/dev/null
has "$r" "clean: $NR regions"
[ "$(md5sum <$LOG)" = "$sum" ] || fail "the log device changed while only examine read it"

# 3. The kernel's disk log live, writes to regions 3, 50, 51, 100 held in
# flight by a suspended leg: the kernel flushed their marks to the log first.
create_mirror m0 $SECTORS disk $LOG $REGION
wait_in_sync m0 60
run dmsetup suspend m0_1 >/dev/null
held=""
write_held m0 3 50 51 100
wait_dirty $LOG 4
r=$(examine_ok $LOG --region-size $REGION)
log "kernel disk log with 4 writes in flight:
$r"
has "$r" "clean: $((NR - 4)) regions"
has "$r" "resync: at most 2097152 bytes in 4 regions (the last region ends with the mirror)"
has "$r" "dirty regions 3-3 (1): bytes 1572864-2097151, sectors 3072-4095"
has "$r" "dirty regions 50-51 (2): bytes 26214400-27262975, sectors 51200-53247"
has "$r" "dirty regions 100-100 (1): bytes 52428800-52953087, sectors 102400-103423"
[ "$(echo "$r" | grep -c '^dirty regions')" = 3 ] || fail "expected 3 runs of dirty regions: $r"
# The shell's own reading of the bits agrees.
[ "$(log_clean_count $LOG $NR)" = $((NR - 4)) ] || fail "log_clean_count disagrees with examine"
for reg in 3 50 51 100; do
    [ "$(log_bit $LOG $reg)" = 0 ] || fail "region $reg is clean on disk, examine said dirty"
done
# The image a crash would leave, saved; examine reads the file alike.
run dd if=$LOG of=/tmp/crash.img bs=512 count=3 iflag=direct >/dev/null
r=$(examine_ok /tmp/crash.img --dirty)
has "$r" "device: /tmp/crash.img, file, 1536 bytes"
has "$r" "dirty: 4 regions"
has "$r" "dirty regions 50-51 (2)"
run dmsetup resume m0_1 >/dev/null
for p in $held; do wait "$p" || fail "a held write failed"; done
remove_dev m0
r=$(examine_ok $LOG)
has "$r" "dirty: 0 regions"

# 4. The kernel loads the saved image: its in-sync count is what examine
# called clean (it rebuilds sync from the clean bits). A suspended leg holds
# the resync so the count stays put while it is read.
run dd if=/tmp/crash.img of=$LOG bs=512 oflag=direct >/dev/null
run dmsetup suspend m0_1 >/dev/null
create_mirror m0 $SECTORS disk $LOG $REGION
ratio=$(sync_ratio m0)
log "kernel disk log loaded from the saved image: $ratio"
[ "$ratio" = "$((NR - 4))/$NR" ] || fail "kernel in-sync count $ratio, examine said $((NR - 4)) clean"
run dmsetup resume m0_1 >/dev/null
wait_in_sync m0 60
compare_mirror m0
remove_dev m0

# 5. dm-ulogd's disk log on the same device: regions 7-9 and 99 held.
start_daemon
create_mirror m0 $SECTORS userspace dmulogd-test-examine disk $LOG $REGION
wait_in_sync m0 60
run dmsetup suspend m0_1 >/dev/null
held=""
write_held m0 7 8 9 99
wait_dirty $LOG 4
r=$(examine_ok $LOG --dirty)
log "dm-ulogd disk log with 4 writes in flight:
$r"
has "$r" "dirty regions 7-9 (3)"
has "$r" "dirty regions 99-99 (1)"
run dmsetup resume m0_1 >/dev/null
for p in $held; do wait "$p" || fail "a held write failed"; done
remove_dev m0
has "$(examine_ok $LOG)" "dirty: 0 regions"
daemon_alive || fail "dm-ulogd died"

# 6. Truncated: a 512-byte device holding the log's header (128 regions
# need 1536 bytes).
carve short 1 "$(disk_n 1)"
run dd if=$LOG of=/dev/mapper/short bs=512 count=1 iflag=direct oflag=direct >/dev/null
refused /dev/mapper/short "cut short, or not this log's device: its header records $NR regions, which need 1536 bytes, but it has 512"

# 7. Wrong magic: random bytes.
run dd if=/dev/urandom of=$LOG bs=512 count=1 oflag=direct >/dev/null
refused $LOG "not a dm disk log: magic 0x"

# 8. Unreadable: every read fails.
run dmsetup create unreadable --table "0 2048 error" >/dev/null
[ -b /dev/mapper/unreadable ] || run dmsetup mknodes unreadable >/dev/null
refused /dev/mapper/unreadable "cannot read its header: I/O error"
pass

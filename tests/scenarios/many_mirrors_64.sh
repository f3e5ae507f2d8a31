#!/bin/sh
# 64 mirrors at once, each with its own dm-ulogd log (core, disk, and both
# again with integrated_flush under cmirrord's clustered names), 1 MiB legs
# carved from the two disks, 16 regions each. All 64 resync and take writes at
# the same time (one fio with 64 threads, 128 KiB of 4 KiB random writes per
# mirror at queue depth 4, each block read back and checked): no request may
# be lost to a receive overrun, so the kernel resends nothing, never has to
# reconnect, and dm-ulogd reports no overflow and no dropped datagram. Every
# write finishes and verifies, every mirror reaches sync, every pair of legs
# is identical.
#
# dm-ulogd runs in the foreground with its log in a file, so every line it
# writes can be checked (the kernel rate-limits lines written to /dev/kmsg).
. /scenarios/lib.sh

N=64
SECTORS=2048     # 1 MiB legs
REGION=128       # 64 KiB: 16 regions each
NR=16
# shellcheck disable=SC2034 # read by start_daemon (lib.sh)
DMULOGD_START=foreground

start_daemon
# Legs and log devices in one `dmsetup create --concise` (one process instead
# of 160): m<i>_0 on the first disk, m<i>_1 on the second, 1 MiB apart, and
# for every odd i an 8-sector log device m<i>_log on the first disk after them.
t0=$(now_ds)
d0=$(disk_n 0)
d1=$(disk_n 1)
spec=""
i=0
while [ $i -lt $N ]; do
    off=$((2048 + i * 2048))
    spec="$spec${spec:+;}m${i}_0,,,,0 $SECTORS linear $d0 $off;m${i}_1,,,,0 $SECTORS linear $d1 $off"
    [ $((i % 2)) = 1 ] && spec="$spec;m${i}_log,,,,0 8 linear $d0 $((2048 + (N + i) * 2048))"
    i=$((i + 1))
done
run dmsetup create --concise "$spec" >/dev/null
i=1
while [ $i -lt $N ]; do
    [ -b /dev/mapper/m${i}_log ] || run dmsetup mknodes >/dev/null
    run dd if=/dev/zero of=/dev/mapper/m${i}_log bs=4k count=1 oflag=direct >/dev/null
    i=$((i + 2))
done
[ -b /dev/mapper/m$((N - 1))_1 ] || fail "dmsetup create --concise made no /dev/mapper/m$((N - 1))_1"
log "legs and log devices for $N mirrors made in $(( ($(now_ds) - t0) / 10 )) s"

i=0
fio_jobs=""
t0=$(now_ds)
while [ $i -lt $N ]; do
    u=dmulogd-test-64-$i
    case $((i % 4)) in
        0) create_mirror m$i $SECTORS userspace $u core $REGION ;;
        1) create_mirror m$i $SECTORS userspace $u disk /dev/mapper/m${i}_log $REGION ;;
        2) create_mirror m$i $SECTORS userspace $u integrated_flush clustered-core $REGION ;;
        3) create_mirror m$i $SECTORS userspace $u integrated_flush clustered-disk /dev/mapper/m${i}_log $REGION ;;
    esac >/dev/null
    fio_jobs="$fio_jobs --name=m$i --filename=/dev/mapper/m$i"
    i=$((i + 1))
done
log "$N mirrors created in $(( ($(now_ds) - t0) / 10 )) s; $(dmsetup status | awk '$4 == "mirror" && $8 != $9' | wc -l) resyncing"

# All 64 at once, while they resync.
t0=$(now_ds)
# shellcheck disable=SC2086 # one word per job option
fio --thread --rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=4 \
    --size=128K --offset=512K --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
    --output=/tmp/fio.out $fio_jobs >/dev/null 2>&1 ||
    { tail -40 /tmp/fio.out >>"$_CONSOLE"; fail "fio over the $N mirrors failed (a write failed or did not verify)"; }
log "fio: $N x 128 KiB written and verified in $(( ($(now_ds) - t0) / 10 )) s"

t0=$(now_ds)
i=0
while [ $i -lt $N ]; do
    wait_in_sync m$i 120
    i=$((i + 1))
done
log "all $N mirrors in sync, $(( ($(now_ds) - t0) / 10 )) s after the writes"
i=0
while [ $i -lt $N ]; do
    [ "$(sync_ratio m$i)" = "$NR/$NR" ] || fail "m$i: $(sync_ratio m$i)"
    compare_mirror m$i >/dev/null
    i=$((i + 1))
done
log "legs of all $N mirrors identical"

# Nothing lost on the way: no resend, no reconnect, no overflow, no drop.
for e in 'Request timed out' 'Userspace log server not found' 'Reconnected to userspace log server' 'Unable to send log request'; do
    [ "$(kmsg_count "$e")" = 0 ] || fail "kernel log: $(dmesg | grep -m1 "$e")"
done
kill -USR1 "$(daemon_pid)"
sleep 1
summary=$(grep 'live log(s)' "$DMULOGD_LOG" | tail -1)
log "dm-ulogd: $summary"
case $summary in
    *"$N live log(s)"*", 0 dropped, 0 malformed"*) ;;
    *) fail "dm-ulogd summary: '$summary', expected $N live logs, 0 dropped, 0 malformed" ;;
esac
if grep -v 'live log(s)' "$DMULOGD_LOG" | grep -E 'overflow|unknown log|dropped a datagram|malformed' >/tmp/bad; then
    fail "dm-ulogd: $(head -1 /tmp/bad)"
fi
[ "$(grep -c 'created: ' "$DMULOGD_LOG")" = $N ] || fail "dm-ulogd logged $(grep -c 'created: ' "$DMULOGD_LOG") log creations, expected $N"

daemon_alive || fail "dm-ulogd died"
i=0
while [ $i -lt $N ]; do
    remove_dev m$i
    i=$((i + 1))
done
daemon_alive || fail "dm-ulogd died after the removes"
[ "$(state_files)" = 0 ] || fail "state files left after the tables were removed"
pass

#!/bin/sh
# `integrated_flush` userspace logs (marks ride inside FLUSH requests) under a
# fio random-write load while the resync runs: a core and a disk log mirror,
# both reach full sync, legs equal, the table keeps the integrated_flush word.
. /scenarios/lib.sh

SECTORS=131072   # 64 MiB
REGION=1024

start_daemon
make_legs m0 $SECTORS
make_legs m1 $SECTORS
make_log m1_log 2048
zero_dev /dev/mapper/m1_log
write_random /dev/mapper/m0_0 8 4
write_random /dev/mapper/m1_0 8 4

create_mirror m0 $SECTORS userspace dmulogd-test-if-core integrated_flush core $REGION
create_mirror m1 $SECTORS userspace dmulogd-test-if-disk integrated_flush disk /dev/mapper/m1_log $REGION
for m in m0 m1; do
    dmsetup table $m | grep -q ' integrated_flush ' || fail "table of $m lost integrated_flush: $(dmsetup table $m)"
done

log "fio load on m0 and m1 for 8 s"
fio_load /dev/mapper/m0 8 --size=60M &
p0=$!
fio_load /dev/mapper/m1 8 --size=60M &
p1=$!
wait $p0 || fail "fio on m0 failed"
wait $p1 || fail "fio on m1 failed"
log "after load: m0 $(sync_ratio m0), m1 $(sync_ratio m1)"

wait_in_sync m0 60
wait_in_sync m1 60
compare_mirror m0
compare_mirror m1
daemon_alive || fail "dm-ulogd died"
remove_dev m0
remove_dev m1
check_log_header /dev/mapper/m1_log 128
pass

#!/bin/sh
# 32 mirrors at once, each with its own dm-ulogd log and uuid (core,
# clustered-core, disk and clustered-disk in turn), small legs carved from the
# two disks: all take writes at the same time, all reach full sync, all legs equal.
. /scenarios/lib.sh

N=${N:-32}
SECTORS=8192     # 4 MiB legs
REGION=256       # 32 regions each

start_daemon
i=0
while [ $i -lt $N ]; do
    make_legs m$i $SECTORS
    case $((i % 4)) in
        2|3) make_log m${i}_log 2048; zero_dev /dev/mapper/m${i}_log ;;
    esac
    write_random /dev/mapper/m${i}_0 1 1
    i=$((i + 1))
done

i=0
while [ $i -lt $N ]; do
    u=dmulogd-test-many-$i
    case $((i % 4)) in
        0) create_mirror m$i $SECTORS userspace $u core $REGION ;;
        1) create_mirror m$i $SECTORS userspace $u clustered-core $REGION ;;
        2) create_mirror m$i $SECTORS userspace $u disk /dev/mapper/m${i}_log $REGION ;;
        3) create_mirror m$i $SECTORS userspace $u clustered-disk /dev/mapper/m${i}_log $REGION ;;
    esac
    i=$((i + 1))
done
log "$N mirrors created"

i=0
pids=""
while [ $i -lt $N ]; do
    write_random /dev/mapper/m$i 1 2 &
    pids="$pids $!"
    i=$((i + 1))
done
for p in $pids; do
    wait "$p" || fail "a writer failed"
done
log "writes done"

i=0
while [ $i -lt $N ]; do
    wait_in_sync m$i 90
    i=$((i + 1))
done
log "all $N mirrors in sync"
i=0
while [ $i -lt $N ]; do
    compare_mirror m$i
    i=$((i + 1))
done
daemon_alive || fail "dm-ulogd died"
i=0
while [ $i -lt $N ]; do
    remove_dev m$i
    i=$((i + 1))
done
daemon_alive || fail "dm-ulogd died after the removes"
pass

#!/bin/sh
# Harness self-test with the kernel's own core log (no dm-ulogd): a mirror
# resyncs, takes random writes, reaches full sync, legs compare equal.
. /scenarios/lib.sh

SECTORS=131072   # 64 MiB
REGION=1024      # 512 KiB: 128 regions

make_legs m0 $SECTORS
create_mirror m0 $SECTORS core $REGION
log "status after create: $(mirror_status m0)"
write_random /dev/mapper/m0 16
wait_in_sync m0 120
log "status: $(mirror_status m0)"
log "log status: $(mirror_log_status m0)"
[ "$(mirror_log_status m0)" = "1 core" ] || fail "kernel core log status: $(mirror_log_status m0)"
compare_mirror m0
pass

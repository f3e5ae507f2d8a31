#!/bin/sh
# Suspend and resume a mirror with a dm-ulogd core log: during the resync (it
# must carry on and finish) and after full sync (the bits survive: the status
# right after resume shows full sync, no full resync). Then more writes, sync,
# legs equal.
. /scenarios/lib.sh

SECTORS=131072   # 64 MiB
REGION=1024

start_daemon
make_legs m0 $SECTORS
write_random /dev/mapper/m0_0 16 4
create_mirror m0 $SECTORS userspace dmulogd-test-suspend core $REGION

# During the resync.
for _ in 1 2 3; do
    run dmsetup suspend m0
    log "suspended: $(sync_ratio m0)"
    run dmsetup resume m0
    log "resumed: $(sync_ratio m0)"
done
wait_in_sync m0 60
compare_mirror m0

# After full sync.
run dmsetup suspend m0
run dmsetup resume m0
r=$(sync_ratio m0)
log "right after resume: $(mirror_status m0)"
[ "${r%/*}" = "${r#*/}" ] || fail "full resync after suspend/resume: $r"

# A suspend with writes in flight (noflush), then more writes.
write_random /dev/mapper/m0 8 30 &
w=$!
sleep 0.2
run dmsetup suspend --noflush m0
run dmsetup resume m0
wait $w || fail "writes across a suspend failed"
write_random /dev/mapper/m0 4 50
wait_in_sync m0 60
compare_mirror m0
daemon_alive || fail "dm-ulogd died"
pass

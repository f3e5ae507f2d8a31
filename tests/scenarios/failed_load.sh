#!/bin/sh
# A table load that fails after its CTR (PROTOCOL.md section 9): the kernel's
# userspace_ctr sends CTR, then cannot hold the device the daemon named
# (dm_get_device: here the device is in use as swap) and frees its log
# without a DTR. A retry naming another device often gets the same luid (the
# log context's address). The retry must be served on the device it names,
# the refused device must stay byte-for-byte untouched, and once the mirror
# is removed the daemon must exit on SIGTERM (the failed load's log does not
# keep it alive).
. /scenarios/lib.sh

SECTORS=32768    # 16 MiB
REGION=1024      # 32 regions
UUID=dmulogd-failed-load
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Failed to register|error adding target to table|dm-log-userspace|Error creating mirror dirty log|table: .*: mirror: '

start_daemon
make_legs m0 $SECTORS
make_log x_log 2048
make_log y_log 2048
zero_dev /dev/mapper/y_log
run mkswap /dev/mapper/x_log >/dev/null
run swapon /dev/mapper/x_log
x_before=$(md5sum </dev/mapper/x_log)

t=$(mirror_table m0 $SECTORS userspace $UUID disk /dev/mapper/x_log $REGION)
log "load naming the busy device: $t"
if dmsetup create m0 --table "$t" >/tmp/create.err 2>&1; then
    fail "a mirror whose log device is in use as swap was created"
fi
log "refused as expected: $(tail -1 /tmp/create.err)"
dmsetup remove m0 >/dev/null 2>&1

create_mirror m0 $SECTORS userspace $UUID disk /dev/mapper/y_log $REGION
reused=$(kmsg_count 'reuses the id of a log whose table load failed')
log "retry: $(mirror_status m0) (luid reused: $reused)"
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 disk $(devnum y_log) A" ] || fail "the retry names y_log ($(devnum y_log)) but its log status is '$_ls'"
wait_in_sync m0 60
write_random /dev/mapper/m0 2 4
check_log_header /dev/mapper/y_log 32
compare_mirror m0
remove_dev m0

x_after=$(md5sum </dev/mapper/x_log)
[ "$x_before" = "$x_after" ] || fail "the refused device x_log was written"
run swapoff /dev/mapper/x_log
log "x_log untouched ($x_after)"

# The failed load's log, if its luid was not reused, is dropped once it has
# been idle for 5 s and no table names it; then SIGTERM ends the daemon.
sleep 6
stop_daemon
log "dm-ulogd exited on SIGTERM after the failed load"
pass

#!/bin/sh
# The log device's path names another device after a restart (PROTOCOL.md
# section 9 and issue 9: "never write a device whose path now resolves to a
# different one"). dm-ulogd is killed; the mirror's log device is renamed and
# a new device takes its old name. When the kernel reconnects the log (with
# the constructor string naming the old path), the restarted daemon serves the
# device it wrote before, which is the one the kernel holds (the dev_t kept
# in the state file): the new device under the old name is never written.
# The SIGUSR1 summary counts leg flushes.
. /scenarios/lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
UUID=dmulogd-log-path-moved
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Request timed out|Unable to send log request|Userspace log server not found'

start_daemon
make_legs m0 $SECTORS
make_log m0_log 2048
zero_dev /dev/mapper/m0_log
held=$(devnum m0_log)
create_mirror m0 $SECTORS userspace $UUID disk /dev/mapper/m0_log $REGION
wait_in_sync m0 60
write_random /dev/mapper/m0 1 2
sleep 3    # the idle write-back flushes the legs and writes the clears
legs=$(daemon_summary 'dm-ulogd.*log device [0-9:]*: .* leg flushes' | sed 's/.* \([0-9][0-9]*\) leg flushes.*/\1/')
log "leg flushes so far: $legs"
[ "$legs" -ge 1 ] || fail "no leg flush counted after writes and an idle write-back"

kill_daemon
run dmsetup rename m0_log m0_log_old
make_log m0_log 2048
run dd if=/dev/urandom of=/dev/mapper/m0_log bs=64k count=16 oflag=direct
moved=$(devnum m0_log)
[ "$moved" != "$held" ] || fail "the new m0_log has the old device number $held"
before=$(md5sum </dev/mapper/m0_log)
start_daemon
write_random /dev/mapper/m0 1 5
wait_kmsg 'Reconnected to userspace log server' 1 20 || fail "the log was not reconnected"
wait_kmsg "names device $moved, but the kernel holds $held" 1 5 ||
    fail "no line says the path now names $moved while the kernel holds $held"
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 disk $held A" ] || fail "log status '$_ls', expected '3 disk $held A'"
write_random /dev/mapper/m0 1 6
sleep 3
[ "$(md5sum </dev/mapper/m0_log)" = "$before" ] || fail "the device now named m0_log ($moved) was written"
check_log_header /dev/mapper/m0_log_old 16
compare_mirror m0
remove_dev m0
pass

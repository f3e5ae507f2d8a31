#!/bin/sh
# What `dmsetup status` and `dmsetup table` show for mirrors with dm-ulogd logs,
# next to the kernel's own logs. dm-raid1 appends the log's status text: for a
# userspace log that is dm-ulogd's STATUS_INFO answer, `1 <type>` for core logs
# and `3 <type> <maj:min> <A|D|F>` for disk logs, the kernel's own format.
. /scenarios/lib.sh

SECTORS=16384    # 8 MiB
REGION=1024

norm() { awk '{ $1 = $1; print }'; }

start_daemon
for m in uc ucc ud ucd kc kd; do
    make_legs $m $SECTORS
done
for m in ud ucd kd; do
    make_log ${m}_log 2048
    zero_dev /dev/mapper/${m}_log
done

create_mirror uc $SECTORS userspace dmulogd-test-status-uc core $REGION
create_mirror ucc $SECTORS userspace dmulogd-test-status-ucc clustered-core $REGION nosync
create_mirror ud $SECTORS userspace dmulogd-test-status-ud disk /dev/mapper/ud_log $REGION
create_mirror ucd $SECTORS userspace dmulogd-test-status-ucd clustered-disk /dev/mapper/ucd_log $REGION block_on_error
create_mirror kc $SECTORS core $REGION
create_mirror kd $SECTORS disk /dev/mapper/kd_log $REGION
for m in uc ucc ud ucd kc kd; do
    wait_in_sync $m 30
done

echo "=== dmsetup status"
dmsetup status | sort
echo "=== dmsetup table"
dmsetup table | sort

# expect_status NAME LOGSTATUS
expect_status() {
    _s=$(mirror_status "$1" | norm)
    _e="0 $SECTORS mirror 2 $(devnum "${1}_0") $(devnum "${1}_1") $((SECTORS / REGION))/$((SECTORS / REGION)) 1 AA $2"
    [ "$_s" = "$_e" ] || fail "status of $1: '$_s', expected '$_e'"
}
expect_status uc "1 core"
expect_status ucc "1 clustered-core"
expect_status ud "3 disk $(devnum ud_log) A"
expect_status ucd "3 clustered-disk $(devnum ucd_log) A"
expect_status kc "1 core"
expect_status kd "3 disk $(devnum kd_log) A"

# expect_table NAME LOGPART: the kernel prints the legs and its own logs' devices
# as major:minor; a userspace log's arguments come back as they were given.
expect_table() {
    _t=$(dmsetup table "$1" | norm)
    _e="0 $SECTORS mirror $2 2 $(devnum "${1}_0") 0 $(devnum "${1}_1") 0"
    [ "$_t" = "$_e" ] || fail "table of $1: '$_t', expected '$_e'"
}
expect_table uc "userspace 4 dmulogd-test-status-uc core 1 $REGION"
expect_table ucc "userspace 5 dmulogd-test-status-ucc clustered-core 2 $REGION nosync"
expect_table ud "userspace 5 dmulogd-test-status-ud disk 2 /dev/mapper/ud_log $REGION"
expect_table ucd "userspace 6 dmulogd-test-status-ucd clustered-disk 3 /dev/mapper/ucd_log $REGION block_on_error"
expect_table kc "core 1 $REGION"
expect_table kd "disk 2 $(devnum kd_log) $REGION"
daemon_alive || fail "dm-ulogd died"
pass

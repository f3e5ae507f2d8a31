#!/bin/sh
# A reload after a daemon restart (PROTOCOL.md section 9, "Reload order"):
# dm-ulogd is killed with SIGKILL while a disk-log mirror is idle, so its log
# is never reconnected. The mirror is then suspended, takes a queued write,
# and is reloaded with a table of the same uuid and log device: the kernel
# constructs the new log, resumes the new table (the queued write marks its
# region and goes out, held 4 s by a dm-delay leg) and only then destroys the
# old table, whose log the restarted daemon never served. Nothing of the old
# log may land on the device the new log holds: while the write is in flight,
# its region is dirty on the log device; afterwards the legs agree.
. /scenarios/lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
NR=16
UUID=dmulogd-reload-after-kill
R=5

start_daemon
carve m0_0 $SECTORS "$(disk_n 0)"
carve m0_1raw $SECTORS "$(disk_n 1)"
run dmsetup create m0_1 --table "0 $SECTORS delay /dev/mapper/m0_1raw 0 0" >/dev/null
[ -b /dev/mapper/m0_1 ] || run dmsetup mknodes m0_1 >/dev/null
make_log m0_log 2048
zero_dev /dev/mapper/m0_log
create_mirror m0 $SECTORS userspace $UUID disk /dev/mapper/m0_log $REGION
wait_in_sync m0 60
run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((R * 128)) oflag=direct >/dev/null
sleep 3    # the idle write-back records region R clean again
[ "$(log_clean_count /dev/mapper/m0_log $NR)" = $NR ] || fail "not all $NR regions clean on the log device before the kill"

kill_daemon
start_daemon
# Writes to leg 1 now take 4 s.
run dmsetup suspend m0_1
run dmsetup load m0_1 --table "0 $SECTORS delay /dev/mapper/m0_1raw 0 0 /dev/mapper/m0_1raw 0 4000"
run dmsetup resume m0_1

run dmsetup suspend m0
dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((R * 128)) oflag=direct 2>/tmp/dd.err &
w=$!
t=$(mirror_table m0 $SECTORS userspace $UUID disk /dev/mapper/m0_log $REGION)
run dmsetup load m0 --table "$t"
run dmsetup resume m0
sleep 1
kill -0 $w 2>/dev/null || fail "the queued write finished before it could be checked"
bit=$(log_bit /dev/mapper/m0_log $R)
log "reload done; region $R clean bit on the log device while its write is in flight: $bit; $(mirror_status m0)"
[ "$bit" = 0 ] || fail "region $R is recorded clean on the log device while a write to it is in flight"
wait $w || fail "the queued write failed: $(cat /tmp/dd.err)"
[ "$(kmsg_count 'saved bits are not written|saved bits written')" -ge 1 ] ||
    fail "the old log's suspend left no trace in dm-ulogd's lines"

run dmsetup suspend m0_1
run dmsetup load m0_1 --table "0 $SECTORS delay /dev/mapper/m0_1raw 0 0"
run dmsetup resume m0_1
wait_in_sync m0 60
compare_legs m0_0 m0_1
remove_dev m0
[ "$(log_clean_count /dev/mapper/m0_log $NR)" = $NR ] || fail "not all regions clean on the log device after the remove"
pass

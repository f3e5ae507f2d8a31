#!/bin/sh
# The demo (initramfs/demo.sh): dm-ulogd serving a real dm-mirror's dirty log.
# Starts the daemon, makes a 256 MiB mirror over two virtio disks with a disk
# log with `dm-ulogd create` (the table's counts are its business), writes to
# it while it resyncs, follows the resync with `dm-ulogd status --wait` until
# it is in sync, then shows `dm-ulogd status` and removes the mirror with
# `dm-ulogd remove`. No dmsetup for the mirror itself (the scenario carves
# the legs out of the disks with it).
. /scenarios/lib.sh

SECTORS=524288   # 256 MiB
CONF=/etc/dm-ulogd/mirrors

say() { echo ">>> $*"; }

say "kernel $(uname -r); starting dm-ulogd"
start_daemon
say "dm-ulogd is listening on the device-mapper connector (pid $(daemon_pid))"

make_legs demo $SECTORS
make_log demo_log 2048
zero_dev /dev/mapper/demo_log
write_random /dev/mapper/demo_0 32 0
say "leg 0 has data that leg 1 lacks; creating the mirror and saving it in $CONF:"
echo "    dm-ulogd create demo /dev/mapper/demo_0,/dev/mapper/demo_1 /dev/mapper/demo_log --save"
run dm-ulogd create demo /dev/mapper/demo_0,/dev/mapper/demo_1 /dev/mapper/demo_log --save | sed 's/^/    /'
say "$CONF now says:"
sed 's/^/    /' $CONF

say "writing 16 MiB through the mirror while it resyncs; dm-ulogd status --wait follows the resync:"
write_random /dev/mapper/demo 16 100 &
writer=$!
# Straight to the console: on a terminal, one progress line rewritten in place.
dm-ulogd status --wait || fail "dm-ulogd status --wait failed"
wait $writer || fail "writing through the mirror failed"
[ "$(in_sync_count demo)" = "$(region_count demo)" ] || fail "status --wait returned before the mirror was in sync: $(sync_ratio demo)"

say "dm-ulogd status:"
run dm-ulogd status | sed 's/^/    /'
compare_mirror demo
say "SIGUSR1: dm-ulogd logs a summary (with --daemon it logs to the kernel log):"
kill -USR1 "$(daemon_pid)" 2>/dev/null && sleep 0.5
dmesg | grep 'dm-ulogd' | tail -6
say "the legs are identical; the mirror is in sync. dm-ulogd remove demo:"
run dm-ulogd remove demo | sed 's/^/    /'
say "at the next boot, dm-ulogd assemble --all (the initramfs and the host unit run it) makes it again from $CONF"
pass

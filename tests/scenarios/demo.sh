#!/bin/sh
# The demo (initramfs/demo.sh): dm-ulogd serving a real dm-mirror's dirty log.
# Starts the daemon, builds a 256 MiB mirror over two virtio disks with a
# userspace core log, writes to it while it resyncs, shows the resync progress
# until 100 %, then `dmsetup status` and `dmsetup table`.
. /scenarios/lib.sh

SECTORS=524288   # 256 MiB
REGION=1024      # 512 KiB regions: 512 of them

say() { echo ">>> $*"; }

say "kernel $(uname -r); starting dm-ulogd"
start_daemon
say "dm-ulogd is listening on the device-mapper connector (pid $(daemon_pid))"

make_legs demo $SECTORS
write_random /dev/mapper/demo_0 32 0
say "leg 0 has data that leg 1 lacks; creating the mirror:"
create_mirror demo $SECTORS userspace demo-mirror-uuid core $REGION
echo "    $(dmsetup table demo)"

say "writing 16 MiB through the mirror while it resyncs"
write_random /dev/mapper/demo 16 100 &
writer=$!

last=""
deadline=$(( $(now_ds) + 900 ))
while :; do
    r=$(sync_ratio demo)
    x=${r%/*}
    y=${r#*/}
    if [ "$r" != "$last" ]; then
        say "resync: $x/$y regions in sync ($((x * 100 / y)) %)"
        last=$r
    fi
    [ "$x" = "$y" ] && break
    [ "$(now_ds)" -lt "$deadline" ] || fail "resync did not finish: $r"
    sleep 0.5
done
wait $writer || fail "writing through the mirror failed"
wait_in_sync demo 60

say "dmsetup status:"
dmsetup status demo
say "dmsetup table:"
dmsetup table demo
compare_mirror demo
say "SIGUSR1: dm-ulogd logs a summary (with --daemon it logs to the kernel log):"
kill -USR1 "$(daemon_pid)" 2>/dev/null && sleep 0.5
dmesg | grep 'dm-ulogd' | tail -12
[ -s "$DMULOGD_LOG" ] && tail -12 "$DMULOGD_LOG"
say "the legs are identical; the mirror is in sync"
remove_dev demo
pass

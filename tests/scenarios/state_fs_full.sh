#!/bin/sh
# A nearly full state file system: the state directory is a 64 KiB tmpfs with
# one free page, and a mirror with a 16,384-region core log (a state file of
# three pages) is created. A sparse state file, mapped and then touched, used
# to die of SIGBUS (and the kernel's CTR resend made a restarted daemon die
# again). dm-ulogd allocates the file before mapping it: the allocation fails
# with ENOSPC, the file is removed, the log is served from memory, and one
# warning says that this log's bits will not survive a restart. The mirror
# resyncs and takes writes, the daemon lives, its SIGHUP summary lists the log.
. /scenarios/lib.sh

STATE=/run/dm-ulogd-small
mkdir -p "$STATE"
run mount -t tmpfs -o size=64k,mode=0700 tmpfs "$STATE" >/dev/null
run dd if=/dev/zero of="$STATE/fill" bs=4096 count=15 >/dev/null
DMULOGD_STATE_DIR=$STATE
log "state tmpfs: $(df -k "$STATE" | tail -1)"

start_daemon --state-dir "$STATE"
SECTORS=131072   # 64 MiB in regions of 8 sectors: 16,384 regions
make_legs m $SECTORS
create_mirror m $SECTORS userspace dmulogd-state-full core 8 nosync
daemon_alive || fail "dm-ulogd died creating the log"
warning=$(daemon_lines | grep 'dmulogd-state-full: cannot create its state file')
[ "$(echo "$warning" | grep -c .)" = 1 ] || fail "expected one warning about the state file, got: $(daemon_lines | tail -5)"
case $warning in
    *"No space left on device"*"will not survive a restart"*) ;;
    *) fail "the warning does not say the file system is full and the log is not restart-protected: $warning" ;;
esac
log "warned: ${warning#*dm-ulogd}"
[ "$(state_files)" = 0 ] || fail "a state file was left on the full file system: $(ls -l "$STATE")"

write_random /dev/mapper/m 4 8
wait_in_sync m 120
compare_mirror m
kill -HUP "$(daemon_pid)"
wait_kmsg 'dm-ulogd\[.*log dmulogd-state-full luid ' 1 10 || fail "no SIGHUP summary listing the log"
daemon_alive || fail "dm-ulogd died"
remove_dev m
umount "$STATE"
pass

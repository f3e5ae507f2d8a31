#!/bin/sh
# Out of room: with --max-logs 2 a third log is refused with -ENOMEM (the table
# load fails; dmsetup sees EINVAL, as for any refused log) and one error line naming --max-logs; the daemon stays up, the
# two live mirrors keep working, and once one is removed the third fits. Then,
# with --memory-budget 3K, a log whose bitmaps need 2 KiB fits, a second one
# does not (-ENOMEM, a line naming --memory-budget), a small one still does.
. /scenarios/lib.sh

# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Userspace log server failed to create log|Error creating mirror dirty log|error adding target to table'

SECTORS=16384    # 8 MiB

# refused EXPECTED NAME LOGARGS...: creating mirror NAME fails and dm-ulogd
# logs exactly one error line containing EXPECTED.
refused() {
    _expect=$1
    _name=$2
    shift 2
    _before=$(daemon_errors | wc -l)
    _t=$(mirror_table "$_name" $SECTORS "$@")
    if dmsetup create "$_name" --table "$_t" >/tmp/create.out 2>&1; then
        fail "$_name: table accepted: $_t"
    fi
    dmsetup info "$_name" >/dev/null 2>&1 && fail "$_name: device left behind after the failed create"
    _new=$(daemon_errors | tail -n +$((_before + 1)))
    [ "$(echo "$_new" | grep -c .)" = 1 ] || fail "$_name: expected one dm-ulogd error line naming $_expect, got: $_new"
    case $_new in
        *"$_expect"*) ;;
        *) fail "$_name: dm-ulogd's error line does not name $_expect: $_new" ;;
    esac
    # The kernel turns every refusal into EINVAL for dmsetup; the daemon's
    # answer is in its line.
    case $_new in
        *"refused with -ENOMEM"*) ;;
        *) fail "$_name: dm-ulogd's line does not say -ENOMEM: $_new" ;;
    esac
    log "$_name refused: ${_new#*dm-ulogd}"
    daemon_alive || fail "dm-ulogd died"
}

# ---------------------------------------------------------------- --max-logs
start_daemon --max-logs 2
for m in a b c; do
    make_legs $m $SECTORS
done
make_log b_log 2048
zero_dev /dev/mapper/b_log
create_mirror a $SECTORS userspace dmulogd-limits-a core 1024
create_mirror b $SECTORS userspace dmulogd-limits-b disk /dev/mapper/b_log 1024
refused "raise --max-logs" c userspace dmulogd-limits-c core 1024
for m in a b; do
    write_random /dev/mapper/$m 2 2
    wait_in_sync $m 60
    compare_mirror $m
done
remove_dev a
create_mirror c $SECTORS userspace dmulogd-limits-c core 1024
write_random /dev/mapper/c 2 2
wait_in_sync c 60
compare_mirror c
remove_dev b
remove_dev c
stop_daemon

# ---------------------------------------------------------------- --memory-budget
# 8 MiB in regions of 2 sectors: 8192 regions, 2 KiB of clean and sync bits.
start_daemon --memory-budget 3K
create_mirror a $SECTORS userspace dmulogd-limits-a core 2
refused "raise --memory-budget" b userspace dmulogd-limits-b core 2
create_mirror c $SECTORS userspace dmulogd-limits-c core 1024
for m in a c; do
    write_random /dev/mapper/$m 2 4
    wait_in_sync $m 90
    compare_mirror $m
done
daemon_alive || fail "dm-ulogd died"
remove_dev a
remove_dev c
[ "$(state_files)" = 0 ] || fail "state files left: $(ls "$DMULOGD_STATE_DIR")"
pass

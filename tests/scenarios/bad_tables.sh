#!/bin/sh
# Bad mirror tables with a userspace log, loaded through dmsetup one after the
# other while a good mirror (m0) takes writes: every load fails, dm-ulogd
# (--daemon, logging to the kernel log) writes exactly one error line per
# table, naming the bad argument and the rule, keeps serving m0, and keeps
# nothing of the refused logs (its SIGUSR1 summary counts one live log, its
# state directory holds one state file). A uuid longer than 128 characters
# never reaches the daemon: the kernel refuses it ("UUID argument too long").
. /scenarios/lib.sh

# Each refused table makes the kernel say so.
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Userspace log server failed to create log|Error creating mirror dirty log|error adding target to table|UUID argument too long'

start_daemon
make_legs m0 65536
create_mirror m0 65536 userspace dmulogd-test-bad-good core 1024
make_legs b 8192
make_log small 1     # 512 bytes; a disk log of 8 regions needs 1536
wait_in_sync m0 60

LEGS="2 /dev/mapper/b_0 0 /dev/mapper/b_1 0"
vd_major=$(stat -L -c %t "$(disk_n 0)")
vd_major=$((0x$vd_major))
long_uuid=$(printf '%0129d' 0 | tr 0 u)
cases=0
daemon_cases=0

# bad_table WHAT LOGPART EXPECTED: `dmsetup create` with the log part LOGPART
# (everything after "mirror") must fail; dm-ulogd must log exactly one error
# line containing EXPECTED ("-": none, the kernel refuses the table itself);
# m0 must still take a write.
bad_table() {
    cases=$((cases + 1))
    _before=$(daemon_errors | wc -l)
    if dmsetup create bad --table "0 8192 mirror $2 $LEGS" >/tmp/bad.out 2>&1; then
        fail "$1: dmsetup create succeeded with 'mirror $2'"
    fi
    dmsetup info bad >/dev/null 2>&1 && fail "$1: device 'bad' left behind after the failed create"
    _new=$(daemon_errors | tail -n +$((_before + 1)))
    _n=$(daemon_errors | wc -l)
    _n=$((_n - _before))
    if [ "$3" = - ]; then
        [ $_n = 0 ] || fail "$1: dm-ulogd logged an error for a table it never saw: $_new"
        log "$1: refused by the kernel: $(dmesg | tail -3 | grep -m1 -E 'dm-log-userspace|table')"
    else
        daemon_cases=$((daemon_cases + 1))
        [ $_n = 0 ] && fail "$1: dm-ulogd logged no error line for 'mirror $2', expected one naming '$3' (the kernel drops lines past its /dev/kmsg rate limit: see daemon_kmsg)"
        [ $_n = 1 ] || fail "$1: dm-ulogd logged $_n error lines for 'mirror $2', expected exactly one naming '$3': $_new"
        case $_new in
            *"table refused: "*"$3"*) ;;
            *) fail "$1: dm-ulogd's error line does not name '$3': $_new" ;;
        esac
        log "$1: ${_new#*dm-ulogd}"
    fi
    run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=1 seek=$((cases * 256)) oflag=direct >/dev/null
    daemon_alive || fail "$1: dm-ulogd died"
}

bad_table "unknown log type" "userspace 3 dmulogd-bad-1 bogus 1024" 'unknown log type "bogus"'
bad_table "region size zero" "userspace 4 dmulogd-bad-2 core 1 0" 'region size 0 is below the minimum of 2 sectors'
bad_table "region size not a power of two" "userspace 4 dmulogd-bad-3 core 1 1000" 'region size 1000 is not a power of two'
bad_table "region size larger than the target" "userspace 4 dmulogd-bad-4 core 1 16384" 'region size 16384 is larger than the target (8192 sectors)'
bad_table "region size not a number" "userspace 4 dmulogd-bad-5 core 1 1k" 'region size "1k" is not a number of sectors'
bad_table "too few arguments (core)" "userspace 3 dmulogd-bad-6 core 0" 'core log takes <region_size> [sync|nosync] [block_on_error], got 0 argument(s)'
bad_table "too few arguments (disk)" "userspace 4 dmulogd-bad-7 disk 1 1024" 'disk log takes <device> <region_size> [sync|nosync] [block_on_error], got 1 argument(s)'
bad_table "too many arguments" "userspace 7 dmulogd-bad-8 core 4 1024 sync block_on_error extra" 'got 4 argument(s)'
bad_table "unknown sync word" "userspace 5 dmulogd-bad-9 core 2 1024 maybe" 'unknown log argument "maybe": expected sync, nosync or block_on_error'
bad_table "sync and nosync" "userspace 6 dmulogd-bad-10 core 3 1024 sync nosync" 'both sync and nosync given'
bad_table "log device major:minor that does not exist" "userspace 5 dmulogd-bad-11 disk 2 $vd_major:250 1024" "log device \"$vd_major:250\""
bad_table "log device path that does not exist" "userspace 5 dmulogd-bad-12 disk 2 /dev/nonexistent 1024" 'log device "/dev/nonexistent"'
bad_table "log device too small" "userspace 5 dmulogd-bad-13 disk 2 /dev/mapper/small 1024" 'is too small: 512 bytes, 1536 needed'
bad_table "uuid longer than 128 characters" "userspace 4 $long_uuid core 1 1024" -
dmesg | grep -q 'UUID argument too long' || fail "the kernel did not refuse the long uuid as expected"

# m0 carried on throughout.
write_random /dev/mapper/m0 2 20
wait_in_sync m0 60
compare_mirror m0
[ "$(mirror_log_status m0)" = "1 core" ] || fail "m0: log status $(mirror_log_status m0)"

# Nothing of the refused logs is kept.
kill -USR1 "$(daemon_pid)"
wait_kmsg 'dm-ulogd\[.*live log\(s\)' 1 10 || fail "no SIGUSR1 summary from dm-ulogd in the kernel log"
summary=$(dmesg | grep 'dm-ulogd\[.*live log(s)' | tail -1)
log "summary: ${summary#*dm-ulogd}"
case $summary in
    *" 1 live log(s), "*", $daemon_cases error replies, "*) ;;
    *) fail "dm-ulogd summary '$summary': expected 1 live log and $daemon_cases error replies (one per refused table it saw)" ;;
esac
[ "$(state_files)" = 1 ] || fail "state directory: $(ls "$DMULOGD_STATE_DIR"), expected one state file"
[ "$(ls -A "$DMULOGD_STATE_DIR" | wc -l)" = 1 ] || fail "state directory holds more than m0's state file: $(ls -A "$DMULOGD_STATE_DIR")"
daemon_alive || fail "dm-ulogd died"
remove_dev m0
[ "$(state_files)" = 0 ] || fail "m0's state file left after its table was removed"
pass

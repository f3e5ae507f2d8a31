#!/bin/sh
# Character devices named as a disk log's device: a terminal (/dev/ttyS0, a
# port nobody holds, so it would become the controlling terminal of a session
# leader that opens it without O_NOCTTY), /dev/console, /dev/null, /dev/zero.
# dm-ulogd looks at the file type before it opens anything: each table is
# refused with one error line saying it is a character device, the daemon
# lives, serves a good mirror, has no controlling terminal and does not lead
# its session (the double fork of --daemon).
. /scenarios/lib.sh

# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Userspace log server failed to create log|Error creating mirror dirty log|error adding target to table'

start_daemon
pid=$(daemon_pid)
make_legs m0 16384
create_mirror m0 16384 userspace dmulogd-chr-good core 1024
make_legs b 8192
LEGS="2 /dev/mapper/b_0 0 /dev/mapper/b_1 0"

n=0
for dev in /dev/ttyS0 /dev/console /dev/null /dev/zero; do
    [ -c "$dev" ] || fail "$dev is not a character device in this guest"
    n=$((n + 1))
    before=$(daemon_errors | wc -l)
    if dmsetup create bad --table "0 8192 mirror userspace 5 dmulogd-chr-$n disk 2 $dev 1024 $LEGS" >/tmp/bad.out 2>&1; then
        fail "$dev: the table was accepted"
    fi
    dmsetup info bad >/dev/null 2>&1 && fail "$dev: device 'bad' left behind"
    daemon_alive || fail "$dev: dm-ulogd died"
    # tty_nr: field 7 of /proc/PID/stat (the name has no space).
    tty=$(cut -d' ' -f7 "/proc/$pid/stat")
    [ "$tty" = 0 ] || fail "$dev: dm-ulogd acquired a controlling terminal (tty_nr $tty)"
    new=$(daemon_errors | tail -n +$((before + 1)))
    [ "$(echo "$new" | grep -c .)" = 1 ] || fail "$dev: expected one dm-ulogd error line, got: $new"
    case $new in
        *"log device \"$dev\": it is a character device"*"refused unopened"*) ;;
        *) fail "$dev: the error line does not say it is a character device refused unopened: $new" ;;
    esac
    log "$dev: ${new#*dm-ulogd}"
done

session=$(cut -d' ' -f6 "/proc/$pid/stat")
[ "$session" != "$pid" ] || fail "dm-ulogd (pid $pid) leads its session: a terminal it opens could become its own"

write_random /dev/mapper/m0 2 4
wait_in_sync m0 60
compare_mirror m0
daemon_alive || fail "dm-ulogd died"
remove_dev m0
pass

# Helpers for the scenarios that fail, hold and restore devices under a
# mirror (log_device_fails.sh, restart_keeps_failure.sh,
# restart_suspend_hung_log.sh, reload_after_failed_suspend.sh); sourced after
# /scenarios/lib.sh. Not a scenario itself.

# table_to_error NAME: swap the table of /dev/mapper/NAME for `error` (the
# table it had is kept for table_restore).
table_to_error() {
    dmsetup table "$1" >"/tmp/$1.table"
    run dmsetup suspend "$1"
    run dmsetup load "$1" --table "0 $(blockdev --getsz "/dev/mapper/$1") error"
    run dmsetup resume "$1"
    log "$1 ($(devnum "$1")) now fails every I/O"
}

# table_restore NAME: put back the table table_to_error (or
# hold_then_fail_writes) saved; the device is suspended first unless it already is.
table_restore() {
    dmsetup info "$1" | grep -q 'State: *SUSPENDED' || run dmsetup suspend "$1"
    run dmsetup load "$1" --table "$(cat "/tmp/$1.table")"
    run dmsetup resume "$1"
    log "$1 restored: $(dmsetup table "$1")"
}

# hold_then_fail_writes NAME: suspend /dev/mapper/NAME, a dm-linear (its new
# I/O waits in device-mapper), and load as its next table a dm-flakey over
# the same blocks that is always down with error_writes: writes and cache
# flushes fail, reads pass. (The `error` target would not do for flushes: it
# takes no flush bios, so device-mapper completes an empty flush to it
# successfully.) `dmsetup resume NAME` then fails the writes and flushes
# that waited; table_restore puts the linear table back.
hold_then_fail_writes() {
    dmsetup table "$1" >"/tmp/$1.table"
    run dmsetup suspend "$1"
    run dmsetup load "$1" --table "$(awk '$3 == "linear" { print $1, $2, "flakey", $4, $5, 0, 3600, 1, "error_writes" }' "/tmp/$1.table")"
    log "$1 ($(devnum "$1")) suspended, with a table loaded that fails writes and flushes"
}

# wait_log_health NAME CHAR SECONDS: until the mirror's log status ends in CHAR.
wait_log_health() {
    _deadline=$(( $(now_ds) + $3 * 10 ))
    while :; do
        case $(mirror_log_status "$1") in *" $2") return 0 ;; esac
        [ "$(now_ds)" -lt "$_deadline" ] || fail "$1: log status '$(mirror_log_status "$1")' after $3 s, expected health $2"
        sleep 0.2
    done
}

# wait_clean_count DEV NR_REGIONS COUNT SECONDS: until the log device records
# COUNT regions clean; returns 1 on timeout.
wait_clean_count() {
    _deadline=$(( $(now_ds) + $4 * 10 ))
    while [ "$(log_clean_count "$1" "$2")" != "$3" ]; do
        [ "$(now_ds)" -lt "$_deadline" ] || return 1
        sleep 0.2
    done
    return 0
}

# problem TEXT: note a failed check and go on (the scenario calls
# fail_on_problems later), so that one boot shows every check that fails,
# e.g. on an older build.
_PROBLEMS=""
problem() {
    log "PROBLEM: $*"
    _PROBLEMS="${_PROBLEMS:+$_PROBLEMS; }$*"
}

# fail_on_problems: fail with every problem noted so far, if any.
fail_on_problems() {
    [ -z "$_PROBLEMS" ] || fail "$_PROBLEMS"
}

#!/bin/sh
# `dm-ulogd status` against a running daemon: each live log's line agrees
# with the daemon's own SIGUSR1 summary line (type, regions, region size, in
# sync, dirty) and with `dmsetup status` (X/Y) and `dmsetup table` (the log
# device). Four logs in four states: idle core, idle disk, two writes held in
# flight by a suspended leg (2 dirty), a resync held by a suspended leg (in
# sync stays 0). --json gives the same numbers; reading changes no state
# file. After SIGKILL the logs are still listed, the daemon "not running";
# once a daemon serves again, "running" with its pid; after the removes, none.
. /scenarios/lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
NR=16
# The kill leaves the kernel to find no server until the restart.
# shellcheck disable=SC2034 # read by pass (lib.sh)
KERNEL_LOG_ALLOW='Request timed out|Unable to send log request|Userspace log server not found'

start_daemon
for m in sa sb sc sd; do
    make_legs $m $SECTORS
done
make_log sb_log 2048
zero_dev /dev/mapper/sb_log

create_mirror sa $SECTORS userspace dmulogd-rescue-sa core $REGION nosync
create_mirror sb $SECTORS userspace dmulogd-rescue-sb disk /dev/mapper/sb_log $REGION
create_mirror sc $SECTORS userspace dmulogd-rescue-sc core $REGION nosync
wait_in_sync sb 60
# sc: two writes held in flight (regions 5 and 6 stay marked).
run dmsetup suspend sc_1 >/dev/null
held=""
for r in 5 6; do
    dd if=/dev/urandom of=/dev/mapper/sc bs=512 count=8 seek=$((r * REGION)) oflag=direct 2>/dev/null &
    held="$held $!"
done
# sd: a full resync that cannot finish its first region.
run dmsetup suspend sd_1 >/dev/null
create_mirror sd $SECTORS userspace dmulogd-rescue-sd clustered-core $REGION sync

# status_ok ARGS...: the output of a successful `dm-ulogd status`.
status_ok() {
    _o=$(dm-ulogd status "$@" 2>&1)
    _rc=$?
    [ $_rc = 0 ] || fail "dm-ulogd status $* exited $_rc: $_o"
    echo "$_o"
}

# Wait until sc's two marks are in (the held writes were issued; under a
# loaded host a background dd can take seconds to start).
deadline=$(( $(now_ds) + 300 ))
until status_ok | grep -q "^log dmulogd-rescue-sc luid [0-9]*: .* 2 dirty,"; do
    [ "$(now_ds)" -lt "$deadline" ] || fail "sc never showed 2 dirty regions in 30 s (held writes:$(for p in $held; do [ -d /proc/$p ] && printf ' %s %s' "$p" "$(sed -n 's/^State:[[:space:]]*//p' /proc/$p/status)" || printf ' %s gone' "$p"; done)): $(status_ok | tr '\n' ';')"
    sleep 0.1
done

sums=$(md5sum "$DMULOGD_STATE_DIR"/log-*)
out=$(status_ok)
log "dm-ulogd status:
$out"
[ "$(state_files)" = 4 ] || fail "expected 4 state files, found $(state_files)"
echo "$out" | grep -qxF "daemon: running, pid $(daemon_pid) ($DMULOGD_PIDFILE is locked)" ||
    fail "status does not see the daemon (pid $(daemon_pid)) running: $out"
echo "$out" | grep -qxF "state directory $DMULOGD_STATE_DIR: 4 live log(s)" || fail "not 4 live logs: $out"

# One SIGUSR1 for the summary of all four logs.
daemon_summary 'dm-ulogd.*: 4 live log\(s\)' >/dev/null
for m in sa sb sc sd; do
    uuid=dmulogd-rescue-$m
    line=$(echo "$out" | grep "^log $uuid luid ")
    wait_kmsg "dm-ulogd.*: log $uuid luid [0-9]*: .* in sync" 1 10 || fail "no summary line of $uuid"
    [ -n "$line" ] || fail "status lists no log $uuid: $out"
    summary=$(dmesg | grep "dm-ulogd.*: log $uuid luid [0-9]*: .* in sync" | tail -1 |
        sed 's/.*: \(log .* dirty\), status .*/\1/')
    mine=$(echo "$line" | sed -E 's/, (no log device|log device .*)$//')
    [ "$mine" = "$summary" ] || fail "$m: status says '$mine', the SIGUSR1 summary '$summary'"
    # X/Y of dmsetup status: "X in sync" and "Y regions".
    ratio=$(sync_ratio $m)
    echo "$line" | grep -q ": [a-z-]*, ${ratio#*/} regions of $REGION sectors, ${ratio%/*} in sync, " ||
        fail "$m: status '$line' disagrees with dmsetup status $ratio"
    log "$m: '$line' = summary = dmsetup $ratio"
done
echo "$out" | grep -q "^log dmulogd-rescue-sa luid [0-9]*: core, $NR regions of $REGION sectors, $NR in sync, 0 dirty, no log device$" ||
    fail "sa: $out"
echo "$out" | grep -q "^log dmulogd-rescue-sc luid [0-9]*: core, .* 2 dirty, no log device$" || fail "sc: $out"
echo "$out" | grep -q "^log dmulogd-rescue-sd luid [0-9]*: clustered-core, $NR regions of $REGION sectors, 0 in sync, " ||
    fail "sd: $out"
dmsetup table sb | grep -q " disk 2 /dev/mapper/sb_log $REGION " || fail "sb table: $(dmsetup table sb)"
echo "$out" | grep -q "^log dmulogd-rescue-sb luid [0-9]*: disk, .*, log device /dev/mapper/sb_log$" || fail "sb: $out"

json=$(status_ok --json)
log "dm-ulogd status --json:
$json"
[ "$(echo "$json" | wc -l)" = 4 ] || fail "--json: not 4 lines"
echo "$json" | grep -q "^{\"uuid\":\"dmulogd-rescue-sb\",\"luid\":[0-9]*,\"type\":\"disk\",\"regions\":$NR,\"region_size\":$REGION,\"in_sync\":$NR,\"dirty\":0,\"log_device\":\"/dev/mapper/sb_log\",\"daemon\":\"running\",\"pid\":$(daemon_pid),\"state_file\":\"$DMULOGD_STATE_DIR/[^\"]*\"}$" ||
    fail "--json line of sb"
echo "$json" | grep -q "^{\"uuid\":\"dmulogd-rescue-sc\",.*\"dirty\":2,\"log_device\":null," || fail "--json line of sc"
[ "$(md5sum "$DMULOGD_STATE_DIR"/log-*)" = "$sums" ] || fail "a state file changed while only status read it"

# Let everything finish.
run dmsetup resume sc_1 >/dev/null
run dmsetup resume sd_1 >/dev/null
for p in $held; do wait "$p" || fail "a held write failed"; done
for m in sa sb sc sd; do
    wait_in_sync $m 60
done

# SIGKILL: the logs stay (the kernel still has them), the daemon is gone.
kill_daemon
out=$(status_ok)
log "dm-ulogd status after SIGKILL:
$out"
echo "$out" | grep -q "^daemon: not running ($DMULOGD_PIDFILE is not locked); the logs below" || fail "after the kill: $out"
echo "$out" | grep -qxF "state directory $DMULOGD_STATE_DIR: 4 live log(s)" || fail "after the kill: $out"
status_ok --json | grep -q '"daemon":"not running","pid":null,' || fail "--json after the kill"

# A new daemon takes the logs up when the kernel reconnects them.
start_daemon
for m in sa sb sc sd; do
    dmsetup status $m >/dev/null || fail "dmsetup status $m after the restart"
done
out=$(status_ok)
echo "$out" | grep -qxF "daemon: running, pid $(daemon_pid) ($DMULOGD_PIDFILE is locked)" || fail "after the restart: $out"
echo "$out" | grep -c "^log dmulogd-rescue-.*, $NR in sync, 0 dirty, " | grep -qx 4 || fail "after the restart: $out"
for m in sa sb sc sd; do
    remove_dev $m
done
out=$(status_ok)
echo "$out" | grep -qxF "state directory $DMULOGD_STATE_DIR: 0 live log(s)" || fail "after the removes: $out"
[ -z "$(status_ok --json)" ] || fail "--json printed logs after the removes"
daemon_alive || fail "dm-ulogd died"
pass

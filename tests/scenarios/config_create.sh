#!/bin/sh
# Mirrors by configuration (issue 21), in one boot: `dm-ulogd create` refused
# with one line and nothing left behind (no daemon, a name in use, a leg held
# by another mirror, a leg in use as swap, legs of different sizes, a log
# device too small, a bad option); made with --save (the table's counts as
# the kernel echoes them, /dev/mapper/NAME, the configuration line,
# `status`); `remove`; `assemble` from the configuration
# (twice: the second changes nothing; a half-made device; a late leg; a leg
# that never appears, named at the timeout; a log device whose header counts
# another number of regions, warned about before the load).
. /scenarios/lib.sh

SECTORS=16384    # 8 MiB
REGION=1024      # 16 regions
CONF=/tmp/mirrors

# expect_fail WANT CMD...: CMD exits non-zero with one stderr line containing WANT
# (a usage error adds the line "Try 'dm-ulogd --help'.").
expect_fail() {
    _want=$1
    shift
    "$@" 2>/tmp/expect.err >/dev/null
    _rc=$?
    _err=$(grep -vxF "Try 'dm-ulogd --help'." /tmp/expect.err)
    [ $_rc -ne 0 ] || fail "$* succeeded; expected a refusal with '$_want'"
    echo "$_err" | grep -qF -- "$_want" || fail "$*: '$_err', expected '$_want'"
    [ "$(echo "$_err" | wc -l)" = 1 ] || fail "$*: more than one line: $_err"
    log "refused as expected: $*: $_err"
}

# no_device NAME: no dm device NAME and no /dev/mapper/NAME.
no_device() {
    dmsetup info "$1" >/dev/null 2>&1 && fail "device $1 was left behind: $(dmsetup table "$1")"
    [ -e "/dev/mapper/$1" ] && fail "/dev/mapper/$1 was left behind"
    return 0
}

make_legs m0 $SECTORS
make_log m0_log 2048
zero_dev /dev/mapper/m0_log
L0=$(devnum m0_0)
L1=$(devnum m0_1)
LOG=$(devnum m0_log)

# --- no daemon: refused before anything is made
expect_fail "dm-ulogd is not running" dm-ulogd create m0 /dev/mapper/m0_0,/dev/mapper/m0_1 /dev/mapper/m0_log
no_device m0

start_daemon

# --- create --save
out=$(run dm-ulogd create m0 /dev/mapper/m0_0,/dev/mapper/m0_1 /dev/mapper/m0_log --save --config $CONF)
want="0 $SECTORS mirror userspace 5 dmulogd-m0 disk 2 $LOG $REGION 2 $L0 0 $L1 0"
echo "$out" | grep -qxF "created m0: $want" || fail "create printed '$out', expected 'created m0: $want'"
[ "$(dmsetup table m0)" = "$want" ] || fail "dmsetup table m0: '$(dmsetup table m0)', expected '$want'"
[ "$(dmsetup info -c --noheadings -o uuid m0)" = DMULOGD-m0 ] || fail "uuid of m0: $(dmsetup info -c --noheadings -o uuid m0)"
[ -b /dev/mapper/m0 ] || fail "no /dev/mapper/m0"
[ "$(cat $CONF)" = "m0 /dev/mapper/m0_0,/dev/mapper/m0_1 /dev/mapper/m0_log -" ] || fail "configuration: $(cat $CONF)"
wait_in_sync m0 60
st=$(run dm-ulogd status --config $CONF)
log "dm-ulogd status:
$st"
echo "$st" | grep -qxF "mirror m0: 16/16 regions in sync, disk log on $LOG (dm-ulogd), log health A, legs $L0 $L1 AA, in config" ||
    fail "status of m0: $st"
run dm-ulogd status --json --config $CONF | grep -qxF "{\"mirror\":\"m0\",\"active\":true,\"log_server\":\"userspace\",\"log_type\":\"disk\",\"log_device\":\"$LOG\",\"in_sync\":16,\"regions\":16,\"log_health\":\"A\",\"legs\":[\"$L0\",\"$L1\"],\"leg_health\":\"AA\",\"in_config\":true}" ||
    fail "status --json of m0: $(dm-ulogd status --json --config $CONF)"

# --- refusals, nothing left behind
expect_fail "exists already" dm-ulogd create m0 /dev/mapper/m0_0,/dev/mapper/m0_1 core
[ "$(dmsetup table m0)" = "$want" ] || fail "the refused duplicate changed m0: $(dmsetup table m0)"
expect_fail "has a mirror m0 already" dm-ulogd create m0 /dev/mapper/m0_0,/dev/mapper/m0_1 core --save --config $CONF
make_legs h $SECTORS
expect_fail "is held by dm-" dm-ulogd create h /dev/mapper/h_0,/dev/mapper/m0_1 core
no_device h
carve u_0 $SECTORS "$(disk_n 0)"
carve u_1 $((SECTORS + 2048)) "$(disk_n 1)"
expect_fail "legs differ in size: /dev/mapper/u_0 has $SECTORS sectors, /dev/mapper/u_1 has $((SECTORS + 2048))" \
    dm-ulogd create u /dev/mapper/u_0,/dev/mapper/u_1 core
no_device u
out=$(run dm-ulogd create u /dev/mapper/u_0,/dev/mapper/u_1 core uneven_legs)
echo "$out" | grep -q "^created u: 0 $SECTORS mirror userspace 4 dmulogd-u core 1 $REGION 2 " || fail "uneven_legs: $out"
carve tiny_log 2 "$(disk_n 0)"
expect_fail "log device /dev/mapper/tiny_log holds 1024 bytes, a log of 2048 regions needs 1536" \
    dm-ulogd create t /dev/mapper/h_0,/dev/mapper/h_1 /dev/mapper/tiny_log region_size=8
no_device t
expect_fail "unknown option \"resync\"" dm-ulogd create t /dev/mapper/h_0,/dev/mapper/h_1 core resync
# A leg in use as swap: claimed exclusively by the kernel, no holder in sysfs.
run mkswap /dev/mapper/h_1 >/dev/null
run swapon /dev/mapper/h_1 >/dev/null
expect_fail "leg /dev/mapper/h_1 ($(devnum h_1)) is in use (open exclusively" dm-ulogd create t /dev/mapper/h_0,/dev/mapper/h_1 core
no_device t
run swapoff /dev/mapper/h_1 >/dev/null
expect_fail "is not a mirror dm-ulogd made" dm-ulogd remove h_0
expect_fail "no device-mapper device is named nothere" dm-ulogd remove nothere

# --- remove
run dm-ulogd remove u >/dev/null
no_device u
run dm-ulogd remove m0 >/dev/null
no_device m0

# --- assemble: from the configuration, then again (nothing changes)
out=$(run dm-ulogd assemble --all --config $CONF)
[ "$out" = "m0: assembled ($want)" ] || fail "assemble: '$out'"
[ "$(dmsetup table m0)" = "$want" ] || fail "assembled table: $(dmsetup table m0)"
wait_in_sync m0 60
out=$(run dm-ulogd assemble --all --config $CONF)
[ "$out" = "m0: active already" ] || fail "second assemble: '$out'"

# --- a half-made device (made, no table) is made again
run dm-ulogd remove m0 >/dev/null
run dmsetup create m0 --notable -u DMULOGD-m0 >/dev/null
out=$(run dm-ulogd assemble m0 --config $CONF)
[ "$out" = "m0: assembled ($want)" ] || fail "assemble over a half-made m0: '$out'"
wait_in_sync m0 60

# --- a configuration error names the file, the line and the rule
printf 'm0 /dev/mapper/m0_0,/dev/mapper/m0_1 core\nbad /dev/x,/dev/y core sync\n' >/tmp/bad
expect_fail "/tmp/bad:2: unknown option \"sync\"" dm-ulogd assemble --all --config /tmp/bad

# --- a leg that never appears is named at the timeout; the others assemble
make_legs w $SECTORS
cat >>$CONF <<EOF
gone /dev/mapper/w_0,/dev/mapper/never core
# the log of m0 under another region count: 32 regions where its header says 16
w /dev/mapper/w_0,/dev/mapper/w_1 /dev/mapper/m0_log region_size=512
late /dev/mapper/late_0,/dev/mapper/late_1 core
EOF
run dm-ulogd remove m0 >/dev/null
dm-ulogd assemble gone --timeout 2 --config $CONF >/tmp/gone.out 2>&1 && fail "assemble of a missing leg succeeded: $(cat /tmp/gone.out)"
grep -qxF "gone: FAILED: /dev/mapper/never did not appear in time" /tmp/gone.out || fail "missing leg: $(cat /tmp/gone.out)"
no_device gone

# --- the wrong region count is said before the load
dm-ulogd assemble w --config $CONF >/tmp/w.out 2>/tmp/w.err || fail "assemble w: $(cat /tmp/w.out /tmp/w.err)"
grep -qF "warning: log device /dev/mapper/m0_log records a log of 16 regions, this mirror has 32" /tmp/w.err ||
    fail "no region count warning: $(cat /tmp/w.err)"
grep -q "^w: assembled (0 $SECTORS mirror userspace 5 dmulogd-w disk 2 $LOG 512 2 " /tmp/w.out || fail "assemble w: $(cat /tmp/w.out)"
wait_in_sync w 60
check_log_header /dev/mapper/m0_log 32
run dm-ulogd remove w >/dev/null

# --- a late leg: assemble waits for it
dm-ulogd assemble late --timeout 60 --config $CONF >/tmp/late.out 2>&1 &
late=$!
sleep 2
kill -0 $late 2>/dev/null || fail "assemble did not wait for the late legs: $(cat /tmp/late.out)"
make_legs late $SECTORS
wait $late || fail "assemble late: $(cat /tmp/late.out)"
grep -q "^late: assembled (0 $SECTORS mirror userspace 4 dmulogd-late core 1 $REGION 2 " /tmp/late.out || fail "late: $(cat /tmp/late.out)"
wait_in_sync late 60

# --- --all: one line per mirror, exit 1 for the missing leg, the rest made
dm-ulogd assemble --all --timeout 1 --config $CONF >/tmp/all.out 2>/tmp/all.err && fail "assemble --all succeeded with a missing leg"
log "assemble --all:
$(cat /tmp/all.out /tmp/all.err)"
# m0's log device last counted w's 32 regions.
[ "$(cat /tmp/all.err)" = "dm-ulogd assemble m0: warning: log device /dev/mapper/m0_log records a log of 32 regions, this mirror has 16: is it the right log device? The kernel keeps its clean bits for the first 16 regions" ] ||
    fail "assemble --all: stderr $(cat /tmp/all.err)"
[ "$(grep -c . /tmp/all.out)" = 4 ] || fail "assemble --all: not one line per mirror: $(cat /tmp/all.out)"
grep -qxF "m0: assembled ($want)" /tmp/all.out || fail "--all m0: $(cat /tmp/all.out)"
grep -qxF "late: active already" /tmp/all.out || fail "--all late: $(cat /tmp/all.out)"
grep -q "^w: FAILED: .*m0_log.* is held by dm-" /tmp/all.out || fail "--all w (its log is m0's): $(cat /tmp/all.out)"
st=$(run dm-ulogd status --config $CONF)
echo "$st" | grep -qxF "mirror gone: not active (in config)" || fail "status of gone: $st"
echo "$st" | grep -q "^mirror late: 16/16 regions in sync, core log (dm-ulogd), log health -, legs .*, in config$" || fail "status of late: $st"
for m in m0 late; do
    wait_in_sync $m 60
    compare_mirror $m
    run dm-ulogd remove $m >/dev/null
done
daemon_alive || fail "dm-ulogd died"
pass

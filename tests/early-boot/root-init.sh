#!/bin/sh
# /sbin/init of the early-boot tests' real root file system (busybox sh, PID 1),
# installed by initramfs/early-boot/make-root.sh. The root is the mirror
# "dmroot" that the initramfs assembled from its configuration line (tests/early-boot/mirrors)
# with its dirty log served by the dm-ulogd the initramfs started.
#
# Kernel command line:
#   early_boot.phase=1  first boot: the mirror resyncs from a fresh log; write
#                       data; create, use and remove a second mirror whose log
#                       device is given as major:minor; leave the log clean
#   early_boot.phase=2  second boot of the same disks: the mirror was in sync
#                       right after assembly, the data is there
# Both phases check that the dm-ulogd serving after switch_root is the one
# the initramfs started. The verdict is one console line
# "DMULOGD-RESULT: PASS" or "DMULOGD-RESULT: FAIL <reason>"; then power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export DM_DISABLE_UDEV=1
con=/dev/console
T=/run/dmulogd-test
NR=128             # regions of dmroot: 64 MiB legs, 1024-sector regions
ROOT_UUID=dmulogd-dmroot
LATE_UUID=dmulogd-early-boot-late
DENY='Request timed out|Unable to send log request|Userspace log server not found|Server error|dm-log-userspace.*(rror|ailed)|dirty region log|Call Trace|BUG:|WARNING:|Oops|hung_task|blocked for more than|EXT4-fs error'

exec <"$con" >"$con" 2>&1

phase=0
for w in $(cat /proc/cmdline); do
    case $w in early_boot.phase=*) phase=${w#*=} ;; esac
done

say() { echo "early-boot(root, phase $phase): $*"; }

poweroff_now() {
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 60
}

fail() {
    echo "early-boot(root, phase $phase): FAILED: $*"
    echo "--- dmsetup table"; dmsetup table 2>&1
    echo "--- dmsetup status"; dmsetup status 2>&1
    echo "--- processes"; ps 2>&1
    echo "--- dm-ulogd in the kernel log"; dmesg | grep 'dm-ulogd' | tail -40
    echo "--- kernel log (last 40 lines)"; dmesg | tail -40
    printf '\nDMULOGD-RESULT: FAIL phase %s: %s\n' "$phase" "$*"
    poweroff_now
}

# Guest-side watchdog: a hang becomes a FAIL line well before the host's timeout.
( sleep 240; fail "watchdog: still running after 240 s" ) &
watchdog=$!

mount -t tmpfs tmpfs /tmp
# The initramfs moved these; mount them only if it did not.
grep -q ' /proc ' /proc/mounts 2>/dev/null || mount -t proc proc /proc
grep -q ' /sys ' /proc/mounts || mount -t sysfs sysfs /sys
grep -q ' /run ' /proc/mounts || fail "/run was not moved from the initramfs"
grep -q ' /dev ' /proc/mounts || fail "/dev was not moved from the initramfs"
case $phase in 1 | 2) ;; *) fail "no early_boot.phase=1|2 on the kernel command line" ;; esac
builder=$(cat $T/builder 2>/dev/null) || fail "no $T/builder: the initramfs did not assemble the root"
say "switch_root done ($builder initramfs); uptime $(cut -d' ' -f1 /proc/uptime) s"

# ---------------------------------------------------------------- helpers

# sync_counts DEV: "in_sync total" from `dmsetup status` (mirror: ... N/M ...).
sync_counts() {
    dmsetup status "$1" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); print a[1], a[2]; exit } }'
}

# wait_in_sync DEV SECONDS
wait_in_sync() {
    n=0
    while :; do
        # shellcheck disable=SC2046 # "in_sync total": two words
        set -- "$1" "$2" $(sync_counts "$1")
        [ -n "${3:-}" ] || fail "no sync counts in 'dmsetup status $1': $(dmsetup status "$1")"
        [ "$3" = "$4" ] && return 0
        [ $n -lt $(($2 * 10)) ] || fail "$1 not in sync after $2 s: $(dmsetup status "$1")"
        sleep 0.1
        n=$((n + 1))
    done
}

devnum() { dmsetup info -c --noheadings -o major,minor "$1" | tr -d ' '; }

# bytes DEV OFFSET COUNT: hex bytes read with O_DIRECT (not through the page cache).
bytes() {
    dd if="$1" iflag=direct bs=1M count=1 2>/dev/null | od -An -tx1 -v -j "$2" -N "$3" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
}

# log_clean_bits DEV NR: number of 1 bits among the first NR clean bits on disk.
log_clean_bits() {
    dd if="$1" iflag=direct bs=1M count=1 2>/dev/null | od -An -tu1 -v -j 1024 -N $((($2 + 7) / 8)) |
        awk -v nr="$2" '{ for (i = 1; i <= NF; i++) { b = $i; for (k = 0; k < 8; k++) { if (n < nr && b % 2 == 1) c++; b = int(b / 2); n++ } } } END { print c + 0 }'
}

# check_log_header DEV NR: the kernel's disk-log header (magic 0x4D695272 LE, version 2, nr_regions).
check_log_header() {
    h=$(bytes "$1" 0 16)
    nr_hex=$(printf '%02x 00 00 00 00 00 00 00' "$2")
    [ "$h" = "72 52 69 4d 02 00 00 00 $nr_hex" ] || fail "log header on $1 is '$h', expected magic, version 2, $2 regions"
}

check_kernel_log() {
    bad=$(dmesg | grep -E "$DENY" | head -3)
    [ -z "$bad" ] || fail "kernel log: $bad"
}

# ---------------------------------------------------------------- the root is the mirror

root_dev=$(awk '$5 == "/" { print $3 }' /proc/self/mountinfo | tail -n 1)
[ "$root_dev" = "$(devnum dmroot)" ] || fail "/ is on $root_dev, not on dmroot ($(devnum dmroot))"
grep -q ' / ext4 rw' /proc/mounts || fail "/ is not mounted read-write: $(grep ' / ' /proc/mounts)"
table=$(dmsetup table dmroot)
case $table in
*"mirror userspace 5 $ROOT_UUID disk 2 "*) ;;
*) fail "dmroot table is '$table'" ;;
esac
say "/ is dmroot ($root_dev): $table"

# ---------------------------------------------------------------- the daemon

pid=$(cat /run/dm-ulogd.pid 2>/dev/null) || fail "no /run/dm-ulogd.pid after switch_root"
pid0=$(cat $T/daemon-pid) || fail "no $T/daemon-pid"
[ "$pid" = "$pid0" ] || fail "dm-ulogd pid is $pid after switch_root, $pid0 in the initramfs"
[ -d /proc/"$pid" ] || fail "dm-ulogd (pid $pid) is gone after switch_root"
argv0=$(tr '\0' '\n' </proc/"$pid"/cmdline | head -n 1)
[ "$argv0" = "@dm-ulogd" ] || fail "dm-ulogd argv[0] is '$argv0', not '@dm-ulogd'"
# No other dm-ulogd anywhere (there is no binary in this root to start one).
others=""
for p in /proc/[0-9]*; do
    q=${p#/proc/}
    [ "$q" = "$pid" ] && continue
    case $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) in *dm-ulogd*) others="$others $q" ;; esac
done
[ -z "$others" ] || fail "other dm-ulogd processes:$others"
[ ! -e /sbin/dm-ulogd ] && [ ! -e /usr/sbin/dm-ulogd ] || fail "the real root has a dm-ulogd binary; it must not"
exe=$(readlink /proc/"$pid"/exe)
comm=$(cat /proc/"$pid"/comm)
lck=$(awk '/^VmLck:/ { print $2 }' /proc/"$pid"/status)
oom=$(cat /proc/"$pid"/oom_score_adj)
[ "$comm" = dm-ulogd ] || fail "dm-ulogd comm is '$comm' (argv[0] alone should change)"
[ "${lck:-0}" -gt 0 ] || fail "dm-ulogd has no locked memory (VmLck ${lck:-?} kB)"
[ "$oom" = -1000 ] || fail "dm-ulogd oom_score_adj is $oom"
say "dm-ulogd pid $pid (same as in the initramfs), argv[0] '$argv0', comm '$comm', exe '$exe', VmLck $lck kB, oom_score_adj $oom"
if [ "$builder" = initramfs-tools ]; then
    [ "$(cat /run/sendsigs.omit.d/dm-ulogd.pid 2>/dev/null)" = "$pid" ] ||
        fail "/run/sendsigs.omit.d/dm-ulogd.pid does not hold $pid"
else
    # systemd's killing spree at switch_root took every other initrd process
    # (udevd, journald, ...) and spared "@dm-ulogd".
    left=""
    for p in /proc/[0-9]*; do
        case $(cat "$p/comm" 2>/dev/null) in systemd* | *udevd* | dbus*) left="$left ${p#/proc/}:$(cat "$p/comm")" ;; esac
    done
    [ -z "$left" ] || fail "initrd processes survived switch_root:$left"
    # shellcheck disable=SC2046 # four words
    set -- $(cat $T/units 2>/dev/null)
    [ $# -eq 4 ] || fail "no unit times from the initrd ($T/units)"
    [ "$1" -gt 0 ] && [ "$2" -gt 0 ] && [ "$1" -lt "$2" ] ||
        fail "dm-ulogd-initrd.service active at $1 us, not before udev coldplug at $2 us"
    [ "$3" = exec-condition ] && [ "$4" = inactive ] ||
        fail "host unit dm-ulogd.service in the initrd: $4 ($3), expected skipped by its ExecCondition (exec-condition)"
    say "initrd: dm-ulogd active at $1 us < udev coldplug at $2 us; host unit skipped ($3); no initrd process but dm-ulogd survived switch_root"
fi

# ---------------------------------------------------------------- the root mirror's sync

# What the initramfs saw: the log device before assembly, the sync count right after.
before=$(cat $T/log-before) || fail "no $T/log-before"
# shellcheck disable=SC2086 # 17 words
set -- $before
clean_before=${17}
header_before="$1 $2 $3 $4 $5 $6 $7 $8 $9 ${10} ${11} ${12} ${13} ${14} ${15} ${16}"
at=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { print $i; exit } }' $T/assembly-status)
say "dmroot in the initramfs: log device had $clean_before/$NR clean regions before assembly; $at in sync right after"
nr_hex=$(printf '%02x 00 00 00 00 00 00 00' $NR)
case $phase in
1)
    # A zeroed log device: no header, every region to resync.
    [ "$header_before" = "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00" ] ||
        fail "first boot: log device header was '$header_before', expected zeros"
    [ "${at#*/}" = $NR ] || fail "region count ${at#*/}, expected $NR"
    ;;
2)
    [ "$header_before" = "72 52 69 4d 02 00 00 00 $nr_hex" ] ||
        fail "second boot: log header before assembly was '$header_before'"
    [ "$clean_before" = $NR ] || fail "second boot: only $clean_before/$NR regions clean on the log device"
    [ "$at" = "$NR/$NR" ] || fail "second boot: $at in sync right after assembly, expected $NR/$NR (no resync)"
    ;;
esac
wait_in_sync dmroot 120
say "dmroot in sync: $(dmsetup status dmroot)"

# ---------------------------------------------------------------- data on the root

if [ "$phase" = 1 ]; then
    dd if=/dev/urandom of=/data/payload bs=64k count=64 2>/dev/null || fail "cannot write /data/payload"
    (cd /data && sha256sum payload >payload.sha256) || fail "cannot checksum /data/payload"
    sync
    say "wrote /data/payload (4 MiB): $(cut -d' ' -f1 /data/payload.sha256)"
else
    [ -f /data/payload.sha256 ] || fail "/data/payload.sha256 from the first boot is missing"
    (cd /data && sha256sum -c payload.sha256 >/dev/null 2>&1) || fail "/data/payload does not match its checksum"
    say "/data/payload from the first boot is intact: $(cut -d' ' -f1 /data/payload.sha256)"
fi

# ---------------------------------------------------------------- a new mirror after switch_root

if [ "$phase" = 1 ]; then
    dmsetup create late_log --table "0 2048 linear /dev/vdd 0" || fail "create late_log"
    dmsetup create late_a --table "0 16384 linear /dev/vdd 2048" || fail "create late_a"
    dmsetup create late_b --table "0 16384 linear /dev/vdd 18432" || fail "create late_b"
    logdev=$(devnum late_log)
    # The log device by major:minor: dm-ulogd makes its own node for it in
    # its state directory, through the directory descriptor it opened in the
    # initramfs (its /run/dm-ulogd path is the moved /run now).
    late_table="0 16384 mirror userspace 5 $LATE_UUID disk 2 $logdev 1024 2 /dev/mapper/late_a 0 /dev/mapper/late_b 0"
    dmsetup create late --table "$late_table" 2>/tmp/late.err ||
        fail "create late ($late_table): $(grep -v "Udev is running" /tmp/late.err)"
    wait_in_sync late 60
    st=$(dmsetup status late)
    case $st in
    *"3 disk $logdev A"*) ;;
    *) fail "late mirror status '$st' lacks the log status '3 disk $logdev A'" ;;
    esac
    say "late mirror (log device $logdev) in sync: $st"
    dd if=/dev/urandom of=/tmp/pattern bs=64k count=128 2>/dev/null
    dd if=/tmp/pattern of=/dev/mapper/late bs=64k oflag=direct 2>/dev/null || fail "write to late failed"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    for leg in late_a late_b; do
        cmp /tmp/pattern /dev/mapper/$leg >/dev/null 2>&1 || fail "leg $leg does not hold what was written to the late mirror"
    done
    cmp /tmp/pattern /dev/mapper/late >/dev/null 2>&1 || fail "late mirror reads back wrong data"
    dmesg | grep "dm-ulogd\[$pid\]" | grep -q "log $LATE_UUID created" ||
        fail "the kernel log has no 'log $LATE_UUID created' line from dm-ulogd[$pid]"
    dmsetup remove late || fail "remove late"
    check_log_header /dev/mapper/late_log 16
    say "late mirror: both legs hold the data; log header on $logdev written by dm-ulogd[$pid]; removed"
    dmsetup remove late_a && dmsetup remove late_b && dmsetup remove late_log || fail "remove late legs"
fi

# ---------------------------------------------------------------- clean shutdown

check_kernel_log
mount -o remount,ro / || fail "cannot remount / read-only"
sync
# Every region clean on the log device before power goes: the next boot then
# finds the mirror in sync. dm-raid1 clears a region (and dm-ulogd writes the
# bitmap) once its writes completed; after the read-only remount none is left.
n=0
while :; do
    c=$(log_clean_bits /dev/vdc $NR)
    [ "$c" = $NR ] && break
    [ $n -lt 300 ] || fail "only $c/$NR regions clean on /dev/vdc 30 s after the read-only remount"
    sleep 0.1
    n=$((n + 1))
done
check_log_header /dev/vdc $NR
say "root log on /dev/vdc: header ok, $NR/$NR regions clean; powering off"
[ -d /proc/"$pid" ] || fail "dm-ulogd died"
kill "$watchdog" 2>/dev/null
printf '\nDMULOGD-RESULT: PASS\n'
poweroff_now

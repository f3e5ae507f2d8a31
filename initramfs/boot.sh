#!/bin/sh
# boot.sh IMAGE SCENARIO [DISK.img ...]
#
# Boots Debian's kernel for DMULOGD_ARCH (fetch-kernel.sh) in qemu TCG with the
# initramfs IMAGE (build-image.sh, same DMULOGD_ARCH) and runs
# /scenarios/SCENARIO.sh inside; each DISK is a raw virtio disk (/dev/vda,
# /dev/vdb, ...). The console (ttyS0; ttyAMA0 on aarch64, ttysclp0 on s390x)
# is stdout.
# SCENARIO "shell" gives an interactive busybox shell on the console.
#
# Exit status: 0 iff the console showed "DMULOGD-RESULT: PASS"; 124 on timeout;
# 1 otherwise.
#
# Environment:
#   DMULOGD_ARCH   x86_64 (default) or i686: qemu-system-x86_64 -cpu max;
#                  aarch64: qemu-system-aarch64 -M virt, virtio-blk-pci disks;
#                  s390x: qemu-system-s390x -M s390-ccw-virtio, virtio-blk-ccw
#   BOOT_TIMEOUT   seconds before qemu is killed (default 600); the guest's own
#                  watchdog fires 20 s earlier and dumps its state
#   BOOT_MEM       guest memory (default 512M)
#   BOOT_SMP       guest CPUs (default 1; 2 on s390x, see below)
#   BOOT_APPEND    extra kernel command line words
#   BOOT_KERNEL    vmlinuz to boot (default: fetch-kernel.sh)
#   QEMU           qemu binary (default: the architecture's, above)
#   BOOT_DRIVES    more disks after the DISK arguments: whitespace-separated
#                  qemu -drive values, e.g. an NBD server's
#                  file=nbd:unix:/s.sock,format=raw,if=virtio,cache=writeback
#   BOOT_PIDFILE   qemu writes its pid there (-pidfile), e.g. to kill it
#   BOOT_ICOUNT    N: run with `-icount shift=N,sleep=on`: the guest's clock
#                  counts instructions, 2^N ns each, so what the guest times
#                  does not depend on the host's load (BENCHMARKS.md
#                  section 5, tests/scenarios/bench_pair.sh); idle time
#                  still passes in real time
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 IMAGE SCENARIO [DISK.img ...]" >&2
    exit 2
fi
image=$1
scenario=$2
shift 2

here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${BOOT_TIMEOUT:-600}
mem=${BOOT_MEM:-512M}
arch=${DMULOGD_ARCH:-x86_64}
# Per architecture: qemu, its machine, the console device, the disk device
# ("" for if=virtio).
case $arch in
    x86_64 | i686) qemu_arch=x86_64 machine="-accel tcg -cpu max" console=ttyS0 disk_dev="" ;;
    # pauth-impdef: pointer authentication with QEMU's cheap hash, not the
    # architected QARMA that costs TCG dearly.
    aarch64) qemu_arch=aarch64 machine="-M virt -accel tcg -cpu max,pauth-impdef=on" console=ttyAMA0 disk_dev=virtio-blk-pci ;;
    # Two vCPUs: with one, qemu's TCG translates the guest's atomic
    # instructions as plain loads and stores (CF_PARALLEL is set only when
    # the machine may have several vCPUs), while the disks' completions set
    # virtio-ccw adapter indicator bits in guest memory from another host
    # thread; a bit the guest's read-and-clear overwrote is an interrupt
    # lost, and with virtio's event index no later completion raises one:
    # the disk's requests never complete. With one vCPU kill_core hung so
    # in 2 of 13 runs in one loop (1 in 13 boots of the core set before,
    # once in CI), with two in 0 of 23 (docs/architectures.md).
    s390x) qemu_arch=s390x machine="-M s390-ccw-virtio -accel tcg -cpu max" console=ttysclp0 disk_dev=virtio-blk-ccw default_smp=2 ;;
    *) echo "boot.sh: unknown DMULOGD_ARCH $arch (x86_64, i686, aarch64, s390x)" >&2; exit 2 ;;
esac
smp=${BOOT_SMP:-${default_smp:-1}}
export DMULOGD_ARCH=$arch
qemu=${QEMU:-qemu-system-$qemu_arch}
kernel=${BOOT_KERNEL:-}
if [ -z "$kernel" ]; then
    kernel=$("$here/fetch-kernel.sh") || { echo "boot.sh: fetch-kernel.sh failed" >&2; exit 1; }
fi
[ -f "$image" ] || { echo "boot.sh: no image $image" >&2; exit 1; }

n=0
for d in "$@"; do
    [ -f "$d" ] || [ -b "$d" ] || { echo "boot.sh: no disk $d" >&2; exit 1; }
    n=$((n + 1))
done
for d in ${BOOT_DRIVES:-}; do
    n=$((n + 1))
done

gtimeout=0
if [ "$timeout_s" -gt 60 ]; then
    gtimeout=$((timeout_s - 20))
fi

# log_buf_len: the scenarios count kernel log lines (dm-ulogd's summaries,
# reconnects); the default ring of 128 KiB wraps within a long benchmark.
append="console=$console rdinit=/init panic=-1 quiet loglevel=4 log_buf_len=8M dmulogd.scenario=$scenario dmulogd.disks=$n dmulogd.timeout=$gtimeout ${BOOT_APPEND:-}"

# Build the argument list in "$@" (POSIX sh has no arrays).
i=0
for d in "$@"; do
    if [ -z "$disk_dev" ]; then
        set -- "$@" -drive "file=$d,format=raw,if=virtio,cache=unsafe"
    else
        set -- "$@" -drive "file=$d,format=raw,if=none,id=disk$i,cache=unsafe" -device "$disk_dev,drive=disk$i"
    fi
    i=$((i + 1))
    shift
done
for d in ${BOOT_DRIVES:-}; do
    set -- "$@" -drive "$d"
done
if [ -n "${BOOT_PIDFILE:-}" ]; then
    set -- "$@" -pidfile "$BOOT_PIDFILE"
fi
if [ -n "${BOOT_ICOUNT:-}" ]; then
    set -- "$@" -icount "shift=$BOOT_ICOUNT,sleep=on"
fi

log=$(mktemp "${TMPDIR:-/tmp}/dmulogd-console.XXXXXX")
trap 'rm -f "$log"' EXIT

if [ "$scenario" = shell ] && [ -t 0 ]; then
    # Interactive: no timeout, console on the terminal.
    # shellcheck disable=SC2086 # $machine is several words
    exec "$qemu" $machine -m "$mem" -smp "$smp" -nographic -nic none -no-reboot \
        -kernel "$kernel" -initrd "$image" -append "$append" "$@"
fi

# stdin from /dev/null so that a non-interactive run never waits on the
# terminal; SeaBIOS's terminal escapes (it resets and clears the screen) and
# carriage returns are filtered out of the console text.
# shellcheck disable=SC2086 # $machine is several words
timeout -k 10 "$timeout_s" "$qemu" $machine -m "$mem" -smp "$smp" \
    -nographic -nic none -no-reboot -kernel "$kernel" -initrd "$image" -append "$append" \
    "$@" </dev/null 2>&1 |
    sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[a-zA-Z]//g' -e 's/\r$//' | tee "$log"
rc=0
# POSIX sh cannot see the pipeline's first status; the console tells.
if tr -d '\r' <"$log" | grep -q '^DMULOGD-RESULT: PASS$'; then
    rc=0
elif tr -d '\r' <"$log" | grep -q '^DMULOGD-RESULT: FAIL'; then
    rc=1
else
    echo "boot.sh: no DMULOGD-RESULT line on the console (timeout ${timeout_s}s or guest crash)" >&2
    rc=124
fi
exit $rc

#!/bin/sh
# demo.sh: see dm-ulogd serve a real dm-mirror's dirty log, in about a minute.
#
# Sets the host up (setup-host.sh, needs root on Debian 12), builds the release
# binary, fetches Debian's cloud kernel, builds the test initramfs and boots it
# in qemu on the `demo` scenario (tests/scenarios/demo.sh): dm-ulogd starts,
# `dm-ulogd create` makes a 256 MiB mirror with a disk log (and saves its
# line in the configuration file), the mirror resyncs while it takes writes,
# `dm-ulogd status --wait` shows the progress until it is in sync, then
# `dm-ulogd status` and `dm-ulogd remove`.
# Exit status 0 iff the guest reports PASS.
#
# Environment: BOOT_TIMEOUT (default 300), DMULOGD_DEMO_DIR (work directory,
# default initramfs/cache/demo), SKIP_SETUP=1 to skip setup-host.sh.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=${DMULOGD_DEMO_DIR:-$here/cache/demo}

step() { printf '\n==> %s\n' "$*"; }

if [ "${SKIP_SETUP:-0}" != 1 ]; then
    step "host set-up (setup-host.sh)"
    "$here/setup-host.sh"
fi

step "cargo build --release"
(cd "$repo" && cargo build --release)
bin=$repo/target/x86_64-unknown-linux-musl/release/dm-ulogd
[ -x "$bin" ] || { echo "demo.sh: no binary at $bin" >&2; exit 1; }

step "kernel (fetch-kernel.sh)"
"$here/fetch-kernel.sh"

mkdir -p "$work"
step "initramfs (build-image.sh)"
"$here/build-image.sh" "$work/demo.cpio.gz" "$bin"

rm -f "$work/disk0.img" "$work/disk1.img"
truncate -s 4G "$work/disk0.img" "$work/disk1.img"

step "booting the guest (qemu TCG): scenario demo"
export BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
if "$here/boot.sh" "$work/demo.cpio.gz" demo "$work/disk0.img" "$work/disk1.img"; then
    rm -f "$work/disk0.img" "$work/disk1.img"
    step "demo passed"
else
    rc=$?
    step "demo FAILED (boot.sh exit status $rc)"
    exit "$rc"
fi

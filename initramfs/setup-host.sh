#!/bin/sh
# Host set-up for the real-kernel harness on a fresh Debian 12 machine, as root.
# Idempotent and quiet when everything is already there.
#
# Installs: qemu (TCG guest), busybox-static (the guest's userland), dmsetup and
# fio (copied into the guest with their shared libraries), cpio/gzip (image),
# kmod/xz-utils/zstd (module inspection and decompression), nbdkit (the
XX
# and lintian (make install, the Debian package and its check), and the Rust
# musl target that dm-ulogd is built for; then setup-arch.sh for the other
# architectures (aarch64, i686, s390x: tests/arch.rs).
set -eu

PKGS="qemu-system-x86 busybox-static dmsetup fio cpio gzip kmod xz-utils zstd nbdkit nbd-client make dpkg-dev lintian"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-host.sh: need root to install:$missing" >&2
        exit 1
    fi
    echo "setup-host.sh: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The musl target (dm-ulogd is a static musl binary, see .cargo/config.toml).
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        echo "setup-host.sh: adding rust target x86_64-unknown-linux-musl" >&2
        rustup target add x86_64-unknown-linux-musl >/dev/null
    fi
elif [ -x "$HOME/.cargo/bin/rustup" ]; then
    if ! "$HOME/.cargo/bin/rustup" target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        "$HOME/.cargo/bin/rustup" target add x86_64-unknown-linux-musl >/dev/null
    fi
else
    echo "setup-host.sh: warning: rustup not found; add the x86_64-unknown-linux-musl target yourself" >&2
fi

# The other architectures: aarch64, i686, s390x (tests/arch.rs).
sh "$(dirname "$0")/setup-arch.sh"

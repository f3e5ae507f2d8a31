#!/bin/sh
# build-arch.sh ARCH: build the static dm-ulogd for ARCH and print its path.
#
#   x86_64   x86_64-unknown-linux-musl   (the default `cargo build --release`)
#   i686     i686-unknown-linux-musl     (rust-lld, Rust's own musl)
#   aarch64  aarch64-unknown-linux-musl  (rust-lld, Rust's own musl)
#   s390x    s390x-unknown-linux-gnu     (static glibc: Rust serves no musl
#                                        std for s390x; Debian's cross gcc links)
#
# The linkers and flags are in .cargo/config.toml; the host set-up (Rust
# targets, the s390x cross gcc) is initramfs/setup-arch.sh. Fails unless the
# result is a static executable for ARCH. Environment: CARGO (default cargo),
# CARGO_TARGET_DIR (default target/).
set -eu

[ $# -eq 1 ] || { echo "usage: $0 x86_64|i686|aarch64|s390x" >&2; exit 2; }
case $1 in
    x86_64) target=x86_64-unknown-linux-musl machine="Advanced Micro Devices X86-64" ;;
    i686) target=i686-unknown-linux-musl machine="Intel 80386" ;;
    aarch64) target=aarch64-unknown-linux-musl machine="AArch64" ;;
    s390x) target=s390x-unknown-linux-gnu machine="IBM S/390" ;;
    *) echo "build-arch.sh: unknown architecture $1 (x86_64, i686, aarch64, s390x)" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
"${CARGO:-cargo}" build --release --target "$target" >&2 || {
    echo "build-arch.sh: cargo build --release --target $target failed (host set-up: sh initramfs/setup-arch.sh)" >&2
    exit 1
}
bin=${CARGO_TARGET_DIR:-$repo/target}/$target/release/dm-ulogd
got=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
[ "$got" = "$machine" ] || { echo "build-arch.sh: $bin is for '$got', not $1" >&2; exit 1; }
if readelf -l "$bin" | grep -q 'program interpreter'; then
    echo "build-arch.sh: $bin is dynamically linked" >&2
    exit 1
fi
echo "$bin"

#!/bin/sh
# Every test of dm-ulogd: formatting and lints, unit and protocol tests, the
# fuzz corpus, and the real-kernel tests that boot Debian's kernel in qemu.
# Run as root on Debian 12 with the Rust toolchain; installs what it needs.
set -eu
cd "$(dirname "$0")/.."

sh initramfs/setup-host.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --release --all-targets -- -D warnings
echo "==> cargo build --release"
cargo build --release
echo "==> cargo test --release (unit, protocol, real-kernel)"
cargo test --release

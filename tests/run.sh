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
cargo test --release --no-run
# The Debian kernels (12's 6.1; 11's 5.10 and 13's 6.12 for tests/kernels.rs),
# fetched once before any test builds an image with them.
for k in bookworm bullseye trixie; do
    DMULOGD_KERNEL=$k sh initramfs/fetch-kernel.sh >/dev/null
done
# power_cut and bench_smoke boot one guest at a time: they run side by side,
# one per core (power_cut's output follows when both are done). Every other
# test program keeps both cores busy and runs alone, one after another.
pair="power_cut bench_smoke"
rest=""
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    case " $pair " in *" $t "*) ;; *) rest="$rest --test $t" ;; esac
done
pc_log=$(mktemp)
cargo test --release --test power_cut >"$pc_log" 2>&1 &
pc=$!
rc=0
cargo test --release --test bench_smoke || rc=$?
wait $pc || rc=$?
cat "$pc_log"
rm -f "$pc_log"
[ $rc -eq 0 ] || exit $rc
# shellcheck disable=SC2086
cargo test --release --lib --bins $rest

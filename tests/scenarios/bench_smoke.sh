#!/bin/sh
# The benchmark's smoke run (tests/bench_smoke.rs, initramfs/bench.sh --smoke):
# bench.sh with 2-second fio runs, one round and no warm-up. Checks that every
# configuration runs and reports, never how fast.
BENCH_MODE=smoke
. /scenarios/bench.sh

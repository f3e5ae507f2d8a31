#!/bin/sh
# The benchmark's smoke run (tests/bench_smoke.rs, initramfs/bench.sh --smoke):
# bench.sh with 1-second fio runs, one round, 4 mirrors at once and no warm-up.
# Checks that every configuration runs and reports, never how fast.
BENCH_MODE=smoke
. /scenarios/bench.sh

#!/bin/sh
# profile.sh [N]: instruction counts of the request handler, per request, with
# valgrind's callgrind (repeatable on a noisy machine, unlike timings).
#
# Builds the handler micro benchmark (tests/bench/handler.rs) with symbols
# and line tables in a separate target directory (the release profile strips),
# runs N requests (default 100000) of each case under
# `valgrind --tool=callgrind --toggle-collect='*hot_loop*'` (only the measured
# loop counts), and prints for each case the instructions per request and
# where they go, grouped by source file (inlined code is attributed to the
# file it comes from, through the line tables).
# Needs valgrind (apt-get install valgrind). Output files: $PROFILE_DIR
# (default /tmp/dm-ulogd-profile), one callgrind.<case>.out per case, for
# callgrind_annotate or kcachegrind.
set -eu
n=${1:-100000}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
out=${PROFILE_DIR:-/tmp/dm-ulogd-profile}
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "profile.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }

exe=$(cd "$repo" && CARGO_TARGET_DIR=$out/target CARGO_PROFILE_BENCH_STRIP=false \
    CARGO_PROFILE_BENCH_DEBUG=line-tables-only \
    cargo bench --bench handler --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "profile.sh: could not build the benchmark" >&2; exit 1; }

profile() { # CASE LOGS
    f=$out/callgrind.$(echo "$1 $2" | tr -c 'a-z0-9\n' '_').out
    valgrind --tool=callgrind --toggle-collect='*hot_loop*' --callgrind-out-file="$f" \
        "$exe" --only "$1" --iters "$n" --logs "$2" >/dev/null 2>&1
    printf '\n== %s (%s log%s)\n' "$1" "$2" "$([ "$2" = 1 ] || echo s)"
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$f" 2>/dev/null | awk -v n="$n" '
        /PROGRAM TOTALS/ { v = $1; gsub(",", "", v); printf "%8.0f instructions per request\n", v / n; next }
        /^ *[0-9,]+ \( *[0-9.]+%\)  / {
            v = $1; gsub(",", "", v); s = $0
            sub(/^ *[0-9,]+ \( *[0-9.]+%\)  /, "", s); sub(/:.*/, "", s)
            sub(/.*\/src_musl\//, "musl ", s); sub(/.*\/library\//, "std ", s); sub(/^\/work\/[^\/]*\//, "", s)
            t[s] += v }
        END { for (k in t) if (t[k] / n >= 1) printf "%8.0f  %s\n", t[k] / n, k }' | sort -k1,1nr | head -14
}

for c in "mark_region x1" "mark_region x32" "clear_region x1" "in_sync" "is_clean" "flush (core)"; do
    profile "$c" 1
done
profile "mark_region x1" 64
profile "in_sync" 64

#!/bin/sh
# bench.sh [--smoke] [--out FILE] [--binary PATH] [--responder PATH] [--no-micro]
#          [--report CONSOLE]
#
# The dm-ulogd benchmark, in one command. Like demo.sh it sets the host up,
# builds the release binary, fetches Debian's cloud kernel and builds the test
# initramfs, then boots qemu (TCG) ONCE on the `bench` scenario
# (tests/scenarios/bench.sh). In that single guest run, for the same mirror
# geometry, it measures side by side the kernel's `core` and `disk` logs,
# dm-ulogd core, dm-ulogd disk and dm-ulogd disk with integrated_flush, and a
# do-nothing responder (tests/bench/responder.rs, `null`: the floor the
# kernel's round trips impose on any userspace log):
#   - fio 4 KiB random direct writes at queue depth 1 and 16 (IOPS, p99
#     completion latency), 1 MiB sequential direct writes (MiB/s) and 4 KiB
#     sequential direct writes at queue depth 1 (IOPS: a journal), on a
#     small mirror (16,384 regions, 8 GiB) and a large one (16,777,216
#     regions, 8 TiB), all created `nosync`, whose legs are two whole virtio
#     disks (sparse 8 TiB images) and whose log devices are on a third;
#   - 16 disk-log mirrors under 4 KiB random writes at once (kernel disk,
#     dm-ulogd disk, dm-ulogd disk + integrated_flush): aggregate IOPS and
#     p99 latency;
#   - the time of a full resync of a 4,096-region mirror (kernel core log and
#     dm-ulogd core; the only mirrors created without nosync);
#   - dm-ulogd's CPU time per request (/proc/PID/schedstat over each run,
#     divided by the requests its SIGUSR1 summary counted) and its VmRSS.
# Then, on the host, the request handler's micro benchmark
# (`cargo bench --bench handler`, no system calls).
# The guest prints "BENCH ..." lines; this script turns them into a table with
# ratios against the kernel's logs (dm-ulogd core vs kernel core; dm-ulogd disk
# and disk+integrated_flush vs kernel disk), prints it and writes it to FILE.
#
# Options:
#   --smoke          short and small (CI): 1 s fio runs, one round, no warm-up,
#                    4 mirrors at once instead of 16,
#                    no micro benchmark (tests/bench_smoke.rs runs it in-process)
#   --out FILE       where the table goes (default: WORK/bench-full.md or
#                    WORK/bench-smoke.md); the raw lines go next to it (.raw)
#   --binary PATH    use this dm-ulogd binary, do not run cargo build
#   --responder PATH the null responder to embed (default: built with
#                    `cargo build --release --example null_responder` unless
#                    --binary is given; without one there is no `null` row)
#   --no-micro       skip the micro benchmark
#   --report CONSOLE only format the table from a saved console log
# Environment: SKIP_SETUP=1 skips setup-host.sh; DMULOGD_BENCH_DIR is the work
# directory (default initramfs/cache/bench); DMULOGD_BENCH_DISKS the directory
# of the sparse disk images (default: a directory in /dev/shm when it has
# 10 GiB free, else the work directory; two sparse 8 TiB leg images and a
# 64 MiB log image, of which the full run writes ~6 GB; removed after the
# run); BENCH_RUNTIME and
# BENCH_ROUNDS override the seconds per fio run and the rounds (full: 6 s, 5;
# smoke: 1 s, 1);
# BOOT_TIMEOUT (default: 3600 full, 600 smoke).
# Exit status: 0 when the guest passed and every configuration reported.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=${DMULOGD_BENCH_DIR:-$here/cache/bench}

mode=full
out=""
bin=""
responder=""
report=""
micro=1
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) mode=smoke ;;
        --out) out=$2; shift ;;
        --binary) bin=$2; shift ;;
        --responder) responder=$2; shift ;;
        --no-micro) micro=0 ;;
        --report) report=$2; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$mode" = smoke ] && micro=0
[ -n "$out" ] || out=$work/bench-$mode.md
mkdir -p "$work" "$(dirname "$out")"

step() { printf '\n==> %s\n' "$*" >&2; }

console=$work/console-$mode.log
handler=$work/handler-$mode.txt
hostinfo=$work/host-$mode.txt

if [ -n "$report" ]; then
    console=$report
    [ -f "$handler" ] || handler=/dev/null
    [ -f "$hostinfo" ] || hostinfo=/dev/null
else
    if [ "${SKIP_SETUP:-0}" != 1 ]; then
        step "host set-up (setup-host.sh)"
        "$here/setup-host.sh" >&2
    fi
    if [ -z "$bin" ]; then
        step "cargo build --release (dm-ulogd and the null responder)"
        (cd "$repo" && cargo build --release >&2 && cargo build --release --example null_responder >&2)
        bin=$repo/target/x86_64-unknown-linux-musl/release/dm-ulogd
        [ -n "$responder" ] || responder=$repo/target/x86_64-unknown-linux-musl/release/examples/null_responder
    fi
    [ -x "$bin" ] || { echo "bench.sh: no binary at $bin" >&2; exit 1; }
    [ -z "$responder" ] || [ -x "$responder" ] || { echo "bench.sh: no null responder at $responder" >&2; exit 1; }

    step "kernel (fetch-kernel.sh)"
    "$here/fetch-kernel.sh" >&2
    step "initramfs (build-image.sh)"
    # The scenarios, plus the null responder wrapped in a .sh file (a 3-line
    # header the guest strips), since the image takes scenario files only.
    scen=$(mktemp -d "${TMPDIR:-/tmp}/dmulogd-bench-scenarios.XXXXXX")
    cp "$repo"/tests/scenarios/*.sh "$scen/"
    if [ -n "$responder" ]; then
        {
            printf '#!/bin/sh\n# Not a scenario: the null responder (tests/bench/responder.rs) follows; bench.sh extracts it.\nexit 0\n'
            cat "$responder"
        } >"$scen/bench_null_responder.sh"
    fi
    DMULOGD_SCENARIOS=$scen "$here/build-image.sh" "$work/bench.cpio.gz" "$bin" >&2
    rm -rf "$scen"

    # The disk images live in tmpfs when there is room (/dev/shm), so that
    # neither the host's disk nor other users' write-back can stall the
    # guest's I/O in the middle of a measurement.
    disks=${DMULOGD_BENCH_DISKS:-}
    if [ -z "$disks" ]; then
        disks=$work
        shm_free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
        if [ "${shm_free:-0}" -gt $((10 * 1024 * 1024)) ]; then
            disks=$(mktemp -d /dev/shm/dm-ulogd-bench.XXXXXX)
        fi
    fi
    mkdir -p "$disks"
    trap 'rm -f "$disks/vda.img" "$disks/vdb.img" "$disks/vdc.img"; case $disks in /dev/shm/dm-ulogd-bench.*) rmdir "$disks" 2>/dev/null ;; esac' EXIT
    rm -f "$disks/vda.img" "$disks/vdb.img" "$disks/vdc.img"
    # Two leg disks of 8 TiB (the legs of every mirror, whole: single
    # devices, as a user's legs are), one for the log devices. Sparse: only
    # what is written takes space.
    truncate -s 8T "$disks/vda.img" "$disks/vdb.img"
    truncate -s 64M "$disks/vdc.img"

    append="dmulogd.bench=$mode"
    [ -n "${BENCH_RUNTIME:-}" ] && append="$append dmulogd.bench_runtime=$BENCH_RUNTIME"
    [ -n "${BENCH_ROUNDS:-}" ] && append="$append dmulogd.bench_rounds=$BENCH_ROUNDS"
    scenario=bench
    [ "$mode" = smoke ] && scenario=bench_smoke
    if [ "$mode" = smoke ]; then deftimeout=600; else deftimeout=3600; fi

    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "git=$(cd "$repo" && git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
        echo "nproc=$(nproc)"
        echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        echo "qemu=$(qemu-system-x86_64 --version | awk 'NR == 1 { print $4 }') TCG, 1 vCPU, 1024 MiB"
        echo "binary_bytes=$(stat -c %s "$bin")"
        echo "binary_stripped=$(if file "$bin" 2>/dev/null | grep -q 'not stripped'; then echo no; else echo yes; fi)"
        echo "disks=$disks"
        echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$hostinfo"

    step "booting the guest (qemu TCG): scenario $scenario (console: $console)"
    # The host's 1-minute load average every 10 s while the guest runs (the
    # guest's own qemu counts for about 1 of it).
    loadlog=$work/load-$mode.txt
    (while :; do cut -d' ' -f1 /proc/loadavg; sleep 10; done) >"$loadlog" &
    sampler=$!
    rc=0
    BOOT_MEM=${BOOT_MEM:-1024M} BOOT_TIMEOUT=${BOOT_TIMEOUT:-$deftimeout} BOOT_APPEND="$append" \
        "$here/boot.sh" "$work/bench.cpio.gz" "$scenario" \
        "$disks/vda.img" "$disks/vdb.img" "$disks/vdc.img" >"$console" 2>&1 || rc=$?
    kill "$sampler" 2>/dev/null || true
    echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$hostinfo"
    awk 'NR == 1 || $1 < lo { lo = $1 } $1 > hi { hi = $1 } { s += $1; n++ }
        END { if (n) printf "load_during=%.2f mean, %.2f-%.2f (1-minute load average every 10 s, %d samples)\n", s / n, lo, hi, n }' \
        "$loadlog" >>"$hostinfo"
    rm -f "$disks/vda.img" "$disks/vdb.img" "$disks/vdc.img"
    if [ $rc -ne 0 ]; then
        tail -60 "$console" >&2
        echo "bench.sh: the guest failed (boot.sh exit status $rc); console: $console" >&2
        exit 1
    fi

    if [ $micro = 1 ]; then
        step "micro benchmark: cargo bench --bench handler"
        (cd "$repo" && cargo bench --bench handler) >"$handler" 2>&1 ||
            { cat "$handler" >&2; echo "bench.sh: cargo bench failed" >&2; exit 1; }
    else
        : >"$handler"
    fi
fi

tr -d '\r' <"$console" | grep '^BENCH ' >"$out.raw" || true
[ -s "$out.raw" ] || { echo "bench.sh: no BENCH lines in $console" >&2; exit 1; }

# ------------------------------------------------------------------ the table
awk -v hostinfo="$hostinfo" -v handler="$handler" '
function kv(line, key,    n, i, f) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) if (index(f[i], key "=") == 1) return substr(f[i], length(key) + 2)
    return ""
}
# add(K, V): one more value of the series K (one per round).
function add(k, v) { nv[k]++; val[k, nv[k]] = v + 0; tot[k] += v + 0 }
# med(K): the median of a series (mean of the middle two when even).
function med(k,    n, i, j, t, a) {
    n = nv[k]; if (!n) return 0
    for (i = 1; i <= n; i++) a[i] = val[k, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(k,    i, m) { m = val[k, 1]; for (i = 2; i <= nv[k]; i++) if (val[k, i] < m) m = val[k, i]; return m }
function hi(k,    i, m) { m = val[k, 1]; for (i = 2; i <= nv[k]; i++) if (val[k, i] > m) m = val[k, i]; return m }
function spread(k, fmt) { return (nv[k] > 1) ? sprintf(" (" fmt "-" fmt ")", lo(k), hi(k)) : "" }
function ratio(a, b) { return (b > 0) ? sprintf("%.2fx", a / b) : "-" }
# pratio(K, KREF): the median over rounds of K / KREF within each round (the
# runs of one round follow each other, so host load drifts cancel better
# than in a ratio of medians); sets PR_LO and PR_HI.
function pratio(k, kr,    r, key) {
    key = "pr" SUBSEP k SUBSEP kr
    if (!(key in prdone)) {
        prdone[key] = 1
        for (r = 1; r <= maxround; r++) if (((k, r) in rnd) && ((kr, r) in rnd) && rnd[kr, r] > 0) add(key, rnd[k, r] / rnd[kr, r])
    }
    PR_LO = lo(key); PR_HI = hi(key)
    return med(key)
}
function pratio_s(k, kr,    x) {
    x = pratio(k, kr)
    return (nv["pr" SUBSEP k SUBSEP kr] > 1) ? sprintf("%.2fx (%.2f-%.2f)", x, PR_LO, PR_HI) : sprintf("%.2fx", x)
}
function ref(cfg) { return (cfg == "ucore" || cfg == "kcore" || cfg == "null") ? "kcore" : "kdisk" }
BEGIN {
    while ((getline l < hostinfo) > 0) { p = index(l, "="); host[substr(l, 1, p - 1)] = substr(l, p + 1) }
    name["kcore"] = "kernel core"; name["kdisk"] = "kernel disk"
    name["ucore"] = "dm-ulogd core"; name["udisk"] = "dm-ulogd disk"
    name["udisk_if"] = "dm-ulogd disk + integrated_flush"
    name["null"] = "null responder (floor)"
    ncfg = split("kcore null ucore kdisk udisk udisk_if", cfgs, " ")
    njob = split("randw_qd1 randw_qd16 seqw seqw4k", jobs, " ")
}
$1 == "BENCH" && $2 == "info" { for (i = 3; i <= NF; i++) { p = index($i, "="); info[substr($i, 1, p - 1)] = substr($i, p + 1) } }
$1 == "BENCH" && $2 == "fio" {
    k = kv($0, "size") SUBSEP kv($0, "log") SUBSEP kv($0, "job")
    regions[kv($0, "size")] = kv($0, "regions")
    add(k SUBSEP "iops", kv($0, "iops"))
    add(k SUBSEP "mibs", kv($0, "kib_s") / 1024)
    rnd[k, kv($0, "round")] = (kv($0, "job") == "seqw") ? kv($0, "kib_s") / 1024 : kv($0, "iops") + 0
    if (kv($0, "round") + 0 > maxround) maxround = kv($0, "round") + 0
    add(k SUBSEP "p99", kv($0, "p99_us"))
    if (kv($0, "dreq") + 0 > 0) {
        # Totals over the rounds: requests, writes, daemon CPU.
        dreq[k] += kv($0, "dreq"); dcpu[k] += kv($0, "dcpu_ns")
        dios[k] += kv($0, "kib") / ((kv($0, "job") == "seqw") ? 1024 : 4)
    }
    seen[k] = 1
}
$1 == "BENCH" && $2 == "multi" {
    c = kv($0, "log"); k = "multi" SUBSEP c
    mmirrors = kv($0, "mirrors"); mregions = kv($0, "regions")
    add(k SUBSEP "iops", kv($0, "iops")); add(k SUBSEP "p99", kv($0, "p99_us"))
    rnd[k, kv($0, "round")] = kv($0, "iops") + 0
    rnd[k SUBSEP "p99", kv($0, "round")] = kv($0, "p99_us") + 0
    if (kv($0, "round") + 0 > maxround) maxround = kv($0, "round") + 0
    if (kv($0, "dreq") + 0 > 0) { mreq[c] += kv($0, "dreq"); mcpu[c] += kv($0, "dcpu_ns") }
}
$1 == "BENCH" && $2 == "resync" {
    c = kv($0, "log"); add("resync" SUBSEP c, kv($0, "ms") / 1000)
    rnd["resync" SUBSEP c, kv($0, "round")] = kv($0, "ms") / 1000
    if (kv($0, "round") + 0 > maxround) maxround = kv($0, "round") + 0
    rreq[c] += kv($0, "dreq"); rcpu[c] += kv($0, "dcpu_ns"); rn[c]++
    rregions = kv($0, "regions"); rsize = kv($0, "region_sectors") / 2
}
$1 == "BENCH" && $2 == "mem" {
    st = kv($0, "state"); memreg[st] = kv($0, "regions") + 0
    mem[st] = kv($0, "vmrss_kb") + 0; rss[st] = kv($0, "rss_kb") + 0
    memparts[st] = sprintf("%s / %s / %s", kv($0, "anon_kb"), kv($0, "file_kb"), kv($0, "shmem_kb"))
}
$1 == "BENCH" && $2 == "done" { done = 1 }
END {
    printf "# dm-ulogd benchmark (%s run)\n\n", info["mode"]
    printf "- command: `initramfs/bench.sh%s`\n", (info["mode"] == "smoke") ? " --smoke" : ""
    printf "- date: %s; git %s\n", host["date"], host["git"]
    printf "- host: %s CPUs (nproc), %s, shared with other users; load average before %s, after %s; during the run: %s\n", host["nproc"], host["cpu"], host["load_before"], host["load_after"], host["load_during"]
    printf "- guest: qemu %s; kernel %s; %s; fio engine %s; %s s per fio run, %s round(s), the order of the logs reversed every other round; figures are medians over the rounds, (min-max) in brackets; a ratio is the median of the per-round ratios (runs of one round follow each other)\n", host["qemu"], info["kernel"], info["fio"], info["engine"], info["runtime_s"], info["rounds"]
    printf "- geometry: every mirror has two legs, each a whole virtio disk (sparse 8 TiB raw images, cache=unsafe, in %s; a leg flush is one flush of one disk, for the kernel'"'"'s disk log and dm-ulogd alike), every mirror from sector 0 except the %s mirrors at once, which lie side by side on the same two disks; log devices are one-segment dm-linear devices on a third disk; region size %d KiB; all fio mirrors created `nosync`\n", host["disks"], info["multi"], info["region_sectors"] / 2
    printf "- ratios: dm-ulogd core and the null responder / kernel core; dm-ulogd disk and disk+integrated_flush / kernel disk (IOPS, MiB/s; resync: time / kernel core time). The null responder (when present) answers every request at once with no work (blocking recvfrom + sendto): the floor of the kernel round trips\n"
    printf "- daemon CPU: /proc/PID/schedstat run time (user+system) over the fio runs / requests answered in them (SIGUSR1 summary); req/IO: requests per fio write\n\n"
    for (s = 1; s <= 2; s++) {
        size = (s == 1) ? "small" : "large"
        if (!((size SUBSEP "kcore" SUBSEP "randw_qd1") in seen)) continue
        printf "## %s mirror: %s regions\n\n", size, regions[size]
        printf "| log | 4K rand qd1 IOPS | ratio | p99 us | 4K rand qd16 IOPS | ratio | p99 us | 1M seq MiB/s | ratio | 4K seq qd1 IOPS | ratio | p99 us | CPU us/req qd1 / qd16 / seq / seq4k | req/IO qd1 / qd16 / seq / seq4k |\n"
        printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for (c = 1; c <= ncfg; c++) {
            cfg = cfgs[c]; line = "| " name[cfg]; cpu = ""; rpi = ""
            if (!((size SUBSEP cfg SUBSEP "randw_qd1") in seen)) continue
            for (j = 1; j <= njob; j++) {
                k = size SUBSEP cfg SUBSEP jobs[j]; kr = size SUBSEP ref(cfg) SUBSEP jobs[j]
                m = (jobs[j] == "seqw") ? "mibs" : "iops"
                v = med(k SUBSEP m); rv = med(kr SUBSEP m)
                rt = (cfg == ref(cfg)) ? "ref" : pratio_s(k, kr)
                if (m == "mibs") line = line sprintf(" | %.1f%s | %s", v, spread(k SUBSEP m, "%.0f"), rt)
                else line = line sprintf(" | %.0f%s | %s | %.0f", v, spread(k SUBSEP m, "%.0f"), rt, med(k SUBSEP "p99"))
                if (dreq[k] > 0) {
                    cpu = cpu (cpu == "" ? "" : " / ") sprintf("%.1f", dcpu[k] / dreq[k] / 1000)
                    rpi = rpi (rpi == "" ? "" : " / ") sprintf("%.2f", dreq[k] / dios[k])
                }
            }
            if (cpu == "") { cpu = "-"; rpi = "-" }
            print line " | " cpu " | " rpi " |"
        }
        printf "\n"
    }
    if (nv["multi" SUBSEP "kdisk" SUBSEP "iops"] > 0) {
        printf "## %s mirrors at once, %s regions each (8 GiB), disk logs: 4 KiB random writes, queue depth 1 per mirror\n\n", mmirrors, mregions
        printf "| log | aggregate IOPS | ratio | p99 us | p99 ratio | CPU us/req |\n|---|---:|---:|---:|---:|---:|\n"
        split("kdisk udisk udisk_if", mc, " ")
        for (i = 1; i <= 3; i++) {
            c = mc[i]; k = "multi" SUBSEP c; if (!nv[k SUBSEP "iops"]) continue
            printf "| %s | %.0f%s | %s | %.0f | %s | %s |\n", name[c], med(k SUBSEP "iops"), spread(k SUBSEP "iops", "%.0f"),
                (c == "kdisk") ? "ref" : pratio_s(k, "multi" SUBSEP "kdisk"), med(k SUBSEP "p99"),
                (c == "kdisk") ? "ref" : pratio_s(k SUBSEP "p99", "multi" SUBSEP "kdisk" SUBSEP "p99"),
                (mreq[c] > 0) ? sprintf("%.1f", mcpu[c] / mreq[c] / 1000) : "-"
        }
        printf "\n"
    }
    if (nv["resync" SUBSEP "kcore"] > 0) {
        printf "## full resync of a %s-region mirror, %d KiB regions (from dmsetup create to every region in sync)\n\n", rregions, rsize
        printf "| log | seconds | ratio | requests per resync | CPU us/req |\n|---|---:|---:|---:|---:|\n"
        split("kcore ucore", rc, " ")
        for (i = 1; i <= 2; i++) {
            c = rc[i]; k = "resync" SUBSEP c; if (!nv[k]) continue
            printf "| %s | %.2f%s | %s | %s | %s |\n", name[c], med(k), spread(k, "%.2f"),
                (c == "kcore") ? "ref" : pratio_s(k, "resync" SUBSEP "kcore"),
                (rreq[c] > 0) ? sprintf("%.0f", rreq[c] / rn[c]) : "-",
                (rreq[c] > 0) ? sprintf("%.1f", rcpu[c] / rreq[c] / 1000) : "-"
        }
        printf "\n"
    }
    printf "## memory of the daemon in the guest\n\n"
    printf "rss: /proc/PID/smaps_rollup (exact); VmRSS and its parts: /proc/PID/status (lazily updated counters). The binary itself is shmem (the initramfs is a tmpfs).\n\n"
    printf "| state | regions | rss KiB | VmRSS KiB | anon / file / shmem KiB | bits/region over idle (rss) |\n|---|---:|---:|---:|---:|---:|\n"
    split("idle core_1000000 ucore udisk udisk_if idle_after", ms, " ")
    for (i = 1; i <= 6; i++) {
        st = ms[i]; if (!(st in mem)) continue
        bpr = (memreg[st] > 0 && rss[st] > 0) ? sprintf("%.2f", (rss[st] - rss["idle"]) * 8192 / memreg[st]) : "-"
        label = st
        if (st == "idle") label = "idle (after start-up)"
        if (st == "core_1000000") label = "holding one 1,000,000-region core log"
        if (st == "ucore" || st == "udisk" || st == "udisk_if") label = "holding the large mirror " name[st] " log"
        if (st == "idle_after") label = "idle again (at the end)"
        printf "| %s | %s | %s | %s | %s | %s |\n", label, memreg[st], rss[st], mem[st], memparts[st], bpr
    }
    printf "\nstripped release binary: %s bytes (%.2f MiB; stripped: %s)\n\n", host["binary_bytes"], host["binary_bytes"] / 1048576, host["binary_stripped"]
    nh = 0
    while ((getline l < handler) > 0) if (l ~ /^HANDLER /) {
        if (nh == 0) printf "## request handler, no system calls (cargo bench --bench handler, on the host)\n\n| case | requests/s | ns/request |\n|---|---:|---:|\n"
        nh++
        c = l; sub(/^HANDLER case="/, "", c); sub(/".*/, "", c)
        printf "| %s | %.0f | %s |\n", c, kv(l, "req_per_s"), kv(l, "ns_per_req")
        hreq[c] = kv(l, "req_per_s") + 0
    }
    if (nh) printf "\n"
    printf "## targets (issues 5 and 10)\n\n| target | measured | verdict |\n|---|---|---|\n"
    for (s = 1; s <= 2; s++) {
        size = (s == 1) ? "small" : "large"
        if (!((size SUBSEP "kcore" SUBSEP "randw_qd1") in seen)) continue
        q1 = pratio(size SUBSEP "ucore" SUBSEP "randw_qd1", size SUBSEP "kcore" SUBSEP "randw_qd1")
        q16 = pratio(size SUBSEP "ucore" SUBSEP "randw_qd16", size SUBSEP "kcore" SUBSEP "randw_qd16")
        sq = pratio(size SUBSEP "ucore" SUBSEP "seqw", size SUBSEP "kcore" SUBSEP "seqw")
        printf "| %s: dm-ulogd core >= 0.45x kernel core IOPS, qd1 | %.2fx | %s |\n", size, q1, (q1 >= 0.45) ? "met" : "MISSED"
        printf "| %s: dm-ulogd core >= 0.65x kernel core IOPS, qd16 | %.2fx | %s |\n", size, q16, (q16 >= 0.65) ? "met" : "MISSED"
        printf "| %s: dm-ulogd core >= 0.95x kernel core sequential | %.2fx | %s |\n", size, sq, (sq >= 0.95) ? "met" : "MISSED"
        if ((size SUBSEP "null" SUBSEP "randw_qd1") in seen) for (j = 1; j <= njob; j++) {
            x = pratio(size SUBSEP "ucore" SUBSEP jobs[j], size SUBSEP "null" SUBSEP jobs[j])
            y = pratio(size SUBSEP "null" SUBSEP jobs[j], size SUBSEP "kcore" SUBSEP jobs[j])
            if (jobs[j] == "randw_qd1")
                printf "| %s: dm-ulogd core >= 0.95x the null responder, 4K random qd1 (the daemon'"'"'s own cost; the floor, null / kernel core, is %.2fx) | %.2fx | %s |\n", size, y, x, (x >= 0.95) ? "met" : "MISSED"
            else
                printf "| %s, %s: dm-ulogd core / null responder (the floor, null / kernel core, is %.2fx) | %.2fx | info |\n", size, jobs[j], y, x
        }
        want = (size == "large") ? 1.25 : 1.0
        for (j = 1; j <= 2; j++) for (d = 0; d <= 1; d++) {
            cfg = d ? "udisk_if" : "udisk"
            x = pratio(size SUBSEP cfg SUBSEP jobs[j], size SUBSEP "kdisk" SUBSEP jobs[j])
            printf "| %s: %s >= %.2fx kernel disk random-write IOPS, %s | %.2fx | %s |\n", size, name[cfg], want, substr(jobs[j], 7), x, (x >= want) ? "met" : "MISSED"
        }
        for (d = 0; d <= 1; d++) {
            cfg = d ? "udisk_if" : "udisk"
            x = pratio(size SUBSEP cfg SUBSEP "seqw4k", size SUBSEP "kdisk" SUBSEP "seqw4k")
            printf "| %s: %s / kernel disk, 4K sequential IOPS, qd1 | %.2fx | info |\n", size, name[cfg], x
        }
    }
    for (d = 0; d <= 1; d++) {
        c = d ? "udisk_if" : "udisk"
        if (!nv["multi" SUBSEP c SUBSEP "iops"] || !nv["multi" SUBSEP "kdisk" SUBSEP "iops"]) continue
        x = pratio("multi" SUBSEP c, "multi" SUBSEP "kdisk")
        y = pratio("multi" SUBSEP c SUBSEP "p99", "multi" SUBSEP "kdisk" SUBSEP "p99")
        printf "| %s mirrors at once: %s / kernel disk, aggregate IOPS; p99 latency | %.2fx; p99 %.2fx | info |\n", mmirrors, name[c], x, y
    }
    if (nv["resync" SUBSEP "kcore"] && nv["resync" SUBSEP "ucore"]) {
        x = pratio("resync" SUBSEP "ucore", "resync" SUBSEP "kcore")
        printf "| full resync time <= 1.1x kernel core | %.2fx | %s |\n", x, (x <= 1.1) ? "met" : "MISSED"
    }
    split("mark_region x1|clear_region x1|in_sync", hc, "|")
    for (i = 1; i <= 3; i++) if (hc[i] in hreq)
        printf "| handler >= 5M requests/s: %s | %.1fM/s | %s |\n", hc[i], hreq[hc[i]] / 1e6, (hreq[hc[i]] >= 5e6) ? "met" : "MISSED"
    if (rss["core_1000000"] > 0 && rss["ucore"] > 0 && memreg["ucore"] > 1000000) {
        # The cost of a region: the slope between the 1,000,000- and the
        # 16,777,216-region core logs; the constant: what is left at 1,000,000.
        x = (rss["ucore"] - rss["core_1000000"]) * 8192 / (memreg["ucore"] - 1000000)
        cst = (rss["core_1000000"] - rss["idle"]) - 2 * 1000000 / 8192
        printf "| memory <= 2 bits/region + constant (rss of core logs of 1,000,000 and %d regions) | %.3f bits/region + %.0f KiB | %s |\n", memreg["ucore"], x, cst, (x <= 2.01) ? "met" : "MISSED"
    }
    if (host["binary_bytes"] != "")
        printf "| stripped binary <= 1 MiB | %d bytes | %s |\n", host["binary_bytes"], (host["binary_bytes"] + 0 <= 1048576) ? "met" : "MISSED"
    if ("idle" in mem)
        printf "| idle resident memory <= 2 MiB | rss %d KiB, VmRSS %d KiB | %s |\n", rss["idle"], mem["idle"], (mem["idle"] <= 2048 && rss["idle"] <= 2048) ? "met" : "MISSED"
    if (!done) printf "\nWARNING: the guest did not finish (no BENCH done line)\n"
}' "$out.raw" >"$out"

cat "$out"
echo "bench.sh: table written to $out (raw lines: $out.raw, console: $console)" >&2

# Every configuration must have reported.
missing=""
for size in small large; do
    for cfg in kcore kdisk ucore udisk udisk_if; do
        for job in randw_qd1 randw_qd16 seqw seqw4k; do
            grep -q "^BENCH fio size=$size .*log=$cfg job=$job .*iops=" "$out.raw" || missing="$missing $size/$cfg/$job"
        done
    done
done
for cfg in kcore ucore; do
    grep -q "^BENCH resync .*log=$cfg " "$out.raw" || missing="$missing resync/$cfg"
done
for cfg in kdisk udisk udisk_if; do
    grep -q "^BENCH multi .*log=$cfg .*iops=" "$out.raw" || missing="$missing multi/$cfg"
done
if [ -n "$missing" ]; then
    echo "bench.sh: no result for:$missing" >&2
    exit 1
fi

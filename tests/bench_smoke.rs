//! Smoke runs of the benchmarks, so they cannot rot. They check that every
//! configuration runs and reports, never how fast anything is.
//!
//! - `bench_smoke_guest`: `initramfs/bench.sh --smoke` with this build's
//!   dm-ulogd: one qemu (TCG) boot on the `bench_smoke` scenario, 1-second fio
//!   runs, about two minutes of guest time. Asserts a result line with
//!   positive numbers for every (mirror size, log, fio job), both resyncs and
//!   the memory readings. Needs what initramfs/setup-host.sh installs; fails,
//!   never skips, when the harness cannot run.
//! - `bench_smoke_handler`: the request-handler micro benchmark
//!   (tests/bench/handler.rs) in smoke mode, in-process: a few thousand
//!   requests per case, each reply checked for error 0.
//!
//! Environment: `DMULOGD_BOOT_TIMEOUT` (seconds, default 600) bounds the guest.

#[path = "bench/handler.rs"]
mod handler;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const WORK: &str = env!("CARGO_TARGET_TMPDIR");

const SIZES: [&str; 2] = ["small", "large"];
const LOGS: [&str; 5] = ["kcore", "kdisk", "ucore", "udisk", "udisk_if"];
const JOBS: [&str; 4] = ["randw_qd1", "randw_qd16", "seqw", "seqw4k"];

/// The value of `key=` in a result line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn positive(line: &str, key: &str) -> bool {
    field(line, key)
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| v > 0.0)
}

#[test]
fn bench_smoke_guest() {
    let dir = Path::new(WORK).join("bench-smoke");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the work directory");
    let out = dir.join("bench-smoke.md");
    let timeout = std::env::var("DMULOGD_BOOT_TIMEOUT").unwrap_or_else(|_| "600".into());
    let script = Path::new(REPO).join("initramfs/bench.sh");
    let started = Instant::now();
    let run = Command::new("sh")
        .arg(&script)
        .arg("--smoke")
        .arg("--binary")
        .arg(DAEMON)
        .arg("--out")
        .arg(&out)
        .env("SKIP_SETUP", "1")
        .env("DMULOGD_BENCH_DIR", &dir)
        .env("BOOT_TIMEOUT", &timeout)
        .env("TMPDIR", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let elapsed = started.elapsed().as_secs_f64();
    let console = dir.join("console-smoke.log");
    let console_text = fs::read(&console)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let tail: Vec<&str> = console_text.lines().rev().take(80).collect();
    let context = format!(
        "bench.sh --smoke: {} after {elapsed:.1} s\nstderr:\n{}\nconsole ({}), last lines:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr),
        console.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(run.status.success(), "{context}");

    let raw = fs::read_to_string(dir.join("bench-smoke.md.raw"))
        .unwrap_or_else(|e| panic!("no raw result lines ({e})\n{context}"));
    let lines: Vec<&str> = raw.lines().filter(|l| l.starts_with("BENCH ")).collect();
    let mut missing = Vec::new();
    for size in SIZES {
        for log in LOGS {
            for job in JOBS {
                let found = lines.iter().find(|l| {
                    l.starts_with("BENCH fio ")
                        && field(l, "size") == Some(size)
                        && field(l, "log") == Some(log)
                        && field(l, "job") == Some(job)
                });
                match found {
                    None => missing.push(format!("fio {size}/{log}/{job}: no line")),
                    Some(l) => {
                        for key in ["iops", "kib_s", "p99_us", "kib"] {
                            if !positive(l, key) {
                                missing.push(format!(
                                    "fio {size}/{log}/{job}: {key} not positive: {l}"
                                ));
                            }
                        }
                        if log.starts_with('u') && !positive(l, "dreq") {
                            missing
                                .push(format!("fio {size}/{log}/{job}: no daemon requests: {l}"));
                        }
                    }
                }
            }
        }
    }
    for log in ["kcore", "ucore"] {
        match lines
            .iter()
            .find(|l| l.starts_with("BENCH resync ") && field(l, "log") == Some(log))
        {
            None => missing.push(format!("resync {log}: no line")),
            Some(l) if !positive(l, "ms") => missing.push(format!("resync {log}: {l}")),
            Some(_) => {}
        }
    }
    for log in ["kdisk", "udisk", "udisk_if"] {
        match lines
            .iter()
            .find(|l| l.starts_with("BENCH multi ") && field(l, "log") == Some(log))
        {
            None => missing.push(format!("multi {log}: no line")),
            Some(l) if !positive(l, "iops") || !positive(l, "p99_us") => {
                missing.push(format!("multi {log}: {l}"))
            }
            Some(l) if log.starts_with('u') && !positive(l, "dreq") => {
                missing.push(format!("multi {log}: no daemon requests: {l}"))
            }
            Some(_) => {}
        }
    }
    for state in ["idle", "core_1000000"] {
        match lines
            .iter()
            .find(|l| l.starts_with("BENCH mem ") && field(l, "state") == Some(state))
        {
            None => missing.push(format!("mem {state}: no line")),
            Some(l) if !positive(l, "vmrss_kb") => missing.push(format!("mem {state}: {l}")),
            Some(_) => {}
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("BENCH done ")),
        "the guest did not finish the benchmark\n{context}"
    );
    assert!(missing.is_empty(), "{}\n{context}", missing.join("\n"));
    let table = fs::read_to_string(&out).unwrap_or_default();
    assert!(
        table.contains("## targets"),
        "no table in {}\n{context}",
        out.display()
    );
    eprintln!("bench smoke: every configuration reported, in {elapsed:.1} s");
}

#[test]
fn bench_smoke_handler() {
    let results = handler::smoke();
    assert!(!results.is_empty());
    for (name, n) in results {
        assert!(n > 0, "{name}: no requests");
    }
}

//! Micro benchmark of the request path without system calls: pre-built
//! kernel datagrams (`wire::frame::emit_request`) go through
//! `dm_ulogd::server::Server::handle` on a live core log, and the replies are
//! checked once (error 0) before timing.
//!
//! Run: `cargo bench --bench handler` (prints requests per second per case).
//! Options after `--`:
//!   --smoke          a few thousand requests per case, no timing claims
//!   --time SECS      measuring time per case and round (default 0.3; best of 5)
//!   --only NAME      one case only
//!   --iters N        run exactly N requests of each case through `hot_loop`
//!                    and print nothing but a line per case (for
//!                    `valgrind --tool=callgrind --toggle-collect='*hot_loop*'`)
//!   --logs 1|64      only the cases with this many live logs
//!   --regions N      regions of the benchmark log (default 16777216, the
//!                    benchmark's large mirror)
//!
//! The same code runs in tests/bench_smoke.rs (smoke mode) through
//! `#[path]`, so `main` may be unused there.
#![allow(dead_code)]

use std::fs;
use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dm_ulogd::mirrors::FakeMirrors;
use dm_ulogd::server::{Limits, Server};
use dm_ulogd::wire::frame::{REPLY_BUF_LEN, REQUEST_OFFSET, emit_request};

const CTR: u32 = 1;
const IS_CLEAN: u32 = 7;
const IN_SYNC: u32 = 8;
const FLUSH: u32 = 9;
const MARK_REGION: u32 = 10;
const CLEAR_REGION: u32 = 11;

/// Offset of dm_ulog_request.error in a reply datagram.
const ERROR_OFFSET: usize = REQUEST_OFFSET + 144;
/// How many distinct datagrams each case cycles through (small enough to
/// stay in L1/L2 like the daemon's single receive buffer, large enough that
/// regions differ from one request to the next).
const POOL: usize = 64;
const REGION_SIZE: u64 = 256;
pub const DEFAULT_REGIONS: u64 = 16_777_216;
/// 68 bytes, the length of an LVM uuid ("LVM-" + VG uuid + LV uuid); the
/// last 16 digits number the log.
const UUID: &[u8] = b"LVM-dmulogdbenchXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX0000000000000000";
const LUID: u64 = 0xffff_8881_0000_1000;

/// One benchmark case: a name and the datagrams it cycles through.
pub struct Case {
    pub name: &'static str,
    /// Regions per request (for regions/s).
    pub regions_per_request: u64,
    datagrams: Vec<Vec<u8>>,
}

/// A case's result.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub name: &'static str,
    pub requests: u64,
    pub seconds: f64,
    pub regions_per_request: u64,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub fn ns_per_request(&self) -> f64 {
        self.seconds * 1e9 / self.requests as f64
    }
}

/// xorshift64*: reproducible pseudo-random regions without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn uuid_n(n: usize) -> Vec<u8> {
    let mut u = UUID.to_vec();
    let digits = format!("{n:016}");
    let at = u.len() - digits.len();
    u[at..].copy_from_slice(digits.as_bytes());
    u
}

fn datagram(uuid: &[u8], luid: u64, seq: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 512 + 16];
    let n = emit_request(&mut buf, seq, luid, uuid, seq, kind, data);
    buf.truncate(n);
    buf
}

fn regions_payload(rng: &mut Rng, count: usize, regions: u64) -> Vec<u8> {
    (0..count)
        .flat_map(|_| (rng.next() % regions).to_ne_bytes())
        .collect()
}

/// A server holding `logs` core logs of `regions` regions (nosync). With one
/// log every request goes to it; with several, consecutive requests go to
/// the logs in turn (round robin), so no lookup can be answered by a cache
/// of the last log used. The state directory is a fresh temporary
/// directory, removed by `Bench::drop`.
pub struct Bench {
    pub server: Server,
    /// (uuid, luid) of every log, in creation order.
    pub ids: Vec<(Vec<u8>, u64)>,
    pub regions: u64,
    dir: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Bench {
    pub fn new(logs: usize, regions: u64) -> Bench {
        let dir = std::env::temp_dir().join(format!(
            "dm-ulogd-bench-{}-{}-{}",
            std::process::id(),
            logs,
            regions
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the state directory");
        let fd: OwnedFd = fs::File::open(&dir)
            .expect("open the state directory")
            .into();
        let limits = Limits {
            max_logs: logs.max(256),
            memory_budget: 1 << 30,
        };
        let mut server = Server::new(
            limits,
            fd.try_clone().unwrap(),
            fd,
            Box::new(FakeMirrors::two_legs()),
        );
        let ctr = format!("{} core 2 {REGION_SIZE} nosync", regions * REGION_SIZE);
        let mut out = [0u8; REPLY_BUF_LEN];
        let mut ids = Vec::new();
        for i in 0..logs {
            let uuid = uuid_n(i);
            let luid = LUID + 64 * i as u64;
            let d = datagram(&uuid, luid, 1, CTR, ctr.as_bytes());
            let n = server.handle(&d, &mut out).expect("a reply to CTR");
            assert_eq!(reply_error(&out[..n]), 0, "CTR of bench log {i} failed");
            ids.push((uuid, luid));
        }
        Bench {
            server,
            ids,
            regions,
            dir,
        }
    }

    /// The cases of the benchmark, on this bench's logs in turn.
    pub fn cases(&self) -> Vec<Case> {
        let ids = &self.ids;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut case = |name, kind, per: usize, rpr: u64| Case {
            name,
            regions_per_request: rpr,
            datagrams: (0..POOL)
                .map(|i| {
                    let data = regions_payload(&mut rng, per, self.regions);
                    let (uuid, luid) = &ids[i % ids.len()];
                    datagram(uuid, *luid, 100 + i as u32, kind, &data)
                })
                .collect(),
        };
        vec![
            case("mark_region x1", MARK_REGION, 1, 1),
            case("mark_region x32", MARK_REGION, 32, 32),
            case("clear_region x1", CLEAR_REGION, 1, 1),
            case("clear_region x32", CLEAR_REGION, 32, 32),
            case("in_sync", IN_SYNC, 1, 1),
            case("is_clean", IS_CLEAN, 1, 1),
            case("flush (core)", FLUSH, 0, 0),
        ]
    }
}

/// dm_ulog_request.error of a full reply.
pub fn reply_error(reply: &[u8]) -> i32 {
    assert!(
        reply.len() >= ERROR_OFFSET + 4,
        "reply too short: {}",
        reply.len()
    );
    i32::from_ne_bytes(reply[ERROR_OFFSET..ERROR_OFFSET + 4].try_into().unwrap())
}

/// Every datagram of the case is answered with error 0.
pub fn check(server: &mut Server, case: &Case) {
    let mut out = [0u8; REPLY_BUF_LEN];
    for d in &case.datagrams {
        let n = server
            .handle(d, &mut out)
            .unwrap_or_else(|| panic!("{}: no reply", case.name));
        assert_eq!(reply_error(&out[..n]), 0, "{}: error reply", case.name);
    }
}

/// The measured loop: `iters` requests, cycling through the pool.
#[inline(never)]
pub fn hot_loop(server: &mut Server, case: &Case, iters: u64) -> usize {
    let mut out = [0u8; REPLY_BUF_LEN];
    let mut total = 0usize;
    let pool = &case.datagrams;
    let mut i = 0usize;
    for _ in 0..iters {
        let n = server.handle(black_box(&pool[i]), &mut out);
        total = total.wrapping_add(black_box(n).unwrap_or(0));
        i += 1;
        if i == pool.len() {
            i = 0;
        }
    }
    black_box(&out);
    total
}

/// Times a case: best of `rounds` rounds of at least `each` seconds.
pub fn measure(server: &mut Server, case: &Case, each: Duration, rounds: u32) -> Outcome {
    // Calibrate a batch that takes about a millisecond.
    let mut batch = 1024u64;
    loop {
        let t = Instant::now();
        hot_loop(server, case, batch);
        if t.elapsed() >= Duration::from_millis(1) || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let mut best: Option<Outcome> = None;
    for _ in 0..rounds {
        let mut requests = 0u64;
        let t = Instant::now();
        while t.elapsed() < each {
            hot_loop(server, case, batch);
            requests += batch;
        }
        let o = Outcome {
            name: case.name,
            requests,
            seconds: t.elapsed().as_secs_f64(),
            regions_per_request: case.regions_per_request,
        };
        if best.is_none_or(|b| o.per_second() > b.per_second()) {
            best = Some(o);
        }
    }
    best.expect("at least one round")
}

/// Smoke mode: a few thousand requests per case, on a small log; returns
/// how many requests each case answered.
pub fn smoke() -> Vec<(&'static str, u64)> {
    let mut results = Vec::new();
    for logs in [1usize, 64] {
        let mut b = Bench::new(logs, 16_384);
        for case in b.cases() {
            check(&mut b.server, &case);
            let iters = 4096;
            let total = hot_loop(&mut b.server, &case, iters);
            assert!(total > 0, "{}: no reply bytes", case.name);
            results.push((case.name, iters));
        }
    }
    results
}

struct Args {
    smoke: bool,
    time: f64,
    only: Option<String>,
    iters: Option<u64>,
    regions: u64,
    logs: Option<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
        smoke: false,
        time: 0.3,
        only: None,
        iters: None,
        regions: DEFAULT_REGIONS,
        logs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--time" => a.time = it.next().and_then(|v| v.parse().ok()).expect("--time SECS"),
            "--only" => a.only = Some(it.next().expect("--only NAME")),
            "--iters" => a.iters = Some(it.next().and_then(|v| v.parse().ok()).expect("--iters N")),
            "--regions" => a.regions = it.next().and_then(|v| v.parse().ok()).expect("--regions N"),
            "--logs" => a.logs = Some(it.next().and_then(|v| v.parse().ok()).expect("--logs N")),
            // cargo bench passes --bench; libtest-style filters are ignored.
            _ => {}
        }
    }
    a
}

fn main() {
    let args = parse_args();
    if args.smoke {
        for (name, n) in smoke() {
            println!("HANDLER-SMOKE case=\"{name}\" requests={n} ok");
        }
        return;
    }
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    println!(
        "# dm-ulogd request handler, no system calls: Server::handle on a core log of {} regions; \
         {POOL} pre-built datagrams per case, random regions; best of 5 x {:.1} s",
        args.regions, args.time
    );
    println!(
        "{:<40} {:>14} {:>10} {:>16}",
        "case", "requests/s", "ns/req", "regions/s"
    );
    let mut machine = Vec::new();
    for logs in [1usize, 64] {
        if args.logs.is_some_and(|l| l != logs) {
            continue;
        }
        let mut b = Bench::new(logs, args.regions);
        for case in b.cases() {
            if !wanted(case.name) {
                continue;
            }
            if logs > 1 && !matches!(case.name, "mark_region x1" | "in_sync") {
                continue;
            }
            check(&mut b.server, &case);
            let label = if logs == 1 {
                case.name.to_string()
            } else {
                format!("{} ({logs} logs, round robin)", case.name)
            };
            if let Some(n) = args.iters {
                let t = Instant::now();
                let total = hot_loop(&mut b.server, &case, n);
                println!(
                    "{label}: {n} requests, {total} reply bytes, {:.3} s",
                    t.elapsed().as_secs_f64()
                );
                continue;
            }
            let o = measure(&mut b.server, &case, Duration::from_secs_f64(args.time), 5);
            println!(
                "{:<40} {:>14.0} {:>10.1} {:>16.0}",
                label,
                o.per_second(),
                o.ns_per_request(),
                o.per_second() * o.regions_per_request as f64
            );
            machine.push(format!(
                "HANDLER case=\"{label}\" req_per_s={:.0} ns_per_req={:.1}",
                o.per_second(),
                o.ns_per_request()
            ));
        }
    }
    for line in machine {
        println!("{line}");
    }
}

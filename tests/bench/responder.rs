//! A do-nothing userspace-log responder: the floor that the kernel's round
//! trips put under any daemon, measured side by side with dm-ulogd by
//! initramfs/bench.sh (configuration `null`).
//!
//! It answers every request at once, with no state beyond each log's region
//! count and no I/O, as if every region were in sync and clean: right only
//! for `core ... nosync` mirrors, which is all the benchmark gives it. It
//! uses the fewest system calls a netlink responder can: a blocking
//! recvfrom and a sendto per request, nothing else (no poll; SIGTERM ends
//! it; SIGUSR1 prints the number of requests answered to stderr). Framing
//! goes through dm-ulogd's own wire code (`parse_request`, `emit_reply`),
//! so only the daemon's work differs.
//!
//! Built by `cargo build --release --example null_responder`; run as root:
//! `null_responder --serve`. Without `--serve` it exits at once.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use dm_ulogd::wire::frame::{
    MAX_KERNEL_DATAGRAM, REPLY_BUF_LEN, REPLY_DATA_OFFSET, emit_reply, parse_request,
};

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_DM: libc::c_int = 7;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// Set by SIGUSR1: print the request count (to stderr) at the next chance.
static REPORT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    REPORT.store(true, Ordering::Relaxed);
}

fn fail(what: &str) -> ! {
    let e = std::io::Error::last_os_error();
    let _ = writeln!(std::io::stderr(), "null_responder: {what}: {e}");
    std::process::exit(1)
}

/// A blocking connector socket that has joined the device-mapper group.
fn open_socket() -> libc::c_int {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM, NETLINK_CONNECTOR) };
    if fd < 0 {
        fail("socket");
    }
    // SAFETY: all-zero bytes are a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a live sockaddr_nl of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        fail("bind");
    }
    let group: libc::c_int = CN_IDX_DM;
    // SAFETY: `group` is a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            (&group as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        fail("NETLINK_ADD_MEMBERSHIP");
    }
    let size: libc::c_int = 4 << 20;
    // SAFETY: `size` is a live c_int of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    fd
}

fn put(out: &mut [u8], at: usize, v: u64) {
    out[REPLY_DATA_OFFSET + at..REPLY_DATA_OFFSET + at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Region size and count from a core constructor string
/// "<sectors> core <n> <region_size> ...".
fn parse_ctr(text: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(text).unwrap_or("");
    let mut w = text.split_ascii_whitespace();
    let sectors: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let region: u64 = w.nth(2).and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    (region, sectors.div_ceil(region))
}

fn main() {
    if !std::env::args().any(|a| a == "--serve") {
        println!("null_responder: a helper of initramfs/bench.sh; run it with --serve (as root)");
        return;
    }
    let fd = open_socket();
    // SIGUSR1 interrupts recvfrom (no SA_RESTART); the count is printed then.
    // SAFETY: all-zero bytes are a valid sigaction; the handler only stores
    // to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let mut requests = 0u64;
    // (luid, region size, region count) of the live logs.
    let mut logs: Vec<(u64, u64, u64)> = Vec::with_capacity(64);
    let mut rx = [0u8; MAX_KERNEL_DATAGRAM + 1];
    let mut tx = [0u8; REPLY_BUF_LEN];
    // SAFETY: all-zero bytes are a valid sockaddr_nl; the kernel's port is 0.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: `rx` is valid for writes of rx.len() bytes; no address.
        let n = unsafe {
            libc::recvfrom(
                fd,
                rx.as_mut_ptr().cast(),
                rx.len(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if REPORT.swap(false, Ordering::Relaxed) {
            let _ = writeln!(std::io::stderr(), "null_responder: {requests} requests");
        }
        if n < 0 {
            // EINTR (SIGUSR1), or ENOBUFS: requests were lost and the kernel
            // resends them.
            continue;
        }
        let Ok(req) = parse_request(&rx[..n as usize]) else {
            continue;
        };
        requests += 1;
        let find = |logs: &[(u64, u64, u64)]| logs.iter().position(|l| l.0 == req.luid);
        let len = match req.request_type_field & 0xff {
            1 => {
                let text = req.data.strip_suffix(&[0]).unwrap_or(req.data);
                let (size, count) = parse_ctr(text);
                if find(&logs).is_none() {
                    logs.push((req.luid, size, count));
                }
                0
            }
            2 => {
                if let Some(i) = find(&logs) {
                    logs.swap_remove(i);
                }
                0
            }
            6 => {
                put(&mut tx, 0, find(&logs).map_or(0, |i| logs[i].1));
                8
            }
            7 | 8 => {
                put(&mut tx, 0, 1);
                8
            }
            12 => {
                put(&mut tx, 0, 0);
                put(&mut tx, 8, 0);
                16
            }
            14 => {
                put(&mut tx, 0, find(&logs).map_or(0, |i| logs[i].2));
                8
            }
            15 | 16 => {
                let text = b"1 core\0";
                tx[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + text.len()].copy_from_slice(text);
                text.len()
            }
            17 => {
                put(&mut tx, 0, 0);
                put(&mut tx, 8, find(&logs).map_or(0, |i| logs[i].2));
                16
            }
            _ => 0,
        };
        let out = emit_reply(&mut tx, req.header, req.cn_seq, 0, len);
        // SAFETY: `tx[..out]` is initialised; `kernel` is a live sockaddr_nl
        // of the size passed.
        unsafe {
            libc::sendto(
                fd,
                tx.as_ptr().cast(),
                out,
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
    }
}

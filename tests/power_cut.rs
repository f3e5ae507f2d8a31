//! Power loss with volatile write caches (issue 9 section 1, issue 24): a
//! mirror's disk log must never record a region clean while its legs may
//! differ.
//!
//! Each disk is served by its own `nbdkit` on a unix socket. The volatile
//! ones sit behind `--filter=cache cache=writeback cache-min-block-size=4096`:
//! a plain write reaches the file only when a flush destages the cache, a
//! FUA write goes through at once with its own 4 KiB cache blocks and no
//! other (as a disk with a volatile cache and native FUA: NVMe, SATA, SAS).
//! - leg 0 (vda, volatile) and leg 1 (vdb, the plain file plugin: every
//!   write reaches the file) are qemu's virtio-blk disks over qemu's NBD
//!   client (`file=nbd:unix:SOCK,cache=writeback`). virtio-blk offers no
//!   FUA, so the guest sends a write and a flush where it means FUA; for the
//!   legs that only ever flushes more.
//! - the log device (volatile) is attached by the guest kernel's own NBD
//!   client (nbd.ko through nbd-client, /dev/nbd0) over qemu's user network
//!   (guestfwd from 10.0.2.100 to the server's socket, nothing else
//!   reachable). nbd.ko advertises FUA, so a FUA write arrives at nbdkit as a
//!   lone FUA write: a cut can lose a plain log write that a later FUA write
//!   of another block did not cover, where virtio-blk flushed everything.
//!   (qemu's own disks cannot carry this: scsi-hd with dpofua=on emulates
//!   FUA with a flush of the whole backend, qemu's NVMe drops the FUA bit.)
//!
//! A power cut is SIGKILL of qemu and of every nbdkit at once, 1 to 4 s into
//! a load of random 4 KiB direct writes (fio, 4 jobs) on a mirror of 8192
//! regions of 1 KiB (8 MiB legs); whatever the caches held is lost. The
//! next boot assembles the mirror on the log device as the cut left it (no
//! sync/nosync: the disk log decides what resyncs), waits for sync and
//! compares the legs region by region (tests/scenarios/power_cut_mirror.sh).
//! One boot verifies cut k and then loads for cut k+1, so N cuts take N+1
//! boots.
//!
//! Variants: the kernel's own `disk` log (the calibration: it flushes every
//! leg before it records regions clean), dm-ulogd `disk`, dm-ulogd `disk` +
//! `integrated_flush`, and dm-ulogd `disk` on caches that destage by
//! themselves now and then (the host flushes leg 0's and the log's nbdkit
//! over a second NBD connection every 0.5-1.5 s). Every cut of every variant
//! must leave identical legs.
//!
//! The geometry lets a FUA write leave a plain one behind: with 8192 regions
//! the clean bits take two 512-byte blocks (image sectors 2 and 3), and the
//! log device is the log file from sector 5 on (dm-linear in the guest), so
//! that sector 3 lies in another 4 KiB cache block than sectors 0-2. A FUA
//! write of one bits block then makes nothing of the other durable, as on a
//! real disk (issue 24 section 1); with the image in one cache block, a FUA
//! write of any part of it would have carried the rest along. Checked with
//! a daemon changed so that a FUA write of a plan's last batch stood in for
//! its cache flush after plain batches: it left divergent regions recorded
//! clean in 6 of 6 dm-ulogd cuts here, in none of 6 with the log device on
//! virtio-blk and 1024 regions as before.
//!
//! The model is checked at each cut by two probes the host zeroes before
//! each boot: on vdc (virtio, volatile) the guest writes block 0 and flushes,
//! then writes block 1 and does not; on nbd1 (nbd.ko, volatile) it writes
//! block 0 and flushes, writes block 1 plainly, then block 2 with FUA
//! (O_DIRECT|O_DSYNC through Linux AIO, as dm-ulogd writes its log). After
//! the cut the blocks 0 and nbd1's block 2 must be there and both blocks 1
//! lost: a FUA write is durable alone and flushes nothing before it. The
//! guest checks that vda and vdc have `write back` caches (so it sends
//! flushes) and that nbd0 and nbd1 take FUA.
//!
//! Each cut prints one line (`--nocapture` shows them on a pass):
//! variant, cut time, regions differing on the host right after the cut and
//! how many of those the log recorded clean, then what the guest found after
//! the resync: divergent regions and how many of them were recorded clean.
//!
//! Environment:
//! - `DMULOGD_POWERCUT_SEED`: replay a run (the seed is printed first).
//! - `DMULOGD_POWERCUT_CUTS`: cuts per variant (default 5; at most 3 of the
//!   self-flushing variant).
//! - `DMULOGD_BOOT_TIMEOUT`: seconds per boot (default 150).
//! - `DMULOGD_KEEP=1`: keep the directory (disk files, consoles) after a pass.
//! - `DMULOGD_IMAGE`: use this initramfs instead of building one (built with
//!   `DMULOGD_NBD_CLIENT=1`, which adds nbd-client and the nbd and
//!   virtio_net modules).
//!
//! The host needs nbdkit, nbd-client (copied into the guest) and qemu
//! (initramfs/setup-host.sh); the test fails, never skips, without them.

mod support;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const WORK: &str = env!("CARGO_TARGET_TMPDIR");

/// The guest scenario (tests/scenarios/power_cut_mirror.sh) and its geometry.
const SCENARIO: &str = "power_cut_mirror";
/// 8192 regions: the log's clean bits take two 512-byte blocks (sectors 2
/// and 3 of its image).
const REGIONS: usize = 8192;
const REGION_BYTES: usize = 1 << 10;
const LEG_BYTES: u64 = (REGIONS * REGION_BYTES) as u64;
const LOG_BYTES: u64 = 1 << 20;
const PROBE_BYTES: u64 = 1 << 20;
/// The kernel's disk log format (dm-log.c): magic at byte 0, clean bits from 1024.
const LOG_MAGIC: u32 = 0x4D69_5272;
const LOG_BITS_OFFSET: usize = 1024;
/// The log device is the log file from sector 5 on (a dm-linear target in
/// the guest), so that the image's sectors 0-2 lie in the file's first 4 KiB
/// cache block and sector 3 in the second.
const LOG_IMAGE_OFFSET: usize = 5 * 512;

const DEFAULT_CUTS_PER_VARIANT: usize = 5;
/// The self-flushing variant gets fewer: it adds no code path, only timing.
const SELF_FLUSHING_CUTS: usize = 3;
/// The cut comes this long after the guest saw the load's first writes.
const CUT_MIN_MS: u64 = 1000;
const CUT_MAX_MS: u64 = 4000;
/// Self-destaging caches: a flush of leg 0 and of the log every 0.5-1.5 s.
const SELF_FLUSH_MIN_MS: u64 = 500;
const SELF_FLUSH_MAX_MS: u64 = 1500;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    KernelDisk,
    UlogdDisk,
    UlogdDiskIntegratedFlush,
    UlogdDiskSelfFlushingCaches,
}

const VARIANTS: [Variant; 4] = [
    Variant::KernelDisk,
    Variant::UlogdDisk,
    Variant::UlogdDiskIntegratedFlush,
    Variant::UlogdDiskSelfFlushingCaches,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::KernelDisk => "kernel-disk",
            Variant::UlogdDisk => "dm-ulogd-disk",
            Variant::UlogdDiskIntegratedFlush => "dm-ulogd-disk-integrated_flush",
            Variant::UlogdDiskSelfFlushingCaches => "dm-ulogd-disk-self-flushing-caches",
        }
    }

    /// The scenario's LOG parameter.
    fn guest_log(self) -> &'static str {
        match self {
            Variant::KernelDisk => "kdisk",
            Variant::UlogdDisk | Variant::UlogdDiskSelfFlushingCaches => "udisk",
            Variant::UlogdDiskIntegratedFlush => "udisk_if",
        }
    }

    fn self_flushing(self) -> bool {
        self == Variant::UlogdDiskSelfFlushingCaches
    }
}

/// splitmix64: a seeded, replayable sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text}: not a number ({e})")),
    )
}

/// A program the test cannot do without; panics naming the package.
fn require_program(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed: run initramfs/setup-host.sh (Debian package {package})"
    );
}

/// How the guest sees a disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// qemu's NBD client under a virtio-blk disk (/dev/vda, /dev/vdb, ... in
    /// the order of DISKS): no FUA, the guest sends a write and a flush.
    Virtio,
    /// The guest kernel's own NBD client (nbd.ko) over qemu's user network,
    /// GUEST_NBD_HOST at this port forwarded to the disk's socket: FUA
    /// writes reach nbdkit as such.
    GuestNbd(u16),
}

/// The disk files and their nbdkit servers.
struct Disk {
    name: &'static str,
    bytes: u64,
    attach: Attach,
    /// Behind nbdkit's cache filter with cache=writeback (volatile).
    volatile: bool,
    /// Flushed by the host now and then in the self-flushing variant.
    self_flushing: bool,
}

/// The guest address of the guest-attached disks' servers
/// (tests/scenarios/power_cut_mirror.sh: NBD_HOST, LOG_PORT, FUA_PROBE_PORT).
const GUEST_NBD_HOST: &str = "10.0.2.100";

const LEG0: usize = 0;
const LEG1: usize = 1;
const LOG: usize = 2;
const PROBE: usize = 3;
const FUA_PROBE: usize = 4;
const DISKS: [Disk; 5] = [
    Disk {
        name: "leg0",
        bytes: LEG_BYTES,
        attach: Attach::Virtio,
        volatile: true,
        self_flushing: true,
    },
    Disk {
        name: "leg1",
        bytes: LEG_BYTES,
        attach: Attach::Virtio,
        volatile: false,
        self_flushing: false,
    },
    // /dev/nbd0 in the guest.
    Disk {
        name: "log",
        bytes: LOG_BYTES,
        attach: Attach::GuestNbd(10809),
        volatile: true,
        self_flushing: true,
    },
    // /dev/vdc: the guest writes block 0 and flushes, then writes block 1
    // and does not.
    Disk {
        name: "probe",
        bytes: PROBE_BYTES,
        attach: Attach::Virtio,
        volatile: true,
        self_flushing: false,
    },
    // /dev/nbd1: block 0 written and flushed, block 1 written plain, then
    // block 2 written with FUA.
    Disk {
        name: "fua-probe",
        bytes: PROBE_BYTES,
        attach: Attach::GuestNbd(10810),
        volatile: true,
        self_flushing: false,
    },
];
const PROBE_BLOCK: usize = 4096;
/// The cache filter's block (the default is 64 KiB): a FUA write makes its
/// whole cache blocks durable and no other, so they must be no larger than
/// the probe's blocks, and LOG_IMAGE_OFFSET puts a cache block boundary
/// between the log's two bits blocks.
const CACHE_BLOCK_BYTES: usize = 4096;

fn file_of(dir: &Path, disk: &Disk) -> PathBuf {
    dir.join(format!("{}.img", disk.name))
}

fn socket_of(dir: &Path, disk: &Disk) -> PathBuf {
    dir.join(format!("{}.sock", disk.name))
}

/// Starts one nbdkit per disk on the disk files as they are; returns once
/// each listens (its pid file is written when it is ready).
fn start_servers(dir: &Path) -> Vec<Child> {
    let mut servers = Vec::new();
    for disk in &DISKS {
        let sock = socket_of(dir, disk);
        assert!(
            sock.as_os_str().len() < 108,
            "socket path {} too long for a unix socket (108 bytes): set CARGO_TARGET_DIR to a shorter path",
            sock.display()
        );
        let pidfile = dir.join(format!("{}.nbdkit.pid", disk.name));
        let _ = fs::remove_file(&sock);
        let _ = fs::remove_file(&pidfile);
        let log =
            File::create(dir.join(format!("{}.nbdkit.log", disk.name))).expect("create nbdkit log");
        let mut cmd = Command::new("nbdkit");
        cmd.arg("--foreground")
            .arg("--exit-with-parent")
            .arg("--unix")
            .arg(&sock)
            .arg("--pidfile")
            .arg(&pidfile);
        if disk.volatile {
            cmd.arg("--filter=cache");
        }
        cmd.arg("file").arg(file_of(dir, disk));
        if disk.volatile {
            cmd.arg("cache=writeback")
                .arg(format!("cache-min-block-size={CACHE_BLOCK_BYTES}"));
        }
        // The cache filter keeps its (unlinked) cache file in TMPDIR.
        let child = cmd
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nbdkit: {e}"));
        servers.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty()) {
            assert!(
                Instant::now() < deadline,
                "nbdkit for {} not ready after 10 s (see {}.nbdkit.log)",
                disk.name,
                disk.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    servers
}

/// The smallest NBD client that asks a server to flush: fixed newstyle
/// handshake, NBD_OPT_EXPORT_NAME of the default export, NBD_CMD_FLUSH.
struct NbdFlushClient {
    stream: UnixStream,
    handle: u64,
}

const NBD_INIT_MAGIC: &[u8; 8] = b"NBDMAGIC";
const NBD_OPT_MAGIC: &[u8; 8] = b"IHAVEOPT";
const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
const NBD_OPT_EXPORT_NAME: u32 = 1;
const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const NBD_CMD_FLUSH: u16 = 3;

impl NbdFlushClient {
    fn connect(sock: &Path) -> io::Result<Self> {
        let mut stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut hello = [0u8; 18];
        stream.read_exact(&mut hello)?;
        let server_flags = u16::from_be_bytes([hello[16], hello[17]]);
        if &hello[..8] != NBD_INIT_MAGIC
            || &hello[8..16] != NBD_OPT_MAGIC
            || server_flags & NBD_FLAG_FIXED_NEWSTYLE == 0
        {
            return Err(io::Error::other("not a fixed-newstyle NBD server"));
        }
        let no_zeroes = server_flags & NBD_FLAG_NO_ZEROES != 0;
        let client_flags = u32::from(server_flags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
        let mut opt = Vec::with_capacity(20);
        opt.extend_from_slice(&client_flags.to_be_bytes());
        opt.extend_from_slice(NBD_OPT_MAGIC);
        opt.extend_from_slice(&NBD_OPT_EXPORT_NAME.to_be_bytes());
        opt.extend_from_slice(&0u32.to_be_bytes());
        stream.write_all(&opt)?;
        // Export size (8), transmission flags (2), 124 zeroes unless NO_ZEROES.
        let mut export = vec![0u8; if no_zeroes { 10 } else { 134 }];
        stream.read_exact(&mut export)?;
        let flags = u16::from_be_bytes([export[8], export[9]]);
        if flags & NBD_FLAG_SEND_FLUSH == 0 {
            return Err(io::Error::other("the export does not take flushes"));
        }
        Ok(NbdFlushClient { stream, handle: 0 })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.handle += 1;
        let mut req = Vec::with_capacity(28);
        req.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes()); // command flags
        req.extend_from_slice(&NBD_CMD_FLUSH.to_be_bytes());
        req.extend_from_slice(&self.handle.to_be_bytes());
        req.extend_from_slice(&0u64.to_be_bytes()); // offset
        req.extend_from_slice(&0u32.to_be_bytes()); // length
        self.stream.write_all(&req)?;
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply)?;
        let magic = u32::from_be_bytes(reply[..4].try_into().expect("4 bytes"));
        let error = u32::from_be_bytes(reply[4..8].try_into().expect("4 bytes"));
        let handle = u64::from_be_bytes(reply[8..].try_into().expect("8 bytes"));
        if magic != NBD_SIMPLE_REPLY_MAGIC || handle != self.handle {
            return Err(io::Error::other("bad NBD reply"));
        }
        if error != 0 {
            return Err(io::Error::other(format!("NBD flush failed: error {error}")));
        }
        Ok(())
    }
}

/// Flushes leg 0's and the log's caches now and then until told to stop:
/// caches that destage by themselves.
struct SelfFlusher {
    stop: Arc<AtomicBool>,
    flushes: Arc<AtomicUsize>,
    thread: thread::JoinHandle<Result<(), String>>,
}

impl SelfFlusher {
    fn start(dir: &Path, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flushes = Arc::new(AtomicUsize::new(0));
        let socks: Vec<PathBuf> = DISKS
            .iter()
            .filter(|d| d.self_flushing)
            .map(|d| socket_of(dir, d))
            .collect();
        let (stop2, flushes2) = (stop.clone(), flushes.clone());
        let thread = thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut clients = Vec::new();
            for s in &socks {
                clients.push(
                    NbdFlushClient::connect(s)
                        .map_err(|e| format!("NBD connect {}: {e}", s.display()))?,
                );
            }
            loop {
                let wake = Instant::now()
                    + Duration::from_millis(rng.between(SELF_FLUSH_MIN_MS, SELF_FLUSH_MAX_MS));
                while Instant::now() < wake {
                    if stop2.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                for c in &mut clients {
                    if let Err(e) = c.flush() {
                        // A flush cut short by the power cut is no error.
                        if stop2.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        return Err(format!("NBD flush: {e}"));
                    }
                }
                flushes2.fetch_add(1, Ordering::SeqCst);
            }
        });
        SelfFlusher {
            stop,
            flushes,
            thread,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// How many times both caches were flushed.
    fn finish(self) -> usize {
        self.stop();
        match self.thread.join() {
            Ok(Ok(())) => self.flushes.load(Ordering::SeqCst),
            Ok(Err(e)) => panic!("self-flushing caches: {e}"),
            Err(_) => panic!("self-flushing caches: the thread panicked"),
        }
    }
}

/// What the guest printed after a cut's resync (POWERCUT-VERIFY line).
#[derive(Default)]
struct Verified {
    identical: bool,
    header_valid: bool,
    clean_before: usize,
    divergent: usize,
    divergent_clean: usize,
    first: String,
}

fn parse_verify(line: &str) -> Verified {
    let mut v = Verified::default();
    for word in line.split_whitespace().skip(1) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let number = || value.parse::<usize>().unwrap_or(usize::MAX);
        match key {
            "identical" => v.identical = value == "yes",
            "header" => v.header_valid = value == format!("{LOG_MAGIC:x}:2:{REGIONS}"),
            "clean_before" => v.clean_before = number(),
            "divergent" => v.divergent = number(),
            "divergent_clean" => v.divergent_clean = number(),
            "first" => v.first = value.to_string(),
            _ => {}
        }
    }
    v
}

/// One cut and what followed.
struct Cut {
    variant: Variant,
    at_ms: u64,
    /// Regions whose leg files differ right after the cut, and how many of
    /// those the log device records clean (host side).
    lost: usize,
    lost_clean: usize,
    /// The probe after the cut: Err says how the disks failed the model.
    probe: Result<(), String>,
    self_flushes: Option<usize>,
    verified: Option<Verified>,
}

impl Cut {
    fn line(&self, index: usize, total: usize) -> String {
        let mut s = format!(
            "cut {:>2}/{total} {:<34} at {:.2} s: after the cut {:>4} regions differ ({:>4} recorded clean)",
            index + 1,
            self.variant.name(),
            self.at_ms as f64 / 1000.0,
            self.lost,
            self.lost_clean,
        );
        match &self.verified {
            Some(v) => {
                let _ = write!(
                    s,
                    "; after resync {:>4} divergent ({:>4} recorded clean), legs {}",
                    v.divergent,
                    v.divergent_clean,
                    if v.identical { "identical" } else { "differ" }
                );
                if v.divergent > 0 {
                    let _ = write!(s, ", first {}", v.first);
                }
            }
            None => s.push_str("; no verify line from the guest"),
        }
        if let Some(n) = self.self_flushes {
            let _ = write!(s, " [{n} cache flushes]");
        }
        if let Err(e) = &self.probe {
            let _ = write!(s, "; PROBE: {e}");
        }
        s
    }

    fn failed(&self) -> bool {
        if self.probe.is_err() {
            return true;
        }
        match &self.verified {
            Some(v) => !v.identical || v.divergent != 0 || !v.header_valid || v.clean_before == 0,
            None => true,
        }
    }
}

/// Host side, right after a cut: regions whose leg files differ, and the
/// clean bits of the log file (none when its header is not a valid log).
fn inspect_files(dir: &Path) -> (Vec<usize>, Vec<bool>) {
    let leg0 = fs::read(file_of(dir, &DISKS[LEG0])).expect("read leg0.img");
    let leg1 = fs::read(file_of(dir, &DISKS[LEG1])).expect("read leg1.img");
    let log = fs::read(file_of(dir, &DISKS[LOG])).expect("read log.img");
    let differing = (0..REGIONS)
        .filter(|r| {
            let span = r * REGION_BYTES..(r + 1) * REGION_BYTES;
            leg0[span.clone()] != leg1[span]
        })
        .collect();
    let image = &log[LOG_IMAGE_OFFSET..];
    let magic = u32::from_le_bytes(image[..4].try_into().expect("4 bytes"));
    let clean = (0..REGIONS)
        .map(|r| magic == LOG_MAGIC && image[LOG_BITS_OFFSET + r / 8] >> (r % 8) & 1 == 1)
        .collect();
    (differing, clean)
}

/// What the guest wrote to a probe's block before the cut.
#[derive(Clone, Copy)]
enum ProbeWrite {
    /// Written, then the disk flushed: must survive.
    Flushed,
    /// Written with no flush after it: must be lost.
    Plain,
    /// Written with FUA after the plain one, no flush: must survive alone.
    Fua,
}

/// Each probe and its blocks 0, 1, ... as tests/scenarios/power_cut_mirror.sh
/// writes them.
const PROBES: [(usize, &[ProbeWrite]); 2] = [
    (PROBE, &[ProbeWrite::Flushed, ProbeWrite::Plain]),
    (
        FUA_PROBE,
        &[ProbeWrite::Flushed, ProbeWrite::Plain, ProbeWrite::Fua],
    ),
];

/// Host side, right after a cut: did each probe block survive or vanish as
/// the model says (the host zeroes the probes before each boot)?
fn probe_verdict(dir: &Path) -> Result<(), String> {
    let mut wrong = Vec::new();
    for (disk, blocks) in PROBES {
        let disk = &DISKS[disk];
        let data =
            fs::read(file_of(dir, disk)).unwrap_or_else(|e| panic!("read {}.img: {e}", disk.name));
        for (b, &write) in blocks.iter().enumerate() {
            let survived = data[b * PROBE_BLOCK..(b + 1) * PROBE_BLOCK]
                .iter()
                .any(|&x| x != 0);
            let problem = match (write, survived) {
                (ProbeWrite::Flushed, false) => "a flushed write did not survive the cut",
                (ProbeWrite::Plain, true) => "an unflushed write survived the cut",
                (ProbeWrite::Fua, false) => "a FUA write did not survive the cut",
                _ => continue,
            };
            wrong.push(format!("{} block {b}: {problem}", disk.name));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

fn zero_probes(dir: &Path) {
    for (disk, _) in PROBES {
        let f = File::create(file_of(dir, &DISKS[disk])).expect("create a probe's file");
        f.set_len(PROBE_BYTES).expect("size a probe's file");
    }
}

/// A qemu for boot.sh (its QEMU) that adds the user network whose forwards
/// reach the guest-attached disks' servers; no other address is reachable
/// (restrict=on), and no option ROM is loaded for the card.
fn write_qemu_with_network(dir: &Path) -> PathBuf {
    let mut netdev = String::from("user,id=n0,restrict=on");
    for disk in &DISKS {
        if let Attach::GuestNbd(port) = disk.attach {
            let sock = socket_of(dir, disk);
            let sock = sock.to_str().expect("a UTF-8 socket path");
            assert!(
                !sock.contains([',', ' ', '\'', '"']),
                "socket path {sock}: qemu's option syntax cannot take commas, spaces or quotes in it"
            );
            let _ = write!(netdev, ",guestfwd=tcp:{GUEST_NBD_HOST}:{port}-unix:{sock}");
        }
    }
    let script = dir.join("qemu-with-network.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec qemu-system-x86_64 \"$@\" -netdev '{netdev}' \
             -device virtio-net-pci,netdev=n0,romfile=\n"
        ),
    )
    .expect("write the qemu wrapper");
    let mut perms = fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&script, perms).expect("chmod the qemu wrapper");
    script
}

/// What one boot did.
struct Boot {
    verify_line: Option<String>,
    cut_at_ms: Option<u64>,
    self_flushes: Option<usize>,
    console: PathBuf,
}

/// Boots the guest on the disk files: verifies `verify`'s cut first if
/// given, then loads for `load` and cuts the power `cut_after` after the
/// load's first writes. Without a load the guest must pass.
fn boot(
    image: &Path,
    qemu_binary: &Path,
    dir: &Path,
    index: usize,
    verify: Option<Variant>,
    load: Option<(Variant, Duration)>,
    rng: &mut Rng,
) -> Boot {
    let mut servers = start_servers(dir);
    let flusher = match load {
        Some((v, _)) if v.self_flushing() => Some(SelfFlusher::start(dir, rng.next())),
        _ => None,
    };

    let mut append = String::new();
    if let Some(v) = verify {
        let _ = write!(append, "powercut.verify={} ", v.guest_log());
    }
    if let Some((v, _)) = load {
        let _ = write!(append, "powercut.load={}", v.guest_log());
    }
    let drives: Vec<String> = DISKS
        .iter()
        .filter(|d| d.attach == Attach::Virtio)
        .map(|d| {
            format!(
                "file=nbd:unix:{},format=raw,if=virtio,cache=writeback",
                socket_of(dir, d).display()
            )
        })
        .collect();
    let qemu_pidfile = dir.join("qemu.pid");
    let _ = fs::remove_file(&qemu_pidfile);
    let console_path = dir.join(format!("console-{index:02}.log"));
    let mut console = File::create(&console_path).expect("create console log");
    let timeout: u64 = env_number("DMULOGD_BOOT_TIMEOUT").unwrap_or(150);
    let script = support::repo("initramfs/boot.sh");
    let mut qemu = Command::new("sh")
        .arg(&script)
        .arg(image)
        .arg(SCENARIO)
        .env("BOOT_TIMEOUT", timeout.to_string())
        .env("BOOT_APPEND", append.trim())
        .env("BOOT_DRIVES", drives.join(" "))
        .env("BOOT_PIDFILE", &qemu_pidfile)
        .env("QEMU", qemu_binary)
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));

    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(qemu.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(qemu.stderr.take().expect("stderr")),
    ]
    .into_iter()
    .map(|out| {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut out = BufReader::new(out);
            let mut buf = Vec::new();
            while out.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        })
    })
    .collect();
    drop(tx);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout + 30);
    let mut verify_line = None;
    let mut cut_due: Option<Instant> = None;
    let mut load_started: Option<Instant> = None;
    let mut cut_at_ms = None;
    let mut passed = false;
    loop {
        let wait = cut_due
            .map_or(Duration::from_millis(200), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let _ = writeln!(console, "{line}");
                if line.starts_with("POWERCUT-VERIFY ") {
                    verify_line = Some(line);
                } else if line.starts_with("POWERCUT-LOAD-STARTED") {
                    if let Some((_, after)) = load {
                        load_started = Some(Instant::now());
                        cut_due = Some(Instant::now() + after);
                    }
                } else if line == "DMULOGD-RESULT: PASS" {
                    passed = true;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if cut_due.is_some_and(|t| Instant::now() >= t) {
            cut_due = None;
            if let Some(f) = &flusher {
                f.stop();
            }
            // The power cut: qemu and every disk at once.
            let qemu_pid: i32 = fs::read_to_string(&qemu_pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("no qemu pid in {}", qemu_pidfile.display()));
            let _ = kill(Pid::from_raw(qemu_pid), Signal::SIGKILL);
            for s in &servers {
                let _ = kill(Pid::from_raw(s.id() as i32), Signal::SIGKILL);
            }
            cut_at_ms = load_started.map(|t| t.elapsed().as_millis() as u64);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            panic!(
                "boot {index} still running after {} s; console: {}",
                timeout + 30,
                console_path.display()
            );
        }
    }
    let _ = qemu.wait();
    for r in readers {
        let _ = r.join();
    }
    let self_flushes = flusher.map(SelfFlusher::finish);
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }

    let tail = || {
        let text = fs::read_to_string(&console_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    match load {
        Some(_) => assert!(
            cut_at_ms.is_some(),
            "boot {index}: the guest never started its load ({}):\n{}",
            console_path.display(),
            tail()
        ),
        None => assert!(
            passed,
            "boot {index}: the guest did not pass ({}):\n{}",
            console_path.display(),
            tail()
        ),
    }
    Boot {
        verify_line,
        cut_at_ms,
        self_flushes,
        console: console_path,
    }
}

#[test]
fn power_cut_with_volatile_write_caches() {
    require_program("nbdkit", "nbdkit");
    require_program("nbd-client", "nbd-client");
    require_program("qemu-system-x86_64", "qemu-system-x86");

    let seed = env_number("DMULOGD_POWERCUT_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
    });
    eprintln!("power cut: seed {seed} (DMULOGD_POWERCUT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let per_variant =
        env_number("DMULOGD_POWERCUT_CUTS").map_or(DEFAULT_CUTS_PER_VARIANT, |n| n as usize);
    // Round-robin, so that every variant is cut early and late.
    let plan: Vec<Variant> = (0..per_variant)
        .flat_map(|round| {
            VARIANTS
                .into_iter()
                .filter(move |v| !v.self_flushing() || round < SELF_FLUSHING_CUTS)
        })
        .collect();

    let dir = Path::new(WORK).join("power-cut");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let started = Instant::now();
    let image = match std::env::var_os("DMULOGD_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let image = dir.join("image.cpio.gz");
            support::build_image_with(
                &image,
                Path::new(DAEMON),
                &[("DMULOGD_ARCH", "x86_64"), ("DMULOGD_NBD_CLIENT", "1")],
            )
            .unwrap_or_else(|e| panic!("cannot build the test initramfs: {e}"));
            image
        }
    };
    let qemu = write_qemu_with_network(&dir);
    for disk in &DISKS {
        let f = File::create(file_of(&dir, disk)).expect("create disk file");
        f.set_len(disk.bytes).expect("size disk file");
    }

    let mut cuts: Vec<Cut> = Vec::new();
    for index in 0..=plan.len() {
        let verify = index.checked_sub(1).map(|i| plan[i]);
        let load = plan.get(index).map(|&v| {
            (
                v,
                Duration::from_millis(rng.between(CUT_MIN_MS, CUT_MAX_MS)),
            )
        });
        if let Some(last) = cuts.last_mut() {
            let (differing, clean) = inspect_files(&dir);
            last.lost = differing.len();
            last.lost_clean = differing.iter().filter(|&&r| clean[r]).count();
        }
        zero_probes(&dir);
        let b = boot(&image, &qemu, &dir, index, verify, load, &mut rng);
        let done = cuts.len();
        if let Some(last) = cuts.last_mut() {
            last.verified = b.verify_line.as_deref().map(parse_verify);
            eprintln!("power cut: {}", last.line(done - 1, plan.len()));
            if last.verified.is_none() {
                eprintln!(
                    "power cut: no POWERCUT-VERIFY line in {}",
                    b.console.display()
                );
            }
        }
        if let Some((variant, _)) = load {
            cuts.push(Cut {
                variant,
                at_ms: b.cut_at_ms.expect("cut time"),
                lost: 0,
                lost_clean: 0,
                probe: probe_verdict(&dir),
                self_flushes: b.self_flushes,
                verified: None,
            });
        }
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "power cut: seed {seed}, {} cuts in {:.0} s",
        cuts.len(),
        started.elapsed().as_secs_f64()
    );
    for (i, c) in cuts.iter().enumerate() {
        let _ = writeln!(report, "{}", c.line(i, cuts.len()));
    }
    let mut problems = Vec::new();
    for variant in VARIANTS {
        let of: Vec<&Cut> = cuts.iter().filter(|c| c.variant == variant).collect();
        let failed = of.iter().filter(|c| c.failed()).count();
        let worst = of
            .iter()
            .filter_map(|c| c.verified.as_ref().map(|v| v.divergent))
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            report,
            "{}: {failed} of {} cuts failed (up to {worst} divergent regions)",
            variant.name(),
            of.len()
        );
        if failed > 0 {
            problems.push(format!(
                "{}: {failed} of {} cuts failed",
                variant.name(),
                of.len()
            ));
        }
    }
    eprint!("{report}");
    assert!(
        problems.is_empty(),
        "{}\n{report}files: {} (DMULOGD_POWERCUT_SEED={seed} replays the cut times)",
        problems.join("; "),
        dir.display()
    );
    if std::env::var_os("DMULOGD_KEEP").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
}

//! Architecture tests (issue 12): dm-ulogd built for aarch64, big-endian
//! s390x and i686, each serving the real kernel of its own architecture
//! under qemu TCG (i686: the x86_64 kernel, through its compat syscalls),
//! with the same initramfs layout and scenario library as tests/kernel.rs.
//!
//! Each architecture runs `CORE_SET` in one boot (tests/scenarios/parts.sh
//! runs the unchanged scenarios one after the other; a boot under TCG costs
//! 10-20 s); i686 in two, which balances the two test threads (see the test
//! order below). The x86_64 build runs `log_image_bytes` too, so that every
//! architecture is held to the same fixed disk image bytes.
//!
//! The binaries come from initramfs/build-arch.sh (cargo with the targets of
//! .cargo/config.toml), the kernels and foreign userlands from Debian's
//! archive (initramfs/fetch-kernel.sh, foreign-userland.sh); the host needs
//! what initramfs/setup-host.sh installs (it calls setup-arch.sh). These
//! tests fail, never skip, when any of it is missing.
//!
//! Environment:
//! - `DMULOGD_BOOT_TIMEOUT`: seconds per boot (default 900); a hung guest fails.
//! - `DMULOGD_KEEP=1`: keep each test's directory (disks, console) after a pass.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use support::{fresh_dir, sparse_disks, tail};

const WORK: &str = env!("CARGO_TARGET_TMPDIR");
/// The x86_64 binary of this test build.
const X86_64_DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");

/// Size of each sparse virtio disk: every part carves fresh space from it.
const DISK_BYTES: u64 = 4 << 30;

/// The real-kernel scenarios each architecture runs (tests/scenarios/).
const CORE_SET: &[&str] = &[
    "core_sync",
    "core_nosync",
    "disk_reload",
    "interop",
    "log_image_bytes",
    "integrated_flush",
    "bad_tables",
    KILL_CORE,
];

/// SIGKILL and restart under load: i686 runs it in a boot of its own (see
/// the test order below).
const KILL_CORE: &str = "kill_core";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    X86_64,
    I686,
    Aarch64,
    S390x,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::I686 => "i686",
            Arch::Aarch64 => "aarch64",
            Arch::S390x => "s390x",
        }
    }

    /// The host tools the guest of this architecture needs beyond the
    /// x86_64 harness.
    fn tools(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 | Arch::I686 => &["qemu-system-x86_64", "readelf"],
            Arch::Aarch64 => &["qemu-system-aarch64", "readelf"],
            Arch::S390x => &["qemu-system-s390x", "readelf", "s390x-linux-gnu-gcc"],
        }
    }
}

fn work_dir() -> PathBuf {
    Path::new(WORK).join("arch-tests")
}

fn check_tools(arch: Arch) -> Result<(), String> {
    for tool in arch.tools() {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "{tool} is not installed: run `sh initramfs/setup-host.sh` as root"
            ));
        }
    }
    Ok(())
}

fn run_script(script: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
    let path = support::repo(script);
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(&path)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{script} {} failed ({}); is the host set up (sh initramfs/setup-host.sh)?\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 40),
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    eprintln!(
        "arch tests: {script} {} -> {last} ({:.1} s)",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(last)
}

/// The dm-ulogd binary for `arch`: this test build's for x86_64, else
/// initramfs/build-arch.sh's (one documented command per architecture).
fn binary(arch: Arch) -> Result<PathBuf, String> {
    if arch == Arch::X86_64 {
        return Ok(PathBuf::from(X86_64_DAEMON));
    }
    let bin = run_script("initramfs/build-arch.sh", &[arch.name()], &[])?;
    let size = fs::metadata(&bin).map_err(|e| format!("{bin}: {e}"))?.len();
    eprintln!(
        "arch tests: dm-ulogd for {}: {size} bytes ({} KiB)",
        arch.name(),
        size / 1024
    );
    Ok(PathBuf::from(bin))
}

fn build_image(arch: Arch) -> Result<PathBuf, String> {
    check_tools(arch)?;
    let bin = binary(arch)?;
    let dir = work_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let image = dir.join(format!("image-{}.cpio.gz", arch.name()));
    support::build_image(&image, &bin, arch.name())?;
    Ok(image)
}

/// Each architecture's initramfs, built once per test binary run.
fn image(arch: Arch) -> &'static Path {
    static IMAGES: [OnceLock<Result<PathBuf, String>>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = &IMAGES[arch as usize];
    match slot.get_or_init(|| build_image(arch)) {
        Ok(p) => p,
        Err(e) => panic!("cannot build the {} initramfs: {e}", arch.name()),
    }
}

/// Boots `arch`'s kernel once and runs `parts` (tests/scenarios/parts.sh)
/// in the directory `label` (disks, console); panics unless every part
/// passed.
fn run_parts(arch: Arch, label: &str, parts: &[&str]) {
    let image = image(arch);
    let dir = fresh_dir(work_dir().join(label));
    let disks = sparse_disks(&dir, 2, DISK_BYTES);
    let append = format!("dmulogd.parts={}", parts.join(","));
    let envs = [
        ("DMULOGD_ARCH", arch.name()),
        ("BOOT_APPEND", append.as_str()),
    ];
    let console = support::boot(image, "parts", &disks, &dir, "console.log", &envs, 900);
    support::judge_parts(&console, parts, &format!("arch test {label}"), &dir);
}

// libtest starts tests in the order of their names, as many at once as the
// machine has cores (CI: two). The names start the two longest boots first
// (aarch64 about 190 s, s390x about 235 s with image builds, TCG, measured
// with two at once), then i686 in two boots (about 105 s without
// kill_core, 85 s with only it) and x86_64 (30 s), so that both threads end
// within about 30 s of each other: about 335 s in all by those boot times;
// with i686 in one boot the run took 410 s (its 180 s boot ran after
// aarch64's on one thread while the other idled for over 100 s).

/// Big-endian: the native-endian protocol and the little-endian disk log
/// kept apart, on the s390x kernel (virtio-blk-ccw disks; two vCPUs, which
/// initramfs/boot.sh explains).
#[test]
fn big_endian_s390x_core_set() {
    run_parts(Arch::S390x, "s390x", CORE_SET);
}

/// Little-endian arm64: the cloud kernel (-M virt, virtio-blk-pci disks).
#[test]
fn aarch64_little_endian_core_set() {
    run_parts(Arch::Aarch64, "aarch64", CORE_SET);
}

/// A 32-bit daemon on the x86_64 kernel: the connector's netlink layout,
/// 64-bit fields, recvmmsg/sendmmsg and mmap through the compat syscalls.
/// The core set without kill_core, which `compat_i686_kill_core` runs in a
/// boot of its own (see the test order above).
#[test]
fn compat_i686_core_set() {
    run_parts(Arch::I686, "i686", &core_set_without_kill_core());
}

fn core_set_without_kill_core() -> Vec<&'static str> {
    CORE_SET
        .iter()
        .copied()
        .filter(|&p| p != KILL_CORE)
        .collect()
}

/// The i686 daemon killed with SIGKILL and restarted under load.
#[test]
fn compat_i686_kill_core() {
    run_parts(Arch::I686, "i686-kill_core", &[KILL_CORE]);
}

/// The x86_64 build writes the same fixed disk image bytes as the others.
#[test]
fn x86_64_log_image_bytes() {
    run_parts(Arch::X86_64, "x86_64", &["log_image_bytes"]);
}

//! Kernel tests (issue 23): the kernels users boot besides Debian 12's 6.1
//! that tests/kernel.rs boots. Debian 11's 5.10 and Debian 13's 6.12 cloud
//! kernels each run `CORE_SET` in one boot (tests/scenarios/parts.sh runs
//! the unchanged scenarios one after the other), the two boots side by
//! side on libtest's two threads. docs/kernels.md has the table of kernels.
//!
//! initramfs/fetch-kernel.sh fetches each kernel (DMULOGD_KERNEL) from that
//! release's archive through a private apt configuration; build-image.sh
//! takes its modules from /lib/modules (5.10) or, compressed,
//! /usr/lib/modules (6.12). These tests fail, never skip, when any of it is
//! missing.
//!
//! Environment:
//! - `DMULOGD_BOOT_TIMEOUT`: seconds per boot (default 900); a hung guest fails.
//! - `DMULOGD_KEEP=1`: keep each test's directory (disks, console) after a pass.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use support::{fresh_dir, sparse_disks};

const WORK: &str = env!("CARGO_TARGET_TMPDIR");
const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");

/// Size of each sparse virtio disk: every part carves fresh space from it.
const DISK_BYTES: u64 = 4 << 30;

/// What every kernel must serve: core and disk logs, the kernel's disk log
/// handed over in both directions (interop) with the same bytes on the
/// device (log_image_bytes), integrated_flush, refused tables, a table
/// load that fails after its CTR (and SIGTERM at once after one), and
/// SIGKILL and restart under load.
const CORE_SET: &[&str] = &[
    "core_sync",
    "core_nosync",
    "disk_reload",
    "interop",
    "log_image_bytes",
    "integrated_flush",
    "bad_tables",
    "failed_load",
    "sigterm_after_failed_load",
    "kill_core",
];

#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// Debian 11: linux-image-5.10.0-N-cloud-amd64.
    Bullseye,
    /// Debian 13: linux-image-6.12.N+deb13-cloud-amd64.
    Trixie,
}

impl Kernel {
    /// DMULOGD_KERNEL's value for fetch-kernel.sh, build-image.sh, boot.sh.
    fn release(self) -> &'static str {
        match self {
            Kernel::Bullseye => "bullseye",
            Kernel::Trixie => "trixie",
        }
    }

    /// How the kernel's version starts (its vmlinuz-VERSION).
    fn version_prefix(self) -> &'static str {
        match self {
            Kernel::Bullseye => "5.10.",
            Kernel::Trixie => "6.12.",
        }
    }
}

fn work_dir() -> PathBuf {
    Path::new(WORK).join("kernels-tests")
}

/// The kernel's vmlinuz (initramfs/fetch-kernel.sh), checked to be the
/// version asked for.
fn vmlinuz(kernel: Kernel) -> Result<PathBuf, String> {
    let script = support::repo("initramfs/fetch-kernel.sh");
    let out = Command::new("sh")
        .arg(&script)
        .env("DMULOGD_KERNEL", kernel.release())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "DMULOGD_KERNEL={} {} failed ({}):\n{}",
            kernel.release(),
            script.display(),
            out.status,
            support::tail(&String::from_utf8_lossy(&out.stderr), 20)
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = path.rsplit_once("/vmlinuz-").map(|(_, v)| v).unwrap_or("");
    if !version.starts_with(kernel.version_prefix()) {
        return Err(format!(
            "DMULOGD_KERNEL={} gave {path}, not a {}* kernel",
            kernel.release(),
            kernel.version_prefix()
        ));
    }
    Ok(PathBuf::from(path))
}

/// The kernel's vmlinuz and an initramfs with its modules, built once.
fn kernel_and_image(kernel: Kernel) -> &'static (PathBuf, PathBuf) {
    static BUILT: [OnceLock<Result<(PathBuf, PathBuf), String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let built = BUILT[kernel as usize].get_or_init(|| {
        let vmlinuz = vmlinuz(kernel)?;
        let dir = work_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let image = dir.join(format!("image-{}.cpio.gz", kernel.release()));
        support::build_image_with(
            &image,
            Path::new(DAEMON),
            &[("DMULOGD_KERNEL", kernel.release())],
        )?;
        Ok((vmlinuz, image))
    });
    match built {
        Ok(b) => b,
        Err(e) => panic!("cannot set up the {} kernel: {e}", kernel.release()),
    }
}

/// Boots `kernel` once with `CORE_SET` as parts; panics unless every part
/// passed.
fn run_core_set(kernel: Kernel) {
    let (vmlinuz, image) = kernel_and_image(kernel);
    let label = kernel.release();
    let dir = fresh_dir(work_dir().join(label));
    let disks = sparse_disks(&dir, 2, DISK_BYTES);
    let append = format!("dmulogd.parts={}", CORE_SET.join(","));
    let kernel_path = vmlinuz.to_string_lossy();
    let envs = [
        ("DMULOGD_KERNEL", label),
        ("BOOT_KERNEL", kernel_path.as_ref()),
        ("BOOT_APPEND", append.as_str()),
    ];
    let console = support::boot(image, "parts", &disks, &dir, "console.log", &envs, 900);
    eprintln!("kernel {label}: {}", vmlinuz.display());
    support::judge_parts(&console, CORE_SET, &format!("kernel {label}"), &dir);
}

/// Debian 11's 5.10: modules uncompressed under /lib/modules, virtio_pci
/// without the virtio_pci_{modern,legacy}_dev modules of later kernels.
#[test]
fn debian11_linux_5_10_core_set() {
    run_core_set(Kernel::Bullseye);
}

/// Debian 13's 6.12: modules xz-compressed under /usr/lib/modules, virtio_pci
/// built in.
#[test]
fn debian13_linux_6_12_core_set() {
    run_core_set(Kernel::Trixie);
}

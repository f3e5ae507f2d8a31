//! Early boot: dm-ulogd in images built by the distributions' own initramfs
//! builders, booting Debian's cloud kernel in qemu (TCG) with the root file
//! system on a dm mirror whose dirty log dm-ulogd serves, through
//! switch_root, twice.
//!
//! - `mkinitramfs_root_on_mirror`: Debian's mkinitramfs (initramfs-tools) with
//!   the hook and init-top script.
//! - `dracut_root_on_mirror`: the real dracut with the module 90dm-ulogd
//!   (a systemd initrd).
//! - `unit_files_verify`: `systemd-analyze verify` of the host unit and of
//!   the initrd unit (inside the dracut image), and the man page.
//!
//! What is tested is what is installed: the daemon, the man page, the units,
//! the hook, the boot script and the dracut module all come from a staging
//! directory made by `make install DESTDIR=...` (the layout of the Debian
//! package), never from the source tree, and the image builders find them
//! where they are installed (initramfs/early-boot/*-image.sh).
//!
//! Each boot test: build the image; check its content; build a busybox root
//! file system (initramfs/early-boot/make-root.sh with
//! tests/early-boot/root-init.sh as /sbin/init) on leg 0 of the mirror;
//! boot with four virtio disks (vda, vdb: legs, vdc: the log device, vdd:
//! scratch for a mirror made after switch_root); check on the host that
//! the resync made the legs equal and that the log device holds a clean
//! dm-log image; boot the same disks again. The guest's verdict is the
//! console line `DMULOGD-RESULT: PASS` (tests/early-boot/root-init.sh says
//! what each boot checks); a hung guest fails by timeout.
//!
//! The host needs root (mount namespaces, qemu) and what
//! initramfs/early-boot/host-deps.sh installs with apt (it runs here,
//! idempotently). These tests fail, never skip.
//!
//! Environment:
//! - `DMULOGD_BOOT_TIMEOUT`: seconds per boot (default 300).
//! - `DMULOGD_KEEP=1`: keep each test's directory after a pass.

mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use support::{repo, run};

const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const WORK: &str = env!("CARGO_TARGET_TMPDIR");

/// The root mirror: 64 MiB legs, 1024-sector regions (as root-init.sh expects).
const LEG_BYTES: u64 = 64 << 20;
const REGIONS: u64 = 128;
const LOG_BYTES: u64 = 1 << 20;
const SCRATCH_BYTES: u64 = 32 << 20;

/// Where the Debian package puts the host unit (Debian 12's convention).
const UNIT_DIR: &str = "lib/systemd/system";

/// `make install DESTDIR=<work>/early-boot/destdir`, once per test binary
/// run, of the daemon cargo built for these tests.
fn destdir() -> &'static Path {
    static DESTDIR: OnceLock<PathBuf> = OnceLock::new();
    DESTDIR.get_or_init(|| {
        let d = fresh_dir("destdir");
        run(Command::new("make")
            .arg("-C")
            .arg(support::REPO)
            .args(["--no-print-directory", "install"])
            .arg(format!("DESTDIR={}", d.display()))
            .arg(format!("BIN={DAEMON}"))
            .arg(format!("SYSTEMDUNITDIR=/{UNIT_DIR}")));
        d
    })
}

/// A file as `make install` installed it.
fn installed(p: &str) -> PathBuf {
    destdir().join(p)
}

fn work(name: &str) -> PathBuf {
    Path::new(WORK).join("early-boot").join(name)
}

fn fresh_dir(name: &str) -> PathBuf {
    support::fresh_dir(work(name))
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg(repo(script));
    c
}

/// Host packages (initramfs-tools-core, dracut-core, systemd, qemu, ...),
/// installed once per test binary run.
fn host_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the early-boot tests need root (apt, mount namespaces, qemu)"
        );
        let t = Instant::now();
        run(&mut sh("initramfs/early-boot/host-deps.sh"));
        eprintln!(
            "early-boot: host ready in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    });
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("early-boot: {what}: {:.1} s", t.elapsed().as_secs_f64());
    r
}

// ------------------------------------------------------------------ images

/// The configuration of mirrors the images carry (DM_ULOGD_CONFIG for the
/// hook and the module): the root mirror's one line.
const MIRRORS: &str = "tests/early-boot/mirrors";

/// The initramfs-tools image: initramfs/early-boot/mkinitramfs-image.sh
/// with the test's configuration (tests/early-boot/initramfs-tools/: a
/// MODULES=list initramfs.conf, the virtio modules, RESUME=none) and
/// tests/early-boot/assemble-root.sh as scripts/init-premount/dmulogd-test-root
/// and scripts/local-top/dmulogd-test-assembled (it records the state
/// before and after the assembly); the hook and the init-top and local-top
/// scripts, which start the daemon and assemble the root mirror from
/// tests/early-boot/mirrors, are the installed ones.
fn mkinitramfs_image(dir: &Path) -> PathBuf {
    let overlay = dir.join("test-confdir");
    for (scripts, name) in [
        ("scripts/init-premount", "dmulogd-test-root"),
        ("scripts/local-top", "dmulogd-test-assembled"),
    ] {
        fs::create_dir_all(overlay.join(scripts)).unwrap();
        run(Command::new("install")
            .args(["-m", "755"])
            .arg(repo("tests/early-boot/assemble-root.sh"))
            .arg(overlay.join(scripts).join(name)));
    }
    run(Command::new("cp")
        .arg("-R")
        .arg(repo("tests/early-boot/initramfs-tools/."))
        .arg(&overlay));
    let image = dir.join("initrd.img");
    timed("mkinitramfs image", || {
        run(sh("initramfs/early-boot/mkinitramfs-image.sh")
            .arg(&image)
            .arg(destdir())
            .arg(dir.join("build"))
            .arg(&overlay)
            .env("DM_ULOGD_CONFIG", repo(MIRRORS)))
    });
    image
}

/// The dracut image (initramfs/early-boot/dracut-image.sh) with the
/// installed module and the test module tests/early-boot/dracut/95dmulogd-test;
/// built once, shared by the boot test and the verify test.
fn dracut_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        host_ready();
        let dir = fresh_dir("dracut-image");
        let image = dir.join("initrd.img");
        timed("dracut image", || {
            run(sh("initramfs/early-boot/dracut-image.sh")
                .arg(&image)
                .arg(destdir())
                .arg(dir.join("build"))
                .arg(repo("tests/early-boot/dracut/95dmulogd-test"))
                .arg("--")
                .args([
                    "--add-drivers",
                    "virtio_pci virtio_blk",
                    "--compress",
                    "zstd",
                ])
                .env(
                    "DMULOGD_TEST_ASSEMBLE",
                    repo("tests/early-boot/assemble-root.sh"),
                )
                .env("DM_ULOGD_CONFIG", repo(MIRRORS))
                .env(
                    "DMULOGD_HOST_UNIT",
                    installed(&format!("{UNIT_DIR}/dm-ulogd.service")),
                ))
        });
        let unpacked = dir.join("unpacked");
        fs::create_dir_all(&unpacked).unwrap();
        run(Command::new("lsinitrd")
            .arg("--unpack")
            .arg(&image)
            .current_dir(&unpacked));
        image
    })
}

fn dracut_unpacked() -> PathBuf {
    dracut_image().parent().unwrap().join("unpacked")
}

fn same_file(a: &Path, b: &Path) {
    let x = fs::read(a).unwrap_or_else(|e| panic!("read {}: {e}", a.display()));
    let y = fs::read(b).unwrap_or_else(|e| panic!("read {}: {e}", b.display()));
    assert!(x == y, "{} differs from {}", a.display(), b.display());
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn assert_has_modules(root: &Path, names: &[&str]) {
    let list = run(Command::new("find").arg(root).args(["-name", "*.ko*"])).stdout;
    let list = String::from_utf8_lossy(&list);
    for n in names {
        assert!(
            list.lines().any(|l| {
                let f = l.rsplit('/').next().unwrap_or("");
                f == format!("{n}.ko") || f.starts_with(&format!("{n}.ko."))
            }),
            "module {n} missing from the image {}",
            root.display()
        );
    }
}

const DM_MODULES: &[&str] = &[
    "dm-mod",
    "dm-log",
    "dm-region-hash",
    "dm-mirror",
    "dm-log-userspace",
    "virtio_blk",
];

/// What the initramfs-tools image must hold: the daemon as built and
/// installed, the installed boot script in init-top ordered before udev (whose coldplug could activate
/// LVM), the modules, the test's local-top script.
fn check_mkinitramfs_image(image: &Path, dir: &Path) {
    let x = dir.join("unpacked");
    run(Command::new("unmkinitramfs").arg(image).arg(&x));
    // Without an early microcode archive, unmkinitramfs unpacks in place;
    // with one, the main archive is under main/.
    let root = if x.join("main").is_dir() {
        x.join("main")
    } else {
        x
    };
    same_file(&root.join("usr/sbin/dm-ulogd"), Path::new(DAEMON));
    same_file(
        &root.join("usr/sbin/dm-ulogd"),
        &installed("usr/sbin/dm-ulogd"),
    );
    same_file(
        &root.join("scripts/init-top/dm-ulogd"),
        &installed("usr/share/initramfs-tools/scripts/init-top/dm-ulogd"),
    );
    let order = read(&root.join("scripts/init-top/ORDER"));
    let pos = |s: &str| {
        order
            .find(&format!("/scripts/init-top/{s} "))
            .unwrap_or_else(|| panic!("init-top/ORDER lacks {s}:\n{order}"))
    };
    assert!(
        pos("dm-ulogd") < pos("udev"),
        "init-top/dm-ulogd must run before init-top/udev:\n{order}"
    );
    same_file(
        &root.join("scripts/local-top/dm-ulogd"),
        &installed("usr/share/initramfs-tools/scripts/local-top/dm-ulogd"),
    );
    same_file(&root.join("etc/dm-ulogd/mirrors"), &repo(MIRRORS));
    let local_top = read(&root.join("scripts/local-top/ORDER"));
    let at = |s: &str| {
        local_top
            .find(&format!("/scripts/local-top/{s} "))
            .unwrap_or_else(|| panic!("local-top/ORDER lacks {s}:\n{local_top}"))
    };
    assert!(
        at("dm-ulogd") < at("dmulogd-test-assembled"),
        "the test's recorder must run after local-top/dm-ulogd:\n{local_top}"
    );
    assert!(read(&root.join("scripts/init-premount/ORDER")).contains("dmulogd-test-root"));
    assert!(
        root.join("usr/sbin/dmsetup").exists(),
        "no dmsetup in the image"
    );
    assert_has_modules(&root, DM_MODULES);
}

/// What the dracut image must hold: the daemon, the installed initrd unit enabled in
/// sysinit.target.wants, the modules; lsinitrd names the dm-ulogd module.
fn check_dracut_image(image: &Path) {
    let root = dracut_unpacked();
    same_file(&root.join("usr/sbin/dm-ulogd"), Path::new(DAEMON));
    same_file(
        &root.join("usr/sbin/dm-ulogd"),
        &installed("usr/sbin/dm-ulogd"),
    );
    let unit = "usr/lib/systemd/system/dm-ulogd-initrd.service";
    let unit = if root.join(unit).exists() {
        unit
    } else {
        "lib/systemd/system/dm-ulogd-initrd.service"
    };
    same_file(
        &root.join(unit),
        &installed("usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-initrd.service"),
    );
    let wants = root.join("etc/systemd/system/sysinit.target.wants/dm-ulogd-initrd.service");
    assert!(
        fs::symlink_metadata(&wants).is_ok(),
        "dm-ulogd-initrd.service is not enabled in the image ({} missing)",
        wants.display()
    );
    assert!(
        root.join("etc/initrd-release").exists(),
        "not an initrd: no /etc/initrd-release"
    );
    same_file(&root.join("etc/dm-ulogd/mirrors"), &repo(MIRRORS));
    let assemble = root.join(unit).with_file_name("dm-ulogd-assemble.service");
    same_file(
        &assemble,
        &installed("usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-assemble.service"),
    );
    let wants = root.join("etc/systemd/system/sysinit.target.wants/dm-ulogd-assemble.service");
    assert!(
        fs::symlink_metadata(&wants).is_ok(),
        "dm-ulogd-assemble.service is not enabled in the image ({} missing)",
        wants.display()
    );
    assert_has_modules(&root, DM_MODULES);
    let listing = run(Command::new("lsinitrd").arg(image)).stdout;
    let listing = String::from_utf8_lossy(&listing);
    let modules: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.starts_with("dracut modules:"))
        .skip(1)
        .take_while(|l| !l.starts_with('='))
        .collect();
    for m in ["dm-ulogd", "systemd", "dm"] {
        assert!(
            modules.contains(&m),
            "lsinitrd lists dracut modules {modules:?}, without {m}"
        );
    }
    for f in [
        "usr/sbin/dm-ulogd",
        "dm-ulogd-initrd.service",
        "dm-log-userspace.ko",
    ] {
        assert!(listing.contains(f), "lsinitrd's listing lacks {f}");
    }
}

// ------------------------------------------------------------------ disks and boots

struct Disks {
    leg0: PathBuf,
    leg1: PathBuf,
    log: PathBuf,
    scratch: PathBuf,
}

fn sparse(p: &Path, len: u64) {
    let f = fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.set_len(len).unwrap();
}

/// vda: leg 0 holding the ext4 root (make-root.sh); vdb: leg 1, zeros (the
/// first boot resyncs it); vdc: the log device, zeros (a new log); vdd:
/// scratch for the mirror made after switch_root.
fn make_disks(dir: &Path) -> Disks {
    let d = Disks {
        leg0: dir.join("vda-leg0.img"),
        leg1: dir.join("vdb-leg1.img"),
        log: dir.join("vdc-log.img"),
        scratch: dir.join("vdd-scratch.img"),
    };
    timed("root file system", || {
        run(sh("initramfs/early-boot/make-root.sh")
            .arg(&d.leg0)
            .arg(LEG_BYTES.to_string())
            .arg(repo("tests/early-boot/root-init.sh"))
            .env("TMPDIR", dir))
    });
    sparse(&d.leg1, LEG_BYTES);
    sparse(&d.log, LOG_BYTES);
    sparse(&d.scratch, SCRATCH_BYTES);
    d
}

/// Boots `image` on the disks with early_boot.phase=`phase` through the
/// harness's initramfs/boot.sh; panics unless the console shows PASS.
fn boot(name: &str, dir: &Path, image: &Path, disks: &Disks, phase: u32, extra: &str) {
    let append = format!("root=/dev/mapper/dmroot rw early_boot.phase={phase} {extra}");
    let drives = [&disks.leg0, &disks.leg1, &disks.log, &disks.scratch].map(|d| d.to_path_buf());
    let console = support::boot(
        image,
        &format!("early-boot-{name}"),
        &drives,
        dir,
        &format!("console-{phase}.log"),
        &[("BOOT_APPEND", append.as_str())],
        300,
    );
    for l in console.text.lines().filter(|l| l.contains("early-boot(")) {
        eprintln!("  {l}");
    }
    if console.passed() {
        eprintln!(
            "early-boot: {name} boot {phase}: PASS in {:.1} s",
            console.elapsed
        );
        return;
    }
    panic!(
        "{}",
        console.failure(&format!("{name} boot {phase}"), "", 150)
    );
}

/// The log device as the guest left it: the kernel's dm-log header (magic,
/// version 2, REGIONS regions) and every region clean.
fn check_log_device(p: &Path) {
    let f = fs::File::open(p).unwrap();
    let mut header = [0u8; 16];
    f.read_exact_at(&mut header, 0).unwrap();
    assert_eq!(
        u32::from_le_bytes(header[0..4].try_into().unwrap()),
        0x4D69_5272,
        "log device {}: no dm-log magic in {header:02x?}",
        p.display()
    );
    assert_eq!(
        u32::from_le_bytes(header[4..8].try_into().unwrap()),
        2,
        "log version"
    );
    assert_eq!(
        u64::from_le_bytes(header[8..16].try_into().unwrap()),
        REGIONS,
        "nr_regions"
    );
    let mut bits = vec![0u8; (REGIONS / 8) as usize];
    f.read_exact_at(&mut bits, 1024).unwrap();
    assert!(
        bits.iter().all(|&b| b == 0xff),
        "log device {}: not every region clean after a clean power-off: {bits:02x?}",
        p.display()
    );
}

fn legs_equal(d: &Disks) {
    let a = fs::read(&d.leg0).unwrap();
    let b = fs::read(&d.leg1).unwrap();
    assert!(
        a == b,
        "the legs differ after the first boot: the resync did not complete"
    );
}

/// Two boots of the same disks; between and after them, host-side checks.
fn root_on_mirror(name: &str, dir: &Path, image: &Path, extra: &str) {
    let disks = make_disks(dir);
    boot(name, dir, image, &disks, 1, extra);
    legs_equal(&disks);
    check_log_device(&disks.log);
    boot(name, dir, image, &disks, 2, extra);
    check_log_device(&disks.log);
    legs_equal(&disks);
    if std::env::var_os("DMULOGD_KEEP").is_none() {
        for p in [&disks.leg0, &disks.leg1, &disks.log, &disks.scratch] {
            let _ = fs::remove_file(p);
        }
    }
}

// ------------------------------------------------------------------ tests

/// Debian's mkinitramfs with the project's hook and init-top script: the
/// root file system on a dm-ulogd mirror, through switch_root, twice.
#[test]
fn mkinitramfs_root_on_mirror() {
    host_ready();
    let dir = fresh_dir("mkinitramfs");
    let image = mkinitramfs_image(&dir);
    check_mkinitramfs_image(&image, &dir);
    root_on_mirror("mkinitramfs", &dir, &image, "");
}

/// dracut (systemd initrd) with the project's module: same scenario; the
/// guest also checks that the daemon's unit became active before udev
/// coldplug, that systemd's killing spree at switch_root spared only the
/// daemon, and that the host unit is skipped (ExecCondition) while the
/// initrd daemon holds the pid file.
#[test]
fn dracut_root_on_mirror() {
    let image = dracut_image();
    check_dracut_image(image);
    let dir = fresh_dir("dracut");
    // A failure in the initrd powers the guest off instead of waiting for
    // an emergency shell on the console.
    root_on_mirror("dracut", &dir, image, "rd.emergency=poweroff rd.shell=0");
}

/// `systemd-analyze verify` must print nothing and succeed for the installed
/// host unit (checked on this host, with the installed daemon as
/// /usr/sbin/dm-ulogd in a private mount namespace) and for the initrd unit
/// (checked inside the unpacked dracut image, where it runs);
/// Documentation=man:dm-ulogd(8) must resolve to the installed man page,
/// which man(1) formats without warnings.
#[test]
fn unit_files_verify() {
    host_ready();
    let manpath = installed("usr/share/man");
    let out = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(manpath.join("man8/dm-ulogd.8"))
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "man --warnings: {warnings}");
    let text = String::from_utf8_lossy(&out.stdout);
    for section in ["OPTIONS", "LOG TYPES", "SIGNALS", "EXIT STATUS", "FILES"] {
        assert!(
            text.contains(section),
            "the man page has no {section} section"
        );
    }
    for word in [
        "clustered-disk",
        "--root-storage",
        "--state-dir",
        "SIGUSR1",
        "pid file",
    ] {
        assert!(text.contains(word), "the man page does not mention {word}");
    }

    // The host units, against this host's systemd with dm-ulogd installed.
    let bin = installed("usr/sbin");
    let unit = installed(&format!("{UNIT_DIR}/dm-ulogd.service"));
    let assemble_unit = installed(&format!("{UNIT_DIR}/dm-ulogd-assemble.service"));
    let script = r#"
        set -eu
        bin=$1
        shift
        mount -t overlay early-boot-verify -o "lowerdir=$bin:/usr/sbin" /usr/sbin
        test -x /usr/sbin/dm-ulogd
        systemd-analyze verify "$@"
    "#;
    let out = run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "verify",
        ])
        .arg(&bin)
        .arg(&unit)
        .arg(&assemble_unit)
        .env("MANPATH", &manpath));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify {}:\n{said}",
        unit.display()
    );

    // The initrd unit, inside the image it runs in.
    let root = dracut_unpacked();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args([
            "dm-ulogd-initrd.service",
            "dm-ulogd-assemble.service",
            "dmulogd-test-root.service",
            "dmulogd-test-assembled.service",
        ])
        .env("MANPATH", &manpath));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify --root={} dm-ulogd-initrd.service:\n{said}",
        root.display()
    );

    // The properties the early-boot design rests on.
    let initrd = read(&installed(
        "usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-initrd.service",
    ));
    let host = read(&unit);
    for (text, name, wanted) in [
        (
            &initrd,
            "initrd",
            &[
                "DefaultDependencies=no",
                "IgnoreOnIsolate=yes",
                "ConditionPathExists=/etc/initrd-release",
                "Type=forking",
                "PIDFile=/run/dm-ulogd.pid",
                "--daemon --root-storage",
            ][..],
        ),
        (
            &host,
            "host",
            &[
                "DefaultDependencies=no",
                "Type=notify",
                "ExecCondition=/usr/bin/flock --nonblock --conflict-exit-code 1 /run/dm-ulogd.pid",
                "Conflicts=shutdown.target",
            ][..],
        ),
    ] {
        for w in wanted {
            assert!(text.contains(w), "the {name} unit lacks {w}");
        }
        let before = text
            .lines()
            .find_map(|l| l.strip_prefix("Before="))
            .unwrap_or_else(|| panic!("the {name} unit has no Before="));
        for b in [
            "systemd-udev-trigger.service",
            "cryptsetup-pre.target",
            "local-fs-pre.target",
            "sysinit.target",
        ] {
            assert!(
                before.split(' ').any(|x| x == b),
                "the {name} unit is not Before={b}"
            );
        }
    }
    assert!(
        !host.contains("--root-storage"),
        "the host unit must not run as a root storage daemon"
    );
}

//! Installing dm-ulogd as a system daemon: `make install` / `make uninstall`
//! and the Debian package.
//!
//! - `make_install_then_uninstall_leaves_nothing`: the files and modes `make
//!   install DESTDIR=...` puts there, with the default variables and with
//!   every directory variable changed (the host unit, the hook and the dracut
//!   module then name the daemon's new path); `make uninstall` with the same
//!   variables leaves DESTDIR empty.
//! - `deb_contents_and_lintian`: the package that
//!   `initramfs/debian/build-deb.sh` builds: its control fields, its exact
//!   file list with modes and owners, the binary cargo built, the maintainer
//!   scripts; `lintian` reports no error, and every warning is one the
//!   install guide (docs/install.md) accepts.
//! - `deb_install_remove_purge`: the package in a throwaway copy of this
//!   host's root (initramfs/debian/throwaway-root.sh: an overlay of `/` in a
//!   private mount namespace, chrooted) where initramfs-tools is installed
//!   and Debian's cloud kernel has an initramfs: `dpkg -i` (the maintainer
//!   scripts enable the unit and the initramfs is rebuilt with the daemon),
//!   `dpkg --remove` (the image is rebuilt without it), `dpkg --purge` (the
//!   unit's enablement is gone): afterwards no path exists that did not
//!   before.
//!
//! The host needs root (dpkg, mount namespaces) and what
//! initramfs/early-boot/host-deps.sh installs (lintian, dpkg-dev, make,
//! initramfs-tools-core; it runs here, idempotently), and the network for
//! apt in the throwaway root. These tests fail, never skip.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use support::{repo, run};

const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const WORK: &str = env!("CARGO_TARGET_TMPDIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The package's files (directories aside) and their modes.
const DEB_FILES: &[(&str, u32)] = &[
    ("lib/systemd/system/dm-ulogd-assemble.service", 0o644),
    ("lib/systemd/system/dm-ulogd.service", 0o644),
    (
        "usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-assemble.service",
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-initrd.service",
        0o644,
    ),
    ("usr/lib/dracut/modules.d/90dm-ulogd/module-setup.sh", 0o755),
    ("usr/sbin/dm-ulogd", 0o755),
    ("usr/share/doc/dm-ulogd/changelog.gz", 0o644),
    ("usr/share/doc/dm-ulogd/copyright", 0o644),
    ("usr/share/initramfs-tools/hooks/dm-ulogd", 0o755),
    ("usr/share/initramfs-tools/scripts/init-top/dm-ulogd", 0o755),
    (
        "usr/share/initramfs-tools/scripts/local-top/dm-ulogd",
        0o755,
    ),
    ("usr/share/man/man8/dm-ulogd.8.gz", 0o644),
];

/// The unit's enablement link that deb-systemd-helper makes.
const WANTS_LINK: &str = "etc/systemd/system/sysinit.target.wants/dm-ulogd.service";

fn fresh_dir(name: &str) -> PathBuf {
    support::fresh_dir(Path::new(WORK).join("package").join(name))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Host packages, installed once per test binary run.
fn host_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the package tests need root (apt, dpkg, mount namespaces)"
        );
        run(Command::new("sh").arg(repo("initramfs/early-boot/host-deps.sh")));
        for c in ["make", "dpkg-deb", "dpkg-gencontrol", "lintian"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{c} missing after host-deps.sh: apt-get install lintian dpkg-dev make"
            );
        }
    });
}

/// Every path under `root` (relative, sorted), with `/`-joined names.
fn tree(root: &Path) -> BTreeSet<String> {
    let out = run(Command::new("find")
        .arg(".")
        .args(["-mindepth", "1"])
        .current_dir(root));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn make(destdir: &Path, target: &str, vars: &[&str]) {
    run(Command::new("make")
        .arg("-C")
        .arg(support::REPO)
        .args(["--no-print-directory", target])
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BIN={DAEMON}"))
        .args(vars));
}

// ------------------------------------------------------------------ make install

fn check_install(destdir: &Path, vars: &[&str], files: &[(&str, u32)], sbindir: &str) {
    make(destdir, "install", vars);
    let found: BTreeSet<String> = tree(destdir)
        .into_iter()
        .filter(|p| !destdir.join(p).is_dir())
        .collect();
    let wanted: BTreeSet<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(found, wanted, "make install {vars:?}: files");
    for (p, m) in files {
        assert_eq!(
            mode(&destdir.join(p)),
            *m,
            "make install {vars:?}: mode of {p}"
        );
    }
    for p in tree(destdir) {
        if destdir.join(&p).is_dir() {
            assert_eq!(mode(&destdir.join(&p)), 0o755, "mode of directory {p}");
        }
    }
    let bin = destdir
        .join(sbindir.trim_start_matches('/'))
        .join("dm-ulogd");
    assert!(
        fs::read(&bin).unwrap() == fs::read(DAEMON).unwrap(),
        "{} is not the binary cargo built",
        bin.display()
    );
    // The host-side files name the daemon where it was installed.
    let unit = files
        .iter()
        .find(|(p, _)| p.ends_with("/dm-ulogd.service"))
        .unwrap()
        .0;
    let unit = fs::read_to_string(destdir.join(unit)).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == format!("ExecStart={sbindir}/dm-ulogd")),
        "the host unit does not start {sbindir}/dm-ulogd:\n{unit}"
    );
    for (p, _) in files
        .iter()
        .filter(|(p, _)| p.ends_with("/dm-ulogd-assemble.service"))
    {
        let unit = fs::read_to_string(destdir.join(p)).unwrap();
        assert!(
            unit.lines()
                .any(|l| l.starts_with(&format!("ExecStart={sbindir}/dm-ulogd assemble --all "))),
            "{p} does not run {sbindir}/dm-ulogd:\n{unit}"
        );
    }
    for f in files
        .iter()
        .filter(|(p, _)| p.ends_with("hooks/dm-ulogd") || p.ends_with("module-setup.sh"))
    {
        let s = fs::read_to_string(destdir.join(f.0)).unwrap();
        assert!(
            s.contains(&format!("${{DM_ULOGD:-{sbindir}/dm-ulogd}}")),
            "{} does not default to {sbindir}/dm-ulogd",
            f.0
        );
    }
    // The initrd unit names the daemon's path inside the image, unchanged.
    let initrd = files
        .iter()
        .find(|(p, _)| p.ends_with("dm-ulogd-initrd.service"))
        .unwrap()
        .0;
    assert_eq!(
        fs::read(destdir.join(initrd)).unwrap(),
        fs::read(repo("initramfs/dracut/90dm-ulogd/dm-ulogd-initrd.service")).unwrap(),
        "the initrd unit was rewritten"
    );

    make(destdir, "uninstall", vars);
    let left = tree(destdir);
    assert!(
        left.is_empty(),
        "make uninstall {vars:?} left {left:?} in {}",
        destdir.display()
    );
}

#[test]
fn make_install_then_uninstall_leaves_nothing() {
    let t = Instant::now();
    let d = fresh_dir("make-default");
    check_install(
        &d,
        &["SYSTEMDUNITDIR=/lib/systemd/system"],
        &[
            ("usr/sbin/dm-ulogd", 0o755),
            ("usr/share/man/man8/dm-ulogd.8", 0o644),
            ("lib/systemd/system/dm-ulogd.service", 0o644),
            ("lib/systemd/system/dm-ulogd-assemble.service", 0o644),
            ("usr/share/initramfs-tools/hooks/dm-ulogd", 0o755),
            ("usr/share/initramfs-tools/scripts/init-top/dm-ulogd", 0o755),
            (
                "usr/share/initramfs-tools/scripts/local-top/dm-ulogd",
                0o755,
            ),
            ("usr/lib/dracut/modules.d/90dm-ulogd/module-setup.sh", 0o755),
            (
                "usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-initrd.service",
                0o644,
            ),
            (
                "usr/lib/dracut/modules.d/90dm-ulogd/dm-ulogd-assemble.service",
                0o644,
            ),
        ],
        "/usr/sbin",
    );
    let d = fresh_dir("make-moved");
    check_install(
        &d,
        &[
            "PREFIX=/opt/dm",
            "SBINDIR=/opt/dm/bin",
            "MANDIR=/opt/man",
            "SYSTEMDUNITDIR=/etc/systemd/system",
            "INITRAMFSTOOLSDIR=/etc/initramfs-tools",
            "DRACUTMODULESDIR=/opt/dracut",
        ],
        &[
            ("opt/dm/bin/dm-ulogd", 0o755),
            ("opt/man/man8/dm-ulogd.8", 0o644),
            ("etc/systemd/system/dm-ulogd.service", 0o644),
            ("etc/systemd/system/dm-ulogd-assemble.service", 0o644),
            ("etc/initramfs-tools/hooks/dm-ulogd", 0o755),
            ("etc/initramfs-tools/scripts/init-top/dm-ulogd", 0o755),
            ("etc/initramfs-tools/scripts/local-top/dm-ulogd", 0o755),
            ("opt/dracut/90dm-ulogd/module-setup.sh", 0o755),
            ("opt/dracut/90dm-ulogd/dm-ulogd-initrd.service", 0o644),
            ("opt/dracut/90dm-ulogd/dm-ulogd-assemble.service", 0o644),
        ],
        "/opt/dm/bin",
    );
    eprintln!(
        "package: make install/uninstall: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ the .deb

/// `initramfs/debian/build-deb.sh` (docs/install.md's command), once per run,
/// with the binary cargo built for these tests.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        host_ready();
        let t = Instant::now();
        let out_dir = fresh_dir("deb");
        let out = run(Command::new("sh")
            .arg(repo("initramfs/debian/build-deb.sh"))
            .arg(&out_dir)
            .env("BIN", DAEMON));
        let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(
            deb,
            out_dir.join(format!("dm-ulogd_{VERSION}_amd64.deb")),
            "build-deb.sh printed an unexpected path"
        );
        eprintln!("package: build-deb.sh: {:.1} s", t.elapsed().as_secs_f64());
        deb
    })
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(deb)
        .arg(name));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The warning tags the install guide accepts, each with its reason: lines
/// "- `W: TAG` ..." of docs/install.md.
fn accepted_warnings() -> BTreeSet<String> {
    let guide = fs::read_to_string(repo("docs/install.md")).unwrap();
    guide
        .lines()
        .filter_map(|l| l.strip_prefix("- `W: "))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn deb_contents_and_lintian() {
    let deb = deb();
    let t = Instant::now();
    assert_eq!(field(deb, "Package"), "dm-ulogd");
    assert_eq!(field(deb, "Version"), VERSION);
    assert_eq!(field(deb, "Architecture"), "amd64");
    assert_eq!(
        field(deb, "Depends"),
        "",
        "a static binary depends on nothing"
    );
    assert!(!field(deb, "Maintainer").is_empty());
    let size: u64 = field(deb, "Installed-Size")
        .parse()
        .expect("Installed-Size is a number");
    let binary = fs::metadata(DAEMON).unwrap().len();
    assert!(
        size * 1024 >= binary && size * 1024 < binary + 64 * 1024,
        "Installed-Size {size} KiB for a {binary}-byte binary"
    );

    // The data: exactly these files, these modes, root:root; directories 0755.
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (perm, owner, path) = (cols[0], cols[1], cols[cols.len() - 1]);
        assert_eq!(owner, "root/root", "owner of {path}");
        let path = path.trim_start_matches("./").trim_end_matches('/');
        if perm.starts_with('d') {
            assert_eq!(perm, "drwxr-xr-x", "mode of directory {path}");
            continue;
        }
        let wanted = DEB_FILES
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("unexpected file in the package: {line}"));
        let perm_wanted = if wanted.1 == 0o755 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(perm, perm_wanted, "mode of {path}");
        files.insert(path.to_string());
    }
    let wanted: BTreeSet<String> = DEB_FILES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(files, wanted, "the package's files");

    // The binary is the one cargo built; the maintainer scripts are there.
    let x = fresh_dir("deb-extracted");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    assert!(
        fs::read(x.join("usr/sbin/dm-ulogd")).unwrap() == fs::read(DAEMON).unwrap(),
        "the package's daemon is not the binary cargo built"
    );
    let control = x.join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    for s in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.join(s)), 0o755, "mode of {s}");
        let text = fs::read_to_string(control.join(s)).unwrap();
        assert!(
            text.contains("dm-ulogd.service"),
            "{s} does not handle the unit"
        );
    }
    for (s, wanted) in [
        ("postinst", "deb-systemd-helper enable 'dm-ulogd.service'"),
        (
            "postinst",
            "deb-systemd-helper enable 'dm-ulogd-assemble.service'",
        ),
        (
            "postrm",
            "deb-systemd-helper purge 'dm-ulogd-assemble.service'",
        ),
        ("postinst", "update-initramfs -u"),
        ("postrm", "update-initramfs -u"),
        ("postrm", "deb-systemd-helper purge 'dm-ulogd.service'"),
        ("prerm", "deb-systemd-invoke stop 'dm-ulogd.service'"),
    ] {
        let text = fs::read_to_string(control.join(s)).unwrap();
        assert!(text.contains(wanted), "{s} lacks {wanted}");
    }
    let md5sums = fs::read_to_string(control.join("md5sums")).unwrap();
    assert_eq!(
        md5sums.lines().count(),
        DEB_FILES.len(),
        "md5sums:\n{md5sums}"
    );

    // lintian: no error; every warning accepted (and explained) in docs/install.md.
    let out = Command::new("lintian")
        .args(["--fail-on", "none", "--no-tag-display-limit"])
        .arg(deb)
        .stdin(Stdio::null())
        .output()
        .expect("run lintian");
    assert!(
        out.status.success(),
        "lintian failed to run:\n{}",
        text(&out)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("package: lintian {}:\n{report}", deb.display());
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    let accepted = accepted_warnings();
    for l in report.lines().filter(|l| l.starts_with("W:")) {
        let tag = l.split_whitespace().nth(2).unwrap_or("");
        assert!(
            accepted.contains(tag),
            "lintian warning not accepted in docs/install.md (- `W: {tag}` ...): {l}"
        );
    }
    eprintln!(
        "package: contents and lintian: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ throwaway root

/// A throwaway root (see the module comment) and the kernel it carries.
struct Root {
    dir: PathBuf,
    kroot: PathBuf,
    kver: String,
}

impl Root {
    /// Runs `sh -c script` chrooted in it; panics unless it succeeds.
    fn sh(&self, script: &str) -> String {
        let out = run(Command::new("sh")
            .arg(repo("initramfs/debian/throwaway-root.sh"))
            .arg(&self.dir)
            .arg("--kernel")
            .arg(&self.kroot)
            .arg(&self.kver)
            .arg("--apt-cache")
            .arg(Path::new(WORK).join("package-apt-archives"))
            .args(["--", "sh", "-ec", script])
            .env("DEBIAN_FRONTEND", "noninteractive"));
        text(&out)
    }

    /// Every path where a package may install (the top level, /boot, /etc,
    /// /opt, /srv, /usr and /var; /lib and /sbin are /usr's), less the
    /// package managers' own records (dpkg's database and logs, apt's and
    /// man-db's caches).
    fn paths(&self) -> BTreeSet<String> {
        self.sh("find / -xdev -maxdepth 1; find /boot /etc /opt /srv /usr /var -xdev")
            .lines()
            .filter(|p| {
                ![
                    "/var/lib/dpkg/",
                    "/var/log/",
                    "/var/cache/",
                    "/tmp/",
                    "/proc",
                    "/sys",
                    "/dev",
                    "/run",
                ]
                .iter()
                .any(|x| p.starts_with(x))
            })
            .map(str::to_string)
            .collect()
    }

    fn initrd(&self) -> String {
        self.sh(&format!("lsinitramfs /boot/initrd.img-{}", self.kver))
    }

    /// Where a file written in the root lands (the overlay's upper layer).
    fn upper(&self, p: &str) -> PathBuf {
        self.dir.join("upper").join(p)
    }
}

/// The throwaway root: initramfs-tools installed with apt (MODULES=list to
/// keep images small), and an initramfs for Debian's cloud kernel.
fn throwaway_root() -> Root {
    let dir = fresh_dir("root");
    let kernel = run(Command::new("sh")
        .arg(repo("initramfs/early-boot/kernel-tree.sh"))
        .arg(Path::new(WORK).join("package-kernel")));
    let kernel = String::from_utf8_lossy(&kernel.stdout);
    let mut words = kernel.split_whitespace();
    let root = Root {
        dir,
        kroot: PathBuf::from(words.next().expect("kernel-tree.sh: a directory")),
        kver: words.next().expect("kernel-tree.sh: a version").to_string(),
    };
    root.sh(
        "apt-get install -y -q --no-install-recommends initramfs-tools >/dev/null || \
         { apt-get update -q >/dev/null && \
           apt-get install -y -q --no-install-recommends initramfs-tools >/dev/null; }
         sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf",
    );
    root.sh(&format!("update-initramfs -c -k {}", root.kver));
    let image = root.initrd();
    assert!(
        !image.contains("dm-ulogd"),
        "the initramfs has dm-ulogd before the package is installed:\n{image}"
    );
    root
}

/// dpkg and the maintainer scripts (with update-initramfs and mkinitramfs
/// under the trigger) ran without an error or a warning.
fn assert_clean_run(what: &str, out: &str) {
    for l in out.lines() {
        let lower = l.to_lowercase();
        assert!(
            !(l.starts_with("E:")
                || l.starts_with("W:")
                || lower.contains("error")
                || lower.contains("warning")),
            "{what} said: {l}\n{out}"
        );
    }
}

#[test]
fn deb_install_remove_purge() {
    let deb = deb();
    let t = Instant::now();
    let root = throwaway_root();
    eprintln!(
        "package: throwaway root with initramfs-tools and an initramfs: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fs::create_dir_all(root.upper("tmp")).unwrap();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    fs::copy(deb, root.upper("tmp").join(&name)).unwrap();
    let before = root.paths();

    // Install: the files with their modes, dpkg's list, the unit enabled,
    // the initramfs rebuilt (initramfs-tools' trigger) with the daemon.
    let t = Instant::now();
    let said = root.sh(&format!("dpkg -i /tmp/{name}"));
    assert_clean_run("dpkg -i", &said);
    assert!(
        said.contains("update-initramfs: Generating"),
        "installing did not rebuild the initramfs:\n{said}"
    );
    for (p, m) in DEB_FILES {
        let stat = root.sh(&format!("stat -c '%F %a %u:%g' /{p}"));
        assert_eq!(
            stat.trim(),
            format!("regular file {m:o} 0:0"),
            "installed /{p}"
        );
    }
    let listed: BTreeSet<String> = root
        .sh("dpkg -L dm-ulogd")
        .lines()
        .map(|l| l.trim_start_matches('/').to_string())
        .filter(|l| DEB_FILES.iter().any(|(p, _)| p == l))
        .collect();
    assert_eq!(listed.len(), DEB_FILES.len(), "dpkg -L dm-ulogd");
    let link = root.sh(&format!("readlink /{WANTS_LINK} || true"));
    assert_eq!(
        link.trim(),
        "/lib/systemd/system/dm-ulogd.service",
        "the unit is not enabled (/{WANTS_LINK})"
    );
    let image = root.initrd();
    for f in [
        "usr/sbin/dm-ulogd",
        "scripts/init-top/dm-ulogd",
        "dm-log-userspace.ko",
    ] {
        assert!(
            image.contains(f),
            "the initramfs lacks {f} after install:\n{image}"
        );
    }
    eprintln!("package: dpkg -i: {:.1} s", t.elapsed().as_secs_f64());

    // Remove: the files gone, the initramfs rebuilt without the daemon; the
    // enablement stays until purge (Debian policy: remove keeps the
    // administrator's choices).
    let t = Instant::now();
    let said = root.sh("dpkg --remove dm-ulogd");
    assert_clean_run("dpkg --remove", &said);
    for (p, _) in DEB_FILES {
        assert!(
            root.sh(&format!("test ! -e /{p} && echo gone"))
                .contains("gone"),
            "{p} left after remove"
        );
    }
    let image = root.initrd();
    assert!(
        !image.contains("dm-ulogd"),
        "the initramfs still has dm-ulogd after remove:\n{image}"
    );
    assert!(
        root.sh(&format!("test -L /{WANTS_LINK} && echo kept"))
            .contains("kept"),
        "remove dropped the unit's enablement (only purge should)"
    );
    eprintln!("package: dpkg --remove: {:.1} s", t.elapsed().as_secs_f64());

    // Purge: nothing left that was not there before.
    let t = Instant::now();
    let said = root.sh("dpkg --purge dm-ulogd");
    assert_clean_run("dpkg --purge", &said);
    let after = root.paths();
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "left after purge: {added:?}");
    let status = root.sh("dpkg-query -W -f='${db:Status-Status}' dm-ulogd 2>&1 || true");
    assert!(
        status.contains("not-installed") || status.contains("no packages found"),
        "dpkg still knows dm-ulogd after purge: {status}"
    );
    eprintln!("package: dpkg --purge: {:.1} s", t.elapsed().as_secs_f64());
}

//! What the test crates that run host commands or boot the guest share:
//! running a command, building the initramfs (initramfs/build-image.sh),
//! booting it (initramfs/boot.sh) and reading the console. Each crate takes
//! it with `mod support;` and uses a part of it, hence the allow.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Instant;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A path in the repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(REPO).join(p)
}

/// `dir`, emptied or created.
pub fn fresh_dir(dir: PathBuf) -> PathBuf {
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// The command line, for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", show(cmd)));
    if !out.status.success() {
        panic!(
            "{} failed ({}) after {:.1} s\nstdout:\n{}\nstderr:\n{}",
            show(cmd),
            out.status,
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The console text without terminal escape sequences or other control
/// characters (SeaBIOS resets and clears the screen), fit to print.
pub fn printable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // ESC [ params letter, or ESC letter.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `count` sparse disk images of `bytes` each in `dir`: disk0.img, ...
pub fn sparse_disks(dir: &Path, count: usize, bytes: u64) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let p = dir.join(format!("disk{i}.img"));
            File::create(&p)
                .and_then(|f| f.set_len(bytes))
                .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
            p
        })
        .collect()
}

/// Builds the test initramfs for `arch` around `daemon` at `image`
/// (initramfs/build-image.sh).
pub fn build_image(image: &Path, daemon: &Path, arch: &str) -> Result<(), String> {
    build_image_with(image, daemon, &[("DMULOGD_ARCH", arch)])
}

/// `build_image` with `envs` for build-image.sh (DMULOGD_ARCH,
/// DMULOGD_KERNEL, ...).
pub fn build_image_with(image: &Path, daemon: &Path, envs: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.arg(repo("initramfs/build-image.sh"))
        .arg(image)
        .arg(daemon)
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", show(&cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); is the host set up (sh initramfs/setup-host.sh)?\nstdout:\n{}\nstderr:\n{}",
            show(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 40),
        ));
    }
    eprintln!(
        "built {} in {:.1} s",
        image.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The x86_64 initramfs at `image` around `daemon`, or `DMULOGD_IMAGE`
/// when that is set.
pub fn x86_64_image(image: PathBuf, daemon: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DMULOGD_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    build_image(&image, Path::new(daemon), "x86_64")?;
    Ok(image)
}

/// A finished boot: what the console said and how boot.sh ended.
pub struct Console {
    pub path: PathBuf,
    pub text: String,
    pub status: ExitStatus,
    pub elapsed: f64,
}

impl Console {
    /// boot.sh succeeded and the guest said PASS.
    pub fn passed(&self) -> bool {
        self.status.success() && self.text.lines().any(|l| l == "DMULOGD-RESULT: PASS")
    }

    /// The guest's verdict line, or why there is none.
    pub fn verdict(&self) -> &str {
        self.text
            .lines()
            .rfind(|l| l.starts_with("DMULOGD-RESULT:"))
            .unwrap_or("no DMULOGD-RESULT line (guest hung, crashed or timed out)")
    }

    /// A failure message: `what`, the verdict, `detail` lines, the console's
    /// path and its last `lines` lines.
    pub fn failure(&self, what: &str, detail: &str, lines: usize) -> String {
        format!(
            "{what} failed after {:.1} s: {} (boot.sh: {})\n{detail}full console: {}\n\
             ----- last {lines} console lines -----\n{}",
            self.elapsed,
            self.verdict(),
            self.status,
            self.path.display(),
            tail(&self.text, lines)
        )
    }
}

/// Boots `image` on `scenario` with `disks` (initramfs/boot.sh), the
/// console written to `dir`/`console`; `envs` go to boot.sh
/// (BOOT_APPEND, DMULOGD_ARCH, ...). The timeout is DMULOGD_BOOT_TIMEOUT,
/// else `default_timeout` seconds.
pub fn boot(
    image: &Path,
    scenario: &str,
    disks: &[PathBuf],
    dir: &Path,
    console: &str,
    envs: &[(&str, &str)],
    default_timeout: u64,
) -> Console {
    let path = dir.join(console);
    let out = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let err = out.try_clone().expect("clone the console file");
    let timeout =
        std::env::var("DMULOGD_BOOT_TIMEOUT").unwrap_or_else(|_| default_timeout.to_string());
    let script = repo("initramfs/boot.sh");
    let started = Instant::now();
    let status = Command::new("sh")
        .arg(&script)
        .arg(image)
        .arg(scenario)
        .args(disks)
        .envs(envs.iter().copied())
        .env("BOOT_TIMEOUT", &timeout)
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let elapsed = started.elapsed().as_secs_f64();
    let text = fs::read(&path).map(|b| printable(&b)).unwrap_or_default();
    Console {
        path,
        text,
        status,
        elapsed,
    }
}

/// Removes a passed test's directory unless DMULOGD_KEEP is set.
pub fn clean_up(dir: &Path) {
    if std::env::var_os("DMULOGD_KEEP").is_none() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The verdict of a `parts` boot (tests/scenarios/parts.sh): prints each
/// part's line as `what: ...`, then returns when the boot passed and every
/// one of `parts` reported PASS (the directory removed), or panics with the
/// parts' lines and the console's end.
pub fn judge_parts(console: &Console, parts: &[&str], what: &str, dir: &Path) {
    let results: Vec<&str> = console
        .text
        .lines()
        .filter(|l| l.starts_with("parts: ") && !l.starts_with("parts: ==="))
        .collect();
    for r in &results {
        eprintln!("{what}: {}", &r["parts: ".len()..]);
    }
    let every_part = parts.iter().all(|p| {
        let line = format!("parts: {p} PASS in ");
        results.iter().any(|r| r.starts_with(&line))
    });
    if console.passed() && every_part {
        eprintln!("{what}: PASS in {:.1} s", console.elapsed);
        clean_up(dir);
        return;
    }
    let detail = format!("parts: {}\n", results.join("; "));
    panic!("{}", console.failure(what, &detail, 150));
}

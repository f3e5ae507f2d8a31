//! The rescue subcommands run as the real binary: `examine` on disk log
//! images in the kernel's format (clean, dirty, version 1, wrong magic,
//! truncated, not a file), `status` on state files made by the daemon's own
//! code, with and without a daemon holding the pid file. Every file is
//! compared byte for byte afterwards: the tools never write.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dm_ulogd::log::state::{Identity, StateDir};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

const BIN: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const WORK: &str = env!("CARGO_TARGET_TMPDIR");

fn work(name: &str) -> PathBuf {
    let dir = Path::new(WORK).join("rescue").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A disk log image as the kernel writes it: header, clean bits at 1024,
/// rounded up to 512 bytes.
fn image(version: u32, regions: u64, dirty: &[u64]) -> Vec<u8> {
    let bitmap = regions.div_ceil(64) as usize * 8;
    let mut img = vec![0u8; (1024 + bitmap).next_multiple_of(512)];
    img[0..4].copy_from_slice(&0x4D69_5272u32.to_le_bytes());
    img[4..8].copy_from_slice(&version.to_le_bytes());
    img[8..16].copy_from_slice(&regions.to_le_bytes());
    for r in 0..regions {
        if !dirty.contains(&r) {
            img[1024 + (r / 8) as usize] |= 1 << (r % 8);
        }
    }
    img
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run dm-ulogd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs examine on `bytes` in a file; checks the file is unchanged.
fn examine(name: &str, bytes: &[u8], args: &[&str]) -> Output {
    let path = work(name).join("log.img");
    fs::write(&path, bytes).unwrap();
    let mut all = vec!["examine", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(fs::read(&path).unwrap(), bytes, "examine changed {name}");
    out
}

/// Exit code 1, nothing on stdout, one line on stderr containing `what`.
fn refused(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(what), "{err:?} lacks {what:?}");
}

#[test]
fn examine_a_clean_log() {
    let out = examine("clean", &image(2, 128, &[]), &["--dirty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("file, 1536 bytes\n"), "{t}");
    assert!(t.contains("header: magic 0x4d695272, version 2, 128 regions\n"));
    assert!(t.contains("image: 1536 bytes, fits the device\n"));
    assert!(t.ends_with("clean: 128 regions\ndirty: 0 regions\n"), "{t}");
}

#[test]
fn examine_dirty_regions_and_bytes() {
    // Version 1 is read as 2; the device may be larger than the image.
    let mut img = image(1, 128, &[0, 7, 8, 9, 127]);
    img.resize(1 << 20, 0xaa);
    let out = examine("dirty", &img, &["--region-size", "1024"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("version 1 (read as 2), 128 regions\n"), "{t}");
    assert!(t.contains("clean: 123 regions\ndirty: 5 regions\n"), "{t}");
    assert!(
        t.contains("resync: at most 2621440 bytes in 5 regions"),
        "{t}"
    );
    assert!(t.ends_with(
        "dirty regions 0-0 (1): bytes 0-524287, sectors 0-1023\n\
         dirty regions 7-9 (3): bytes 3670016-5242879, sectors 7168-10239\n\
         dirty regions 127-127 (1): bytes 66584576-67108863, sectors 130048-131071\n"
    ));
}

#[test]
fn examine_a_log_larger_than_one_read() {
    // 1,000,000 regions: a 125 KB bitmap, read in several transfers.
    let out = examine(
        "large",
        &image(2, 1_000_000, &[1, 524_287, 524_288, 999_999]),
        &["--dirty"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("image: 126464 bytes"), "{t}");
    assert!(t.ends_with(
        "clean: 999996 regions\ndirty: 4 regions\n\
         dirty regions 1-1 (1)\ndirty regions 524287-524288 (2)\ndirty regions 999999-999999 (1)\n"
    ));
}

#[test]
fn examine_refuses_what_is_not_a_disk_log() {
    refused(
        &examine("zeros", &[0u8; 4096], &[]),
        "not a dm disk log: magic 0x00000000 at byte 0, a disk log has 0x4d695272",
    );
    let mut ext4ish = image(2, 128, &[]);
    ext4ish[0..4].copy_from_slice(b"\x53\xef\x01\x00");
    refused(&examine("magic", &ext4ish, &[]), "magic 0x0001ef53");
    let mut v3 = image(2, 128, &[]);
    v3[4] = 3;
    refused(
        &examine("version", &v3, &[]),
        "unsupported on-disk log version 3",
    );
    // Truncated: the header says 128 regions (1536 bytes), the file has 1024.
    refused(
        &examine("truncated", &image(2, 128, &[])[..1024], &[]),
        "cut short, or not this log's device: its header records 128 regions, which need 1536 bytes, but it has 1024",
    );
    refused(
        &examine("tiny", &image(2, 128, &[])[..10], &[]),
        "too small for a dm disk log: 10 bytes",
    );
    refused(
        &examine("empty", &[], &[]),
        "too small for a dm disk log: 0 bytes",
    );
    let dir = work("directory");
    refused(
        &run(&["examine", dir.to_str().unwrap()]),
        "not a block device or a file",
    );
    refused(
        &run(&["examine", "/nonexistent/log"]),
        "cannot open it read-only: No such file or directory",
    );
}

#[test]
fn examine_usage_errors_exit_2() {
    for args in [
        &["examine"][..],
        &["examine", "a", "b"],
        &["examine", "a", "--region-size", "3"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("Try 'dm-ulogd --help'"));
    }
}

fn state_dir(dir: &Path) -> StateDir {
    let fd = nix::fcntl::open(dir, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap();
    StateDir::new(fd)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn status_lists_saved_logs_and_the_daemon() {
    let root = work("status");
    let dir = root.join("state");
    fs::create_dir(&dir).unwrap();
    let state = state_dir(&dir);
    let core = Identity {
        uuid: b"m-core",
        luid: 11,
        ctr: b"131072 core 2 1024 nosync",
        region_count: 128,
    };
    let disk = Identity {
        uuid: b"m-disk",
        luid: 12,
        ctr: b"2097152 disk 2 /dev/mapper/m_log 1024",
        region_count: 2048,
    };
    let (_core_clean, _core_sync) = {
        let (mut clean, mut sync) = state.create(&core, 0).unwrap();
        clean.fill(true);
        sync.fill(true);
        (clean, sync)
    };
    let (mut disk_clean, mut disk_sync) = state.create(&disk, 0).unwrap();
    disk_clean.fill(true);
    for r in [5, 6, 2047] {
        disk_clean.clear(r);
    }
    disk_sync.set_range(0, 1500);
    fs::write(dir.join("not-a-state-file"), b"hello").unwrap();

    let pidfile = root.join("dm-ulogd.pid");
    let args = [
        "status",
        "--state-dir",
        dir.to_str().unwrap(),
        "--pidfile",
        pidfile.to_str().unwrap(),
    ];
    let before = snapshot(&dir);

    // No pid file: not running.
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    let logs = "state directory ".to_string()
        + dir.to_str().unwrap()
        + ": 2 live log(s)\n\
        log m-core luid 11: core, 128 regions of 1024 sectors, 128 in sync, 0 dirty, no log device\n\
        log m-disk luid 12: disk, 2048 regions of 1024 sectors, 1500 in sync, 3 dirty, log device /dev/mapper/m_log\n";
    assert!(t.starts_with("daemon: not running ("), "{t}");
    assert!(t.ends_with(&logs), "{t}");

    // A pid file nobody locks: not running either.
    fs::write(&pidfile, "4242\n").unwrap();
    let t = text(&run(&args).stdout);
    assert!(t.starts_with("daemon: not running ("), "{t}");

    // Locked as the daemon locks it: running, with its pid.
    let file = fs::OpenOptions::new().write(true).open(&pidfile).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let out = run(&args);
    let t = text(&out.stdout);
    assert!(
        t.starts_with(&format!(
            "daemon: running, pid 4242 ({} is locked)\n",
            pidfile.display()
        )),
        "{t}"
    );
    assert!(t.ends_with(&logs), "{t}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = run(&json_args);
    assert!(out.status.success());
    let t = text(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2, "{t}");
    assert!(lines[1].starts_with(
        "{\"uuid\":\"m-disk\",\"luid\":12,\"type\":\"disk\",\"regions\":2048,\"region_size\":1024,\
         \"in_sync\":1500,\"dirty\":3,\"log_device\":\"/dev/mapper/m_log\",\"daemon\":\"running\",\
         \"pid\":4242,\"state_file\":\""
    ), "{t}");
    assert!(lines[0].contains("\"log_device\":null"), "{t}");
    drop(lock);

    // The daemon's changes show at once (the bits are in the file).
    disk_clean.clear(100);
    let t = text(&run(&args).stdout);
    assert!(t.contains("1500 in sync, 4 dirty"), "{t}");
    disk_clean.set(100);

    assert_eq!(snapshot(&dir), before, "status changed the state directory");

    // A damaged state file: reported, exit 1, the others still listed.
    let damaged = dir.join("log-damaged");
    fs::write(&damaged, b"DMULOGS1").unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).ends_with(&logs));
    let err = text(&out.stderr);
    assert!(
        err.contains("log-damaged: its header is cut short at 8 bytes"),
        "{err}"
    );
    fs::remove_file(&damaged).unwrap();

    // No such directory: one line, exit 1.
    let out = run(&["status", "--state-dir", "/nonexistent/state"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the state directory /nonexistent/state"));
}

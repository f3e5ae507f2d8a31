//! Replays the committed fuzz corpus (tests/fuzz/corpus/<target>/) through
//! the very harness the cargo-fuzz targets run (tests/fuzz/harness.rs), so
//! every seed and every crash reproducer kept there is checked by an
//! ordinary `cargo test` on stable.
//!
//! The seeds were written by the ignored test `write_seed_corpus`:
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`
//! (it only adds or overwrites its own `seed-*` files).

use std::collections::BTreeSet;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dm_ulogd::wire::frame::{self, REPLY_DATA_OFFSET, REQUEST_OFFSET, Rejection};
use dm_ulogd::wire::ulog::RequestType;

#[path = "fuzz/harness.rs"]
mod harness;

use harness::{Input, kind, macros, prelude, region, tag};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/corpus");

/// The corpus files of a target, sorted; fails when there are none.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(CORPUS).join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read the corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `f` on every file of a target's corpus and fails naming every file
/// that panicked.
fn replay(target: &str, mut f: impl FnMut(&[u8])) -> usize {
    let files = corpus(target);
    let mut failed = Vec::new();
    for (path, bytes) in &files {
        if panic::catch_unwind(AssertUnwindSafe(|| f(bytes))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files failed (see the panics above):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    files.len()
}

#[test]
fn frame_corpus_replays() {
    let n = replay("frame", harness::frame);
    eprintln!("replayed {n} frame corpus files");
}

#[test]
fn server_corpus_replays() {
    let h = harness::ServerHarness::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "fuzz-corpus");
    let n = replay("server", |bytes| h.run(bytes));
    h.remove();
    eprintln!("replayed {n} server corpus files");
}

/// The frame corpus keeps real frames of all 17 request types and each kind
/// of rejection, so minimising it cannot silently empty it of them.
#[test]
fn frame_corpus_covers_every_request_type_and_rejection() {
    let mut types = BTreeSet::new();
    let (mut drop, mut ack, mut reply) = (0, 0, 0);
    for (_, bytes) in corpus("frame") {
        match frame::parse_request(&bytes) {
            Ok(req) => {
                if let Some(t) = RequestType::from_field(req.request_type_field) {
                    types.insert(t as u32);
                }
            }
            Err(Rejection::Drop(_)) => drop += 1,
            Err(Rejection::Ack { .. }) => ack += 1,
            Err(Rejection::Reply { .. }) => reply += 1,
        }
    }
    let missing: Vec<u32> = (1..=17).filter(|t| !types.contains(t)).collect();
    assert!(
        missing.is_empty(),
        "no frame of request type(s) {missing:?}"
    );
    assert!(
        drop > 0 && ack > 0 && reply > 0,
        "rejections: {drop} dropped, {ack} acked, {reply} answered"
    );
}

// ---------------------------------------------------------------------------
// The seed corpus generator.

const UUID: &[u8] = b"LVM-k3Xy2GpQfLmZ0aN7bC4dE9hJ1sT6uV8wR5oI2eA0qW3rT4yU7iO9pL1kJ2hG";
const LUID: u64 = 0xffff_8881_0a2b_3c00;

/// A request as the kernel lays it out.
fn kernel_request(seq: u32, ty: u32, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; REPLY_DATA_OFFSET + data.len()];
    let n = frame::emit_request(&mut buf, seq, LUID, UUID, seq, ty, data);
    buf.truncate(n);
    buf
}

fn regions(rs: &[u64]) -> Vec<u8> {
    rs.iter().flat_map(|r| r.to_ne_bytes()).collect()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// Frames of every request type in kernel layout, then malformed ones.
fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    use RequestType::*;
    let mut s: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| s.push((format!("seed-{name}"), bytes));

    let ctrs: &[(&str, &[u8])] = &[
        ("01-ctr-core", b"2097152 core 2 1024 nosync"),
        ("01-ctr-core-reconnect", b"2097152 core 2 1024 nosync\0"),
        ("01-ctr-core-countless", b"1000 core 8"),
        ("01-ctr-disk", b"2097152 disk 2 253:4 1024"),
        ("01-ctr-disk-reconnect", b"2097152 disk 2 253:4 1024\0"),
        ("01-ctr-clustered-core", b"409600 clustered-core 8 sync"),
        (
            "01-ctr-clustered-disk",
            b"409600 clustered-disk 3 /dev/vg/lv_mlog 1024 block_on_error",
        ),
        ("01-ctr-bad-region-size", b"1000 core 1 24"),
        ("01-ctr-unknown-type", b"1000 mirror 1 8"),
    ];
    for (name, text) in ctrs {
        add(name, kernel_request(1, Ctr as u32, text));
    }
    let plain: &[(&str, RequestType, Vec<u8>)] = &[
        ("02-dtr", Dtr, vec![]),
        ("03-presuspend", Presuspend, vec![]),
        ("04-postsuspend", Postsuspend, vec![]),
        ("05-resume", Resume, vec![]),
        ("06-get-region-size", GetRegionSize, vec![]),
        ("07-is-clean", IsClean, regions(&[5])),
        ("08-in-sync", InSync, regions(&[5])),
        ("09-flush", Flush, vec![]),
        ("09-flush-integrated", Flush, regions(&[0, 7, 1999])),
        (
            "09-flush-integrated-32",
            Flush,
            regions(&(0..32).map(|i| i * 3).collect::<Vec<_>>()),
        ),
        ("10-mark", MarkRegion, regions(&[1, 2, 3])),
        ("10-mark-one-bad", MarkRegion, regions(&[1, u64::MAX, 3])),
        ("11-clear", ClearRegion, regions(&[1])),
        ("11-clear-past-end", ClearRegion, regions(&[1 << 40])),
        ("12-get-resync-work", GetResyncWork, vec![]),
        ("13-set-region-sync", SetRegionSync, regions(&[5, 1])),
        ("13-set-region-sync-short", SetRegionSync, regions(&[5])),
        ("14-get-sync-count", GetSyncCount, vec![]),
        ("15-status-info", StatusInfo, vec![]),
        ("16-status-table", StatusTable, vec![]),
        ("17-is-remote-recovering", IsRemoteRecovering, regions(&[5])),
        ("07-is-clean-short-payload", IsClean, vec![5, 0, 0, 0]),
        ("06-get-region-size-payload", GetRegionSize, regions(&[1])),
    ];
    for (i, (name, ty, data)) in plain.iter().enumerate() {
        add(name, kernel_request(10 + i as u32, *ty as u32, data));
    }

    // Header variants that must still work.
    let mut v2 = kernel_request(40, IsClean as u32, &regions(&[0]));
    put_u32(&mut v2, REQUEST_OFFSET + 140, 2);
    add("var-version-2", v2);
    add(
        "var-reserved-type-bits",
        kernel_request(41, 0xab00_0000 | MarkRegion as u32, &regions(&[2])),
    );
    let mut split = kernel_request(42, GetSyncCount as u32, &[]);
    put_u32(&mut split, 24, 0x8000_0042); // cn seq differs from request seq
    add("var-split-seq", split);
    let mut long_uuid = vec![0u8; REPLY_DATA_OFFSET];
    let n = frame::emit_request(&mut long_uuid, 43, 7, &[b'u'; 128], 43, Resume as u32, &[]);
    long_uuid.truncate(n);
    add("var-uuid-128", long_uuid);
    let mut trailing = kernel_request(44, GetRegionSize as u32, &[]);
    trailing.extend_from_slice(&[0xee; 12]); // bytes past nlmsg_len
    add("var-trailing-bytes", trailing);

    // Malformed.
    let good = kernel_request(50, IsClean as u32, &regions(&[5]));
    add("bad-empty", vec![]);
    add("bad-truncated-10", good[..10].to_vec());
    add("bad-truncated-headers", good[..REQUEST_OFFSET].to_vec());
    add("bad-truncated-body", good[..100].to_vec());
    let mut nl_long = good.clone();
    put_u32(&mut nl_long, 0, good.len() as u32 + 1);
    add("bad-nlmsg-len-past-end", nl_long);
    let mut nl_short = good.clone();
    put_u32(&mut nl_short, 0, 8);
    add("bad-nlmsg-len-below-header", nl_short);
    let mut nl_type = good.clone();
    put_u16(&mut nl_type, 4, 2); // NLMSG_ERROR
    add("bad-nlmsg-type", nl_type);
    let mut idx = good.clone();
    put_u32(&mut idx, 16, 4);
    add("bad-cn-idx", idx);
    let mut val = good.clone();
    put_u32(&mut val, 20, 2);
    add("bad-cn-val", val);
    let mut cn_long = good.clone();
    put_u16(&mut cn_long, 32, 200);
    add("bad-cn-len-past-nlmsg", cn_long);
    let mut short_body = good[..REQUEST_OFFSET + 100].to_vec();
    put_u32(&mut short_body, 0, (REQUEST_OFFSET + 100) as u32);
    put_u16(&mut short_body, 32, 100);
    add("bad-cn-payload-short", short_body);
    let mut no_body = good[..REQUEST_OFFSET].to_vec();
    put_u32(&mut no_body, 0, REQUEST_OFFSET as u32);
    put_u16(&mut no_body, 32, 0);
    add("bad-cn-payload-empty", no_body);
    let mut ds_big = good.clone();
    put_u32(&mut ds_big, REQUEST_OFFSET + 156, 16);
    add("bad-data-size-past-end", ds_big);
    let mut ds_small = good.clone();
    put_u32(&mut ds_small, REQUEST_OFFSET + 156, 0);
    add("bad-data-size-short", ds_small);
    let mut ds_huge = good.clone();
    put_u32(&mut ds_huge, REQUEST_OFFSET + 156, u32::MAX);
    add("bad-data-size-huge", ds_huge);
    let mut uuid = good.clone();
    uuid[REQUEST_OFFSET + 8..REQUEST_OFFSET + 137].fill(b'x');
    add("bad-uuid-unterminated", uuid);
    for ty in [0u32, 18, 255] {
        add(&format!("bad-type-{ty}"), kernel_request(60, ty, &[]));
    }
    add(
        "bad-is-clean-past-end",
        kernel_request(61, IsClean as u32, &regions(&[u64::MAX])),
    );
    // Larger than anything the kernel sends (512 bytes after nlmsghdr).
    add(
        "bad-oversized-mark",
        kernel_request(62, MarkRegion as u32, &regions(&[1; 48])),
    );
    s
}

/// Programs for the server target (see the input format in harness.rs).
fn server_seeds(frames: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    use RequestType::*;
    let mut s: Vec<(String, Vec<u8>)> = Vec::new();
    let both = prelude::CTR | prelude::RESUME;

    // Every request type on a live core log of 100 regions.
    let mut every = Input::new(both, kind::CORE, 99);
    for ty in 1..=18u8 {
        let payload: &[u8] = match ty {
            t if t == IsClean as u8 || t == InSync as u8 || t == IsRemoteRecovering as u8 => &[5],
            t if t == MarkRegion as u8 || t == ClearRegion as u8 || t == Flush as u8 => &[1, 2, 3],
            t if t == SetRegionSync as u8 => &[5, 1],
            _ => &[],
        };
        if ty != Ctr as u8 && ty != Dtr as u8 {
            every = every.regions(0, 0, ty, payload);
        }
    }
    every = every
        .regions(0, 0, MarkRegion as u8, &[1, region::COUNT, 3])
        .regions(0, 0, IsClean as u8, &[1])
        .request(0, 0, Ctr as u8, b"800 core 8")
        .regions(1, 0, IsClean as u8, &[1])
        .request(0, 0, Dtr as u8, &[])
        .request(0, 0, Dtr as u8, &[]);
    s.push(("seed-core-every-type".into(), every.0));

    // Resync to full sync, with the hint checked before and after.
    let resync = Input::new(both, kind::CORE | kind::ARG_COUNT, 99)
        .regions(0, 0, IsRemoteRecovering as u8, &[0])
        .macro_op(0, 0, &[macros::RESYNC, 50, 0])
        .regions(0, 0, IsRemoteRecovering as u8, &[0])
        .macro_op(0, 0, &[macros::RESYNC, 60, 0x10])
        .regions(0, 0, IsRemoteRecovering as u8, &[region::LAST])
        .macro_op(0, 0, &[macros::SUSPEND_RESUME])
        .macro_op(0, 0, &[macros::RESYNC, 10, 0])
        .request(0, 0, GetSyncCount as u8, &[])
        .regions(0, 0, IsRemoteRecovering as u8, &[region::LAST]);
    s.push(("seed-core-resync".into(), resync.0));

    // A disk log: write, suspend, reload on the same device.
    let disk = Input::new(both, kind::DISK, 199)
        .macro_op(0, 0, &[macros::WRITE, 0, 9, 100, region::LAST])
        .regions(0, 0, MarkRegion as u8, &[4, 5])
        .regions(0, 0, Flush as u8, &[6])
        .macro_op(0, 0, &[macros::SUSPEND_RESUME])
        .request(0, 0, StatusInfo as u8, &[])
        .request(0, 0, StatusTable as u8, &[])
        .request(0, 0, Dtr as u8, &[])
        .macro_op(1, 0, &[macros::CTR, kind::DISK | kind::ARG_COUNT, 199])
        .request(1, 0, Resume as u8, &[])
        .regions(1, 0, InSync as u8, &[4])
        .regions(1, 0, InSync as u8, &[7])
        .macro_op(1, 0, &[macros::RESYNC, 255, 0]);
    s.push(("seed-disk-reload".into(), disk.0));

    // Clustered names, nosync, the reconnect form, odd target lengths.
    let clustered = Input::new(
        prelude::CTR,
        kind::CLUSTERED_CORE | kind::NOSYNC | kind::SHORT_TARGET,
        0xf4,
    )
    .request(0, 0, GetSyncCount as u8, &[])
    .macro_op(
        2,
        0,
        &[
            macros::CTR,
            kind::CLUSTERED_DISK | kind::WITH_NUL | kind::REGION_SIZE_2,
            70,
        ],
    )
    .request(2, 0, Resume as u8, &[])
    .macro_op(
        2,
        0,
        &[
            macros::CTR,
            kind::CLUSTERED_DISK | kind::WITH_NUL | kind::REGION_SIZE_2,
            70,
        ],
    )
    .macro_op(
        3,
        0,
        &[
            macros::CTR,
            kind::CORE | kind::NOSYNC_BLOCK_ON_ERROR | kind::WITH_NUL,
            7,
        ],
    )
    .request(
        3,
        tag::RESERVED_TYPE_BITS | tag::VERSION_2,
        GetRegionSize as u8,
        &[],
    )
    .regions(
        3,
        tag::SPLIT_SEQ,
        IsRemoteRecovering as u8,
        &[region::LAST_WORK],
    )
    .request(3, 0, StatusTable as u8, &[]);
    s.push(("seed-clustered-reconnect".into(), clustered.0));

    // Limits: over the memory budget, more logs than --max-logs, and the
    // live logs served all the while.
    let mut limits = Input::new(prelude::CTR, kind::CORE, 0xff);
    for target in 0..4 {
        limits = limits.macro_op(target, 0, &[macros::CTR, kind::CORE, 10]);
    }
    limits = limits
        .raw(&kernel_request(70, Ctr as u32, b"4000 core 8"))
        .request(2, 0, GetSyncCount as u8, &[])
        .request(3, 0, Dtr as u8, &[])
        .macro_op(3, 0, &[macros::CTR, kind::CORE, 0xfe])
        .request(3, 0, StatusInfo as u8, &[])
        .request(0, 0, Dtr as u8, &[])
        .request(1, 0, Dtr as u8, &[])
        .request(2, 0, Dtr as u8, &[])
        .macro_op(3, 0, &[macros::CTR, kind::CORE, 0xfe])
        .macro_op(2, 0, &[macros::CTR, kind::CORE, 0])
        .request(3, 0, GetSyncCount as u8, &[]);
    s.push(("seed-limits".into(), limits.0));

    // The daemon restarts; the kernel reconnects its logs (CTR with NUL,
    // RESUME) and finds their bits.
    let restart = Input::new(both, kind::CORE, 99)
        .macro_op(0, 0, &[macros::RESYNC, 40, 0x04])
        .regions(0, 0, MarkRegion as u8, &[1, 50, region::LAST])
        .macro_op(2, 0, &[macros::CTR, kind::DISK, 60])
        .request(2, 0, Resume as u8, &[])
        .regions(2, 0, ClearRegion as u8, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .regions(2, 0, Flush as u8, &[4])
        .macro_op(0, 0, &[macros::RESTART])
        .regions(0, 0, IsClean as u8, &[1])
        .macro_op(0, 0, &[macros::CTR, kind::CORE | kind::WITH_NUL, 99])
        .request(0, 0, Resume as u8, &[])
        .macro_op(2, 0, &[macros::CTR, kind::DISK | kind::WITH_NUL, 60])
        .request(2, 0, Resume as u8, &[])
        .regions(2, 0, InSync as u8, &[4])
        .macro_op(0, 0, &[macros::RESTART])
        .request(0, 0, Dtr as u8, &[])
        .macro_op(0, 0, &[macros::CTR, kind::CORE | kind::WITH_NUL, 99])
        .macro_op(0, 0, &[macros::RESYNC, 255, 0]);
    s.push(("seed-restart".into(), restart.0));

    // The frame seeds (but their CTRs) as raw datagrams, after a CTR under
    // their uuid.
    let mut raw = Input::new(0, 0, 0).raw(&kernel_request(1, Ctr as u32, b"4000 core 8"));
    for (_, f) in frames.iter().filter(|(n, _)| !n.contains("-ctr-")) {
        raw = raw.raw(f);
    }
    s.push(("seed-raw-frames".into(), raw.0));
    s
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let frames = frame_seeds();
    let servers = server_seeds(&frames);
    for (target, seeds) in [("frame", &frames), ("server", &servers)] {
        let dir = Path::new(CORPUS).join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

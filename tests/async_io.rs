//! Log device work with an engine whose completions the test releases, in
//! any order it chooses: per log, FLUSHes are answered in order and only
//! when their device work is done; marks made while a write is in flight
//! go into the next write; a failed write re-dirties its blocks; a full
//! FIFO drops its oldest waiting request; other logs, and requests of the
//! busy log that need no device work, are answered at once.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use dm_ulogd::engine::{Engine, FakeIo};
use dm_ulogd::log::disk::Step;
use dm_ulogd::mirrors::FakeMirrors;
use dm_ulogd::registry::PARKED_PER_LOG;
use dm_ulogd::server::{Limits, Server};
use dm_ulogd::wire::frame::{self, REPLY_BUF_LEN, REPLY_DATA_OFFSET, REQUEST_OFFSET};

const CTR: u32 = 1;
const DTR: u32 = 2;
const RESUME: u32 = 5;
const IS_CLEAN: u32 = 7;
const FLUSH: u32 = 9;
const MARK_REGION: u32 = 10;
const CLEAR_REGION: u32 = 11;
const SET_REGION_SYNC: u32 = 13;
const STATUS_INFO: u32 = 15;

const EIO: i32 = 5;
const A: &[u8] = b"LVM-async-test-log-a";
const B: &[u8] = b"LVM-async-test-log-b";
const LUID: u64 = 7;
/// Regions per log (one 4 KiB image on a 512-byte-block "device").
const COUNT: u64 = 64;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("async_io")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state")).unwrap();
    dir
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

/// True when `region` is recorded clean in the image on `device`.
fn clean_on_device(device: &Path, region: u64) -> bool {
    fs::read(device).unwrap()[1024 + (region / 8) as usize] & (1 << (region % 8)) != 0
}

struct Daemon {
    server: Server,
    io: FakeIo,
    seq: u32,
    /// (request seq, error) of every reply, in the order they left.
    answered: Vec<(u32, i32)>,
    devices: Vec<PathBuf>,
}

impl Daemon {
    /// Two disk logs of COUNT regions, A on slot 0 and B on slot 1,
    /// resumed, every region clean and in sync on the device.
    fn new(name: &str) -> Self {
        Self::with_regions(name, COUNT)
    }

    /// As `new`, with `count` regions; beyond COUNT the logs are created
    /// `nosync` (clean and in sync from the start).
    fn with_regions(name: &str, count: u64) -> Self {
        let dir = scratch(name);
        let fd: OwnedFd = fs::File::open(dir.join("state")).unwrap().into();
        let limits = Limits {
            max_logs: 4,
            memory_budget: 16 << 20,
        };
        let io = FakeIo::default();
        let engine = Engine::fake(Server::io_slots(limits), io.clone());
        let server = Server::new(
            limits,
            fd.try_clone().unwrap(),
            fd,
            Box::new(FakeMirrors::two_legs()),
        )
        .with_engine(engine);
        let mut d = Daemon {
            server,
            io,
            seq: 0,
            answered: Vec::new(),
            devices: Vec::new(),
        };
        for (uuid, file) in [(A, "device-a"), (B, "device-b")] {
            let path = dir.join(file);
            let image = (1024 + count.div_ceil(64) * 8).next_multiple_of(4096);
            fs::write(&path, vec![0u8; image as usize]).unwrap();
            let table = if count > COUNT {
                format!("{} disk 3 {} 8 nosync", count * 8, path.display())
            } else {
                format!("{} disk 2 {} 8", count * 8, path.display())
            };
            assert!(d.send(uuid, CTR, table.as_bytes()).is_some());
            d.devices.push(path);
            let resume = d.send_parked(uuid, RESUME, &[]);
            d.finish_all();
            d.assert_answered(resume, 0);
            if count <= COUNT {
                let all: Vec<u64> = (0..count).collect();
                d.now(uuid, CLEAR_REGION, &u64s(&all));
                for r in 0..count {
                    d.now(uuid, SET_REGION_SYNC, &u64s(&[r, 1]));
                }
            }
        }
        d.server.write_back_all(&mut |_| {});
        d.finish_all();
        for device in &d.devices {
            let bytes = fs::read(device).unwrap();
            let clean = |r: u64| bytes[1024 + (r / 8) as usize] & (1 << (r % 8)) != 0;
            assert!((0..count).all(clean));
        }
        d.answered.clear();
        d
    }

    /// Sends a request; Some((error, data)) when answered at once.
    fn send(&mut self, uuid: &[u8], type_field: u32, data: &[u8]) -> Option<(i32, Vec<u8>)> {
        self.seq += 1;
        let mut req = vec![0u8; REPLY_DATA_OFFSET + data.len()];
        frame::emit_request(&mut req, self.seq, LUID, uuid, self.seq, type_field, data);
        let mut out = [0u8; REPLY_BUF_LEN];
        let n = self.server.handle(&req, &mut out)?;
        let error = u32_at(&out, REQUEST_OFFSET + 144) as i32;
        Some((error, out[REPLY_DATA_OFFSET..n].to_vec()))
    }

    /// A request answered at once, successfully; its data.
    fn now(&mut self, uuid: &[u8], type_field: u32, data: &[u8]) -> Vec<u8> {
        let (error, data) = self
            .send(uuid, type_field, data)
            .unwrap_or_else(|| panic!("request {type_field} was not answered at once"));
        assert_eq!(error, 0, "request {type_field}");
        data
    }

    /// A request that must wait for device work; its seq.
    fn send_parked(&mut self, uuid: &[u8], type_field: u32, data: &[u8]) -> u32 {
        assert!(
            self.send(uuid, type_field, data).is_none(),
            "request {type_field} was answered before its device work"
        );
        self.collect();
        self.seq
    }

    /// Takes the replies of finished work.
    fn collect(&mut self) {
        let answered = &mut self.answered;
        self.server.complete(&mut |r| {
            answered.push((
                u32_at(r, REQUEST_OFFSET + 148),
                u32_at(r, REQUEST_OFFSET + 144) as i32,
            ))
        });
    }

    /// The step in flight on `slot`.
    fn pending(&self, slot: usize) -> Option<Step> {
        self.io
            .pending()
            .into_iter()
            .find(|&(s, _)| s == slot)
            .map(|(_, step)| step)
    }

    /// Completes the step in flight on `slot`; returns it.
    fn finish(&mut self, slot: usize, fail: bool) -> Step {
        let step = self.pending(slot).expect("a step in flight");
        assert!(self.io.complete(slot, fail));
        self.collect();
        step
    }

    /// Completes every step, oldest first, until none is left.
    fn finish_all(&mut self) {
        while let Some(&(slot, _)) = self.io.pending().first() {
            self.finish(slot, false);
        }
    }

    fn was_answered(&self, seq: u32) -> bool {
        self.answered.iter().any(|&(s, _)| s == seq)
    }

    fn assert_answered(&self, seq: u32, error: i32) {
        let got: Vec<i32> = self
            .answered
            .iter()
            .filter(|&&(s, _)| s == seq)
            .map(|&(_, e)| e)
            .collect();
        assert_eq!(got, vec![error], "replies to request seq {seq}");
    }
}

#[test]
fn flushes_complete_in_order_and_a_mark_during_a_write_goes_into_the_next() {
    let mut d = Daemon::new("order");
    d.now(A, MARK_REGION, &u64s(&[1]));
    let f1 = d.send_parked(A, FLUSH, &[]);
    // One block to write: a durable (FUA) write, no separate cache flush.
    assert!(matches!(
        d.pending(0),
        Some(Step::Write { durable: true, .. })
    ));
    // While the first write is in flight: another mark, another FLUSH.
    d.now(A, MARK_REGION, &u64s(&[2]));
    let f2 = d.send_parked(A, FLUSH, &[]);
    assert!(!d.was_answered(f1), "answered before its write is durable");
    // (The fake engine does a step's I/O when it is submitted.)
    assert!(
        !clean_on_device(&d.devices[0], 1),
        "the first write has region 1"
    );
    assert!(
        clean_on_device(&d.devices[0], 2),
        "the first write was rendered before region 2's mark"
    );
    assert!(matches!(d.finish(0, false), Step::Write { .. }));
    assert_eq!(d.answered, vec![(f1, 0)], "the first FLUSH, alone");
    // The second FLUSH's own work: region 2 now.
    assert!(!d.was_answered(f2));
    assert!(matches!(
        d.finish(0, false),
        Step::Write { durable: true, .. }
    ));
    assert!(
        !clean_on_device(&d.devices[0], 2),
        "the next write has region 2"
    );
    assert_eq!(d.answered, vec![(f1, 0), (f2, 0)]);
    assert!(d.io.pending().is_empty());
}

#[test]
fn a_flush_completing_out_of_order_across_logs_keeps_each_logs_order() {
    let mut d = Daemon::new("cross");
    d.now(A, MARK_REGION, &u64s(&[5]));
    let fa = d.send_parked(A, FLUSH, &[]);
    d.now(B, MARK_REGION, &u64s(&[6]));
    let fb = d.send_parked(B, FLUSH, &[]);
    // B's device answers first, A's later: B's FLUSH leaves first.
    d.finish(1, false);
    assert_eq!(d.answered, vec![(fb, 0)]);
    d.finish(0, false);
    assert_eq!(d.answered, vec![(fb, 0), (fa, 0)]);
}

#[test]
fn a_failed_write_re_dirties_its_blocks_and_the_next_flush_writes_them() {
    let mut d = Daemon::new("failed-write");
    d.now(A, MARK_REGION, &u64s(&[3]));
    let f1 = d.send_parked(A, FLUSH, &[]);
    assert!(matches!(d.finish(0, true), Step::Write { .. }));
    // The plan stops at the failed write: no cache flush, -EIO, status D.
    d.assert_answered(f1, -EIO);
    assert!(d.io.pending().is_empty());
    assert_eq!(d.now(A, STATUS_INFO, &[]), b"3 disk 0:0 D\0".to_vec());
    // No new mark: the next FLUSH writes region 3's block again.
    let f2 = d.send_parked(A, FLUSH, &[]);
    assert!(matches!(
        d.finish(0, false),
        Step::Write { durable: true, .. }
    ));
    d.assert_answered(f2, 0);
    assert!(!clean_on_device(&d.devices[0], 3));
}

/// Regions whose bits lie 20 KiB apart on the device: separate writes
/// (MERGE_GAP is 16 KiB).
const FAR: u64 = 20 * 1024 * 8;

#[test]
fn a_flush_of_scattered_marks_writes_them_all_at_once_as_fua_writes() {
    let mut d = Daemon::with_regions("scattered-marks", FAR + 64);
    d.now(A, MARK_REGION, &u64s(&[1, FAR]));
    // A failed batch leaves both blocks dirty: the next FLUSH writes both.
    let failed = d.send_parked(A, FLUSH, &[]);
    assert!(matches!(d.finish(0, true), Step::Write { .. }));
    d.assert_answered(failed, -EIO);
    let f = d.send_parked(A, FLUSH, &[]);
    // One step of two writes, submitted together, each durable by itself:
    // no cache flush follows.
    let batch = d.io.batch(0);
    let offsets: Vec<u64> = batch.iter().map(|s| s.offset).collect();
    assert_eq!(offsets, vec![1024, 1024 + FAR / 8]);
    assert_eq!(batch[1].buf_offset, batch[0].len, "packed in the buffer");
    assert_eq!(
        d.finish(0, false),
        Step::Write {
            spans: 2,
            durable: true
        }
    );
    d.assert_answered(f, 0);
    assert!(d.io.pending().is_empty());
    assert!(!clean_on_device(&d.devices[0], 1) && !clean_on_device(&d.devices[0], FAR));
    assert!(clean_on_device(&d.devices[0], 2) && clean_on_device(&d.devices[0], FAR + 1));
}

#[test]
fn a_flush_of_more_writes_than_one_batch_ends_with_a_cache_flush_and_a_failed_one_leaves_the_marks_pending()
 {
    let batch = dm_ulogd::log::disk::MAX_WRITE_SPANS as u64;
    let marks: Vec<u64> = (0..=batch).map(|i| i * FAR).collect();
    let mut d = Daemon::with_regions("failed-cache-flush", batch * FAR + 64);
    d.now(A, MARK_REGION, &u64s(&marks));
    let f1 = d.send_parked(A, FLUSH, &[]);
    // A FUA write covers only itself: with two batches, plain writes and
    // then the cache flush.
    for spans in [batch as u8, 1] {
        let durable = false;
        assert_eq!(d.finish(0, false), Step::Write { spans, durable });
    }
    assert!(!d.was_answered(f1));
    assert_eq!(d.finish(0, true), Step::DeviceFlush);
    d.assert_answered(f1, -EIO);
    let f2 = d.send_parked(A, FLUSH, &[]);
    assert_eq!(
        d.finish(0, false),
        Step::DeviceFlush,
        "nothing left to write"
    );
    d.assert_answered(f2, 0);
    for &r in &marks {
        assert!(!clean_on_device(&d.devices[0], r), "region {r}");
    }
}

#[test]
fn a_clear_during_a_write_back_is_not_recorded_clean_before_a_leg_flush() {
    let mut d = Daemon::new("clear-during-write-back");
    d.now(A, MARK_REGION, &u64s(&[9, 10]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    // Region 9 cleared: the idle write-back flushes the legs, then writes.
    d.now(A, CLEAR_REGION, &u64s(&[9]));
    d.server.write_back_all(&mut |_| {});
    assert_eq!(d.pending(0), Some(Step::LegFlush));
    // Region 10's writes complete while the leg flush is in flight: the
    // write that follows must keep it dirty.
    d.now(A, CLEAR_REGION, &u64s(&[10]));
    d.finish(0, false);
    assert!(matches!(d.finish(0, false), Step::Write { .. }));
    assert!(clean_on_device(&d.devices[0], 9));
    assert!(
        !clean_on_device(&d.devices[0], 10),
        "cleared after the leg flush"
    );
    d.finish_all();
}

#[test]
fn a_full_fifo_drops_its_oldest_waiting_request() {
    let mut d = Daemon::new("full");
    d.now(A, MARK_REGION, &u64s(&[1]));
    let first = d.send_parked(A, FLUSH, &[]);
    let mut waiting = Vec::new();
    for _ in 0..PARKED_PER_LOG {
        waiting.push(d.send_parked(A, FLUSH, &[]));
    }
    // PARKED_PER_LOG + 1 requests for a FIFO of PARKED_PER_LOG: the oldest
    // one not started (the second FLUSH) is dropped; the one in progress
    // stays.
    d.finish_all();
    let dropped = waiting.remove(0);
    assert!(
        !d.was_answered(dropped),
        "the oldest waiting request is dropped"
    );
    let order: Vec<u32> = d.answered.iter().map(|&(s, _)| s).collect();
    let mut want = vec![first];
    want.extend(&waiting);
    assert_eq!(order, want, "the rest answered in order");
    assert!(d.answered.iter().all(|&(_, e)| e == 0));
}

#[test]
fn other_logs_and_memory_requests_are_answered_while_a_device_hangs() {
    let mut d = Daemon::new("hang");
    d.now(A, MARK_REGION, &u64s(&[1]));
    let hung = d.send_parked(A, FLUSH, &[]);
    // A's device never answers in this test. A's requests that need no
    // device work are answered at once, from memory.
    assert_eq!(d.now(A, IS_CLEAN, &u64s(&[1])), u64s(&[0]));
    d.now(A, MARK_REGION, &u64s(&[2]));
    d.now(A, CLEAR_REGION, &u64s(&[2]));
    assert_eq!(d.now(A, STATUS_INFO, &[]), b"3 disk 0:0 A\0".to_vec());
    // B is served normally, its FLUSHes included.
    for round in 0..3 {
        d.now(B, MARK_REGION, &u64s(&[round]));
        let f = d.send_parked(B, FLUSH, &[]);
        d.finish(1, false);
        d.assert_answered(f, 0);
        d.now(B, CLEAR_REGION, &u64s(&[round]));
    }
    assert!(!d.was_answered(hung));
    assert!(d.server.io_in_flight());
    // A DTR of B while A hangs: B's deferred clears are written first.
    let dtr = d.send_parked(B, DTR, &[]);
    assert_eq!(d.finish(1, false), Step::LegFlush);
    assert!(
        !d.was_answered(dtr),
        "answered before its clears were written"
    );
    assert!(matches!(d.finish(1, false), Step::Write { .. }));
    d.assert_answered(dtr, 0);
    assert_eq!(d.server.registry().len(), 1);
    // A's device comes back.
    d.finish_all();
    d.assert_answered(hung, 0);
}

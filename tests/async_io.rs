//! Log device work with an engine whose completions the test releases, in
//! any order it chooses: per log, FLUSHes are answered in order and only
//! when their device work is done; marks made while a write is in flight
//! go into the next write; a failed write re-dirties its blocks; a full
//! FIFO drops its oldest waiting request; other logs, and requests of the
//! busy log that need no device work, are answered at once.
//!
//! The durability tests keep a model of each log device's volatile write
//! cache (`Cache`): a plain write is durable only once a cache flush
//! completes after it, a FUA write is durable alone. The test disks of the
//! real-kernel tests cannot tell the two apart (virtio-blk turns every FUA
//! write into a write and a full cache flush), so this is where a FUA
//! write answering for plain writes still in the cache shows.

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
const PRESUSPEND: u32 = 3;
const POSTSUSPEND: u32 = 4;
const RESUME: u32 = 5;
const IS_CLEAN: u32 = 7;
const IN_SYNC: u32 = 8;
const FLUSH: u32 = 9;
const MARK_REGION: u32 = 10;
const CLEAR_REGION: u32 = 11;
const SET_REGION_SYNC: u32 = 13;
const GET_SYNC_COUNT: u32 = 14;
const STATUS_INFO: u32 = 15;
const IS_REMOTE_RECOVERING: u32 = 17;

const EIO: i32 = 5;
const EAGAIN: u32 = 11;
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

/// What a log device holds durably: its bytes as a power cut would leave
/// them, and the plain writes still in its volatile cache.
struct Cache {
    durable: Vec<u8>,
    volatile: Vec<(u64, Vec<u8>)>,
}

struct Daemon {
    server: Server,
    io: FakeIo,
    seq: u32,
    /// (request seq, error) of every reply, in the order they left.
    answered: Vec<(u32, i32)>,
    devices: Vec<PathBuf>,
    /// The scratch directory (state files in state/).
    dir: PathBuf,
    /// The device of each engine slot, and its cache model.
    slots: Vec<(usize, usize)>,
    caches: Vec<Cache>,
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
            dir: dir.clone(),
            slots: vec![(0, 0), (1, 1)],
            caches: Vec::new(),
        };
        for (uuid, file) in [(A, "device-a"), (B, "device-b")] {
            let path = dir.join(file);
            let image = (1024 + count.div_ceil(64) * 8).next_multiple_of(4096);
            fs::write(&path, vec![0u8; image as usize]).unwrap();
            d.caches.push(Cache {
                durable: vec![0u8; image as usize],
                volatile: Vec::new(),
            });
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
        d.settle();
        d
    }

    /// The devices' caches were flushed by something else (a quiet
    /// moment): what the files hold is durable.
    fn settle(&mut self) {
        for (i, cache) in self.caches.iter_mut().enumerate() {
            cache.durable = fs::read(&self.devices[i]).unwrap();
            cache.volatile.clear();
        }
    }

    /// True when a power cut now would leave `region` recorded clean on
    /// device `device`.
    fn clean_after_power_cut(&self, device: usize, region: u64) -> bool {
        self.caches[device].durable[1024 + (region / 8) as usize] & (1 << (region % 8)) != 0
    }

    /// Asserts that a power cut now would leave every region of `regions`
    /// recorded dirty on device `device`: their marks are durable.
    fn assert_durably_dirty(&self, device: usize, regions: &[u64]) {
        for &r in regions {
            assert!(
                !self.clean_after_power_cut(device, r),
                "region {r}: its FLUSH was answered while its mark was not durable"
            );
        }
    }

    /// Sends a request; Some((error, data)) when answered at once.
    fn send(&mut self, uuid: &[u8], type_field: u32, data: &[u8]) -> Option<(i32, Vec<u8>)> {
        self.send_as(uuid, LUID, type_field, data)
    }

    /// `send` for the log `luid` of `uuid`.
    fn send_as(
        &mut self,
        uuid: &[u8],
        luid: u64,
        type_field: u32,
        data: &[u8],
    ) -> Option<(i32, Vec<u8>)> {
        let out = self.send_raw(uuid, luid, type_field, data)?;
        let error = u32_at(&out, REQUEST_OFFSET + 144) as i32;
        Some((error, out[REPLY_DATA_OFFSET.min(out.len())..].to_vec()))
    }

    /// The whole reply datagram of a request answered at once.
    fn send_raw(
        &mut self,
        uuid: &[u8],
        luid: u64,
        type_field: u32,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        self.seq += 1;
        let mut req = vec![0u8; REPLY_DATA_OFFSET + data.len()];
        frame::emit_request(&mut req, self.seq, luid, uuid, self.seq, type_field, data);
        let mut out = [0u8; REPLY_BUF_LEN];
        let n = self.server.handle(&req, &mut out)?;
        Some(out[..n].to_vec())
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

    /// Completes the step in flight on `slot`; returns it. The device's
    /// cache model takes what it did.
    fn finish(&mut self, slot: usize, fail: bool) -> Step {
        let step = self.pending(slot).expect("a step in flight");
        let batch = self.io.batch(slot);
        assert!(self.io.complete(slot, fail));
        if let Some(&(_, device)) = self.slots.iter().find(|&&(s, _)| s == slot)
            && !fail
        {
            // The fake engine wrote at submission, and no other step of
            // this device ran since.
            let bytes = fs::read(&self.devices[device]).unwrap();
            let cache = &mut self.caches[device];
            match step {
                Step::Write { durable, .. } => {
                    for span in &batch {
                        let at = span.offset as usize;
                        let written = bytes[at..at + span.len].to_vec();
                        if durable {
                            cache.durable[at..at + span.len].copy_from_slice(&written);
                        } else {
                            cache.volatile.push((span.offset, written));
                        }
                    }
                }
                Step::DeviceFlush => {
                    for (at, written) in cache.volatile.drain(..) {
                        let at = at as usize;
                        cache.durable[at..at + written.len()].copy_from_slice(&written);
                    }
                }
                Step::LegFlush | Step::Read { .. } => {}
            }
        }
        self.collect();
        step
    }

    /// A new daemon over the same devices, the old one killed: its state
    /// files are gone too (a /run that did not survive, or a restart from
    /// another state directory). The new engine's slots start at 0 again.
    fn restart_without_state(&mut self) {
        let state = self.dir.join("state");
        fs::remove_dir_all(&state).unwrap();
        fs::create_dir_all(&state).unwrap();
        self.restart();
    }

    /// A new daemon over the same devices and state files, the old one
    /// killed.
    fn restart(&mut self) {
        let state = self.dir.join("state");
        let fd: OwnedFd = fs::File::open(&state).unwrap().into();
        let limits = Limits {
            max_logs: 4,
            memory_budget: 16 << 20,
        };
        self.io = FakeIo::default();
        let engine = Engine::fake(Server::io_slots(limits), self.io.clone());
        self.server = Server::new(
            limits,
            fd.try_clone().unwrap(),
            fd,
            Box::new(FakeMirrors::two_legs()),
        )
        .with_engine(engine);
        self.answered.clear();
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

/// Regions whose bits lie in the log's first bitmap block (bytes 1024-1535
/// of the image), and one in a block of its own further on.
const SAME_BLOCK: [u64; 2] = [10, 11];
const NEXT_BLOCK: u64 = 3 * 4096;

/// Issue 24, 1(a): the idle write-back of a clear writes, as a plain write,
/// a mark made while its first write is in flight; the FLUSH that carried
/// the mark then finds only another block dirty. A FUA write of that block
/// must not answer the FLUSH: the first mark is still in the cache.
#[test]
fn a_fua_write_does_not_answer_for_a_mark_an_idle_write_back_left_in_the_cache() {
    let mut d = Daemon::with_regions("fua-after-write-back", FAR + 64);
    let [c, b] = SAME_BLOCK;
    let a = NEXT_BLOCK;
    d.now(A, MARK_REGION, &u64s(&[c]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.now(A, CLEAR_REGION, &u64s(&[c]));
    // Two seconds without requests: the idle write-back.
    d.server.write_back_all(&mut |_| {});
    assert_eq!(d.finish(0, false), Step::LegFlush);
    assert!(matches!(d.pending(0), Some(Step::Write { .. })));
    // While c's block is written: an integrated FLUSH marking a and b.
    let f = d.send_parked(A, FLUSH, &u64s(&[a, b]));
    d.finish_all();
    d.assert_answered(f, 0);
    d.assert_durably_dirty(0, &[a, b]);
}

/// Issue 24, 1(b): a plan of two write batches whose second fails leaves
/// the first one's plain writes in the cache; the next FLUSH rewrites only
/// the failed batch's blocks and must still flush the cache.
#[test]
fn a_flush_after_a_failed_batch_flushes_the_cache_for_the_batches_before_it() {
    let (mut d, marks, failed) = flush_of_two_batches("failed-second-batch");
    assert!(matches!(
        d.finish(0, false),
        Step::Write { durable: false, .. }
    ));
    assert!(matches!(d.finish(0, true), Step::Write { .. }));
    d.assert_answered(failed, -EIO);
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.assert_durably_dirty(0, &marks);
}

/// Issue 24, 1(c): plain writes whose cache flush failed are not durable;
/// a FLUSH with one new mark must flush the cache again, not write the new
/// mark's block alone with FUA.
#[test]
fn a_flush_after_a_failed_cache_flush_flushes_the_cache_again() {
    let (mut d, mut marks, failed) = flush_of_two_batches("failed-cache-flush-then-mark");
    d.finish(0, false);
    d.finish(0, false);
    assert_eq!(d.finish(0, true), Step::DeviceFlush);
    d.assert_answered(failed, -EIO);
    d.now(A, MARK_REGION, &u64s(&[1]));
    marks.push(1);
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.assert_durably_dirty(0, &marks);
}

/// A disk log whose FLUSH writes one batch more than a write step carries,
/// far apart: two steps of plain writes, then a cache flush. Returns the
/// daemon, the marked regions and the FLUSH's seq.
fn flush_of_two_batches(name: &str) -> (Daemon, Vec<u64>, u32) {
    let batch = dm_ulogd::log::disk::MAX_WRITE_SPANS as u64;
    let marks: Vec<u64> = (0..=batch).map(|i| i * FAR).collect();
    let mut d = Daemon::with_regions(name, batch * FAR + 64);
    d.now(A, MARK_REGION, &u64s(&marks));
    let flush = d.send_parked(A, FLUSH, &[]);
    (d, marks, flush)
}

/// The FUA speed-up stays where it is sound: a marking FLUSH after an idle
/// write-back of clears alone is one FUA write (a lost plain write of
/// clears only leaves regions dirty).
#[test]
fn a_flush_after_a_write_back_of_clears_alone_is_one_fua_write() {
    let mut d = Daemon::with_regions("fua-after-clears", FAR + 64);
    d.now(A, MARK_REGION, &u64s(&[5]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.now(A, CLEAR_REGION, &u64s(&[5]));
    d.server.write_back_all(&mut |_| {});
    d.finish_all();
    d.now(A, MARK_REGION, &u64s(&[NEXT_BLOCK]));
    let f = d.send_parked(A, FLUSH, &[]);
    assert_eq!(
        d.finish(0, false),
        Step::Write {
            spans: 1,
            durable: true
        }
    );
    d.assert_answered(f, 0);
    assert!(d.io.pending().is_empty());
}

/// Issue 24, 2: a reload in the kernel's order (new CTR, old suspended,
/// a late CLEAR to the old log from kmirrord, new RESUME, writes on the new
/// table, old DTR). The old log's DTR must not write its bits, which know
/// nothing of the new log's marks, over the device they share.
#[test]
fn an_old_tables_dtr_does_not_write_over_the_new_tables_log() {
    let mut d = Daemon::new("reload-dtr");
    const NEW_LUID: u64 = LUID + 1;
    let (x, y) = (5, 6);
    d.now(A, MARK_REGION, &u64s(&[x]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    // The new table's log: same uuid and device, engine slot 2.
    let table = format!("{} disk 2 {} 8", COUNT * 8, d.devices[0].display());
    let (error, _) = d.send_as(A, NEW_LUID, CTR, table.as_bytes()).unwrap();
    assert_eq!(error, 0);
    d.slots.push((2, 0));
    assert_eq!(d.send(A, PRESUSPEND, &[]), Some((0, Vec::new())));
    if let Some((error, _)) = d.send(A, POSTSUSPEND, &[]) {
        assert_eq!(error, 0);
    }
    d.collect();
    d.finish_all();
    // Writes that completed during the suspend: cleared after it.
    d.now(A, CLEAR_REGION, &u64s(&[x]));
    assert!(d.send_as(A, NEW_LUID, RESUME, &[]).is_none());
    d.collect();
    d.finish_all();
    // The new table writes region y.
    assert_eq!(
        d.send_as(A, NEW_LUID, MARK_REGION, &u64s(&[y])).unwrap().0,
        0
    );
    assert!(d.send_as(A, NEW_LUID, FLUSH, &[]).is_none());
    d.collect();
    d.finish_all();
    assert!(!d.clean_after_power_cut(0, y));
    // The old table is destroyed.
    if d.send(A, DTR, &[]).is_none() {
        d.collect();
        d.finish_all();
    }
    assert_eq!(d.server.registry().len(), 2, "the new log and B");
    assert!(
        !clean_on_device(&d.devices[0], y),
        "the old log's DTR wrote its bits over the new log's mark of region {y}"
    );
    assert!(!d.clean_after_power_cut(0, y));
}

/// Issue 24, 3: a disk log the kernel reconnects with no saved state reads
/// its device in several steps when its image is larger than the staging
/// buffer, and requests are served between them. A CLEAR of a region whose
/// part was read already must not be written clean without a leg flush.
#[test]
fn a_clear_during_a_reconnect_load_is_not_written_clean_without_a_leg_flush() {
    // An image of ~76 KiB: two reads of the 64 KiB staging buffer.
    let count = 600_000;
    let mut d = Daemon::with_regions("clear-during-load", count);
    let r = 100;
    d.now(A, MARK_REGION, &u64s(&[r]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.restart_without_state();
    let mut table = format!("{} disk 2 {} 8", count * 8, d.devices[0].display()).into_bytes();
    table.push(0);
    assert_eq!(d.send(A, CTR, &table), Some((0, Vec::new())));
    let resume = d.send_parked(A, RESUME, &[]);
    assert!(matches!(d.finish(0, false), Step::Read { offset: 0, .. }));
    // Region r's part was read (dirty); the kernel clears it now.
    d.now(A, CLEAR_REGION, &u64s(&[r]));
    let mut leg_flushed = false;
    while let Some(step) = d.pending(0) {
        leg_flushed |= step == Step::LegFlush;
        d.finish(0, false);
    }
    d.assert_answered(resume, 0);
    assert!(
        leg_flushed || !clean_on_device(&d.devices[0], r),
        "region {r} was written clean with no leg flush after its CLEAR"
    );
}

/// Issue 24, 4: a `nosync` disk log reconnected without its state file
/// must keep the dirty bits its device holds: `nosync` only said how to
/// start the log when its table was first loaded.
#[test]
fn a_nosync_disk_log_reconnected_without_state_keeps_its_devices_dirty_bits() {
    let count = COUNT * 4;
    let mut d = Daemon::with_regions("nosync-reconnect", count);
    let r = 9;
    d.now(A, MARK_REGION, &u64s(&[r]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.restart_without_state();
    let mut table = format!("{} disk 3 {} 8 nosync", count * 8, d.devices[0].display());
    table.push('\0');
    assert_eq!(d.send(A, CTR, table.as_bytes()), Some((0, Vec::new())));
    let resume = d.send_parked(A, RESUME, &[]);
    d.finish_all();
    d.assert_answered(resume, 0);
    assert!(
        !clean_on_device(&d.devices[0], r),
        "the device's dirty bit of region {r} was discarded"
    );
    assert_eq!(d.now(A, IN_SYNC, &u64s(&[r])), u64s(&[0]));
}

/// Issue 26, 1: while a RESUME reads the device of a suspended disk log,
/// the sync bits are those from before the suspend; no answer may tell the
/// kernel that every region is in sync (it would stop asking for resync
/// work until the next resume).
#[test]
fn the_sync_count_stays_below_the_region_count_while_a_resume_reads_the_device() {
    let mut d = Daemon::new("sync-count-during-load");
    d.now(A, MARK_REGION, &u64s(&[3]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    assert_eq!(d.now(A, GET_SYNC_COUNT, &[]), u64s(&[COUNT]));
    // Suspended with region 3 dirty on the device (its writes were in
    // flight), then resumed: the read takes region 3 out of sync.
    if d.send(A, POSTSUSPEND, &[]).is_none() {
        d.collect();
        d.finish_all();
    }
    let resume = d.send_parked(A, RESUME, &[]);
    assert!(matches!(d.pending(0), Some(Step::Read { .. })));
    let count = u64::from_ne_bytes(d.now(A, GET_SYNC_COUNT, &[])[..8].try_into().unwrap());
    assert!(
        count < COUNT,
        "GET_SYNC_COUNT answered {count} during the read"
    );
    let hint = d.now(A, IS_REMOTE_RECOVERING, &u64s(&[0]));
    assert!(u64::from_ne_bytes(hint[8..16].try_into().unwrap()) < COUNT);
    d.finish_all();
    d.assert_answered(resume, 0);
    assert_eq!(d.now(A, GET_SYNC_COUNT, &[]), u64s(&[COUNT - 1]));
    assert_eq!(d.now(A, IN_SYNC, &u64s(&[3])), u64s(&[0]));
}

/// The kernel's `fill_pkg` (dm-log-userspace-transfer.c): what a reply does
/// to the reply capacity of the request it answers. None: the kernel drops
/// it (an incomplete header).
fn capacity_after(reply: &[u8], capacity: usize) -> Option<usize> {
    let cn_len = usize::from(u16::from_ne_bytes([reply[32], reply[33]]));
    let ack = u32_at(reply, 28);
    match cn_len {
        0 if ack == EAGAIN => Some(capacity),
        0 => Some(0),
        n if n < dm_ulogd::wire::ulog::HEADER_LEN => None,
        _ => Some(u32_at(reply, REQUEST_OFFSET + 156) as usize),
    }
}

/// Issue 27, 3: a CTR that must wait (its luid still names a failed load's
/// log with device work) is answered "try again" in the form that keeps
/// the kernel's reply capacity, so the retried CTR's reply still fits.
#[test]
fn a_ctr_answered_eagain_leaves_the_kernel_room_for_the_retry() {
    let mut d = Daemon::new("eagain");
    const FAILED: u64 = 40;
    let table = format!("{} disk 2 {} 8", COUNT * 8, d.devices[0].display());
    assert_eq!(d.send_as(A, FAILED, CTR, table.as_bytes()).unwrap().0, 0);
    d.slots.push((2, 0));
    // A FLUSH before its RESUME loads the device: a read in flight.
    assert!(d.send_as(A, FAILED, FLUSH, &[]).is_none());
    d.collect();
    assert!(matches!(d.pending(2), Some(Step::Read { .. })));
    // The table load failed; the kernel reuses the luid for another one.
    let other = format!("{} disk 2 {} 8", COUNT * 8, d.devices[1].display());
    let reply = d.send_raw(A, FAILED, CTR, other.as_bytes()).unwrap();
    const DM_NAME_LEN: usize = 128;
    let capacity = capacity_after(&reply, DM_NAME_LEN).expect("a reply the kernel takes");
    assert_eq!(capacity, DM_NAME_LEN, "the retry's reply buffer");
    assert_eq!(u32_at(&reply, 28), EAGAIN, "try again at once");
    d.finish_all();
    let reply = d.send_raw(A, FAILED, CTR, other.as_bytes()).unwrap();
    assert_eq!(u32_at(&reply, REQUEST_OFFSET + 144), 0);
    let needed = u32_at(&reply, REQUEST_OFFSET + 156) as usize;
    assert!(
        needed > 0 && needed <= capacity,
        "{needed} bytes for {capacity}"
    );
}

/// Issue 26, 2: the disk log's failure flags survive a restart of the
/// daemon: the status still says the device failed, and a log whose legs
/// could not be flushed still records nothing clean.
#[test]
fn failure_flags_survive_a_restart() {
    let mut d = Daemon::new("flags-restart");
    let table = |d: &Daemon, i: usize| {
        format!("{} disk 2 {} 8\0", COUNT * 8, d.devices[i].display()).into_bytes()
    };
    // A: a write fails (status D).
    d.now(A, MARK_REGION, &u64s(&[1]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish(0, true);
    d.assert_answered(f, -EIO);
    assert_eq!(d.now(A, STATUS_INFO, &[]), b"3 disk 0:0 D\0".to_vec());
    // B: the legs cannot be flushed (the idle write-back of a clear).
    d.now(B, MARK_REGION, &u64s(&[2]));
    let f = d.send_parked(B, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.now(B, CLEAR_REGION, &u64s(&[2]));
    d.server.write_back_all(&mut |_| {});
    assert_eq!(d.finish(1, true), Step::LegFlush);
    d.finish_all();
    assert!(!clean_on_device(&d.devices[1], 2));
    d.restart();
    for (uuid, i) in [(A, 0), (B, 1)] {
        let t = table(&d, i);
        assert_eq!(d.send(uuid, CTR, &t), Some((0, Vec::new())), "reconnect");
        if d.send(uuid, RESUME, &[]).is_none() {
            d.collect();
            d.finish_all();
        }
    }
    assert_eq!(
        d.now(A, STATUS_INFO, &[]),
        b"3 disk 0:0 D\0".to_vec(),
        "a failed device looks healthy after a restart"
    );
    // B records nothing clean: region 3 marked (already dirty, so its
    // FLUSH has nothing to write), written, cleared.
    d.now(B, MARK_REGION, &u64s(&[3]));
    d.now(B, FLUSH, &[]);
    d.now(B, CLEAR_REGION, &u64s(&[3]));
    assert_eq!(d.now(B, IS_CLEAN, &u64s(&[3])), u64s(&[0]));
    d.server.write_back_all(&mut |_| {});
    d.finish_all();
    assert!(
        !clean_on_device(&d.devices[1], 3),
        "recorded clean after a failed leg flush and a restart"
    );
}

/// Issue 27, 1: after a restart, the POSTSUSPEND of a disk log the kernel
/// has not reconnected writes the saved bits through the engine: parked
/// until its leg flush and write complete, while other logs are served.
#[test]
fn a_postsuspend_before_the_reconnect_writes_through_the_engine() {
    let mut d = Daemon::new("postsuspend-after-restart");
    d.now(A, MARK_REGION, &u64s(&[4]));
    let f = d.send_parked(A, FLUSH, &[]);
    d.finish_all();
    d.assert_answered(f, 0);
    d.now(A, CLEAR_REGION, &u64s(&[4]));
    d.restart();
    // B reconnects and is served; A does not reconnect before its suspend.
    let table = format!("{} disk 2 {} 8\0", COUNT * 8, d.devices[1].display());
    assert_eq!(d.send(B, CTR, table.as_bytes()), Some((0, Vec::new())));
    d.slots = vec![(0, 1), (1, 0)];
    let resume = d.send_parked(B, RESUME, &[]);
    d.finish_all();
    d.assert_answered(resume, 0);
    let suspend = d.send_parked(A, POSTSUSPEND, &[]);
    assert_eq!(
        d.pending(1),
        Some(Step::LegFlush),
        "A's saved bits, through the engine"
    );
    // A's device work hangs; B goes on.
    d.now(B, MARK_REGION, &u64s(&[7]));
    let f = d.send_parked(B, FLUSH, &[]);
    d.finish(0, false);
    d.assert_answered(f, 0);
    assert!(!d.was_answered(suspend));
    d.finish_all();
    d.assert_answered(suspend, 0);
    assert!(
        clean_on_device(&d.devices[0], 4),
        "the saved clear was written"
    );
    assert_eq!(d.server.registry().len(), 1, "A is not live");
    let state_files = fs::read_dir(d.dir.join("state"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("log-")
        })
        .count();
    assert_eq!(state_files, 2, "A's state file stays");
}

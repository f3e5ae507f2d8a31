//! The persistence half of a disk log: `DiskStore` keeps a log device's image
//! current through the steps it plans (step.rs), in the kernel's format (image.rs).
//!
//! The kernel's on-disk log format (dm-log.c), so a log device moves between
//! the kernel's `disk` log and dm-ulogd in both directions:
//! a little-endian header at byte 0 (magic, version 2, nr_regions) and the
//! clean bits at byte 1024, the whole rounded up to the logical block size.
//!
//! Only the device blocks whose bits changed since the last flush are
//! written, through one preallocated aligned staging buffer.

mod image;
mod step;

pub use image::{
    BITMAP_OFFSET, HEADER_LEN, MAGIC, VERSION, image_len, load_clean_bits, parse_header,
};
pub use step::{
    DeviceIo, IO_BUF_LEN, IoBuf, MAX_WRITE_SPANS, Span, Spans, Step, StepError, run_step,
};

use nix::errno::Errno;

use super::device::LogDevice;
use super::legs::LegSet;
use super::params::SyncMode;
use crate::bitmap::Bitmap;
use crate::sys::aio::STAGING_LEN;
use image::{and_clean_bits, render_image};

/// Changed blocks at most this many bytes apart are written as one transfer:
/// rewriting a few unchanged blocks costs less than another write request
/// (and on a small log every flush becomes a single write).
pub const MERGE_GAP: u64 = 16 * 1024;

/// How many cleared regions a disk log tracks exactly (8 bytes each).
pub const PENDING_CLEAR_SLOTS: usize = 32;

/// Requests issued to a log device and the legs, for the SIGUSR1 summary
/// and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub writes: u64,
    pub flushes: u64,
    /// Flushes of the mirror's legs (each flushes every leg).
    pub leg_flushes: u64,
}

/// The persistence half of a disk log.
///
/// Durability rules, those of the kernel's `disk` log (dm-log.c):
/// - a FLUSH with marks is answered only when the marks are on the device
///   and its cache is flushed;
/// - a region is recorded clean only after every leg of the mirror was
///   flushed since the region's writes completed (the kernel's
///   `flush_callback_fn` before `disk_flush` writes clean bits); when that
///   is impossible the log records nothing clean any more (`flush_failed`,
///   as the kernel does);
/// - clears need not be durable at once: a marking flush writes the marks
///   and keeps the tracked clears dirty on the device, so it needs no leg
///   flush; the clears go out with a leg flush on the idle write-back, a
///   suspend, or once more than PENDING_CLEAR_SLOTS wait.
pub struct DiskStore {
    device: LogDevice,
    image_len: u64,
    block_shift: u32,
    /// One bit per device block of the image whose bytes changed.
    dirty_blocks: Bitmap,
    /// A mark changed a bit since the last durable flush: the next flush
    /// must flush the device cache, not just write.
    marks_pending: bool,
    /// Regions cleared since the last leg flush that the device still
    /// records dirty. Marking one again costs no write (a journal, a
    /// sequential writer rewrite the same regions). Their blocks are not
    /// dirty for it: a marking flush does not rewrite them (it would write
    /// them dirty again), the next write-back dirties them after its leg
    /// flush decision.
    pending_clears: heapless::Vec<u64, PENDING_CLEAR_SLOTS>,
    /// Some region may become clean on the device with the next write and
    /// is not in `pending_clears` (the list was full, a clear came while a
    /// mark was pending, or bits were restored from a state file): that
    /// write needs the leg flush.
    untracked_clears: bool,
    /// The legs flush failed or the legs are unknown: no region is recorded
    /// clean any more (dm-log.c `flush_failed`; never reset for this log).
    flush_failed: bool,
    /// The mirror's legs, looked up at every RESUME; None when unknown.
    legs: Option<LegSet>,
    /// Set once RESUME has read the device; before that the bits are not
    /// the device's and must not be written over it.
    loaded: bool,
    /// The bits came from a state file: loading writes them to the device
    /// instead of reading it.
    restored: bool,
    /// A write or read failed ('D'); sticky, as the kernel's log_dev_failed.
    write_failed: bool,
    /// A cache flush failed ('F', which outranks 'D'); sticky.
    cache_flush_failed: bool,
    /// A plain (not FUA) write that may carry marks was issued since the
    /// last cache flush that completed: its bytes may still sit in the
    /// device's volatile cache, so a FUA write, durable only for its own
    /// blocks, can no longer stand in for a plan's cache flush (see
    /// `render_batch`). A plain write of clears alone does not count: were
    /// it lost, its regions would only stay dirty.
    unflushed_writes: bool,
    /// A newer log loaded this device while this one was suspended (a table
    /// reload): this log's bits are stale for it, so it never writes it
    /// again (see `supersede`).
    superseded: bool,
    /// When this log last began loading its device (CLOCK_BOOTTIME, ns; 0:
    /// never). Kept in the state file: of two logs of one mirror on one
    /// device, the one that loaded later is the newer table's, also across
    /// a restart of the daemon (see `Server::take_over_device`).
    load_stamp: u64,
    /// The bits became the device's once (`flags::LOADED`).
    loaded_once: bool,
    /// This log's whole life is known (`flags::KNOWN_LIFE`).
    known_life: bool,
    /// Failed writes and flushes since the last success.
    failures: u64,
    io: IoCounts,
    /// The device work decided on and not finished.
    plan: Plan,
    /// The spans of the write step rendered last.
    batch: Spans,
}

impl DiskStore {
    /// Checks that `device` holds the image for `region_count` regions;
    /// returns the bytes needed on failure.
    pub fn new(device: LogDevice, region_count: u64) -> Result<Self, u64> {
        let block_size = device.block_size();
        let image_len = image_len(region_count, block_size);
        if device.size() < image_len {
            return Err(image_len);
        }
        let dirty_blocks = Bitmap::try_new(image_len / block_size).map_err(|_| image_len)?;
        Ok(DiskStore {
            device,
            image_len,
            block_shift: block_size.trailing_zeros(),
            dirty_blocks,
            marks_pending: false,
            pending_clears: heapless::Vec::new(),
            untracked_clears: false,
            flush_failed: false,
            legs: None,
            loaded: false,
            restored: false,
            write_failed: false,
            cache_flush_failed: false,
            unflushed_writes: false,
            superseded: false,
            load_stamp: 0,
            loaded_once: false,
            known_life: false,
            failures: 0,
            io: IoCounts::default(),
            plan: Plan::idle(),
            batch: Spans::default(),
        })
    }

    pub fn device(&self) -> &LogDevice {
        &self.device
    }

    /// The status character: F (a cache flush failed) outranks D (a read
    /// or write failed); A otherwise. Sticky for the log's life, as in
    /// dm-log.c.
    pub fn status_char(&self) -> char {
        if self.cache_flush_failed {
            'F'
        } else if self.write_failed {
            'D'
        } else {
            'A'
        }
    }

    /// The sticky conditions a restarted daemon must not forget (kept in
    /// the log's state file, see `log::state`): the status character's
    /// causes, `flush_failed` and `superseded`.
    pub fn flags(&self) -> u32 {
        [
            (self.write_failed, flags::WRITE_FAILED),
            (self.cache_flush_failed, flags::CACHE_FLUSH_FAILED),
            (self.flush_failed, flags::LEGS_FLUSH_FAILED),
            (self.superseded, flags::SUPERSEDED),
            (self.loaded_once, flags::LOADED),
            (self.known_life, flags::KNOWN_LIFE),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |all, (_, bit)| all | bit)
    }

    /// Takes back the conditions `flags` saved (unknown bits are ignored).
    pub fn restore_flags(&mut self, saved: u32) {
        self.write_failed |= saved & flags::WRITE_FAILED != 0;
        self.cache_flush_failed |= saved & flags::CACHE_FLUSH_FAILED != 0;
        self.flush_failed |= saved & flags::LEGS_FLUSH_FAILED != 0;
        self.superseded |= saved & flags::SUPERSEDED != 0;
        self.loaded_once |= saved & flags::LOADED != 0;
        self.known_life |= saved & flags::KNOWN_LIFE != 0;
    }

    /// A log built by a table's first CTR: it knows its whole life.
    pub fn mark_new(&mut self) {
        self.known_life = true;
    }

    /// True when this log's whole life is known: built by a first CTR, by
    /// this daemon or one whose state file said so. A log the kernel
    /// reconnected with no such state may be older or newer than another
    /// log of its mirror.
    pub fn knows_its_life(&self) -> bool {
        self.known_life
    }

    pub fn load_stamp(&self) -> u64 {
        self.load_stamp
    }

    /// Takes back the load stamp a state file kept.
    pub fn restore_load_stamp(&mut self, stamp: u64) {
        self.load_stamp = stamp;
    }

    /// A load of the device begins now.
    fn stamp_load(&mut self) {
        self.load_stamp =
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(1, |t| {
                (t.tv_sec() as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(t.tv_nsec() as u64)
                    .max(1)
            });
    }

    /// A newer log has loaded this device while this log was suspended
    /// (PROTOCOL.md section 9, reload order: the old table's log gets its
    /// DTR only after the new one's RESUME, and kmirrord may still send it
    /// clears after its POSTSUSPEND). The newer log read the device at its
    /// RESUME and keeps its own bits; anything this log wrote now would
    /// put stale bits over the newer log's marks. So it drops what it had
    /// deferred and writes nothing from now on; its clears are moot.
    pub fn supersede(&mut self) {
        self.superseded = true;
        self.dirty_blocks.clear_range(0, self.dirty_blocks.len());
        self.pending_clears.clear();
        self.untracked_clears = false;
        self.marks_pending = false;
        self.restored = false;
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded
    }

    pub fn io_counts(&self) -> IoCounts {
        self.io
    }

    /// True once RESUME has read (or written) the device.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// True when regions can no longer be recorded clean (see
    /// `flush_failed`); clears are then ignored, as in dm-log.c.
    pub fn flush_failed(&self) -> bool {
        self.flush_failed
    }

    /// Heap bytes of the per-block dirty bits (the staging buffer is the
    /// engine's, see `crate::engine`).
    pub fn heap_bytes(&self) -> usize {
        self.dirty_blocks.heap_bytes()
    }

    /// The spans of the write step in flight (or rendered last).
    pub fn batch(&self) -> &[Span] {
        self.batch.as_slice()
    }

    /// The mirror's legs (None: unknown), from RESUME.
    pub fn set_legs(&mut self, legs: Option<LegSet>) {
        self.legs = legs;
    }

    pub fn legs(&self) -> Option<&LegSet> {
        self.legs.as_ref()
    }

    fn dirty_block_of(&mut self, region: u64) {
        let block = (BITMAP_OFFSET + region / 8) >> self.block_shift;
        self.dirty_blocks.set(block);
    }

    /// Records that the region's clean or sync bit changed; `marked` when it
    /// became dirty (or left sync), which the next flush must make durable.
    ///
    /// A region recorded clean is clean and in sync, so a region "becomes
    /// clean" only from recorded dirty. While no mark is pending, every
    /// mark so far is on the device, so a cleared region is still dirty
    /// there: it is tracked in `pending_clears`, and marking it again
    /// needs no write.
    #[inline]
    pub fn note_change(&mut self, region: u64, marked: bool) {
        if self.superseded {
            return;
        }
        if marked {
            if let Some(at) = self.pending_clears.iter().position(|&r| r == region) {
                self.pending_clears.swap_remove(at);
                return;
            }
            self.marks_pending = true;
        } else {
            // A clear while a mark is pending may be of a region whose
            // mark is not on the device yet: not tracked.
            let tracked = !self.marks_pending
                && (self.pending_clears.contains(&region)
                    || self.pending_clears.push(region).is_ok());
            if tracked {
                return;
            }
            self.untracked_clears = true;
            // A plan in flight keeps every tracked clear dirty in what it
            // writes; any other one needs the legs flushed again first.
            self.plan.clears_since_leg_flush = true;
        }
        self.dirty_block_of(region);
    }

    /// True when some write would record a region clean.
    fn clears_pending(&self) -> bool {
        self.untracked_clears || !self.pending_clears.is_empty()
    }

    /// True when changed blocks or tracked clears wait to be written.
    pub fn has_deferred_writes(&self) -> bool {
        self.loaded
            && !self.superseded
            && (!self.dirty_blocks.none_set() || !self.pending_clears.is_empty())
    }

    /// True while a step is in flight.
    pub fn step_in_flight(&self) -> bool {
        self.plan.in_flight.is_some()
    }

    /// The step in flight.
    pub fn in_flight(&self) -> Option<Step> {
        self.plan.in_flight
    }

    /// True while a plan has device work left or in flight.
    pub fn busy(&self) -> bool {
        self.plan.phase != Phase::Idle
    }

    /// True when a FLUSH would have device work to do.
    pub fn flush_needs_io(&self) -> bool {
        !self.superseded && (self.marks_pending || !self.loaded)
    }

    /// FLUSH: every mark must be durable before it is answered. The tracked
    /// clears stay dirty on the device (no leg flush on the write path);
    /// untracked ones go out with the marks after a leg flush.
    pub fn begin_flush(&mut self) {
        if !self.marks_pending || !self.loaded || self.superseded {
            self.plan = Plan::done();
        } else if self.untracked_clears {
            self.begin_write_back();
        } else {
            self.plan = Plan::writes(false, true);
            self.marks_pending = false;
        }
    }

    /// Writes every changed block, clears included (after flushing the
    /// legs), then flushes the device cache if marks are among them. On
    /// failure the blocks stay dirty for the next attempt.
    pub fn begin_write_back(&mut self) {
        if !self.loaded || self.superseded || (!self.marks_pending && !self.has_deferred_writes()) {
            self.plan = Plan::done();
            return;
        }
        let leg_flush = self.clears_pending() && !self.flush_failed;
        for i in 0..self.pending_clears.len() {
            let region = self.pending_clears[i];
            self.dirty_block_of(region);
        }
        self.plan = Plan::writes(leg_flush, self.marks_pending);
        // Covered by this plan's leg flush, or never written clean (flush
        // failed): a clear from now on is tracked afresh.
        self.pending_clears.clear();
        self.untracked_clears = false;
        self.marks_pending = false;
    }

    /// Loading restored bits: the device gets the whole image, durably. The
    /// bits may record regions clean that the device still has dirty, so
    /// the legs are flushed first.
    pub fn begin_rewrite(&mut self) {
        self.stamp_load();
        self.loaded_once = true;
        self.untracked_clears = true;
        self.begin_write_image();
    }

    /// Writes the whole image, durably.
    pub fn begin_write_image(&mut self) {
        self.loaded = true;
        let blocks = self.dirty_blocks.len();
        self.dirty_blocks.set_range(0, blocks);
        self.marks_pending = true;
        self.begin_write_back();
    }

    /// The kernel's disk_resume, first half: reads the image over several
    /// steps, ANDing its clean bits into the log's (`step_done`);
    /// `finish_load` then deals with the regions the device did not know.
    pub fn begin_load(&mut self, sync: SyncMode) {
        self.stamp_load();
        self.plan = Plan::done();
        self.plan.phase = Phase::Reading;
        self.plan.sync_mode = sync;
    }

    /// The next step of the plan, rendering a write into `buf` (at least
    /// STAGING_LEN bytes); None when the plan is over (see `take_result`),
    /// or while a step is in flight.
    pub fn next_step(&mut self, clean: &Bitmap, sync: &Bitmap, buf: &mut [u8]) -> Option<Step> {
        if self.plan.in_flight.is_some() {
            return None;
        }
        let step = loop {
            match self.plan.phase {
                Phase::Idle | Phase::Done => return None,
                Phase::Reading => {
                    let offset = self.plan.cursor;
                    if offset >= self.image_len {
                        self.plan.phase = Phase::Done;
                        continue;
                    }
                    let len = (self.image_len - offset).min(STAGING_LEN as u64) as usize;
                    break Step::Read { offset, len };
                }
                Phase::LegFlush => {
                    self.plan.phase = Phase::Writes;
                    self.plan.clears_since_leg_flush = false;
                    self.io.leg_flushes += 1;
                    break Step::LegFlush;
                }
                Phase::Writes => {
                    if self.plan.clears_since_leg_flush && !self.flush_failed {
                        // A clear this plan cannot keep dirty came after its
                        // leg flush: flush the legs again before any more
                        // bits are written.
                        self.plan.phase = Phase::LegFlush;
                        continue;
                    }
                    match self.render_batch(clean, sync, buf) {
                        Some(step) => break step,
                        None => {
                            self.plan.phase = if self.plan.device_flush {
                                Phase::DeviceFlush
                            } else {
                                Phase::Done
                            };
                        }
                    }
                }
                Phase::DeviceFlush => {
                    self.io.flushes += 1;
                    self.plan.phase = Phase::Done;
                    break Step::DeviceFlush;
                }
            }
        };
        self.plan.in_flight = Some(step);
        Some(step)
    }

    /// The next span of dirty blocks from the plan's cursor, spans merged
    /// (see MERGE_GAP) up to a staging buffer.
    fn next_span(&mut self) -> Option<(u64, u64)> {
        let blocks = self.dirty_blocks.len();
        let max_span = (STAGING_LEN >> self.block_shift) as u64;
        let max_gap = MERGE_GAP >> self.block_shift;
        let start = self.dirty_blocks.find_next_one(self.plan.cursor);
        if start >= blocks {
            return None;
        }
        let mut end = self.dirty_blocks.find_next_zero(start);
        loop {
            let next = self.dirty_blocks.find_next_one(end);
            if next >= blocks || next - end > max_gap {
                break;
            }
            let next_end = self.dirty_blocks.find_next_zero(next);
            if next_end - start > max_span {
                break;
            }
            end = next_end;
        }
        Some((start, end.min(start + max_span)))
    }

    /// Renders the next dirty spans from the plan's cursor into `buf`, as
    /// many as one write step carries (MAX_WRITE_SPANS spans, STAGING_LEN
    /// bytes), and takes them off the dirty set: a change from now on is in
    /// a later write. When the plan must flush the device cache and this
    /// batch is all it writes, the writes are made durable themselves (FUA)
    /// and end the plan: one round of requests instead of writes and then a
    /// cache flush, on the path of every marking FLUSH. A FUA write covers
    /// only itself, so the plan keeps its cache flush when it writes
    /// several batches, and when a plain write of earlier work (an idle
    /// write-back that took marks made meanwhile, a plan that failed
    /// part-way, a cache flush that failed) has not been covered by a cache
    /// flush since: the marks it carried would stay volatile.
    fn render_batch(&mut self, clean: &Bitmap, sync: &Bitmap, buf: &mut [u8]) -> Option<Step> {
        let room = buf.len().min(STAGING_LEN);
        let mut spans = Spans::default();
        while !spans.is_full() {
            let Some((start, end)) = self.next_span() else {
                break;
            };
            let offset = start << self.block_shift;
            let len = ((end - start) << self.block_shift) as usize;
            let at = spans.buf_len();
            if at + len > room {
                break;
            }
            render_image(
                &self.pending_clears,
                clean,
                sync,
                offset,
                &mut buf[at..at + len],
            );
            self.dirty_blocks.clear_range(start, end);
            self.plan.cursor = end;
            spans.push(offset, len);
        }
        let count = spans.as_slice().len();
        self.batch = spans;
        if count == 0 {
            return None;
        }
        let durable = self.plan.device_flush
            && !self.plan.wrote
            && !self.unflushed_writes
            && self.dirty_blocks.find_next_one(self.plan.cursor) >= self.dirty_blocks.len();
        if durable {
            self.io.flushes += 1;
            self.plan.phase = Phase::Done;
        } else if self.plan.device_flush || self.marks_pending {
            // Marks this plan took, or made while it runs, are in it.
            self.unflushed_writes = true;
        }
        self.plan.wrote = true;
        self.io.writes += count as u64;
        Some(Step::Write {
            spans: count as u8,
            durable,
        })
    }

    /// The outcome of the step in flight. A read's bytes are in `buf`; its
    /// clean bits are ANDed into `clean` (only ever more dirty: a request
    /// answered from memory during the load sees the sync bits as they were
    /// and clean bits no cleaner than the final ones). A failed leg flush records every region
    /// dirty (into `clean`) from now on.
    pub fn step_done(&mut self, clean: &mut Bitmap, buf: &[u8], result: Result<(), StepError>) {
        let Some(step) = self.plan.in_flight.take() else {
            return;
        };
        match (step, result) {
            (Step::Read { offset, len }, Ok(())) => {
                let chunk = &buf[..len];
                if offset == 0 {
                    // dm-log.c read_header: under sync/nosync any header is
                    // replaced by a new one before its version is checked.
                    if self.plan.sync_mode != SyncMode::Default {
                        self.plan.phase = Phase::Done;
                        return;
                    }
                    match parse_header(&chunk[..HEADER_LEN]) {
                        Ok(known) => self.plan.known = known,
                        Err(e) => {
                            self.read_failed(e);
                            return;
                        }
                    }
                }
                and_clean_bits(clean, offset, chunk);
                self.plan.cursor = offset + len as u64;
            }
            (Step::Read { offset, len }, Err(e)) => {
                self.read_failed(format!("read of {len} bytes at {offset}: {e}"));
            }
            (Step::LegFlush, Ok(())) => {}
            (Step::LegFlush, Err(e)) => self.legs_failed(clean, e),
            (Step::Write { .. }, Ok(())) => {}
            (Step::Write { .. }, Err(e)) => {
                let spans = self.batch;
                for span in spans.as_slice() {
                    let first = span.offset >> self.block_shift;
                    let end = first + (span.len as u64 >> self.block_shift);
                    self.dirty_blocks.set_range(first, end);
                }
                self.write_failed = true;
                if self.count_failure() {
                    let from = spans.as_slice().first().map_or(0, |s| s.offset);
                    log::error!(
                        "log device {}:{}: {} write(s) of {} bytes from byte {from} on failed: {e} ({} failures so far)",
                        self.device.major(),
                        self.device.minor(),
                        spans.as_slice().len(),
                        spans.buf_len(),
                        self.failures
                    );
                }
                self.plan_failed();
            }
            (Step::DeviceFlush, Ok(())) => self.unflushed_writes = false,
            (Step::DeviceFlush, Err(e)) => {
                self.cache_flush_failed = true;
                if self.count_failure() {
                    log::error!(
                        "log device {}:{}: cache flush failed: {e} ({} failures so far)",
                        self.device.major(),
                        self.device.minor(),
                        self.failures
                    );
                }
                self.plan_failed();
            }
        }
    }

    fn read_failed(&mut self, why: String) {
        self.write_failed = true;
        log::error!(
            "log device {}:{}: reading the log failed ({why}); every region is treated as {}",
            self.device.major(),
            self.device.minor(),
            if self.plan.sync_mode == SyncMode::No {
                "in sync (nosync)"
            } else {
                "out of sync"
            }
        );
        self.plan.known = None;
        self.plan.read_failed = true;
        self.plan.phase = Phase::Done;
    }

    /// A write or cache flush failed: the rest of the plan is dropped, the
    /// marks it carried are pending again.
    fn plan_failed(&mut self) {
        self.plan.error = Some(Errno::EIO);
        self.plan.phase = Phase::Done;
        if self.plan.device_flush {
            self.marks_pending = true;
        }
    }

    /// Flushing the legs failed or the legs are unknown: records every
    /// region dirty from now on, as dm-log.c `disk_flush` does after a
    /// failed flush callback.
    fn legs_failed(&mut self, clean: &mut Bitmap, e: StepError) {
        self.flush_failed = true;
        clean.fill(false);
        let blocks = self.dirty_blocks.len();
        self.dirty_blocks.set_range(0, blocks);
        self.plan.device_flush = true;
        self.plan.cursor = 0;
        log::error!(
            "log device {}:{}: the mirror's legs cannot be flushed ({e}); no region is recorded \
             clean on the device from now on, as the kernel's disk log does after a failed flush \
             (a crash then resyncs the whole mirror); reload the table to start a new log",
            self.device.major(),
            self.device.minor()
        );
    }

    /// Ends a plan whose steps are all done: Ok, or the error of the step
    /// that failed.
    pub fn take_result(&mut self) -> Result<(), Errno> {
        if self.plan.phase != Phase::Done || self.plan.in_flight.is_some() {
            return Ok(());
        }
        let error = self.plan.error;
        self.plan.phase = Phase::Idle;
        match error {
            Some(e) => Err(e),
            None => {
                self.writes_work_again();
                Ok(())
            }
        }
    }

    /// The kernel's disk_resume after the read: treats a bad magic (or an
    /// explicit sync/nosync) as a new log, and sets or clears regions the
    /// device did not know. The device's bits were ANDed into `clean`, so
    /// marks made before the load survive. The caller rebuilds the sync bits and
    /// writes the image back (`begin_write_image`), which records nothing
    /// clean that the device did not (no leg flush needed, as in dm-log.c).
    /// Returns how many regions the device knew.
    pub fn finish_load(&mut self, clean: &mut Bitmap) -> u64 {
        self.loaded_once = true;
        let known = self.plan.known.unwrap_or(0);
        let sync = self.plan.sync_mode;
        self.plan = Plan::idle();
        let count = clean.len();
        let from = known.min(count);
        // Regions the device did not know: clean under nosync (kept as they
        // are), else dirty.
        if sync != SyncMode::No {
            clean.clear_range(from, count);
        }
        self.pending_clears.clear();
        self.untracked_clears = false;
        known
    }

    fn writes_work_again(&mut self) {
        if self.failures > 0 {
            log::info!(
                "log device {}:{} works again after {} failed writes or flushes",
                self.device.major(),
                self.device.minor(),
                self.failures
            );
            self.failures = 0;
        }
    }

    /// Counts a failed write or flush; true when it is worth a log line
    /// (the 1st, 2nd, 4th, 8th, ...): a dead device must not flood the log.
    fn count_failure(&mut self) -> bool {
        self.failures += 1;
        self.failures.is_power_of_two()
    }

    pub fn mark_restored(&mut self) {
        self.restored = true;
    }

    /// True while restored bits wait to be written over the device.
    pub fn awaits_rewrite(&self) -> bool {
        self.restored && !self.loaded
    }

    /// True once after `mark_restored`.
    pub fn take_restored(&mut self) -> bool {
        std::mem::take(&mut self.restored)
    }
}

/// Where a disk log's plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No plan.
    Idle,
    Reading,
    LegFlush,
    Writes,
    DeviceFlush,
    /// Every step is done; `take_result` ends the plan.
    Done,
}

/// The device work a disk log has decided on: leg flushes, then the
/// writes of the dirty spans from `cursor` on, then the device flush; or
/// the reads of RESUME.
#[derive(Debug, Clone, Copy)]
struct Plan {
    phase: Phase,
    device_flush: bool,
    /// The next block (writes) or byte (reads) to look at.
    cursor: u64,
    in_flight: Option<Step>,
    /// A write of this plan was rendered.
    wrote: bool,
    /// A clear that this plan cannot keep dirty came since its last leg
    /// flush (the pending-clear list was full, or a mark was pending).
    clears_since_leg_flush: bool,
    error: Option<Errno>,
    sync_mode: SyncMode,
    /// Regions the device's header knew (reads).
    known: Option<u64>,
    read_failed: bool,
}

impl Plan {
    fn idle() -> Self {
        Plan {
            phase: Phase::Idle,
            device_flush: false,
            cursor: 0,
            in_flight: None,
            wrote: false,
            clears_since_leg_flush: false,
            error: None,
            sync_mode: SyncMode::Default,
            known: None,
            read_failed: false,
        }
    }

    fn done() -> Self {
        Plan {
            phase: Phase::Done,
            ..Plan::idle()
        }
    }

    fn writes(leg_flush: bool, device_flush: bool) -> Self {
        Plan {
            phase: if leg_flush {
                Phase::LegFlush
            } else {
                Phase::Writes
            },
            device_flush,
            ..Plan::idle()
        }
    }
}

/// Bits of `DiskStore::flags`, as a state file keeps them.
pub mod flags {
    /// A read or write of the log device failed (status 'D').
    pub const WRITE_FAILED: u32 = 1;
    /// A cache flush of the log device failed (status 'F').
    pub const CACHE_FLUSH_FAILED: u32 = 2;
    /// The mirror's legs could not be flushed: nothing is recorded clean.
    pub const LEGS_FLUSH_FAILED: u32 = 4;
    /// A newer log loaded the device: this log writes nothing to it.
    pub const SUPERSEDED: u32 = 8;
    /// The log's bits became the device's once (a load read it, or
    /// restored bits were written over it): restored from a state file,
    /// they are newer than the device. Without it they are a new log's,
    /// and a restarted daemon reads the device instead.
    pub const LOADED: u32 = 16;
    /// The log was built by its table's first CTR and its state file has
    /// followed it since (see `DiskStore::knows_its_life`).
    pub const KNOWN_LIFE: u32 = 32;
}

//! One dirty-region log with the semantics of the kernel's own `core` and
//! `disk` logs (drivers/md/dm-log.c), so a mirror behaves the same on
//! dm-ulogd as on the in-kernel log.

pub mod device;
pub mod disk;
pub mod legs;
pub mod params;
pub mod state;

use core::fmt::Write;
use nix::errno::Errno;

use crate::bitmap::Bitmap;
use disk::{DeviceIo, DiskStore, Step, StepError};
use legs::LegSet;
use params::{LogArgs, LogType, SyncMode};

/// How a log's bits start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The first CTR of a table: a new log, as the kernel builds it.
    New,
    /// The kernel reconnects a log whose state file a previous daemon left:
    /// the bits are taken as they are, recoveries in flight are forgotten.
    Restored,
    /// The kernel reconnects a log with no saved state: nothing is known to
    /// be in sync. A disk log still trusts its device, which RESUME reads.
    ReconnectUnknown,
}

/// Device work a request (or the idle write-back) asks of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Flush,
    WriteBack,
    Postsuspend,
    Resume,
    /// Load the device if this log has not: its bits are the device's
    /// only then (an IN_SYNC before the reconnect's RESUME).
    Load,
}

/// What `DirtyLog::next_step` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run this step, then report it with `step_done`.
    Step(Step),
    /// A step is in flight.
    Waiting,
    /// The work is over.
    Finished(Result<(), Errno>),
}

/// Where a disk log's work is between its plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    /// Reading the device; then writing the image back, then (for a FLUSH
    /// before RESUME) a flush.
    Reading {
        then_flush: bool,
    },
    Writing {
        then_flush: bool,
    },
}

pub struct DirtyLog {
    log_type: LogType,
    region_size: u32,
    sync_mode: SyncMode,
    /// How RESUME's read treats the device's header: as the table says,
    /// except for a disk log the kernel reconnects with no saved state,
    /// whose device holds the live log's bits whatever `sync`/`nosync`
    /// the table gave when it was first loaded.
    load_mode: SyncMode,
    block_on_error: bool,
    /// 1 = no write in flight to the region.
    clean: Bitmap,
    /// 1 = the legs agree on the region.
    sync: Bitmap,
    sync_count: u64,
    /// The region handed out by GET_RESYNC_WORK and not yet settled by
    /// SET_REGION_SYNC. dm-raid1 recovers one region at a time
    /// (MAX_RECOVERY = 1) and settles it before asking again, so a second
    /// GET_RESYNC_WORK while one is out is the kernel resending after a
    /// timeout: it gets the same region, and a resend changes nothing twice.
    recovering: Option<u64>,
    /// Where GET_RESYNC_WORK looks next; only moves forward until RESUME.
    sync_search: u64,
    /// POSTSUSPEND came and no RESUME since: the next RESUME is a real one.
    suspended: bool,
    /// Boxed: every registry slot, used or not, holds a DirtyLog and is
    /// locked in memory; only disk logs pay for the store.
    disk: Option<Box<DiskStore>>,
    stage: Stage,
}

impl DirtyLog {
    /// Builds a log as the kernel's create_log_context does, over `clean`
    /// and `sync` bitmaps of region_count bits (zeroed, or restored). A disk
    /// log needs its `store`; its bits become the device's at RESUME.
    pub fn new(
        args: &LogArgs<'_>,
        mut clean: Bitmap,
        mut sync: Bitmap,
        mut store: Option<DiskStore>,
        origin: Origin,
    ) -> Self {
        let count = args.region_count;
        debug_assert!(clean.len() == count && sync.len() == count);
        let mut sync_mode = args.sync;
        let reconnected_disk = origin == Origin::ReconnectUnknown && store.is_some();
        let load_mode = if reconnected_disk {
            SyncMode::Default
        } else {
            sync_mode
        };
        let sync_count = if origin == Origin::Restored {
            if let Some(d) = &mut store {
                d.mark_restored();
            }
            sync.count_ones()
        } else {
            if let (Origin::New, Some(d)) = (origin, &mut store) {
                d.mark_new();
            }
            if origin == Origin::ReconnectUnknown && store.is_none() {
                // A core log whose bits died with the previous daemon:
                // resync everything.
                sync_mode = SyncMode::Force;
            }
            clean.fill(true);
            // A reconnected disk log knows nothing in sync until its device
            // is read (a `nosync` table included: its device has the dirty
            // bits of the live mirror).
            sync.fill(sync_mode == SyncMode::No && !reconnected_disk);
            sync.count_ones()
        };
        DirtyLog {
            log_type: args.log_type,
            region_size: args.region_size,
            sync_mode,
            load_mode,
            block_on_error: args.block_on_error,
            clean,
            sync,
            sync_count,
            recovering: None,
            sync_search: 0,
            suspended: false,
            disk: store.map(Box::new),
            stage: Stage::Idle,
        }
    }

    /// Bytes of memory this log holds beyond its fixed-size struct.
    pub fn heap_bytes(&self) -> usize {
        self.clean.heap_bytes()
            + self.sync.heap_bytes()
            + self.disk.as_deref().map_or(0, |d| {
                size_of::<DiskStore>() + d.heap_bytes() + crate::sys::aio::STAGING_HEAP_BYTES
            })
    }

    /// What constructing a log of `region_count` regions will cost, for the
    /// memory budget, before anything is allocated (the bitmaps, and a disk
    /// log's staging buffer; its store and per-block dirty bits are small
    /// enough to ride along).
    pub fn heap_bytes_for(region_count: u64, disk: bool) -> usize {
        2 * crate::bitmap::words_for(region_count) * 8
            + if disk {
                crate::sys::aio::STAGING_HEAP_BYTES
            } else {
                0
            }
    }

    pub fn log_type(&self) -> LogType {
        self.log_type
    }
    pub fn region_size(&self) -> u32 {
        self.region_size
    }
    pub fn region_count(&self) -> u64 {
        self.clean.len()
    }
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }
    pub fn disk(&self) -> Option<&DiskStore> {
        self.disk.as_deref()
    }
    /// Regions with a write in flight (clean bit 0).
    pub fn dirty_count(&self) -> u64 {
        self.region_count() - self.clean.count_ones()
    }

    /// True when `region` exists.
    #[inline]
    pub fn has_region(&self, region: u64) -> bool {
        region < self.clean.len()
    }

    /// MARK_REGION: a write is about to go to the region.
    #[inline]
    pub fn mark(&mut self, region: u64) {
        if self.clean.clear(region)
            && let Some(d) = &mut self.disk
        {
            d.note_change(region, true);
        }
    }

    /// CLEAR_REGION: the writes to the region completed. A disk log whose
    /// legs could not be flushed records nothing clean any more (dm-log.c
    /// core_clear_region after `flush_failed`).
    #[inline]
    pub fn clear(&mut self, region: u64) {
        if self.disk.as_deref().is_some_and(DiskStore::flush_failed) || self.loading() {
            // While the device is read, the read ANDs the device's bits into
            // the clean bits and the sync bits are then rebuilt from them: a
            // clear now would record clean (and in sync) a region the
            // device has dirty, with no leg flush covering it. Dropping a
            // clear only keeps a region dirty, which is always safe.
            return;
        }
        if self.clean.set(region)
            && let Some(d) = &mut self.disk
        {
            d.note_change(region, false);
        }
    }

    #[inline]
    pub fn is_clean(&self, region: u64) -> bool {
        self.clean.test(region)
    }

    #[inline]
    pub fn in_sync(&self, region: u64) -> bool {
        self.sync.test(region)
    }

    /// Starts the device work of `work`; drive it with `next_step` and
    /// `step_done` until `next_step` says it finished. A core log finishes
    /// at once.
    ///
    /// - Flush: every mark so far becomes durable. A disk log the kernel
    ///   reconnected but did not resume yet (another caller's RESUME is
    ///   still to come) loads its device first, so the marks reach it now
    ///   and the load cannot undo them.
    /// - WriteBack: everything a disk log deferred (DTR, idle time).
    /// - Postsuspend: the mirror is quiet; write out what was deferred.
    /// - Load: a disk log that has not loaded its device does (an IN_SYNC
    ///   of a log the kernel reconnected, before another caller's RESUME).
    /// - Resume: a core log only restarts its resync scan; a disk log reads
    ///   its device (the kernel's disk_resume) when it starts or comes back
    ///   from a suspend. A RESUME of a live log that was not suspended is
    ///   the kernel's reconnect path (one per caller that found the daemon
    ///   gone): its bits are current, and rereading the device would take
    ///   regions with writes in flight out of sync.
    pub fn begin(&mut self, work: Work) {
        self.stage = Stage::Idle;
        if self.disk.as_deref().is_some_and(DiskStore::is_superseded) {
            // A newer log owns the device: nothing to read or write.
            if work == Work::Postsuspend {
                self.suspended = true;
            }
            return;
        }
        match work {
            Work::Load => {
                if self.disk.as_deref().is_some_and(|d| !d.is_loaded()) {
                    self.begin_load(false);
                }
            }
            Work::Flush => {
                if self.disk.as_deref().is_some_and(|d| !d.is_loaded()) {
                    self.begin_load(true);
                } else if let Some(d) = &mut self.disk {
                    d.begin_flush();
                    self.stage = Stage::Writing { then_flush: false };
                }
            }
            Work::WriteBack | Work::Postsuspend => {
                if work == Work::Postsuspend {
                    self.suspended = true;
                    if self.disk.as_deref().is_some_and(DiskStore::awaits_rewrite) {
                        // Bits restored from a state file and not loaded
                        // yet: the suspend is the last moment they are
                        // the newest, so they go out now.
                        self.begin_load(false);
                        return;
                    }
                }
                if let Some(d) = &mut self.disk {
                    d.begin_write_back();
                    self.stage = Stage::Writing { then_flush: false };
                }
            }
            Work::Resume => {
                let was_suspended = std::mem::take(&mut self.suspended);
                if was_suspended {
                    // dm-raid1 waits for its recoveries before it suspends.
                    self.recovering = None;
                }
                self.sync_search = 0;
                if self
                    .disk
                    .as_deref()
                    .is_some_and(|d| !d.is_loaded() || was_suspended)
                {
                    self.begin_load(false);
                }
            }
        }
    }

    /// True when `work` has device work to do now (a core log never has).
    pub fn needs_io(&self, work: Work) -> bool {
        let Some(d) = self.disk.as_deref().filter(|d| !d.is_superseded()) else {
            return false;
        };
        match work {
            Work::Flush => d.flush_needs_io(),
            Work::Load => !d.is_loaded(),
            Work::WriteBack => d.is_loaded(),
            Work::Postsuspend => d.is_loaded() || d.awaits_rewrite(),
            Work::Resume => !d.is_loaded() || self.suspended,
        }
    }

    /// Brings a disk log's bits and its device together: restored bits are
    /// written out, otherwise the device is read (marks made meanwhile
    /// survive) and written back. While the read is in flight the sync bits
    /// hold what was read so far; the kernel asks nothing of them before
    /// its RESUME is answered (dm-raid1 starts recovery after).
    fn begin_load(&mut self, then_flush: bool) {
        let Some(d) = &mut self.disk else {
            return;
        };
        if d.take_restored() {
            // The bits came from the state file and are newer than the
            // device: write them out instead of reading it.
            d.begin_rewrite();
            self.stage = Stage::Writing { then_flush };
        } else {
            d.begin_load(self.load_mode);
            self.stage = Stage::Reading { then_flush };
        }
    }

    /// The next step of the work begun, its write rendered into `buf` (a
    /// staging buffer of STAGING_LEN bytes).
    pub fn next_step(&mut self, buf: &mut [u8]) -> Next {
        loop {
            let Some(d) = &mut self.disk else {
                return Next::Finished(Ok(()));
            };
            if let Some(step) = d.next_step(&self.clean, &self.sync, buf) {
                return Next::Step(step);
            }
            if d.step_in_flight() {
                return Next::Waiting;
            }
            match self.stage {
                Stage::Idle => return Next::Finished(Ok(())),
                Stage::Reading { then_flush } => {
                    d.finish_load(&mut self.clean);
                    self.sync.copy_from(&self.clean);
                    self.sync_count = self.sync.count_ones();
                    d.begin_write_image();
                    self.stage = Stage::Writing { then_flush };
                }
                Stage::Writing { then_flush } => {
                    let result = d.take_result();
                    if result.is_err() || !then_flush {
                        self.stage = Stage::Idle;
                        return Next::Finished(result);
                    }
                    d.begin_flush();
                    self.stage = Stage::Writing { then_flush: false };
                }
            }
        }
    }

    /// The outcome of the step `next_step` gave; a read's bytes are in
    /// `buf`.
    pub fn step_done(&mut self, buf: &[u8], result: Result<(), StepError>) {
        if let Some(d) = &mut self.disk {
            d.step_done(&mut self.clean, buf, result);
        }
    }

    /// True while device work is begun and not finished.
    pub fn busy(&self) -> bool {
        self.stage != Stage::Idle || self.disk.as_deref().is_some_and(DiskStore::busy)
    }

    /// Runs `work` to its end in the calling thread.
    pub fn run(&mut self, work: Work, io: &mut DeviceIo) -> Result<(), Errno> {
        self.begin(work);
        loop {
            let buf = io.buf.get(disk::IO_BUF_LEN);
            match self.next_step(buf) {
                Next::Step(step) => {
                    let result = match &self.disk {
                        Some(d) => {
                            let mirrors = &mut *io.mirrors;
                            disk::run_step(step, d.batch(), d.device(), buf, d.legs(), mirrors)
                        }
                        None => Ok(()),
                    };
                    self.step_done(buf, result);
                }
                Next::Finished(result) => return result,
                // Never: every step above completed before the next.
                Next::Waiting => return Err(Errno::EBUSY),
            }
        }
    }

    /// FLUSH, synchronously (see `begin`).
    pub fn flush(&mut self, io: &mut DeviceIo) -> Result<(), Errno> {
        self.run(Work::Flush, io)
    }

    /// Writes everything a disk log deferred, synchronously.
    pub fn write_back(&mut self, io: &mut DeviceIo) -> Result<(), Errno> {
        self.run(Work::WriteBack, io)
    }

    /// True when a disk log has deferred writes.
    pub fn has_deferred_writes(&self) -> bool {
        self.disk
            .as_deref()
            .is_some_and(DiskStore::has_deferred_writes)
    }

    /// The mirror's legs, which a disk log flushes before it records
    /// regions clean; None when they could not be found.
    pub fn set_legs(&mut self, legs: Option<LegSet>) {
        if let Some(d) = &mut self.disk {
            d.set_legs(legs);
        }
    }

    /// POSTSUSPEND, synchronously.
    pub fn postsuspend(&mut self, io: &mut DeviceIo) -> Result<(), Errno> {
        self.run(Work::Postsuspend, io)
    }

    /// RESUME, synchronously.
    pub fn resume(&mut self, io: &mut DeviceIo) -> Result<(), Errno> {
        self.run(Work::Resume, io)
    }

    /// GET_RESYNC_WORK: the next region to recover, if any.
    pub fn get_resync_work(&mut self) -> Option<u64> {
        if let Some(region) = self.recovering {
            if !self.sync.test(region) {
                return Some(region);
            }
            // Settled some other way (a disk log's RESUME rebuilt the bits).
            self.recovering = None;
        }
        let count = self.region_count();
        if self.sync_search >= count {
            return None;
        }
        let region = self.sync.find_next_zero(self.sync_search);
        self.sync_search = region.saturating_add(1).min(count);
        if region >= count {
            return None;
        }
        self.recovering = Some(region);
        Some(region)
    }

    /// SET_REGION_SYNC: recovery of `region` ended; `in_sync` says how.
    pub fn set_region_sync(&mut self, region: u64, in_sync: bool) {
        if self.recovering == Some(region) {
            self.recovering = None;
        }
        if in_sync {
            if self.sync.set(region) {
                self.sync_count += 1;
                if let Some(d) = &mut self.disk {
                    d.note_change(region, false);
                }
            }
        } else {
            if self.sync.clear(region) {
                self.sync_count -= 1;
                if let Some(d) = &mut self.disk {
                    d.note_change(region, true);
                }
            }
            if self.loading() {
                // The load rebuilds the sync bits from the clean bits: only
                // a dirty clean bit keeps the region out of sync.
                self.mark(region);
            }
        }
    }

    /// True while a disk log reads its device (RESUME's load): the sync
    /// bits are those from before it until the read is over.
    pub fn loading(&self) -> bool {
        matches!(self.stage, Stage::Reading { .. })
    }

    /// The in_sync_hint for IS_REMOTE_RECOVERING: region_count when every
    /// region is in sync, else region_count - 1. The kernel answers "not
    /// recovering" by itself for every region below the hint, and within
    /// 250 ms of its last question "recovering" for the rest, which requeues
    /// the write behind a 200 ms timer (dm-raid1 do_writes); it asks for
    /// resync work only while the hint is below region_count. On one node
    /// nothing recovers elsewhere (dm-region-hash already holds writes to a
    /// region this node recovers), so the hint is as high as it can be
    /// without ending the resync.
    pub fn in_sync_hint(&self, settling: bool) -> u64 {
        let count = self.region_count();
        if self.reported_sync_count(settling) >= count {
            count
        } else {
            count - 1
        }
    }

    /// GET_SYNC_COUNT's answer. `settling`: a RESUME that reads the device
    /// waits or runs, so the sync bits are still those from before the
    /// suspend, and the read may take regions out of sync. The kernel turns
    /// resync off until its next resume once an answer reaches
    /// region_count (dm-log-userspace-base.c `userspace_get_sync_count`
    /// sets `in_sync_hint`), so until the read is over the answer stays
    /// below it. A status line shows one region short for that long;
    /// parking the request instead would make every status query wait for
    /// the device, and hang with it.
    pub fn reported_sync_count(&self, settling: bool) -> u64 {
        if settling {
            self.sync_count.min(self.region_count().saturating_sub(1))
        } else {
            self.sync_count
        }
    }

    /// True when `work`, begun now, reads or rewrites the device: the log
    /// takes the device over from any older log of the same device.
    pub fn starts_load(&self, work: Work) -> bool {
        let Some(d) = self.disk.as_deref().filter(|d| !d.is_superseded()) else {
            return false;
        };
        match work {
            Work::Flush | Work::Load => !d.is_loaded(),
            Work::Resume => !d.is_loaded() || self.suspended,
            Work::Postsuspend => d.awaits_rewrite(),
            Work::WriteBack => false,
        }
    }

    /// POSTSUSPEND came and no RESUME since.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// See `DiskStore::knows_its_life` (true for a core log).
    pub fn knows_its_life(&self) -> bool {
        self.disk.as_deref().is_none_or(DiskStore::knows_its_life)
    }

    /// See `DiskStore::supersede`.
    pub fn supersede(&mut self) {
        if let Some(d) = &mut self.disk {
            d.supersede();
        }
    }

    /// A disk log's sticky conditions (`DiskStore::flags`); 0 for a core
    /// log.
    pub fn flags(&self) -> u32 {
        self.disk.as_deref().map_or(0, DiskStore::flags)
    }

    /// Takes back the conditions and the load stamp a state file kept. A
    /// disk log whose bits never became the device's (a new table whose
    /// RESUME the previous daemon never saw or never finished reading, or a
    /// state file of a dm-ulogd that kept no such flag) reads the device at
    /// its load like a new log, rather than writing those bits over it.
    pub fn restore_flags(&mut self, saved: u32, load_stamp: u64) {
        if let Some(d) = &mut self.disk {
            d.restore_flags(saved);
            d.restore_load_stamp(load_stamp);
            if saved & disk::flags::LOADED == 0 {
                d.take_restored();
            }
        }
    }

    /// When a disk log last began loading its device (0: never, or a core
    /// log).
    pub fn load_stamp(&self) -> u64 {
        self.disk.as_deref().map_or(0, DiskStore::load_stamp)
    }

    /// STATUS_INFO text, as the kernel's own logs print it.
    pub fn status_info(&self, out: &mut impl Write) -> core::fmt::Result {
        match &self.disk {
            None => write!(out, "1 {}", self.log_type.name()),
            Some(d) => write!(
                out,
                "3 {} {}:{} {}",
                self.log_type.name(),
                d.device().major(),
                d.device().minor(),
                d.status_char()
            ),
        }
    }

    /// STATUS_TABLE text, as the kernel's own logs print it.
    pub fn status_table(&self, out: &mut impl Write) -> core::fmt::Result {
        let mut nargs = if self.sync_mode == SyncMode::Default {
            1
        } else {
            2
        };
        nargs += u32::from(self.block_on_error);
        write!(out, "{} ", self.log_type.name())?;
        match &self.disk {
            None => write!(out, "{nargs} ")?,
            Some(d) => write!(
                out,
                "{} {}:{} ",
                nargs + 1,
                d.device().major(),
                d.device().minor()
            )?,
        }
        write!(out, "{}", self.region_size)?;
        match self.sync_mode {
            SyncMode::Default => {}
            SyncMode::Force => out.write_str(" sync")?,
            SyncMode::No => out.write_str(" nosync")?,
        }
        if self.block_on_error {
            out.write_str(" block_on_error")?;
        }
        Ok(())
    }

    /// The clean bits, for saving state and for tests.
    pub fn clean_bits(&self) -> &Bitmap {
        &self.clean
    }

    /// The sync bits, for saving state and for tests.
    pub fn sync_bits(&self) -> &Bitmap {
        &self.sync
    }
}

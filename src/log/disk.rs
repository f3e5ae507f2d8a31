//! The kernel's on-disk log format (dm-log.c), so a log device moves between
//! the kernel's `disk` log and dm-ulogd in both directions:
//! a little-endian header at byte 0 (magic, version 2, nr_regions) and the
//! clean bits at byte 1024, the whole rounded up to the logical block size.
//!
//! Only the device blocks whose bits changed since the last flush are
//! written, through one preallocated aligned staging buffer.

use nix::errno::Errno;

use super::device::LogDevice;
use super::params::SyncMode;
use crate::bitmap::{self, Bitmap};
use crate::mirrors::{LegSet, MirrorError, Mirrors};

pub const MAGIC: u32 = 0x4D69_5272;
pub const VERSION: u32 = 2;
/// Byte offset of the clean bits (LOG_OFFSET = 2 sectors).
pub const BITMAP_OFFSET: u64 = 1024;
/// Bytes of the header that carry fields (magic, version, nr_regions).
pub const HEADER_LEN: usize = 16;

/// Size of the staging buffer for log device I/O. Larger transfers are split.
pub const IO_BUF_LEN: usize = 64 * 1024;
/// Changed blocks at most this many bytes apart are written as one transfer:
/// rewriting a few unchanged blocks costs less than another write request
/// (and on a small log every flush becomes a single write).
pub const MERGE_GAP: u64 = 16 * 1024;
const IO_ALIGN: usize = 4096;

/// A page-aligned buffer for O_DIRECT transfers, allocated once at start-up.
pub struct IoBuf {
    storage: Vec<u8>,
    offset: usize,
}

impl Default for IoBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl IoBuf {
    pub fn new() -> Self {
        let storage = vec![0u8; IO_BUF_LEN + IO_ALIGN];
        let offset = storage.as_ptr().align_offset(IO_ALIGN);
        IoBuf { storage, offset }
    }

    /// The first `len` bytes (at most IO_BUF_LEN), aligned for O_DIRECT.
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + len]
    }
}

/// Bytes the on-disk image needs for `region_count` regions on a device with
/// `block_size` logical blocks.
pub fn image_len(region_count: u64, block_size: u64) -> u64 {
    let bitmap_bytes = bitmap::words_for(region_count) as u64 * 8;
    (BITMAP_OFFSET + bitmap_bytes).next_multiple_of(block_size)
}

/// The I/O a disk log needs besides its own device: the staging buffer and
/// the mirror's legs, which are flushed before bits that record regions
/// clean are written.
pub struct DeviceIo {
    pub buf: IoBuf,
    pub mirrors: Box<dyn Mirrors>,
}

impl DeviceIo {
    pub fn new(mirrors: Box<dyn Mirrors>) -> Self {
        DeviceIo {
            buf: IoBuf::new(),
            mirrors,
        }
    }
}

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
    /// Regions cleared since the last write that the device still records
    /// dirty. Marking one again costs no write (a journal, a sequential
    /// writer rewrite the same regions), and a marking flush keeps them
    /// dirty in what it writes.
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
    /// Failed writes and flushes since the last success.
    failures: u64,
    io: IoCounts,
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
            failures: 0,
            io: IoCounts::default(),
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

    pub fn heap_bytes(&self) -> usize {
        self.dirty_blocks.heap_bytes()
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
            self.untracked_clears |= !tracked;
        }
        self.dirty_block_of(region);
    }

    /// True when some write would record a region clean.
    fn clears_pending(&self) -> bool {
        self.untracked_clears || !self.pending_clears.is_empty()
    }

    /// Fills `out` with the image bytes at `offset` (a block boundary). A
    /// region is recorded clean only when it is clean and in sync: the
    /// kernel rebuilds the sync bits from the clean bits, so "clean on the
    /// device" must imply "in sync" (a CLEAR can reach a region that is out
    /// of sync, for instance after a restart without saved state, or just
    /// before its recovery is settled). With `keep_clears_dirty`, the
    /// tracked pending clears stay dirty.
    fn render(
        &self,
        clean: &Bitmap,
        sync: &Bitmap,
        offset: u64,
        out: &mut [u8],
        keep_clears_dirty: bool,
    ) {
        let len = out.len() as u64;
        let header_end = BITMAP_OFFSET.min(offset + len);
        if offset < header_end {
            let part = &mut out[..(header_end - offset) as usize];
            part.fill(0);
            if offset == 0 {
                part[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                part[4..8].copy_from_slice(&VERSION.to_le_bytes());
                part[8..16].copy_from_slice(&clean.len().to_le_bytes());
            }
        }
        let bits_from = offset.max(BITMAP_OFFSET);
        if bits_from < offset + len {
            let start = (bits_from - offset) as usize;
            clean.write_le_bytes_masked(
                sync,
                (bits_from - BITMAP_OFFSET) as usize,
                &mut out[start..],
            );
        }
        if keep_clears_dirty {
            for &region in &self.pending_clears {
                let byte = BITMAP_OFFSET + region / 8;
                if (offset..offset + len).contains(&byte) {
                    out[(byte - offset) as usize] &= !(1u8 << (region % 8));
                }
            }
        }
    }

    /// True when changed blocks wait to be written.
    pub fn has_deferred_writes(&self) -> bool {
        self.loaded && !self.dirty_blocks.none_set()
    }

    /// FLUSH: every mark must be durable before it is answered. The tracked
    /// clears stay dirty on the device (no leg flush on the write path);
    /// untracked ones go out with the marks after a leg flush.
    pub fn flush(
        &mut self,
        clean: &mut Bitmap,
        sync: &Bitmap,
        io: &mut DeviceIo,
    ) -> Result<(), Errno> {
        if !self.marks_pending || !self.loaded {
            return Ok(());
        }
        if self.untracked_clears {
            return self.write_back(clean, sync, io);
        }
        self.write_dirty_blocks(clean, sync, &mut io.buf, true)?;
        self.sync()?;
        self.marks_pending = false;
        // The clears were written as dirty: their blocks wait for the next
        // write-back.
        for i in 0..self.pending_clears.len() {
            let region = self.pending_clears[i];
            self.dirty_block_of(region);
        }
        self.writes_work_again();
        Ok(())
    }

    /// Writes every changed block, clears included (after flushing the
    /// legs), then flushes the device cache if marks are among them. On
    /// failure the blocks stay dirty for the next attempt.
    pub fn write_back(
        &mut self,
        clean: &mut Bitmap,
        sync: &Bitmap,
        io: &mut DeviceIo,
    ) -> Result<(), Errno> {
        if !self.loaded || (!self.marks_pending && self.dirty_blocks.none_set()) {
            return Ok(());
        }
        if self.clears_pending() && !self.flush_failed {
            self.flush_legs(clean, io);
        }
        self.write_dirty_blocks(clean, sync, &mut io.buf, false)?;
        if self.marks_pending {
            self.sync()?;
        }
        self.marks_pending = false;
        self.pending_clears.clear();
        self.untracked_clears = false;
        self.writes_work_again();
        Ok(())
    }

    /// Flushes the legs before clean bits are written; when that fails or
    /// the legs are unknown, records every region dirty from now on, as
    /// dm-log.c `disk_flush` does after a failed flush callback.
    fn flush_legs(&mut self, clean: &mut Bitmap, io: &mut DeviceIo) {
        self.io.leg_flushes += 1;
        let flushed = match &self.legs {
            Some(legs) => io.mirrors.flush(legs),
            None => Err(MirrorError::NotFound),
        };
        let Err(e) = flushed else {
            return;
        };
        self.flush_failed = true;
        clean.fill(false);
        let blocks = self.dirty_blocks.len();
        self.dirty_blocks.set_range(0, blocks);
        self.marks_pending = true;
        log::error!(
            "log device {}:{}: the mirror's legs cannot be flushed ({e}); no region is recorded \
             clean on the device from now on, as the kernel's disk log does after a failed flush \
             (a crash then resyncs the whole mirror); reload the table to start a new log",
            self.device.major(),
            self.device.minor()
        );
    }

    /// Writes the dirty blocks, spans of them merged (see MERGE_GAP).
    fn write_dirty_blocks(
        &mut self,
        clean: &Bitmap,
        sync: &Bitmap,
        buf: &mut IoBuf,
        keep_clears_dirty: bool,
    ) -> Result<(), Errno> {
        let blocks = self.dirty_blocks.len();
        let max_span = (IO_BUF_LEN >> self.block_shift) as u64;
        let max_gap = MERGE_GAP >> self.block_shift;
        let mut start = self.dirty_blocks.find_next_one(0);
        while start < blocks {
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
            let end = end.min(start + max_span);
            self.write_blocks(clean, sync, buf, (start, end), keep_clears_dirty)?;
            start = self.dirty_blocks.find_next_one(end);
        }
        self.dirty_blocks.fill(false);
        Ok(())
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

    /// Writes device blocks `span.0..span.1`.
    fn write_blocks(
        &mut self,
        clean: &Bitmap,
        sync: &Bitmap,
        buf: &mut IoBuf,
        span: (u64, u64),
        keep_clears_dirty: bool,
    ) -> Result<(), Errno> {
        let offset = span.0 << self.block_shift;
        let len = ((span.1 - span.0) << self.block_shift) as usize;
        let buf = buf.get(len);
        self.render(clean, sync, offset, buf, keep_clears_dirty);
        self.io.writes += 1;
        let written = self.device.write_all_at(buf, offset);
        written.map_err(|e| {
            self.write_failed = true;
            if self.count_failure() {
                log::error!(
                    "log device {}:{}: write of {len} bytes at {offset} failed: {e} ({} failures so far)",
                    self.device.major(),
                    self.device.minor(),
                    self.failures
                );
            }
            Errno::EIO
        })
    }

    fn sync(&mut self) -> Result<(), Errno> {
        self.io.flushes += 1;
        let flushed = self.device.sync();
        flushed.map_err(|e| {
            self.cache_flush_failed = true;
            if self.count_failure() {
                log::error!(
                    "log device {}:{}: cache flush failed: {e} ({} failures so far)",
                    self.device.major(),
                    self.device.minor(),
                    self.failures
                );
            }
            Errno::EIO
        })
    }

    pub fn mark_restored(&mut self) {
        self.restored = true;
    }

    /// True once after `mark_restored`.
    pub fn take_restored(&mut self) -> bool {
        std::mem::take(&mut self.restored)
    }

    /// Loading restored bits: the device gets the whole image, durably. The
    /// bits may record regions clean that the device still has dirty, so
    /// the legs are flushed first.
    pub fn rewrite(
        &mut self,
        clean: &mut Bitmap,
        sync: &Bitmap,
        io: &mut DeviceIo,
    ) -> Result<(), Errno> {
        self.untracked_clears = true;
        self.write_image(clean, sync, io)
    }

    /// Writes the whole image, durably.
    pub fn write_image(
        &mut self,
        clean: &mut Bitmap,
        sync: &Bitmap,
        io: &mut DeviceIo,
    ) -> Result<(), Errno> {
        self.loaded = true;
        let blocks = self.dirty_blocks.len();
        self.dirty_blocks.set_range(0, blocks);
        self.marks_pending = true;
        self.write_back(clean, sync, io)
    }

    /// The kernel's disk_resume, first half: reads the device (into
    /// `device_bits`, scratch space of the log's size), treats a bad
    /// magic (or an explicit sync/nosync) as a new log, and sets or clears
    /// regions the device did not know. The result is ANDed into `clean`,
    /// so marks made before the load survive. The caller rebuilds the sync
    /// bits and writes the image back (`write_image`), which records
    /// nothing clean that the device did not (no leg flush needed, as in
    /// dm-log.c). Returns how many regions the device knew.
    pub fn load(
        &mut self,
        clean: &mut Bitmap,
        device_bits: &mut Bitmap,
        sync: SyncMode,
        io: &mut DeviceIo,
    ) -> u64 {
        let known = match self.read_image(device_bits, &mut io.buf, sync) {
            Ok(Some(nr_regions)) => nr_regions,
            Ok(None) => 0,
            Err(e) => {
                self.write_failed = true;
                log::error!(
                    "log device {}:{}: reading the log failed ({e}); every region is treated as {}",
                    self.device.major(),
                    self.device.minor(),
                    if sync == SyncMode::No {
                        "in sync (nosync)"
                    } else {
                        "out of sync"
                    }
                );
                0
            }
        };
        let count = clean.len();
        let from = known.min(count);
        if sync == SyncMode::No {
            device_bits.set_range(from, count);
        } else {
            device_bits.clear_range(from, count);
        }
        clean.and_assign(device_bits);
        self.pending_clears.clear();
        self.untracked_clears = false;
        known
    }

    /// Reads the image into `clean`; Ok(None) when the header is not a
    /// dm-log header, or for any header under sync/nosync (a new log).
    fn read_image(
        &mut self,
        clean: &mut Bitmap,
        buf: &mut IoBuf,
        sync: SyncMode,
    ) -> Result<Option<u64>, String> {
        let mut header = None;
        let mut offset = 0u64;
        while offset < self.image_len {
            let len = (self.image_len - offset).min(IO_BUF_LEN as u64) as usize;
            let buf = buf.get(len);
            self.device
                .read_exact_at(buf, offset)
                .map_err(|e| format!("read of {len} bytes at {offset}: {e}"))?;
            if offset == 0 {
                // dm-log.c read_header: under sync/nosync any header is
                // replaced by a new one before its version is checked.
                if sync != SyncMode::Default {
                    return Ok(None);
                }
                header = Some(parse_header(&buf[..HEADER_LEN])?);
            }
            load_clean_bits(clean, offset, buf);
            offset += len as u64;
        }
        Ok(header.flatten())
    }
}

/// Loads into `clean` the clean bits among `chunk`, the image's bytes from
/// `offset` on (a multiple of 8).
pub fn load_clean_bits(clean: &mut Bitmap, offset: u64, chunk: &[u8]) {
    let bits_from = offset.max(BITMAP_OFFSET);
    if bits_from < offset + chunk.len() as u64 {
        let start = (bits_from - offset) as usize;
        clean.read_le_bytes((bits_from - BITMAP_OFFSET) as usize, &chunk[start..]);
    }
}

/// Parses the header: Some(nr_regions) for a
/// valid dm-log header, None for anything without the magic; an unknown
/// version is an error, as in the kernel.
pub fn parse_header(h: &[u8]) -> Result<Option<u64>, String> {
    if h.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes cannot hold a dm disk log header ({HEADER_LEN} bytes)",
            h.len()
        ));
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if word(0) != MAGIC {
        return Ok(None);
    }
    let version = word(4);
    // Version 1 is read as 2 on little-endian machines, as the kernel does.
    if version != 1 && version != VERSION {
        return Err(format!("unsupported on-disk log version {version}"));
    }
    let mut nr = [0u8; 8];
    nr.copy_from_slice(&h[8..16]);
    Ok(Some(u64::from_le_bytes(nr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_matches_the_kernel() {
        // 1024 header bytes + bitset rounded to 64 bits, rounded to the block.
        assert_eq!(image_len(1, 512), 1536);
        assert_eq!(image_len(4096, 512), 1536);
        assert_eq!(image_len(4097, 512), 2048);
        assert_eq!(image_len(1, 4096), 4096);
        assert_eq!(image_len(16 * 1024 * 1024, 512), 1024 + 2 * 1024 * 1024);
    }

    #[test]
    fn header_parsing() {
        let mut h = [0u8; 16];
        assert_eq!(parse_header(&h), Ok(None));
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(parse_header(&h), Ok(Some(77)));
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert!(parse_header(&h).is_err());
    }
}

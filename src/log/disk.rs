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

/// The health of a log device, as status text reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceHealth {
    /// 'A': alive.
    Alive,
    /// 'D': a read or write failed.
    Failed,
    /// 'F': a cache flush failed.
    FlushFailed,
}

impl DeviceHealth {
    pub fn status_char(self) -> char {
        match self {
            DeviceHealth::Alive => 'A',
            DeviceHealth::Failed => 'D',
            DeviceHealth::FlushFailed => 'F',
        }
    }
}

/// Bytes the on-disk image needs for `region_count` regions on a device with
/// `block_size` logical blocks.
pub fn image_len(region_count: u64, block_size: u64) -> u64 {
    let bitmap_bytes = bitmap::words_for(region_count) as u64 * 8;
    (BITMAP_OFFSET + bitmap_bytes).next_multiple_of(block_size)
}

/// The persistence half of a disk log.
pub struct DiskStore {
    device: LogDevice,
    image_len: u64,
    block_shift: u32,
    /// One bit per device block of the image whose bytes changed.
    dirty_blocks: Bitmap,
    /// A mark changed a bit since the last durable flush: the next flush
    /// must flush the device cache, not just write.
    marks_pending: bool,
    /// Set once RESUME has read the device; before that the bits are not
    /// the device's and must not be written over it.
    loaded: bool,
    /// The bits came from a state file: the next RESUME writes them to the
    /// device instead of reading it.
    restored: bool,
    health: DeviceHealth,
    /// Failed writes and flushes since the last success.
    failures: u64,
    io: IoCounts,
    /// Regions cleared since the last write while no mark was pending: the
    /// device still records them dirty (see `note_change`), so marking one
    /// again needs no write. A region rewritten again and again (a journal,
    /// a sequential writer) costs the device nothing between idle times.
    /// When full, further clears just lose the shortcut.
    unwritten_clears: heapless::Vec<u64, UNWRITTEN_CLEAR_SLOTS>,
}

/// How many unwritten clears a disk log remembers (8 bytes each).
pub const UNWRITTEN_CLEAR_SLOTS: usize = 32;

/// Requests issued to a log device, for the SIGUSR1 summary and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub writes: u64,
    pub flushes: u64,
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
            loaded: false,
            restored: false,
            health: DeviceHealth::Alive,
            failures: 0,
            io: IoCounts::default(),
            unwritten_clears: heapless::Vec::new(),
        })
    }

    pub fn device(&self) -> &LogDevice {
        &self.device
    }

    pub fn health(&self) -> DeviceHealth {
        self.health
    }

    pub fn io_counts(&self) -> IoCounts {
        self.io
    }

    /// True once RESUME has read (or written) the device.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn heap_bytes(&self) -> usize {
        self.dirty_blocks.heap_bytes()
    }

    /// Records that the region's clean or sync bit changed; `marked` when it
    /// became dirty (or left sync), which the next flush must make durable.
    ///
    /// A region recorded clean is clean and in sync, so a region "becomes
    /// clean" only from recorded dirty. While no mark is pending, nothing
    /// went dirty since the last write, so such a region is still dirty on
    /// the device: remembered in `unwritten_clears`, its next mark is free.
    /// (A clear while a mark is pending needs no slot: that mark's flush
    /// writes, and every write forgets the unwritten clears.)
    #[inline]
    pub fn note_change(&mut self, region: u64, marked: bool) {
        if marked {
            if let Some(at) = self.unwritten_clears.iter().position(|&r| r == region) {
                self.unwritten_clears.swap_remove(at);
                return;
            }
            self.marks_pending = true;
        } else if !self.marks_pending {
            let _ = self.unwritten_clears.push(region);
        }
        let block = (BITMAP_OFFSET + region / 8) >> self.block_shift;
        self.dirty_blocks.set(block);
    }

    /// Fills `out` with the image bytes at `offset` (a block boundary). A
    /// region is recorded clean only when it is clean and in sync: the
    /// kernel rebuilds the sync bits from the clean bits, so "clean on the
    /// device" must imply "in sync" (a CLEAR can reach a region that is out
    /// of sync, for instance after a restart without saved state, or just
    /// before its recovery is settled).
    fn render(&self, clean: &Bitmap, sync: &Bitmap, offset: u64, out: &mut [u8]) {
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
    }

    /// FLUSH: every mark must be durable before it is answered. Clears need
    /// not be (a clean region recorded as dirty costs at most its resync),
    /// so a flush with only clears pending is deferred: the next flush with
    /// marks, a suspend, or the idle write-back writes them.
    pub fn flush(&mut self, clean: &Bitmap, sync: &Bitmap, io: &mut IoBuf) -> Result<(), Errno> {
        if !self.marks_pending {
            return Ok(());
        }
        self.write_back(clean, sync, io)
    }

    /// True when changed blocks wait to be written.
    pub fn has_deferred_writes(&self) -> bool {
        self.loaded && !self.dirty_blocks.none_set()
    }

    /// Writes every changed block, then flushes the device cache if marks are
    /// among them. On failure the blocks stay dirty for the next attempt.
    pub fn write_back(
        &mut self,
        clean: &Bitmap,
        sync: &Bitmap,
        io: &mut IoBuf,
    ) -> Result<(), Errno> {
        if !self.loaded || (!self.marks_pending && self.dirty_blocks.none_set()) {
            return Ok(());
        }
        // From the first block written on, the device may record these
        // regions clean: even a failed write ends the shortcut.
        self.unwritten_clears.clear();
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
            self.write_blocks(clean, sync, io, start, end)?;
            start = self.dirty_blocks.find_next_one(end);
        }
        if self.marks_pending {
            self.sync()?;
        }
        self.dirty_blocks.fill(false);
        self.marks_pending = false;
        if self.failures > 0 {
            log::info!(
                "log device {}:{} works again after {} failed writes or flushes",
                self.device.major(),
                self.device.minor(),
                self.failures
            );
            self.failures = 0;
        }
        Ok(())
    }

    /// Counts a failed write or flush; true when it is worth a log line
    /// (the 1st, 2nd, 4th, 8th, ...): a dead device must not flood the log.
    fn count_failure(&mut self) -> bool {
        self.failures += 1;
        self.failures.is_power_of_two()
    }

    fn write_blocks(
        &mut self,
        clean: &Bitmap,
        sync: &Bitmap,
        io: &mut IoBuf,
        from: u64,
        to: u64,
    ) -> Result<(), Errno> {
        let offset = from << self.block_shift;
        let len = ((to - from) << self.block_shift) as usize;
        let buf = io.get(len);
        self.render(clean, sync, offset, buf);
        self.io.writes += 1;
        let written = self.device.write_all_at(buf, offset);
        written.map_err(|e| {
            self.health = DeviceHealth::Failed;
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
            self.health = DeviceHealth::FlushFailed;
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

    /// RESUME of restored bits: the device gets the whole image, durably.
    pub fn rewrite(&mut self, clean: &Bitmap, sync: &Bitmap, io: &mut IoBuf) -> Result<(), Errno> {
        self.health = DeviceHealth::Alive;
        self.write_image(clean, sync, io)
    }

    /// Writes the whole image, durably (keeps the health a load found).
    pub fn write_image(
        &mut self,
        clean: &Bitmap,
        sync: &Bitmap,
        io: &mut IoBuf,
    ) -> Result<(), Errno> {
        self.loaded = true;
        let blocks = self.dirty_blocks.len();
        self.dirty_blocks.set_range(0, blocks);
        self.marks_pending = true;
        self.write_back(clean, sync, io)
    }

    /// The kernel's disk_resume, first half: reads the device into `clean`,
    /// treats a bad magic (or an explicit sync/nosync) as a new log, and
    /// sets or clears regions the device did not know. The caller rebuilds
    /// the sync bits and writes the image back (`write_image`). Returns how
    /// many regions the device knew (0 for a new log or a failed read).
    pub fn load(&mut self, clean: &mut Bitmap, sync: SyncMode, io: &mut IoBuf) -> u64 {
        self.health = DeviceHealth::Alive;
        let known = match self.read_image(clean, io) {
            Ok(Some(nr_regions)) if sync == SyncMode::Default => nr_regions,
            Ok(_) => 0,
            Err(e) => {
                self.health = DeviceHealth::Failed;
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
            clean.set_range(from, count);
        } else {
            clean.clear_range(from, count);
        }
        known
    }

    /// Reads the image into `clean`; Ok(None) when the header is not a
    /// dm-log header (a new log).
    fn read_image(&mut self, clean: &mut Bitmap, io: &mut IoBuf) -> Result<Option<u64>, String> {
        let mut header = None;
        let mut offset = 0u64;
        while offset < self.image_len {
            let len = (self.image_len - offset).min(IO_BUF_LEN as u64) as usize;
            let buf = io.get(len);
            self.device
                .read_exact_at(buf, offset)
                .map_err(|e| format!("read of {len} bytes at {offset}: {e}"))?;
            if offset == 0 {
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

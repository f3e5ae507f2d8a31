//! The fixed-capacity table of live logs, keyed by (uuid, luid), and the
//! memory budget their bitmaps are charged against.

use std::cell::Cell;
use std::time::Instant;

use crate::log::{DirtyLog, Work};
use crate::wire::frame::Request;
use crate::wire::ulog::{self, MAX_UUID_LEN, RequestType};

/// Requests with device work that one log keeps waiting, in arrival order.
/// The kernel has few outstanding per log (kmirrord's FLUSH, a suspend,
/// resume or DTR from dmsetup, the delayed integrated flush), plus one
/// resend per 15 s (DM_ULOG_RETRY_TIMEOUT) of each while the device hangs.
pub const PARKED_PER_LOG: usize = 8;

/// A request waiting for its log's device work: what its reply's header
/// needs besides the log's uuid (32 bytes rather than the 160 of the
/// header: the FIFOs of every registry entry are locked in memory).
#[derive(Clone)]
pub struct Parked {
    pub kind: RequestType,
    pub luid: u64,
    pub version: u32,
    pub seq: u32,
    pub request_type_field: u32,
    pub cn_seq: u32,
    /// The region of an IN_SYNC (region numbers fit 32 bits), answered
    /// once the log has loaded its device.
    pub region: u32,
}

impl Parked {
    /// What a request of `kind` needs kept while it waits.
    pub fn new(kind: RequestType, req: &Request<'_>) -> Self {
        let region = match req.data.get(..8) {
            Some(bytes) if kind == RequestType::InSync => {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                u32::try_from(u64::from_ne_bytes(word)).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        Parked {
            region,
            kind,
            luid: req.luid,
            version: req.version,
            seq: req.seq,
            request_type_field: req.request_type_field,
            cn_seq: req.cn_seq,
        }
    }

    /// The request header its reply repeats, the uuid field rebuilt from
    /// `uuid` (NUL-padded, as the kernel sends it).
    pub fn header(&self, uuid: &[u8]) -> [u8; ulog::HEADER_LEN] {
        let mut header = [0u8; ulog::HEADER_LEN];
        let mut req = ulog::UlogRequest::new_unchecked(&mut header[..]);
        req.set_luid(self.luid);
        req.set_uuid(uuid);
        req.set_version(self.version);
        req.set_seq(self.seq);
        req.set_request_type_field(self.request_type_field);
        header
    }

    /// The device work the request asks for.
    pub fn work(&self) -> Work {
        match self.kind {
            RequestType::Resume => Work::Resume,
            RequestType::Postsuspend => Work::Postsuspend,
            RequestType::Flush => Work::Flush,
            RequestType::InSync => Work::Load,
            _ => Work::WriteBack,
        }
    }
}

/// Whom the device work in flight answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The first parked request.
    Head,
    /// Nobody: the idle write-back.
    Idle,
}

pub struct Entry {
    pub uuid: heapless::Vec<u8, MAX_UUID_LEN>,
    pub luid: u64,
    /// A digest of the constructor string.
    pub ctr_hash: u64,
    /// When the kernel last asked about this log before its first RESUME.
    pub last_request: Instant,
    /// RESUME came at least once: the log's table went live.
    pub resumed: bool,
    pub log: DirtyLog,
    /// A disk log's I/O slot (staging buffer) in the engine.
    pub slot: Option<usize>,
    /// Requests waiting for device work, oldest first.
    pub parked: heapless::Deque<Parked, PARKED_PER_LOG>,
    /// Device work begun and not finished.
    pub working: Option<Owner>,
    /// Steps that stayed in flight past the stall threshold.
    pub stalls: u64,
    /// The step in flight was counted as stalled.
    pub stall_noted: bool,
    /// The disk log's sticky conditions as its state file holds them.
    pub saved_flags: u32,
    /// Brought back from its state file only to write its saved bits at a
    /// POSTSUSPEND that came before the kernel reconnected it (after a
    /// restart): removed, state file kept, once that is done, unless a
    /// later request made it a live log again.
    pub transient: bool,
}

impl Entry {
    /// A log just constructed: nothing parked, no work.
    pub fn new(uuid: &[u8], luid: u64, ctr_hash: u64, log: DirtyLog, slot: Option<usize>) -> Self {
        let mut entry = Entry {
            uuid: heapless::Vec::new(),
            luid,
            ctr_hash,
            last_request: Instant::now(),
            resumed: false,
            log,
            slot,
            parked: heapless::Deque::new(),
            working: None,
            stalls: 0,
            stall_noted: false,
            saved_flags: 0,
            transient: false,
        };
        // Fits: the wire view checked the uuid's length.
        let _ = entry.uuid.extend_from_slice(uuid);
        entry
    }

    /// True while device work is begun or waits.
    pub fn busy(&self) -> bool {
        self.working.is_some() || !self.parked.is_empty()
    }
}

/// Why a new log does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// --max-logs logs are live already.
    TooManyLogs { max_logs: usize },
    /// The bitmaps would exceed --memory-budget.
    OverBudget {
        needed: usize,
        used: usize,
        budget: usize,
    },
}

pub struct Registry {
    entries: Vec<Entry>,
    last_hit: Cell<usize>,
    max_logs: usize,
    budget: usize,
    used: usize,
}

impl Registry {
    /// Reserves room for `max_logs` entries now, and as many again for
    /// logs the kernel reconnects (see `insert`), so inserting never
    /// allocates; `budget` bounds the bytes of all bitmaps together.
    pub fn new(max_logs: usize, budget: usize) -> Self {
        Registry {
            entries: Vec::with_capacity(max_logs.saturating_mul(2)),
            last_hit: Cell::new(0),
            max_logs,
            budget,
            used: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Finds a live log. Requests come in bursts per log (a flush is
    /// marks, then FLUSH), so the last hit is tried before the scan.
    #[inline]
    pub fn find(&self, uuid: &[u8], luid: u64) -> Option<usize> {
        let is = |e: &Entry| e.luid == luid && same_uuid(&e.uuid, uuid);
        let last = self.last_hit.get();
        if self.entries.get(last).is_some_and(is) {
            return Some(last);
        }
        let found = self.entries.iter().position(is)?;
        self.last_hit.set(found);
        Some(found)
    }

    pub fn get(&self, index: usize) -> &Entry {
        &self.entries[index]
    }
    pub fn get_mut(&mut self, index: usize) -> &mut Entry {
        &mut self.entries[index]
    }

    /// Checks that a log needing `bytes` more would fit.
    pub fn check_room(&self, bytes: usize) -> Result<(), NoRoom> {
        if self.entries.len() >= self.max_logs {
            return Err(NoRoom::TooManyLogs {
                max_logs: self.max_logs,
            });
        }
        if self.used.saturating_add(bytes) > self.budget {
            return Err(NoRoom::OverBudget {
                needed: bytes,
                used: self.used,
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// Adds a log; the caller has checked room with `check_room`. A log
    /// `restored` from its saved state when the kernel reconnects it held
    /// its room before the restart and is admitted beyond the limits (a
    /// refusal would make the kernel retry forever), as long as the
    /// reserved entries last.
    pub fn insert(&mut self, entry: Entry, restored: bool) -> Result<(), NoRoom> {
        if !restored {
            self.check_room(entry.log.heap_bytes())?;
        } else if self.entries.len() == self.entries.capacity() {
            return Err(NoRoom::TooManyLogs {
                max_logs: self.max_logs,
            });
        }
        self.used += entry.log.heap_bytes();
        self.entries.push(entry);
        Ok(())
    }

    pub fn remove(&mut self, index: usize) -> Entry {
        let e = self.entries.swap_remove(index);
        self.used -= e.log.heap_bytes();
        e
    }

    /// The log that holds engine slot `slot`.
    pub fn find_slot(&self, slot: usize) -> Option<usize> {
        self.entries.iter().position(|e| e.slot == Some(slot))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// Byte equality eight bytes at a time: `==` on slices calls the C
/// library's memcmp, which in musl goes a byte at a time and was half of a
/// request's instructions (BENCHMARKS.md, the handler profile).
#[inline]
fn same_uuid(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let words_equal = (&mut wa).zip(&mut wb).all(|(x, y)| {
        match (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) {
            (Ok(x), Ok(y)) => u64::from_ne_bytes(x) == u64::from_ne_bytes(y),
            _ => false,
        }
    });
    words_equal
        && wa
            .remainder()
            .iter()
            .zip(wb.remainder())
            .all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::{Entry, Parked, same_uuid};
    use crate::wire::frame::{self, REQUEST_OFFSET};
    use crate::wire::ulog::{HEADER_LEN, RequestType};

    /// Every one of the 2 x --max-logs slots holds an Entry and is locked
    /// in memory, used or not (idle Rss grew past 2 MiB twice through
    /// inline fields: parked headers, then the disk store): a field that
    /// only some logs need goes behind a Box allocated at CTR.
    #[test]
    fn a_registry_slot_stays_small() {
        assert!(
            size_of::<Entry>() <= 640,
            "Entry is {} bytes",
            size_of::<Entry>()
        );
    }

    #[test]
    fn a_parked_request_gives_back_the_header_it_came_with() {
        let uuid = b"LVM-parked-request-uuid";
        let mut datagram = [0u8; 512];
        let n = frame::emit_request(&mut datagram, 77, 0x1122_3344_5566_7788, uuid, 9, 12, &[]);
        let req = frame::parse_request(&datagram[..n]).unwrap();
        let parked = Parked::new(RequestType::Flush, &req);
        assert_eq!(
            parked.header(uuid),
            datagram[REQUEST_OFFSET..REQUEST_OFFSET + HEADER_LEN]
        );
        // Eight of them per registry entry, every entry locked in memory.
        assert!(size_of::<Parked>() <= 32);
    }

    #[test]
    fn uuids_compare_by_every_byte() {
        let a = b"LVM-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        assert!(same_uuid(a, a));
        assert!(same_uuid(b"", b""));
        assert!(!same_uuid(a, &a[..a.len() - 1]));
        for i in 0..a.len() {
            let mut b = *a;
            b[i] ^= 0x20;
            assert!(!same_uuid(a, &b), "byte {i}");
        }
    }
}

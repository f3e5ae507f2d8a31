//! The device work a disk log plans, as steps: leg flushes, batched writes,
//! cache flushes and reads, the staging buffer, and a step run synchronously.

use nix::errno::Errno;

use crate::log::device::LogDevice;
use crate::log::legs::{LegSet, MirrorError, Mirrors};
use crate::sys::aio::STAGING_LEN;

/// Size of the staging buffer for log device I/O. Larger transfers are split.
pub const IO_BUF_LEN: usize = STAGING_LEN;

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

/// Synchronous I/O for a disk log, for tests and the rare paths that
/// need no event loop: a staging buffer and the mirror's legs, which are
/// flushed before bits that record regions clean are written.
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

/// One piece of device work a plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Flush the volatile cache of every leg of the mirror.
    LegFlush,
    /// Write the `spans` spans of the log's batch (`DiskStore::batch`),
    /// packed in the staging buffer, each at its device offset, all at once;
    /// `durable`: durable when done (FUA writes), standing for the plan's
    /// cache flush when this is the plan's only batch.
    Write { spans: u8, durable: bool },
    /// Flush the log device's volatile cache.
    DeviceFlush,
    /// Read `len` bytes at `offset` into the staging buffer.
    Read { offset: u64, len: usize },
}

/// How many spans one write step carries: one io_submit of that many
/// requests (the scattered blocks of a FLUSH on a large log go out
/// together, not one after another).
pub const MAX_WRITE_SPANS: usize = 16;
const _: () = assert!(MAX_WRITE_SPANS <= crate::sys::aio::MAX_PER_SUBMIT);

/// One transfer of a write step: `len` bytes from `buf_offset` of the
/// staging buffer to `offset` on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub buf_offset: usize,
    pub len: usize,
}

/// The spans of a write step, packed one after another in the staging
/// buffer. Each disk log keeps one in its store, which is allocated at CTR
/// (`DirtyLog`), outside the preallocated registry and the step: a few
/// hundred bytes that every idle log slot would otherwise hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spans {
    items: [Span; MAX_WRITE_SPANS],
    count: usize,
}

impl Spans {
    /// The spans, in device order.
    pub fn as_slice(&self) -> &[Span] {
        &self.items[..self.count]
    }

    /// Bytes of the staging buffer the spans use.
    pub fn buf_len(&self) -> usize {
        self.as_slice().last().map_or(0, |s| s.buf_offset + s.len)
    }

    pub(super) fn is_full(&self) -> bool {
        self.count == MAX_WRITE_SPANS
    }

    pub(super) fn push(&mut self, offset: u64, len: usize) {
        let buf_offset = self.buf_len();
        self.items[self.count] = Span {
            offset,
            buf_offset,
            len,
        };
        self.count += 1;
    }
}

/// Why a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepError {
    Device(Errno),
    Legs(MirrorError),
}

impl core::fmt::Display for StepError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StepError::Device(e) => f.write_str(e.desc()),
            StepError::Legs(e) => write!(f, "{e}"),
        }
    }
}

/// Runs a step to its end in the calling thread (the synchronous engine).
pub fn run_step(
    step: Step,
    batch: &[Span],
    device: &LogDevice,
    buf: &mut [u8],
    legs: Option<&LegSet>,
    mirrors: &mut dyn Mirrors,
) -> Result<(), StepError> {
    let errno = |e: std::io::Error| {
        StepError::Device(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    };
    match step {
        Step::LegFlush => match legs {
            Some(legs) => mirrors.flush(legs).map_err(StepError::Legs),
            None => Err(StepError::Legs(MirrorError::NotFound)),
        },
        Step::Write { durable, .. } => {
            for span in batch {
                let bytes = &buf[span.buf_offset..span.buf_offset + span.len];
                device.write_all_at(bytes, span.offset).map_err(errno)?;
            }
            if durable {
                device.sync().map_err(errno)?;
            }
            Ok(())
        }
        Step::DeviceFlush => device.sync().map_err(errno),
        Step::Read { offset, len } => device.read_exact_at(&mut buf[..len], offset).map_err(errno),
    }
}

//! Linux native AIO (io_setup, io_submit, io_getevents) for the log
//! devices and the legs' cache flushes, completions signalled on an eventfd
//! that the event loop polls. No new dependency, and it works where
//! io_uring is disabled (`kernel.io_uring_disabled`).
//!
//! The kernel holds a staging buffer from io_submit until the request's
//! completion is reaped, so the buffers live here, in `SlotBuffers`: a
//! buffer the kernel holds is neither lent out nor freed until then.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Bytes of one staging buffer; larger transfers take several rounds.
pub const STAGING_LEN: usize = 64 * 1024;
/// O_DIRECT alignment of every staging buffer.
pub const STAGING_ALIGN: usize = 4096;
/// Heap bytes one staging buffer costs (counted in the memory budget).
pub const STAGING_HEAP_BYTES: usize = STAGING_LEN + STAGING_ALIGN;

/// One slot's staging buffer and how many of its requests the kernel holds.
struct SlotBuffer {
    storage: Vec<u8>,
    offset: usize,
    held_by_kernel: u32,
    /// Freed when the kernel lets go of it.
    release_pending: bool,
}

/// Page-aligned staging buffers, one per slot (one per disk log), allocated
/// when a log is constructed and kept from the kernel's reach while it
/// holds them.
pub struct SlotBuffers {
    slots: Vec<Option<SlotBuffer>>,
}

impl SlotBuffers {
    /// Room for `capacity` slots, so opening one never grows the table.
    pub fn new(capacity: usize) -> Self {
        SlotBuffers {
            slots: Vec::with_capacity(capacity),
        }
    }

    /// A new slot with its buffer; None when every slot is taken.
    pub fn open(&mut self) -> Option<usize> {
        let storage = vec![0u8; STAGING_HEAP_BYTES];
        let offset = storage.as_ptr().align_offset(STAGING_ALIGN);
        let buffer = SlotBuffer {
            storage,
            offset,
            held_by_kernel: 0,
            release_pending: false,
        };
        if let Some(free) = self.slots.iter().position(Option::is_none) {
            self.slots[free] = Some(buffer);
            return Some(free);
        }
        if self.slots.len() == self.slots.capacity() {
            return None;
        }
        self.slots.push(Some(buffer));
        Some(self.slots.len() - 1)
    }

    /// Frees a slot's buffer now, or when the kernel lets go of it.
    pub fn release(&mut self, slot: usize) {
        if let Some(Some(b)) = self.slots.get_mut(slot) {
            if b.held_by_kernel > 0 {
                b.release_pending = true;
            } else {
                self.slots[slot] = None;
            }
        }
    }

    /// The first `len` bytes (at most STAGING_LEN) of the slot's buffer;
    /// None while the kernel holds it.
    pub fn get_mut(&mut self, slot: usize, len: usize) -> Option<&mut [u8]> {
        let b = self.slots.get_mut(slot)?.as_mut()?;
        if b.held_by_kernel > 0 || b.release_pending || len > STAGING_LEN {
            return None;
        }
        Some(&mut b.storage[b.offset..b.offset + len])
    }

    /// True while the kernel holds the slot's buffer.
    pub fn held(&self, slot: usize) -> bool {
        matches!(self.slots.get(slot), Some(Some(b)) if b.held_by_kernel > 0)
    }

    fn kernel_lets_go(&mut self, slot: usize) {
        if let Some(Some(b)) = self.slots.get_mut(slot) {
            b.held_by_kernel = b.held_by_kernel.saturating_sub(1);
            if b.held_by_kernel == 0 && b.release_pending {
                self.slots[slot] = None;
            }
        }
    }
}

impl Drop for SlotBuffers {
    fn drop(&mut self) {
        // A buffer the kernel still holds is leaked rather than freed
        // under it, whatever order its context is dropped in.
        for b in self.slots.iter_mut().flatten() {
            if b.held_by_kernel > 0 {
                core::mem::forget(core::mem::take(&mut b.storage));
            }
        }
    }
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AioOp {
    /// Reads `len` bytes at `offset` into the slot's buffer.
    Read { offset: u64, len: usize },
    /// Writes `len` bytes of the slot's buffer, from `buf_offset`, at
    /// `offset`; `durable`: with RWF_DSYNC, which on an O_DIRECT block
    /// device is a FUA write (block/fops.c dio_bio_write_op): durable when
    /// it completes, with no separate cache flush.
    Write {
        offset: u64,
        buf_offset: usize,
        len: usize,
        durable: bool,
    },
    /// fdatasync: the device's volatile cache flush.
    DataSync,
    /// fsync (of a leg's block device).
    Sync,
}

// include/uapi/linux/aio_abi.h
const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FSYNC: u16 = 2;
const IOCB_CMD_FDSYNC: u16 = 3;
const IOCB_FLAG_RESFD: u32 = 1;

/// struct iocb. linux/aio_abi.h swaps aio_key and aio_rw_flags on
/// big-endian machines (its PADDED macro).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    #[cfg(target_endian = "little")]
    aio_key: u32,
    aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    aio_key: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// struct io_event.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const _: () = assert!(core::mem::size_of::<Iocb>() == 64);
const _: () = assert!(core::mem::size_of::<IoEvent>() == 32);

/// Requests one submission may carry (a leg flush is one per leg).
pub const MAX_PER_SUBMIT: usize = 16;
/// Events taken per io_getevents call.
const EVENTS_PER_REAP: usize = 64;

/// An AIO context whose completions increment an eventfd.
pub struct AioContext {
    ctx: libc::c_ulong,
    eventfd: OwnedFd,
    events: [IoEvent; EVENTS_PER_REAP],
}

/// Tokens carry the slot above this many bits and the request's index
/// within its submission below.
const TOKEN_INDEX_BITS: u32 = 8;

impl AioContext {
    /// A context for `nr_events` requests in flight. Err when the kernel
    /// refuses (ENOSYS: no AIO; EAGAIN: fs.aio-max-nr reached).
    pub fn new(nr_events: u32) -> Result<Self, Errno> {
        // SAFETY: eventfd takes two integers and returns a new descriptor
        // or -1; nothing is passed by pointer.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by no one
        // else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes one aio_context_t (an unsigned long)
        // through the pointer, which points at a live local of that type
        // initialised to 0 as the kernel requires.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, nr_events as libc::c_long, &mut ctx) };
        if r < 0 {
            return Err(Errno::last());
        }
        Ok(AioContext {
            ctx,
            eventfd,
            events: [IoEvent::default(); EVENTS_PER_REAP],
        })
    }

    /// The eventfd that becomes readable when requests complete.
    pub fn ready_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Submits `ops` (each on its descriptor) for `slot`, all at once.
    /// Reads and writes use the slot's buffer, which stays out of reach
    /// until every request's completion is reaped. Returns how many the
    /// kernel took (the rest were not submitted); Err when it took none.
    pub fn submit(
        &mut self,
        buffers: &mut SlotBuffers,
        slot: usize,
        ops: &[(BorrowedFd<'_>, AioOp)],
    ) -> Result<usize, Errno> {
        let Some(Some(buffer)) = buffers.slots.get_mut(slot) else {
            return Err(Errno::EBADF);
        };
        if buffer.held_by_kernel > 0 || buffer.release_pending || ops.len() > MAX_PER_SUBMIT {
            return Err(Errno::EBUSY);
        }
        let base = buffer.storage[buffer.offset..].as_mut_ptr() as u64;
        let mut iocbs: [Iocb; MAX_PER_SUBMIT] = Default::default();
        let mut ptrs: [*mut Iocb; MAX_PER_SUBMIT] = [core::ptr::null_mut(); MAX_PER_SUBMIT];
        for (i, (fd, op)) in ops.iter().enumerate() {
            let (opcode, buf, nbytes, offset, rw_flags) = match *op {
                AioOp::Read { offset, len } => {
                    if len > STAGING_LEN {
                        return Err(Errno::EINVAL);
                    }
                    (IOCB_CMD_PREAD, base, len as u64, offset as i64, 0)
                }
                AioOp::Write {
                    offset,
                    buf_offset,
                    len,
                    durable,
                } => {
                    if buf_offset
                        .checked_add(len)
                        .is_none_or(|end| end > STAGING_LEN)
                    {
                        return Err(Errno::EINVAL);
                    }
                    let rw_flags = if durable { libc::RWF_DSYNC } else { 0 };
                    let buf = base + buf_offset as u64;
                    (IOCB_CMD_PWRITE, buf, len as u64, offset as i64, rw_flags)
                }
                AioOp::DataSync => (IOCB_CMD_FDSYNC, 0, 0, 0, 0),
                AioOp::Sync => (IOCB_CMD_FSYNC, 0, 0, 0, 0),
            };
            iocbs[i] = Iocb {
                aio_data: ((slot as u64) << TOKEN_INDEX_BITS) | i as u64,
                aio_lio_opcode: opcode,
                aio_fildes: fd.as_fd().as_raw_fd() as u32,
                aio_buf: buf,
                aio_nbytes: nbytes,
                aio_offset: offset,
                aio_rw_flags: rw_flags,
                aio_flags: IOCB_FLAG_RESFD,
                aio_resfd: self.eventfd.as_raw_fd() as u32,
                ..Iocb::default()
            };
            ptrs[i] = &mut iocbs[i];
        }
        // SAFETY: `ptrs` holds ops.len() pointers to initialised iocbs on
        // this stack frame, which the kernel copies before io_submit
        // returns. Each iocb's descriptor is borrowed for this call (the
        // kernel takes its own file reference), and its buffer is the
        // slot's staging buffer: `held_by_kernel` below keeps it from
        // being lent out (`get_mut`) or freed (`release`) until the
        // request's completion is reaped; a buffer still held when the
        // buffers are dropped is leaked, never freed under the kernel.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                ops.len() as libc::c_long,
                ptrs.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(Errno::last());
        }
        buffer.held_by_kernel += r as u32;
        Ok(r as usize)
    }

    /// Takes every completion the kernel has, without waiting: calls
    /// `each(slot, index, result)` with the byte count or -errno.
    pub fn reap(&mut self, buffers: &mut SlotBuffers, mut each: impl FnMut(usize, usize, i64)) {
        let mut counter = [0u8; 8];
        // Reset the eventfd before reading the ring, so a completion after
        // the last io_getevents makes it readable again.
        let _ = nix::unistd::read(&self.eventfd, &mut counter);
        loop {
            let mut zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: the kernel writes at most EVENTS_PER_REAP io_events
            // into `self.events`, an array of that many, and reads the
            // zero timeout from a live local (no waiting).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    0 as libc::c_long,
                    EVENTS_PER_REAP as libc::c_long,
                    self.events.as_mut_ptr(),
                    &mut zero,
                )
            };
            if n <= 0 {
                if n < 0 && Errno::last() == Errno::EINTR {
                    continue;
                }
                return;
            }
            for e in &self.events[..n as usize] {
                let slot = (e.data >> TOKEN_INDEX_BITS) as usize;
                let index = (e.data & ((1 << TOKEN_INDEX_BITS) - 1)) as usize;
                buffers.kernel_lets_go(slot);
                each(slot, index, e.res);
            }
            if (n as usize) < EVENTS_PER_REAP {
                return;
            }
        }
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: io_destroy takes the context number; it cancels or waits
        // for every request in flight, so no buffer is used afterwards.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}

//! Runs the steps disk logs plan (log/disk.rs) on their devices: through
//! Linux native AIO, so a log device that stops answering holds up only its
//! own log, or synchronously (the unit tests, and where the kernel refuses
//! AIO). One step per log is in flight at a time; a completion names the
//! log's slot, and the server matches it to the log's plan.
//!
//! Each disk log has a slot: its staging buffer (allocated at CTR, charged
//! to the memory budget) and, while a leg flush is in flight, the legs'
//! descriptors.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use nix::errno::Errno;

use crate::log::device::LogDevice;
use crate::log::disk::{self, MAX_WRITE_SPANS, Span, Step, StepError};
use crate::log::legs::{LegSet, MAX_LEGS, MirrorError, Mirrors};
use crate::sys::aio::{AioContext, AioOp, MAX_PER_SUBMIT, STAGING_LEN, SlotBuffers};

/// The most requests the AIO context holds: a share of the default
/// system-wide fs.aio-max-nr (65536). One step per log is in flight, of at
/// most WIDEST_STEP requests, so this covers hundreds of logs at their
/// widest at once; a step the full context refuses runs synchronously
/// (said once in the log).
const AIO_EVENTS_MAX: usize = 4096;

/// Requests of the widest step: a leg flush (one per leg) or a batch of
/// writes.
const WIDEST_STEP: usize = if MAX_LEGS > MAX_WRITE_SPANS {
    MAX_LEGS
} else {
    MAX_WRITE_SPANS
};

/// A step that completed: the slot and how it ended.
pub type Completion = (usize, Result<(), StepError>);

/// What a slot has in flight.
struct InFlight {
    step: Step,
    started: Instant,
    /// Requests the kernel still holds (a leg flush has one per leg).
    remaining: u32,
    /// Bytes the step's reads or writes must transfer, and how many they
    /// did: a short transfer fails the step.
    expected_bytes: u64,
    transferred: u64,
    error: Option<StepError>,
    legs: LegSet,
    /// Open while their fsyncs are in flight.
    leg_fds: heapless::Vec<OwnedFd, MAX_LEGS>,
}

enum Backend {
    Sync,
    Aio(Box<AioContext>),
    Fake(FakeIo),
}

pub struct Engine {
    backend: Backend,
    buffers: SlotBuffers,
    in_flight: Vec<Option<InFlight>>,
    done: VecDeque<Completion>,
    /// Slots with a step in flight.
    count: usize,
    /// AIO refused a request and it ran synchronously: said once.
    sync_fallback_logged: bool,
    /// The completion eventfd became readable since the last reap. Reaping
    /// costs two system calls (the eventfd read, io_getevents), so it
    /// waits for the poll to say there is something: while one log
    /// device hangs, every request of the other logs would pay them.
    signalled: bool,
}

impl Engine {
    fn with(backend: Backend, slots: usize) -> Self {
        let mut in_flight = Vec::with_capacity(slots);
        in_flight.resize_with(slots, || None);
        Engine {
            backend,
            buffers: SlotBuffers::new(slots),
            in_flight,
            done: VecDeque::with_capacity(slots),
            count: 0,
            sync_fallback_logged: false,
            signalled: false,
        }
    }

    /// Runs every step in the calling thread, for up to `slots` disk logs.
    pub fn synchronous(slots: usize) -> Self {
        Self::with(Backend::Sync, slots)
    }

    /// Linux AIO for up to `slots` disk logs; synchronous I/O, said once
    /// in the log, when the kernel refuses an AIO context.
    pub fn asynchronous(slots: usize) -> Self {
        let events = (slots * WIDEST_STEP).clamp(WIDEST_STEP, AIO_EVENTS_MAX) as u32;
        match AioContext::new(events) {
            Ok(ctx) => Self::with(Backend::Aio(Box::new(ctx)), slots),
            Err(e) => {
                log::warn!(
                    "Linux AIO is unavailable ({}: {}); log devices are written synchronously, \
                     so a log device that stops answering stops every mirror this daemon \
                     serves (for EAGAIN raise fs.aio-max-nr above {events} plus what other \
                     programs use; for ENOSYS use a kernel with CONFIG_AIO)",
                    e,
                    e.desc()
                );
                Self::with(Backend::Sync, slots)
            }
        }
    }

    /// Completions wait until `FakeIo::complete` releases them; the I/O
    /// itself is done synchronously at submission, or not at all with
    /// `FakeIo::deferred` (the test does it, `FakeIo::finish`). For tests.
    pub fn fake(slots: usize, fake: FakeIo) -> Self {
        Self::with(Backend::Fake(fake), slots)
    }

    /// True when steps complete later, through `ready_fd` and `poll`.
    pub fn is_async(&self) -> bool {
        !matches!(self.backend, Backend::Sync)
    }

    /// The descriptor that becomes readable when steps complete.
    pub fn ready_fd(&self) -> Option<RawFd> {
        match &self.backend {
            Backend::Aio(ctx) => Some(ctx.ready_fd()),
            _ => None,
        }
    }

    /// A slot with its staging buffer for a new disk log; None when all
    /// are taken.
    pub fn open_slot(&mut self) -> Option<usize> {
        let slot = self.buffers.open()?;
        if slot >= self.in_flight.len() {
            self.buffers.release(slot);
            return None;
        }
        Some(slot)
    }

    /// Gives a log's slot back; a step in flight keeps its buffer until it
    /// completes.
    pub fn release_slot(&mut self, slot: usize) {
        self.buffers.release(slot);
    }

    /// The slot's staging buffer (STAGING_LEN bytes); None while a step
    /// holds it.
    pub fn buf(&mut self, slot: usize) -> Option<&mut [u8]> {
        if self.in_flight.get(slot).is_some_and(Option::is_some) {
            return None;
        }
        self.buffers.get_mut(slot, STAGING_LEN)
    }

    /// The step in flight on `slot`, how many requests it has with the
    /// kernel, and when it started.
    pub fn in_flight(&self, slot: usize) -> Option<(Step, u32, Instant)> {
        let f = self.in_flight.get(slot)?.as_ref()?;
        Some((f.step, f.remaining.max(1), f.started))
    }

    /// True when any step is in flight.
    pub fn any_in_flight(&self) -> bool {
        self.count > 0
    }

    /// Starts `step` on `slot` (whose buffer holds a write's bytes). Its
    /// completion comes out of `next_completion`, after `poll` for AIO.
    pub fn submit(
        &mut self,
        slot: usize,
        step: Step,
        batch: &[Span],
        device: &LogDevice,
        legs: Option<&LegSet>,
        mirrors: &mut dyn Mirrors,
    ) {
        let mut flight = InFlight {
            step,
            started: Instant::now(),
            remaining: 0,
            expected_bytes: 0,
            transferred: 0,
            error: None,
            legs: legs.cloned().unwrap_or_default(),
            leg_fds: heapless::Vec::new(),
        };
        let aio = match &mut self.backend {
            Backend::Aio(ctx) => ctx,
            Backend::Sync => {
                let result = self.run_here(slot, step, batch, device, legs, mirrors);
                self.done.push_back((slot, result));
                return;
            }
            Backend::Fake(fake) => {
                let mut state = fake.0.borrow_mut();
                let buf = self.buffers.get_mut(slot, STAGING_LEN);
                let (result, bytes) = match buf {
                    // Deferred: the test's disk model does the I/O, so
                    // only a write's bytes are taken, no leg is flushed.
                    Some(buf) if state.deferred => {
                        let mut bytes = Vec::new();
                        if matches!(step, Step::Write { .. }) {
                            for span in batch {
                                let end = span.buf_offset + span.len;
                                bytes.extend_from_slice(&buf[span.buf_offset..end]);
                            }
                        }
                        (Ok(()), bytes)
                    }
                    Some(buf) => (
                        disk::run_step(step, batch, device, buf, legs, mirrors),
                        Vec::new(),
                    ),
                    None => (Err(StepError::Device(Errno::EBUSY)), Vec::new()),
                };
                state.submitted.push(FakeStep {
                    slot,
                    step,
                    batch: batch.to_vec(),
                    bytes,
                    legs: legs.cloned(),
                    result,
                });
                drop(state);
                self.in_flight[slot] = Some(flight);
                self.count += 1;
                return;
            }
        };
        let mut ops: heapless::Vec<AioOp, MAX_PER_SUBMIT> = heapless::Vec::new();
        match step {
            Step::Write { durable, .. } => {
                for span in batch {
                    let _ = ops.push(AioOp::Write {
                        offset: span.offset,
                        buf_offset: span.buf_offset,
                        len: span.len,
                        durable,
                    });
                    flight.expected_bytes += span.len as u64;
                }
            }
            Step::Read { offset, len } => {
                let _ = ops.push(AioOp::Read { offset, len });
                flight.expected_bytes = len as u64;
            }
            Step::DeviceFlush => {
                let _ = ops.push(AioOp::DataSync);
            }
            Step::LegFlush => {
                let Some(legs) = legs else {
                    let failed = StepError::Legs(MirrorError::NotFound);
                    self.done.push_back((slot, Err(failed)));
                    return;
                };
                for &leg in legs {
                    match mirrors.open_leg(leg) {
                        Ok(fd) => {
                            let _ = flight.leg_fds.push(fd);
                            let _ = ops.push(AioOp::Sync);
                        }
                        Err(e) => {
                            self.done.push_back((slot, Err(StepError::Legs(e))));
                            return;
                        }
                    }
                }
            }
        }
        let device_fd = device.as_fd();
        let mut with_fds: heapless::Vec<(BorrowedFd<'_>, AioOp), MAX_PER_SUBMIT> =
            heapless::Vec::new();
        for (i, &op) in ops.iter().enumerate() {
            let fd = match op {
                AioOp::Sync => flight.leg_fds[i].as_fd(),
                _ => device_fd,
            };
            let _ = with_fds.push((fd, op));
        }
        let submitted = aio.submit(&mut self.buffers, slot, &with_fds);
        drop(with_fds);
        match submitted {
            Ok(n) => {
                // A context sized for every slot's widest step takes all of
                // it; were part refused, the step fails rather than hangs.
                if n < ops.len() {
                    flight.error = Some(StepError::Device(Errno::EAGAIN));
                }
                flight.remaining = n as u32;
                self.in_flight[slot] = Some(flight);
                self.count += 1;
            }
            Err(e) => {
                // The kernel refused the request (a file system without
                // AIO fsync, a full context): run it here, once said.
                if !self.sync_fallback_logged {
                    self.sync_fallback_logged = true;
                    log::warn!(
                        "Linux AIO refused a log device request ({}); such requests run \
                         synchronously from now on, holding up every log while they last",
                        e.desc()
                    );
                }
                let result = self.run_here(slot, step, batch, device, legs, mirrors);
                self.done.push_back((slot, result));
            }
        }
    }

    fn run_here(
        &mut self,
        slot: usize,
        step: Step,
        batch: &[Span],
        device: &LogDevice,
        legs: Option<&LegSet>,
        mirrors: &mut dyn Mirrors,
    ) -> Result<(), StepError> {
        match self.buffers.get_mut(slot, STAGING_LEN) {
            Some(buf) => disk::run_step(step, batch, device, buf, legs, mirrors),
            None => Err(StepError::Device(Errno::EBUSY)),
        }
    }

    /// The poll saw the completion eventfd readable (edge-triggered: the
    /// next `poll` reaps everything there is).
    pub fn note_ready(&mut self) {
        self.signalled = true;
    }

    /// Collects what completed since the last call, without waiting; with
    /// AIO, only after `note_ready`.
    pub fn poll(&mut self) {
        if self.count == 0 {
            return;
        }
        if matches!(self.backend, Backend::Aio(_)) && !std::mem::take(&mut self.signalled) {
            return;
        }
        let Engine {
            backend,
            buffers,
            in_flight,
            done,
            count,
            ..
        } = self;
        match backend {
            Backend::Sync => {}
            Backend::Fake(fake) => {
                let mut state = fake.0.borrow_mut();
                while let Some(((slot, result), read)) = state.released.pop_front() {
                    if in_flight.get_mut(slot).and_then(Option::take).is_some() {
                        *count -= 1;
                        if let (Some(bytes), Some(buf)) = (read, buffers.get_mut(slot, STAGING_LEN))
                        {
                            let len = bytes.len().min(buf.len());
                            buf[..len].copy_from_slice(&bytes[..len]);
                        }
                        done.push_back((slot, result));
                    }
                }
            }
            Backend::Aio(ctx) => ctx.reap(buffers, |slot, index, res| {
                let Some(Some(f)) = in_flight.get_mut(slot) else {
                    return;
                };
                let failed = if res < 0 {
                    Some(Errno::from_raw(-res as i32))
                } else {
                    f.transferred += res as u64;
                    None
                };
                if let Some(errno) = failed
                    && f.error.is_none()
                {
                    f.error = Some(match f.step {
                        Step::LegFlush => StepError::Legs(MirrorError::Flush {
                            leg: f.legs.get(index).copied().unwrap_or((0, 0)),
                            errno,
                        }),
                        _ => StepError::Device(errno),
                    });
                }
                f.remaining = f.remaining.saturating_sub(1);
                if f.remaining == 0 && f.error.is_none() && f.transferred != f.expected_bytes {
                    // A short read or write (the only way the sum can differ).
                    f.error = Some(StepError::Device(Errno::EIO));
                }
                if f.remaining == 0
                    && let Some(f) = in_flight[slot].take()
                {
                    *count -= 1;
                    done.push_back((slot, f.error.map_or(Ok(()), Err)));
                }
            }),
        }
    }

    /// The next completed step, oldest first.
    pub fn next_completion(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }
}

/// A step a fake engine took: its slot, the step, the spans of a write
/// batch, and what its I/O did.
pub struct FakeStep {
    pub slot: usize,
    pub step: Step,
    pub batch: Vec<Span>,
    /// Deferred mode: a write's bytes, its spans' one after another.
    pub bytes: Vec<u8>,
    /// The legs of a leg flush.
    pub legs: Option<LegSet>,
    pub result: Result<(), StepError>,
}

/// Submitted steps of a fake engine, and the completions a test releases.
#[derive(Default)]
pub struct FakeIoState {
    /// In submission order.
    pub submitted: Vec<FakeStep>,
    /// Steps do no I/O: the test's model of the devices does it (`finish`).
    deferred: bool,
    /// Completions, with the bytes a deferred read brings.
    released: VecDeque<(Completion, Option<Vec<u8>>)>,
}

/// The test's handle on a fake engine.
#[derive(Clone, Default)]
pub struct FakeIo(pub Rc<RefCell<FakeIoState>>);

impl FakeIo {
    /// A fake engine that does no I/O at all: submission records the step
    /// (a write's bytes, a leg flush's legs) and `finish` says how it
    /// ended, so a test's model of the devices decides what became
    /// durable and what a read returns.
    pub fn deferred() -> Self {
        let io = FakeIo::default();
        io.0.borrow_mut().deferred = true;
        io
    }

    /// Completes the step in flight on `slot` with `result`; a read's
    /// bytes, `read`, go into the slot's staging buffer before the server
    /// sees the completion. False when no step is in flight there.
    pub fn finish(
        &self,
        slot: usize,
        result: Result<(), StepError>,
        read: Option<Vec<u8>>,
    ) -> bool {
        let mut state = self.0.borrow_mut();
        let Some(at) = state.submitted.iter().position(|s| s.slot == slot) else {
            return false;
        };
        state.submitted.remove(at);
        state.released.push_back(((slot, result), read));
        true
    }

    /// The steps submitted and not yet completed, oldest first.
    pub fn pending(&self) -> Vec<(usize, Step)> {
        self.0
            .borrow()
            .submitted
            .iter()
            .map(|s| (s.slot, s.step))
            .collect()
    }

    /// The spans of the write batch in flight on `slot` (empty for other
    /// steps).
    pub fn batch(&self, slot: usize) -> Vec<Span> {
        self.0
            .borrow()
            .submitted
            .iter()
            .find(|s| s.slot == slot)
            .map(|s| s.batch.clone())
            .unwrap_or_default()
    }

    /// Completes the step in flight on `slot`, with what its I/O did, or
    /// failed with EIO when `fail`. False when none is in flight.
    pub fn complete(&self, slot: usize, fail: bool) -> bool {
        let mut state = self.0.borrow_mut();
        let Some(at) = state.submitted.iter().position(|s| s.slot == slot) else {
            return false;
        };
        let result = state.submitted.remove(at).result;
        let result = if fail {
            Err(StepError::Device(Errno::EIO))
        } else {
            result
        };
        state.released.push_back(((slot, result), None));
        true
    }
}

//! Request -> log operation -> reply. Pure apart from log device I/O: no
//! sockets, no allocation on the request path (only a CTR allocates, within
//! the memory budget).
//!
//! A request that needs its log's device work (FLUSH with marks pending,
//! RESUME that reads the device, POSTSUSPEND and DTR that write it) is
//! parked in its log's FIFO and answered by `complete` when the work is
//! done; every other request is answered at once from memory, whatever the
//! devices do. The engine runs one step per log at a time, so per log the
//! work is done in arrival order and a later FLUSH never completes before
//! an earlier one.

use core::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat;

use crate::bitmap::Bitmap;
use crate::engine::Engine;
use crate::log::device::LogDevice;
use crate::log::disk::{DeviceIo, DiskStore, Step, flags};
use crate::log::params::{self, LogArgs};
use crate::log::state::{FNV_BASES, Identity, Saved, StateDir, fnv1a};
use crate::log::{DirtyLog, Next, Origin, Work};
use crate::mirrors::{LegSet, Mirrors};
use crate::registry::{Entry, NoRoom, Owner, PARKED_PER_LOG, Parked, Registry};
use crate::wire::frame::{
    self, REPLY_BUF_LEN, REPLY_DATA_OFFSET, REQUEST_OFFSET, Rejection, Request,
};
use crate::wire::ulog::RequestType;

/// Limits chosen by the operator.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How many logs may be live at once (--max-logs).
    pub max_logs: usize,
    /// Bytes all bitmaps together may take (--memory-budget).
    pub memory_budget: usize,
}

/// What happened to requests, for SIGUSR1 and for tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub requests: u64,
    pub error_replies: u64,
    pub dropped: u64,
    pub acked_malformed: u64,
}

/// What `dispatch` did with a request.
enum Answer {
    /// Reply now with this many data bytes.
    Now(usize),
    /// Parked until its log's device work is done (see `complete`).
    Parked,
}

/// What `Server::exit_verdict` says of a SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitVerdict {
    /// No log is live.
    Exit,
    /// Mirrors are live: exiting would freeze them.
    Refuse,
    /// Only logs of table loads that may have failed are left, too young to
    /// judge until then.
    AskAgainAt(Instant),
}

/// A log device step in flight this long is reported (1st, 2nd, 4th, ...
/// time it happens for that log).
pub const STALL_AFTER: Duration = Duration::from_secs(5);

pub struct Server {
    registry: Registry,
    /// Synchronous I/O for the rare paths without a live log (saved bits
    /// written at a POSTSUSPEND before the reconnect), and the mirrors.
    io: DeviceIo,
    engine: Engine,
    /// Where a parked request's reply is built.
    reply: Box<[u8; REPLY_BUF_LEN]>,
    /// Parked requests dropped because their log's FIFO was full.
    evicted: u64,
    /// A request was parked at an idle log: `complete` starts its work.
    starts_pending: bool,
    /// A log's load waits for an older log of its device to finish a step
    /// (see `take_over_device`).
    load_waits: bool,
    /// State files.
    state: StateDir,
    /// Where major:minor log devices get their short-lived device nodes: a
    /// directory apart from the state files, because /run is often mounted
    /// nodev and /dev (devtmpfs) never is.
    node_dir: OwnedFd,
    counters: Counters,
}

/// A uuid for log lines.
pub struct Uuid<'a>(pub &'a [u8]);

impl fmt::Display for Uuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(self.0) {
            Ok(s) => f.write_str(s),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

/// fmt::Write into a byte slice; fails instead of growing.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// True for 1, 2, 4, 8, ...: log the n-th occurrence of a repeated problem
/// only then, so a flood of bad frames cannot flood the log.
fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

fn one_region(data: &[u8]) -> Result<u64, Errno> {
    let bytes: [u8; 8] = data.try_into().map_err(|_| Errno::EINVAL)?;
    Ok(u64::from_ne_bytes(bytes))
}

fn regions(data: &[u8]) -> Result<impl Iterator<Item = u64> + '_, Errno> {
    if !data.len().is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    Ok(data
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

impl Server {
    /// `state_dir` and `node_dir` are the open --state-dir and --node-dir;
    /// `mirrors` finds and flushes the legs of the mirrors disk logs serve.
    ///
    /// Log devices are driven synchronously; `with_engine` changes that.
    pub fn new(
        limits: Limits,
        state_dir: OwnedFd,
        node_dir: OwnedFd,
        mirrors: Box<dyn Mirrors>,
    ) -> Self {
        Server {
            registry: Registry::new(limits.max_logs, limits.memory_budget),
            io: DeviceIo::new(mirrors),
            engine: Engine::synchronous(Self::io_slots(limits)),
            reply: Box::new([0; REPLY_BUF_LEN]),
            evicted: 0,
            starts_pending: false,
            load_waits: false,
            state: StateDir::new(state_dir),
            node_dir,
            counters: Counters::default(),
        }
    }

    /// I/O slots an engine for these limits needs: one per log the
    /// registry can hold (reconnects included).
    pub fn io_slots(limits: Limits) -> usize {
        limits.max_logs.saturating_mul(2)
    }

    /// Replaces the engine; call before any log exists.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The poll saw log device completions waiting (see Engine::note_ready).
    pub fn note_io_ready(&mut self) {
        self.engine.note_ready();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Handles one datagram from the kernel and returns the length of the
    /// reply written to `out`, or None when the datagram is dropped.
    pub fn handle(&mut self, datagram: &[u8], out: &mut [u8; REPLY_BUF_LEN]) -> Option<usize> {
        let req = match frame::parse_request(datagram) {
            Ok(req) => req,
            Err(rejection) => return self.reject(datagram, rejection, out),
        };
        self.counters.requests += 1;
        let result = self.dispatch(&req, &mut out[REPLY_DATA_OFFSET..]);
        let (error, len) = match result {
            Ok(Answer::Parked) => return None,
            Ok(Answer::Now(len)) => (0, len),
            Err(Errno::ESRCH) => {
                self.counters.error_replies += 1;
                // The kernel sets its reply-buffer size to the data_size of
                // any reply, errors included, and its reconnect path then
                // resends the request with that size: an -ESRCH with no
                // data would make the resend fail with -ENOSPC. So the
                // -ESRCH carries (zeroed) data the size of the buffer the
                // kernel gave, which leaves that size as it was.
                let len = esrch_reply_len(req.request_type_field);
                out[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + len].fill(0);
                (-(Errno::ESRCH as i32), len)
            }
            Err(Errno::EAGAIN) => {
                self.counters.error_replies += 1;
                // "Try again at once" as a bare acknowledgement: for a full
                // reply the kernel (fill_pkg) takes its data size, 0, as the
                // caller's reply capacity, and the retried request's reply
                // would no longer fit (a CTR's device name: -ENOSPC); for
                // an acknowledgement carrying EAGAIN it keeps the capacity.
                return Some(frame::emit_ack(out, req.cn_seq, Errno::EAGAIN as i32));
            }
            Err(e) => {
                self.counters.error_replies += 1;
                (-(e as i32), 0)
            }
        };
        Some(frame::emit_reply(out, req.header, req.cn_seq, error, len))
    }

    fn reject(
        &mut self,
        datagram: &[u8],
        rejection: Rejection,
        out: &mut [u8; REPLY_BUF_LEN],
    ) -> Option<usize> {
        match rejection {
            Rejection::Drop(reason) => {
                self.drop_datagram(reason);
                None
            }
            Rejection::Ack { reason, seq, errno } => {
                self.counters.acked_malformed += 1;
                if worth_logging(self.counters.acked_malformed) {
                    log::warn!(
                        "malformed request seq {seq} ({reason}): answered error {errno}; {} so far",
                        self.counters.acked_malformed
                    );
                }
                Some(frame::emit_ack(out, seq, errno))
            }
            Rejection::Reply {
                reason,
                cn_seq,
                errno,
            } => {
                self.counters.acked_malformed += 1;
                if worth_logging(self.counters.acked_malformed) {
                    log::warn!(
                        "malformed request seq {cn_seq} ({reason}): answered error -{errno}; {} so far",
                        self.counters.acked_malformed
                    );
                }
                let header = &datagram[REQUEST_OFFSET..REPLY_DATA_OFFSET];
                Some(frame::emit_reply(out, header, cn_seq, -errno, 0))
            }
        }
    }

    fn dispatch(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<Answer, Errno> {
        let Some(kind) = RequestType::from_field(req.request_type_field) else {
            log::warn!(
                "log {}: unknown request type {}: answered -EINVAL",
                Uuid(req.uuid),
                req.request_type_field
            );
            return Err(Errno::EINVAL);
        };
        if kind == RequestType::Ctr {
            return self.construct(req, out).map(Answer::Now);
        }
        let Some(index) = self.registry.find(req.uuid, req.luid) else {
            if kind == RequestType::Postsuspend && req.data.is_empty() {
                // A log a previous daemon served, suspended before the
                // kernel reconnected it: its disk image gets the saved bits
                // (clears the dead daemon had deferred included).
                if let Some(answer) = self.write_back_saved(req) {
                    return Ok(answer);
                }
            }
            if kind == RequestType::Dtr {
                // Already gone (a resent DTR), or never reconnected after a
                // restart: only a saved state file may be left to delete.
                self.state.remove(req.uuid, req.luid);
                return Ok(Answer::Now(0));
            }
            if matches!(
                kind,
                RequestType::Presuspend | RequestType::Postsuspend | RequestType::Resume
            ) {
                // The kernel sends these without its reconnect path: -ESRCH
                // would only fail the suspend or resume. A log not yet
                // reconnected has nothing to suspend; its next request gets
                // -ESRCH and brings it back.
                log::debug!(
                    "{} for a log not reconnected yet ({}/{}): nothing to do",
                    kind.name(),
                    Uuid(req.uuid),
                    req.luid
                );
                return Ok(Answer::Now(0));
            }
            log::warn!(
                "{} for unknown log {}/{}: answered -ESRCH so the kernel reconnects it",
                kind.name(),
                Uuid(req.uuid),
                req.luid
            );
            return Err(Errno::ESRCH);
        };
        if kind == RequestType::Dtr {
            let entry = self.registry.get(index);
            if entry.busy() || entry.log.needs_io(Work::WriteBack) {
                // Destroyed once its deferred clears are written.
                return Ok(self.park(index, kind, req));
            }
            self.destroy(index, Ok(()));
            return Ok(Answer::Now(0));
        }
        let result = self.operate(kind, index, req, out);
        if let Err(e) = result
            && (e != Errno::EIO || worth_logging(self.counters.error_replies + 1))
        {
            // A failing log device is logged by the log itself; these lines
            // only thin out with it.
            log::warn!(
                "log {}: {} failed: {}",
                Uuid(req.uuid),
                kind.name(),
                e.desc()
            );
        }
        result
    }

    /// Removes a log after its DTR; `written` says how its deferred clears
    /// went.
    fn destroy(&mut self, index: usize, written: Result<(), Errno>) {
        let entry = self.remove_entry(index);
        if let Err(e) = written {
            log::warn!(
                "log {}: deferred clears not written at DTR: {}",
                Uuid(&entry.uuid),
                e.desc()
            );
        }
        self.state.remove(&entry.uuid, entry.luid);
        log::info!("log {} destroyed", Uuid(&entry.uuid));
    }

    /// Takes a log out of the registry and gives its I/O slot back.
    fn remove_entry(&mut self, index: usize) -> Entry {
        let entry = self.registry.remove(index);
        if let Some(slot) = entry.slot {
            self.engine.release_slot(slot);
        }
        entry
    }

    /// Answers at once a request whose work needs no device I/O and finds
    /// its log idle; parks any other.
    fn device_work(
        &mut self,
        index: usize,
        kind: RequestType,
        work: Work,
        req: &Request<'_>,
    ) -> Result<Answer, Errno> {
        let entry = self.registry.get_mut(index);
        if !entry.busy() && !entry.log.needs_io(work) {
            // No step will be taken: nothing waits on a device.
            entry.log.run(work, &mut self.io)?;
            return Ok(Answer::Now(0));
        }
        Ok(self.park(index, kind, req))
    }

    /// Queues a request behind its log's device work and starts the work
    /// if the log was idle. With the FIFO full, the oldest request not yet
    /// started is dropped unanswered: the kernel resends any request after
    /// 15 s (DM_ULOG_RETRY_TIMEOUT), so a request that old was resent
    /// already and nobody waits for its reply. Answering -EAGAIN instead
    /// would make dm_consult_userspace resend at once, in a busy loop for
    /// as long as the device hangs.
    fn park(&mut self, index: usize, kind: RequestType, req: &Request<'_>) -> Answer {
        let parked = Parked::new(kind, req);
        let entry = self.registry.get_mut(index);
        if entry.parked.is_full() {
            let started = if entry.working == Some(Owner::Head) {
                entry.parked.pop_front()
            } else {
                None
            };
            let dropped = entry.parked.pop_front();
            if let Some(head) = started {
                let _ = entry.parked.push_front(head);
            }
            self.evicted += 1;
            if worth_logging(self.evicted)
                && let Some(dropped) = dropped
            {
                log::warn!(
                    "log {}: {PARKED_PER_LOG} requests wait for its log device; the oldest \
                     waiting {} is dropped unanswered (the kernel resent it after 15 s \
                     already); {} dropped so far",
                    Uuid(req.uuid),
                    dropped.kind.name(),
                    self.evicted
                );
            }
        }
        let entry = self.registry.get_mut(index);
        let _ = entry.parked.push_back(parked);
        // Started by the next `complete`, which has somewhere to send a
        // reply that needs no step.
        self.starts_pending = true;
        Answer::Parked
    }

    /// Moves a log's device work on: starts the first parked request's
    /// work when the log is idle, submits the next step, and answers the
    /// request whose work finished (through `emit`). Stops when a step is
    /// in flight or nothing is left.
    fn advance(&mut self, index: usize, emit: &mut dyn FnMut(&[u8])) {
        loop {
            let entry = self.registry.get_mut(index);
            let Some(slot) = entry.slot else {
                return;
            };
            if self.engine.in_flight(slot).is_some() {
                return;
            }
            if entry.working.is_none() {
                let Some(head) = entry.parked.front() else {
                    return;
                };
                let work = head.work();
                if entry.log.starts_load(work) && !self.take_over_device(index) {
                    // Looked at again after the next completion.
                    self.load_waits = true;
                    return;
                }
                let entry = self.registry.get_mut(index);
                entry.log.begin(work);
                entry.working = Some(Owner::Head);
            }
            let entry = self.registry.get_mut(index);
            let Some(buf) = self.engine.buf(slot) else {
                return;
            };
            match entry.log.next_step(buf) {
                Next::Step(step) => {
                    if let Some(d) = entry.log.disk() {
                        let mirrors = &mut *self.io.mirrors;
                        self.engine
                            .submit(slot, step, d.batch(), d.device(), d.legs(), mirrors);
                    }
                    return;
                }
                Next::Waiting => return,
                Next::Finished(result) => {
                    let owner = entry.working.take();
                    if owner == Some(Owner::Idle) {
                        if let Err(e) = result {
                            log::warn!(
                                "log {}: deferred write failed: {}",
                                Uuid(&entry.uuid),
                                e.desc()
                            );
                        }
                        continue;
                    }
                    let Some(parked) = entry.parked.pop_front() else {
                        continue;
                    };
                    let result = if entry.transient {
                        Self::note_saved_write_back(&entry.uuid, result);
                        // Best effort: the device keeps what the previous
                        // daemon left, which is safe.
                        Ok(())
                    } else {
                        result
                    };
                    if let Err(e) = result
                        && (e != Errno::EIO || worth_logging(self.counters.error_replies + 1))
                    {
                        log::warn!(
                            "log {}: {} failed: {}",
                            Uuid(&entry.uuid),
                            parked.kind.name(),
                            e.desc()
                        );
                    }
                    if result.is_err() {
                        self.counters.error_replies += 1;
                    }
                    let error = result.err().map_or(0, |e| -(e as i32));
                    let n = frame::emit_reply(
                        &mut self.reply[..],
                        &parked.header(&entry.uuid),
                        parked.cn_seq,
                        error,
                        0,
                    );
                    if parked.kind == RequestType::Dtr {
                        // Requests after a DTR (none in practice) die with it.
                        self.destroy(index, result);
                        emit(&self.reply[..n]);
                        return;
                    }
                    if entry.transient && entry.parked.is_empty() {
                        // Written back; the kernel reconnects the log from
                        // its state file if it uses it again.
                        self.remove_entry(index);
                        emit(&self.reply[..n]);
                        return;
                    }
                    emit(&self.reply[..n]);
                }
            }
        }
    }

    /// Takes the completed log device steps and answers the requests whose
    /// work they finished, through `emit`.
    pub fn complete(&mut self, emit: &mut dyn FnMut(&[u8])) {
        self.engine.poll();
        loop {
            if std::mem::take(&mut self.starts_pending) {
                self.start_parked(emit);
            }
            let Some((slot, result)) = self.engine.next_completion() else {
                return;
            };
            if std::mem::take(&mut self.load_waits) {
                // A load waited for another log's step; this may be it.
                self.starts_pending = true;
            }
            let Some(index) = self.registry.find_slot(slot) else {
                continue;
            };
            let entry = self.registry.get_mut(index);
            if std::mem::take(&mut entry.stall_noted) && worth_logging(entry.stalls) {
                log::warn!(
                    "log {}: its log device answered again ({})",
                    Uuid(&entry.uuid),
                    if result.is_ok() { "done" } else { "failed" }
                );
            }
            let Some(buf) = self.engine.buf(slot) else {
                continue;
            };
            entry.log.step_done(buf, result);
            self.persist_flags(index);
            self.advance(index, emit);
        }
    }

    /// Starts the work of the first parked request of every idle log.
    fn start_parked(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let mut index = 0;
        while index < self.registry.len() {
            let len = self.registry.len();
            let entry = self.registry.get(index);
            if entry.working.is_none() && !entry.parked.is_empty() {
                self.advance(index, emit);
            }
            // A DTR that finished removed its log: this index now holds
            // another one.
            if self.registry.len() == len {
                index += 1;
            }
        }
    }

    /// Before log `index` reads or rewrites its device: every older log of
    /// that device, suspended by a table reload, stops writing it
    /// (`DiskStore::supersede`). False while one of them has a step in
    /// flight, which must land before the read.
    fn take_over_device(&mut self, index: usize) -> bool {
        for other in 0..self.registry.len() {
            let (mine, theirs) = (self.registry.get(index), self.registry.get(other));
            let shared = match (mine.log.disk(), theirs.log.disk()) {
                (Some(a), Some(b)) => {
                    other != index && !b.is_superseded() && a.device().same_device(b.device())
                }
                _ => false,
            };
            if !shared {
                continue;
            }
            if !theirs.log.is_suspended() {
                log::error!(
                    "log {}: its log device is also that of the live log {}: two mirrors must \
                     not share a log device, and neither log's bits can be trusted",
                    Uuid(&mine.uuid),
                    Uuid(&theirs.uuid)
                );
                continue;
            }
            if theirs
                .slot
                .is_some_and(|slot| self.engine.in_flight(slot).is_some())
            {
                return false;
            }
            let theirs = self.registry.get_mut(other);
            theirs.log.supersede();
            log::info!(
                "log {} luid {}: a newer log loads its device; it writes nothing more to it",
                Uuid(&theirs.uuid),
                theirs.luid
            );
            self.persist_flags(other);
        }
        true
    }

    /// Keeps a disk log's sticky conditions in its state file when they
    /// change.
    fn persist_flags(&mut self, index: usize) {
        let entry = self.registry.get_mut(index);
        let flags = entry.log.flags();
        if flags != entry.saved_flags {
            entry.saved_flags = flags;
            self.state.save_flags(&entry.uuid, entry.luid, flags);
        }
    }

    /// Logs how writing a restarted daemon's saved bits went.
    fn note_saved_write_back(uuid: &[u8], result: Result<(), Errno>) {
        match result {
            Ok(()) => log::info!(
                "log {}: not reconnected before its suspend; saved bits written to its device",
                Uuid(uuid)
            ),
            Err(e) => log::warn!(
                "log {}: writing its saved bits at suspend failed ({}); its device keeps what \
                 the previous daemon wrote",
                Uuid(uuid),
                e.desc()
            ),
        }
    }

    /// True when a log device step is in flight.
    pub fn io_in_flight(&self) -> bool {
        self.engine.any_in_flight()
    }

    /// Reports steps in flight for longer than STALL_AFTER, the 1st, 2nd,
    /// 4th, ... time per log.
    pub fn check_stalls(&mut self) {
        for index in 0..self.registry.len() {
            let entry = self.registry.get_mut(index);
            let Some(slot) = entry.slot else {
                continue;
            };
            let Some((step, count, started)) = self.engine.in_flight(slot) else {
                continue;
            };
            let age = started.elapsed();
            if age < STALL_AFTER || entry.stall_noted {
                continue;
            }
            entry.stall_noted = true;
            entry.stalls += 1;
            if worth_logging(entry.stalls) {
                let (major, minor) = entry
                    .log
                    .disk()
                    .map_or((0, 0), |d| (d.device().major(), d.device().minor()));
                log::warn!(
                    "log {}: {} on log device {major}:{minor} has not completed after {:.1} s \
                     ({count} I/O in flight, {} requests waiting); its mirror waits for it, \
                     other logs are served; check the device (dmsetup info, multipath -ll, \
                     dmesg); {} stalls so far",
                    Uuid(&entry.uuid),
                    step_name(step),
                    age.as_secs_f64(),
                    entry.parked.len(),
                    entry.stalls
                );
            }
        }
    }

    /// Every request but CTR and DTR, on a live log.
    fn operate(
        &mut self,
        kind: RequestType,
        index: usize,
        req: &Request<'_>,
        out: &mut [u8],
    ) -> Result<Answer, Errno> {
        match kind {
            RequestType::Postsuspend | RequestType::Resume => {
                if !req.data.is_empty() {
                    return Err(Errno::EINVAL);
                }
            }
            RequestType::Flush => {
                let log = &self.registry.get(index).log;
                for r in regions(req.data)? {
                    if !log.has_region(r) {
                        return Err(Errno::EINVAL);
                    }
                }
            }
            _ => return self.operate_now(kind, index, req, out).map(Answer::Now),
        }
        if kind == RequestType::Postsuspend {
            self.registry.get_mut(index).last_request = Instant::now();
            return self.device_work(index, kind, Work::Postsuspend, req);
        }
        // FLUSH and RESUME: legs looked up, an integrated FLUSH's marks
        // taken, below.
        self.operate_now(kind, index, req, out)?;
        let work = if kind == RequestType::Flush {
            Work::Flush
        } else {
            Work::Resume
        };
        self.device_work(index, kind, work, req)
    }

    /// The part of a request answered from memory.
    fn operate_now(
        &mut self,
        kind: RequestType,
        index: usize,
        req: &Request<'_>,
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        let data = req.data;
        let disk_loaded = self.registry.get(index).log.disk().map(|d| d.is_loaded());
        if kind == RequestType::Resume && disk_loaded.is_some()
            || kind == RequestType::Flush && disk_loaded == Some(false)
        {
            // A reload can change the legs: look them up at every RESUME,
            // and before a FLUSH that loads a reconnected log first.
            let legs = self.find_legs(req.uuid);
            if let Some(legs) = &legs {
                self.state.save_legs(req.uuid, req.luid, legs);
            }
            self.registry.get_mut(index).log.set_legs(legs);
        }
        let entry = self.registry.get_mut(index);
        if !entry.resumed {
            // Only a log never resumed can be a failed load's leftover, so
            // only its idle time matters (no clock read for the others).
            entry.last_request = Instant::now();
            entry.resumed = kind == RequestType::Resume;
        }
        if !matches!(kind, RequestType::Presuspend | RequestType::Postsuspend) {
            // The kernel uses the log again: it is live, not only written
            // back (see `write_back_saved`).
            entry.transient = false;
        }
        // The sync bits are stale while a RESUME's read waits or runs.
        let settling =
            entry.log.loading() || entry.parked.iter().any(|p| p.kind == RequestType::Resume);
        let log = &mut entry.log;
        let expect_empty = |data: &[u8]| {
            if data.is_empty() {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            }
        };
        let existing = |log: &DirtyLog, region: u64| {
            if log.has_region(region) {
                Ok(region)
            } else {
                Err(Errno::EINVAL)
            }
        };
        match kind {
            // Handled by `dispatch` before a log is looked up.
            RequestType::Ctr | RequestType::Dtr => Err(Errno::EINVAL),
            RequestType::Presuspend => {
                expect_empty(data)?;
                Ok(0)
            }
            // Device work: see `operate`. POSTSUSPEND writes out deferred
            // clears so the device is current while the mirror is
            // suspended; RESUME reads the device.
            RequestType::Postsuspend | RequestType::Resume => {
                expect_empty(data)?;
                Ok(0)
            }
            RequestType::GetRegionSize => {
                expect_empty(data)?;
                put_u64(out, 0, u64::from(log.region_size()));
                Ok(8)
            }
            RequestType::IsClean => {
                let r = existing(log, one_region(data)?)?;
                put_u64(out, 0, u64::from(log.is_clean(r)));
                Ok(8)
            }
            RequestType::InSync => {
                let r = existing(log, one_region(data)?)?;
                put_u64(out, 0, u64::from(log.in_sync(r)));
                Ok(8)
            }
            RequestType::MarkRegion | RequestType::ClearRegion | RequestType::Flush => {
                // Check every region before touching any, so a bad request
                // changes nothing.
                for r in regions(data)? {
                    existing(log, r)?;
                }
                if kind == RequestType::ClearRegion {
                    regions(data)?.for_each(|r| log.clear(r));
                } else {
                    regions(data)?.for_each(|r| log.mark(r));
                }
                Ok(0)
            }
            RequestType::GetResyncWork => {
                expect_empty(data)?;
                let work = log.get_resync_work();
                put_u64(out, 0, u64::from(work.is_some()));
                put_u64(out, 8, work.unwrap_or(0));
                Ok(16)
            }
            RequestType::SetRegionSync => {
                if data.len() != 16 {
                    return Err(Errno::EINVAL);
                }
                let r = existing(log, one_region(&data[..8])?)?;
                let in_sync = one_region(&data[8..])? != 0;
                log.set_region_sync(r, in_sync);
                Ok(0)
            }
            RequestType::GetSyncCount => {
                expect_empty(data)?;
                put_u64(out, 0, log.reported_sync_count(settling));
                Ok(8)
            }
            RequestType::IsRemoteRecovering => {
                existing(log, one_region(data)?)?;
                // One node: nothing recovers elsewhere (see in_sync_hint).
                put_u64(out, 0, 0);
                put_u64(out, 8, log.in_sync_hint(settling));
                Ok(16)
            }
            RequestType::StatusInfo | RequestType::StatusTable => {
                let mut w = SliceWriter {
                    buf: &mut out[..frame::MAX_REPLY_DATA - 1],
                    len: 0,
                };
                let written = if kind == RequestType::StatusInfo {
                    log.status_info(&mut w)
                } else {
                    log.status_table(&mut w)
                };
                written.map_err(|_| Errno::ENOSPC)?;
                let len = w.len;
                // NUL-terminated: the text ends the mirror's status line.
                out[len] = 0;
                Ok(len + 1)
            }
        }
    }

    /// CTR: a new log, or a log this daemon already holds (the kernel
    /// reconnecting after a lost request), which is kept as it is when the
    /// constructor text is the same.
    fn construct(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<usize, Errno> {
        // A reconnecting kernel sends the string with its NUL and has no room
        // for reply data; the first CTR of a table has no NUL.
        let (text, reconnect) = match req.data.split_last() {
            Some((0, text)) => (text, true),
            _ => (req.data, false),
        };
        let uuid = Uuid(req.uuid);
        if let Some(index) = self.registry.find(req.uuid, req.luid) {
            let entry = self.registry.get(index);
            if entry.ctr_hash == ctr_hash(text) {
                log::info!("log {uuid}: CTR for a live log; kept as it is");
                self.registry.get_mut(index).transient = false;
                let entry = self.registry.get(index);
                return Ok(if reconnect {
                    0
                } else {
                    device_reply(&entry.log, text, out)
                });
            }
            // The luid is the address of the kernel's log context. A live
            // log whose luid comes back with another table was freed by the
            // kernel without a DTR: userspace_ctr does that when the table
            // load fails after the CTR (dm_get_device refused the device).
            // That log is gone; never answer from it, never write its device.
            if entry.busy() {
                // Its device work must end before its buffer is reused;
                // the kernel resends at once, and the work is short (this
                // log never went live).
                log::info!("log {uuid}: a failed load's log still has device work; CTR deferred");
                return Err(Errno::EAGAIN);
            }
            log::warn!(
                "log {uuid}: a new table reuses the id of a log whose table load failed after \
                 its CTR; the old log ({}) is dropped without touching its device",
                entry.log.log_type().name()
            );
            self.remove_entry(index);
            self.state.remove(req.uuid, req.luid);
        }
        let args = params::parse(text).map_err(|e| {
            log::error!(
                "log {uuid}: table refused: {e} (constructor string {:?})",
                String::from_utf8_lossy(text)
            );
            Errno::EINVAL
        })?;
        if req.uuid.is_empty() {
            log::error!("table refused: the log has an empty uuid");
            return Err(Errno::EINVAL);
        }
        let id = Identity {
            uuid: req.uuid,
            luid: req.luid,
            ctr: text,
            region_count: args.region_count,
        };
        // A log the kernel reconnects keeps the room it had: refusing it
        // (a lower --max-logs now) would make the kernel retry forever.
        let saved = if reconnect { self.saved(&id) } else { None };
        if saved.is_none() {
            self.check_room(
                &uuid,
                DirtyLog::heap_bytes_for(args.region_count, args.device.is_some()),
            )?;
        }
        let store = match args.device {
            Some(spec) => Some(self.open_store(&uuid, spec, &args, saved.as_ref())?),
            None => None,
        };
        let saved_flags = saved.as_ref().map_or(0, |s| s.flags);
        let (clean, sync, origin) = match saved {
            Some(s) => (s.clean, s.sync, Origin::Restored),
            None => {
                let device = store.as_ref().map_or(0, |s| s.device().rdev());
                self.fresh_bits(&id, reconnect, device)?
            }
        };
        let slot = match store {
            Some(_) => Some(self.engine.open_slot().ok_or_else(|| {
                log::error!("log {uuid}: refused with -ENOMEM: every log device I/O slot is taken");
                Errno::ENOMEM
            })?),
            None => None,
        };
        let mut log = DirtyLog::new(&args, clean, sync, store, origin);
        log.restore_flags(saved_flags);
        let mut entry = Entry::new(req.uuid, req.luid, ctr_hash(text), log, slot);
        entry.saved_flags = saved_flags;
        let reply = if reconnect {
            0
        } else {
            device_reply(&entry.log, text, out)
        };
        log::info!(
            "log {uuid} created{}: {} with {} regions of {} sectors{}",
            match origin {
                Origin::New => "",
                Origin::Restored => " on reconnect from its saved state",
                Origin::ReconnectUnknown => " on reconnect with no saved state",
            },
            args.log_type.name(),
            args.region_count,
            args.region_size,
            match args.device {
                Some(_) => " on a log device",
                None => "",
            }
        );
        if let Err(no_room) = self.registry.insert(entry, origin == Origin::Restored) {
            if let Some(slot) = slot {
                self.engine.release_slot(slot);
            }
            log_no_room(&uuid, no_room);
            self.state.remove(req.uuid, req.luid);
            return Err(Errno::ENOMEM);
        }
        Ok(reply)
    }

    /// Checks that a new log needing `bytes` fits, after dropping the logs
    /// of failed table loads if it does not.
    fn check_room(&mut self, uuid: &Uuid<'_>, bytes: usize) -> Result<(), Errno> {
        let mut room = self.registry.check_room(bytes);
        if room.is_err() && self.reap_orphans() > 0 {
            room = self.registry.check_room(bytes);
        }
        room.map_err(|no_room| {
            log_no_room(uuid, no_room);
            Errno::ENOMEM
        })
    }

    /// The saved state of a log the kernel reconnects, if a previous daemon
    /// left one for exactly this log.
    fn saved(&mut self, id: &Identity<'_>) -> Option<Saved> {
        match self.state.restore(id) {
            Ok(saved) => saved,
            Err(e) => {
                log::warn!(
                    "log {}: cannot read its saved state: {}",
                    Uuid(id.uuid),
                    e.desc()
                );
                None
            }
        }
    }

    /// The bitmaps of a log with no saved state: a fresh state file, else
    /// (when the state directory fails) plain memory. `device` is the log
    /// device's dev_t, kept in the state file.
    fn fresh_bits(
        &mut self,
        id: &Identity<'_>,
        reconnect: bool,
        device: u64,
    ) -> Result<(Bitmap, Bitmap, Origin), Errno> {
        let uuid = Uuid(id.uuid);
        let origin = if reconnect {
            Origin::ReconnectUnknown
        } else {
            Origin::New
        };
        match self.state.create(id, device) {
            Ok((clean, sync)) => Ok((clean, sync, origin)),
            Err(e) => {
                log::warn!(
                    "log {uuid}: cannot create its state file ({}); its bits will not survive \
                     a restart of dm-ulogd (check --state-dir)",
                    e.desc()
                );
                let out_of_memory = |_| {
                    log::error!("log {uuid}: out of memory for {} regions", id.region_count);
                    Errno::ENOMEM
                };
                let clean = Bitmap::try_new(id.region_count).map_err(out_of_memory)?;
                let sync = Bitmap::try_new(id.region_count).map_err(out_of_memory)?;
                Ok((clean, sync, origin))
            }
        }
    }

    /// Opens a disk log's device. A log restored from saved state opens the
    /// device its previous daemon wrote, which is the one the kernel holds,
    /// whatever `spec` resolves to now.
    fn open_store(
        &mut self,
        uuid: &Uuid<'_>,
        spec: &str,
        args: &LogArgs<'_>,
        saved: Option<&Saved>,
    ) -> Result<DiskStore, Errno> {
        let held = saved.map_or(0, |s| s.device);
        let device = if held != 0 {
            let number = (stat::major(held), stat::minor(held));
            let device = self.open_device(uuid, &number_spec(number), true)?;
            if let Ok(now) = LogDevice::open(spec, self.node_dir.as_fd())
                && now.rdev() != held
            {
                log::warn!(
                    "log {uuid}: {spec:?} now names device {}:{}, but the kernel holds {}:{}, \
                     which this log wrote before the restart: serving {}:{}",
                    now.major(),
                    now.minor(),
                    number.0,
                    number.1,
                    number.0,
                    number.1
                );
            }
            device
        } else {
            self.open_device(uuid, spec, false)?
        };
        let have = device.size();
        DiskStore::new(device, args.region_count).map_err(|need| {
            log::error!(
                "log {uuid}: table refused: log device {spec:?} is too small: {have} bytes, \
                 {need} needed for {} regions",
                args.region_count
            );
            Errno::EINVAL
        })
    }

    fn open_device(&self, uuid: &Uuid<'_>, spec: &str, saved: bool) -> Result<LogDevice, Errno> {
        LogDevice::open(spec, self.node_dir.as_fd()).map_err(|e| {
            log::error!(
                "log {uuid}: table refused: {}log device {spec:?}: {e}",
                if saved { "the saved " } else { "" }
            );
            e.errno
        })
    }

    /// The legs of the mirror that uses log `uuid`, for its disk log's leg
    /// flushes; None (logged) when they cannot be found.
    fn find_legs(&mut self, uuid: &[u8]) -> Option<LegSet> {
        match self.io.mirrors.legs(uuid) {
            Ok(legs) => Some(legs),
            Err(e) => {
                log::error!(
                    "log {}: cannot find its mirror's legs ({e}); nothing will be recorded clean \
                     on its log device, so a crash resyncs the whole mirror",
                    Uuid(uuid)
                );
                None
            }
        }
    }

    /// Drops the logs of table loads that failed after their CTR: logs
    /// never resumed, idle for ORPHAN_AGE, of a uuid that fewer mirror
    /// tables (live or inactive) name than live logs have. An inactive
    /// table waiting for its resume names its log, so it is kept. Returns
    /// how many were dropped.
    fn reap_orphans(&mut self) -> usize {
        let mut dropped = 0;
        let mut index = 0;
        while index < self.registry.len() {
            let entry = self.registry.get(index);
            if entry.resumed || entry.busy() || entry.last_request.elapsed() < ORPHAN_AGE {
                index += 1;
                continue;
            }
            let uuid = entry.uuid.clone();
            let live = self.registry.iter().filter(|e| e.uuid == uuid).count();
            match self.io.mirrors.references(&uuid) {
                Ok(tables) if tables < live => {
                    let old = self.remove_entry(index);
                    self.state.remove(&old.uuid, old.luid);
                    log::warn!(
                        "log {}: dropped: its table load failed after the CTR (no table names \
                         it, and it was never resumed)",
                        Uuid(&old.uuid)
                    );
                    dropped += 1;
                }
                Ok(_) => index += 1,
                Err(e) => {
                    log::warn!("cannot look for logs of failed table loads: {e}");
                    return dropped;
                }
            }
        }
        dropped
    }

    /// Counts and (rate-limited) logs a datagram dropped before parsing.
    pub fn drop_datagram(&mut self, reason: &'static str) {
        self.counters.dropped += 1;
        if worth_logging(self.counters.dropped) {
            log::warn!(
                "dropped a datagram ({reason}); {} dropped so far",
                self.counters.dropped
            );
        }
    }

    /// Writes a saved disk log's bits to its device, for a log the kernel
    /// suspends before reconnecting it (a reload after a restart: the old
    /// table is suspended before the new one resumes and destroyed after
    /// it, so POSTSUSPEND is the last moment its image is the newest; a
    /// DTR writes nothing). The log comes back from its state file as a
    /// transient entry whose POSTSUSPEND is parked behind the work (the
    /// legs flushed, since the saved bits may record regions clean, then
    /// the image written) like any other device work, so a hung device
    /// holds up only this mirror's suspend. Never over a device a newer
    /// log has loaded. None when there is nothing to write; failing leaves
    /// the device as the previous daemon left it, which is safe.
    fn write_back_saved(&mut self, req: &Request<'_>) -> Option<Answer> {
        let (uuid, luid) = (req.uuid, req.luid);
        let ctr = self.state.saved_ctr(uuid, luid)?;
        let args = params::parse(&ctr).ok()?;
        let path = args.device?;
        let id = Identity {
            uuid,
            luid,
            ctr: &ctr,
            region_count: args.region_count,
        };
        let saved = self.saved(&id)?;
        if saved.flags & flags::SUPERSEDED != 0 {
            return None;
        }
        // The device the previous daemon wrote, by number; regular files
        // (tests) by their path.
        let number = (stat::major(saved.device), stat::minor(saved.device));
        let opened = if saved.device == 0 {
            LogDevice::open(path, self.node_dir.as_fd())
        } else {
            LogDevice::open(&number_spec(number), self.node_dir.as_fd())
        };
        let device = opened.ok()?;
        if let Some(live) = self.registry.iter().find(|e| {
            e.log.disk().is_some_and(|d| {
                d.is_loaded() && !d.is_superseded() && d.device().same_device(&device)
            })
        }) {
            log::info!(
                "log {}: not reconnected before its suspend; its saved bits are not written, \
                 since log {} serves its device now",
                Uuid(uuid),
                Uuid(&live.uuid)
            );
            return None;
        }
        let store = DiskStore::new(device, args.region_count).ok()?;
        // The legs recorded at the log's last RESUME: a removal takes the
        // mirror out of the table list before it suspends it.
        let Some(legs) = saved.legs.or_else(|| self.io.mirrors.legs(uuid).ok()) else {
            log::info!(
                "log {}: not reconnected before its suspend, and its mirror's legs are unknown: \
                 its device keeps what the previous daemon wrote",
                Uuid(uuid)
            );
            return None;
        };
        let slot = self.engine.open_slot()?;
        let mut log = DirtyLog::new(
            &args,
            saved.clean,
            saved.sync,
            Some(store),
            Origin::Restored,
        );
        log.set_legs(Some(legs));
        log.restore_flags(saved.flags);
        let mut entry = Entry::new(uuid, luid, ctr_hash(&ctr), log, Some(slot));
        entry.saved_flags = saved.flags;
        entry.resumed = true;
        entry.transient = true;
        if self.registry.insert(entry, true).is_err() {
            self.engine.release_slot(slot);
            return None;
        }
        let index = self.registry.len() - 1;
        Some(self.park(index, RequestType::Postsuspend, req))
    }

    /// Whether the daemon may exit now without freezing a mirror, after
    /// dropping the logs of failed table loads.
    pub fn exit_verdict(&mut self) -> ExitVerdict {
        if !self.registry.is_empty() {
            self.reap_orphans();
        }
        if self.registry.is_empty() {
            return ExitVerdict::Exit;
        }
        // Logs never resumed and too young to judge (a failed load's
        // leftover looks like a table waiting for its resume for
        // ORPHAN_AGE): ask again once the last of them is old enough.
        let mut judged_at: Option<Instant> = None;
        for e in self.registry.iter() {
            if e.resumed || e.busy() || e.last_request.elapsed() >= ORPHAN_AGE {
                return ExitVerdict::Refuse;
            }
            let at = e.last_request + ORPHAN_AGE;
            judged_at = Some(judged_at.map_or(at, |t| t.max(at)));
        }
        judged_at.map_or(ExitVerdict::Refuse, ExitVerdict::AskAgainAt)
    }

    /// True when some idle disk log deferred writes (see `write_back_all`).
    pub fn has_deferred_writes(&self) -> bool {
        self.registry
            .iter()
            .any(|e| !e.busy() && e.log.has_deferred_writes())
    }

    /// Starts writing what idle disk logs deferred; called when no request
    /// came for a while. Replies of requests parked meanwhile go to `emit`.
    pub fn write_back_all(&mut self, emit: &mut dyn FnMut(&[u8])) {
        for index in 0..self.registry.len() {
            let entry = self.registry.get_mut(index);
            if !entry.busy() && entry.log.has_deferred_writes() {
                entry.log.begin(Work::WriteBack);
                entry.working = Some(Owner::Idle);
                self.advance(index, emit);
            }
        }
        self.complete(emit);
    }

    /// Logs one line per live log: the SIGUSR1 summary.
    pub fn log_summary(&self) {
        let c = self.counters;
        log::info!(
            "{} live log(s), {} bytes of bitmaps; {} requests, {} error replies, {} dropped, {} malformed; \
             log device I/O {}",
            self.registry.len(),
            self.registry.used_bytes(),
            c.requests,
            c.error_replies,
            c.dropped,
            c.acked_malformed,
            if self.engine.is_async() {
                "asynchronous"
            } else {
                "synchronous"
            }
        );
        for e in self.registry.iter() {
            let log = &e.log;
            let mut status = heapless::String::<128>::new();
            let _ = log.status_info(&mut status);
            log::info!(
                "log {} luid {}: {}, {} regions of {} sectors, {} in sync, {} dirty, status \"{}\"",
                Uuid(&e.uuid),
                e.luid,
                log.log_type().name(),
                log.region_count(),
                log.region_size(),
                log.sync_count(),
                log.dirty_count(),
                status
            );
            if let Some(disk) = log.disk() {
                let io = disk.io_counts();
                let (in_flight, oldest) = e
                    .slot
                    .and_then(|slot| self.engine.in_flight(slot))
                    .map_or((0, 0.0), |(_, count, started)| {
                        (count, started.elapsed().as_secs_f64())
                    });
                log::info!(
                    "log {} luid {}: log device {}:{}: {} writes, {} cache flushes or FUA batches, {} leg \
                     flushes, {in_flight} I/O in flight (oldest {oldest:.1} s), {} requests \
                     waiting, {} stalls{}",
                    Uuid(&e.uuid),
                    e.luid,
                    disk.device().major(),
                    disk.device().minor(),
                    io.writes,
                    io.flushes,
                    io.leg_flushes,
                    e.parked.len(),
                    e.stalls,
                    if disk.flush_failed() {
                        " (legs could not be flushed: nothing is recorded clean)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
}

/// A step's name for log lines.
fn step_name(step: Step) -> &'static str {
    match step {
        Step::LegFlush => "a cache flush of the mirror's legs",
        Step::Write { spans, .. } if spans > 1 => "a batch of writes",
        Step::Write { .. } => "a write",
        Step::DeviceFlush => "a cache flush",
        Step::Read { .. } => "a read",
    }
}

/// A log never resumed and idle this long may be the leftover of a failed
/// table load (the kernel sends CTR and GET_REGION_SIZE, then fails or
/// stages the table within moments).
const ORPHAN_AGE: Duration = Duration::from_secs(5);

/// A digest of a constructor string: tells a retried table load with other
/// arguments from the kernel reconnecting the same log.
fn ctr_hash(text: &[u8]) -> u64 {
    fnv1a(FNV_BASES[0], text, 0)
}

/// "major:minor", the spec that opens a device by number.
fn number_spec(number: (u64, u64)) -> heapless::String<48> {
    let mut s = heapless::String::new();
    let _ = fmt::Write::write_fmt(&mut s, format_args!("{}:{}", number.0, number.1));
    s
}

fn log_no_room(uuid: &Uuid<'_>, no_room: NoRoom) {
    match no_room {
        NoRoom::TooManyLogs { max_logs } => log::error!(
            "log {uuid}: refused with -ENOMEM: {max_logs} logs are live already; raise --max-logs"
        ),
        NoRoom::OverBudget {
            needed,
            used,
            budget,
        } => log::error!(
            "log {uuid}: refused with -ENOMEM: its bitmaps need {needed} bytes, {used} of \
             {budget} are in use; raise --memory-budget"
        ),
    }
}

/// How much zeroed data an -ESRCH reply carries: the reply buffer the kernel
/// gives the request (PROTOCOL.md section 3). A status request gets what is
/// left of the status line, at least this much in practice (libdm's buffers
/// are kilobytes).
pub fn esrch_reply_len(request_type_field: u32) -> usize {
    match RequestType::from_field(request_type_field) {
        Some(
            RequestType::GetRegionSize
            | RequestType::IsClean
            | RequestType::InSync
            | RequestType::GetSyncCount,
        ) => 8,
        Some(RequestType::GetResyncWork | RequestType::IsRemoteRecovering) => 16,
        Some(RequestType::StatusInfo | RequestType::StatusTable) => 48,
        _ => 0,
    }
}

/// The kernel's reply buffer for a first CTR.
const DM_NAME_LEN: usize = 128;

/// The CTR reply of a disk log: the device the kernel must hold, as
/// "major:minor" (resolvable by the kernel without any path), NUL-terminated.
fn device_reply(log: &DirtyLog, text: &[u8], out: &mut [u8]) -> usize {
    let Some(d) = log.disk() else {
        return 0;
    };
    let dev = d.device();
    // The kernel gives a first CTR DM_NAME_LEN (128) bytes, NUL included.
    let mut w = SliceWriter {
        buf: &mut out[..DM_NAME_LEN - 1],
        len: 0,
    };
    let written = if dev.major() == 0 && dev.minor() == 0 {
        // A regular file (tests only): echo the device argument as given.
        let spec = params::parse(text)
            .ok()
            .and_then(|a| a.device)
            .unwrap_or_default();
        fmt::Write::write_str(&mut w, spec)
    } else {
        fmt::Write::write_fmt(&mut w, format_args!("{}:{}", dev.major(), dev.minor()))
    };
    if written.is_err() {
        return 0;
    }
    let len = w.len;
    out[len] = 0;
    len + 1
}

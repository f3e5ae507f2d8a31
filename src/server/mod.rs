//! The server: one kernel datagram in, one reply out (`handle`), over the
//! registry of live logs; this file holds the Server type and its front door.
//!
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
//!
//! One `impl Server` split by concern: `dispatch` (a request to its log
//! operation and reply), `construct` (CTR and restore from saved state),
//! `device_work` (the per-log FIFO of parked requests and the engine's
//! steps), `lifecycle` (DTR, orphans, exit, write-back), `summary` (SIGUSR1).

mod construct;
mod device_work;
mod dispatch;
mod lifecycle;
mod summary;

use core::fmt;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

use crate::engine::Engine;
use crate::log::disk::DeviceIo;
use crate::log::legs::Mirrors;
use crate::log::state::StateDir;
use crate::registry::Registry;
use crate::wire::frame::{self, REPLY_BUF_LEN, REPLY_DATA_OFFSET, REQUEST_OFFSET, Rejection};
use crate::wire::ulog::RequestType;

pub use lifecycle::ExitVerdict;

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

/// Logs request `kind` of log `uuid` failing with `e`, before its error
/// reply is counted in `error_replies`. A failing log device is logged by
/// the log itself; these lines only thin out with it.
fn warn_failed(uuid: &[u8], kind: RequestType, e: Errno, error_replies: u64) {
    if e != Errno::EIO || worth_logging(error_replies + 1) {
        log::warn!("log {}: {} failed: {}", Uuid(uuid), kind.name(), e.desc());
    }
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

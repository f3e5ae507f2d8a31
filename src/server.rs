//! Request -> log operation -> reply. Pure apart from log device I/O: no
//! sockets, no allocation on the request path (only a CTR allocates, within
//! the memory budget).

use core::fmt;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;

use crate::bitmap::Bitmap;
use crate::log::device::LogDevice;
use crate::log::disk::{DiskStore, IoBuf};
use crate::log::params::{self, LogArgs};
use crate::log::state::{Identity, StateDir};
use crate::log::{DirtyLog, Origin};
use crate::registry::{Entry, NoRoom, Registry};
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

pub struct Server {
    registry: Registry,
    io: IoBuf,
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
    /// `state_dir` and `node_dir` are the open --state-dir and --node-dir.
    pub fn new(limits: Limits, state_dir: OwnedFd, node_dir: OwnedFd) -> Self {
        Server {
            registry: Registry::new(limits.max_logs, limits.memory_budget),
            io: IoBuf::new(),
            state: StateDir::new(state_dir),
            node_dir,
            counters: Counters::default(),
        }
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
            Ok(len) => (0, len),
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

    fn dispatch(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<usize, Errno> {
        let Some(kind) = RequestType::from_field(req.request_type_field) else {
            log::warn!(
                "log {}: unknown request type {}: answered -EINVAL",
                Uuid(req.uuid),
                req.request_type_field
            );
            return Err(Errno::EINVAL);
        };
        if kind == RequestType::Ctr {
            return self.construct(req, out);
        }
        let Some(index) = self.registry.find(req.uuid, req.luid) else {
            if matches!(kind, RequestType::Postsuspend | RequestType::Dtr) {
                // A log a previous daemon served, torn down before the
                // kernel reconnected it: its disk image gets the saved bits
                // (clears the dead daemon had deferred included).
                self.write_back_saved(req.uuid, req.luid);
            }
            if kind == RequestType::Dtr {
                // Already gone (a resent DTR), or never reconnected after a
                // restart: only a saved state file may be left to delete.
                self.state.remove(req.uuid, req.luid);
                return Ok(0);
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
                return Ok(0);
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
            let mut entry = self.registry.remove(index);
            if let Err(e) = entry.log.write_back(&mut self.io) {
                log::warn!(
                    "log {}: deferred clears not written at DTR: {}",
                    Uuid(&entry.uuid),
                    e.desc()
                );
            }
            self.state.remove(&entry.uuid, entry.luid);
            log::info!("log {} destroyed", Uuid(&entry.uuid));
            return Ok(0);
        }
        let result = self.operate(kind, index, req.data, out);
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

    /// Every request but CTR and DTR, on a live log.
    fn operate(
        &mut self,
        kind: RequestType,
        index: usize,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        let log = &mut self.registry.get_mut(index).log;
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
            RequestType::Postsuspend => {
                expect_empty(data)?;
                // Write out deferred clears so the device is current while
                // the mirror is suspended.
                log.postsuspend(&mut self.io)?;
                Ok(0)
            }
            RequestType::Resume => {
                expect_empty(data)?;
                log.resume(&mut self.io)?;
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
                if kind == RequestType::Flush {
                    log.flush(&mut self.io)?;
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
                put_u64(out, 0, log.sync_count());
                Ok(8)
            }
            RequestType::IsRemoteRecovering => {
                existing(log, one_region(data)?)?;
                // One node: nothing recovers elsewhere. The hint is the first
                // region not in sync, never region_count before all are.
                put_u64(out, 0, 0);
                put_u64(out, 8, log.first_unsynced());
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
    /// reconnecting after a lost request), which is kept as it is.
    fn construct(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<usize, Errno> {
        // A reconnecting kernel sends the string with its NUL and has no room
        // for reply data; the first CTR of a table has no NUL.
        let (text, reconnect) = match req.data.split_last() {
            Some((0, text)) => (text, true),
            _ => (req.data, false),
        };
        let uuid = Uuid(req.uuid);
        if let Some(index) = self.registry.find(req.uuid, req.luid) {
            log::info!("log {uuid}: CTR for a live log; kept as it is");
            return Ok(if reconnect {
                0
            } else {
                device_reply(&self.registry.get(index).log, text, out)
            });
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
        if let Err(no_room) = self
            .registry
            .check_room(DirtyLog::heap_bytes_for(args.region_count))
        {
            log_no_room(&uuid, no_room);
            return Err(Errno::ENOMEM);
        }
        let store = match args.device {
            Some(spec) => Some(self.open_store(&uuid, spec, &args)?),
            None => None,
        };
        let id = Identity {
            uuid: req.uuid,
            luid: req.luid,
            ctr: text,
            region_count: args.region_count,
        };
        let (clean, sync, origin) = self.bits_for(&id, reconnect)?;
        let log = DirtyLog::new(&args, clean, sync, store, origin);
        let mut entry = Entry {
            uuid: heapless::Vec::new(),
            luid: req.luid,
            log,
        };
        // Fits: the wire view checked the uuid's length.
        let _ = entry.uuid.extend_from_slice(req.uuid);
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
        if let Err(no_room) = self.registry.insert(entry) {
            log_no_room(&uuid, no_room);
            self.state.remove(req.uuid, req.luid);
            return Err(Errno::ENOMEM);
        }
        Ok(reply)
    }

    /// The bitmaps of a new log: its saved state when the kernel reconnects
    /// a log a previous daemon served, else a fresh state file, else (when
    /// the state directory fails) plain memory.
    fn bits_for(
        &mut self,
        id: &Identity<'_>,
        reconnect: bool,
    ) -> Result<(Bitmap, Bitmap, Origin), Errno> {
        let uuid = Uuid(id.uuid);
        if reconnect {
            match self.state.restore(id) {
                Ok(Some((clean, sync))) => return Ok((clean, sync, Origin::Restored)),
                Ok(None) => {}
                Err(e) => log::warn!("log {uuid}: cannot read its saved state: {}", e.desc()),
            }
        }
        let origin = if reconnect {
            Origin::ReconnectUnknown
        } else {
            Origin::New
        };
        match self.state.create(id) {
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

    fn open_store(
        &mut self,
        uuid: &Uuid<'_>,
        spec: &str,
        args: &LogArgs<'_>,
    ) -> Result<DiskStore, Errno> {
        let device = LogDevice::open(spec, self.node_dir.as_fd()).map_err(|e| {
            log::error!("log {uuid}: table refused: log device {spec:?}: {e}");
            e.errno
        })?;
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
    /// suspends or destroys without reconnecting it. Best effort: failing
    /// leaves the device as the previous daemon left it, which is safe.
    fn write_back_saved(&mut self, uuid: &[u8], luid: u64) {
        let Some(ctr) = self.state.saved_ctr(uuid, luid) else {
            return;
        };
        let Ok(args) = params::parse(&ctr) else {
            return;
        };
        let Some(spec) = args.device else {
            return;
        };
        let id = Identity {
            uuid,
            luid,
            ctr: &ctr,
            region_count: args.region_count,
        };
        let Ok(Some((clean, sync))) = self.state.restore(&id) else {
            return;
        };
        let Ok(device) = LogDevice::open(spec, self.node_dir.as_fd()) else {
            return;
        };
        let Ok(store) = DiskStore::new(device, args.region_count) else {
            return;
        };
        let mut log = DirtyLog::new(&args, clean, sync, Some(store), Origin::Restored);
        match log.resume(&mut self.io) {
            Ok(()) => log::info!(
                "log {}: not reconnected before its teardown; saved bits written to its device",
                Uuid(uuid)
            ),
            Err(e) => log::warn!(
                "log {}: writing its saved bits at teardown failed: {}",
                Uuid(uuid),
                e.desc()
            ),
        }
    }

    /// True when some disk log deferred writes (see `write_back_all`).
    pub fn has_deferred_writes(&self) -> bool {
        self.registry.iter().any(|e| e.log.has_deferred_writes())
    }

    /// Writes what disk logs deferred; called when no request came for a
    /// while.
    pub fn write_back_all(&mut self) {
        for index in 0..self.registry.len() {
            let entry = self.registry.get_mut(index);
            if entry.log.has_deferred_writes()
                && let Err(e) = entry.log.write_back(&mut self.io)
            {
                log::warn!(
                    "log {}: deferred write failed: {}",
                    Uuid(&entry.uuid),
                    e.desc()
                );
            }
        }
    }

    /// Logs one line per live log: the SIGUSR1 summary.
    pub fn log_summary(&self) {
        let c = self.counters;
        log::info!(
            "{} live log(s), {} bytes of bitmaps; {} requests, {} error replies, {} dropped, {} malformed",
            self.registry.len(),
            self.registry.used_bytes(),
            c.requests,
            c.error_replies,
            c.dropped,
            c.acked_malformed
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
                log::info!(
                    "log {} luid {}: log device {}:{}: {} writes, {} cache flushes",
                    Uuid(&e.uuid),
                    e.luid,
                    disk.device().major(),
                    disk.device().minor(),
                    io.writes,
                    io.flushes
                );
            }
        }
    }
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

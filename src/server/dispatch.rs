//! A request to its log operation and its reply: which requests are
//! answered from memory at once and which become device work.

use std::time::Instant;

use nix::errno::Errno;

use super::{Answer, Server, SliceWriter, Uuid, warn_failed};
use crate::log::{DirtyLog, Work};
use crate::wire::frame::{self, Request};
use crate::wire::ulog::RequestType;

impl Server {
    pub(super) fn dispatch(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<Answer, Errno> {
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
        if let Err(e) = result {
            warn_failed(req.uuid, kind, e, self.counters.error_replies);
        }
        result
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
            RequestType::Postsuspend | RequestType::Resume => expect_empty(req.data)?,
            RequestType::Flush => check_regions(&self.registry.get(index).log, req.data)?,
            RequestType::InSync if self.registry.get(index).log.needs_io(Work::Load) => {
                // A disk log that has not read its device yet (the kernel
                // reconnected it and another caller's RESUME is still to
                // come): its bits are not the device's. "Not in sync"
                // would make the kernel write one leg only, unmarked, of a
                // region its device may record clean; "in sync" could
                // send a read to a stale leg. So it loads first.
                let entry = self.registry.get_mut(index);
                existing(&entry.log, one_region(req.data)?)?;
                entry.transient = false;
                return self.device_work(index, kind, Work::Load, req);
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
        // The sync bits are stale while a RESUME's read waits or runs; so
        // they are from a POSTSUSPEND on: a RESUME that reads the device
        // may be on its way, and the kernel resets its in-sync hint before
        // it sends one, so a full count read before the RESUME arrives but
        // taken in by the kernel after that reset would switch resync off.
        let settling = entry.log.loading()
            || entry.log.is_suspended() && entry.log.disk().is_some()
            || entry.parked.iter().any(|p| p.kind == RequestType::Resume);
        let log = &mut entry.log;
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
                check_regions(log, data)?;
                if kind == RequestType::ClearRegion {
                    regions(data)?.for_each(|r| log.clear(r));
                } else {
                    regions(data)?.for_each(|r| log.mark(r));
                }
                Ok(0)
            }
            RequestType::GetResyncWork => {
                expect_empty(data)?;
                // Before a disk log has read its device (a reconnect, its
                // RESUME still to come) its sync bits are not the device's:
                // no work yet; the kernel asks again at its next cycle.
                let work = if log.needs_io(Work::Load) {
                    None
                } else {
                    log.get_resync_work()
                };
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
}

fn expect_empty(data: &[u8]) -> Result<(), Errno> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

fn existing(log: &DirtyLog, region: u64) -> Result<u64, Errno> {
    if log.has_region(region) {
        Ok(region)
    } else {
        Err(Errno::EINVAL)
    }
}

/// Checks every region of `data` before any is touched, so a bad request
/// changes nothing.
fn check_regions(log: &DirtyLog, data: &[u8]) -> Result<(), Errno> {
    for r in regions(data)? {
        existing(log, r)?;
    }
    Ok(())
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

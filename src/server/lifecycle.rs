//! A log's end and the daemon's: DTR, logs of failed table loads, the exit
//! verdict, and the write-back of deferred or a dead daemon's saved bits.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat;

use super::construct::{ctr_hash, number_spec};
use super::{Answer, Server, Uuid};
use crate::log::device::LogDevice;
use crate::log::disk::{DiskStore, flags};
use crate::log::params;
use crate::log::state::Identity;
use crate::log::{DirtyLog, Origin, Work};
use crate::registry::{Entry, Owner};
use crate::wire::frame::Request;
use crate::wire::ulog::RequestType;

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

/// A log never resumed and idle this long may be the leftover of a failed
/// table load (the kernel sends CTR and GET_REGION_SIZE, then fails or
/// stages the table within moments).
const ORPHAN_AGE: Duration = Duration::from_secs(5);

impl Server {
    /// Removes a log after its DTR; `written` says how its deferred clears
    /// went.
    pub(super) fn destroy(&mut self, index: usize, written: Result<(), Errno>) {
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
    pub(super) fn remove_entry(&mut self, index: usize) -> Entry {
        let entry = self.registry.remove(index);
        if let Some(slot) = entry.slot {
            self.engine.release_slot(slot);
        }
        entry
    }

    /// Drops the logs of table loads that failed after their CTR: logs
    /// never resumed, idle for ORPHAN_AGE, of a uuid that fewer mirror
    /// tables (live or inactive) name than live logs have. An inactive
    /// table waiting for its resume names its log, so it is kept. Returns
    /// how many were dropped.
    pub(super) fn reap_orphans(&mut self) -> usize {
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
    pub(super) fn write_back_saved(&mut self, req: &Request<'_>) -> Option<Answer> {
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
        let newer_load = self.state.last_load(device.identity()).filter(|last| {
            last.luid != luid && last.uuid.as_slice() == uuid && last.stamp > saved.load_stamp
        });
        if newer_load.is_some() || saved.flags & flags::LOADED == 0 {
            // A newer table's log loaded the device since, or this log's
            // bits never were the device's: nothing to write.
            return None;
        }
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
        log.restore_flags(saved.flags, saved.load_stamp);
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
}

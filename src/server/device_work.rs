//! Device work: the per-log FIFO of parked requests, the engine's steps
//! and their completions, the replies they release, and stall reports.

use std::time::Duration;

use nix::errno::Errno;

use super::{Answer, Server, Uuid, warn_failed, worth_logging};
use crate::log::disk::Step;
use crate::log::{Next, Work};
use crate::registry::{Owner, PARKED_PER_LOG, Parked};
use crate::wire::frame::{self, REPLY_DATA_OFFSET, Request};
use crate::wire::ulog::RequestType;

/// A log device step in flight this long is reported (1st, 2nd, 4th, ...
/// time it happens for that log).
const STALL_AFTER: Duration = Duration::from_secs(5);

impl Server {
    /// Answers at once a request whose work needs no device I/O and finds
    /// its log idle; parks any other.
    pub(super) fn device_work(
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
    pub(super) fn park(&mut self, index: usize, kind: RequestType, req: &Request<'_>) -> Answer {
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
    pub(super) fn advance(&mut self, index: usize, emit: &mut dyn FnMut(&[u8])) {
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
                let loads = entry.log.starts_load(work);
                if loads && !self.take_over_device(index) {
                    // Looked at again after the next completion.
                    self.load_waits = true;
                    return;
                }
                let entry = self.registry.get_mut(index);
                entry.log.begin(work);
                entry.working = Some(Owner::Head);
                if let Some(d) = entry.log.disk().filter(|d| loads && !d.is_superseded()) {
                    let stamp = d.load_stamp();
                    self.state.save_load_stamp(&entry.uuid, entry.luid, stamp);
                    self.state
                        .record_load(d.device().identity(), &entry.uuid, entry.luid, stamp);
                }
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
                    } else if matches!(parked.kind, RequestType::Resume | RequestType::InSync) {
                        // The bits are right in memory whatever the device
                        // did (its failure shows as D in the status and in
                        // the log). dm-raid1 only warns of a log's resume
                        // error, but the kernel's reconnect path turns one
                        // into -ESRCH for the request that found the daemon
                        // gone: an IN_SYNC would read "not in sync", and
                        // the kernel would write one leg only of a region
                        // the log keeps in sync.
                        Ok(())
                    } else {
                        result
                    };
                    if let Err(e) = result {
                        warn_failed(&entry.uuid, parked.kind, e, self.counters.error_replies);
                        self.counters.error_replies += 1;
                    }
                    let error = result.err().map_or(0, |e| -(e as i32));
                    let data_len = if parked.kind == RequestType::InSync {
                        let in_sync = entry.log.in_sync(u64::from(parked.region));
                        self.reply[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + 8]
                            .copy_from_slice(&u64::from(in_sync).to_ne_bytes());
                        8
                    } else {
                        0
                    };
                    let n = frame::emit_reply(
                        &mut self.reply[..],
                        &parked.header(&entry.uuid),
                        parked.cn_seq,
                        error,
                        data_len,
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

    /// Before log `index` reads or rewrites its device. Of two logs of one
    /// mirror (one uuid) on one device, the one that loaded it last belongs
    /// to the newer table (a reload: the new table resumes after the old
    /// one is suspended, and the old one's DTR comes last), so a log that
    /// loads supersedes every other log of its uuid that loaded the device
    /// before (`DiskStore::supersede`): they write nothing more to it. A
    /// log that finds another one loaded after its own last load (its
    /// table is the older one, reconnected after a restart) supersedes
    /// itself instead. Load times are kept in the state files, so this
    /// holds across restarts. False while a log to supersede has a step in
    /// flight, which must land before the read.
    fn take_over_device(&mut self, index: usize) -> bool {
        let mine = self.registry.get(index);
        let my_stamp = mine.log.load_stamp();
        // A newer log of this mirror may have loaded the device under an
        // earlier daemon and not be reconnected yet: the device's load
        // record tells.
        let newer_elsewhere = mine.log.disk().is_some_and(|d| {
            self.state
                .last_load(d.device().identity())
                .is_some_and(|last| {
                    my_stamp != 0
                        && last.stamp > my_stamp
                        && last.luid != mine.luid
                        && last.uuid.as_slice() == mine.uuid.as_slice()
                })
        });
        if newer_elsewhere {
            self.supersede_self(index);
            return true;
        }
        // A log that never loaded and whose life is not known (the kernel
        // reconnected it and no state file said more) may belong to the
        // older table: it takes over only from a suspended log, which the
        // kernel's order makes the older one, never from a live one, whose
        // marks would then no longer be written.
        let unknown = my_stamp == 0 && !self.registry.get(index).log.knows_its_life();
        let mut in_flight = false;
        for other in 0..self.registry.len() {
            let Some(stamp) = self.sibling_load(index, other, true) else {
                continue;
            };
            if my_stamp != 0 && stamp > my_stamp {
                self.supersede_self(index);
                return true;
            }
            if unknown && !self.registry.get(other).log.is_suspended() {
                continue;
            }
            let slot = self.registry.get(other).slot;
            in_flight |= slot.is_some_and(|slot| self.engine.in_flight(slot).is_some());
        }
        if in_flight {
            return false;
        }
        for other in 0..self.registry.len() {
            if self.sibling_load(index, other, false).is_none()
                || unknown && !self.registry.get(other).log.is_suspended()
            {
                continue;
            }
            let theirs = self.registry.get_mut(other);
            theirs.log.supersede();
            log::info!(
                "log {} luid {}: a newer log of its mirror loads its device; it writes \
                 nothing more to it",
                Uuid(&theirs.uuid),
                theirs.luid
            );
            self.persist_flags(other);
        }
        true
    }

    /// Log `index` belongs to an older table than a log that loaded its
    /// device since: it writes nothing more there.
    fn supersede_self(&mut self, index: usize) {
        let me = self.registry.get_mut(index);
        me.log.supersede();
        log::info!(
            "log {} luid {}: a newer log of its mirror loaded its device since; it writes \
             nothing more to it",
            Uuid(&me.uuid),
            me.luid
        );
        self.persist_flags(index);
    }

    /// When log `other`, another log of the same mirror on the same device
    /// as log `index` and not superseded, last loaded it; None for any
    /// other log, and for one that never loaded the device (a newer table
    /// still to resume, or a failed load: it wrote nothing there). A log
    /// of another mirror on the same device is an error, logged when
    /// `report` (once per take-over, whose second pass asks again).
    fn sibling_load(&self, index: usize, other: usize, report: bool) -> Option<u64> {
        let (mine, theirs) = (self.registry.get(index), self.registry.get(other));
        let (a, b) = (mine.log.disk()?, theirs.log.disk()?);
        let stamp = theirs.log.load_stamp();
        if other == index || b.is_superseded() || stamp == 0 || !a.device().same_device(b.device())
        {
            return None;
        }
        if theirs.uuid != mine.uuid {
            if !report {
                return None;
            }
            log::error!(
                "log {}: its log device is also that of log {}: two mirrors must not share a \
                 log device, and neither log's bits can be trusted",
                Uuid(&mine.uuid),
                Uuid(&theirs.uuid)
            );
            return None;
        }
        Some(stamp)
    }

    /// Keeps a disk log's sticky conditions in its state file when they
    /// change.
    pub(super) fn persist_flags(&mut self, index: usize) {
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

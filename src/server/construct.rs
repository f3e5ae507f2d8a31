//! CTR: a new log, or one restored from a previous daemon's saved state;
//! the room checks, the log device opened and the mirror's legs found.

use core::fmt;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::stat;

use super::{Server, SliceWriter, Uuid};
use crate::bitmap::Bitmap;
use crate::log::device::LogDevice;
use crate::log::disk::DiskStore;
use crate::log::legs::LegSet;
use crate::log::params::{self, LogArgs};
use crate::log::state::{FNV_BASES, Identity, Saved, fnv1a};
use crate::log::{DirtyLog, Origin};
use crate::registry::{Entry, NoRoom};
use crate::wire::frame::Request;

impl Server {
    /// CTR: a new log, or a log this daemon already holds (the kernel
    /// reconnecting after a lost request), which is kept as it is when the
    /// constructor text is the same.
    pub(super) fn construct(&mut self, req: &Request<'_>, out: &mut [u8]) -> Result<usize, Errno> {
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
        let (saved_flags, load_stamp) = saved.as_ref().map_or((0, 0), |s| (s.flags, s.load_stamp));
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
        log.restore_flags(saved_flags, load_stamp);
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
        // A new disk log's state file says so at once (`KNOWN_LIFE`): a
        // restarted daemon must know it even if the log never loaded.
        self.persist_flags(self.registry.len() - 1);
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
    pub(super) fn saved(&mut self, id: &Identity<'_>) -> Option<Saved> {
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
    pub(super) fn find_legs(&mut self, uuid: &[u8]) -> Option<LegSet> {
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
}

/// A digest of a constructor string: tells a retried table load with other
/// arguments from the kernel reconnecting the same log.
pub(super) fn ctr_hash(text: &[u8]) -> u64 {
    fnv1a(FNV_BASES[0], text, 0)
}

/// "major:minor", the spec that opens a device by number.
pub(super) fn number_spec(number: (u64, u64)) -> heapless::String<48> {
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
        fmt::Write::write_str(&mut w, &number_spec((dev.major(), dev.minor())))
    };
    if written.is_err() {
        return 0;
    }
    let len = w.len;
    out[len] = 0;
    len + 1
}

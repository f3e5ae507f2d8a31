//! What the kernel's device-mapper tables say about the mirrors that use a
//! log: their legs, to be flushed before a disk log records regions clean,
//! and whether any table still names a log at all.
//!
//! The kernel's own `disk` log calls the mirror's flush callback (an empty
//! REQ_PREFLUSH to every leg, dm-raid1 `mirror_flush`) before it writes bits
//! that record regions clean; a userspace log gets no such callback, so the
//! daemon finds the legs in the mirror's table and flushes them itself,
//! through the leg devices, never through the mirror (the mirror waits on
//! the daemon).
//!
//! The tables come from DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG, which the
//! kernel builds without asking any log server and which takes no lock the
//! kernel holds while it waits for this daemon (dm-ioctl.c: table loads,
//! suspends, resumes and table destruction all call into the log with
//! _hash_lock released).

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use crate::log::device::{self, parse_dev_numbers};
use crate::log::legs::{CONTROL_PATH, LIST_BUF_LEN, LegSet, MirrorError, Mirrors};
use crate::sys::dm::dm_ioctl;
use crate::wire::dm_ioctl::{
    self as wire, CMD_LIST_DEVICES, CMD_TABLE_STATUS, FLAG_QUERY_INACTIVE, FLAG_STATUS_TABLE, Reply,
};

/// Bytes for one table's text; a larger table is searched as far as it fits.
const STATUS_BUF_LEN: usize = 64 * 1024;

/// The control device's number, for a node of our own when
/// /dev/mapper/control is missing.
const CONTROL_NUMBER: (u64, u64) = (10, 236);

/// A mirror table text that names the log but whose legs cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Words of a mirror target's table text, if its log is the userspace log
/// `uuid`: "userspace <argc> <uuid> [integrated_flush] <type> <args...>
/// <#legs> <maj:min> <offset> ... [features]". Ok(None) for another log;
/// Err when the text names the log but its legs cannot be read.
pub fn mirror_legs(text: &[u8], uuid: &[u8]) -> Result<Option<LegSet>, Unreadable> {
    let text = core::str::from_utf8(text).map_err(|_| Unreadable)?;
    let mut words = text.split_ascii_whitespace();
    if words.next() != Some("userspace") {
        return Ok(None);
    }
    let argc: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(Unreadable)?;
    let mut log_args = words.by_ref().take(argc);
    if log_args.next().map(str::as_bytes) != Some(uuid) {
        return Ok(None);
    }
    if log_args.count() + 1 != argc {
        return Err(Unreadable);
    }
    let nr_legs: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(Unreadable)?;
    let mut legs = LegSet::new();
    for _ in 0..nr_legs {
        let dev = words.next().and_then(parse_dev_numbers).ok_or(Unreadable)?;
        words.next().ok_or(Unreadable)?;
        legs.push(dev).map_err(|_| Unreadable)?;
    }
    Ok(Some(legs))
}

/// `Mirrors` through /dev/mapper/control, with preallocated buffers.
pub struct DmMirrors {
    node_dir: OwnedFd,
    control: Option<OwnedFd>,
    list: Box<[u8]>,
    status: Box<[u8]>,
}

impl DmMirrors {
    /// `node_dir` (the --node-dir) is where device nodes are made when
    /// /dev/mapper/control or a leg has none.
    pub fn new(node_dir: OwnedFd) -> Self {
        DmMirrors {
            node_dir,
            control: None,
            list: vec![0u8; LIST_BUF_LEN].into_boxed_slice(),
            status: vec![0u8; STATUS_BUF_LEN].into_boxed_slice(),
        }
    }

    /// Opens the control device on first use: dm-mod may be loaded after
    /// the daemon starts.
    fn control(&mut self) -> Result<&OwnedFd, MirrorError> {
        if self.control.is_none() {
            let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            let fd = match nix::fcntl::open(CONTROL_PATH, flags, nix::sys::stat::Mode::empty()) {
                Ok(fd) => fd,
                Err(_) => {
                    device::open_node(self.node_dir.as_fd(), SFlag::S_IFCHR, CONTROL_NUMBER, flags)
                        .map(|(fd, _)| fd)
                        .map_err(|e| MirrorError::NoControl(e.errno))?
                }
            };
            self.control = Some(fd);
        }
        self.control
            .as_ref()
            .ok_or(MirrorError::NoControl(Errno::ENOENT))
    }

    /// Calls `each` with the table text of every mirror target of every dm
    /// device's live table (and inactive table, with `inactive`).
    fn each_mirror(
        &mut self,
        inactive: bool,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), MirrorError> {
        self.control()?;
        let DmMirrors {
            control: Some(control),
            list,
            status,
            ..
        } = self
        else {
            return Err(MirrorError::NoControl(Errno::ENOENT));
        };
        list.fill(0);
        wire::emit_request(list, 0, 0);
        dm_ioctl(control.as_fd(), CMD_LIST_DEVICES, list).map_err(MirrorError::Ioctl)?;
        let devices = Reply::new_checked(list).map_err(|_| MirrorError::Ioctl(Errno::EINVAL))?;
        if devices.is_full() {
            return Err(MirrorError::TooManyDevices);
        }
        let tables: &[u32] = if inactive {
            &[FLAG_STATUS_TABLE, FLAG_STATUS_TABLE | FLAG_QUERY_INACTIVE]
        } else {
            &[FLAG_STATUS_TABLE]
        };
        for dev in devices.devices() {
            for &flags in tables {
                status.fill(0);
                wire::emit_request(status, flags, dev);
                match dm_ioctl(control.as_fd(), CMD_TABLE_STATUS, status) {
                    Ok(()) => {}
                    // Removed since the list was made.
                    Err(Errno::ENXIO) => continue,
                    Err(e) => return Err(MirrorError::Ioctl(e)),
                }
                let Ok(reply) = Reply::new_checked(status) else {
                    continue;
                };
                for (kind, text) in reply.targets() {
                    if kind == b"mirror" {
                        each(text);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Mirrors for DmMirrors {
    fn legs(&mut self, uuid: &[u8]) -> Result<LegSet, MirrorError> {
        let mut found: Option<LegSet> = None;
        let mut unreadable = false;
        self.each_mirror(false, |text| match mirror_legs(text, uuid) {
            Ok(Some(legs)) => {
                let all = found.get_or_insert_with(LegSet::new);
                for leg in legs {
                    if !all.contains(&leg) && all.push(leg).is_err() {
                        unreadable = true;
                    }
                }
            }
            Ok(None) => {}
            Err(Unreadable) => unreadable = true,
        })?;
        match found {
            Some(legs) if !unreadable && !legs.is_empty() => Ok(legs),
            _ => Err(MirrorError::NotFound),
        }
    }

    fn references(&mut self, uuid: &[u8]) -> Result<usize, MirrorError> {
        let mut count = 0;
        self.each_mirror(true, |text| {
            if !matches!(mirror_legs(text, uuid), Ok(None)) {
                count += 1;
            }
        })?;
        Ok(count)
    }

    fn flush(&mut self, legs: &LegSet) -> Result<(), MirrorError> {
        for &leg in legs {
            let fd = self.open_leg(leg)?;
            nix::unistd::fsync(fd.as_fd()).map_err(|errno| MirrorError::Flush { leg, errno })?;
        }
        Ok(())
    }

    fn open_leg(&mut self, leg: (u64, u64)) -> Result<OwnedFd, MirrorError> {
        device::open_node(
            self.node_dir.as_fd(),
            SFlag::S_IFBLK,
            leg,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        )
        .map(|(fd, _)| fd)
        .map_err(|e| MirrorError::Flush {
            leg,
            errno: e.errno,
        })
    }
}

/// What a `FakeMirrors` answers, shared with the test that made it.
#[derive(Default)]
pub struct FakeState {
    /// Every log's mirror has these legs; None: not found.
    pub legs: Option<LegSet>,
    /// Leg flushes fail while set.
    pub fail_flush: bool,
    /// Leg flushes asked for.
    pub flushes: u64,
    /// Mirror targets naming any log.
    pub references: usize,
    /// Called at every leg flush, before it succeeds or fails.
    pub on_flush: Option<Box<dyn FnMut()>>,
}

/// `Mirrors` for tests and benchmarks, which have no device-mapper.
#[derive(Clone, Default)]
pub struct FakeMirrors(pub Rc<RefCell<FakeState>>);

impl FakeMirrors {
    /// Two legs, flushes that succeed, one table per log.
    pub fn two_legs() -> Self {
        let mut legs = LegSet::new();
        let _ = legs.push((254, 1));
        let _ = legs.push((254, 2));
        FakeMirrors(Rc::new(RefCell::new(FakeState {
            legs: Some(legs),
            references: 1,
            ..FakeState::default()
        })))
    }
}

impl Mirrors for FakeMirrors {
    fn legs(&mut self, _uuid: &[u8]) -> Result<LegSet, MirrorError> {
        self.0.borrow().legs.clone().ok_or(MirrorError::NotFound)
    }
    fn references(&mut self, _uuid: &[u8]) -> Result<usize, MirrorError> {
        Ok(self.0.borrow().references)
    }
    fn flush(&mut self, legs: &LegSet) -> Result<(), MirrorError> {
        let mut state = self.0.borrow_mut();
        state.flushes += 1;
        if let Some(hook) = &mut state.on_flush {
            hook();
        }
        match legs.first() {
            Some(&leg) if state.fail_flush => Err(MirrorError::Flush {
                leg,
                errno: Errno::EIO,
            }),
            _ => Ok(()),
        }
    }
    fn open_leg(&mut self, leg: (u64, u64)) -> Result<OwnedFd, MirrorError> {
        // Tests have no legs to open; the synchronous engine uses `flush`.
        Err(MirrorError::Flush {
            leg,
            errno: Errno::ENODEV,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_of_a_userspace_log() {
        let text = b"userspace 5 my-uuid integrated_flush disk 253:3 1024 2 253:1 0 253:2 2048 1 handle_errors";
        let legs = mirror_legs(text, b"my-uuid").unwrap().unwrap();
        assert_eq!(legs.as_slice(), &[(253, 1), (253, 2)]);
        assert_eq!(mirror_legs(text, b"other").unwrap(), None);
        assert_eq!(mirror_legs(text, b"my-uui").unwrap(), None);
        let core = b"userspace 3 u core 1024 3 8:16 0 8:32 0 8:48 0";
        assert_eq!(
            mirror_legs(core, b"u").unwrap().unwrap().as_slice(),
            &[(8, 16), (8, 32), (8, 48)]
        );
    }

    #[test]
    fn other_logs_and_broken_text() {
        assert_eq!(
            mirror_legs(b"core 2 1024 nosync 2 8:1 0 8:2 0", b"u").unwrap(),
            None
        );
        assert_eq!(
            mirror_legs(b"disk 2 8:3 1024 2 8:1 0 8:2 0", b"u").unwrap(),
            None
        );
        // Names the log, but the legs are cut short or garbled.
        assert!(mirror_legs(b"userspace 3 u core 1024 2 8:1 0", b"u").is_err());
        assert!(mirror_legs(b"userspace 3 u core 1024 2 8:1 0 sda 0", b"u").is_err());
        assert!(mirror_legs(b"userspace 9 u core", b"u").is_err());
        assert!(mirror_legs(b"userspace x u core", b"u").is_err());
        let many =
            b"userspace 3 u core 8 10 1:1 0 1:2 0 1:3 0 1:4 0 1:5 0 1:6 0 1:7 0 1:8 0 1:9 0 1:10 0";
        assert!(mirror_legs(many, b"u").is_err());
    }
}

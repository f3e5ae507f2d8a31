//! A mirror's legs as a disk log needs them: the leg set, and the `Mirrors`
//! interface that finds and flushes them (src/mirrors.rs implements it).
//!
//! They live with the log, which uses them, so the device-mapper side
//! (mirrors) sits above the log and nothing below imports it.

use core::fmt;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

/// The most legs a mirror has (dm-raid1 MAX_NR_MIRRORS).
pub const MAX_LEGS: usize = 9;

/// A mirror's legs as (major, minor).
pub type LegSet = heapless::Vec<(u64, u64), MAX_LEGS>;

/// Bytes for the list of dm devices: about a thousand devices with names
/// of typical length (the kernel answers all or nothing).
pub const LIST_BUF_LEN: usize = 64 * 1024;

/// The control device: misc major 10, MAPPER_CTRL_MINOR 236.
pub const CONTROL_PATH: &str = "/dev/mapper/control";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorError {
    /// /dev/mapper/control cannot be opened.
    NoControl(Errno),
    /// A device-mapper ioctl failed.
    Ioctl(Errno),
    /// More dm devices than the list buffer holds.
    TooManyDevices,
    /// No live table has a mirror with this log.
    NotFound,
    /// A leg's cache flush failed.
    Flush { leg: (u64, u64), errno: Errno },
}

impl fmt::Display for MirrorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorError::NoControl(e) => write!(
                f,
                "cannot open {CONTROL_PATH} ({}): is dm-mod loaded and --node-dir writable?",
                e.desc()
            ),
            MirrorError::Ioctl(e) => write!(f, "a device-mapper ioctl failed: {}", e.desc()),
            MirrorError::TooManyDevices => {
                write!(
                    f,
                    "more device-mapper devices than a {LIST_BUF_LEN}-byte list holds"
                )
            }
            MirrorError::NotFound => f.write_str("no live mirror table names this log"),
            MirrorError::Flush { leg, errno } => write!(
                f,
                "the cache flush of leg {}:{} failed: {}",
                leg.0,
                leg.1,
                errno.desc()
            ),
        }
    }
}

/// The tables and legs a disk log needs; the daemon's implementation asks
/// the kernel (`DmMirrors`), tests put in their own.
pub trait Mirrors {
    /// The legs of every mirror in a live table whose log is the userspace
    /// log `uuid` (several such mirrors only widen the set).
    fn legs(&mut self, uuid: &[u8]) -> Result<LegSet, MirrorError>;
    /// How many mirror targets in live or inactive tables name the
    /// userspace log `uuid`.
    fn references(&mut self, uuid: &[u8]) -> Result<usize, MirrorError>;
    /// Flushes the volatile write cache of every leg.
    fn flush(&mut self, legs: &LegSet) -> Result<(), MirrorError>;
    /// Opens a leg for its cache flush (fsync), through a private node.
    fn open_leg(&mut self, leg: (u64, u64)) -> Result<OwnedFd, MirrorError>;
}

//! The block device behind a disk log: opened once at construction, by path
//! or by major:minor, and driven with positioned, direct I/O.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, Whence};

use crate::sys;

/// An open log device.
#[derive(Debug)]
pub struct LogDevice {
    file: File,
    major: u64,
    minor: u64,
    /// (st_dev, st_ino) of a regular file; block devices compare by number.
    file_id: (u64, u64),
    size: u64,
    block_size: u64,
}

/// Why a log device could not be opened; names the cause.
#[derive(Debug)]
pub struct DeviceError {
    pub what: &'static str,
    pub errno: Errno,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.what, self.errno.desc())
    }
}

fn fail(what: &'static str) -> impl FnOnce(Errno) -> DeviceError {
    move |errno| DeviceError { what, errno }
}

/// Parses "major:minor".
pub fn parse_dev_numbers(spec: &str) -> Option<(u64, u64)> {
    let (maj, min) = spec.split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

impl LogDevice {
    /// Opens `spec`, a path or "major:minor". A major:minor device gets a
    /// private node in `node_dir` (made, opened and unlinked at once), so
    /// neither udev nor /dev/mapper is needed, and it works after
    /// switch_root because `node_dir` is a descriptor opened at start-up.
    ///
    /// The file's type is looked at before it is opened: opening a character
    /// device can act by itself (a terminal becomes the controlling one, a
    /// watchdog starts), so anything but a block device is refused unopened.
    /// The open is O_NOCTTY all the same, and the opened file must be the
    /// one looked at.
    pub fn open(spec: &str, node_dir: BorrowedFd<'_>) -> Result<Self, DeviceError> {
        let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_DIRECT;
        let (file, looked_at) = match parse_dev_numbers(spec) {
            Some((major, minor)) => {
                let (fd, st) = open_node(node_dir, SFlag::S_IFBLK, (major, minor), flags)?;
                (File::from(fd), st)
            }
            None => {
                let st = stat::stat(spec).map_err(fail("cannot stat it"))?;
                check_kind(&st)?;
                (open_direct(None, spec, flags)?, st)
            }
        };
        let st = stat::fstat(file.as_fd()).map_err(fail("cannot stat it"))?;
        if st.st_mode & libc::S_IFMT != looked_at.st_mode & libc::S_IFMT
            || (st.st_rdev, st.st_dev, st.st_ino)
                != (looked_at.st_rdev, looked_at.st_dev, looked_at.st_ino)
        {
            return Err(DeviceError {
                what: "it changed between its check and its open",
                errno: Errno::EAGAIN,
            });
        }
        let (major, minor, block_size) = if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
            let bs = sys::logical_block_size(file.as_fd())
                .map_err(fail("cannot read its block size"))?;
            (
                stat::major(st.st_rdev),
                stat::minor(st.st_rdev),
                u64::from(bs),
            )
        } else {
            // Regular files serve the unit tests; the kernel itself only
            // accepts block devices.
            (0, 0, 512)
        };
        let size =
            unistd::lseek(file.as_fd(), 0, Whence::SeekEnd).map_err(fail("cannot size it"))? as u64;
        Ok(LogDevice {
            file,
            major,
            minor,
            file_id: (st.st_dev as u64, st.st_ino as u64),
            size,
            block_size: block_size.max(512),
        })
    }

    pub fn major(&self) -> u64 {
        self.major
    }
    pub fn minor(&self) -> u64 {
        self.minor
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The dev_t the kernel holds (0 for a regular file).
    pub fn rdev(&self) -> u64 {
        if self.major == 0 && self.minor == 0 {
            0
        } else {
            stat::makedev(self.major, self.minor)
        }
    }
    /// What tells this device from every other: its number for a block
    /// device, (st_dev, st_ino) for a regular file (tests).
    pub fn identity(&self) -> (u64, u64) {
        match self.rdev() {
            0 => self.file_id,
            rdev => (rdev, u64::MAX),
        }
    }
    /// True when both are the same block device, or the same file.
    pub fn same_device(&self, other: &LogDevice) -> bool {
        match (self.rdev(), other.rdev()) {
            (0, 0) => self.file_id == other.file_id,
            (a, b) => a == b,
        }
    }
    /// The logical block size: the unit of every direct transfer.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Makes written blocks durable: on a block device this flushes the
    /// device's volatile cache.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl AsFd for LogDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens device `number` (major, minor) of `kind` through a private node in
/// `node_dir`, made, looked at, opened and unlinked at once; O_DIRECT is
/// dropped where refused. Returns the node's stat too, to compare with
/// the opened file's.
pub fn open_node(
    node_dir: BorrowedFd<'_>,
    kind: SFlag,
    number: (u64, u64),
    flags: OFlag,
) -> Result<(OwnedFd, stat::FileStat), DeviceError> {
    let mut name = heapless::String::<40>::new();
    let _ = core::fmt::Write::write_fmt(
        &mut name,
        format_args!(".dm-ulogd-{}-node", std::process::id()),
    );
    let name = name.as_str();
    let _ = unistd::unlinkat(node_dir, name, unistd::UnlinkatFlags::NoRemoveDir);
    stat::mknodat(
        node_dir,
        name,
        kind,
        Mode::S_IRUSR | Mode::S_IWUSR,
        stat::makedev(number.0, number.1),
    )
    .map_err(fail("cannot make a device node for it"))?;
    let opened = stat::fstatat(node_dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(fail("cannot stat its device node"))
        .and_then(|st| Ok((OwnedFd::from(open_direct(Some(node_dir), name, flags)?), st)));
    let _ = unistd::unlinkat(node_dir, name, unistd::UnlinkatFlags::NoRemoveDir);
    opened
}

/// Refuses, unopened, anything but a block device (or a regular file, for
/// the unit tests), naming what it is.
fn check_kind(st: &stat::FileStat) -> Result<(), DeviceError> {
    let what = match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK | libc::S_IFREG => return Ok(()),
        libc::S_IFCHR => {
            "it is a character device (a terminal, /dev/null, a watchdog...), not a block device: refused unopened"
        }
        libc::S_IFDIR => "it is a directory, not a block device",
        libc::S_IFIFO => "it is a FIFO, not a block device: refused unopened",
        libc::S_IFSOCK => "it is a socket, not a block device",
        _ => "it is not a block device",
    };
    Err(DeviceError {
        what,
        errno: Errno::ENOTBLK,
    })
}

/// Opens with O_DIRECT, falling back to buffered I/O where the file system
/// refuses it (tmpfs in tests); every write is followed by fdatasync on a
/// flush with marks, so durability does not depend on O_DIRECT.
fn open_direct(dir: Option<BorrowedFd<'_>>, path: &str, flags: OFlag) -> Result<File, DeviceError> {
    let open = |flags| match dir {
        Some(d) => nix::fcntl::openat(d, path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    };
    let fd = match open(flags) {
        Err(Errno::EINVAL) => open(flags - OFlag::O_DIRECT),
        other => other,
    }
    .map_err(fail("cannot open it"))?;
    Ok(File::from(fd))
}

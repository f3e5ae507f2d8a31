//! The block devices a mirror is made of, looked at before any table is
//! loaded: present, not mounted, not held, their sizes, and what a disk
//! log device's header records.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, Whence};

use crate::log::device::{open_node, parse_dev_numbers};
use crate::log::disk::MAGIC;
use crate::sys;

/// A block device that can go into a table.
#[derive(Debug)]
pub struct BlockDev {
    pub spec: String,
    pub major: u64,
    pub minor: u64,
    /// Bytes.
    pub size: u64,
    pub block_size: u64,
    /// Opened O_EXCL: nobody else can claim it until this is dropped; drop
    /// it before the table load, which claims it for the mirror.
    file: File,
}

impl BlockDev {
    pub fn numbers(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    pub fn sectors(&self) -> u64 {
        self.size / 512
    }

    /// The region count a disk log header at the device's start records,
    /// when it has the dm-log magic. Read with O_DIRECT-free positioned I/O
    /// on the exclusive descriptor: nothing else writes the device now.
    pub fn log_header_regions(&self) -> Option<u64> {
        let mut header = [0u8; 16];
        self.file.read_exact_at(&mut header, 0).ok()?;
        let le32 = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
        (le32(0) == MAGIC).then(|| u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8])))
    }

    /// Gives up the exclusive claim.
    pub fn release(self) {
        drop(self.file);
    }
}

/// The device numbers `spec` names, if the device exists now.
pub fn numbers_of(spec: &str) -> Option<(u64, u64)> {
    match parse_dev_numbers(spec) {
        Some((major, minor)) => Path::new(&format!("/sys/dev/block/{major}:{minor}"))
            .exists()
            .then_some((major, minor)),
        None => {
            let st = stat::stat(spec).ok()?;
            (st.st_mode & libc::S_IFMT == libc::S_IFBLK)
                .then(|| (stat::major(st.st_rdev), stat::minor(st.st_rdev)))
        }
    }
}

/// Where device (major, minor) is mounted, from /proc/self/mountinfo.
fn mount_point(major: u64, minor: u64) -> Option<String> {
    let want = format!("{major}:{minor}");
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(' ');
        let dev = f.nth(2)?;
        let _root = f.next()?;
        let point = f.next()?;
        (dev == want).then(|| point.to_string())
    })
}

/// The devices stacked on (major, minor), from sysfs: "dm-3 (mirror_x)".
fn holders(major: u64, minor: u64) -> Vec<String> {
    let dir = format!("/sys/dev/block/{major}:{minor}/holders");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let kernel_name = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_to_string(format!("/sys/block/{kernel_name}/dm/name")) {
                Ok(name) => format!("{kernel_name} ({})", name.trim()),
                Err(_) => kernel_name,
            }
        })
        .collect()
}

/// Looks at `spec` (a path, link or major:minor) for use as `what` ("leg",
/// "log device") of a new mirror, and claims it (O_EXCL) until released.
/// Refused, with the reason: absent, not a block device, mounted, held by
/// another device, or open exclusively elsewhere.
pub fn probe(what: &str, spec: &str) -> Result<BlockDev, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_EXCL;
    let (major, minor) = match parse_dev_numbers(spec) {
        Some(n) => n,
        None => {
            let st = stat::stat(spec).map_err(|e| format!("{what} {spec}: {}", e.desc()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
                return Err(format!("{what} {spec} is not a block device"));
            }
            (stat::major(st.st_rdev), stat::minor(st.st_rdev))
        }
    };
    if let Some(point) = mount_point(major, minor) {
        return Err(format!(
            "{what} {spec} ({major}:{minor}) is mounted on {point}: unmount it first"
        ));
    }
    let held_by = holders(major, minor);
    if !held_by.is_empty() {
        return Err(format!(
            "{what} {spec} ({major}:{minor}) is held by {}: remove that device first",
            held_by.join(", ")
        ));
    }
    let opened = match parse_dev_numbers(spec) {
        Some(n) => {
            let dev_dir = nix::fcntl::open(
                "/dev",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("cannot open /dev: {}", e.desc()))?;
            open_node(dev_dir.as_fd(), SFlag::S_IFBLK, n, flags)
                .map(|(fd, _)| fd)
                .map_err(|e| e.errno)
        }
        None => nix::fcntl::open(spec, flags, Mode::empty()),
    };
    let fd = opened.map_err(|e| match e {
        Errno::EBUSY => format!(
            "{what} {spec} ({major}:{minor}) is in use (open exclusively: a file system, swap, md or another mirror)"
        ),
        Errno::ENXIO | Errno::ENOENT => format!("{what} {spec} ({major}:{minor}) does not exist"),
        e => format!("{what} {spec}: cannot open it: {}", e.desc()),
    })?;
    let file = File::from(fd);
    let size = unistd::lseek(file.as_fd(), 0, Whence::SeekEnd)
        .map_err(|e| format!("{what} {spec}: cannot size it: {}", e.desc()))? as u64;
    let block_size = sys::logical_block_size(file.as_fd())
        .unwrap_or(512)
        .max(512);
    Ok(BlockDev {
        spec: spec.to_string(),
        major,
        minor,
        size,
        block_size: u64::from(block_size),
        file,
    })
}

/// Whether something listens on the device-mapper connector group (7) in
/// /proc/net/netlink: without it the kernel refuses a userspace log's
/// table at once (-ESRCH).
pub fn daemon_listening() -> bool {
    std::fs::read_to_string("/proc/net/netlink").is_ok_and(|text| listening_in(&text))
}

/// The group test on /proc/net/netlink's text: a socket of protocol 11
/// (NETLINK_CONNECTOR) with a user port id whose Groups bitmask has bit 6.
fn listening_in(text: &str) -> bool {
    text.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        f.len() > 3
            && f[1] == "11"
            && f[2] != "0"
            && u32::from_str_radix(f[3], 16).is_ok_and(|g| g & 0x40 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_is_found() {
        let head = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n";
        let kernel =
            "ffff8880 11  0          00000000 0        0        0     2        0        9\n";
        let daemon =
            "ffff8881 11  412        00000040 0        0        0     2        0        31\n";
        let other =
            "ffff8882 0   413        00000040 0        0        0     2        0        32\n";
        assert!(listening_in(&format!("{head}{kernel}{daemon}")));
        assert!(!listening_in(&format!("{head}{kernel}{other}")));
        assert!(!listening_in(head));
    }

    #[test]
    fn a_regular_file_is_not_a_leg() {
        let dir = std::env::temp_dir().join(format!("dm-ulogd-probe-{}", std::process::id()));
        std::fs::write(&dir, b"x").unwrap();
        let err = probe("leg", dir.to_str().unwrap()).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.ends_with("is not a block device"), "{err}");
        assert!(
            probe("leg", "/nonexistent")
                .unwrap_err()
                .contains("/nonexistent")
        );
    }
}

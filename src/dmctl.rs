//! Device-mapper devices by name, through /dev/mapper/control: what dmsetup
//! does for `create`, `reload`, `resume`, `remove`, `info`, `table` and
//! `status`, so an initramfs needs no dmsetup.
//!
//! Only the mirror subcommands use this, each a process of its own: a table
//! load or a mirror's INFO status waits for the daemon (PROTOCOL.md section
//! 9), so the daemon's own thread never may.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use crate::sys::dm::dm_ioctl;
use crate::wire::dm_ioctl::{
    self as wire, CMD_DEV_CREATE, CMD_DEV_REMOVE, CMD_DEV_STATUS, CMD_DEV_SUSPEND,
    CMD_LIST_DEVICES, CMD_TABLE_CLEAR, CMD_TABLE_LOAD, CMD_TABLE_STATUS, FLAG_ACTIVE_PRESENT,
    FLAG_INACTIVE_PRESENT, FLAG_STATUS_TABLE, FLAG_SUSPEND, Reply, Target, UDEV_PRIMARY_SOURCE,
};

const CONTROL_PATH: &str = "/dev/mapper/control";
/// misc major 10, MAPPER_CTRL_MINOR 236.
const CONTROL_DEV: (u64, u64) = (10, 236);
/// Room for a device list or a table's text (tables of a few targets).
const BUF_LEN: usize = 64 * 1024;

/// A device as DM_DEV_STATUS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: String,
    pub major: u64,
    pub minor: u64,
    pub open_count: i32,
    pub live_table: bool,
    pub inactive_table: bool,
    pub suspended: bool,
}

/// A table's target as the kernel gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetText {
    pub start: u64,
    pub length: u64,
    pub kind: String,
    pub text: String,
}

pub struct Control {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// The kernel's huge dev_t encoding (new_decode_dev).
fn decode_dev(dev: u64) -> (u64, u64) {
    let dev = dev as u32 as u64;
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

impl Control {
    /// Opens the control device, making its node (as dmsetup does) where
    /// devtmpfs or udev made none.
    pub fn open() -> Result<Self, String> {
        Self::open_with(OFlag::O_RDWR, true)
    }

    /// Opens it read-only and makes nothing, for `status`: the ioctls that
    /// only ask (list, info, table, status) need CAP_SYS_ADMIN, not a
    /// writable descriptor.
    pub fn open_read_only() -> Result<Self, String> {
        Self::open_with(OFlag::O_RDONLY, false)
    }

    fn open_with(access: OFlag, make_node: bool) -> Result<Self, String> {
        let flags = access | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = match nix::fcntl::open(CONTROL_PATH, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if make_node => {
                let _ = std::fs::create_dir_all("/dev/mapper");
                let dev = nix::sys::stat::makedev(CONTROL_DEV.0, CONTROL_DEV.1);
                nix::sys::stat::mknod(CONTROL_PATH, SFlag::S_IFCHR, Mode::S_IRUSR | Mode::S_IWUSR, dev)
                    .and_then(|()| nix::fcntl::open(CONTROL_PATH, flags, Mode::empty()))
                    .map_err(|e| {
                        format!("cannot open or make {CONTROL_PATH} ({}): is dm-mod loaded? (modprobe dm-mirror)", e.desc())
                    })?
            }
            Err(e) => {
                return Err(format!(
                    "cannot open {CONTROL_PATH} ({}): run as root with dm-mod loaded",
                    e.desc()
                ));
            }
        };
        Ok(Control {
            fd,
            buf: vec![0u8; BUF_LEN],
        })
    }

    fn call(
        &mut self,
        cmd: u8,
        flags: u32,
        name: &str,
        uuid: &str,
        event_nr: u32,
    ) -> Result<(), Errno> {
        self.buf.fill(0);
        wire::emit_named_request(&mut self.buf, flags, name, uuid, event_nr)
            .map_err(|_| Errno::ENAMETOOLONG)?;
        dm_ioctl(self.fd.as_fd(), cmd, &mut self.buf)
    }

    fn reply(&self) -> Result<Reply<'_>, Errno> {
        Reply::new_checked(&self.buf).map_err(|_| Errno::EINVAL)
    }

    fn info_from_reply(&self) -> Result<DeviceInfo, Errno> {
        let r = self.reply()?;
        let (major, minor) = decode_dev(r.dev());
        Ok(DeviceInfo {
            name: String::from_utf8_lossy(r.name()).into_owned(),
            uuid: String::from_utf8_lossy(r.uuid()).into_owned(),
            major,
            minor,
            open_count: r.open_count(),
            live_table: r.flags() & FLAG_ACTIVE_PRESENT != 0,
            inactive_table: r.flags() & FLAG_INACTIVE_PRESENT != 0,
            suspended: r.flags() & FLAG_SUSPEND != 0,
        })
    }

    /// The device named `name`, or None when there is none.
    pub fn info(&mut self, name: &str) -> Result<Option<DeviceInfo>, Errno> {
        match self.call(CMD_DEV_STATUS, 0, name, "", 0) {
            Ok(()) => self.info_from_reply().map(Some),
            Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names of every dm device.
    pub fn names(&mut self) -> Result<Vec<String>, Errno> {
        self.buf.fill(0);
        wire::emit_request(&mut self.buf, 0, 0);
        dm_ioctl(self.fd.as_fd(), CMD_LIST_DEVICES, &mut self.buf)?;
        let r = self.reply()?;
        if r.is_full() {
            return Err(Errno::ENOBUFS);
        }
        Ok(r.device_names()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    /// DM_DEV_CREATE: a device with no table.
    pub fn create(&mut self, name: &str, uuid: &str) -> Result<DeviceInfo, Errno> {
        self.call(CMD_DEV_CREATE, 0, name, uuid, 0)?;
        self.info_from_reply()
    }

    /// DM_TABLE_LOAD: the inactive table.
    pub fn load(&mut self, name: &str, targets: &[Target<'_>]) -> Result<(), Errno> {
        self.buf.fill(0);
        wire::emit_named_request(&mut self.buf, 0, name, "", 0).map_err(|_| Errno::ENAMETOOLONG)?;
        wire::emit_targets(&mut self.buf, targets).map_err(|_| Errno::E2BIG)?;
        dm_ioctl(self.fd.as_fd(), CMD_TABLE_LOAD, &mut self.buf)
    }

    /// DM_TABLE_CLEAR: drops the inactive table.
    pub fn clear(&mut self, name: &str) -> Result<(), Errno> {
        self.call(CMD_TABLE_CLEAR, 0, name, "", 0)
    }

    /// DM_DEV_SUSPEND with the suspend flag.
    pub fn suspend(&mut self, name: &str) -> Result<(), Errno> {
        self.call(CMD_DEV_SUSPEND, FLAG_SUSPEND, name, "", 0)
    }

    /// DM_DEV_SUSPEND without it: the inactive table, if any, goes live.
    /// The udev flag makes the resume's change event a genuine activation.
    pub fn resume(&mut self, name: &str) -> Result<(), Errno> {
        self.call(CMD_DEV_SUSPEND, 0, name, "", UDEV_PRIMARY_SOURCE)
    }

    /// DM_DEV_REMOVE.
    pub fn remove(&mut self, name: &str) -> Result<(), Errno> {
        self.call(CMD_DEV_REMOVE, 0, name, "", 0)
    }

    fn targets(&mut self, name: &str, flags: u32) -> Result<Vec<TargetText>, Errno> {
        self.call(CMD_TABLE_STATUS, flags, name, "", 0)?;
        let r = self.reply()?;
        if r.is_full() {
            return Err(Errno::ENOBUFS);
        }
        Ok(r.target_specs()
            .map(|t| TargetText {
                start: t.start,
                length: t.length,
                kind: String::from_utf8_lossy(t.kind).into_owned(),
                text: String::from_utf8_lossy(t.text).into_owned(),
            })
            .collect())
    }

    /// The live table, built by the kernel without asking any log server.
    pub fn table(&mut self, name: &str) -> Result<Vec<TargetText>, Errno> {
        self.targets(name, FLAG_STATUS_TABLE)
    }

    /// The live table's status. A userspace log's part is asked of the
    /// daemon: call only when it runs, or this waits until it does.
    pub fn status(&mut self, name: &str) -> Result<Vec<TargetText>, Errno> {
        self.targets(name, 0)
    }
}

/// Waits up to `wait_ms` for udev to make /dev/mapper/NAME for the device
/// (major, minor), then makes it (as dmsetup does without udev). A node or
/// link that is there already is left alone when it is the device.
pub fn ensure_node(name: &str, major: u64, minor: u64, wait_ms: u64) -> Result<(), String> {
    let path = Path::new("/dev/mapper").join(name);
    let want = nix::sys::stat::makedev(major, minor);
    let is_it = || nix::sys::stat::stat(&path).is_ok_and(|st| st.st_rdev == want);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    while !is_it() {
        if std::time::Instant::now() >= deadline {
            let _ = std::fs::create_dir_all("/dev/mapper");
            let _ = std::fs::remove_file(&path);
            let mode = Mode::S_IRUSR | Mode::S_IWUSR | Mode::S_IRGRP;
            nix::sys::stat::mknod(&path, SFlag::S_IFBLK, mode, want).map_err(|e| {
                format!(
                    "cannot make the device node {} ({})",
                    path.display(),
                    e.desc()
                )
            })?;
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Removes /dev/mapper/NAME if it is still there after the device went
/// (udev removes it where it runs).
pub fn remove_node(name: &str) {
    let _ = std::fs::remove_file(Path::new("/dev/mapper").join(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_decode() {
        assert_eq!(decode_dev(0xfd03), (253, 3));
        // minor 300 = 0x12c: low byte 0x2c, high bits at 20.
        assert_eq!(decode_dev(0x0010_fd2c), (253, 300));
    }
}

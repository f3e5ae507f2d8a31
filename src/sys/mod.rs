//! The only module with `unsafe`: system calls that nix does not wrap
//! safely. Every block says why it is sound.
#![allow(unsafe_code)]

pub mod dm;
pub mod mapping;
pub mod netlink;

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// BLKSSZGET = _IO(0x12, 104): the logical block size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;

nix::ioctl_read_bad!(blksszget, BLKSSZGET, libc::c_int);

/// The logical block size of the block device open on `fd`.
pub fn logical_block_size(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points
    // at a live local of that type; the fd is borrowed, so it is open.
    unsafe { blksszget(fd.as_raw_fd(), &mut size) }?;
    u32::try_from(size).map_err(|_| Errno::EINVAL)
}

/// The two sides of a fork.
pub enum Forked {
    Parent { child: nix::unistd::Pid },
    Child,
}

/// Forks the process. Call only while single-threaded (dm-ulogd always is:
/// it starts no threads).
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: fork is unsafe in a multi-threaded process because only the
    // calling thread survives in the child; dm-ulogd never starts a thread,
    // so the child has every thread the parent had.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent { child }),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

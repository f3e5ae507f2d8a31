//! The only module with `unsafe`: system calls that nix does not wrap
//! safely. Every block says why it is sound.
#![allow(unsafe_code)]

pub mod aio;
pub mod dm;
pub mod mapping;
pub mod netlink;

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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

/// Sets signal `signo` (any number, real-time ones included, which nix's
/// Signal cannot name) to be ignored.
pub fn ignore_signal(signo: libc::c_int) -> Result<(), Errno> {
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal
    // context and nothing can be unsound; the kernel checks the number.
    let previous = unsafe { libc::signal(signo, libc::SIG_IGN) };
    if previous == libc::SIG_ERR {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Closes every file descriptor numbered `first` or above: close_range, or
/// on kernels before 5.9 each one listed in /proc/self/fd.
pub fn close_descriptors_from(first: RawFd) -> Result<(), Errno> {
    let first = libc::c_uint::try_from(first).map_err(|_| Errno::EINVAL)?;
    // SAFETY: close_range takes plain integers; the caller owns no
    // descriptor in the range that it still uses (it is called before the
    // daemon opens any).
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if closed == 0 {
        return Ok(());
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| fd >= first as RawFd)
        .collect();
    for fd in open {
        // SAFETY: as above; the directory's own descriptor, listed too, is
        // already closed, which makes this close fail harmlessly (EBADF).
        unsafe { libc::close(fd) };
    }
    Ok(())
}

//! The device-mapper control device's ioctl (include/uapi/linux/dm-ioctl.h).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::wire::bytes::u32_at;
use crate::wire::dm_ioctl::HEADER_LEN;

/// The ioctl type of device-mapper commands (DM_IOCTL).
const DM_IOCTL: u8 = 0xfd;
/// Where struct dm_ioctl keeps the size of the whole buffer.
const DATA_SIZE_FIELD: usize = 12;

/// Runs device-mapper command `cmd` on the control device `control` with
/// `buf`: a request header made by `wire::dm_ioctl::emit_request`, whose
/// answer the kernel writes into the same buffer.
pub fn dm_ioctl(control: BorrowedFd<'_>, cmd: u8, buf: &mut [u8]) -> Result<(), Errno> {
    if buf.len() < HEADER_LEN || u32_at(buf, DATA_SIZE_FIELD) as usize > buf.len() {
        return Err(Errno::EINVAL);
    }
    let request = nix::request_code_readwrite!(DM_IOCTL, cmd, HEADER_LEN);
    // SAFETY: the kernel copies in the header, then reads and writes at most
    // data_size bytes from the pointer; data_size was just checked to be
    // within `buf`, which is exclusively borrowed for the call. The fd is
    // borrowed, so it stays open.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    Errno::result(r).map(drop)
}

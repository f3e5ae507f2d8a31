//! Views over the bytes of a connector datagram, in smoltcp's style: a view
//! wraps a caller's buffer, `new_checked` validates the length once, and no
//! accessor can panic afterwards. Nothing here does I/O or allocates.
//!
//! Layout (host byte order, no padding): nlmsghdr (16) + cn_msg (20) +
//! dm_ulog_request (160) + payload. The request starts at byte 36, which is not
//! 8-byte aligned, so every field is read by offset, never by casting.

pub mod cn_msg;
pub mod dm_ioctl;
pub mod frame;
pub mod nlmsg;
pub mod ulog;

use core::fmt;

/// Why a buffer cannot be viewed as the structure asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed header.
    Truncated,
    /// A length field points past the end of the buffer.
    BadLength,
    /// The uuid field holds no terminating NUL within its 129 bytes.
    UnterminatedUuid,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "shorter than its header",
            WireError::BadLength => "length field disagrees with the bytes received",
            WireError::UnterminatedUuid => "uuid is not NUL-terminated",
        })
    }
}

/// Fixed-width field readers and writers. Callers pass offsets that a prior
/// length check has proven to be in bounds.
pub(crate) mod bytes {
    pub fn u16_at(buf: &[u8], at: usize) -> u16 {
        let mut b = [0u8; 2];
        b.copy_from_slice(&buf[at..at + 2]);
        u16::from_ne_bytes(b)
    }
    pub fn u32_at(buf: &[u8], at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&buf[at..at + 4]);
        u32::from_ne_bytes(b)
    }
    pub fn u64_at(buf: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_ne_bytes(b)
    }
    pub fn put_u16(buf: &mut [u8], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }
    pub fn put_u32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    pub fn put_u64(buf: &mut [u8], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

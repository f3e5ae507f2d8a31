//! `struct nlmsghdr`: the netlink message header.

use super::{WireError, bytes};

mod field {
    pub const LEN: usize = 0;
    pub const TYPE: usize = 4;
    pub const FLAGS: usize = 6;
    pub const SEQ: usize = 8;
    pub const PID: usize = 12;
}

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 16;
/// The message type the kernel's connector uses for every message.
pub const NLMSG_DONE: u16 = 3;

/// A view of a netlink message over a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NlMsg<T> {
    /// Wraps a buffer without checks; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        NlMsg { buffer }
    }

    /// Wraps a buffer that holds a whole header and whose `len` field lies
    /// within the buffer and covers at least the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let msg = Self::new_unchecked(buffer);
        let have = msg.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = msg.len() as usize;
        if len < HEADER_LEN || len > have {
            return Err(WireError::BadLength);
        }
        Ok(msg)
    }

    pub fn len(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::LEN)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    pub fn msg_type(&self) -> u16 {
        bytes::u16_at(self.buffer.as_ref(), field::TYPE)
    }
    pub fn flags(&self) -> u16 {
        bytes::u16_at(self.buffer.as_ref(), field::FLAGS)
    }
    pub fn seq(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::SEQ)
    }
    pub fn pid(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::PID)
    }

    /// The bytes after the header, up to `len`.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NlMsg<T> {
    pub fn set_len(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::LEN, v)
    }
    pub fn set_msg_type(&mut self, v: u16) {
        bytes::put_u16(self.buffer.as_mut(), field::TYPE, v)
    }
    pub fn set_flags(&mut self, v: u16) {
        bytes::put_u16(self.buffer.as_mut(), field::FLAGS, v)
    }
    pub fn set_seq(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::SEQ, v)
    }
    pub fn set_pid(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::PID, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 20] = [
        20, 0, 0, 0, // len
        3, 0, // type
        0, 0, // flags
        7, 0, 0, 0, // seq
        0, 0, 0, 0, // pid
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn parses_fields() {
        let msg = NlMsg::new_checked(&BYTES[..]).unwrap();
        assert_eq!(msg.len(), 20);
        assert_eq!(msg.msg_type(), NLMSG_DONE);
        assert_eq!(msg.flags(), 0);
        assert_eq!(msg.seq(), 7);
        assert_eq!(msg.pid(), 0);
        assert_eq!(msg.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn emits_the_same_bytes() {
        let mut buf = [0u8; 20];
        buf[16..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let mut msg = NlMsg::new_unchecked(&mut buf[..]);
        msg.set_len(20);
        msg.set_msg_type(NLMSG_DONE);
        msg.set_flags(0);
        msg.set_seq(7);
        msg.set_pid(0);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn rejects_short_and_inconsistent_buffers() {
        assert_eq!(
            NlMsg::new_checked(&BYTES[..15]).unwrap_err(),
            WireError::Truncated
        );
        let mut long = BYTES;
        long[0] = 21;
        assert_eq!(
            NlMsg::new_checked(&long[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut short = BYTES;
        short[0] = 15;
        assert_eq!(
            NlMsg::new_checked(&short[..]).unwrap_err(),
            WireError::BadLength
        );
    }
}

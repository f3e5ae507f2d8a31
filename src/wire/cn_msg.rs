//! `struct cn_msg`: the connector header that follows the netlink header.

use super::{WireError, bytes};

mod field {
    pub const IDX: usize = 0;
    pub const VAL: usize = 4;
    pub const SEQ: usize = 8;
    pub const ACK: usize = 12;
    pub const LEN: usize = 16;
    pub const FLAGS: usize = 18;
}

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 20;
/// The connector index of device-mapper's userspace log (CN_IDX_DM), which is
/// also the netlink multicast group the kernel sends requests to.
pub const CN_IDX_DM: u32 = 7;
/// The connector value of device-mapper's userspace log (CN_VAL_DM_USERSPACE_LOG).
pub const CN_VAL_DM_USERSPACE_LOG: u32 = 1;

/// A view of a connector message over a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct CnMsg<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CnMsg<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        CnMsg { buffer }
    }

    /// Wraps a buffer that holds the header and the `len` bytes it announces.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let msg = Self::new_unchecked(buffer);
        let have = msg.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if HEADER_LEN + msg.len() as usize > have {
            return Err(WireError::BadLength);
        }
        Ok(msg)
    }

    pub fn idx(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::IDX)
    }
    pub fn val(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::VAL)
    }
    pub fn seq(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::SEQ)
    }
    pub fn ack(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::ACK)
    }
    pub fn len(&self) -> u16 {
        bytes::u16_at(self.buffer.as_ref(), field::LEN)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn flags(&self) -> u16 {
        bytes::u16_at(self.buffer.as_ref(), field::FLAGS)
    }

    /// True when the id is device-mapper's userspace log.
    pub fn is_dm_log(&self) -> bool {
        self.idx() == CN_IDX_DM && self.val() == CN_VAL_DM_USERSPACE_LOG
    }

    /// The `len` bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CnMsg<T> {
    pub fn set_idx(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::IDX, v)
    }
    pub fn set_val(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::VAL, v)
    }
    pub fn set_seq(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::SEQ, v)
    }
    pub fn set_ack(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::ACK, v)
    }
    pub fn set_len(&mut self, v: u16) {
        bytes::put_u16(self.buffer.as_mut(), field::LEN, v)
    }
    pub fn set_flags(&mut self, v: u16) {
        bytes::put_u16(self.buffer.as_mut(), field::FLAGS, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 22] = [
        7, 0, 0, 0, // idx
        1, 0, 0, 0, // val
        9, 0, 0, 0, // seq
        0, 0, 0, 0, // ack
        2, 0, // len
        0, 0, // flags
        0x11, 0x22,
    ];

    #[test]
    fn parses_fields() {
        let msg = CnMsg::new_checked(&BYTES[..]).unwrap();
        assert!(msg.is_dm_log());
        assert_eq!(msg.seq(), 9);
        assert_eq!(msg.ack(), 0);
        assert_eq!(msg.len(), 2);
        assert_eq!(msg.flags(), 0);
        assert_eq!(msg.payload(), &[0x11, 0x22]);
    }

    #[test]
    fn emits_the_same_bytes() {
        let mut buf = [0u8; 22];
        buf[20..].copy_from_slice(&[0x11, 0x22]);
        let mut msg = CnMsg::new_unchecked(&mut buf[..]);
        msg.set_idx(CN_IDX_DM);
        msg.set_val(CN_VAL_DM_USERSPACE_LOG);
        msg.set_seq(9);
        msg.set_ack(0);
        msg.set_len(2);
        msg.set_flags(0);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn rejects_a_len_past_the_buffer() {
        assert_eq!(
            CnMsg::new_checked(&BYTES[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            CnMsg::new_checked(&BYTES[..21]).unwrap_err(),
            WireError::BadLength
        );
    }
}

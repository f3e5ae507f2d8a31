//! `struct dm_ulog_request` (include/uapi/linux/dm-log-userspace.h).

use super::{WireError, bytes};

mod field {
    pub const LUID: usize = 0;
    pub const UUID: usize = 8;
    pub const VERSION: usize = 140;
    pub const ERROR: usize = 144;
    pub const SEQ: usize = 148;
    pub const REQUEST_TYPE: usize = 152;
    pub const DATA_SIZE: usize = 156;
}

/// Where the uuid field starts.
pub const UUID_OFFSET: usize = field::UUID;
/// Size of the header in bytes, up to the payload.
pub const HEADER_LEN: usize = 160;
/// Size of the uuid field, including its terminating NUL.
pub const UUID_FIELD_LEN: usize = 129;
/// The longest uuid, without its NUL (DM_UUID_LEN - 1).
pub const MAX_UUID_LEN: usize = UUID_FIELD_LEN - 1;
/// The protocol version this daemon speaks (DM_ULOG_REQUEST_VERSION).
pub const VERSION: u32 = 3;

/// The operations of the protocol, numbered as the kernel numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestType {
    Ctr = 1,
    Dtr = 2,
    Presuspend = 3,
    Postsuspend = 4,
    Resume = 5,
    GetRegionSize = 6,
    IsClean = 7,
    InSync = 8,
    Flush = 9,
    MarkRegion = 10,
    ClearRegion = 11,
    GetResyncWork = 12,
    SetRegionSync = 13,
    GetSyncCount = 14,
    StatusInfo = 15,
    StatusTable = 16,
    IsRemoteRecovering = 17,
}

impl RequestType {
    /// Decodes the request type field; only its low 8 bits name the type
    /// (DM_ULOG_REQUEST_TYPE), the rest is reserved.
    pub fn from_field(raw: u32) -> Option<Self> {
        use RequestType::*;
        Some(match raw & 0xff {
            1 => Ctr,
            2 => Dtr,
            3 => Presuspend,
            4 => Postsuspend,
            5 => Resume,
            6 => GetRegionSize,
            7 => IsClean,
            8 => InSync,
            9 => Flush,
            10 => MarkRegion,
            11 => ClearRegion,
            12 => GetResyncWork,
            13 => SetRegionSync,
            14 => GetSyncCount,
            15 => StatusInfo,
            16 => StatusTable,
            17 => IsRemoteRecovering,
            _ => return None,
        })
    }

    /// The kernel's name for the request, for log lines.
    pub fn name(self) -> &'static str {
        use RequestType::*;
        match self {
            Ctr => "CTR",
            Dtr => "DTR",
            Presuspend => "PRESUSPEND",
            Postsuspend => "POSTSUSPEND",
            Resume => "RESUME",
            GetRegionSize => "GET_REGION_SIZE",
            IsClean => "IS_CLEAN",
            InSync => "IN_SYNC",
            Flush => "FLUSH",
            MarkRegion => "MARK_REGION",
            ClearRegion => "CLEAR_REGION",
            GetResyncWork => "GET_RESYNC_WORK",
            SetRegionSync => "SET_REGION_SYNC",
            GetSyncCount => "GET_SYNC_COUNT",
            StatusInfo => "STATUS_INFO",
            StatusTable => "STATUS_TABLE",
            IsRemoteRecovering => "IS_REMOTE_RECOVERING",
        }
    }
}

/// A view of a log request (header and payload) over a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct UlogRequest<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UlogRequest<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        UlogRequest { buffer }
    }

    /// Wraps a buffer that holds the header, the `data_size` bytes it
    /// announces and a NUL-terminated uuid.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let req = Self::new_unchecked(buffer);
        let have = req.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if (HEADER_LEN as u64) + u64::from(req.data_size()) > have as u64 {
            return Err(WireError::BadLength);
        }
        let uuid_field = &req.buffer.as_ref()[field::UUID..field::UUID + UUID_FIELD_LEN];
        if !uuid_field.contains(&0) {
            return Err(WireError::UnterminatedUuid);
        }
        Ok(req)
    }

    pub fn luid(&self) -> u64 {
        bytes::u64_at(self.buffer.as_ref(), field::LUID)
    }

    /// The uuid up to (not including) its NUL.
    pub fn uuid(&self) -> &[u8] {
        let f = &self.buffer.as_ref()[field::UUID..field::UUID + UUID_FIELD_LEN];
        let end = f.iter().position(|&b| b == 0).unwrap_or(MAX_UUID_LEN);
        &f[..end]
    }

    pub fn version(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::VERSION)
    }
    pub fn error(&self) -> i32 {
        bytes::u32_at(self.buffer.as_ref(), field::ERROR) as i32
    }
    pub fn seq(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::SEQ)
    }
    /// The raw request type field, reserved bits included.
    pub fn request_type_field(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::REQUEST_TYPE)
    }
    pub fn request_type(&self) -> Option<RequestType> {
        RequestType::from_field(self.request_type_field())
    }
    pub fn data_size(&self) -> u32 {
        bytes::u32_at(self.buffer.as_ref(), field::DATA_SIZE)
    }
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.data_size() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UlogRequest<T> {
    pub fn set_luid(&mut self, v: u64) {
        bytes::put_u64(self.buffer.as_mut(), field::LUID, v)
    }
    /// Writes the uuid and zero-fills the rest of the field; a uuid longer
    /// than MAX_UUID_LEN is cut so the field stays NUL-terminated.
    pub fn set_uuid(&mut self, uuid: &[u8]) {
        let n = uuid.len().min(MAX_UUID_LEN);
        let f = &mut self.buffer.as_mut()[field::UUID..field::UUID + UUID_FIELD_LEN + 3];
        f.fill(0);
        f[..n].copy_from_slice(&uuid[..n]);
    }
    pub fn set_version(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::VERSION, v)
    }
    pub fn set_error(&mut self, v: i32) {
        bytes::put_u32(self.buffer.as_mut(), field::ERROR, v as u32)
    }
    pub fn set_seq(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::SEQ, v)
    }
    pub fn set_request_type_field(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::REQUEST_TYPE, v)
    }
    pub fn set_data_size(&mut self, v: u32) {
        bytes::put_u32(self.buffer.as_mut(), field::DATA_SIZE, v)
    }
    /// Everything after the header: room for the payload.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 168] {
        let mut b = [0u8; 168];
        b[0..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_ne_bytes());
        b[8..12].copy_from_slice(b"abc\0");
        b[140..144].copy_from_slice(&3u32.to_ne_bytes());
        b[144..148].copy_from_slice(&(-5i32).to_ne_bytes());
        b[148..152].copy_from_slice(&42u32.to_ne_bytes());
        b[152..156].copy_from_slice(&0x0100_000au32.to_ne_bytes());
        b[156..160].copy_from_slice(&8u32.to_ne_bytes());
        b[160..168].copy_from_slice(&99u64.to_ne_bytes());
        b
    }

    #[test]
    fn parses_fields() {
        let bytes = sample();
        let req = UlogRequest::new_checked(&bytes[..]).unwrap();
        assert_eq!(req.luid(), 0x1122_3344_5566_7788);
        assert_eq!(req.uuid(), b"abc");
        assert_eq!(req.version(), 3);
        assert_eq!(req.error(), -5);
        assert_eq!(req.seq(), 42);
        // Reserved high bits are ignored.
        assert_eq!(req.request_type(), Some(RequestType::MarkRegion));
        assert_eq!(req.data_size(), 8);
        assert_eq!(req.data(), &99u64.to_ne_bytes());
    }

    #[test]
    fn emits_the_same_bytes() {
        let mut buf = [0xffu8; 168];
        let mut req = UlogRequest::new_unchecked(&mut buf[..]);
        req.set_luid(0x1122_3344_5566_7788);
        req.set_uuid(b"abc");
        req.set_version(3);
        req.set_error(-5);
        req.set_seq(42);
        req.set_request_type_field(0x0100_000a);
        req.set_data_size(8);
        req.data_mut()[..8].copy_from_slice(&99u64.to_ne_bytes());
        assert_eq!(buf, sample());
    }

    #[test]
    fn rejects_bad_buffers() {
        let bytes = sample();
        assert_eq!(
            UlogRequest::new_checked(&bytes[..159]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            UlogRequest::new_checked(&bytes[..167]).unwrap_err(),
            WireError::BadLength
        );
        let mut huge = sample();
        huge[156..160].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(
            UlogRequest::new_checked(&huge[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut unterminated = sample();
        unterminated[8..137].fill(b'x');
        assert_eq!(
            UlogRequest::new_checked(&unterminated[..]).unwrap_err(),
            WireError::UnterminatedUuid
        );
    }

    #[test]
    fn knows_all_seventeen_types() {
        for raw in 1..=17u32 {
            let t = RequestType::from_field(raw).unwrap();
            assert_eq!(t as u32, raw);
            assert!(!t.name().is_empty());
        }
        assert_eq!(RequestType::from_field(0), None);
        assert_eq!(RequestType::from_field(18), None);
    }
}

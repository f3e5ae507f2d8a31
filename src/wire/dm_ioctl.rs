//! Views over the buffer of a device-mapper ioctl (include/uapi/linux/dm-ioctl.h):
//! the fixed `struct dm_ioctl` header, then the command's data. The daemon
//! asks only two things: the list of dm devices (DM_LIST_DEVICES) and a
//! device's table as text (DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG), which
//! the kernel builds without asking any log server. The mirror subcommands
//! (create, assemble, convert, remove), separate processes, also make,
//! load, resume and remove devices by name.

use super::bytes::{put_u32, put_u64, u32_at, u64_at};

/// sizeof(struct dm_ioctl); the data starts right after it (8-aligned).
pub const HEADER_LEN: usize = 312;
/// The interface version dm-ulogd speaks: 4.x (any minor the kernel has).
const VERSION_MAJOR: u32 = 4;

pub const CMD_LIST_DEVICES: u8 = 2;
pub const CMD_DEV_CREATE: u8 = 3;
pub const CMD_DEV_REMOVE: u8 = 4;
pub const CMD_DEV_SUSPEND: u8 = 6;
pub const CMD_DEV_STATUS: u8 = 7;
pub const CMD_TABLE_LOAD: u8 = 9;
pub const CMD_TABLE_CLEAR: u8 = 10;
pub const CMD_TABLE_STATUS: u8 = 12;

/// In DM_DEV_SUSPEND: suspend; without it the command resumes.
pub const FLAG_SUSPEND: u32 = 1 << 1;
/// Out: the device has a live table.
pub const FLAG_ACTIVE_PRESENT: u32 = 1 << 5;
/// Out: the device has an inactive (loaded, not resumed) table.
pub const FLAG_INACTIVE_PRESENT: u32 = 1 << 6;

/// In: return the table text instead of the status text.
pub const FLAG_STATUS_TABLE: u32 = 1 << 4;
/// Out: the data did not fit the buffer.
pub const FLAG_BUFFER_FULL: u32 = 1 << 8;
/// In: describe the inactive (loaded, not yet resumed) table.
pub const FLAG_QUERY_INACTIVE: u32 = 1 << 12;

mod field {
    pub const VERSION: usize = 0;
    pub const DATA_SIZE: usize = 12;
    pub const DATA_START: usize = 16;
    pub const TARGET_COUNT: usize = 20;
    pub const OPEN_COUNT: usize = 24;
    pub const FLAGS: usize = 28;
    pub const EVENT_NR: usize = 32;
    pub const DEV: usize = 40;
    pub const NAME: usize = 48;
    pub const NAME_LEN: usize = 128;
    pub const UUID: usize = 176;
    pub const UUID_LEN: usize = 129;
}

/// udev flags ride in the upper half of event_nr (libdevmapper's cookie,
/// DM_UDEV_FLAGS_SHIFT); a cookie with flags and no semaphore asks for no
/// notification. DM_UDEV_PRIMARY_SOURCE_FLAG tells 55-dm.rules that the
/// change event of a resume is a genuine activation, so udev makes the
/// /dev/mapper link and systemd sees the device.
pub const UDEV_PRIMARY_SOURCE: u32 = 0x0040 << 16;

/// struct dm_name_list: dev u64, next u32 (from this record's start), name.
mod name_list {
    pub const DEV: usize = 0;
    pub const NEXT: usize = 8;
    pub const LEN: usize = 12;
}

/// struct dm_target_spec: sector_start u64, length u64, status i32, next u32
/// (in a reply: from the data's start), target_type [16], then the text.
mod target_spec {
    pub const SECTOR_START: usize = 0;
    pub const LENGTH: usize = 8;
    pub const NEXT: usize = 20;
    pub const TYPE: usize = 24;
    pub const TYPE_LEN: usize = 16;
    pub const LEN: usize = 40;
}

/// Fills the header of a request that uses all of `buf` (at least
/// HEADER_LEN bytes) for its answer; `dev` selects the device (0: none).
pub fn emit_request(buf: &mut [u8], flags: u32, dev: u64) {
    buf[..HEADER_LEN].fill(0);
    put_u32(buf, field::VERSION, VERSION_MAJOR);
    put_u32(
        buf,
        field::DATA_SIZE,
        buf.len().min(u32::MAX as usize) as u32,
    );
    put_u32(buf, field::DATA_START, HEADER_LEN as u32);
    put_u32(buf, field::FLAGS, flags);
    put_u64(buf, field::DEV, dev);
}

/// A name, uuid or table does not fit its field or the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// `emit_request` for a device named `name` (and, for DM_DEV_CREATE, given
/// `uuid`); `event_nr` carries udev flags (UDEV_PRIMARY_SOURCE) or 0.
pub fn emit_named_request(
    buf: &mut [u8],
    flags: u32,
    name: &str,
    uuid: &str,
    event_nr: u32,
) -> Result<(), TooLong> {
    if buf.len() < HEADER_LEN || name.len() >= field::NAME_LEN || uuid.len() >= field::UUID_LEN {
        return Err(TooLong);
    }
    emit_request(buf, flags, 0);
    put_u32(buf, field::EVENT_NR, event_nr);
    buf[field::NAME..field::NAME + name.len()].copy_from_slice(name.as_bytes());
    buf[field::UUID..field::UUID + uuid.len()].copy_from_slice(uuid.as_bytes());
    Ok(())
}

/// One target of a table to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub start: u64,
    pub length: u64,
    pub kind: &'a str,
    pub params: &'a str,
}

/// Writes `targets` as DM_TABLE_LOAD's data after a header made by
/// `emit_named_request`: each dm_target_spec, its NUL-terminated text,
/// padded to 8 bytes, `next` counted from the spec's own start.
pub fn emit_targets(buf: &mut [u8], targets: &[Target<'_>]) -> Result<(), TooLong> {
    let mut at = HEADER_LEN;
    for t in targets {
        if t.kind.len() >= target_spec::TYPE_LEN {
            return Err(TooLong);
        }
        let len = (target_spec::LEN + t.params.len() + 1).next_multiple_of(8);
        if at + len > buf.len() {
            return Err(TooLong);
        }
        let spec = &mut buf[at..at + len];
        spec.fill(0);
        put_u64(spec, target_spec::SECTOR_START, t.start);
        put_u64(spec, target_spec::LENGTH, t.length);
        put_u32(spec, target_spec::NEXT, len as u32);
        spec[target_spec::TYPE..target_spec::TYPE + t.kind.len()]
            .copy_from_slice(t.kind.as_bytes());
        spec[target_spec::LEN..target_spec::LEN + t.params.len()]
            .copy_from_slice(t.params.as_bytes());
        at += len;
    }
    put_u32(buf, field::TARGET_COUNT, targets.len() as u32);
    Ok(())
}

/// Sizes in an ioctl's answer point outside its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength;

/// An answer the kernel wrote into a request buffer.
pub struct Reply<'a> {
    buf: &'a [u8],
    data_start: usize,
    data_end: usize,
}

impl<'a> Reply<'a> {
    /// Checks the header once; afterwards no accessor can panic.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, BadLength> {
        if buf.len() < HEADER_LEN {
            return Err(BadLength);
        }
        let data_start = u32_at(buf, field::DATA_START) as usize;
        let data_end = u32_at(buf, field::DATA_SIZE) as usize;
        if data_start < HEADER_LEN || data_end > buf.len() {
            return Err(BadLength);
        }
        Ok(Reply {
            buf,
            data_start,
            data_end: data_end.max(data_start),
        })
    }

    /// The answer did not fit: a device list is then empty, a table's
    /// targets are those that fitted (zero the buffer before each call).
    pub fn is_full(&self) -> bool {
        u32_at(self.buf, field::FLAGS) & FLAG_BUFFER_FULL != 0
    }

    /// The device's name, uuid, number (huge-encoded dev_t), open count
    /// and flags, as DM_DEV_STATUS and the other device commands answer.
    pub fn name(&self) -> &'a [u8] {
        until_nul(&self.buf[field::NAME..field::NAME + field::NAME_LEN])
    }
    pub fn uuid(&self) -> &'a [u8] {
        until_nul(&self.buf[field::UUID..field::UUID + field::UUID_LEN])
    }
    pub fn dev(&self) -> u64 {
        u64_at(self.buf, field::DEV)
    }
    pub fn open_count(&self) -> i32 {
        u32_at(self.buf, field::OPEN_COUNT) as i32
    }
    pub fn flags(&self) -> u32 {
        u32_at(self.buf, field::FLAGS)
    }

    fn data(&self) -> &'a [u8] {
        &self.buf[self.data_start..self.data_end]
    }

    /// DM_LIST_DEVICES: the device numbers (huge-encoded dev_t) of every
    /// dm device.
    pub fn devices(&self) -> impl Iterator<Item = u64> + 'a {
        self.name_list().map(|(dev, _)| dev)
    }

    /// DM_LIST_DEVICES: each dm device's name.
    pub fn device_names(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.name_list().map(|(_, name)| name)
    }

    /// DM_LIST_DEVICES: each dm device's number and name.
    fn name_list(&self) -> NameList<'a> {
        NameList {
            data: self.data(),
            at: Some(0),
        }
    }

    /// DM_TABLE_STATUS: each target's start, length, type and text.
    pub fn target_specs(&self) -> SpecIter<'a> {
        SpecIter {
            data: self.data(),
            at: Some(0),
            left: u32_at(self.buf, field::TARGET_COUNT),
        }
    }

    /// DM_TABLE_STATUS: each target's type and text.
    pub fn targets(&self) -> TargetIter<'a> {
        TargetIter {
            data: self.data(),
            at: Some(0),
            left: u32_at(self.buf, field::TARGET_COUNT),
        }
    }
}

/// The records of a DM_LIST_DEVICES answer: (device number, name).
struct NameList<'a> {
    data: &'a [u8],
    at: Option<usize>,
}

impl<'a> Iterator for NameList<'a> {
    type Item = (u64, &'a [u8]);
    fn next(&mut self) -> Option<(u64, &'a [u8])> {
        let at = self.at?;
        if at + name_list::LEN > self.data.len() {
            self.at = None;
            return None;
        }
        let dev = u64_at(self.data, at + name_list::DEV);
        let next = u32_at(self.data, at + name_list::NEXT) as usize;
        self.at = (next != 0).then(|| at + next);
        // A lone record with dev 0 means "no devices".
        if dev == 0 {
            self.next()
        } else {
            Some((dev, until_nul(&self.data[at + name_list::LEN..])))
        }
    }
}

/// A target of a table the kernel answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec<'a> {
    pub start: u64,
    pub length: u64,
    pub kind: &'a [u8],
    pub text: &'a [u8],
}

pub struct SpecIter<'a> {
    data: &'a [u8],
    at: Option<usize>,
    left: u32,
}

impl<'a> Iterator for SpecIter<'a> {
    type Item = TargetSpec<'a>;
    fn next(&mut self) -> Option<TargetSpec<'a>> {
        let at = self.at?;
        if self.left == 0 || at + target_spec::LEN > self.data.len() {
            self.at = None;
            return None;
        }
        self.left -= 1;
        let spec = &self.data[at..];
        let next = u32_at(spec, target_spec::NEXT) as usize;
        self.at = (next > at).then_some(next);
        Some(TargetSpec {
            start: u64_at(spec, target_spec::SECTOR_START),
            length: u64_at(spec, target_spec::LENGTH),
            kind: until_nul(&spec[target_spec::TYPE..target_spec::TYPE + target_spec::TYPE_LEN]),
            text: until_nul(&spec[target_spec::LEN..]),
        })
    }
}

pub struct TargetIter<'a> {
    data: &'a [u8],
    at: Option<usize>,
    left: u32,
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

impl<'a> Iterator for TargetIter<'a> {
    /// (target type, text)
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at?;
        if self.left == 0 || at + target_spec::LEN > self.data.len() {
            self.at = None;
            return None;
        }
        self.left -= 1;
        let spec = &self.data[at..];
        let kind = until_nul(&spec[target_spec::TYPE..target_spec::TYPE + target_spec::TYPE_LEN]);
        let text = until_nul(&spec[target_spec::LEN..]);
        let next = u32_at(spec, target_spec::NEXT) as usize;
        // Offsets only grow; anything else ends the walk.
        self.at = (next > at).then_some(next);
        Some((kind, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_with(data: &[u8], targets: u32) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + data.len()];
        emit_request(&mut buf, 0, 0);
        put_u32(&mut buf, field::TARGET_COUNT, targets);
        buf[HEADER_LEN..].copy_from_slice(data);
        buf
    }

    #[test]
    fn request_header_bytes() {
        let mut buf = [0xffu8; 400];
        emit_request(&mut buf, FLAG_STATUS_TABLE, 0x0000_0fd0_0000_0003);
        assert_eq!(&buf[0..4], &4u32.to_ne_bytes());
        assert_eq!(&buf[4..12], &[0; 8]);
        assert_eq!(&buf[12..16], &400u32.to_ne_bytes());
        assert_eq!(&buf[16..20], &312u32.to_ne_bytes());
        assert_eq!(&buf[28..32], &16u32.to_ne_bytes());
        assert_eq!(&buf[40..48], &0x0000_0fd0_0000_0003u64.to_ne_bytes());
        assert!(buf[48..HEADER_LEN].iter().all(|&b| b == 0));
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0xff));
    }

    /// A DM_LIST_DEVICES answer of two records: "a" (253:1) at 0 (next 24),
    /// "bb" (253:2) at 24 (next 0).
    fn two_devices() -> Vec<u8> {
        let mut data = vec![0u8; 48];
        put_u64(&mut data, 0, 0xfd00001);
        put_u32(&mut data, 8, 24);
        data[12] = b'a';
        put_u64(&mut data, 24, 0xfd00002);
        data[36..38].copy_from_slice(b"bb");
        data
    }

    #[test]
    fn device_list() {
        let data = two_devices();
        let buf = reply_with(&data, 0);
        let reply = Reply::new_checked(&buf).unwrap();
        assert_eq!(reply.devices().collect::<Vec<_>>(), [0xfd00001, 0xfd00002]);
        // No devices: one zeroed record.
        let buf = reply_with(&[0u8; 16], 0);
        assert_eq!(Reply::new_checked(&buf).unwrap().devices().count(), 0);
    }

    #[test]
    fn target_list() {
        let mut data = vec![0u8; 128];
        data[24..30].copy_from_slice(b"mirror");
        data[40..50].copy_from_slice(b"core 1 2 3");
        put_u32(&mut data, 20, 56);
        data[56 + 24..56 + 30].copy_from_slice(b"linear");
        data[56 + 40..56 + 47].copy_from_slice(b"8:0 100");
        let buf = reply_with(&data, 2);
        let reply = Reply::new_checked(&buf).unwrap();
        let specs: Vec<_> = reply.target_specs().map(|t| (t.kind, t.text)).collect();
        let got: Vec<_> = reply.targets().collect();
        assert_eq!(specs, got);
        assert_eq!(
            got,
            [
                (&b"mirror"[..], &b"core 1 2 3"[..]),
                (&b"linear"[..], &b"8:0 100"[..])
            ]
        );
    }

    #[test]
    fn named_request_and_targets() {
        let mut buf = vec![0xffu8; 512];
        emit_named_request(
            &mut buf,
            FLAG_SUSPEND,
            "m0",
            "DMULOGD-m0",
            UDEV_PRIMARY_SOURCE,
        )
        .unwrap();
        assert_eq!(&buf[28..32], &2u32.to_ne_bytes());
        assert_eq!(&buf[32..36], &0x0040_0000u32.to_ne_bytes());
        assert_eq!(&buf[48..51], b"m0\0");
        assert_eq!(&buf[176..187], b"DMULOGD-m0\0");
        emit_targets(
            &mut buf,
            &[
                Target {
                    start: 0,
                    length: 100,
                    kind: "mirror",
                    params: "core 1 8 2 a 0 b 0",
                },
                Target {
                    start: 100,
                    length: 8,
                    kind: "error",
                    params: "",
                },
            ],
        )
        .unwrap();
        assert_eq!(&buf[20..24], &2u32.to_ne_bytes());
        let first = &buf[HEADER_LEN..];
        assert_eq!(&first[8..16], &100u64.to_ne_bytes());
        // 40 bytes of spec + 18 of text + NUL = 59, padded to 64.
        assert_eq!(&first[20..24], &64u32.to_ne_bytes());
        assert_eq!(&first[24..31], b"mirror\0");
        assert_eq!(&first[40..59], b"core 1 8 2 a 0 b 0\0");
        let second = &first[64..];
        assert_eq!(&second[0..8], &100u64.to_ne_bytes());
        assert_eq!(&second[20..24], &48u32.to_ne_bytes());
        assert_eq!(&second[24..30], b"error\0");
        // Names, uuids, types and tables that do not fit are refused.
        assert_eq!(
            emit_named_request(&mut buf, 0, &"n".repeat(128), "", 0),
            Err(TooLong)
        );
        assert_eq!(
            emit_named_request(&mut buf, 0, "n", &"u".repeat(129), 0),
            Err(TooLong)
        );
        let long = "x".repeat(200);
        let t = Target {
            start: 0,
            length: 1,
            kind: "linear",
            params: &long,
        };
        assert_eq!(emit_targets(&mut buf, &[t]), Err(TooLong));
        let t = Target {
            start: 0,
            length: 1,
            kind: "a-very-long-type",
            params: "",
        };
        assert_eq!(emit_targets(&mut buf, &[t]), Err(TooLong));
    }

    #[test]
    fn reply_header_and_names() {
        let data = two_devices();
        let mut buf = reply_with(&data, 0);
        emit_named_request(&mut buf[..HEADER_LEN], 0, "m", "DMULOGD-m", 0).unwrap();
        put_u32(&mut buf, field::DATA_SIZE, (HEADER_LEN + 48) as u32);
        put_u32(&mut buf, field::DATA_START, HEADER_LEN as u32);
        put_u32(&mut buf, field::FLAGS, FLAG_ACTIVE_PRESENT);
        put_u32(&mut buf, field::OPEN_COUNT, 3);
        put_u64(&mut buf, field::DEV, 0xfd00007);
        let reply = Reply::new_checked(&buf).unwrap();
        assert_eq!((reply.name(), reply.uuid()), (&b"m"[..], &b"DMULOGD-m"[..]));
        assert_eq!((reply.dev(), reply.open_count()), (0xfd00007, 3));
        assert_eq!(reply.flags(), FLAG_ACTIVE_PRESENT);
        assert_eq!(
            reply.device_names().collect::<Vec<_>>(),
            [&b"a"[..], &b"bb"[..]]
        );
    }

    #[test]
    fn bad_replies_are_refused() {
        let mut buf = reply_with(&[0u8; 16], 0);
        put_u32(&mut buf, field::FLAGS, FLAG_BUFFER_FULL);
        assert!(Reply::new_checked(&buf).unwrap().is_full());
        let mut buf = reply_with(&[0u8; 16], 0);
        put_u32(&mut buf, field::DATA_SIZE, 10_000);
        assert_eq!(Reply::new_checked(&buf).err(), Some(BadLength));
        assert!(Reply::new_checked(&buf[..100]).is_err());
        // A target record pointing backwards ends the walk.
        let mut data = vec![0u8; 64];
        put_u32(&mut data, 20, 0);
        let buf = reply_with(&data, 5);
        assert_eq!(Reply::new_checked(&buf).unwrap().targets().count(), 1);
    }
}

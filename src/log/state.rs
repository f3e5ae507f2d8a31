//! A log's bits live in a state file under the state directory (tmpfs
//! /run by default), mapped shared: every change is in the file the moment
//! it is made, with no system call. A daemon killed at any moment and
//! started again maps the same file when the kernel reconnects the log (a
//! CTR carrying its NUL) with the same uuid, luid and arguments. A first CTR
//! always starts fresh; DTR deletes the file.
//!
//! File layout: one header page, then the clean words, then the sync words,
//! each starting on a page boundary.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, UnlinkatFlags};

use super::legs::{LegSet, MAX_LEGS};
use crate::bitmap::{self, Bitmap};
use crate::sys::mapping::MappedWords;
use crate::wire::ulog::MAX_UUID_LEN;

/// The longest constructor string a state file keeps; the kernel's
/// 512-byte request bounds it lower.
pub const MAX_CTR_LEN: usize = 512;
const MAGIC: &[u8; 8] = b"DMULOGS1";
const PAGE: u64 = 4096;

mod field {
    pub const MAGIC: usize = 0;
    pub const LUID: usize = 8;
    pub const REGION_COUNT: usize = 16;
    pub const UUID_LEN: usize = 24;
    pub const CTR_LEN: usize = 26;
    /// The log device's dev_t as the kernel holds it (0: none).
    pub const DEVICE: usize = 32;
    /// The disk log's sticky conditions (u32, `log::disk::flags`); an older
    /// dm-ulogd left zeros here, which read as healthy.
    pub const FLAGS: usize = 40;
    /// When the disk log last began loading its device (u64, CLOCK_BOOTTIME
    /// ns; 0: never).
    pub const LOAD_STAMP: usize = 48;
    pub const UUID: usize = 64;
    pub const CTR: usize = 256;
    /// How many legs follow (u64), then their dev_t (u64 each).
    pub const LEG_COUNT: usize = CTR + super::MAX_CTR_LEN;
    pub const LEGS: usize = LEG_COUNT + 8;
}
const HEADER_LEN: usize = field::LEGS + 8 * MAX_LEGS;

/// The magic of a device's load record (see `StateDir::record_load`).
const LOAD_MAGIC: &[u8; 8] = b"DMULOGL1";
/// A load record: magic, stamp u64, luid u64, uuid length u16, uuid.
const LOAD_RECORD_LEN: usize = 26 + MAX_UUID_LEN;

/// The last log that began loading a log device, as the state directory
/// remembers it across restarts of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLoad {
    pub uuid: heapless::Vec<u8, MAX_UUID_LEN>,
    pub luid: u64,
    /// When it began (CLOCK_BOOTTIME ns).
    pub stamp: u64,
}

/// "load-" and the device's identity (`LogDevice::identity`).
fn load_file_name(device: (u64, u64)) -> heapless::String<48> {
    let mut name = heapless::String::new();
    let _ = core::fmt::Write::write_fmt(
        &mut name,
        format_args!("load-{:x}-{:x}", device.0, device.1),
    );
    name
}

/// Which log a state file belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub uuid: &'a [u8],
    pub luid: u64,
    /// The constructor string without NUL.
    pub ctr: &'a [u8],
    pub region_count: u64,
}

/// A log's saved state: its bits and the log device it wrote (dev_t; 0
/// for none or unknown).
pub struct Saved {
    pub clean: Bitmap,
    pub sync: Bitmap,
    pub device: u64,
    /// The mirror's legs at its last RESUME, if any were recorded.
    pub legs: Option<LegSet>,
    /// The disk log's sticky conditions (`log::disk::flags`).
    pub flags: u32,
    /// When the disk log last began loading its device (0: never).
    pub load_stamp: u64,
}

/// The state directory, open for the daemon's lifetime.
pub struct StateDir {
    dir: OwnedFd,
}

/// FNV-1a from `basis` over the luid's bytes, then the uuid's.
pub(crate) fn fnv1a(basis: u64, uuid: &[u8], luid: u64) -> u64 {
    luid.to_le_bytes().iter().chain(uuid).fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a's offset basis, and a second one for the name's other half.
pub(crate) const FNV_BASES: [u64; 2] = [0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142];

/// "log-" and 32 hex digits: a hash of the uuid and the luid, fixed-length
/// whatever the uuid. The luid is the address of the kernel's log context,
/// which a name must not show; the header keeps both for matching.
fn file_name(uuid: &[u8], luid: u64) -> heapless::String<40> {
    let mut name = heapless::String::new();
    let [a, b] = FNV_BASES.map(|basis| fnv1a(basis, uuid, luid));
    let _ = core::fmt::Write::write_fmt(&mut name, format_args!("log-{a:016x}{b:016x}"));
    name
}

/// Flags of every open of a state file: never through a symbolic link, and
/// never a terminal or a blocking FIFO should something else sit there.
const OPEN_FLAGS: OFlag = OFlag::O_CLOEXEC
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);

/// Gives `file` its `len` bytes of storage now, so that a store into its
/// mapping never meets a full file system (which raises SIGBUS): ENOSPC
/// here instead. Where fallocate is not supported, zeros are written.
fn allocate(file: &File, len: u64) -> Result<(), Errno> {
    let end = libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    match nix::fcntl::fallocate(file.as_fd(), FallocateFlags::empty(), 0, end) {
        Err(Errno::EOPNOTSUPP) => {
            let zeros = [0u8; PAGE as usize];
            let mut at = file.metadata().map_err(io_errno)?.len().min(len);
            while at < len {
                let n = (len - at).min(PAGE) as usize;
                file.write_all_at(&zeros[..n], at).map_err(io_errno)?;
                at += n as u64;
            }
            Ok(())
        }
        other => other,
    }
}

fn words_offset(words: usize) -> (u64, u64, u64) {
    let bytes = (words as u64 * 8).next_multiple_of(PAGE);
    (PAGE, PAGE + bytes, PAGE + 2 * bytes)
}

impl StateDir {
    pub fn new(dir: OwnedFd) -> Self {
        StateDir { dir }
    }

    /// Creates the state file of a new log afresh (whatever had its name is
    /// unlinked, not truncated), allocates it in full and maps its
    /// zero-filled clean and sync words. On failure (ENOSPC on a full file
    /// system) nothing is left behind. `device` is the log device's dev_t
    /// (0 for none).
    pub fn create(&self, id: &Identity<'_>, device: u64) -> Result<(Bitmap, Bitmap), Errno> {
        if id.uuid.len() > MAX_UUID_LEN || id.ctr.len() > MAX_CTR_LEN {
            return Err(Errno::ENAMETOOLONG);
        }
        let name = file_name(id.uuid, id.luid);
        self.remove(id.uuid, id.luid);
        let fd = nix::fcntl::openat(
            &self.dir,
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OPEN_FLAGS,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?;
        let made = self.fill(File::from(fd), id, device);
        if made.is_err() {
            self.remove(id.uuid, id.luid);
        }
        made
    }

    fn fill(&self, file: File, id: &Identity<'_>, device: u64) -> Result<(Bitmap, Bitmap), Errno> {
        let words = bitmap::words_for(id.region_count);
        let (_, _, total) = words_offset(words);
        allocate(&file, total)?;
        let mut header = [0u8; HEADER_LEN];
        header[field::MAGIC..field::MAGIC + 8].copy_from_slice(MAGIC);
        header[field::LUID..field::LUID + 8].copy_from_slice(&id.luid.to_le_bytes());
        header[field::REGION_COUNT..field::REGION_COUNT + 8]
            .copy_from_slice(&id.region_count.to_le_bytes());
        header[field::DEVICE..field::DEVICE + 8].copy_from_slice(&device.to_le_bytes());
        header[field::UUID_LEN..field::UUID_LEN + 2]
            .copy_from_slice(&(id.uuid.len() as u16).to_le_bytes());
        header[field::CTR_LEN..field::CTR_LEN + 2]
            .copy_from_slice(&(id.ctr.len() as u16).to_le_bytes());
        header[field::UUID..field::UUID + id.uuid.len()].copy_from_slice(id.uuid);
        header[field::CTR..field::CTR + id.ctr.len()].copy_from_slice(id.ctr);
        file.write_all_at(&header, 0).map_err(io_errno)?;
        self.map(&file, id.region_count)
    }

    /// The constructor string saved for a log, if a state file of this uuid
    /// and luid exists: what is needed to rebuild a log the kernel tears
    /// down before reconnecting it.
    pub fn saved_ctr(&self, uuid: &[u8], luid: u64) -> Option<heapless::Vec<u8, MAX_CTR_LEN>> {
        let mut header = [0u8; HEADER_LEN];
        self.read_start(file_name(uuid, luid).as_str(), &mut header)?;
        let ctr_len = len_field(&header, field::CTR_LEN).min(MAX_CTR_LEN);
        let mut ctr = heapless::Vec::new();
        ctr.extend_from_slice(&header[field::CTR..field::CTR + ctr_len])
            .ok()?;
        Some(ctr)
    }

    /// Maps the state file of a log the kernel reconnects, if one exists
    /// for exactly this uuid, luid, constructor string and size.
    pub fn restore(&self, id: &Identity<'_>) -> Result<Option<Saved>, Errno> {
        let name = file_name(id.uuid, id.luid);
        let fd = match nix::fcntl::openat(
            &self.dir,
            name.as_str(),
            OFlag::O_RDWR | OPEN_FLAGS,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let mut header = [0u8; HEADER_LEN];
        if file.read_exact_at(&mut header, 0).is_err() || !header_matches(&header, id) {
            return Ok(None);
        }
        let (_, _, total) = words_offset(bitmap::words_for(id.region_count));
        let meta = file.metadata().map_err(io_errno)?;
        if !meta.is_file() || meta.len() < total {
            return Ok(None);
        }
        // A file of an older dm-ulogd may be sparse.
        allocate(&file, total)?;
        let device = u64_field(&header, field::DEVICE);
        let legs = saved_legs(&header);
        let flags = u32::from_le_bytes([
            header[field::FLAGS],
            header[field::FLAGS + 1],
            header[field::FLAGS + 2],
            header[field::FLAGS + 3],
        ]);
        let load_stamp = u64_field(&header, field::LOAD_STAMP);
        let (clean, sync) = self.map(&file, id.region_count)?;
        Ok(Some(Saved {
            clean,
            sync,
            device,
            legs,
            flags,
            load_stamp,
        }))
    }

    fn map(&self, file: &File, region_count: u64) -> Result<(Bitmap, Bitmap), Errno> {
        let words = bitmap::words_for(region_count);
        let (clean_at, sync_at, _) = words_offset(words);
        let clean = MappedWords::shared(file.as_fd(), clean_at, words)?;
        let sync = MappedWords::shared(file.as_fd(), sync_at, words)?;
        Ok((
            Bitmap::from_words(clean, region_count)?,
            Bitmap::from_words(sync, region_count)?,
        ))
    }

    /// Deletes a log's state file (after DTR).
    /// Records the legs of a log's mirror (found at RESUME), so a restarted
    /// daemon can flush them for a log the kernel suspends before it
    /// reconnects it, when the mirror's table may be gone already (a
    /// removal takes the device out of the table list before it suspends
    /// it). Best effort: without them, the saved bits are not written.
    pub fn save_legs(&self, uuid: &[u8], luid: u64, legs: &LegSet) {
        let mut bytes = [0u8; 8 + 8 * MAX_LEGS];
        bytes[..8].copy_from_slice(&(legs.len() as u64).to_le_bytes());
        for (i, &(major, minor)) in legs.iter().enumerate() {
            let at = 8 + 8 * i;
            bytes[at..at + 8].copy_from_slice(&stat::makedev(major, minor).to_le_bytes());
        }
        self.write_field(uuid, luid, field::LEG_COUNT, &bytes, "the legs");
    }

    /// Records a disk log's sticky conditions (a failed device, legs that
    /// could not be flushed, a newer log on its device), so a restarted
    /// daemon reports and honours them as the kernel's own log does for
    /// the log's life. Best effort, as the state file itself.
    pub fn save_flags(&self, uuid: &[u8], luid: u64, flags: u32) {
        self.write_field(
            uuid,
            luid,
            field::FLAGS,
            &flags.to_le_bytes(),
            "the failure flags",
        );
    }

    /// Records when a disk log began loading its device.
    pub fn save_load_stamp(&self, uuid: &[u8], luid: u64, stamp: u64) {
        self.write_field(
            uuid,
            luid,
            field::LOAD_STAMP,
            &stamp.to_le_bytes(),
            "the load time",
        );
    }

    /// Records that log (`uuid`, `luid`) began loading `device` at
    /// `stamp`: a daemon restarted later tells from it whether an older
    /// table's log, reconnected after the newer one loaded the device,
    /// would write stale bits over it, even when the newer log is not
    /// reconnected yet. Best effort, as the state files.
    pub fn record_load(&self, device: (u64, u64), uuid: &[u8], luid: u64, stamp: u64) {
        let name = load_file_name(device);
        let mut record = [0u8; LOAD_RECORD_LEN];
        let len = uuid.len().min(MAX_UUID_LEN);
        record[..8].copy_from_slice(LOAD_MAGIC);
        record[8..16].copy_from_slice(&stamp.to_le_bytes());
        record[16..24].copy_from_slice(&luid.to_le_bytes());
        record[24..26].copy_from_slice(&(len as u16).to_le_bytes());
        record[26..26 + len].copy_from_slice(&uuid[..len]);
        let written = nix::fcntl::openat(
            &self.dir,
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OPEN_FLAGS,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        .and_then(|fd| File::from(fd).write_all_at(&record, 0));
        if let Err(e) = written {
            log::warn!("cannot record a log device's load in {name}: {e}");
        }
    }

    /// The last load `record_load` recorded for `device`.
    pub fn last_load(&self, device: (u64, u64)) -> Option<DeviceLoad> {
        let mut record = [0u8; LOAD_RECORD_LEN];
        self.read_start(load_file_name(device).as_str(), &mut record)?;
        if &record[..8] != LOAD_MAGIC {
            return None;
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&record[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let len = usize::from(u16::from_le_bytes([record[24], record[25]])).min(MAX_UUID_LEN);
        let mut uuid = heapless::Vec::new();
        uuid.extend_from_slice(&record[26..26 + len]).ok()?;
        Some(DeviceLoad {
            uuid,
            luid: word(16),
            stamp: word(8),
        })
    }

    /// Fills `buf` from the start of file `name` of the state directory;
    /// None when it is missing or shorter.
    fn read_start(&self, name: &str, buf: &mut [u8]) -> Option<()> {
        let fd = nix::fcntl::openat(&self.dir, name, OFlag::O_RDONLY | OPEN_FLAGS, Mode::empty())
            .ok()?;
        File::from(fd).read_exact_at(buf, 0).ok()
    }

    /// Writes `bytes` at `at` in the header of a log's state file, if it
    /// has one.
    fn write_field(&self, uuid: &[u8], luid: u64, at: usize, bytes: &[u8], what: &str) {
        let name = file_name(uuid, luid);
        let Ok(fd) = nix::fcntl::openat(
            &self.dir,
            name.as_str(),
            OFlag::O_WRONLY | OPEN_FLAGS,
            Mode::empty(),
        ) else {
            return;
        };
        if let Err(e) = File::from(fd).write_all_at(bytes, at as u64) {
            log::warn!("cannot record {what} in state file {name}: {e}");
        }
    }

    pub fn remove(&self, uuid: &[u8], luid: u64) {
        let name = file_name(uuid, luid);
        match unistd::unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => log::warn!("cannot delete state file {name}: {}", e.desc()),
        }
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The legs a state file recorded; None when it has none.
fn saved_legs(h: &[u8; HEADER_LEN]) -> Option<LegSet> {
    let count = usize::try_from(u64_field(h, field::LEG_COUNT)).ok()?;
    if count == 0 || count > MAX_LEGS {
        return None;
    }
    let legs = (0..count)
        .map(|i| u64_field(h, field::LEGS + 8 * i))
        .map(|dev| (stat::major(dev), stat::minor(dev)))
        .collect();
    Some(legs)
}

fn u64_field(h: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A 16-bit length field, as an index.
fn len_field(h: &[u8; HEADER_LEN], at: usize) -> usize {
    usize::from(u16::from_le_bytes([h[at], h[at + 1]]))
}

fn header_matches(h: &[u8; HEADER_LEN], id: &Identity<'_>) -> bool {
    let uuid_len = len_field(h, field::UUID_LEN);
    let ctr_len = len_field(h, field::CTR_LEN);
    &h[field::MAGIC..field::MAGIC + 8] == MAGIC
        && u64_field(h, field::LUID) == id.luid
        && u64_field(h, field::REGION_COUNT) == id.region_count
        && uuid_len <= MAX_UUID_LEN
        && ctr_len <= MAX_CTR_LEN
        && &h[field::UUID..field::UUID + uuid_len] == id.uuid
        && &h[field::CTR..field::CTR + ctr_len] == id.ctr
}

/// A log's state file as `dm-ulogd status` sees it: read with plain reads
/// from a read-only descriptor, never mapped or locked, so reading it
/// cannot disturb the daemon that maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLog {
    pub luid: u64,
    pub uuid: Vec<u8>,
    /// The constructor string without NUL.
    pub ctr: Vec<u8>,
    pub region_count: u64,
    pub clean_count: u64,
    pub sync_count: u64,
}

/// Reads the state file at `path`: Ok(None) when the file is not a state
/// file (it lacks the magic), Err naming the flaw when it is a damaged one.
/// The counts are a snapshot: a live daemon changes the bits meanwhile.
pub fn read_saved_log(path: &std::path::Path) -> Result<Option<SavedLog>, String> {
    let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open it read-only: {}", e.desc()))?;
    let file = File::from(fd);
    let mut header = [0u8; HEADER_LEN];
    let got = read_up_to(&file, &mut header, 0).map_err(|e| format!("cannot read it: {e}"))?;
    if got < MAGIC.len() || &header[field::MAGIC..field::MAGIC + 8] != MAGIC {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(format!("its header is cut short at {got} bytes"));
    }
    let (uuid_len, ctr_len) = (
        len_field(&header, field::UUID_LEN),
        len_field(&header, field::CTR_LEN),
    );
    if uuid_len > MAX_UUID_LEN || ctr_len > MAX_CTR_LEN {
        return Err(format!(
            "its header names a {uuid_len}-byte uuid and a {ctr_len}-byte constructor string (at most {MAX_UUID_LEN} and {MAX_CTR_LEN})"
        ));
    }
    let region_count = u64_field(&header, field::REGION_COUNT);
    let (clean_at, sync_at, total) = words_offset(bitmap::words_for(region_count));
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?
        .len();
    if len < total {
        return Err(format!(
            "it has {len} bytes, but its {region_count} regions need {total}"
        ));
    }
    let count =
        |at| count_bits_at(&file, at, region_count).map_err(|e| format!("cannot read it: {e}"));
    Ok(Some(SavedLog {
        luid: u64_field(&header, field::LUID),
        uuid: header[field::UUID..field::UUID + uuid_len].to_vec(),
        ctr: header[field::CTR..field::CTR + ctr_len].to_vec(),
        region_count,
        clean_count: count(clean_at)?,
        sync_count: count(sync_at)?,
    }))
}

/// Reads from `offset` until `buf` is full or the file ends; returns the
/// bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The set bits among the first `bits` bits stored from byte `offset` on.
/// A popcount of bytes does not depend on the words' byte order.
fn count_bits_at(file: &File, offset: u64, bits: u64) -> std::io::Result<u64> {
    let mut buf = [0u8; PAGE as usize];
    let bytes = bits.div_ceil(8);
    let mut done = 0u64;
    let mut ones = 0u64;
    while done < bytes {
        let len = (bytes - done).min(PAGE) as usize;
        file.read_exact_at(&mut buf[..len], offset + done)?;
        if done + len as u64 == bytes && !bits.is_multiple_of(8) {
            buf[len - 1] &= (1u8 << (bits % 8)) - 1;
        }
        ones += buf[..len]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>();
        done += len as u64;
    }
    Ok(ones)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory in the system's temp directory, removed with it
    /// (each test run made three before, and left them).
    struct TempState {
        dir: StateDir,
        path: std::path::PathBuf,
    }

    impl std::ops::Deref for TempState {
        type Target = StateDir;
        fn deref(&self) -> &StateDir {
            &self.dir
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn temp_dir(name: &str) -> TempState {
        let path =
            std::env::temp_dir().join(format!("dm-ulogd-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let fd =
            nix::fcntl::open(&path, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap();
        TempState {
            dir: StateDir::new(fd),
            path,
        }
    }

    #[test]
    fn bits_survive_in_the_file() {
        let dir = temp_dir("survive");
        let id = Identity {
            uuid: b"u1",
            luid: 7,
            ctr: b"1000 core 1 8",
            region_count: 125,
        };
        {
            let (mut clean, mut sync) = dir.create(&id, 0xfd_0000_0007).unwrap();
            clean.set(3);
            sync.set(124);
        }
        let fresh = dir.restore(&id).unwrap().unwrap();
        assert!(fresh.legs.is_none());
        assert_eq!(fresh.flags, 0, "a new log is healthy");
        drop(fresh);
        let mut recorded = LegSet::new();
        recorded.extend([(253, 1), (8, 1048576)]);
        dir.save_legs(b"u1", 7, &recorded);
        dir.save_flags(b"u1", 7, 0b101);
        let Saved {
            clean,
            sync,
            device,
            legs,
            flags,
            ..
        } = dir.restore(&id).unwrap().unwrap();
        assert_eq!(legs, Some(recorded));
        assert_eq!(flags, 0b101);
        assert_eq!(device, 0xfd_0000_0007);
        assert!(clean.test(3) && !clean.test(4));
        assert!(sync.test(124) && sync.count_ones() == 1);
        // Another luid, uuid or table is not this log.
        for other in [
            Identity { luid: 8, ..id },
            Identity { uuid: b"u2", ..id },
            Identity {
                ctr: b"1000 core 2 8 nosync",
                ..id
            },
        ] {
            assert!(dir.restore(&other).unwrap().is_none());
        }
        dir.remove(b"u1", 7);
        assert!(dir.restore(&id).unwrap().is_none());
    }

    #[test]
    fn status_reads_a_state_file_without_mapping_it() {
        let dir = temp_dir("read");
        let id = Identity {
            uuid: b"u-read",
            luid: 9,
            ctr: b"1000 disk 2 /dev/vdc 8",
            region_count: 125,
        };
        {
            let (mut clean, mut sync) = dir.create(&id, 0).unwrap();
            clean.fill(true);
            clean.clear(3);
            clean.clear(124);
            sync.set_range(0, 100);
        }
        let path = dir.path.join(file_name(b"u-read", 9).as_str());
        let saved = read_saved_log(&path).unwrap().unwrap();
        assert_eq!(
            saved,
            SavedLog {
                luid: 9,
                uuid: b"u-read".to_vec(),
                ctr: b"1000 disk 2 /dev/vdc 8".to_vec(),
                region_count: 125,
                clean_count: 123,
                sync_count: 100,
            }
        );
        // Cut short: an error naming the sizes; no magic: not a state file.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(4096 + 8).unwrap();
        assert!(read_saved_log(&path).unwrap_err().contains("need"));
        file.write_all_at(b"NOTSTATE", 0).unwrap();
        assert_eq!(read_saved_log(&path), Ok(None));
    }

    #[test]
    fn names_are_fixed_length_and_hide_the_luid() {
        let luid = 0xffff_8880_1234_5678u64;
        let short = file_name(b"u", luid);
        let long = file_name(&[b'x'; MAX_UUID_LEN], luid);
        assert_eq!(short.len(), 36);
        assert_eq!(long.len(), 36);
        for name in [&short, &long] {
            assert!(name.starts_with("log-"), "{name}");
            for part in ["ffff8880", "12345678", "88801234"] {
                assert!(!name.contains(part), "{name} shows the luid");
            }
        }
        assert_ne!(file_name(b"u", luid), file_name(b"u", luid + 1));
        assert_ne!(file_name(b"u", luid), file_name(b"v", luid));
    }

    /// A symbolic link where a state file goes is replaced, never followed:
    /// its target keeps its content.
    #[test]
    fn a_symlink_in_place_of_a_state_file_is_not_followed() {
        let dir = temp_dir("symlink");
        let id = Identity {
            uuid: b"u-link",
            luid: 9,
            ctr: b"1000 core 1 8",
            region_count: 125,
        };
        let target = std::env::temp_dir().join(format!("dm-ulogd-target-{}", std::process::id()));
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path.join(file_name(id.uuid, id.luid).as_str());
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(dir.saved_ctr(id.uuid, id.luid).is_none());
        assert!(!matches!(dir.restore(&id), Ok(Some(_))));
        let (mut clean, _) = dir.create(&id, 0).unwrap();
        clean.set(1);
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let _ = std::fs::remove_file(&target);
    }
}

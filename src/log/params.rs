//! The constructor string: `<target sectors> <log type> [<#args>] <args...>`
//! with the log arguments of the kernel's `core` and `disk` logs
//! (`[<device>] <region_size> [sync|nosync] [block_on_error]`).

use core::fmt;

/// The log types dm-ulogd serves. The clustered names are cmirrord's; on a
/// single node they behave exactly like their plain twins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    Core,
    Disk,
    ClusteredCore,
    ClusteredDisk,
}

impl LogType {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "core" => LogType::Core,
            "disk" => LogType::Disk,
            "clustered-core" => LogType::ClusteredCore,
            "clustered-disk" => LogType::ClusteredDisk,
            _ => return None,
        })
    }

    /// The name as the table gave it; echoed in status text.
    pub fn name(self) -> &'static str {
        match self {
            LogType::Core => "core",
            LogType::Disk => "disk",
            LogType::ClusteredCore => "clustered-core",
            LogType::ClusteredDisk => "clustered-disk",
        }
    }

    pub fn has_device(self) -> bool {
        matches!(self, LogType::Disk | LogType::ClusteredDisk)
    }
}

/// How a new log starts (the kernel's DEFAULTSYNC / FORCESYNC / NOSYNC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Resync what the log does not know to be in sync.
    Default,
    /// `sync`: resync everything.
    Force,
    /// `nosync`: assume the legs already agree.
    No,
}

/// A parsed constructor string; `device` borrows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogArgs<'a> {
    pub target_sectors: u64,
    pub log_type: LogType,
    pub device: Option<&'a str>,
    pub region_size: u32,
    pub region_count: u64,
    pub sync: SyncMode,
    pub block_on_error: bool,
}

/// Why a constructor string was refused; each names the argument and the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrError<'a> {
    NotText,
    MissingTargetLength,
    BadTargetLength(&'a str),
    MissingLogType,
    UnknownLogType(&'a str),
    ArgCount {
        log_type: LogType,
        got: usize,
    },
    BadRegionSize(&'a str),
    RegionSizeNotPowerOfTwo(u32),
    RegionSizeTooSmall(u32),
    RegionSizeTooLarge {
        region_size: u32,
        target_sectors: u64,
    },
    TooManyRegions(u64),
    UnknownWord(&'a str),
    ConflictingSync,
}

impl fmt::Display for CtrError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CtrError::NotText => write!(f, "constructor string is not ASCII text"),
            CtrError::MissingTargetLength => write!(f, "constructor string is empty"),
            CtrError::BadTargetLength(w) => {
                write!(f, "target length {w:?} is not a positive number of sectors")
            }
            CtrError::MissingLogType => write!(f, "no log type after the target length"),
            CtrError::UnknownLogType(w) => write!(
                f,
                "unknown log type {w:?}: use core, disk, clustered-core or clustered-disk"
            ),
            CtrError::ArgCount { log_type, got } => {
                let usage = if log_type.has_device() {
                    "<device> <region_size> [sync|nosync] [block_on_error]"
                } else {
                    "<region_size> [sync|nosync] [block_on_error]"
                };
                write!(
                    f,
                    "{} log takes {usage}, got {got} argument(s)",
                    log_type.name()
                )
            }
            CtrError::BadRegionSize(w) => {
                write!(f, "region size {w:?} is not a number of sectors")
            }
            CtrError::RegionSizeNotPowerOfTwo(n) => {
                write!(f, "region size {n} is not a power of two")
            }
            CtrError::RegionSizeTooSmall(n) => {
                write!(f, "region size {n} is below the minimum of 2 sectors")
            }
            CtrError::RegionSizeTooLarge {
                region_size,
                target_sectors,
            } => write!(
                f,
                "region size {region_size} is larger than the target ({target_sectors} sectors)"
            ),
            CtrError::TooManyRegions(n) => write!(
                f,
                "{n} regions do not fit in 32 bits: use a larger region size"
            ),
            CtrError::UnknownWord(w) => write!(
                f,
                "unknown log argument {w:?}: expected sync, nosync or block_on_error"
            ),
            CtrError::ConflictingSync => write!(f, "both sync and nosync given"),
        }
    }
}

/// The most words a constructor string may hold; the kernel's request
/// payload (332 bytes) bounds it anyway.
const MAX_WORDS: usize = 16;

/// Parses a constructor string (without any trailing NUL).
///
/// The word after the log type may be the argument count, as in the
/// kernel's own tables (`core 2 1024 nosync`) and in LVM's; it is taken as a
/// count when it equals the number of words that follow, and otherwise as
/// the first argument (cmirrord's count-less form).
pub fn parse(text: &[u8]) -> Result<LogArgs<'_>, CtrError<'_>> {
    let text = core::str::from_utf8(text).map_err(|_| CtrError::NotText)?;
    let mut words = text.split_ascii_whitespace();
    let len_word = words.next().ok_or(CtrError::MissingTargetLength)?;
    let target_sectors = match len_word.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => return Err(CtrError::BadTargetLength(len_word)),
    };
    let type_word = words.next().ok_or(CtrError::MissingLogType)?;
    let log_type = LogType::from_name(type_word).ok_or(CtrError::UnknownLogType(type_word))?;

    let mut rest: heapless::Vec<&str, MAX_WORDS> = heapless::Vec::new();
    for w in words {
        rest.push(w).map_err(|_| CtrError::ArgCount {
            log_type,
            got: MAX_WORDS + 1,
        })?;
    }
    let args: &[&str] = match rest.first().and_then(|w| w.parse::<usize>().ok()) {
        Some(n) if n == rest.len() - 1 => &rest[1..],
        _ => &rest,
    };

    let fixed = if log_type.has_device() { 2 } else { 1 };
    if args.len() < fixed || args.len() > fixed + 2 {
        return Err(CtrError::ArgCount {
            log_type,
            got: args.len(),
        });
    }
    let device = log_type.has_device().then(|| args[0]);
    let size_word = args[fixed - 1];
    let region_size = size_word
        .parse::<u32>()
        .map_err(|_| CtrError::BadRegionSize(size_word))?;
    if region_size < 2 {
        return Err(CtrError::RegionSizeTooSmall(region_size));
    }
    if !region_size.is_power_of_two() {
        return Err(CtrError::RegionSizeNotPowerOfTwo(region_size));
    }
    if u64::from(region_size) > target_sectors {
        return Err(CtrError::RegionSizeTooLarge {
            region_size,
            target_sectors,
        });
    }
    let region_count = target_sectors.div_ceil(u64::from(region_size));
    if region_count > u64::from(u32::MAX) {
        return Err(CtrError::TooManyRegions(region_count));
    }

    let mut sync = SyncMode::Default;
    let mut block_on_error = false;
    for &w in &args[fixed..] {
        let wanted = match w {
            "sync" => SyncMode::Force,
            "nosync" => SyncMode::No,
            "block_on_error" => {
                block_on_error = true;
                continue;
            }
            _ => return Err(CtrError::UnknownWord(w)),
        };
        if sync != SyncMode::Default && sync != wanted {
            return Err(CtrError::ConflictingSync);
        }
        sync = wanted;
    }
    Ok(LogArgs {
        target_sectors,
        log_type,
        device,
        region_size,
        region_count,
        sync,
        block_on_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_with_count() {
        let a = parse(b"2097152 core 2 1024 nosync").unwrap();
        assert_eq!(a.target_sectors, 2097152);
        assert_eq!(a.log_type, LogType::Core);
        assert_eq!(a.device, None);
        assert_eq!(a.region_size, 1024);
        assert_eq!(a.region_count, 2048);
        assert_eq!(a.sync, SyncMode::No);
    }

    #[test]
    fn disk_without_count_and_clustered_flags() {
        let a = parse(b"1000 clustered-disk 253:4 8 sync block_on_error").unwrap();
        assert_eq!(a.log_type, LogType::ClusteredDisk);
        assert_eq!(a.device, Some("253:4"));
        assert_eq!(a.region_size, 8);
        assert_eq!(a.region_count, 125);
        assert_eq!(a.sync, SyncMode::Force);
        assert!(a.block_on_error);
    }

    #[test]
    fn region_count_rounds_up() {
        assert_eq!(parse(b"1025 core 1 1024").unwrap().region_count, 2);
    }

    #[test]
    fn refuses_bad_tables_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"x core 1 1024", "target length"),
            (b"100 mirror 1 8", "unknown log type"),
            (b"100 core 1 0", "below the minimum"),
            (b"100 core 1 24", "not a power of two"),
            (b"100 core 1 128", "larger than the target"),
            (b"100 core 0", "got 0 argument"),
            (b"100 core 4 8 sync nosync x", "got 4 argument"),
            (b"100 core 2 8 fast", "unknown log argument \"fast\""),
            (b"100 core 3 8 sync nosync", "both sync and nosync"),
            (b"100 disk 1 8", "disk log takes <device>"),
            (b"100 core 1 abc", "not a number"),
            (b"99999999999999 core 1 2", "do not fit in 32 bits"),
        ];
        for (input, needle) in cases {
            let msg = parse(input).unwrap_err().to_string();
            assert!(msg.contains(needle), "{input:?}: {msg}");
        }
    }
}

//! Mirror target parameters (dm-raid1's table line after `mirror`), built
//! with the right word counts, and read back for `convert` and `status`:
//!
//! ```text
//! <log> <#legs> <leg> <offset>... [<#features> <feature>...]
//! log, dm-ulogd's:     userspace <#args> <uuid> [integrated_flush] <type> <#type args> <type args>
//! log, the kernel's:   <type> <#type args> <type args>
//! type args:           core: <region size> [sync|nosync]; disk: <device> <region size> [sync|nosync]
//! ```

use crate::config::{LogSpec, MirrorSpec};

/// Who serves the mirror's dirty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOwner {
    /// dm-ulogd, through a `userspace` log.
    Userspace,
    /// The kernel's own `core` or `disk` log (dm-log.c).
    Kernel,
}

impl LogOwner {
    pub fn word(self) -> &'static str {
        match self {
            LogOwner::Userspace => "userspace",
            LogOwner::Kernel => "kernel",
        }
    }
}

/// A mirror target's parameters, word by word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorParams {
    /// The userspace log's uuid; None for the kernel's own log.
    pub userspace_uuid: Option<String>,
    pub integrated_flush: bool,
    /// `core`, `disk`, `clustered-core`, `clustered-disk`.
    pub log_type: String,
    /// The log type's own arguments.
    pub log_args: Vec<String>,
    /// (device, offset in sectors)
    pub legs: Vec<(String, u64)>,
    pub features: Vec<String>,
}

impl MirrorParams {
    /// The table of `spec` with its devices as `legs` and `log_device` (the
    /// forms the kernel is given, e.g. major:minor).
    pub fn from_spec(
        spec: &MirrorSpec,
        owner: LogOwner,
        legs: &[String],
        log_device: Option<&str>,
    ) -> Self {
        let region = spec.region_size.to_string();
        let (log_type, log_args) = match (&spec.log, log_device) {
            (LogSpec::Disk(d), None) => ("disk", vec![d.clone(), region]),
            (LogSpec::Disk(_), Some(d)) => ("disk", vec![d.to_string(), region]),
            (LogSpec::Core, _) => ("core", vec![region]),
        };
        let userspace = owner == LogOwner::Userspace;
        MirrorParams {
            userspace_uuid: userspace.then(|| spec.log_uuid()),
            integrated_flush: userspace && spec.integrated_flush,
            log_type: log_type.to_string(),
            log_args,
            legs: legs.iter().map(|l| (l.clone(), 0)).collect(),
            features: if spec.handle_errors {
                vec!["handle_errors".into()]
            } else {
                Vec::new()
            },
        }
    }

    pub fn owner(&self) -> LogOwner {
        if self.userspace_uuid.is_some() {
            LogOwner::Userspace
        } else {
            LogOwner::Kernel
        }
    }

    /// The log device, for `disk` logs.
    pub fn log_device(&self) -> Option<&str> {
        match self.log_type.as_str() {
            "disk" | "clustered-disk" => self.log_args.first().map(String::as_str),
            _ => None,
        }
    }

    /// The region size in sectors.
    pub fn region_size(&self) -> Option<u32> {
        let at = usize::from(self.log_device().is_some());
        self.log_args.get(at)?.parse().ok()
    }

    /// The table text.
    pub fn to_text(&self) -> String {
        let mut w: Vec<String> = Vec::new();
        if let Some(uuid) = &self.userspace_uuid {
            let count = 1 + usize::from(self.integrated_flush) + 2 + self.log_args.len();
            w.push("userspace".into());
            w.push(count.to_string());
            w.push(uuid.clone());
            if self.integrated_flush {
                w.push("integrated_flush".into());
            }
        }
        w.push(self.log_type.clone());
        w.push(self.log_args.len().to_string());
        w.extend(self.log_args.iter().cloned());
        w.push(self.legs.len().to_string());
        for (dev, offset) in &self.legs {
            w.push(dev.clone());
            w.push(offset.to_string());
        }
        if !self.features.is_empty() {
            w.push(self.features.len().to_string());
            w.extend(self.features.iter().cloned());
        }
        w.join(" ")
    }

    /// Reads a mirror target's parameters (as DM_TABLE_STATUS with the
    /// table flag gives them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_ascii_whitespace();
        let mut next = |what: &str| {
            words
                .next()
                .map(str::to_string)
                .ok_or_else(|| format!("mirror table {text:?} ends before its {what}"))
        };
        let count = |w: String, what: &str| {
            w.parse::<usize>()
                .map_err(|_| format!("mirror table {text:?}: {what} {w:?} is not a count"))
        };
        let mut log_type = next("log type")?;
        if log_type == "userspace" {
            let n = count(next("log argument count")?, "log argument count")?;
            let uuid = next("log uuid")?;
            let mut integrated_flush = false;
            let mut left = n.saturating_sub(1);
            log_type = next("log type")?;
            left = left.saturating_sub(1);
            if log_type == "integrated_flush" {
                integrated_flush = true;
                log_type = next("log type")?;
                left = left.saturating_sub(1);
            }
            let inner = count(next("log type's argument count")?, "log argument count")?;
            if left != inner + 1 {
                return Err(format!(
                    "mirror table {text:?}: the userspace log's count {n} disagrees with its arguments"
                ));
            }
            let log_args = (0..inner)
                .map(|_| next("log arguments"))
                .collect::<Result<_, _>>()?;
            return Self::rest(text, Some(uuid), integrated_flush, log_type, log_args, next);
        }
        let inner = count(next("log argument count")?, "log argument count")?;
        let log_args = (0..inner)
            .map(|_| next("log arguments"))
            .collect::<Result<_, _>>()?;
        Self::rest(text, None, false, log_type, log_args, next)
    }

    fn rest(
        text: &str,
        userspace_uuid: Option<String>,
        integrated_flush: bool,
        log_type: String,
        log_args: Vec<String>,
        mut next: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        let not_count =
            |w: &str, what: &str| format!("mirror table {text:?}: {what} {w:?} is not a number");
        let w = next("leg count")?;
        let nr_legs: usize = w.parse().map_err(|_| not_count(&w, "leg count"))?;
        let mut legs = Vec::with_capacity(nr_legs);
        for _ in 0..nr_legs {
            let dev = next("legs")?;
            let w = next("leg offset")?;
            legs.push((dev, w.parse().map_err(|_| not_count(&w, "leg offset"))?));
        }
        let mut features = Vec::new();
        if let Ok(w) = next("") {
            let n: usize = w.parse().map_err(|_| not_count(&w, "feature count"))?;
            for _ in 0..n {
                features.push(next("features")?);
            }
        }
        if next("").is_ok() {
            return Err(format!("mirror table {text:?} has words past its features"));
        }
        Ok(MirrorParams {
            userspace_uuid,
            integrated_flush,
            log_type,
            log_args,
            legs,
            features,
        })
    }
}

/// What dm-raid1's status line says (DM_TABLE_STATUS without the table
/// flag): `<#legs> <leg>... <in sync>/<regions> 1 <leg health> <log status>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    pub legs: Vec<String>,
    pub in_sync: u64,
    pub regions: u64,
    /// One character per leg: A alive, D dead, S sync failed, R read failed.
    pub leg_health: String,
    /// The log's status words: `1 core`, `3 disk <maj:min> <A|D|F>`.
    pub log_status: Vec<String>,
}

impl MirrorStatus {
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_ascii_whitespace();
        let n: usize = words.next()?.parse().ok()?;
        let legs: Vec<String> = words.by_ref().take(n).map(str::to_string).collect();
        let (in_sync, regions) = words.next()?.split_once('/')?;
        let _health_count = words.next()?;
        let leg_health = words.next()?.to_string();
        Some(MirrorStatus {
            legs,
            in_sync: in_sync.parse().ok()?,
            regions: regions.parse().ok()?,
            leg_health,
            log_status: words.map(str::to_string).collect(),
        })
    }

    /// The log's health: A, D or F for a disk log, `-` for a core log.
    pub fn log_health(&self) -> &str {
        match self.log_status.first().map(String::as_str) {
            Some("3") => self.log_status.get(3).map_or("?", String::as_str),
            Some(_) => "-",
            None => "?",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(log: LogSpec) -> MirrorSpec {
        MirrorSpec::new("m0".into(), vec!["/dev/vda".into(), "/dev/vdb".into()], log)
    }

    fn legs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("254:{i}")).collect()
    }

    /// Hand-written tables, in the words tests/scenarios/status.sh shows
    /// the kernel accepting and echoing back.
    #[test]
    fn tables_have_the_right_counts() {
        let core = spec(LogSpec::Core);
        let disk = spec(LogSpec::Disk("/dev/vdc".into()));
        let cases: Vec<(MirrorSpec, LogOwner, usize, Option<&str>, &str)> = vec![
            (
                core.clone(),
                LogOwner::Userspace,
                2,
                None,
                "userspace 4 dmulogd-m0 core 1 1024 2 254:0 0 254:1 0",
            ),
            (
                disk.clone(),
                LogOwner::Userspace,
                2,
                Some("254:9"),
                "userspace 5 dmulogd-m0 disk 2 254:9 1024 2 254:0 0 254:1 0",
            ),
            (
                MirrorSpec {
                    integrated_flush: true,
                    ..core.clone()
                },
                LogOwner::Userspace,
                2,
                None,
                "userspace 5 dmulogd-m0 integrated_flush core 1 1024 2 254:0 0 254:1 0",
            ),
            (
                MirrorSpec {
                    integrated_flush: true,
                    handle_errors: true,
                    region_size: 64,
                    ..disk.clone()
                },
                LogOwner::Userspace,
                3,
                Some("254:9"),
                "userspace 6 dmulogd-m0 integrated_flush disk 2 254:9 64 3 254:0 0 254:1 0 254:2 0 1 handle_errors",
            ),
            (
                MirrorSpec {
                    handle_errors: true,
                    ..core.clone()
                },
                LogOwner::Userspace,
                3,
                None,
                "userspace 4 dmulogd-m0 core 1 1024 3 254:0 0 254:1 0 254:2 0 1 handle_errors",
            ),
            (
                core.clone(),
                LogOwner::Kernel,
                2,
                None,
                "core 1 1024 2 254:0 0 254:1 0",
            ),
            (
                MirrorSpec {
                    integrated_flush: true,
                    ..disk.clone()
                },
                LogOwner::Kernel,
                3,
                Some("254:9"),
                "disk 2 254:9 1024 3 254:0 0 254:1 0 254:2 0",
            ),
            (
                disk,
                LogOwner::Userspace,
                2,
                None,
                "userspace 5 dmulogd-m0 disk 2 /dev/vdc 1024 2 254:0 0 254:1 0",
            ),
        ];
        for (spec, owner, n, log_dev, want) in cases {
            let p = MirrorParams::from_spec(&spec, owner, &legs(n), log_dev);
            assert_eq!(p.to_text(), want);
            assert_eq!(MirrorParams::parse(want), Ok(p), "{want}");
        }
    }

    #[test]
    fn tables_read_back() {
        let p = MirrorParams::parse(
            "userspace 6 dmulogd-test-status-ucd clustered-disk 3 /dev/mapper/ucd_log 1024 block_on_error 2 253:4 0 253:5 0",
        )
        .unwrap();
        assert_eq!(p.owner(), LogOwner::Userspace);
        assert_eq!(p.log_type, "clustered-disk");
        assert_eq!(p.log_device(), Some("/dev/mapper/ucd_log"));
        assert_eq!(p.region_size(), Some(1024));
        assert_eq!(p.legs, [("253:4".into(), 0), ("253:5".into(), 0)]);
        let k = MirrorParams::parse("disk 2 253:3 512 2 253:4 0 253:5 0 1 handle_errors").unwrap();
        assert_eq!(k.owner(), LogOwner::Kernel);
        assert_eq!(k.region_size(), Some(512));
        assert_eq!(k.features, ["handle_errors"]);
        let c = MirrorParams::parse("core 2 1024 nosync 2 253:4 0 253:5 0").unwrap();
        assert_eq!((c.log_device(), c.region_size()), (None, Some(1024)));
        for bad in [
            "",
            "userspace",
            "userspace 6 u disk 2 /dev/x 1024 2 a 0 b 0",
            "userspace 4 u core 1 1024 2 a 0",
            "core 1 1024 2 a 0 b x",
            "core 1 1024 2 a 0 b 0 1",
            "core 1 1024 2 a 0 b 0 1 handle_errors extra",
        ] {
            assert!(MirrorParams::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_lines() {
        let s = MirrorStatus::parse("2 253:4 253:5 100/128 1 AA 3 disk 253:3 A").unwrap();
        assert_eq!((s.in_sync, s.regions), (100, 128));
        assert_eq!(s.legs, ["253:4", "253:5"]);
        assert_eq!(s.leg_health, "AA");
        assert_eq!(s.log_health(), "A");
        let c = MirrorStatus::parse("3 253:4 253:5 253:6 8/8 1 ADA 1 core").unwrap();
        assert_eq!((c.log_health(), c.leg_health.as_str()), ("-", "ADA"));
        assert_eq!(MirrorStatus::parse("2 a b x 1 AA"), None);
    }
}

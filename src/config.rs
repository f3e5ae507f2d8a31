//! The configuration file of mirrors (`/etc/dm-ulogd/mirrors`), one mirror
//! per line in the manner of crypttab:
//!
//! ```text
//! # name   legs                      log        options
//! root     /dev/vda,/dev/vdb         /dev/vdc   region_size=1024,integrated_flush
//! scratch  8:16,8:32                 core       -
//! ```
//!
//! NAME is the /dev/mapper name; LEGS two to nine devices (paths,
//! `/dev/disk/by-*` links or major:minor) joined by commas; LOG `core` or
//! the log device; OPTIONS `-` or a comma list of the words below. Anything
//! else is refused with the file, the line and the rule broken.
//!
//! The log's uuid is `dmulogd-NAME` unless `uuid=` names one: the same at
//! every boot, so the daemon's state files and the kernel's reconnects find
//! the log again. The device's uuid is `DMULOGD-NAME`: the prefix tells
//! `status` and `assemble` which dm devices are dm-ulogd's mirrors, as
//! `LVM-` and `CRYPT-` do for LVM and cryptsetup.

use core::fmt;
use std::path::{Path, PathBuf};

use crate::log::device::parse_dev_numbers;
use crate::log::legs::MAX_LEGS;

pub const DEFAULT_CONFIG: &str = "/etc/dm-ulogd/mirrors";
/// The dm device uuid of every mirror dm-ulogd makes starts with this.
pub const DEVICE_UUID_PREFIX: &str = "DMULOGD-";
/// A log uuid not given with `uuid=` is this and the mirror's name.
pub const LOG_UUID_PREFIX: &str = "dmulogd-";
/// 512 KiB, LVM's default region size.
pub const DEFAULT_REGION_SIZE: u32 = 1024;
/// Names are kept short enough that both uuids fit the kernel's 128 bytes.
pub const MAX_NAME_LEN: usize = 96;
/// The kernel's uuid field holds 128 characters and a NUL.
pub const MAX_UUID_LEN: usize = 128;

/// Where the mirror's dirty log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSpec {
    /// In memory only: after a restart of the machine every region resyncs.
    Core,
    /// On this device, in the kernel's `disk` log format.
    Disk(String),
}

/// One mirror as the configuration (or `create`'s command line) gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    pub name: String,
    pub legs: Vec<String>,
    pub log: LogSpec,
    pub region_size: u32,
    pub integrated_flush: bool,
    pub handle_errors: bool,
    /// Legs of different sizes are accepted; the mirror is the smallest's.
    pub uneven_legs: bool,
    /// `uuid=`: the log's uuid, when not derived from the name.
    pub log_uuid: Option<String>,
}

impl MirrorSpec {
    /// A mirror with the default options.
    pub fn new(name: String, legs: Vec<String>, log: LogSpec) -> Self {
        MirrorSpec {
            name,
            legs,
            log,
            region_size: DEFAULT_REGION_SIZE,
            integrated_flush: false,
            handle_errors: false,
            uneven_legs: false,
            log_uuid: None,
        }
    }

    /// The uuid the table gives the userspace log.
    pub fn log_uuid(&self) -> String {
        match &self.log_uuid {
            Some(u) => u.clone(),
            None => log_uuid_of(&self.name),
        }
    }

    /// The dm device's uuid.
    pub fn device_uuid(&self) -> String {
        device_uuid_of(&self.name)
    }

    /// The mirror as one configuration line (what `create --save` appends).
    pub fn to_line(&self) -> String {
        let log = match &self.log {
            LogSpec::Core => "core",
            LogSpec::Disk(d) => d.as_str(),
        };
        let mut options = Vec::new();
        if self.region_size != DEFAULT_REGION_SIZE {
            options.push(format!("region_size={}", self.region_size));
        }
        for (set, word) in [
            (self.integrated_flush, "integrated_flush"),
            (self.handle_errors, "handle_errors"),
            (self.uneven_legs, "uneven_legs"),
        ] {
            if set {
                options.push(word.to_string());
            }
        }
        if let Some(u) = &self.log_uuid {
            options.push(format!("uuid={u}"));
        }
        let options = if options.is_empty() {
            "-".to_string()
        } else {
            options.join(",")
        };
        format!("{} {} {} {}", self.name, self.legs.join(","), log, options)
    }

    /// Sets one option word (`region_size=N`, `integrated_flush`, ...).
    pub fn set_option(&mut self, word: &str) -> Result<(), String> {
        match word.split_once('=') {
            Some(("region_size", v)) => self.region_size = parse_region_size(v)?,
            Some(("uuid", v)) => {
                check_log_uuid(v)?;
                self.log_uuid = Some(v.to_string());
            }
            Some((key, _)) => {
                return Err(format!(
                    "unknown option {key:?}: expected region_size=, uuid=, integrated_flush, handle_errors or uneven_legs"
                ));
            }
            None => match word {
                "integrated_flush" => self.integrated_flush = true,
                "handle_errors" => self.handle_errors = true,
                "uneven_legs" => self.uneven_legs = true,
                _ => {
                    return Err(format!(
                        "unknown option {word:?}: expected region_size=, uuid=, integrated_flush, handle_errors or uneven_legs"
                    ));
                }
            },
        }
        Ok(())
    }

    /// Every device the mirror needs: its legs, then its log device.
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        let log = match &self.log {
            LogSpec::Core => None,
            LogSpec::Disk(d) => Some(d.as_str()),
        };
        self.legs.iter().map(String::as_str).chain(log)
    }
}

pub fn log_uuid_of(name: &str) -> String {
    format!("{LOG_UUID_PREFIX}{name}")
}

pub fn device_uuid_of(name: &str) -> String {
    format!("{DEVICE_UUID_PREFIX}{name}")
}

/// A mirror name: what /dev/mapper accepts and a shell word can hold.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "mirror name {name:?} must have 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if name == "." || name == ".." || name == "control" {
        return Err(format!("mirror name {name:?} is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')))
    {
        return Err(format!(
            "mirror name {name:?} has {c:?}: use letters, digits, '_', '-', '.' and '+'"
        ));
    }
    Ok(())
}

/// A device as the table and `open` take it: an absolute path or
/// major:minor.
pub fn check_device(what: &str, dev: &str) -> Result<(), String> {
    if parse_dev_numbers(dev).is_some() {
        return Ok(());
    }
    if !dev.starts_with('/') {
        return Err(format!(
            "{what} {dev:?} is neither an absolute path nor major:minor"
        ));
    }
    if dev.contains(',') || dev.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {dev:?} has a comma, a space or a control character"
        ));
    }
    Ok(())
}

fn check_log_uuid(uuid: &str) -> Result<(), String> {
    if uuid.is_empty() || uuid.len() > MAX_UUID_LEN {
        return Err(format!(
            "uuid {uuid:?} must have 1 to {MAX_UUID_LEN} characters"
        ));
    }
    if !uuid.chars().all(|c| c.is_ascii_graphic() && c != ',') {
        return Err(format!(
            "uuid {uuid:?} must be printable ASCII without spaces or commas"
        ));
    }
    Ok(())
}

/// A region size in sectors: a power of two from 2 up to 2^30.
pub fn parse_region_size(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (2..=1 << 30).contains(&n) && n.is_power_of_two() => Ok(n),
        _ => Err(format!(
            "region_size {v:?}: expected sectors, a power of two from 2 to 1073741824 (default {DEFAULT_REGION_SIZE})"
        )),
    }
}

/// Legs joined by commas: two to MAX_LEGS devices, none twice.
pub fn parse_legs(field: &str) -> Result<Vec<String>, String> {
    let legs: Vec<String> = field.split(',').map(str::to_string).collect();
    if legs.len() < 2 || legs.len() > MAX_LEGS {
        return Err(format!(
            "{} leg(s) in {field:?}: a mirror has 2 to {MAX_LEGS} legs, joined by commas",
            legs.len()
        ));
    }
    for (i, leg) in legs.iter().enumerate() {
        check_device("leg", leg)?;
        if legs[..i].contains(leg) {
            return Err(format!("leg {leg:?} is named twice"));
        }
    }
    Ok(legs)
}

pub fn parse_log(field: &str) -> Result<LogSpec, String> {
    if field == "core" {
        return Ok(LogSpec::Core);
    }
    check_device("log", field).map_err(|e| format!("{e}: expected `core` or a device"))?;
    Ok(LogSpec::Disk(field.to_string()))
}

/// Checks what no single field shows: the log is not one of the legs.
pub fn check_spec(spec: &MirrorSpec) -> Result<(), String> {
    check_name(&spec.name)?;
    if let LogSpec::Disk(d) = &spec.log
        && spec.legs.contains(d)
    {
        return Err(format!("log device {d:?} is also a leg"));
    }
    Ok(())
}

/// One configuration line's words: NAME LEGS LOG [OPTIONS].
pub fn parse_words(words: &[&str]) -> Result<MirrorSpec, String> {
    let [name, legs, log, rest @ ..] = words else {
        return Err(format!(
            "{} field(s): expected NAME LEGS LOG [OPTIONS]",
            words.len()
        ));
    };
    if rest.len() > 1 {
        return Err(format!(
            "{} fields: expected NAME LEGS LOG [OPTIONS] (options are joined by commas, without spaces)",
            words.len()
        ));
    }
    check_name(name)?;
    let mut spec = MirrorSpec::new(name.to_string(), parse_legs(legs)?, parse_log(log)?);
    if let Some(&options) = rest.first()
        && options != "-"
    {
        for word in options.split(',') {
            spec.set_option(word)?;
        }
    }
    check_spec(&spec)?;
    Ok(spec)
}

/// An error in a configuration file: where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 0 when the file as a whole is the problem.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Parses a whole configuration; `file` only names it in errors. The first
/// error ends the parse: a file that is partly wrong assembles nothing.
pub fn parse(text: &str, file: &Path) -> Result<Vec<MirrorSpec>, ConfigError> {
    let mut mirrors: Vec<MirrorSpec> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let error = |message| ConfigError {
            file: file.to_path_buf(),
            line: i + 1,
            message,
        };
        let content = line.split('#').next().unwrap_or("");
        let words: Vec<&str> = content.split_ascii_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let spec = parse_words(&words).map_err(error)?;
        if mirrors.iter().any(|m| m.name == spec.name) {
            return Err(error(format!("mirror {:?} is configured twice", spec.name)));
        }
        if let Some(m) = mirrors.iter().find(|m| m.log_uuid() == spec.log_uuid()) {
            return Err(error(format!(
                "log uuid {:?} is also mirror {:?}'s",
                spec.log_uuid(),
                m.name
            )));
        }
        mirrors.push(spec);
    }
    Ok(mirrors)
}

/// Reads and parses `path`. A missing file is an empty configuration when
/// `missing_ok` (status), an error otherwise.
pub fn load(path: &Path, missing_ok: bool) -> Result<Vec<MirrorSpec>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ConfigError {
            file: path.to_path_buf(),
            line: 0,
            message: format!("cannot read it: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<MirrorSpec>, String> {
        parse(text, Path::new("/etc/dm-ulogd/mirrors")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_with_comments_and_every_option() {
        let got = parse_text(
            "# name legs log options\n\
             \n\
             root /dev/vda,/dev/vdb /dev/vdc region_size=2048,integrated_flush  # the root\n\
             \tscratch 8:16,8:32,8:48 core -\n\
             data /dev/disk/by-id/a,/dev/disk/by-id/b core handle_errors,uneven_legs,uuid=my-log\n\
             bare /dev/sda,/dev/sdb core\n",
        )
        .unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].name, "root");
        assert_eq!(got[0].legs, ["/dev/vda", "/dev/vdb"]);
        assert_eq!(got[0].log, LogSpec::Disk("/dev/vdc".into()));
        assert_eq!(got[0].region_size, 2048);
        assert!(got[0].integrated_flush && !got[0].handle_errors);
        assert_eq!(got[0].log_uuid(), "dmulogd-root");
        assert_eq!(got[0].device_uuid(), "DMULOGD-root");
        assert_eq!(got[1].legs, ["8:16", "8:32", "8:48"]);
        assert_eq!(got[1].log, LogSpec::Core);
        assert_eq!(got[1].region_size, DEFAULT_REGION_SIZE);
        assert!(got[2].handle_errors && got[2].uneven_legs);
        assert_eq!(got[2].log_uuid(), "my-log");
        assert_eq!(
            got[3],
            MirrorSpec::new(
                "bare".into(),
                vec!["/dev/sda".into(), "/dev/sdb".into()],
                LogSpec::Core
            )
        );
    }

    #[test]
    fn lines_round_trip() {
        for line in [
            "root /dev/vda,/dev/vdb /dev/vdc -",
            "m 8:1,8:2 core region_size=64,integrated_flush,handle_errors,uneven_legs,uuid=x",
        ] {
            let spec = parse_text(line).unwrap().remove(0);
            assert_eq!(spec.to_line(), line);
        }
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        for (text, want) in [
            (
                "a /dev/x,/dev/y core bogus",
                "/etc/dm-ulogd/mirrors:1: unknown option \"bogus\"",
            ),
            (
                "\n\na /dev/x,/dev/y core sync=1",
                ":3: unknown option \"sync\"",
            ),
            (
                "a /dev/x core",
                ":1: 1 leg(s) in \"/dev/x\": a mirror has 2 to 9 legs",
            ),
            (
                "a 1:1,1:2,1:3,1:4,1:5,1:6,1:7,1:8,1:9,1:10 core",
                "10 leg(s)",
            ),
            ("a /dev/x,/dev/x core", "leg \"/dev/x\" is named twice"),
            (
                "a dev/x,/dev/y core",
                "leg \"dev/x\" is neither an absolute path nor major:minor",
            ),
            (
                "a /dev/x,/dev/y disk",
                "log \"disk\" is neither an absolute path nor major:minor: expected `core` or a device",
            ),
            (
                "a /dev/x,/dev/y /dev/x",
                "log device \"/dev/x\" is also a leg",
            ),
            (
                "a /dev/x,/dev/y",
                ":1: 2 field(s): expected NAME LEGS LOG [OPTIONS]",
            ),
            ("a /dev/x,/dev/y core a b", "5 fields"),
            ("a/b /dev/x,/dev/y core", "mirror name \"a/b\" has '/'"),
            ("control /dev/x,/dev/y core", "reserved"),
            (
                "a /dev/x,/dev/y core region_size=1000",
                "region_size \"1000\": expected sectors, a power of two",
            ),
            ("a /dev/x,/dev/y core region_size=1", "power of two"),
            ("a /dev/x,/dev/y core uuid=", "uuid \"\" must have 1 to 128"),
            (
                "a /dev/x,/dev/y core\na /dev/z,/dev/w core",
                ":2: mirror \"a\" is configured twice",
            ),
            (
                "a /dev/x,/dev/y core uuid=q\nb /dev/z,/dev/w core uuid=q",
                ":2: log uuid \"q\" is also mirror \"a\"'s",
            ),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("/etc/dm-ulogd/mirrors:"), "{err}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(
            parse_text(&format!("{long} /dev/x,/dev/y core"))
                .unwrap_err()
                .contains("1 to 96")
        );
        // The longest name still gives uuids the kernel takes.
        let longest = parse_text(&format!("{} /dev/x,/dev/y core", &long[1..])).unwrap();
        assert!(longest[0].log_uuid().len() <= MAX_UUID_LEN);
        assert!(longest[0].device_uuid().len() <= MAX_UUID_LEN);
    }

    #[test]
    fn a_missing_file() {
        let p = Path::new("/nonexistent/dm-ulogd/mirrors");
        assert_eq!(load(p, true), Ok(Vec::new()));
        let e = load(p, false).unwrap_err().to_string();
        assert!(
            e.starts_with("/nonexistent/dm-ulogd/mirrors: cannot read it:"),
            "{e}"
        );
    }
}

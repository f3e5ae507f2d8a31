//! The subcommands' arguments: the rescue tools (examine, status) and the
//! mirror commands (create, assemble, convert, remove).

use std::ffi::OsString;
use std::path::PathBuf;

use super::{Command, DEFAULT_NODE_DIR, DEFAULT_PIDFILE, DEFAULT_STATE_DIR};
use crate::config::{self, DEFAULT_CONFIG, MirrorSpec};
use crate::table::LogOwner;

/// Seconds `assemble` waits for a mirror's devices by default.
pub const DEFAULT_ASSEMBLE_TIMEOUT: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExamineOptions {
    /// A path or "major:minor".
    pub device: String,
    /// List the dirty regions.
    pub dirty: bool,
    /// The mirror's region size in sectors: list the dirty byte ranges.
    pub region_size: Option<u32>,
    /// Where a major:minor device gets its short-lived node.
    pub node_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOptions {
    pub state_dir: PathBuf,
    pub pidfile: Option<PathBuf>,
    pub json: bool,
    /// The configuration, to say which mirrors are in it.
    pub config: PathBuf,
    /// Show resync progress until every mirror is in sync.
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    pub spec: MirrorSpec,
    /// Append the mirror's line to the configuration.
    pub save: bool,
    pub config: PathBuf,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOptions {
    /// The mirrors to assemble; empty with `all`.
    pub names: Vec<String>,
    pub all: bool,
    pub config: PathBuf,
    /// Seconds to wait for every mirror's devices, in all.
    pub timeout: u64,
    pub wait: bool,
    /// Only read the configuration and say what would be assembled.
    pub check: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    pub name: String,
    pub to: LogOwner,
    pub config: PathBuf,
    /// A core log keeps nothing across the move: allow the full resync.
    pub allow_resync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveOptions {
    pub names: Vec<String>,
}

/// A subcommand, named by the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Examine,
    Status,
    Create,
    Assemble,
    Convert,
    Remove,
}

impl Subcommand {
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "examine" => Some(Subcommand::Examine),
            "status" => Some(Subcommand::Status),
            "create" => Some(Subcommand::Create),
            "assemble" => Some(Subcommand::Assemble),
            "convert" => Some(Subcommand::Convert),
            "remove" => Some(Subcommand::Remove),
            _ => None,
        }
    }
}

/// Parses the arguments after the subcommand word.
pub fn parse(
    sub: Subcommand,
    args: &mut impl Iterator<Item = OsString>,
) -> Result<Command, String> {
    match sub {
        Subcommand::Examine => parse_examine(args),
        Subcommand::Status => parse_status(args),
        Subcommand::Create => parse_create(args),
        Subcommand::Assemble => parse_assemble(args),
        Subcommand::Convert => parse_convert(args),
        Subcommand::Remove => parse_remove(args),
    }
}

/// `--name value` or `--name=value`, one argument at a time.
struct Args<'a, I: Iterator<Item = OsString>> {
    args: &'a mut I,
    command: &'static str,
}

impl<I: Iterator<Item = OsString>> Args<'_, I> {
    /// The next argument split into its name and an inline `=value`.
    fn next(&mut self) -> Option<Result<(String, Option<String>), String>> {
        let arg = self.args.next()?;
        Some(
            arg.into_string()
                .map_err(|a| format!("{}: argument {a:?} is not UTF-8", self.command))
                .map(|arg| match arg.split_once('=') {
                    Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                    _ => (arg, None),
                }),
        )
    }

    fn value(&mut self, name: &str, inline: Option<String>, what: &str) -> Result<String, String> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .args
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{} {name} needs {what}", self.command)),
        }
    }

    fn unknown(&self, name: &str) -> String {
        format!("{}: unknown argument {name:?}", self.command)
    }
}

fn is_option(word: &str) -> bool {
    word.starts_with('-') && word.len() > 1
}

fn parse_examine(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "examine",
    };
    let mut device = None;
    let mut opts = ExamineOptions {
        device: String::new(),
        dirty: false,
        region_size: None,
        node_dir: PathBuf::from(DEFAULT_NODE_DIR),
    };
    while let Some(arg) = args.next() {
        let (name, inline) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--dirty" => opts.dirty = true,
            "--region-size" => {
                let v = args.value(&name, inline, "a number of sectors")?;
                opts.region_size = match v.parse::<u32>() {
                    Ok(n) if n >= 2 && n.is_power_of_two() => Some(n),
                    _ => {
                        return Err(format!(
                            "examine --region-size {v:?}: expected the mirror's region size in sectors, a power of two of at least 2"
                        ));
                    }
                };
            }
            "--node-dir" => {
                opts.node_dir = PathBuf::from(args.value(&name, inline, "a directory")?)
            }
            _ if is_option(&name) => return Err(args.unknown(&name)),
            _ if device.is_none() => device = Some(name),
            _ => return Err(format!("examine takes one device, got {name:?} too")),
        }
    }
    opts.device = device.ok_or("examine needs a device: a path or major:minor")?;
    Ok(Command::Examine(opts))
}

fn parse_status(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "status",
    };
    let mut opts = StatusOptions {
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        pidfile: Some(PathBuf::from(DEFAULT_PIDFILE)),
        json: false,
        config: PathBuf::from(DEFAULT_CONFIG),
        wait: false,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" => opts.json = true,
            "--wait" => opts.wait = true,
            "--state-dir" => {
                opts.state_dir = PathBuf::from(args.value(&name, inline, "a directory")?)
            }
            "--pidfile" => {
                let v = args.value(&name, inline, "a path")?;
                opts.pidfile = (v != "none").then(|| PathBuf::from(v));
            }
            "--config" => opts.config = PathBuf::from(args.value(&name, inline, "a path")?),
            _ => return Err(args.unknown(&name)),
        }
    }
    if opts.json && opts.wait {
        return Err("status: --wait shows progress for a person; leave out --json".into());
    }
    Ok(Command::Status(opts))
}

/// `create NAME LEGS LOG [OPTIONS]`: the words of a configuration line.
fn parse_create(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "create",
    };
    let mut words = Vec::new();
    let (mut save, mut wait) = (false, false);
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    while let Some(arg) = args.next() {
        let (name, inline) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--save" => save = true,
            "--wait" => wait = true,
            "--config" => config = PathBuf::from(args.value(&name, inline, "a path")?),
            _ if is_option(&name) => return Err(args.unknown(&name)),
            _ => words.push(name),
        }
    }
    if words.len() < 3 {
        return Err(
            "create needs NAME LEGS LOG [OPTIONS], e.g. `create root /dev/sda2,/dev/sdb2 /dev/sdc1 region_size=1024`"
                .into(),
        );
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let spec = config::parse_words(&words).map_err(|e| format!("create: {e}"))?;
    Ok(Command::Create(CreateOptions {
        spec,
        save,
        config,
        wait,
    }))
}

fn parse_assemble(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "assemble",
    };
    let mut opts = AssembleOptions {
        names: Vec::new(),
        all: false,
        config: PathBuf::from(DEFAULT_CONFIG),
        timeout: DEFAULT_ASSEMBLE_TIMEOUT,
        wait: false,
        check: false,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--all" => opts.all = true,
            "--wait" => opts.wait = true,
            "--check" => opts.check = true,
            "--config" => opts.config = PathBuf::from(args.value(&name, inline, "a path")?),
            "--timeout" => {
                let v = args.value(&name, inline, "seconds")?;
                opts.timeout = v.parse().ok().filter(|&s| s <= 86400).ok_or_else(|| {
                    format!("assemble --timeout {v:?}: expected seconds, 0 to 86400")
                })?;
            }
            _ if is_option(&name) => return Err(args.unknown(&name)),
            _ => {
                config::check_name(&name).map_err(|e| format!("assemble: {e}"))?;
                opts.names.push(name);
            }
        }
    }
    match (opts.all, opts.names.is_empty()) {
        (true, false) => Err("assemble takes mirror names or --all, not both".into()),
        (false, true) => Err("assemble needs mirror names or --all".into()),
        _ => Ok(Command::Assemble(opts)),
    }
}

fn parse_convert(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "convert",
    };
    let (mut name, mut to) = (None, None);
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut allow_resync = false;
    while let Some(arg) = args.next() {
        let (word, inline) = arg?;
        match word.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--allow-resync" => allow_resync = true,
            "--config" => config = PathBuf::from(args.value(&word, inline, "a path")?),
            "--to" => {
                to = Some(
                    match args.value(&word, inline, "kernel or userspace")?.as_str() {
                        "kernel" => LogOwner::Kernel,
                        "userspace" | "dm-ulogd" => LogOwner::Userspace,
                        v => {
                            return Err(format!(
                                "convert --to {v:?}: expected kernel or userspace"
                            ));
                        }
                    },
                )
            }
            _ if is_option(&word) => return Err(args.unknown(&word)),
            _ if name.is_none() => {
                config::check_name(&word).map_err(|e| format!("convert: {e}"))?;
                name = Some(word);
            }
            _ => return Err(format!("convert takes one mirror, got {word:?} too")),
        }
    }
    Ok(Command::Convert(ConvertOptions {
        name: name.ok_or("convert needs a mirror name and --to kernel|userspace")?,
        to: to.ok_or("convert needs --to kernel|userspace")?,
        config,
        allow_resync,
    }))
}

fn parse_remove(args: &mut impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args {
        args,
        command: "remove",
    };
    let mut names = Vec::new();
    while let Some(arg) = args.next() {
        let (name, _) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            _ if is_option(&name) => return Err(args.unknown(&name)),
            _ => {
                config::check_name(&name).map_err(|e| format!("remove: {e}"))?;
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return Err("remove needs the names of the mirrors to remove".into());
    }
    Ok(Command::Remove(RemoveOptions { names }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogSpec;

    fn parse(args: &[&str]) -> Result<Command, String> {
        super::super::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn examine_arguments() {
        let Ok(Command::Examine(o)) = parse(&["examine", "254:3", "--dirty", "--region-size=1024"])
        else {
            panic!("not examine");
        };
        assert_eq!(o.device, "254:3");
        assert!(o.dirty);
        assert_eq!(o.region_size, Some(1024));
        assert_eq!(o.node_dir, PathBuf::from("/dev"));
        assert!(parse(&["examine"]).unwrap_err().contains("needs a device"));
        assert!(
            parse(&["examine", "a", "b"])
                .unwrap_err()
                .contains("one device")
        );
        assert!(
            parse(&["examine", "a", "--region-size", "1000"])
                .unwrap_err()
                .contains("power of two")
        );
        assert!(
            parse(&["examine", "a", "--bogus"])
                .unwrap_err()
                .contains("--bogus")
        );
        assert_eq!(parse(&["examine", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn status_arguments() {
        let Ok(Command::Status(o)) = parse(&[
            "status",
            "--state-dir",
            "/s",
            "--pidfile=none",
            "--json",
            "--config=/c",
        ]) else {
            panic!("not status");
        };
        assert_eq!(o.state_dir, PathBuf::from("/s"));
        assert_eq!(o.pidfile, None);
        assert_eq!(o.config, PathBuf::from("/c"));
        assert!(o.json && !o.wait);
        let Ok(Command::Status(o)) = parse(&["status", "--wait"]) else {
            panic!("not status");
        };
        assert_eq!(o.pidfile, Some(PathBuf::from(DEFAULT_PIDFILE)));
        assert_eq!(o.config, PathBuf::from(DEFAULT_CONFIG));
        assert!(o.wait);
        assert!(parse(&["status", "x"]).unwrap_err().contains("\"x\""));
        assert!(parse(&["status", "--json", "--wait"]).is_err());
        // A subcommand word is only one as the first argument.
        assert!(parse(&["-v", "status"]).is_err());
    }

    #[test]
    fn create_takes_a_configuration_line() {
        let Ok(Command::Create(o)) = parse(&[
            "create",
            "root",
            "/dev/vda,/dev/vdb",
            "--save",
            "/dev/vdc",
            "region_size=64,integrated_flush",
            "--config",
            "/tmp/m",
        ]) else {
            panic!("not create");
        };
        assert_eq!(o.spec.name, "root");
        assert_eq!(o.spec.log, LogSpec::Disk("/dev/vdc".into()));
        assert_eq!(o.spec.region_size, 64);
        assert!(o.spec.integrated_flush);
        assert!(o.save && !o.wait);
        assert_eq!(o.config, PathBuf::from("/tmp/m"));
        assert!(
            parse(&["create", "m"])
                .unwrap_err()
                .contains("needs NAME LEGS LOG")
        );
        assert_eq!(
            parse(&["create", "m", "/a,/b", "core", "bogus"]).unwrap_err(),
            "create: unknown option \"bogus\": expected region_size=, uuid=, integrated_flush, handle_errors or uneven_legs"
        );
        assert!(
            parse(&["create", "m", "/a,/b", "core", "--force"])
                .unwrap_err()
                .contains("--force")
        );
    }

    #[test]
    fn assemble_convert_remove_arguments() {
        let Ok(Command::Assemble(o)) = parse(&["assemble", "--all", "--timeout=5", "--wait"])
        else {
            panic!("not assemble");
        };
        assert!(o.all && o.wait && o.names.is_empty());
        assert_eq!(o.timeout, 5);
        let Ok(Command::Assemble(o)) = parse(&["assemble", "a", "b"]) else {
            panic!("not assemble");
        };
        assert_eq!((o.names.len(), o.timeout), (2, DEFAULT_ASSEMBLE_TIMEOUT));
        assert!(parse(&["assemble"]).unwrap_err().contains("--all"));
        assert!(
            parse(&["assemble", "a", "--all"])
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            parse(&["assemble", "--all", "--timeout", "x"])
                .unwrap_err()
                .contains("seconds")
        );
        let Ok(Command::Convert(o)) = parse(&["convert", "m", "--to", "kernel"]) else {
            panic!("not convert");
        };
        assert_eq!(
            (o.name.as_str(), o.to, o.allow_resync),
            ("m", LogOwner::Kernel, false)
        );
        assert!(parse(&["convert", "m"]).unwrap_err().contains("--to"));
        assert!(
            parse(&["convert", "m", "--to=disk"])
                .unwrap_err()
                .contains("kernel or userspace")
        );
        let Ok(Command::Remove(o)) = parse(&["remove", "a", "b"]) else {
            panic!("not remove");
        };
        assert_eq!(o.names, ["a", "b"]);
        assert!(parse(&["remove"]).is_err());
        assert!(parse(&["remove", "a/b"]).unwrap_err().contains("'/'"));
    }
}

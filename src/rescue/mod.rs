//! Rescue tools in the same binary: `dm-ulogd examine DEVICE` reads a disk
//! log device offline, `dm-ulogd status` reads a running daemon's state
//! files. Both only read: they open everything read-only and write nothing.

pub mod examine;
pub mod status;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::{self, Command};

pub use examine::ExamineOptions;
pub use status::StatusOptions;

/// A rescue subcommand, named by the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Examine,
    Status,
}

impl Subcommand {
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "examine" => Some(Subcommand::Examine),
            "status" => Some(Subcommand::Status),
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
        node_dir: PathBuf::from(cli::DEFAULT_NODE_DIR),
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
            _ if name.starts_with('-') && name.len() > 1 => {
                return Err(format!("examine: unknown argument {name:?}"));
            }
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
        state_dir: PathBuf::from(cli::DEFAULT_STATE_DIR),
        pidfile: Some(PathBuf::from(cli::DEFAULT_PIDFILE)),
        json: false,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = arg?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" => opts.json = true,
            "--state-dir" => {
                opts.state_dir = PathBuf::from(args.value(&name, inline, "a directory")?)
            }
            "--pidfile" => {
                let v = args.value(&name, inline, "a path")?;
                opts.pidfile = (v != "none").then(|| PathBuf::from(v));
            }
            _ => return Err(format!("status: unknown argument {name:?}")),
        }
    }
    Ok(Command::Status(opts))
}

/// `s` as a JSON string literal: quotes, backslashes and control characters
/// escaped.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        cli::parse(args.iter().map(OsString::from))
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
        let Ok(Command::Status(o)) =
            parse(&["status", "--state-dir", "/s", "--pidfile=none", "--json"])
        else {
            panic!("not status");
        };
        assert_eq!(o.state_dir, PathBuf::from("/s"));
        assert_eq!(o.pidfile, None);
        assert!(o.json);
        let Ok(Command::Status(o)) = parse(&["status"]) else {
            panic!("not status");
        };
        assert_eq!(o.pidfile, Some(PathBuf::from(cli::DEFAULT_PIDFILE)));
        assert!(parse(&["status", "x"]).unwrap_err().contains("\"x\""));
        // A subcommand word is only one as the first argument.
        assert!(parse(&["-v", "status"]).is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("µ"), "\"µ\"");
    }
}

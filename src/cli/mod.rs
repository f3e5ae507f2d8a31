//! The command line, parsed by hand: the daemon's options here, the
//! subcommands' in subcommands.rs. Every option type lives in this module,
//! so the modules that run a command import from it and it imports none of
//! them.

mod help;
mod subcommands;

use std::ffi::OsString;
use std::path::PathBuf;

pub use help::HELP;
pub use subcommands::{
    AssembleOptions, ConvertOptions, CreateOptions, ExamineOptions, RemoveOptions, StatusOptions,
};

pub const DEFAULT_PIDFILE: &str = "/run/dm-ulogd.pid";
pub const DEFAULT_STATE_DIR: &str = "/run/dm-ulogd";
pub const DEFAULT_NODE_DIR: &str = "/dev";
pub const DEFAULT_MAX_LOGS: usize = 256;
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;
pub const DEFAULT_RCVBUF: usize = 4 << 20;

/// Bounds checked at parse time. The registry reserves its table of logs at
/// start-up, so --max-logs bounds memory the daemon takes (and locks) at once.
pub const MAX_LOGS_LIMIT: usize = 65536;
pub const MEMORY_BUDGET_MIN: usize = 1 << 10;
/// 1T, or all a 32-bit address space can name.
pub const MEMORY_BUDGET_MAX: usize = if usize::BITS > 40 {
    1 << 40
} else {
    usize::MAX
};
/// Below this the queue holds too few of the kernel's requests to ride out a
/// burst; above it the kernel's doubled buffer size would overflow an int.
pub const RCVBUF_MIN: usize = 64 << 10;
pub const RCVBUF_MAX: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub daemon: bool,
    pub pidfile: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub node_dir: PathBuf,
    pub max_logs: usize,
    pub memory_budget: usize,
    pub rcvbuf: usize,
    pub mlock: bool,
    pub root_storage: bool,
    pub verbosity: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            daemon: false,
            pidfile: Some(PathBuf::from(DEFAULT_PIDFILE)),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            node_dir: PathBuf::from(DEFAULT_NODE_DIR),
            max_logs: DEFAULT_MAX_LOGS,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            rcvbuf: DEFAULT_RCVBUF,
            mlock: true,
            root_storage: false,
            verbosity: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Examine(ExamineOptions),
    Status(StatusOptions),
    Create(CreateOptions),
    Assemble(AssembleOptions),
    Convert(ConvertOptions),
    Remove(RemoveOptions),
    Help,
    Version,
}

/// Parses a size: digits with an optional K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Option<usize> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        b't' | b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: usize = digits.parse().ok()?;
    // checked_shl: a T on a 32-bit target is out of range, not a wrapped shift.
    n.checked_mul(1usize.checked_shl(shift)?)
}

/// A size option within `min..=max`, or a message naming the option and
/// both bounds.
fn bounded_size(option: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    match parse_size(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(format!(
            "{option} {value:?} is out of range: expected {} to {}",
            show_size(min),
            show_size(max)
        )),
        None => Err(format!(
            "{option} {value:?}: expected a size like {}, from {} to {}",
            show_size(DEFAULT_MEMORY_BUDGET),
            show_size(min),
            show_size(max)
        )),
    }
}

/// A size as its largest exact K/M/G/T unit, as the options take it.
fn show_size(n: usize) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let Some(size) = 1usize.checked_shl(shift) else {
            continue; // no T on a 32-bit target
        };
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter().peekable();
    let first = args.peek().and_then(|a| a.to_str());
    if let Some(sub) = first.and_then(subcommands::Subcommand::from_word) {
        args.next();
        return subcommands::parse(sub, &mut args);
    }
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{name} needs {what}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-d" | "--daemon" => opts.daemon = true,
            "-v" | "--verbose" => opts.verbosity = opts.verbosity.saturating_add(1),
            "-vv" => opts.verbosity = opts.verbosity.saturating_add(2),
            "--no-mlock" => opts.mlock = false,
            "--root-storage" => opts.root_storage = true,
            "--pidfile" => {
                let v = value("a path")?;
                opts.pidfile = (v != "none").then(|| PathBuf::from(v));
            }
            "--state-dir" => opts.state_dir = PathBuf::from(value("a directory")?),
            "--node-dir" => opts.node_dir = PathBuf::from(value("a directory")?),
            "--max-logs" => {
                let v = value("a number")?;
                opts.max_logs = match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_LOGS_LIMIT as u64).contains(&n) => n as usize,
                    Ok(_) => {
                        return Err(format!(
                            "--max-logs {v:?} is out of range: expected 1 to {MAX_LOGS_LIMIT}"
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "--max-logs {v:?}: expected a number from 1 to {MAX_LOGS_LIMIT}"
                        ));
                    }
                };
            }
            "--memory-budget" => {
                let v = value("a size")?;
                opts.memory_budget =
                    bounded_size("--memory-budget", &v, MEMORY_BUDGET_MIN, MEMORY_BUDGET_MAX)?;
            }
            "--rcvbuf" => {
                let v = value("a size")?;
                opts.rcvbuf = bounded_size("--rcvbuf", &v, RCVBUF_MIN, RCVBUF_MAX)?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Command::Run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults() {
        assert_eq!(run(&[]), Ok(Command::Run(Options::default())));
    }

    #[test]
    fn every_option() {
        let Ok(Command::Run(o)) = run(&[
            "-d",
            "--pidfile=/tmp/p",
            "--state-dir",
            "/tmp/s",
            "--node-dir=/tmp/n",
            "--max-logs",
            "8",
            "--memory-budget",
            "2M",
            "--rcvbuf=64k",
            "--no-mlock",
            "--root-storage",
            "-v",
            "-v",
        ]) else {
            panic!("parse failed");
        };
        assert!(o.daemon);
        assert_eq!(o.pidfile, Some(PathBuf::from("/tmp/p")));
        assert_eq!(o.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(o.node_dir, PathBuf::from("/tmp/n"));
        assert_eq!(o.max_logs, 8);
        assert_eq!(o.memory_budget, 2 << 20);
        assert_eq!(o.rcvbuf, 64 << 10);
        assert!(!o.mlock);
        assert!(o.root_storage);
        assert_eq!(o.verbosity, 2);
    }

    #[test]
    fn errors_name_the_argument() {
        assert!(run(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(run(&["--max-logs"]).unwrap_err().contains("needs a number"));
        assert!(
            run(&["--max-logs", "0"])
                .unwrap_err()
                .contains("1 to 65536")
        );
        assert!(
            run(&["--memory-budget", "lots"])
                .unwrap_err()
                .contains("64M")
        );
        assert_eq!(
            run(&["--pidfile", "none"]).map(|c| match c {
                Command::Run(o) => o.pidfile,
                _ => None,
            }),
            Ok(None)
        );
        assert_eq!(run(&["-h"]), Ok(Command::Help));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
    }

    /// Values that panicked (overflow) or aborted (a huge allocation) before
    /// they were bounded: each is refused with a message naming the option
    /// and its range.
    #[test]
    fn options_are_bounded() {
        for (args, want) in [
            (
                &["--max-logs", "18446744073709551615"][..],
                "--max-logs \"18446744073709551615\" is out of range: expected 1 to 65536",
            ),
            (&["--max-logs", "100000000000"], "expected 1 to 65536"),
            (&["--max-logs", "65537"], "expected 1 to 65536"),
            (
                &["--max-logs", "99999999999999999999999"],
                "from 1 to 65536",
            ),
            (&["--max-logs", "-1"], "from 1 to 65536"),
            (&["--memory-budget", "2T"], "expected 1K to 1T"),
            (&["--memory-budget", "1023"], "expected 1K to 1T"),
            (&["--memory-budget", "0"], "expected 1K to 1T"),
            (&["--memory-budget", "99999999999G"], "from 1K to 1T"),
            (&["--rcvbuf", "0"], "expected 64K to 1G"),
            (&["--rcvbuf", "2G"], "expected 64K to 1G"),
            (&["--rcvbuf=1k"], "expected 64K to 1G"),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err:?}");
            assert!(
                err.starts_with(args[0].split('=').next().unwrap()),
                "{err:?}"
            );
        }
        // 1T where a usize holds it, all of the address space on 32 bits.
        let largest_budget = MEMORY_BUDGET_MAX.to_string();
        let Ok(Command::Run(o)) = run(&[
            "--max-logs",
            "65536",
            "--memory-budget",
            &largest_budget,
            "--rcvbuf",
            "1G",
        ]) else {
            panic!("the largest values are refused");
        };
        assert_eq!(
            (o.max_logs, o.memory_budget, o.rcvbuf),
            (65536, MEMORY_BUDGET_MAX, 1 << 30)
        );
    }
}

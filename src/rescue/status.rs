//! `dm-ulogd status`: the logs a daemon serves, read from its state files
//! (log/state.rs) without talking to it, and whether it still runs (it
//! holds the pid file's lock). Everything is opened read-only.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::json_string;
use crate::admin::mirrors::{self, MirrorView};
pub use crate::cli::StatusOptions;
use crate::config;
use crate::dmctl::Control;
use crate::log::params;
use crate::log::state::{SavedLog, read_saved_log};
use crate::server::Uuid;
use crate::startup::ExitCode;

/// Whether the daemon that writes the state files runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// Its pid file is locked; the pid as the file says.
    Running { pid: Option<u32> },
    /// No pid file, or nobody holds its lock.
    NotRunning,
    /// Cannot tell; says why.
    Unknown(String),
}

impl Daemon {
    fn word(&self) -> &'static str {
        match self {
            Daemon::Running { .. } => "running",
            Daemon::NotRunning => "not running",
            Daemon::Unknown(_) => "unknown",
        }
    }
}

/// Tests the pid file's lock with a non-blocking shared lock on a read-only
/// descriptor: the daemon holds an exclusive one while it runs. A shared
/// lock that is granted is dropped at once.
pub fn daemon_state(pidfile: Option<&Path>) -> Daemon {
    let Some(path) = pidfile else {
        return Daemon::Unknown("no pid file (--pidfile none)".into());
    };
    let file = match nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Daemon::NotRunning,
        Err(e) => {
            return Daemon::Unknown(format!("cannot open {}: {}", path.display(), e.desc()));
        }
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => Daemon::NotRunning,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Daemon::Running {
                pid: text.trim().parse().ok(),
            }
        }
        Err((_, e)) => Daemon::Unknown(format!(
            "cannot test the lock of {}: {}",
            path.display(),
            e.desc()
        )),
    }
}

/// A live log: its state file and what the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLog {
    pub state_file: PathBuf,
    pub saved: SavedLog,
}

/// What a log's constructor string says.
struct Table<'a> {
    log_type: &'a str,
    region_size: Option<u32>,
    device: Option<&'a str>,
}

impl LiveLog {
    fn table(&self) -> Table<'_> {
        match params::parse(&self.saved.ctr) {
            Ok(args) => Table {
                log_type: args.log_type.name(),
                region_size: Some(args.region_size),
                device: args.device,
            },
            // The daemon saves only strings it accepted; a damaged file
            // still shows its counts.
            Err(_) => Table {
                log_type: "unknown",
                region_size: None,
                device: None,
            },
        }
    }

    fn dirty(&self) -> u64 {
        self.saved.region_count - self.saved.clean_count.min(self.saved.region_count)
    }
}

/// Reads every state file in `dir`, sorted by uuid and luid; files that are
/// not state files are skipped, damaged ones reported in the second list.
pub fn read_live_logs(dir: &Path) -> Result<(Vec<LiveLog>, Vec<String>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the state directory {}: {e} (give the daemon's --state-dir)",
            dir.display()
        )
    })?;
    let mut logs = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match read_saved_log(&path) {
            Ok(Some(saved)) => logs.push(LiveLog {
                state_file: path,
                saved,
            }),
            Ok(None) => {}
            Err(e) => problems.push(format!("state file {}: {e}", path.display())),
        }
    }
    logs.sort_by(|a, b| (&a.saved.uuid, a.saved.luid).cmp(&(&b.saved.uuid, b.saved.luid)));
    Ok((logs, problems))
}

/// The mirrors dm-ulogd made and those configured, through device-mapper
/// (its control device opened read-only; only asking ioctls); the
/// configured ones alone when device-mapper is not there.
fn read_mirrors(opts: &StatusOptions, problems: &mut Vec<String>) -> Vec<MirrorView> {
    let configured = config::load(&opts.config, true).unwrap_or_else(|e| {
        problems.push(e.to_string());
        Vec::new()
    });
    let Ok(mut ctl) = Control::open_read_only() else {
        return configured
            .iter()
            .map(|m| MirrorView {
                name: m.name.clone(),
                table: None,
                status: None,
                in_config: true,
            })
            .collect();
    };
    mirrors::list(&mut ctl, &configured).unwrap_or_else(|e| {
        problems.push(e);
        Vec::new()
    })
}

/// Runs `status`: exit code 0, or 1 when the state directory, a state
/// file or the configuration cannot be read.
pub fn run(opts: &StatusOptions) -> ExitCode {
    let (logs, mut problems) = match read_live_logs(&opts.state_dir) {
        Ok(found) => found,
        Err(msg) => {
            eprintln!("dm-ulogd status: {msg}");
            return ExitCode::Runtime;
        }
    };
    let daemon = daemon_state(opts.pidfile.as_deref());
    let mirrors = read_mirrors(opts, &mut problems);
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = if opts.json {
        render_json(&daemon, &logs, &mut out).and_then(|()| render_mirrors_json(&mirrors, &mut out))
    } else {
        render_text(&daemon, opts, &logs, &mut out).and_then(|()| {
            mirrors
                .iter()
                .try_for_each(|m| writeln!(out, "{}", m.line()))
        })
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        eprintln!("dm-ulogd status: cannot write the report: {e}");
        return ExitCode::Runtime;
    }
    for p in &problems {
        eprintln!("dm-ulogd status: {p}");
    }
    if opts.wait {
        let active: Vec<String> = mirrors
            .iter()
            .filter(|m| m.table.is_some())
            .map(|m| m.name.clone())
            .collect();
        if let Ok(mut ctl) = Control::open_read_only() {
            mirrors::wait_in_sync(&mut ctl, &active);
        }
    }
    if problems.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Runtime
    }
}

/// One line for the daemon, one per log in the words of the SIGUSR1 summary.
pub fn render_text(
    daemon: &Daemon,
    opts: &StatusOptions,
    logs: &[LiveLog],
    out: &mut impl Write,
) -> io::Result<()> {
    let pidfile = opts
        .pidfile
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    match daemon {
        Daemon::Running { pid: Some(pid) } => {
            writeln!(out, "daemon: running, pid {pid} ({pidfile} is locked)")?
        }
        Daemon::Running { pid: None } => writeln!(out, "daemon: running ({pidfile} is locked)")?,
        Daemon::NotRunning if logs.is_empty() => {
            writeln!(out, "daemon: not running ({pidfile} is not locked)")?
        }
        Daemon::NotRunning => writeln!(
            out,
            "daemon: not running ({pidfile} is not locked); the logs below are as it left them, \
             and a daemon started with this --state-dir takes them up when the kernel reconnects"
        )?,
        Daemon::Unknown(why) => writeln!(out, "daemon: unknown: {why}")?,
    }
    writeln!(
        out,
        "state directory {}: {} live log(s)",
        opts.state_dir.display(),
        logs.len()
    )?;
    for log in logs {
        let t = log.table();
        let s = &log.saved;
        write!(
            out,
            "log {} luid {}: {}, {} regions of ",
            Uuid(&s.uuid),
            s.luid,
            t.log_type,
            s.region_count
        )?;
        match t.region_size {
            Some(size) => write!(out, "{size}")?,
            None => write!(out, "?")?,
        }
        write!(
            out,
            " sectors, {} in sync, {} dirty, ",
            s.sync_count,
            log.dirty()
        )?;
        match t.device {
            Some(dev) => writeln!(out, "log device {dev}")?,
            None => writeln!(out, "no log device")?,
        }
    }
    Ok(())
}

/// One JSON object per line per mirror, after the logs': they have a
/// "mirror" key where the logs' have "uuid".
pub fn render_mirrors_json(mirrors: &[MirrorView], out: &mut impl Write) -> io::Result<()> {
    for m in mirrors {
        let optional = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let t = m.table.as_ref();
        let s = m.status.as_ref();
        let legs = t.map(|t| {
            let legs: Vec<String> = t.legs.iter().map(|(d, _)| json_string(d)).collect();
            format!("[{}]", legs.join(","))
        });
        writeln!(
            out,
            "{{\"mirror\":{},\"active\":{},\"log_server\":{},\"log_type\":{},\"log_device\":{},\
             \"in_sync\":{},\"regions\":{},\"log_health\":{},\"legs\":{},\"leg_health\":{},\"in_config\":{}}}",
            json_string(&m.name),
            t.is_some(),
            optional(t.map(|t| json_string(t.owner().word()))),
            optional(t.map(|t| json_string(&t.log_type))),
            optional(t.and_then(|t| t.log_device()).map(json_string)),
            optional(s.map(|s| s.in_sync.to_string())),
            optional(s.map(|s| s.regions.to_string())),
            optional(s.map(|s| json_string(s.log_health()))),
            optional(legs),
            optional(s.map(|s| json_string(&s.leg_health))),
            m.in_config,
        )?;
    }
    Ok(())
}

/// One JSON object per line per log.
pub fn render_json(daemon: &Daemon, logs: &[LiveLog], out: &mut impl Write) -> io::Result<()> {
    let pid = match daemon {
        Daemon::Running { pid: Some(pid) } => pid.to_string(),
        _ => "null".into(),
    };
    for log in logs {
        let t = log.table();
        let s = &log.saved;
        let optional = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        writeln!(
            out,
            "{{\"uuid\":{},\"luid\":{},\"type\":{},\"regions\":{},\"region_size\":{},\
             \"in_sync\":{},\"dirty\":{},\"log_device\":{},\"daemon\":{},\"pid\":{pid},\
             \"state_file\":{}}}",
            json_string(&String::from_utf8_lossy(&s.uuid)),
            s.luid,
            json_string(t.log_type),
            s.region_count,
            optional(t.region_size.map(|n| n.to_string())),
            s.sync_count,
            log.dirty(),
            optional(t.device.map(json_string)),
            json_string(daemon.word()),
            json_string(&log.state_file.to_string_lossy()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(uuid: &[u8], ctr: &[u8], regions: u64, clean: u64, sync: u64) -> LiveLog {
        LiveLog {
            state_file: PathBuf::from("/run/dm-ulogd/log-1"),
            saved: SavedLog {
                luid: 7,
                uuid: uuid.to_vec(),
                ctr: ctr.to_vec(),
                region_count: regions,
                clean_count: clean,
                sync_count: sync,
            },
        }
    }

    fn opts() -> StatusOptions {
        StatusOptions {
            state_dir: PathBuf::from("/run/dm-ulogd"),
            pidfile: Some(PathBuf::from("/run/dm-ulogd.pid")),
            json: false,
            config: PathBuf::from("/etc/dm-ulogd/mirrors"),
            wait: false,
        }
    }

    #[test]
    fn text_lines_follow_the_summary() {
        let logs = [
            live(b"m-core", b"131072 core 2 1024 nosync", 128, 128, 128),
            live(
                b"m-disk",
                b"131072 disk 2 /dev/mapper/m_log 1024",
                128,
                125,
                120,
            ),
        ];
        let mut out = Vec::new();
        render_text(&Daemon::Running { pid: Some(42) }, &opts(), &logs, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "daemon: running, pid 42 (/run/dm-ulogd.pid is locked)\n\
             state directory /run/dm-ulogd: 2 live log(s)\n\
             log m-core luid 7: core, 128 regions of 1024 sectors, 128 in sync, 0 dirty, no log device\n\
             log m-disk luid 7: disk, 128 regions of 1024 sectors, 120 in sync, 3 dirty, log device /dev/mapper/m_log\n"
        );
        let mut out = Vec::new();
        render_text(&Daemon::NotRunning, &opts(), &[], &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert_eq!(
            t,
            "daemon: not running (/run/dm-ulogd.pid is not locked)\n\
             state directory /run/dm-ulogd: 0 live log(s)\n"
        );
    }

    #[test]
    fn json_objects_escape_strings() {
        let logs = [
            live(b"a\"b", b"64 clustered-disk 2 254:3 8", 8, 6, 8),
            live(b"c", b"garbage", 8, 8, 8),
        ];
        let mut out = Vec::new();
        render_json(&Daemon::NotRunning, &logs, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"uuid\":\"a\\\"b\",\"luid\":7,\"type\":\"clustered-disk\",\"regions\":8,\
             \"region_size\":8,\"in_sync\":8,\"dirty\":2,\"log_device\":\"254:3\",\
             \"daemon\":\"not running\",\"pid\":null,\"state_file\":\"/run/dm-ulogd/log-1\"}\n\
             {\"uuid\":\"c\",\"luid\":7,\"type\":\"unknown\",\"regions\":8,\"region_size\":null,\
             \"in_sync\":8,\"dirty\":0,\"log_device\":null,\"daemon\":\"not running\",\
             \"pid\":null,\"state_file\":\"/run/dm-ulogd/log-1\"}\n"
        );
    }
}

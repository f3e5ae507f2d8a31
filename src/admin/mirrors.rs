//! The mirrors dm-ulogd made (dm uuid `DMULOGD-...`) and those configured,
//! as `status` shows them, and the resync progress of `--wait`.

use std::io::Write;
use std::time::Duration;

use crate::config::{DEVICE_UUID_PREFIX, MirrorSpec};
use crate::dmctl::Control;
use crate::table::{LogOwner, MirrorParams, MirrorStatus};

use super::devices::daemon_listening;

/// One mirror as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorView {
    pub name: String,
    /// None: configured, not active.
    pub table: Option<MirrorParams>,
    /// None: not active, or its log's server is not running (the kernel
    /// would wait for it).
    pub status: Option<MirrorStatus>,
    pub in_config: bool,
}

/// The single mirror target of `name`'s live table.
pub fn live_params(ctl: &mut Control, name: &str) -> Result<(u64, MirrorParams), String> {
    let targets = ctl
        .table(name)
        .map_err(|e| format!("cannot read the table of {name}: {}", e.desc()))?;
    match targets.as_slice() {
        [t] if t.kind == "mirror" && t.start == 0 => Ok((t.length, MirrorParams::parse(&t.text)?)),
        _ => Err(format!("{name}'s table is not one mirror target")),
    }
}

/// The mirror's status line; None when asking would wait for a daemon that
/// does not run.
pub fn live_status(ctl: &mut Control, name: &str, owner: LogOwner) -> Option<MirrorStatus> {
    if owner == LogOwner::Userspace && !daemon_listening() {
        return None;
    }
    let targets = ctl.status(name).ok()?;
    MirrorStatus::parse(&targets.first()?.text)
}

/// Every mirror with our uuid prefix, then every configured one not active.
pub fn list(ctl: &mut Control, configured: &[MirrorSpec]) -> Result<Vec<MirrorView>, String> {
    let mut views = Vec::new();
    let mut names = ctl
        .names()
        .map_err(|e| format!("cannot list the device-mapper devices: {}", e.desc()))?;
    names.sort();
    for name in names {
        let Ok(Some(info)) = ctl.info(&name) else {
            continue;
        };
        if !info.uuid.starts_with(DEVICE_UUID_PREFIX) || !info.live_table {
            continue;
        }
        let table = live_params(ctl, &name).ok().map(|(_, t)| t);
        let status = table
            .as_ref()
            .and_then(|t| live_status(ctl, &name, t.owner()));
        views.push(MirrorView {
            in_config: configured.iter().any(|m| m.name == name),
            name,
            table,
            status,
        });
    }
    for spec in configured {
        if !views.iter().any(|v| v.name == spec.name) {
            views.push(MirrorView {
                name: spec.name.clone(),
                table: None,
                status: None,
                in_config: true,
            });
        }
    }
    Ok(views)
}

impl MirrorView {
    /// One line: name, sync, log, legs, configuration.
    pub fn line(&self) -> String {
        let config = if self.in_config {
            "in config"
        } else {
            "not in config"
        };
        let Some(t) = &self.table else {
            return format!("mirror {}: not active ({config})", self.name);
        };
        let log = match t.log_device() {
            Some(d) => format!("{} log on {d}", t.log_type),
            None => format!("{} log", t.log_type),
        };
        let server = match t.owner() {
            LogOwner::Userspace => "dm-ulogd",
            LogOwner::Kernel => "the kernel",
        };
        let legs: Vec<&str> = t.legs.iter().map(|(d, _)| d.as_str()).collect();
        match &self.status {
            Some(s) => format!(
                "mirror {}: {}/{} regions in sync, {log} ({server}), log health {}, legs {} {}, {config}",
                self.name,
                s.in_sync,
                s.regions,
                s.log_health(),
                legs.join(" "),
                s.leg_health,
            ),
            None => format!(
                "mirror {}: in-sync count unknown (dm-ulogd is not running), {log} ({server}), legs {}, {config}",
                self.name,
                legs.join(" "),
            ),
        }
    }
}

/// Polls the mirrors' status until each is in sync. On a terminal one
/// progress line is rewritten in place; otherwise one line per mirror at
/// the end.
pub fn wait_in_sync(ctl: &mut Control, names: &[String]) {
    let terminal = nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let mut out = std::io::stdout();
    loop {
        let mut done = true;
        let mut parts = Vec::new();
        for name in names {
            let owner = live_params(ctl, name).map_or(LogOwner::Userspace, |(_, t)| t.owner());
            match live_status(ctl, name, owner) {
                Some(s) => {
                    done &= s.in_sync >= s.regions;
                    let pct = (s.in_sync * 100).checked_div(s.regions).unwrap_or(100);
                    parts.push(format!("{name} {}/{} ({pct}%)", s.in_sync, s.regions));
                }
                None => {
                    eprintln!(
                        "dm-ulogd: cannot follow {name}'s resync: no status (is dm-ulogd running?)"
                    );
                    return;
                }
            }
        }
        if terminal {
            let _ = write!(out, "\r\x1b[Kresync: {}", parts.join(", "));
            let _ = out.flush();
        }
        if done {
            if terminal {
                let _ = writeln!(out);
            }
            for name in names {
                let _ = writeln!(out, "{name}: in sync");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

//! `convert NAME --to kernel|userspace`: moves a live mirror's dirty log
//! between the kernel's own log and dm-ulogd by a table reload on the same
//! log device. Both write the kernel's `disk` format (PROTOCOL.md section
//! 7): the new log reads the clean bits the old one flushed at suspend, so
//! nothing resyncs but the regions that were not in sync.
//!
//! Order (dmsetup reload + suspend + resume): DM_TABLE_LOAD constructs the
//! new log beside the live one, the suspend flushes the old log, the resume
//! makes the new table live and reads the device, and only then is the old
//! log destroyed (section 9, "Reload order"). The old table's last clears
//! are flushed by its kmirrord as its writes complete during the suspend
//! (section 10); one that landed after the new log read the device would
//! only resync that region again. The guest test (config_convert) compares
//! the in-sync count right before and right after each move under fio load
//! and has not seen one.

use crate::cli::ConvertOptions;
use crate::config::{self, log_uuid_of};
use crate::dmctl::Control;
use crate::startup::ExitCode;
use crate::table::{LogOwner, MirrorParams};
use crate::wire::dm_ioctl::Target;

use super::NOT_LISTENING;
use super::devices::daemon_listening;
use super::mirrors::live_params;

/// The table of `old` with its log served by `to`. `uuid` and
/// `integrated_flush` are the userspace log's (from the configuration).
pub fn converted(
    old: &MirrorParams,
    to: LogOwner,
    uuid: &str,
    integrated_flush: bool,
    allow_resync: bool,
) -> Result<MirrorParams, String> {
    if old.owner() == to {
        return Err(format!("its log is served by {} already", owner_words(to)));
    }
    if old.log_type != "core" && old.log_type != "disk" {
        return Err(format!(
            "its log type is {}: only core and disk logs move between the kernel and dm-ulogd",
            old.log_type
        ));
    }
    if old.log_type == "core" && !allow_resync {
        return Err(
            "it has a core log, whose bits live in memory only: the new log would resync the whole mirror; \
             add --allow-resync if that is what you want, or use a disk log"
                .into(),
        );
    }
    let mut new = old.clone();
    // sync/nosync would re-initialise the log instead of reading it.
    new.log_args.retain(|a| a != "sync" && a != "nosync");
    match to {
        LogOwner::Kernel => {
            new.userspace_uuid = None;
            new.integrated_flush = false;
        }
        LogOwner::Userspace => {
            new.userspace_uuid = Some(uuid.to_string());
            new.integrated_flush = integrated_flush;
        }
    }
    Ok(new)
}

fn owner_words(o: LogOwner) -> &'static str {
    match o {
        LogOwner::Kernel => "the kernel",
        LogOwner::Userspace => "dm-ulogd",
    }
}

pub fn run(opts: &ConvertOptions) -> ExitCode {
    let name = &opts.name;
    match convert(opts) {
        Ok(Some(table)) => {
            println!(
                "converted {name}: its log is served by {} now: {table}",
                owner_words(opts.to)
            );
            ExitCode::Ok
        }
        Ok(None) => {
            println!(
                "{name}: its log is served by {} already",
                owner_words(opts.to)
            );
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("dm-ulogd convert {name}: {e}");
            ExitCode::Runtime
        }
    }
}

/// The new table, or None when the log is served by `opts.to` already.
fn convert(opts: &ConvertOptions) -> Result<Option<String>, String> {
    let name = &opts.name;
    let configured = config::load(&opts.config, true).map_err(|e| e.to_string())?;
    let spec = configured.iter().find(|m| m.name == *name);
    let uuid = spec.map_or_else(|| log_uuid_of(name), |s| s.log_uuid());
    let integrated_flush = spec.is_some_and(|s| s.integrated_flush);
    if opts.to == LogOwner::Userspace && !daemon_listening() {
        return Err(NOT_LISTENING.into());
    }
    let mut ctl = Control::open()?;
    if ctl.info(name).map_err(|e| e.desc().to_string())?.is_none() {
        return Err(format!("no device-mapper device is named {name}"));
    }
    let (length, old) = live_params(&mut ctl, name)?;
    if old.owner() == opts.to {
        return Ok(None);
    }
    let new = converted(&old, opts.to, &uuid, integrated_flush, opts.allow_resync)?;
    let text = new.to_text();
    let target = Target {
        start: 0,
        length,
        kind: "mirror",
        params: &text,
    };
    ctl.load(name, &[target]).map_err(|e| {
        format!(
            "the kernel refused the new table ({}): nothing changed; see dmesg",
            e.desc()
        )
    })?;
    if let Err(e) = ctl.suspend(name) {
        let _ = ctl.clear(name);
        return Err(format!("cannot suspend it ({}): nothing changed", e.desc()));
    }
    ctl.resume(name).map_err(|e| {
        format!(
            "the resume with the new table failed ({}): the mirror is suspended; dmsetup resume {name}",
            e.desc()
        )
    })?;
    Ok(Some(format!("0 {length} mirror {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> MirrorParams {
        MirrorParams::parse(text).unwrap()
    }

    #[test]
    fn both_ways_on_the_same_device() {
        let user = p(
            "userspace 6 dmulogd-m integrated_flush disk 2 253:3 1024 2 253:1 0 253:2 0 1 handle_errors",
        );
        let kernel = converted(&user, LogOwner::Kernel, "x", false, false).unwrap();
        assert_eq!(
            kernel.to_text(),
            "disk 2 253:3 1024 2 253:1 0 253:2 0 1 handle_errors"
        );
        let back = converted(&kernel, LogOwner::Userspace, "dmulogd-m", true, false).unwrap();
        assert_eq!(back, user);
        let plain = converted(&kernel, LogOwner::Userspace, "dmulogd-m", false, false).unwrap();
        assert_eq!(
            plain.to_text(),
            "userspace 5 dmulogd-m disk 2 253:3 1024 2 253:1 0 253:2 0 1 handle_errors"
        );
    }

    #[test]
    fn refusals() {
        let kernel = p("disk 3 253:3 1024 nosync 2 253:1 0 253:2 0");
        assert_eq!(
            converted(&kernel, LogOwner::Userspace, "u", false, false)
                .unwrap()
                .to_text(),
            "userspace 5 u disk 2 253:3 1024 2 253:1 0 253:2 0"
        );
        assert!(
            converted(&kernel, LogOwner::Kernel, "u", false, false)
                .unwrap_err()
                .contains("already")
        );
        let core = p("core 1 1024 2 253:1 0 253:2 0");
        assert!(
            converted(&core, LogOwner::Userspace, "u", false, false)
                .unwrap_err()
                .contains("--allow-resync")
        );
        assert!(converted(&core, LogOwner::Userspace, "u", false, true).is_ok());
        let clustered = p("userspace 5 u clustered-disk 2 253:3 1024 2 253:1 0 253:2 0");
        assert!(
            converted(&clustered, LogOwner::Kernel, "u", false, true)
                .unwrap_err()
                .contains("clustered-disk")
        );
    }
}

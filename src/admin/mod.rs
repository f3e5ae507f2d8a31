//! The mirror commands: `create`, `assemble`, `convert`, `remove`, and the
//! mirrors' part of `status`. Each runs as a process of its own beside the
//! daemon and talks to the kernel through /dev/mapper/control (dmctl.rs);
//! nothing here runs in the daemon.

pub mod convert;
pub mod devices;
pub mod mirrors;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::cli::{AssembleOptions, CreateOptions, RemoveOptions};
use crate::config::{self, DEVICE_UUID_PREFIX, LogSpec, MirrorSpec};
use crate::dmctl::{self, Control};
use crate::log::disk;
use crate::startup::ExitCode;
use crate::table::{LogOwner, MirrorParams};
use crate::wire::dm_ioctl::Target;
use devices::{BlockDev, daemon_listening, probe};

/// How long udev, when it runs with device-mapper's rules, gets to make
/// /dev/mapper/NAME before we make it: a node of ours where udev wants its
/// link would stop udev from making the link (and systemd from seeing the
/// device), so it is a last resort.
const UDEV_NODE_WAIT_MS: u64 = 20_000;

pub const NOT_LISTENING: &str = "dm-ulogd is not running (nothing listens on the device-mapper log connector): start it first \
     (systemctl start dm-ulogd, or dm-ulogd --daemon)";

/// What `create` loaded.
pub struct Created {
    pub table: String,
}

/// Makes the mirror `spec`: checks, then DM_DEV_CREATE, DM_TABLE_LOAD and a
/// resume; a failure after the device was made removes it again. Warnings
/// go to stderr before the load, prefixed with `command`.
pub fn create_mirror(
    ctl: &mut Control,
    spec: &MirrorSpec,
    command: &str,
) -> Result<Created, String> {
    config::check_spec(spec)?;
    if !daemon_listening() {
        return Err(NOT_LISTENING.into());
    }
    match ctl.info(&spec.name) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(format!(
                "a device-mapper device named {} exists already (dmsetup info {})",
                spec.name, spec.name
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot ask device-mapper about {}: {}",
                spec.name,
                e.desc()
            ));
        }
    }
    let legs = spec
        .legs
        .iter()
        .map(|l| probe("leg", l))
        .collect::<Result<Vec<BlockDev>, String>>()?;
    let log = match &spec.log {
        LogSpec::Core => None,
        LogSpec::Disk(d) => Some(probe("log device", d)?),
    };
    let (length, warnings) = check_sizes(spec, &legs, log.as_ref())?;
    let leg_numbers: Vec<String> = legs.iter().map(BlockDev::numbers).collect();
    let log_number = log.as_ref().map(BlockDev::numbers);
    let params = MirrorParams::from_spec(
        spec,
        LogOwner::Userspace,
        &leg_numbers,
        log_number.as_deref(),
    );
    let text = params.to_text();
    for w in &warnings {
        eprintln!("dm-ulogd {command} {}: warning: {w}", spec.name);
    }
    // The table load claims every device: give up our claims first.
    legs.into_iter().chain(log).for_each(BlockDev::release);
    load_new(ctl, &spec.name, &spec.device_uuid(), length, &text)?;
    Ok(Created {
        table: format!("0 {length} mirror {text}"),
    })
}

/// The mirror's length, and warnings: the legs' sizes agree (or the spec
/// allows them not to), the regions fit a u32 and the log device.
fn check_sizes(
    spec: &MirrorSpec,
    legs: &[BlockDev],
    log: Option<&BlockDev>,
) -> Result<(u64, Vec<String>), String> {
    let smallest = legs
        .iter()
        .min_by_key(|l| l.sectors())
        .ok_or("a mirror needs legs")?;
    let largest = legs
        .iter()
        .max_by_key(|l| l.sectors())
        .ok_or("a mirror needs legs")?;
    if smallest.sectors() != largest.sectors() && !spec.uneven_legs {
        return Err(format!(
            "legs differ in size: {} has {} sectors, {} has {}; add the option uneven_legs to mirror the smallest's",
            smallest.spec,
            smallest.sectors(),
            largest.spec,
            largest.sectors()
        ));
    }
    let length = smallest.sectors();
    let region = u64::from(spec.region_size);
    if length < region {
        return Err(format!(
            "leg {} has {length} sectors, less than one region ({region}): use a smaller region_size",
            smallest.spec
        ));
    }
    let regions = length.div_ceil(region);
    if regions > u64::from(u32::MAX) {
        return Err(format!(
            "{regions} regions is more than the kernel takes: use a larger region_size"
        ));
    }
    let mut warnings = Vec::new();
    if let Some(log) = log {
        let needed = disk::image_len(regions, log.block_size);
        if log.size < needed {
            return Err(format!(
                "log device {} holds {} bytes, a log of {regions} regions needs {needed}: use a larger log device or region_size",
                log.spec, log.size
            ));
        }
        if let Some(recorded) = log.log_header_regions()
            && recorded != regions
        {
            warnings.push(format!(
                "log device {} records a log of {recorded} regions, this mirror has {regions}: is it the right log device? \
                 The kernel keeps its clean bits for the first {} regions",
                log.spec,
                recorded.min(regions)
            ));
        }
    }
    Ok((length, warnings))
}

/// DM_DEV_CREATE, DM_TABLE_LOAD, resume; on failure the device goes again.
fn load_new(
    ctl: &mut Control,
    name: &str,
    uuid: &str,
    length: u64,
    params: &str,
) -> Result<(), String> {
    let info = ctl.create(name, uuid).map_err(|e| match e {
        Errno::EBUSY => {
            format!("a device-mapper device named {name} or with uuid {uuid} exists already")
        }
        e => format!("cannot make the device {name}: {}", e.desc()),
    })?;
    let target = Target {
        start: 0,
        length,
        kind: "mirror",
        params,
    };
    let loaded = ctl
        .load(name, &[target])
        .map_err(|e| {
            format!(
                "the kernel refused the table ({}): see dmesg and dm-ulogd's log",
                e.desc()
            )
        })
        .and_then(|()| {
            ctl.resume(name)
                .map_err(|e| format!("cannot resume {name}: {}", e.desc()))
        });
    if let Err(e) = loaded {
        return Err(match ctl.remove(name) {
            Ok(()) => e,
            Err(r) => format!(
                "{e}; removing the half-made device failed too ({}): dmsetup remove {name}",
                r.desc()
            ),
        });
    }
    let wait = if udev_makes_dm_links() {
        UDEV_NODE_WAIT_MS
    } else {
        0
    };
    dmctl::ensure_node(name, info.major, info.minor, wait)
}

/// Where device-mapper's udev rules (libdevmapper's 55-dm.rules, which
/// make /dev/mapper/NAME) may be.
const DM_UDEV_RULES: [&str; 3] = [
    "/etc/udev/rules.d/55-dm.rules",
    "/lib/udev/rules.d/55-dm.rules",
    "/usr/lib/udev/rules.d/55-dm.rules",
];

/// udev runs and has device-mapper's rules: it makes /dev/mapper/NAME.
fn udev_makes_dm_links() -> bool {
    Path::new("/run/udev/control").exists() && DM_UDEV_RULES.iter().any(|r| Path::new(r).exists())
}

fn open_control() -> Result<Control, ExitCode> {
    Control::open().map_err(|e| {
        eprintln!("dm-ulogd: {e}");
        ExitCode::Environment
    })
}

/// Appends `spec`'s line to the configuration, refusing a name it has.
fn save(path: &Path, spec: &MirrorSpec) -> Result<(), String> {
    let existing = config::load(path, true).map_err(|e| e.to_string())?;
    if existing.iter().any(|m| m.name == spec.name) {
        return Err(format!(
            "{} has a mirror {} already",
            path.display(),
            spec.name
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    }
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&spec.to_line());
    text.push('\n');
    // Written beside and renamed over: a crash leaves the old file or the new.
    let tmp = path.with_extension("dm-ulogd-new");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn run_create(opts: &CreateOptions) -> ExitCode {
    let name = &opts.spec.name;
    if opts.save {
        // Checked first: a mirror made and not saved would surprise.
        if let Ok(existing) = config::load(&opts.config, true)
            && existing.iter().any(|m| m.name == *name)
        {
            eprintln!(
                "dm-ulogd create {name}: {} has a mirror {name} already: leave out --save, or assemble it",
                opts.config.display()
            );
            return ExitCode::Runtime;
        }
    }
    let mut ctl = match open_control() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match create_mirror(&mut ctl, &opts.spec, "create") {
        Ok(c) => println!("created {name}: {}", c.table),
        Err(e) => {
            eprintln!("dm-ulogd create {name}: {e}");
            return ExitCode::Runtime;
        }
    }
    if opts.save {
        match save(&opts.config, &opts.spec) {
            Ok(()) => println!("saved {name} in {}", opts.config.display()),
            Err(e) => {
                eprintln!("dm-ulogd create {name}: the mirror runs, but {e}");
                return ExitCode::Runtime;
            }
        }
    }
    if opts.wait {
        mirrors::wait_in_sync(&mut ctl, std::slice::from_ref(name));
    }
    ExitCode::Ok
}

/// Waits until every device of `spec` exists or `deadline` passes; names
/// the missing ones.
fn wait_for_devices(spec: &MirrorSpec, deadline: Instant) -> Result<(), String> {
    loop {
        let missing: Vec<&str> = spec
            .devices()
            .filter(|d| devices::numbers_of(d).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{} did not appear in time", missing.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run_assemble(opts: &AssembleOptions) -> ExitCode {
    let configured = match config::load(&opts.config, false) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dm-ulogd assemble: {e}");
            return ExitCode::Runtime;
        }
    };
    let mut wanted = Vec::new();
    if opts.all {
        wanted.extend(configured.iter());
    } else {
        for name in &opts.names {
            match configured.iter().find(|m| &m.name == name) {
                Some(m) => wanted.push(m),
                None => {
                    eprintln!(
                        "dm-ulogd assemble: {name} is not in {}: add its line, or use create",
                        opts.config.display()
                    );
                    return ExitCode::Runtime;
                }
            }
        }
    }
    if opts.check {
        for spec in wanted {
            println!("{}: {}", spec.name, spec.to_line());
        }
        return ExitCode::Ok;
    }
    let mut ctl = match open_control() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let deadline = Instant::now() + Duration::from_secs(opts.timeout);
    let mut failed = 0;
    let mut assembled = Vec::new();
    for spec in wanted {
        match assemble_one(&mut ctl, spec, deadline) {
            Ok(line) => {
                println!("{}: {line}", spec.name);
                assembled.push(spec.name.clone());
            }
            Err(e) => {
                println!("{}: FAILED: {e}", spec.name);
                failed += 1;
            }
        }
        let _ = std::io::stdout().flush();
    }
    if opts.wait {
        mirrors::wait_in_sync(&mut ctl, &assembled);
    }
    if failed > 0 {
        ExitCode::Runtime
    } else {
        ExitCode::Ok
    }
}

fn assemble_one(ctl: &mut Control, spec: &MirrorSpec, deadline: Instant) -> Result<String, String> {
    match ctl.info(&spec.name).map_err(|e| e.desc().to_string())? {
        Some(info) if info.live_table => {
            if !info.uuid.starts_with(DEVICE_UUID_PREFIX) {
                return Err(format!(
                    "a device named {} exists and is not dm-ulogd's (uuid {:?})",
                    spec.name, info.uuid
                ));
            }
            return Ok("active already".into());
        }
        Some(info) if info.uuid.starts_with(DEVICE_UUID_PREFIX) => {
            // Left half-made (a crash between create and resume).
            ctl.remove(&spec.name)
                .map_err(|e| format!("cannot remove the half-made device: {}", e.desc()))?;
        }
        Some(info) => {
            return Err(format!(
                "a device named {} exists and is not dm-ulogd's (uuid {:?})",
                spec.name, info.uuid
            ));
        }
        None => {}
    }
    wait_for_devices(spec, deadline)?;
    let created = create_mirror(ctl, spec, "assemble")?;
    Ok(format!("assembled ({})", created.table))
}

pub fn run_remove(opts: &RemoveOptions) -> ExitCode {
    let mut ctl = match open_control() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut code = ExitCode::Ok;
    for name in &opts.names {
        match remove_one(&mut ctl, name) {
            Ok(()) => println!("removed {name}"),
            Err(e) => {
                eprintln!("dm-ulogd remove {name}: {e}");
                code = ExitCode::Runtime;
            }
        }
    }
    code
}

fn remove_one(ctl: &mut Control, name: &str) -> Result<(), String> {
    let info = ctl
        .info(name)
        .map_err(|e| e.desc().to_string())?
        .ok_or_else(|| format!("no device-mapper device is named {name}"))?;
    if !info.uuid.starts_with(DEVICE_UUID_PREFIX) {
        return Err(format!(
            "{name} is not a mirror dm-ulogd made (uuid {:?}): use dmsetup remove",
            info.uuid
        ));
    }
    ctl.remove(name).map_err(|e| match e {
        Errno::EBUSY => {
            format!("{name} is in use (mounted, or open by a program): unmount or close it first")
        }
        e => format!("cannot remove it: {}", e.desc()),
    })?;
    dmctl::remove_node(name);
    Ok(())
}

//! dm-ulogd's entry point: arguments, start-up, then the event loop.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use dm_ulogd::cli::{self, Command, Options};
use dm_ulogd::event_loop;
use dm_ulogd::mirrors::DmMirrors;
use dm_ulogd::rescue;
use dm_ulogd::server::{Limits, Server};
use dm_ulogd::startup::{self, ExitCode, Fatal, LogTarget, Ready};
use dm_ulogd::sys::netlink::{ConnectorSocket, SocketError};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GIT_REVISION: &str = env!("DM_ULOGD_GIT_REVISION");

fn main() {
    let code = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            ExitCode::Ok
        }
        Ok(Command::Version) => {
            println!("dm-ulogd {VERSION} (git {GIT_REVISION})");
            ExitCode::Ok
        }
        Ok(Command::Run(opts)) => run(opts),
        Ok(Command::Examine(opts)) => rescue::examine::run(&opts),
        Ok(Command::Status(opts)) => rescue::status::run(&opts),
        Err(msg) => {
            eprintln!("dm-ulogd: {msg}\nTry 'dm-ulogd --help'.");
            ExitCode::Usage
        }
    };
    std::process::exit(code as i32);
}

fn run(opts: Options) -> ExitCode {
    if opts.root_storage {
        startup::become_root_storage_daemon();
    }
    let mut ready = None;
    if opts.daemon {
        match startup::detach() {
            Ok(r) => ready = Some(r),
            Err(f) => return report(f, None),
        }
        let target = match startup::KmsgWriter::open() {
            Some(kmsg) => LogTarget::Kmsg(kmsg),
            None => LogTarget::Stderr,
        };
        startup::init_logger(opts.verbosity, target);
    } else {
        startup::init_logger(opts.verbosity, LogTarget::Stderr);
    }
    match serve(&opts, &mut ready) {
        Ok(()) => ExitCode::Ok,
        Err(f) => report(f, ready),
    }
}

fn report(fatal: Fatal, ready: Option<Ready>) -> ExitCode {
    match ready {
        Some(r) => {
            log::error!("{}", fatal.message);
            r.failed(&fatal.message);
        }
        None => {
            if log::log_enabled!(log::Level::Error) {
                log::error!("{}", fatal.message);
            } else {
                eprintln!("dm-ulogd: {}", fatal.message);
            }
        }
    }
    fatal.code
}

fn serve(opts: &Options, ready: &mut Option<Ready>) -> Result<(), Fatal> {
    startup::check_privileges()?;
    let socket = ConnectorSocket::open(opts.rcvbuf).map_err(|e| {
        let code = match e {
            SocketError::NoConnector | SocketError::NotPermitted => ExitCode::Environment,
            SocketError::Other(..) => ExitCode::Runtime,
        };
        Fatal::new(code, e.to_string())
    })?;
    let _pidfile = match &opts.pidfile {
        Some(path) => Some(startup::lock_pidfile(path)?),
        None => None,
    };
    let state_dir = startup::open_work_dir(&opts.state_dir, "--state-dir")?;
    let node_dir = startup::open_work_dir(&opts.node_dir, "--node-dir")?;

    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("sigprocmask: {}", e.desc())))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("signalfd: {}", e.desc())))?;

    let limits = Limits {
        max_logs: opts.max_logs,
        memory_budget: opts.memory_budget,
    };
    let mirror_nodes = node_dir
        .try_clone()
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("dup of --node-dir: {e}")))?;
    let mirrors = Box::new(DmMirrors::new(mirror_nodes));
    let mut server = Server::new(limits, state_dir, node_dir, mirrors);
    if opts.mlock {
        startup::harden();
    }
    log::info!(
        "dm-ulogd {VERSION} listening (max {} logs, {} bytes of bitmaps, receive queue {} bytes)",
        opts.max_logs,
        opts.memory_budget,
        socket.rcvbuf().unwrap_or(0)
    );
    if let Some(r) = ready.take() {
        r.listening();
    }
    startup::notify_ready();
    event_loop::run(&mut server, &socket, &signals)
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("event loop failed: {e}")))
}

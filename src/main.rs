//! dm-ulogd's entry point: arguments, start-up, then the event loop.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use dm_ulogd::admin;
use dm_ulogd::cli::{self, Command, Options};
use dm_ulogd::engine::Engine;
use dm_ulogd::event_loop;
use dm_ulogd::mirrors::DmMirrors;
use dm_ulogd::rescue;
use dm_ulogd::server::{Limits, Server};
use dm_ulogd::startup::{self, ExitCode, Fatal, LogTarget, Ready};
use dm_ulogd::sys::{
    self,
    netlink::{ConnectorSocket, SocketError},
};

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
        Ok(Command::Create(opts)) => admin::run_create(&opts),
        Ok(Command::Assemble(opts)) => admin::run_assemble(&opts),
        Ok(Command::Convert(opts)) => admin::convert::run(&opts),
        Ok(Command::Remove(opts)) => admin::run_remove(&opts),
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
            r.failed(fatal.code, &fatal.message);
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
    let signals = take_signals()?;
    startup::check_privileges()?;
    let socket = ConnectorSocket::open(opts.rcvbuf).map_err(|e| {
        let code = match e {
            SocketError::NoConnector | SocketError::NotPermitted => ExitCode::Environment,
            SocketError::Other(..) => ExitCode::Runtime,
        };
        Fatal::new(code, e.to_string())
    })?;
    startup::check_network_namespace(&socket)?;
    let _pidfile = match &opts.pidfile {
        Some(path) => Some(startup::lock_pidfile(path)?),
        None => None,
    };
    let (state_dir, _state_dir_lock) = startup::open_state_dir(&opts.state_dir)?;
    let node_dir = startup::open_work_dir(&opts.node_dir, "--node-dir")?;

    let limits = Limits {
        max_logs: opts.max_logs,
        memory_budget: opts.memory_budget,
    };
    let mirror_nodes = node_dir
        .try_clone()
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("dup of --node-dir: {e}")))?;
    let mirrors = Box::new(DmMirrors::new(mirror_nodes));
    let engine = Engine::asynchronous(Server::io_slots(limits));
    let mut server = Server::new(limits, state_dir, node_dir, mirrors).with_engine(engine);
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

/// Signals the event loop reads from a signalfd: TERM and INT (exit when no
/// log is live), USR1 and HUP (the summary), and the rest of those whose
/// default action kills the process, which are logged and ignored. A real
/// fault (SEGV, BUS, ILL, FPE, ABRT, SYS) keeps its default action.
const READ_SIGNALS: [Signal; 15] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGTRAP,
];

/// Signals ignored outright: PIPE (a write to a closed pipe or socket fails
/// with EPIPE instead), the terminal stops TSTP, TTIN and TTOU (a stopped
/// daemon freezes every mirror as surely as a dead one), and the real-time
/// signals, whose default action kills.
const IGNORED_SIGNALS: [Signal; 4] = [
    Signal::SIGPIPE,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Blocks READ_SIGNALS into a signalfd and ignores the rest: from here on
/// only SIGKILL and SIGSTOP, which cannot be caught, stop the daemon.
fn take_signals() -> Result<SignalFd, Fatal> {
    let ignored = IGNORED_SIGNALS
        .iter()
        .map(|&s| s as libc::c_int)
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX());
    for signo in ignored {
        sys::ignore_signal(signo).map_err(|e| {
            Fatal::new(
                ExitCode::Runtime,
                format!("cannot ignore signal {signo}: {}", e.desc()),
            )
        })?;
    }
    let mut mask = SigSet::empty();
    for s in READ_SIGNALS {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("sigprocmask: {}", e.desc())))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Fatal::new(ExitCode::Runtime, format!("signalfd: {}", e.desc())))
}

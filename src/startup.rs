//! Start-up: logging, privilege checks, the pid file, detaching, and the
//! measures that keep a storage daemon alive under memory pressure.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd;

use crate::sys::netlink::ConnectorSocket;
use crate::sys::{self, Forked};

/// Exit codes, documented in --help and the man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    Ok = 0,
    Runtime = 1,
    Usage = 2,
    Environment = 3,
    AlreadyRunning = 4,
}

/// A start-up failure: what to print and how to exit.
#[derive(Debug)]
pub struct Fatal {
    pub code: ExitCode,
    pub message: String,
}

impl Fatal {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

/// Where log lines go.
pub enum LogTarget {
    Stderr,
    /// The kernel log, beside device-mapper's own messages.
    Kmsg(KmsgWriter),
}

/// How many lines the kernel takes from one open /dev/kmsg per interval
/// before it silently drops the rest (printk's default ratelimit: a burst
/// of 10 per 5 s, unless printk.devkmsg=on).
const KMSG_BURST: u32 = 10;

/// Writes log lines to /dev/kmsg. The kernel rate-limits each open file, so
/// every KMSG_BURST lines the writer opens /dev/kmsg afresh (through a
/// descriptor of /dev taken at start-up, which stays valid after
/// switch_root): no line is dropped, and nothing system-wide is changed.
/// Counting lines rather than time: the kernel's window runs on jiffies,
/// which drift from user-space clocks (markedly so under emulation).
pub struct KmsgWriter {
    dev: OwnedFd,
    file: File,
    /// Lines written to `file`.
    lines: u32,
}

impl KmsgWriter {
    pub fn open() -> Option<Self> {
        let dev = nix::fcntl::open(
            "/dev",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let file = Self::open_kmsg(&dev)?;
        Some(KmsgWriter {
            dev,
            file,
            lines: 0,
        })
    }

    fn open_kmsg(dev: &OwnedFd) -> Option<File> {
        nix::fcntl::openat(
            dev,
            "kmsg",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(File::from)
    }
}

impl Write for KmsgWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.lines >= KMSG_BURST
            && let Some(fresh) = Self::open_kmsg(&self.dev)
        {
            self.file = fresh;
            self.lines = 0;
        }
        self.lines += 1;
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets up env_logger: `verbosity` 0 = info, 1 = debug, 2+ = trace; RUST_LOG
/// overrides.
pub fn init_logger(verbosity: u8, target: LogTarget) {
    let level = match verbosity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    match target {
        LogTarget::Stderr => {
            builder.format(|buf, record| {
                writeln!(buf, "dm-ulogd: {}: {}", record.level(), record.args())
            });
            builder.target(env_logger::Target::Stderr);
        }
        LogTarget::Kmsg(file) => {
            let pid = std::process::id();
            builder.format(move |buf, record| {
                // Syslog priorities, which /dev/kmsg reads from the prefix.
                let priority = match record.level() {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    log::Level::Info => 6,
                    log::Level::Debug | log::Level::Trace => 7,
                };
                writeln!(buf, "<{priority}>dm-ulogd[{pid}]: {}", record.args())
            });
            builder.target(env_logger::Target::Pipe(Box::new(file)));
        }
    }
    let _ = builder.try_init();
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Checks the effective capabilities the protocol needs: CAP_NET_ADMIN to
/// join the connector group, CAP_SYS_ADMIN or the kernel silently drops
/// every reply.
pub fn check_privileges() -> Result<(), Fatal> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| {
        Fatal::new(
            ExitCode::Environment,
            format!("cannot read /proc/self/status to check privileges ({e}): is /proc mounted?"),
        )
    })?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| Fatal::new(ExitCode::Environment, "no CapEff line in /proc/self/status"))?;
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .iter()
    .filter(|(bit, _)| cap_eff & (1 << bit) == 0)
    .map(|&(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fatal::new(
            ExitCode::Environment,
            format!(
                "missing {}: the kernel accepts log replies only from a process with \
                 CAP_SYS_ADMIN and the connector group needs CAP_NET_ADMIN; run as root",
                missing.join(" and ")
            ),
        ))
    }
}

/// Creates, locks and fills the pid file; the lock lives as long as the
/// returned handle, so a second instance fails to take it. A symbolic link
/// or anything but a regular file is refused, never followed or truncated.
pub fn lock_pidfile(path: &Path) -> Result<Flock<File>, Fatal> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Fatal::new(
                ExitCode::Environment,
                format!(
                    "pid file {} is a symbolic link: refused (remove it, or choose another \
                     path with --pidfile)",
                    path.display()
                ),
            ),
            _ => Fatal::new(
                ExitCode::Runtime,
                format!(
                    "cannot open pid file {}: {e} (choose another with --pidfile)",
                    path.display()
                ),
            ),
        })?;
    let st = stat::fstat(file.as_fd()).map_err(|e| {
        Fatal::new(
            ExitCode::Runtime,
            format!("cannot stat pid file {}: {}", path.display(), e.desc()),
        )
    })?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Fatal::new(
            ExitCode::Environment,
            format!(
                "pid file {} is not a regular file: refused (remove it, or choose another \
                 path with --pidfile)",
                path.display()
            ),
        ));
    }
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(mut f, _)| {
        let mut other = String::new();
        let _ = f.read_to_string(&mut other);
        Fatal::new(
            ExitCode::AlreadyRunning,
            format!(
                "another dm-ulogd (pid {}) holds {}; only one may serve the kernel",
                other.trim(),
                path.display()
            ),
        )
    })?;
    let pid = format!("{}\n", std::process::id());
    // Readable by all, as pid files are, whatever the umask.
    let written = stat::fchmod(lock.as_fd(), Mode::from_bits_truncate(0o644))
        .map_err(std::io::Error::from)
        .and_then(|()| lock.set_len(0))
        .and_then(|()| (&*lock).write_all(pid.as_bytes()));
    written.map_err(|e| {
        Fatal::new(
            ExitCode::Runtime,
            format!("cannot write pid file {}: {e}", path.display()),
        )
    })?;
    Ok(lock)
}

/// Creates a directory the daemon works in (`option` names it in errors)
/// and opens it; everything the daemon later makes there goes through this
/// descriptor, which stays valid after the initramfs's switch_root moves
/// /run and /dev.
pub fn open_work_dir(path: &Path, option: &str) -> Result<OwnedFd, Fatal> {
    let fail = |what: &str, cause: String| {
        Fatal::new(
            ExitCode::Runtime,
            format!(
                "cannot {what} directory {}: {cause} (see {option})",
                path.display()
            ),
        )
    };
    std::fs::create_dir_all(path).map_err(|e| fail("create", e.to_string()))?;
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open", e.desc().to_string()))
}

/// Creates (0700) and opens the state directory, refuses one that others
/// could tamper with, and locks it. Returns the directory and the lock (on
/// a duplicate of it), which the daemon holds for its lifetime: a second
/// daemon on the same directory (with another pid file or none) fails to
/// take it.
///
/// The directory must be a real directory (not a symbolic link), owned by
/// root (or the daemon's user), and writable by its owner only: its files
/// hold every log's bits, and their names and headers the kernel's log ids.
/// Group or other read and search bits are removed.
pub fn open_state_dir(path: &Path) -> Result<(OwnedFd, Flock<OwnedFd>), Fatal> {
    let unsafe_dir = |why: String| {
        Fatal::new(
            ExitCode::Environment,
            format!(
                "state directory {}: {why}; refused: it holds every log's bits (fix it, \
                 or choose another with --state-dir)",
                path.display()
            ),
        )
    };
    let failed = |what: &str, cause: &str| {
        Fatal::new(
            ExitCode::Runtime,
            format!(
                "cannot {what} state directory {}: {cause} (see --state-dir)",
                path.display()
            ),
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| failed("create", &e.to_string()))?;
    let dir = nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_DIRECTORY with O_NOFOLLOW fails with ENOTDIR on a symbolic link.
        Errno::ELOOP | Errno::ENOTDIR => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) {
                unsafe_dir("it is a symbolic link".into())
            } else {
                unsafe_dir("it is not a directory".into())
            }
        }
        e => failed("open", e.desc()),
    })?;
    let st = stat::fstat(&dir).map_err(|e| failed("stat", e.desc()))?;
    let me = unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not root",
            st.st_uid
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "its mode {:04o} lets others than its owner write to it",
            st.st_mode & 0o7777
        )));
    }
    if st.st_mode & 0o077 != 0 {
        stat::fchmod(&dir, Mode::S_IRWXU).map_err(|e| failed("chmod 0700", e.desc()))?;
    }
    let lock_fd = dir
        .try_clone()
        .map_err(|e| failed("open", &e.to_string()))?;
    let lock = Flock::lock(lock_fd, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => Fatal::new(
            ExitCode::AlreadyRunning,
            format!(
                "another dm-ulogd uses state directory {}; only one may serve the kernel",
                path.display()
            ),
        ),
        e => failed("lock", e.desc()),
    })?;
    Ok((dir, lock))
}

/// NLMSG_NOOP, the type of the probe: the connector ignores any message too
/// short to hold a connector header.
const NLMSG_NOOP: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// Checks that the kernel's connector answers this socket. The connector
/// exists only in the initial network namespace: elsewhere the socket opens
/// and joins its group, but no request ever reaches it and no reply can be
/// sent. A bare netlink header sent to the kernel (port 0) is dropped by the
/// connector unseen, and fails with ECONNREFUSED where there is no
/// connector; no /proc access is needed.
pub fn check_network_namespace(socket: &ConnectorSocket) -> Result<(), Fatal> {
    let mut probe = [0u8; NLMSG_HDRLEN];
    probe[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
    probe[4..6].copy_from_slice(&NLMSG_NOOP.to_ne_bytes());
    match socket.send_to(&probe, 0) {
        Ok(()) => Ok(()),
        Err(Errno::ECONNREFUSED) => Err(Fatal::new(
            ExitCode::Environment,
            "no netlink connector in this network namespace: the kernel's connector (and so \
             dm-log-userspace) exists only in the initial network namespace; run dm-ulogd \
             there, not in a container or under `unshare -n`",
        )),
        Err(e) => Err(Fatal::new(
            ExitCode::Runtime,
            format!("cannot reach the kernel's netlink connector: {}", e.desc()),
        )),
    }
}

/// Locks all memory and opts out of the OOM killer: a daemon in the write
/// path of a mirror must not be paged out or killed when memory is short.
pub fn harden() {
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        log::warn!("mlockall failed ({}): memory may be paged out", e.desc());
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("cannot set oom_score_adj to -1000 ({e}): the OOM killer may pick this daemon");
    }
}

/// The daemon's end of the readiness pipe.
pub struct Ready(OwnedFd);

impl Ready {
    /// Tells the waiting parent that the daemon listens.
    pub fn listening(self) {
        let _ = unistd::write(&self.0, READY_OK);
    }

    /// Tells the waiting parent why start-up failed and the exit code to
    /// return: one byte of code, then the message.
    pub fn failed(self, code: ExitCode, message: &str) {
        let mut verdict = vec![code as u8];
        verdict.extend_from_slice(message.as_bytes());
        let _ = unistd::write(&self.0, &verdict);
    }
}

const READY_OK: &[u8] = b"OK";

/// Detaches from whatever started the daemon. The parent waits until the
/// daemon reports and exits with its verdict; this function returns only
/// in the daemon.
///
/// Descriptors the daemon did not open are closed first (it opens none
/// before this), then two forks: the first child starts a new session and
/// exits, so the daemon is not a session leader and no terminal it ever
/// opens can become its controlling terminal. The daemon works in /, with
/// umask 077, its standard streams on /dev/null.
pub fn detach() -> Result<Ready, Fatal> {
    let fatal =
        |what: &str, e: Errno| Fatal::new(ExitCode::Runtime, format!("{what}: {}", e.desc()));
    sys::close_descriptors_from(3).map_err(|e| fatal("closing inherited descriptors", e))?;
    let (read_end, write_end) = unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fatal("pipe", e))?;
    match sys::fork().map_err(|e| fatal("fork", e))? {
        Forked::Parent { child } => {
            drop(write_end);
            let mut verdict = Vec::new();
            let _ = File::from(read_end).read_to_end(&mut verdict);
            // The session leader exits at once; reap it.
            let _ = nix::sys::wait::waitpid(child, None);
            if verdict == READY_OK {
                std::process::exit(ExitCode::Ok as i32);
            }
            match verdict.split_first() {
                Some((&code, message)) if code != 0 => {
                    eprintln!("dm-ulogd: {}", String::from_utf8_lossy(message));
                    std::process::exit(i32::from(code));
                }
                _ => {
                    eprintln!("dm-ulogd: the daemon exited during start-up without a message");
                    std::process::exit(ExitCode::Runtime as i32);
                }
            }
        }
        Forked::Child => {
            drop(read_end);
            let _ = unistd::setsid();
            match sys::fork() {
                Ok(Forked::Child) => {}
                Ok(Forked::Parent { .. }) => std::process::exit(0),
                Err(e) => {
                    Ready(write_end).failed(ExitCode::Runtime, &format!("fork: {}", e.desc()));
                    std::process::exit(ExitCode::Runtime as i32);
                }
            }
            stat::umask(Mode::from_bits_truncate(0o077));
            let _ = unistd::chdir("/");
            if let Ok(null) = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open("/dev/null")
            {
                let _ = unistd::dup2_stdin(null.as_fd());
                let _ = unistd::dup2_stdout(null.as_fd());
                let _ = unistd::dup2_stderr(null.as_fd());
            }
            Ok(Ready(write_end))
        }
    }
}

/// systemd's convention for daemons that serve the root file system: a
/// process whose argv[0] starts with '@' survives the switch from the
/// initramfs and the final killing spree at shutdown. Re-executes this
/// binary with argv[0] "@dm-ulogd" unless it already starts with '@'.
/// Returns only when no re-exec was needed (or it failed, which is logged).
pub fn become_root_storage_daemon() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if argv0.as_encoded_bytes().first() == Some(&b'@') {
        // Executing /proc/self/exe named the process "exe"; the convention
        // wants only argv[0] changed, so that `pidof dm-ulogd` and ps's
        // comm column still find it.
        let _ = nix::sys::prctl::set_name(c"dm-ulogd");
        return;
    }
    let mut argv = vec![c"@dm-ulogd".to_owned()];
    for a in args {
        match std::ffi::CString::new(a.into_encoded_bytes()) {
            Ok(c) => argv.push(c),
            Err(_) => return,
        }
    }
    let e = unistd::execv(c"/proc/self/exe", &argv).unwrap_err();
    eprintln!(
        "dm-ulogd: cannot re-execute as @dm-ulogd ({}); the daemon may be killed at switch_root",
        e.desc()
    );
}

/// Tells systemd the daemon is ready (Type=notify) when NOTIFY_SOCKET is
/// set: one datagram, no library needed.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.first() {
        Some(b'@') => UnixAddr::new_abstract(&bytes[1..]),
        _ => UnixAddr::new(std::path::Path::new(&path)),
    };
    let sent = addr.and_then(|addr| {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let message = format!("READY=1\nMAINPID={}\n", std::process::id());
        socket::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            message.as_bytes(),
            &addr,
            socket::MsgFlags::empty(),
        )
    });
    if let Err(e) = sent {
        log::warn!("cannot notify systemd through NOTIFY_SOCKET: {}", e.desc());
    }
}

//! The real daemon binary on this host: its command line, its pid file, its
//! signals, and its netlink connector socket.
//!
//! Most of these tests start dm-ulogd, which needs root (CAP_NET_ADMIN to
//! join the connector group, CAP_SYS_ADMIN for the kernel to take its
//! replies) and a kernel with the netlink connector. They fail, never skip,
//! when that is missing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dm_ulogd::sys::netlink::ConnectorSocket;
use dm_ulogd::wire::frame::{self, REPLY_DATA_OFFSET};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DAEMON: &str = env!("CARGO_BIN_EXE_dm-ulogd");
/// How long a daemon may take to start listening on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// NETLINK_CONNECTOR, the protocol column of /proc/net/netlink.
const NETLINK_CONNECTOR: u32 = 11;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests start dm-ulogd, which needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): \
         run `cargo test --test host_socket` as root"
    );
}

/// An empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("host-socket")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn daemon_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(DAEMON);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// How long a dm-ulogd that should exit at once may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the binary to completion; one that still runs after EXIT_TIMEOUT
/// (it started serving instead of refusing) is killed and fails the test.
fn run(args: &[&str]) -> Output {
    run_command(daemon_command(args), args)
}

fn run_command(mut cmd: Command, args: &[&str]) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {DAEMON}: {e}"));
    let exited = wait_until(EXIT_TIMEOUT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "dm-ulogd {args:?} still ran after {EXIT_TIMEOUT:?} (killed); stderr:\n{}",
            text(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `done` every 20 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A dm-ulogd running in the foreground, its stderr collected. Killed
/// (SIGKILL, by its pid) if a test ends without stopping it.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `dm-ulogd --state-dir <dir>/state --no-mlock -v <extra>` and
    /// waits until it listens.
    fn start(dir: &Path, extra: &[&str]) -> Daemon {
        let state = dir.join("state");
        let mut args = vec!["--state-dir", state.to_str().unwrap(), "--no-mlock", "-v"];
        args.extend_from_slice(extra);
        let mut child = daemon_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DAEMON}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut d = Daemon { child, log };
        let listening = wait_until(START_TIMEOUT, || {
            d.log().contains("listening") || d.child.try_wait().unwrap().is_some()
        });
        let status = d.child.try_wait().unwrap();
        assert!(
            listening && status.is_none(),
            "dm-ulogd did not start listening (exit status {status:?}); its log:\n{}",
            d.log()
        );
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal to the daemon.
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits for the daemon to exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The netlink port of the connector socket process `pid` holds that has
/// joined group 7, from /proc/net/netlink (columns: sk Eth Pid Groups
/// Rmem Wmem Dump Locks Drops Inode; Groups is the bitmask of groups 1-32).
fn connector_port(pid: u32) -> Option<u32> {
    let inodes = socket_inodes(pid);
    let table = fs::read_to_string("/proc/net/netlink").expect("read /proc/net/netlink");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 {
            return None;
        }
        let proto: u32 = cols[1].parse().ok()?;
        let port: u32 = cols[2].parse().ok()?;
        let groups = u32::from_str_radix(cols[3], 16).ok()?;
        let inode: u64 = cols[9].parse().ok()?;
        (proto == NETLINK_CONNECTOR && groups & (1 << (7 - 1)) != 0 && inodes.contains(&inode))
            .then_some(port)
    })
}

/// A request from a socket that is not the kernel is dropped, unanswered,
/// and the drop is logged.
#[test]
fn a_request_from_a_user_socket_is_dropped() {
    require_root();
    let dir = scratch("spoofed");
    let d = Daemon::start(&dir, &["--pidfile", "none"]);
    let port = connector_port(d.pid()).unwrap_or_else(|| {
        panic!(
            "dm-ulogd (pid {}) holds no connector socket in group 7 in /proc/net/netlink",
            d.pid()
        )
    });
    assert_ne!(port, 0);

    let sock = ConnectorSocket::open_unicast().expect("open a connector socket");
    // A CTR that would be accepted if it came from the kernel.
    let table = b"1024 core 1 8";
    let mut ctr = vec![0u8; REPLY_DATA_OFFSET + table.len()];
    let n = frame::emit_request(&mut ctr, 7, 0xdead_beef, b"LVM-spoof", 7, 1, table);
    sock.send_to(&ctr[..n], port)
        .unwrap_or_else(|e| panic!("unicast to the daemon's port {port}: {}", e.desc()));

    let logged = wait_until(Duration::from_secs(10), || {
        d.log().contains("sender is not the kernel")
    });
    assert!(
        logged,
        "the daemon did not log the drop; its log:\n{}",
        d.log()
    );
    // No reply comes back to the sender.
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        match sock.recv(&mut buf) {
            Err(Errno::EAGAIN) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("recv: {}", e.desc()),
            Ok(got) => panic!(
                "a reply of {} bytes came from port {}",
                got.len, got.sender_port
            ),
        }
    }
    assert!(
        !d.log().contains("LVM-spoof"),
        "the spoofed request was served; log:\n{}",
        d.log()
    );
}

#[test]
fn version_prints_the_version_and_a_git_revision() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{:?}", out);
    let stdout = text(&out.stdout);
    let want = format!("dm-ulogd {} (git ", env!("CARGO_PKG_VERSION"));
    assert!(stdout.starts_with(&want), "--version printed {stdout:?}");
    let rev = stdout[want.len()..].trim_end().trim_end_matches(')');
    let hex = rev.strip_suffix("-dirty").unwrap_or(rev);
    assert!(
        hex.len() >= 7 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "--version printed no git revision: {stdout:?}"
    );
    assert_eq!(text(&run(&["-V"]).stdout), stdout);
}

/// Every option the parser knows (the `"-..."` literals of src/cli/ outside
/// its tests), and the ones listed here, appear in --help.
#[test]
fn help_mentions_every_option() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "{:?}", out);
    let help = text(&out.stdout);
    assert_eq!(text(&run(&["-h"]).stdout), help);
    let daemon = include_str!("../src/cli/mod.rs");
    let subcommands = include_str!("../src/cli/subcommands.rs");
    let mut options: Vec<&str> = [daemon, subcommands]
        .iter()
        .flat_map(|f| {
            let code = f.split("#[cfg(test)]").next().unwrap();
            code.split('"').skip(1).step_by(2)
        })
        .filter(|s| {
            s.len() >= 2
                && s.starts_with('-')
                && s[1..].bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
        })
        .collect();
    options.extend([
        "-d",
        "--daemon",
        "--pidfile",
        "--state-dir",
        "--max-logs",
        "--memory-budget",
        "--rcvbuf",
        "--no-mlock",
        "-v",
        "--verbose",
        "-h",
        "--help",
        "-V",
        "--version",
    ]);
    let missing: Vec<&&str> = options.iter().filter(|o| !help.contains(**o)).collect();
    assert!(
        missing.is_empty(),
        "--help does not mention {missing:?}:\n{help}"
    );
}

#[test]
fn a_bad_option_exits_2_with_a_message() {
    for args in [
        &["--bogus"][..],
        &["--max-logs", "0"],
        &["--max-logs"],
        &["--memory-budget", "lots"],
        &["--rcvbuf", "0"],
        &["stray"],
        // These panicked, aborted on allocation or were taken as given.
        &["--max-logs", "18446744073709551615"],
        &["--max-logs", "100000000000"],
        &["--memory-budget", "2T"],
        &["--rcvbuf", "2G"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: message {stderr:?}");
        assert!(stderr.contains("--help"), "{args:?}: message {stderr:?}");
    }
}

#[test]
fn a_second_instance_with_the_same_pidfile_exits_4_naming_the_pid() {
    require_root();
    let dir = scratch("second");
    let pidfile = dir.join("dm-ulogd.pid");
    let pidfile = pidfile.to_str().unwrap();
    let first = Daemon::start(&dir, &["--pidfile", pidfile]);
    let held = fs::read_to_string(pidfile).unwrap();
    assert_eq!(
        held.trim(),
        first.pid().to_string(),
        "the pid file's content"
    );

    let state = dir.join("state2");
    let out = run(&[
        "--pidfile",
        pidfile,
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&first.pid().to_string()) && stderr.contains(pidfile),
        "the message names neither the pid {} nor the file: {stderr:?}",
        first.pid()
    );
    // The first one still runs and still owns the file.
    assert_eq!(fs::read_to_string(pidfile).unwrap(), held);
    assert!(connector_port(first.pid()).is_some());
}

#[test]
fn sigterm_with_no_live_logs_exits_0() {
    require_root();
    let dir = scratch("sigterm");
    let mut d = Daemon::start(&dir, &["--pidfile", "none"]);
    d.signal(Signal::SIGTERM);
    let status = d.wait(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

#[test]
fn daemon_mode_returns_0_once_listening_with_the_pid_in_the_pidfile() {
    require_root();
    let dir = scratch("daemon-mode");
    let pidfile = dir.join("dm-ulogd.pid");
    let state = dir.join("state");
    let out = run(&[
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ]);
    let pid: Option<u32> = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // Whatever happens next, the detached daemon is stopped.
    struct Stop(Option<u32>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
    let mut stop = Stop(pid);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--daemon: stderr {:?}",
        text(&out.stderr)
    );
    let pid = pid.expect("the pid file holds a pid");
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "dm-ulogd",
        "pid {pid} from the pid file is not dm-ulogd"
    );
    // It listens already: its connector socket is in group 7.
    assert!(
        connector_port(pid).is_some(),
        "the daemon (pid {pid}) has not joined group 7"
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // A zombie waiting for its reaper has exited too.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    });
    assert!(gone, "the daemon (pid {pid}) did not exit on SIGTERM");
    stop.0 = None;
}

/// The fields of /proc/PID/stat after the command name: state is [0],
/// session [3], tty_nr [4].
fn proc_stat(pid: u32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Every signal whose default action kills or stops a process, other than
/// SIGKILL, SIGSTOP and real faults, leaves the daemon running; SIGHUP logs
/// the summary; SIGTERM still stops it.
#[test]
fn stray_signals_do_not_stop_it() {
    require_root();
    let dir = scratch("stray-signals");
    let mut d = Daemon::start(&dir, &["--pidfile", "none"]);
    let pid = Pid::from_raw(d.pid() as i32);
    let named = [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGPIPE,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGIO,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
        Signal::SIGPWR,
        Signal::SIGSTKFLT,
        Signal::SIGTRAP,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ];
    let mut sent: Vec<String> = named.iter().map(|s| s.as_str().to_string()).collect();
    for s in named {
        kill(pid, s).unwrap();
    }
    // Real-time signals (musl's range: 35 to 64), which nix cannot name.
    for signo in [35, 40, 64] {
        let status = Command::new("kill")
            .arg(format!("-{signo}"))
            .arg(d.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signo}");
        sent.push(format!("signal {signo}"));
    }
    thread::sleep(Duration::from_millis(500));
    let status = d.child.try_wait().unwrap();
    assert!(
        status.is_none(),
        "dm-ulogd died of one of {sent:?}: {status:?}; log:\n{}",
        d.log()
    );
    let state = proc_stat(d.pid());
    assert_eq!(
        state[0], "S",
        "dm-ulogd is not sleeping in its loop: {state:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains("live log(s)")),
        "SIGHUP did not log the summary; log:\n{}",
        d.log()
    );
    assert!(
        d.log().contains("ignoring SIGQUIT"),
        "a stray SIGQUIT was not logged; log:\n{}",
        d.log()
    );
    d.signal(Signal::SIGTERM);
    let status = d.wait(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "log:\n{}", d.log());
}

/// A symbolic link as the pid file is refused and its target untouched.
#[test]
fn a_pidfile_symlink_is_refused() {
    require_root();
    let dir = scratch("pidfile-symlink");
    let target = dir.join("precious");
    fs::write(&target, "precious\n").unwrap();
    let link = dir.join("dm-ulogd.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let state = dir.join("state");
    let out = run(&[
        "--pidfile",
        link.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).contains("is a symbolic link: refused"),
        "{out:?}"
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
}

/// A state directory that is a symbolic link, is owned by another user or
/// is writable by others is refused (exit 3) and left as it was; a new one
/// is made 0700, and an existing root-owned one is made 0700.
#[test]
fn an_unsafe_state_dir_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root();
    let dir = scratch("state-dir-checks");
    let target = dir.join("target");
    fs::create_dir(&target).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let writable = dir.join("writable");
    fs::create_dir(&writable).unwrap();
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o777)).unwrap();
    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    for (state, why) in [
        (&link, "is a symbolic link"),
        (
            &writable,
            "its mode 0777 lets others than its owner write to it",
        ),
        (&foreign, "it is owned by uid 65534, not root"),
    ] {
        let out = run(&[
            "--pidfile",
            "none",
            "--state-dir",
            state.to_str().unwrap(),
            "--no-mlock",
        ]);
        assert_eq!(out.status.code(), Some(3), "{state:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(why) && stderr.contains("--state-dir"),
            "{state:?}: {stderr:?}"
        );
    }
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
    assert_eq!(
        fs::metadata(&writable).unwrap().mode() & 0o7777,
        0o777,
        "a refused directory was changed"
    );

    let open = dir.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let fresh = dir.join("fresh");
    for state in [&open, &fresh] {
        let d = Daemon::start(
            &dir,
            &["--pidfile", "none", "--state-dir", state.to_str().unwrap()],
        );
        let mode = fs::metadata(state).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{state:?}; log:\n{}", d.log());
    }
}

/// Two daemons on one state directory, with no pid file to keep them
/// apart: the second exits 4, naming the directory.
#[test]
fn a_second_daemon_on_the_same_state_dir_exits_4() {
    require_root();
    let dir = scratch("second-state-dir");
    let first = Daemon::start(&dir, &["--pidfile", "none"]);
    let state = dir.join("state");
    let out = run(&[
        "--pidfile",
        "none",
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("another dm-ulogd uses state directory")
            && stderr.contains(state.to_str().unwrap()),
        "{stderr:?}"
    );
    assert!(
        connector_port(first.pid()).is_some(),
        "the first one stopped serving"
    );
}

/// With --daemon, the daemon keeps no descriptor it inherited, works in /
/// with umask 077, is not a session leader and has no controlling
/// terminal; its standard streams are /dev/null.
#[test]
fn daemon_mode_detaches_cleanly() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::AsRawFd;
    require_root();
    let dir = scratch("detach");
    let pidfile = dir.join("dm-ulogd.pid");
    let state = dir.join("state");
    // Descriptors without FD_CLOEXEC, as a careless parent leaves them.
    let marker = dir.join("inherited-marker");
    let file = fs::File::create(&marker).unwrap();
    let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
    let inherited = [file.as_raw_fd(), pipe_r.as_raw_fd(), pipe_w.as_raw_fd()];
    for fd in [file.as_fd(), pipe_r.as_fd(), pipe_w.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    }
    let out = run(&[
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ]);
    drop((file, pipe_r, pipe_w));
    let pid: Option<u32> = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    struct Stop(Option<u32>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
    let _stop = Stop(pid);
    assert_eq!(out.status.code(), Some(0), "--daemon: {out:?}");
    let pid = pid.expect("the pid file holds a pid");

    let fds: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    for (fd, target) in &fds {
        assert!(
            !target.contains("inherited-marker") && !target.starts_with("pipe:"),
            "fd {fd} ({target}) was inherited; every fd: {fds:?} (passed {inherited:?})"
        );
        if *fd <= 2 {
            assert_eq!(target, "/dev/null", "fd {fd}: {fds:?}");
        }
    }
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, Path::new("/"), "the daemon's working directory");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Umask:", "0077"])),
        "umask: {status}"
    );
    let stat = proc_stat(pid);
    assert_ne!(
        stat[3],
        pid.to_string(),
        "the daemon leads its session: {stat:?}"
    );
    assert_eq!(
        stat[4], "0",
        "the daemon has a controlling terminal: {stat:?}"
    );
}

/// Started in a network namespace of its own, where the kernel's connector
/// does not exist, the daemon exits 3 saying so.
#[test]
fn another_network_namespace_exits_3() {
    require_root();
    let dir = scratch("netns");
    let state = dir.join("state");
    let args = [
        "-n",
        DAEMON,
        "--pidfile",
        "none",
        "--state-dir",
        state.to_str().unwrap(),
        "--no-mlock",
    ];
    let mut cmd = Command::new("unshare");
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    let out = run_command(cmd, &args);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).contains("only in the initial network namespace"),
        "{out:?}"
    );
}

/// The loop goes back to its poll within tens of milliseconds even when
/// every batch is full: with 50,000 datagrams queued while the daemon was
/// stopped, a SIGUSR1 sent as it resumes is answered within a second, while
/// the queue is served or just after (a quiet host drops the 50,000 in
/// tens of milliseconds, about the loop's bound), and the rest is served.
#[test]
fn signals_are_seen_while_the_queue_stays_full() {
    require_root();
    const QUEUED: u64 = 50_000;
    let dir = scratch("full-batches");
    let d = Daemon::start(&dir, &["--pidfile", "none", "--rcvbuf", "1G"]);
    let port = connector_port(d.pid()).expect("the daemon's connector port");
    let sock = ConnectorSocket::open_unicast().expect("open a connector socket");
    let table = b"1024 core 1 8";
    let mut datagram = vec![0u8; REPLY_DATA_OFFSET + table.len()];
    let n = frame::emit_request(&mut datagram, 7, 1, b"LVM-flood", 7, 1, table);
    d.signal(Signal::SIGSTOP);
    for i in 0..QUEUED {
        sock.send_to(&datagram[..n], port)
            .unwrap_or_else(|e| panic!("datagram {i}: {}", e.desc()));
    }
    d.signal(Signal::SIGCONT);
    d.signal(Signal::SIGUSR1);
    let signalled = Instant::now();
    let dropped = |log: &str| -> Vec<u64> {
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(" error replies, ")?;
                rest.split_once(" dropped")?.0.parse().ok()
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !dropped(&d.log()).is_empty()),
        "no summary after SIGUSR1; log:\n{}",
        d.log()
    );
    let waited = signalled.elapsed();
    let first = dropped(&d.log())[0];
    eprintln!("SIGUSR1 answered after {waited:?}, {first} of {QUEUED} queued datagrams served");
    assert!(
        waited < Duration::from_secs(1),
        "the summary came {waited:?} after SIGUSR1 ({first} of {QUEUED} datagrams served): the \
         loop did not get back to its poll"
    );
    // The rest is served after the signal.
    let served = wait_until(Duration::from_secs(60), || {
        d.signal(Signal::SIGUSR1);
        thread::sleep(Duration::from_millis(200));
        dropped(&d.log()).last() == Some(&QUEUED)
    });
    assert!(
        served,
        "not every queued datagram was taken: {:?}",
        dropped(&d.log())
    );
}

/// Requests paced just under the receive's 20 ms wait keep the loop in its
/// waiting receives: it must still poll within tens of milliseconds (it
/// took 256 of those receives, 3-5 s, before it looked at its signals).
#[test]
fn signals_are_seen_under_a_light_steady_load() {
    require_root();
    let dir = scratch("paced");
    let d = Daemon::start(&dir, &["--pidfile", "none"]);
    let port = connector_port(d.pid()).expect("the daemon's connector port");
    let sock = ConnectorSocket::open_unicast().expect("open a connector socket");
    let table = b"1024 core 1 8";
    let mut datagram = vec![0u8; REPLY_DATA_OFFSET + table.len()];
    let n = frame::emit_request(&mut datagram, 7, 1, b"LVM-paced", 7, 1, table);
    let summaries = |log: &str| log.matches(" live log(s), ").count();
    let mut waits = Vec::new();
    for round in 0..3 {
        // A second of steady pacing, then SIGUSR1 while it goes on.
        let before = summaries(&d.log());
        let mut signalled: Option<Instant> = None;
        let pace_start = Instant::now();
        loop {
            sock.send_to(&datagram[..n], port)
                .unwrap_or_else(|e| panic!("round {round}: {}", e.desc()));
            thread::sleep(Duration::from_millis(15));
            if signalled.is_none() && pace_start.elapsed() > Duration::from_secs(1) {
                d.signal(Signal::SIGUSR1);
                signalled = Some(Instant::now());
            }
            if let Some(at) = signalled
                && (summaries(&d.log()) > before || at.elapsed() > Duration::from_secs(8))
            {
                break;
            }
        }
        let waited = signalled.unwrap().elapsed();
        assert!(
            summaries(&d.log()) > before,
            "round {round}: no summary 8 s after SIGUSR1 under a 15 ms pace"
        );
        waits.push(waited);
    }
    eprintln!("SIGUSR1 answered after {waits:?} under a request every 15 ms");
    let slowest = waits.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(1000),
        "the loop took {slowest:?} to see a signal under a light steady load: it must poll \
         within tens of milliseconds whatever the pacing"
    );
}

/// A receive takes at most the datagrams it asks for and leaves the rest
/// queued, in order: the event loop's waiting receives ask for one (see
/// `drain_socket`), the ones after a poll for a batch.
#[test]
fn a_receive_takes_at_most_the_datagrams_it_asks_for() {
    use dm_ulogd::sys::netlink::{BATCH, Datagrams};
    use nix::sys::socket::{NetlinkAddr, getsockname};
    use std::os::fd::AsRawFd;

    let sender = ConnectorSocket::open_unicast().expect("open a connector socket");
    let receiver = ConnectorSocket::open_unicast().expect("open a connector socket");
    let port = getsockname::<NetlinkAddr>(receiver.as_raw_fd())
        .expect("the receiver's netlink address")
        .pid();
    for i in 0..3u8 {
        sender
            .send_to(&[i; 20], port)
            .unwrap_or_else(|e| panic!("unicast to port {port}: {}", e.desc()));
    }
    let mut batch = Box::new(Datagrams::<64>::new());
    receiver
        .recv_batch(&mut batch, 1, false)
        .expect("a first receive");
    assert_eq!(
        batch.len(),
        1,
        "a receive asking for one took {}",
        batch.len()
    );
    assert_eq!(batch.get(0).0, &[0u8; 20][..]);
    receiver
        .recv_batch(&mut batch, BATCH, false)
        .expect("a second receive");
    assert_eq!(batch.len(), 2, "the rest of the queue, in one receive");
    assert_eq!(batch.get(0).0, &[1u8; 20][..]);
    assert_eq!(batch.get(1).0, &[2u8; 20][..]);
    assert_eq!(
        receiver.recv_batch(&mut batch, BATCH, false).err(),
        Some(Errno::EAGAIN)
    );
}

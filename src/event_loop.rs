//! One thread, one mio Poll over the connector socket, a signalfd and the
//! AIO completion eventfd. Requests are handled in arrival order; one that
//! waits for its log device is answered when the device completes, while
//! every other request (of that log from memory, of other logs entirely)
//! is answered at once.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::server::{ExitVerdict, Server, Uuid};
use crate::sys::netlink::{BATCH, ConnectorSocket, Datagrams};
use crate::wire::frame::{MAX_KERNEL_DATAGRAM, REPLY_BUF_LEN};

/// How long the daemon waits without requests before writing the clears
/// disk logs deferred.
const IDLE_WRITE_BACK: Duration = Duration::from_secs(2);

/// After a request, the daemon waits this long for the next one in a
/// blocking receive before it goes back to the poll: while the kernel keeps
/// asking, a request costs one receive and one send, no poll.
const NEXT_REQUEST_WAIT: Duration = Duration::from_millis(20);

/// The longest the loop serves requests in such blocking receives before
/// it polls again, so that signals, stall reports and the idle write-back
/// are seen under any load and any request pacing. With a receive's wait
/// on top, the loop polls at least every POLL_AT_LEAST_EVERY +
/// NEXT_REQUEST_WAIT (70 ms) while requests keep coming.
const POLL_AT_LEAST_EVERY: Duration = Duration::from_millis(50);

/// After an unexpected error of the poll, the socket or the signalfd, the
/// loop pauses this long before it tries again, so a lasting error cannot
/// spin a core; the mirrors keep their server.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How often the loop wakes while log device I/O is in flight, to report
/// steps that take too long (see `Server::check_stalls`).
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);
const LOG_IO: Token = Token(2);

/// One byte more than the kernel ever sends: a datagram that fills the
/// buffer is oversized (MSG_TRUNC reports its real length anyway).
const RECV_BUF_LEN: usize = MAX_KERNEL_DATAGRAM + 1;

/// Repeated problems of the loop, counted so their log lines thin out
/// (the 1st, 2nd, 4th, ... of each kind).
#[derive(Default)]
struct Trouble {
    send_failures: u64,
    loop_errors: u64,
}

impl Trouble {
    fn send_failed(&mut self, e: Errno) {
        self.send_failures += 1;
        if self.send_failures.is_power_of_two() {
            log::warn!(
                "sending a reply to the kernel failed: {}; {} failed sends so far (the kernel \
                 resends a request it gets no answer to after 15 s)",
                e.desc(),
                self.send_failures
            );
        }
    }
}

/// Serves until SIGTERM or SIGINT arrives while no log is live. An
/// unexpected error of the poll, the socket or the signalfd is logged and
/// the loop goes on: it returns it only when no log is live, since exiting
/// with live logs would freeze their mirrors.
pub fn run(server: &mut Server, socket: &ConnectorSocket, signals: &SignalFd) -> io::Result<()> {
    socket.set_receive_wait(NEXT_REQUEST_WAIT)?;
    let mut poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&socket.as_raw_fd()),
        NETLINK,
        Interest::READABLE,
    )?;
    poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    if let Some(fd) = server.engine().ready_fd() {
        poll.registry()
            .register(&mut SourceFd(&fd), LOG_IO, Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(4);
    let mut rx = Box::new(Datagrams::<RECV_BUF_LEN>::new());
    let mut tx = Box::new(Datagrams::<REPLY_BUF_LEN>::new());
    let mut trouble = Trouble::default();
    // Set when the socket was left with requests in its queue: mio reports
    // readiness on edges only, so the loop takes them up itself after a
    // poll that only looks at the signals.
    let mut backlog = false;
    let mut last_request = Instant::now();
    // A SIGTERM that waits for young logs to be judged (see ExitVerdict).
    let mut exit_check: Option<Instant> = None;
    let mut signals_left = false;
    loop {
        let idle_left = server
            .has_deferred_writes()
            .then(|| IDLE_WRITE_BACK.saturating_sub(last_request.elapsed()));
        let stall_check = server.io_in_flight().then_some(STALL_CHECK_INTERVAL);
        let exit_left = exit_check.map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = if backlog || signals_left {
            Some(Duration::ZERO)
        } else {
            [idle_left, stall_check, exit_left]
                .into_iter()
                .flatten()
                .min()
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                keep_serving(server, &mut trouble, "polling", e)?;
                continue;
            }
        }
        let mut readable = backlog;
        // Signals left unread by a failed read are read again.
        let mut signalled = std::mem::take(&mut signals_left);
        for event in events.iter() {
            match event.token() {
                NETLINK => readable = true,
                LOG_IO => server.note_io_ready(),
                SIGNALS => signalled = true,
                _ => {}
            }
        }
        if signalled {
            let (exit_asked, failed) = drain_signals(server, signals);
            if exit_asked.is_some() {
                exit_check = exit_asked;
            }
            if let Some(e) = failed {
                signals_left = true;
                keep_serving(server, &mut trouble, "reading signals", e)?;
            }
        }
        if let Some(at) = exit_check
            && Instant::now() >= at
        {
            match exit_request(server) {
                ExitRequest::Exit => return Ok(()),
                ExitRequest::Refused => exit_check = None,
                ExitRequest::AskAgainAt(later) => exit_check = Some(later),
            }
        }
        // Completions are taken when the eventfd said so (edge-triggered:
        // all of them).
        send_completions(server, socket, &mut tx, &mut trouble);
        if server.io_in_flight() {
            server.check_stalls();
        }
        if readable {
            last_request = Instant::now();
            match drain_socket(server, socket, &mut rx, &mut tx, &mut trouble) {
                Ok(drained) => backlog = drained == Drained::Paused,
                Err(e) => {
                    // Try the socket again after the pause, whatever the
                    // poll says (readiness comes on edges only).
                    backlog = true;
                    keep_serving(server, &mut trouble, "receiving", e.into())?;
                }
            }
        } else if server.has_deferred_writes() && last_request.elapsed() >= IDLE_WRITE_BACK {
            tx.clear();
            server.write_back_all(&mut |reply| push_reply(socket, &mut tx, &mut trouble, reply));
            flush_replies(socket, &mut tx, &mut trouble);
            last_request = Instant::now();
        }
    }
}

/// An unexpected error of the loop: logged (thinned out), then a short
/// pause; returned only when no log is live.
fn keep_serving(
    server: &mut Server,
    trouble: &mut Trouble,
    doing: &str,
    e: io::Error,
) -> io::Result<()> {
    trouble.loop_errors += 1;
    if server.registry().is_empty() {
        return Err(e);
    }
    if trouble.loop_errors.is_power_of_two() {
        log::error!(
            "{doing} failed: {e}; serving on, since {} log(s) are live ({} such errors so far)",
            server.registry().len(),
            trouble.loop_errors
        );
    }
    std::thread::sleep(ERROR_PAUSE);
    Ok(())
}

/// Answers the requests whose log device work completed.
fn send_completions(
    server: &mut Server,
    socket: &ConnectorSocket,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
    trouble: &mut Trouble,
) {
    tx.clear();
    server.complete(&mut |reply| push_reply(socket, tx, trouble, reply));
    flush_replies(socket, tx, trouble);
}

/// Adds a reply to the batch, sending the batch first when it is full.
fn push_reply(
    socket: &ConnectorSocket,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
    trouble: &mut Trouble,
    reply: &[u8],
) {
    if tx.is_full() {
        flush_replies(socket, tx, trouble);
    }
    if let Some(buf) = tx.next_buf() {
        let n = reply.len().min(REPLY_BUF_LEN);
        buf[..n].copy_from_slice(&reply[..n]);
        tx.push(n);
    }
}

fn flush_replies(
    socket: &ConnectorSocket,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
    trouble: &mut Trouble,
) {
    if !tx.is_empty() {
        socket.send_batch(tx, |e| trouble.send_failed(e));
    }
    tx.clear();
}

/// How `drain_socket` left the socket.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// The queue is empty.
    Empty,
    /// POLL_AT_LEAST_EVERY went by; more may be queued.
    Paused,
}

/// Serves requests until the socket stays quiet for NEXT_REQUEST_WAIT, or
/// for at most POLL_AT_LEAST_EVERY, so that signals are seen under any load
/// and pacing. A request costs a receive and a send, as for a blocking
/// server; the requests queued when the loop comes back from the poll are
/// taken in one recvmmsg and answered in one sendmmsg.
fn drain_socket(
    server: &mut Server,
    socket: &ConnectorSocket,
    rx: &mut Datagrams<RECV_BUF_LEN>,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
    trouble: &mut Trouble,
) -> Result<Drained, Errno> {
    let started = Instant::now();
    let mut first = true;
    loop {
        if !first && started.elapsed() >= POLL_AT_LEAST_EVERY {
            return Ok(Drained::Paused);
        }
        // The first receive follows the poll's readiness, so it need not
        // wait; nor does any while log device I/O is in flight, whose
        // completion the poll sees.
        let wait = !first && !server.io_in_flight();
        first = false;
        // A waiting receive asks for one datagram: allowed more, recvmmsg
        // tries for another after the first, and that try fails whenever
        // requests come one at a time (a mirror at queue depth 1: its
        // kernel thread waits for each reply before it sends the next
        // request). Counted in instructions (qemu -icount, BENCHMARKS.md
        // section 5), one datagram per waiting receive and sendto for a
        // lone reply took the daemon's CPU from ~11,880 to ~10,350
        // instructions per request, the null responder's +2%. What piled
        // up while the loop polled or a log device worked is still taken in
        // batches.
        let max = if wait { 1 } else { BATCH };
        match socket.recv_batch(rx, max, wait) {
            Ok(()) => {}
            Err(Errno::EAGAIN) => return Ok(Drained::Empty),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => {
                // The kernel saw -ESRCH for what was lost and takes its
                // reconnect path; keep serving.
                log::warn!(
                    "receive queue overflowed: requests were lost and the kernel will resend them; \
                     consider a larger --rcvbuf"
                );
                continue;
            }
            Err(e) => return Err(e),
        }
        tx.clear();
        for i in 0..rx.len() {
            let (request, got) = rx.get(i);
            if got.sender_port != 0 {
                server.drop_datagram("sender is not the kernel");
                continue;
            }
            if got.truncated || got.len == RECV_BUF_LEN {
                server.drop_datagram("oversized datagram");
                continue;
            }
            // Never None: a batch has as many reply buffers as requests.
            let Some(reply) = tx.next_buf() else { break };
            if let Some(n) = server.handle(request, reply) {
                tx.push(n);
            }
        }
        // Replies of parked requests whose work is done (the synchronous
        // engine finishes it here; AIO completions that came meanwhile).
        server.complete(&mut |reply| push_reply(socket, tx, trouble, reply));
        flush_replies(socket, tx, trouble);
    }
}

/// What came of a request to exit.
enum ExitRequest {
    Exit,
    Refused,
    AskAgainAt(Instant),
}

/// Judges a SIGTERM or SIGINT (again), saying what it decided.
fn exit_request(server: &mut Server) -> ExitRequest {
    match server.exit_verdict() {
        ExitVerdict::Exit => {
            log::info!("no log is live; exiting");
            ExitRequest::Exit
        }
        ExitVerdict::AskAgainAt(at) => {
            log::info!(
                "exit deferred: {} log(s) of table loads that may have failed after their CTR \
                 are too young to judge; looking again in {:.1} s",
                server.registry().len(),
                at.saturating_duration_since(Instant::now()).as_secs_f64()
            );
            ExitRequest::AskAgainAt(at)
        }
        ExitVerdict::Refuse => {
            log::warn!(
                "refusing to exit: {} log(s) are live and their mirrors would freeze; \
                 remove their tables first",
                server.registry().len()
            );
            for e in server.registry().iter() {
                log::warn!("  live: {} ({})", Uuid(&e.uuid), e.log.log_type().name());
            }
            ExitRequest::Refused
        }
    }
}

/// Handles the signals read from the signalfd. Returns when to judge a
/// SIGTERM or SIGINT (now; `run` exits if the judgement says so), and the
/// error that stopped the reading, if one did (what was read before it
/// counts all the same).
fn drain_signals(server: &mut Server, signals: &SignalFd) -> (Option<Instant>, Option<io::Error>) {
    let mut exit_check = None;
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => return (exit_check, None),
            Err(e) => return (exit_check, Some(e.into())),
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => exit_check = Some(Instant::now()),
            Ok(Signal::SIGUSR1) | Ok(Signal::SIGHUP) => server.log_summary(),
            Ok(other) => log::warn!(
                "ignoring {} from pid {}: only SIGTERM or SIGINT (with no live log) and \
                 SIGKILL stop dm-ulogd",
                other.as_str(),
                info.ssi_pid
            ),
            Err(_) => {}
        }
    }
}

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

use crate::server::{Server, Uuid};
use crate::sys::netlink::{BATCH, ConnectorSocket, Datagrams};
use crate::wire::frame::{MAX_KERNEL_DATAGRAM, REPLY_BUF_LEN};

/// How long the daemon waits without requests before writing the clears
/// disk logs deferred.
const IDLE_WRITE_BACK: Duration = Duration::from_secs(2);

/// After a request, the daemon waits this long for the next one in a
/// blocking receive before it goes back to the poll: while the kernel keeps
/// asking, a request costs one receive and one send, no poll.
const NEXT_REQUEST_WAIT: Duration = Duration::from_millis(20);

/// Batches handled in such blocking receives before the loop polls again,
/// so that signals are seen under endless load too.
const BATCHES_BETWEEN_POLLS: u32 = 256;

/// How often the loop wakes while log device I/O is in flight, to report
/// steps that take too long (see `Server::check_stalls`).
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);
const LOG_IO: Token = Token(2);

/// One byte more than the kernel ever sends: a datagram that fills the
/// buffer is oversized (MSG_TRUNC reports its real length anyway).
const RECV_BUF_LEN: usize = MAX_KERNEL_DATAGRAM + 1;

/// Serves until SIGTERM or SIGINT arrives while no log is live.
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
    // Set when the socket was left with requests in its queue: mio reports
    // readiness on edges only, so the loop takes them up itself after a
    // poll that only looks at the signals.
    let mut backlog = false;
    let mut last_request = Instant::now();
    loop {
        let idle_left = server
            .has_deferred_writes()
            .then(|| IDLE_WRITE_BACK.saturating_sub(last_request.elapsed()));
        let stall_check = server.io_in_flight().then_some(STALL_CHECK_INTERVAL);
        let timeout = if backlog {
            Some(Duration::ZERO)
        } else {
            match (idle_left, stall_check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut readable = backlog;
        for event in events.iter() {
            match event.token() {
                NETLINK => readable = true,
                LOG_IO => server.note_io_ready(),
                SIGNALS if drain_signals(server, signals)? => return Ok(()),
                _ => {}
            }
        }
        // Completions are taken when the eventfd said so (edge-triggered:
        // all of them).
        send_completions(server, socket, &mut tx);
        if server.io_in_flight() {
            server.check_stalls();
        }
        if readable {
            last_request = Instant::now();
            backlog = drain_socket(server, socket, &mut rx, &mut tx)? == Drained::Paused;
        } else if server.has_deferred_writes() && last_request.elapsed() >= IDLE_WRITE_BACK {
            tx.clear();
            server.write_back_all(&mut |reply| push_reply(socket, &mut tx, reply));
            flush_replies(socket, &mut tx);
            last_request = Instant::now();
        }
    }
}

/// Answers the requests whose log device work completed.
fn send_completions(
    server: &mut Server,
    socket: &ConnectorSocket,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
) {
    tx.clear();
    server.complete(&mut |reply| push_reply(socket, tx, reply));
    flush_replies(socket, tx);
}

/// Adds a reply to the batch, sending the batch first when it is full.
fn push_reply(socket: &ConnectorSocket, tx: &mut Datagrams<REPLY_BUF_LEN>, reply: &[u8]) {
    if tx.is_full() {
        flush_replies(socket, tx);
    }
    if let Some(buf) = tx.next_buf() {
        let n = reply.len().min(REPLY_BUF_LEN);
        buf[..n].copy_from_slice(&reply[..n]);
        tx.push(n);
    }
}

fn flush_replies(socket: &ConnectorSocket, tx: &mut Datagrams<REPLY_BUF_LEN>) {
    if !tx.is_empty() {
        socket.send_batch(tx, |e| {
            log::warn!("sending a reply to the kernel failed: {}", e.desc());
        });
    }
    tx.clear();
}

/// How `drain_socket` left the socket.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// The queue is empty.
    Empty,
    /// BATCHES_BETWEEN_POLLS batches were served; more may be queued.
    Paused,
}

/// Serves requests until the socket stays quiet for NEXT_REQUEST_WAIT, or
/// for at most BATCHES_BETWEEN_POLLS batches, full or not, so that signals
/// are seen under any load. A request costs a receive and a send, as for a
/// blocking server; the requests queued when the loop comes back from the
/// poll are taken in one recvmmsg and answered in one sendmmsg.
fn drain_socket(
    server: &mut Server,
    socket: &ConnectorSocket,
    rx: &mut Datagrams<RECV_BUF_LEN>,
    tx: &mut Datagrams<REPLY_BUF_LEN>,
) -> io::Result<Drained> {
    let mut batches = 0u32;
    loop {
        if batches >= BATCHES_BETWEEN_POLLS {
            return Ok(Drained::Paused);
        }
        // The first receive follows the poll's readiness, so it need not
        // wait; nor does any while log device I/O is in flight, whose
        // completion the poll sees.
        let wait = batches > 0 && !server.io_in_flight();
        batches += 1;
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
            Err(e) => return Err(e.into()),
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
        server.complete(&mut |reply| push_reply(socket, tx, reply));
        flush_replies(socket, tx);
    }
}

/// Returns true when the daemon should exit.
fn drain_signals(server: &mut Server, signals: &SignalFd) -> io::Result<bool> {
    while let Some(info) = signals.read_signal()? {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                if server.may_exit() {
                    log::info!("no log is live; exiting");
                    return Ok(true);
                }
                log::warn!(
                    "refusing to exit: {} log(s) are live and their mirrors would freeze; \
                     remove their tables first",
                    server.registry().len()
                );
                for e in server.registry().iter() {
                    log::warn!("  live: {} ({})", Uuid(&e.uuid), e.log.log_type().name());
                }
            }
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
    Ok(false)
}

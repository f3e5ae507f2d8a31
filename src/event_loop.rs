//! One thread, one mio Poll over the connector socket and a signalfd.
//! Requests are handled to the end in arrival order.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::server::{Server, Uuid};
use crate::sys::netlink::ConnectorSocket;
use crate::wire::frame::{MAX_KERNEL_DATAGRAM, REPLY_BUF_LEN};

/// How long the daemon waits without requests before writing the clears
/// disk logs deferred.
const IDLE_WRITE_BACK: Duration = Duration::from_secs(2);

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);

/// One byte more than the kernel ever sends: a datagram that fills the
/// buffer is oversized (MSG_TRUNC reports its real length anyway).
const RECV_BUF_LEN: usize = MAX_KERNEL_DATAGRAM + 1;

/// Serves until SIGTERM or SIGINT arrives while no log is live.
pub fn run(server: &mut Server, socket: &ConnectorSocket, signals: &SignalFd) -> io::Result<()> {
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
    let mut events = Events::with_capacity(4);
    let mut rx = [0u8; RECV_BUF_LEN];
    let mut tx = [0u8; REPLY_BUF_LEN];
    loop {
        let timeout = server.has_deferred_writes().then_some(IDLE_WRITE_BACK);
        match poll.poll(&mut events, timeout) {
            Ok(()) if events.is_empty() => server.write_back_all(),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                NETLINK => drain_socket(server, socket, &mut rx, &mut tx)?,
                SIGNALS if drain_signals(server, signals)? => return Ok(()),
                _ => {}
            }
        }
    }
}

/// mio is edge-triggered: read until the queue is empty.
fn drain_socket(
    server: &mut Server,
    socket: &ConnectorSocket,
    rx: &mut [u8; RECV_BUF_LEN],
    tx: &mut [u8; REPLY_BUF_LEN],
) -> io::Result<()> {
    loop {
        let got = match socket.recv(rx) {
            Ok(got) => got,
            Err(Errno::EAGAIN) => return Ok(()),
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
        };
        if got.sender_port != 0 {
            server.drop_datagram("sender is not the kernel");
            continue;
        }
        if got.truncated || got.len == rx.len() {
            server.drop_datagram("oversized datagram");
            continue;
        }
        if let Some(n) = server.handle(&rx[..got.len], tx)
            && let Err(e) = socket.send_to(&tx[..n], 0)
        {
            log::warn!("sending a reply to the kernel failed: {}", e.desc());
        }
    }
}

/// Returns true when the daemon should exit.
fn drain_signals(server: &mut Server, signals: &SignalFd) -> io::Result<bool> {
    while let Some(info) = signals.read_signal()? {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                if server.registry().is_empty() {
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
            Ok(Signal::SIGUSR1) => server.log_summary(),
            _ => {}
        }
    }
    Ok(false)
}

//! The netlink connector socket (PROTOCOL.md section 1).

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, NetlinkAddr, sockopt};

use crate::wire::cn_msg::CN_IDX_DM;

/// NETLINK_CONNECTOR protocol number (nix has no SockProtocol for it).
const NETLINK_CONNECTOR: libc::c_int = 11;

/// A datagram taken off the socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer (the rest is lost).
    pub truncated: bool,
    /// The sender's netlink port id; 0 is the kernel.
    pub sender_port: u32,
}

/// Why the socket could not be set up.
#[derive(Debug)]
pub enum SocketError {
    /// The kernel has no netlink connector (CONFIG_CONNECTOR).
    NoConnector,
    /// Joining group 7 needs CAP_NET_ADMIN.
    NotPermitted,
    Other(&'static str, Errno),
}

impl core::fmt::Display for SocketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SocketError::NoConnector => f.write_str(
                "this kernel has no netlink connector (CONFIG_CONNECTOR); \
                 device-mapper's userspace log cannot reach any daemon",
            ),
            SocketError::NotPermitted => f.write_str(
                "joining the device-mapper connector group needs CAP_NET_ADMIN: run as root",
            ),
            SocketError::Other(what, e) => write!(f, "{what}: {}", e.desc()),
        }
    }
}

/// A NETLINK_CONNECTOR socket subscribed to CN_IDX_DM. It is a blocking
/// socket: each receive says whether it may wait (MSG_DONTWAIT or not).
#[derive(Debug)]
pub struct ConnectorSocket {
    fd: OwnedFd,
}

impl ConnectorSocket {
    /// Opens the socket, binds it with no groups, joins group 7 with
    /// NETLINK_ADD_MEMBERSHIP (binding with nl_groups = CN_IDX_DM would be a
    /// bitmask and subscribe groups 1-3 too) and asks for `rcvbuf` bytes of
    /// receive queue (forced past rmem_max where allowed).
    pub fn open(rcvbuf: usize) -> Result<Self, SocketError> {
        let fd = Self::open_unbound()?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| SocketError::Other("cannot bind the connector socket", e))?;
        join_group(fd.as_fd(), CN_IDX_DM).map_err(|e| match e {
            Errno::EPERM | Errno::EACCES => SocketError::NotPermitted,
            e => SocketError::Other("cannot join the device-mapper connector group", e),
        })?;
        let sock = ConnectorSocket { fd };
        if socket::setsockopt(&sock.fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
            // Without CAP_NET_ADMIN the kernel caps this at rmem_max.
            let _ = socket::setsockopt(&sock.fd, sockopt::RcvBuf, &rcvbuf);
        }
        Ok(sock)
    }

    /// A bound socket that has joined no group: the tests use one to play
    /// a sender that is not the kernel.
    pub fn open_unicast() -> Result<Self, SocketError> {
        let fd = Self::open_unbound()?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| SocketError::Other("cannot bind the connector socket", e))?;
        Ok(ConnectorSocket { fd })
    }

    fn open_unbound() -> Result<OwnedFd, SocketError> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns, so OwnedFd may take it.
        let raw: RawFd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(match Errno::last() {
                Errno::EPROTONOSUPPORT | Errno::EAFNOSUPPORT => SocketError::NoConnector,
                e => SocketError::Other("cannot open a netlink connector socket", e),
            });
        }
        // SAFETY: see above: `raw` is a fresh, valid, unowned descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// Bounds how long a waiting `recv_batch` blocks (SO_RCVTIMEO).
    pub fn set_receive_wait(&self, wait: std::time::Duration) -> Result<(), Errno> {
        use nix::sys::time::{TimeVal, TimeValLike};
        let micros = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
        socket::setsockopt(
            &self.fd,
            sockopt::ReceiveTimeout,
            &TimeVal::microseconds(micros),
        )
    }

    /// The receive queue size the kernel granted.
    pub fn rcvbuf(&self) -> Result<usize, Errno> {
        socket::getsockopt(&self.fd, sockopt::RcvBuf)
    }

    /// Takes one datagram; EAGAIN when the queue is empty, ENOBUFS when the
    /// queue overflowed and datagrams were lost.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, Errno> {
        // SAFETY: all-zero bytes are a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut addr_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buf` is valid for writes of buf.len() bytes; `addr` and
        // `addr_len` are live locals of the sizes passed. With MSG_TRUNC the
        // result is the datagram's real length, but the kernel still writes
        // at most buf.len() bytes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_nl).cast(),
                &mut addr_len,
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        let n = n as usize;
        Ok(Received {
            len: n.min(buf.len()),
            truncated: n > buf.len(),
            sender_port: addr.nl_pid,
        })
    }

    /// Sends one datagram to the netlink port `port` (0 = the kernel).
    pub fn send_to(&self, datagram: &[u8], port: u32) -> Result<(), Errno> {
        socket::sendto(
            self.fd.as_raw_fd(),
            datagram,
            &NetlinkAddr::new(port, 0),
            MsgFlags::empty(),
        )
        .map(|_| ())
    }
}

/// Datagrams taken or given per system call (recvmmsg, sendmmsg).
pub const BATCH: usize = 16;

/// Buffers for up to BATCH datagrams of at most LEN bytes each, allocated
/// once with the event loop.
pub struct Datagrams<const LEN: usize> {
    bufs: [[u8; LEN]; BATCH],
    got: [Received; BATCH],
    count: usize,
}

impl<const LEN: usize> Default for Datagrams<LEN> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const LEN: usize> Datagrams<LEN> {
    pub const fn new() -> Self {
        const NONE: Received = Received {
            len: 0,
            truncated: false,
            sender_port: 0,
        };
        Datagrams {
            bufs: [[0; LEN]; BATCH],
            got: [NONE; BATCH],
            count: 0,
        }
    }

    /// How many datagrams the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    /// The i-th datagram (i < len()) and what the kernel said of it.
    pub fn get(&self, i: usize) -> (&[u8], Received) {
        let got = self.got[i];
        (&self.bufs[i][..got.len], got)
    }

    /// The buffer the next datagram is built in; `push` keeps it. None
    /// when the batch is full.
    pub fn next_buf(&mut self) -> Option<&mut [u8; LEN]> {
        self.bufs.get_mut(self.count)
    }

    /// Keeps the first `len` bytes of the buffer `next_buf` gave.
    pub fn push(&mut self, len: usize) {
        self.got[self.count] = Received {
            len: len.min(LEN),
            truncated: false,
            sender_port: 0,
        };
        self.count += 1;
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }
}

impl ConnectorSocket {
    /// Replaces `batch` with the datagrams queued on the socket, up to
    /// `max` (at most BATCH), in one recvmmsg; with `wait`, first waits for
    /// one up to the `set_receive_wait` time. EAGAIN when none came, ENOBUFS
    /// when the queue overflowed and datagrams were lost. A batch short of
    /// `max` emptied the queue: recvmmsg stops early only when the queue is
    /// empty or on an error, which it keeps for the next call, and a queue
    /// overflow also wakes the poller again.
    pub fn recv_batch<const LEN: usize>(
        &self,
        batch: &mut Datagrams<LEN>,
        max: usize,
        wait: bool,
    ) -> Result<(), Errno> {
        let max = max.clamp(1, BATCH);
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        batch.count = 0;
        // SAFETY: all-zero bytes are valid sockaddr_nl, iovec and mmsghdr
        // values (null pointers, zero lengths).
        let mut addrs: [libc::sockaddr_nl; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // Only the headers passed to the kernel need filling.
        for (i, hdr) in hdrs.iter_mut().enumerate().take(max) {
            iovs[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = LEN;
            hdr.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_nl).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &mut iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers passed, the first max (<= BATCH), each point
        // at a live sockaddr_nl of the length given and one live iovec over
        // a buffer of LEN writable bytes; all of them outlive the call, and
        // the kernel writes within them.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                max as _,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        let n = n as usize;
        for i in 0..n {
            let hdr = &hdrs[i];
            batch.got[i] = Received {
                len: (hdr.msg_len as usize).min(LEN),
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                sender_port: addrs[i].nl_pid,
            };
        }
        batch.count = n;
        Ok(())
    }

    /// Sends every datagram of `batch` to the kernel, with as few sendmmsg
    /// calls as errors allow; returns the errors of the datagrams that
    /// could not be sent, through `on_error`.
    pub fn send_batch<const LEN: usize>(
        &self,
        batch: &Datagrams<LEN>,
        mut on_error: impl FnMut(Errno),
    ) {
        if batch.count == 1 {
            // One datagram: sendto, which spares the kernel the message
            // header array (and sendmmsg's reschedule point).
            let (reply, _) = batch.get(0);
            while let Err(e) = self.send_to(reply, 0) {
                if e != Errno::EINTR {
                    on_error(e);
                    break;
                }
            }
            return;
        }
        // SAFETY: all-zero bytes are a valid sockaddr_nl: port 0 (the
        // kernel), no groups; the family is set below.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: all-zero bytes are valid iovec and mmsghdr values.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..batch.count {
            // The kernel only reads through this pointer.
            iovs[i].iov_base = batch.bufs[i].as_ptr().cast_mut().cast();
            iovs[i].iov_len = batch.got[i].len;
            hdrs[i].msg_hdr.msg_name = (&mut kernel as *mut libc::sockaddr_nl).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < batch.count {
            // The system call itself: musl's sendmmsg on 64-bit targets is a
            // loop of sendmsg calls (it fixes up msghdr fields that are int
            // in its ABI and size_t in the kernel's; ours are zeroed, pads
            // included, so the kernel reads them right).
            // SAFETY: headers sent..count point at the live kernel address
            // and at iovecs over initialised bytes of `batch`, all of which
            // outlive the call; the kernel only reads them (and writes the
            // headers' msg_len).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_sendmmsg,
                    self.fd.as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (batch.count - sent) as libc::c_uint,
                    0 as libc::c_uint,
                )
            };
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    // The first of the rest failed: report it, go on after it.
                    e => {
                        on_error(e);
                        sent += 1;
                    }
                }
            } else {
                sent += n as usize;
            }
        }
    }
}

impl AsFd for ConnectorSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ConnectorSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn join_group(fd: BorrowedFd<'_>, group: u32) -> Result<(), Errno> {
    let group: libc::c_int = group as libc::c_int;
    // SAFETY: the option value points at a live c_int and its size is
    // passed; the fd is borrowed and therefore open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&group as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

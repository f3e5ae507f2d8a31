//! A whole datagram: parsing a kernel request out of it, and emitting the two
//! reply forms the kernel accepts (PROTOCOL.md sections 2 and 3).

use super::cn_msg::{self, CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, CnMsg};
use super::nlmsg::{self, NLMSG_DONE, NlMsg};
use super::ulog::{self, UlogRequest};
use nix::errno::Errno;

/// Where the request header starts in a datagram.
pub const REQUEST_OFFSET: usize = nlmsg::HEADER_LEN + cn_msg::HEADER_LEN;
/// Where a reply's payload starts in a datagram.
pub const REPLY_DATA_OFFSET: usize = REQUEST_OFFSET + ulog::HEADER_LEN;
/// The kernel preallocates 512 bytes for cn_msg + request + payload, so no
/// datagram it sends is longer than this.
pub const MAX_KERNEL_DATAGRAM: usize = nlmsg::HEADER_LEN + 512;
/// The largest request payload the kernel can send.
pub const MAX_REQUEST_DATA: usize = MAX_KERNEL_DATAGRAM - REPLY_DATA_OFFSET;
/// The largest reply payload we ever send (a status line or a device name).
pub const MAX_REPLY_DATA: usize = 256;
/// Size of the preallocated reply buffer.
pub const REPLY_BUF_LEN: usize = REPLY_DATA_OFFSET + MAX_REPLY_DATA;

/// A parsed kernel request; `header` is the raw request header, echoed in
/// the reply.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub cn_seq: u32,
    pub luid: u64,
    pub uuid: &'a [u8],
    pub version: u32,
    pub seq: u32,
    pub request_type_field: u32,
    pub data: &'a [u8],
    pub header: &'a [u8],
}

/// A datagram that is not a well-formed request, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not ours or unreadable: drop it silently (but count it).
    Drop(&'static str),
    /// A kernel request whose connector header is readable but whose request
    /// header is not: acknowledge `seq` with `errno` so the caller fails at
    /// once instead of waiting for its timeout.
    Ack {
        reason: &'static str,
        seq: u32,
        errno: i32,
    },
    /// A readable request header with an inconsistent payload: answer it
    /// with `-errno` in a full reply echoing `header`.
    Reply {
        reason: &'static str,
        cn_seq: u32,
        errno: i32,
    },
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match *self {
            Rejection::Drop(r) => r,
            Rejection::Ack { reason, .. } | Rejection::Reply { reason, .. } => reason,
        }
    }
}

/// Parses a datagram received from the kernel. `Err(Reply)` leaves the
/// request header at `datagram[REQUEST_OFFSET..REPLY_DATA_OFFSET]` for
/// `emit_reply`.
pub fn parse_request(datagram: &[u8]) -> Result<Request<'_>, Rejection> {
    let nl = NlMsg::new_checked(datagram)
        .map_err(|_| Rejection::Drop("truncated or inconsistent netlink header"))?;
    if nl.msg_type() != NLMSG_DONE {
        return Err(Rejection::Drop("unexpected netlink message type"));
    }
    let nl_payload = &datagram[nlmsg::HEADER_LEN..nl.len() as usize];
    let cn = CnMsg::new_checked(nl_payload)
        .map_err(|_| Rejection::Drop("truncated or inconsistent connector header"))?;
    if !cn.is_dm_log() {
        return Err(Rejection::Drop("connector id is not device-mapper's log"));
    }
    let body = &nl_payload[cn_msg::HEADER_LEN..cn_msg::HEADER_LEN + cn.len() as usize];
    if body.len() < ulog::HEADER_LEN {
        return Err(Rejection::Ack {
            reason: "connector payload shorter than a request header",
            seq: cn.seq(),
            errno: Errno::EINVAL as i32,
        });
    }
    let req = match UlogRequest::new_checked(body) {
        Ok(r) => r,
        Err(super::WireError::UnterminatedUuid) => {
            return Err(Rejection::Reply {
                reason: "uuid is not NUL-terminated",
                cn_seq: cn.seq(),
                errno: Errno::EINVAL as i32,
            });
        }
        Err(_) => {
            return Err(Rejection::Reply {
                reason: "data_size runs past the received bytes",
                cn_seq: cn.seq(),
                errno: Errno::EINVAL as i32,
            });
        }
    };
    if ulog::HEADER_LEN + req.data_size() as usize != body.len() {
        return Err(Rejection::Reply {
            reason: "data_size disagrees with the connector length",
            cn_seq: cn.seq(),
            errno: Errno::EINVAL as i32,
        });
    }
    // Slices are cut from `body` so they borrow the datagram, not the view.
    let uuid_len = req.uuid().len();
    let data_size = req.data_size() as usize;
    Ok(Request {
        cn_seq: cn.seq(),
        luid: req.luid(),
        uuid: &body[ulog::UUID_OFFSET..ulog::UUID_OFFSET + uuid_len],
        version: req.version(),
        seq: req.seq(),
        request_type_field: req.request_type_field(),
        data: &body[ulog::HEADER_LEN..ulog::HEADER_LEN + data_size],
        header: &body[..ulog::HEADER_LEN],
    })
}

/// Writes nlmsghdr + cn_msg for a connector message of `cn_len` payload bytes.
fn emit_headers(out: &mut [u8], cn_seq: u32, ack: u32, cn_len: u16) {
    let total = (REQUEST_OFFSET + cn_len as usize) as u32;
    let mut nl = NlMsg::new_unchecked(&mut out[..nlmsg::HEADER_LEN]);
    nl.set_len(total);
    nl.set_msg_type(NLMSG_DONE);
    nl.set_flags(0);
    nl.set_seq(cn_seq);
    nl.set_pid(0);
    let mut cn = CnMsg::new_unchecked(&mut out[nlmsg::HEADER_LEN..REQUEST_OFFSET]);
    cn.set_idx(CN_IDX_DM);
    cn.set_val(CN_VAL_DM_USERSPACE_LOG);
    cn.set_seq(cn_seq);
    cn.set_ack(ack);
    cn.set_len(cn_len);
    cn.set_flags(0);
}

/// Builds a full reply in `out`: the request's header with `error` and
/// `data_len` set, followed by `data_len` payload bytes that the caller has
/// already written at `out[REPLY_DATA_OFFSET..]`. Returns the datagram length.
/// `out` must be at least `REPLY_DATA_OFFSET + data_len` bytes.
pub fn emit_reply(
    out: &mut [u8],
    request_header: &[u8],
    cn_seq: u32,
    error: i32,
    data_len: usize,
) -> usize {
    let cn_len = ulog::HEADER_LEN + data_len;
    emit_headers(out, cn_seq, 0, cn_len as u16);
    out[REQUEST_OFFSET..REPLY_DATA_OFFSET].copy_from_slice(&request_header[..ulog::HEADER_LEN]);
    let mut req = UlogRequest::new_unchecked(&mut out[REQUEST_OFFSET..]);
    req.set_error(error);
    req.set_data_size(data_len as u32);
    REQUEST_OFFSET + cn_len
}

/// Builds a bare acknowledgement (cn_msg.len = 0) of `seq` with a positive
/// `errno` (0 = success). Returns the datagram length.
pub fn emit_ack(out: &mut [u8], seq: u32, errno: i32) -> usize {
    emit_headers(out, seq, errno as u32, 0);
    REQUEST_OFFSET
}

/// Builds a kernel-style request datagram; used by tests, the fuzz corpus
/// and the benchmark, never on the daemon's path.
#[allow(clippy::too_many_arguments)]
pub fn emit_request(
    out: &mut [u8],
    cn_seq: u32,
    luid: u64,
    uuid: &[u8],
    seq: u32,
    request_type: u32,
    data: &[u8],
) -> usize {
    let cn_len = ulog::HEADER_LEN + data.len();
    emit_headers(out, cn_seq, 0, cn_len as u16);
    let mut req = UlogRequest::new_unchecked(&mut out[REQUEST_OFFSET..REQUEST_OFFSET + cn_len]);
    req.set_luid(luid);
    req.set_uuid(uuid);
    req.set_version(ulog::VERSION);
    req.set_error(0);
    req.set_seq(seq);
    req.set_request_type_field(request_type);
    req.set_data_size(data.len() as u32);
    req.data_mut()[..data.len()].copy_from_slice(data);
    REQUEST_OFFSET + cn_len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MARK_REGION request for region 5 as the kernel lays it out, byte by byte.
    fn kernel_mark_request() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(16u32 + 20 + 160 + 8).to_ne_bytes()); // nlmsg_len
        b.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        b.extend_from_slice(&0u16.to_ne_bytes()); // flags
        b.extend_from_slice(&77u32.to_ne_bytes()); // nlmsg_seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        b.extend_from_slice(&7u32.to_ne_bytes()); // idx
        b.extend_from_slice(&1u32.to_ne_bytes()); // val
        b.extend_from_slice(&77u32.to_ne_bytes()); // seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // ack
        b.extend_from_slice(&(160u16 + 8).to_ne_bytes()); // len
        b.extend_from_slice(&0u16.to_ne_bytes()); // flags
        b.extend_from_slice(&0xdead_beefu64.to_ne_bytes()); // luid
        let mut uuid = [0u8; 129 + 3];
        uuid[..4].copy_from_slice(b"LVM1");
        b.extend_from_slice(&uuid);
        b.extend_from_slice(&3u32.to_ne_bytes()); // version
        b.extend_from_slice(&0i32.to_ne_bytes()); // error
        b.extend_from_slice(&77u32.to_ne_bytes()); // seq
        b.extend_from_slice(&10u32.to_ne_bytes()); // MARK_REGION
        b.extend_from_slice(&8u32.to_ne_bytes()); // data_size
        b.extend_from_slice(&5u64.to_ne_bytes());
        b
    }

    #[test]
    fn parses_a_kernel_request() {
        let bytes = kernel_mark_request();
        let req = parse_request(&bytes).unwrap();
        assert_eq!(req.cn_seq, 77);
        assert_eq!(req.seq, 77);
        assert_eq!(req.luid, 0xdead_beef);
        assert_eq!(req.uuid, b"LVM1");
        assert_eq!(req.version, 3);
        assert_eq!(req.request_type_field, 10);
        assert_eq!(req.data, &5u64.to_ne_bytes());
    }

    #[test]
    fn emit_request_matches_the_kernel_layout() {
        let mut out = [0u8; 256];
        let n = emit_request(
            &mut out,
            77,
            0xdead_beef,
            b"LVM1",
            77,
            10,
            &5u64.to_ne_bytes(),
        );
        assert_eq!(&out[..n], &kernel_mark_request()[..]);
    }

    #[test]
    fn full_reply_layout() {
        let bytes = kernel_mark_request();
        let req = parse_request(&bytes).unwrap();
        let mut out = [0u8; REPLY_BUF_LEN];
        out[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + 8].copy_from_slice(&1i64.to_ne_bytes());
        let n = emit_reply(&mut out, req.header, req.cn_seq, -22, 8);
        assert_eq!(n, 16 + 20 + 160 + 8);
        let mut expect = bytes.clone();
        expect[16 + 20 + 144..16 + 20 + 148].copy_from_slice(&(-22i32).to_ne_bytes());
        expect[196..204].copy_from_slice(&1i64.to_ne_bytes());
        assert_eq!(&out[..n], &expect[..]);
    }

    #[test]
    fn bare_ack_layout() {
        let mut out = [0u8; 64];
        let n = emit_ack(&mut out, 9, 11);
        let mut expect = Vec::new();
        expect.extend_from_slice(&36u32.to_ne_bytes());
        expect.extend_from_slice(&3u16.to_ne_bytes());
        expect.extend_from_slice(&0u16.to_ne_bytes());
        expect.extend_from_slice(&9u32.to_ne_bytes());
        expect.extend_from_slice(&0u32.to_ne_bytes());
        for v in [7u32, 1, 9, 11] {
            expect.extend_from_slice(&v.to_ne_bytes());
        }
        expect.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(&out[..n], &expect[..]);
    }

    #[test]
    fn rejects_malformed_datagrams() {
        let good = kernel_mark_request();
        assert!(matches!(
            parse_request(&good[..10]),
            Err(Rejection::Drop(_))
        ));
        let mut wrong_id = good.clone();
        wrong_id[16] = 4;
        assert!(matches!(parse_request(&wrong_id), Err(Rejection::Drop(_))));
        // data_size larger than the bytes that came.
        let mut big = good.clone();
        big[36 + 156..36 + 160].copy_from_slice(&16u32.to_ne_bytes());
        assert!(matches!(
            parse_request(&big),
            Err(Rejection::Reply { errno: 22, .. })
        ));
        // data_size smaller than the connector length says.
        let mut small = good.clone();
        small[36 + 156..36 + 160].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            parse_request(&small),
            Err(Rejection::Reply { errno: 22, .. })
        ));
        // A connector payload too short for a request header.
        let mut short = good.clone();
        short.truncate(16 + 20 + 100);
        short[0..4].copy_from_slice(&(136u32).to_ne_bytes());
        short[32..34].copy_from_slice(&100u16.to_ne_bytes());
        assert!(matches!(
            parse_request(&short),
            Err(Rejection::Ack {
                seq: 77,
                errno: 22,
                ..
            })
        ));
    }
}

//! The fuzz harness, shared word for word by the cargo-fuzz targets
//! (tests/fuzz/fuzz_targets/*.rs) and the corpus replay test
//! (tests/fuzz_corpus.rs), which both include this file with
//! `#[path = ...] mod harness;`.
//!
//! Two entry points:
//! - [`frame`]: arbitrary bytes into the wire views and `parse_request`.
//! - [`ServerHarness::run`]: arbitrary bytes read as a small program of
//!   datagrams fed to one `Server`; every reply is parsed back and checked
//!   against PROTOCOL.md (sections 2-4) and against the log's own state.
//!
//! # Server input format
//! `prelude kind size` (3 bytes, missing bytes read as 0), then chunks of
//! `tag len body[len]` (`len` a little-endian u16, cut to what is left):
//! - prelude bit 0: start with a CTR for target 0 built from `kind size`
//!   (see [`ctr_text`]); bit 1: then RESUME it.
//! - tag bits 0-1, the mode: 0 the body is a raw datagram; 1 a request built
//!   with `emit_request`, `body[0]` choosing the type (`% 19`, so 0 and 18
//!   are unknown types) and the rest of the body its payload as is; 2 the
//!   same, but each payload byte becomes one u64 region (see [`region_of`]);
//!   3 a macro chosen by `body[0] % 5`: 0 CTR from `body[1] body[2]`, 1 a
//!   resync loop of `body[1]` rounds of GET_RESYNC_WORK + SET_REGION_SYNC,
//!   2 a write cycle MARK + FLUSH + CLEAR + FLUSH over compact regions
//!   `body[1..]`, 3 PRESUSPEND + POSTSUSPEND + RESUME, 4 a restart of the
//!   daemon: a new `Server` over the same state directory (the macro is
//!   `body[0] % 5`).
//! - tag bits 2-3: which (uuid, luid) the request names ([`TARGETS`]).
//! - tag bit 4: set reserved high bits of the request type field.
//! - tag bit 5: send request version 2 instead of 3.
//! - tag bit 6: make the connector seq differ from the request seq.
//!
//! # Safety of fuzzing as root
//! A CTR for a `disk` log opens its device read-write and RESUME writes to
//! it. The harness therefore never lets a CTR through whose device is not
//! its own scratch file (see [`foreign_device`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use dm_ulogd::log::params;
use dm_ulogd::server::{Limits, Server};
use dm_ulogd::wire::cn_msg::{CnMsg, HEADER_LEN as CN_HEADER_LEN};
use dm_ulogd::wire::frame::{
    self, MAX_REPLY_DATA, REPLY_BUF_LEN, REPLY_DATA_OFFSET, REQUEST_OFFSET, Rejection,
};
use dm_ulogd::wire::nlmsg::{HEADER_LEN as NL_HEADER_LEN, NLMSG_DONE, NlMsg};
use dm_ulogd::wire::ulog::{self, MAX_UUID_LEN, RequestType, UlogRequest};

// ---------------------------------------------------------------------------
// Byte helpers: the checks read replies by offset, independently of the
// views under test.

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// Offsets of the request header fields within the datagram.
mod at {
    use super::REQUEST_OFFSET as R;
    pub const NL_LEN: usize = 0;
    pub const NL_TYPE: usize = 4;
    pub const NL_FLAGS: usize = 6;
    pub const NL_PID: usize = 12;
    pub const CN_IDX: usize = 16;
    pub const CN_VAL: usize = 20;
    pub const CN_SEQ: usize = 24;
    pub const CN_ACK: usize = 28;
    pub const CN_LEN: usize = 32;
    pub const VERSION: usize = R + 140;
    pub const ERROR: usize = R + 144;
    pub const SEQ: usize = R + 148;
    pub const TYPE: usize = R + 152;
    pub const DATA_SIZE: usize = R + 156;
}

// ---------------------------------------------------------------------------
// The `frame` target.

/// Arbitrary bytes through every view's `new_checked` and accessors, and
/// through `parse_request`; a parsed request must round-trip through
/// `emit_request` and `emit_reply`.
pub fn frame(data: &[u8]) {
    views(data);
    // The same bytes as they would sit behind each header.
    if data.len() > NL_HEADER_LEN {
        views(&data[NL_HEADER_LEN..]);
    }
    if data.len() > REQUEST_OFFSET {
        views(&data[REQUEST_OFFSET..]);
    }

    match frame::parse_request(data) {
        Ok(req) => {
            // Consistency with the bytes.
            assert!(data.len() >= REPLY_DATA_OFFSET);
            let nl_len = u32_at(data, at::NL_LEN) as usize;
            assert!(nl_len <= data.len());
            assert_eq!(u16_at(data, at::NL_TYPE), NLMSG_DONE);
            assert_eq!(u32_at(data, at::CN_IDX), 7);
            assert_eq!(u32_at(data, at::CN_VAL), 1);
            let cn_len = u16_at(data, at::CN_LEN) as usize;
            assert!(REQUEST_OFFSET + cn_len <= nl_len);
            assert_eq!(cn_len, ulog::HEADER_LEN + req.data.len());
            assert_eq!(req.cn_seq, u32_at(data, at::CN_SEQ));
            assert_eq!(req.seq, u32_at(data, at::SEQ));
            assert_eq!(req.version, u32_at(data, at::VERSION));
            assert_eq!(req.request_type_field, u32_at(data, at::TYPE));
            assert_eq!(req.data.len(), u32_at(data, at::DATA_SIZE) as usize);
            assert_eq!(req.luid, u64_at(data, REQUEST_OFFSET));
            assert_eq!(req.header, &data[REQUEST_OFFSET..REPLY_DATA_OFFSET]);
            assert_eq!(
                req.data,
                &data[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + req.data.len()]
            );
            assert!(req.uuid.len() <= MAX_UUID_LEN);
            assert!(!req.uuid.contains(&0));
            let uuid_at = REQUEST_OFFSET + ulog::UUID_OFFSET;
            assert_eq!(req.uuid, &data[uuid_at..uuid_at + req.uuid.len()]);
            assert_eq!(data[uuid_at + req.uuid.len()], 0);
            if let Some(t) = RequestType::from_field(req.request_type_field) {
                assert_eq!(t as u32, req.request_type_field & 0xff);
                assert!(!t.name().is_empty());
            } else {
                let low = req.request_type_field & 0xff;
                assert!(low == 0 || low > 17);
            }

            // emit_request rebuilds the same request.
            let mut buf = vec![0u8; REPLY_DATA_OFFSET + req.data.len()];
            let n = frame::emit_request(
                &mut buf,
                req.cn_seq,
                req.luid,
                req.uuid,
                req.seq,
                req.request_type_field,
                req.data,
            );
            assert_eq!(n, buf.len());
            let again = frame::parse_request(&buf[..n]).expect("emit_request output parses");
            assert_eq!(again.cn_seq, req.cn_seq);
            assert_eq!(again.luid, req.luid);
            assert_eq!(again.uuid, req.uuid);
            assert_eq!(again.seq, req.seq);
            assert_eq!(again.request_type_field, req.request_type_field);
            assert_eq!(again.data, req.data);

            // A full reply echoes the header and parses back (it has the
            // layout of a request).
            let mut out = [0u8; REPLY_BUF_LEN];
            let len = data.len().min(MAX_REPLY_DATA) % 9;
            out[REPLY_DATA_OFFSET..REPLY_DATA_OFFSET + len].fill(0xa5);
            let n = frame::emit_reply(&mut out, req.header, req.cn_seq, -22, len);
            let reply = &out[..n];
            check_headers(reply, req.cn_seq);
            assert_eq!(u32_at(reply, at::ERROR) as i32, -22);
            assert_eq!(u32_at(reply, at::DATA_SIZE) as usize, len);
            assert_eq!(&reply[REQUEST_OFFSET..at::ERROR], &req.header[..144]);
            assert_eq!(&reply[at::SEQ..at::DATA_SIZE], &req.header[148..156]);
            let parsed = frame::parse_request(reply).expect("a full reply parses as a request");
            assert_eq!(parsed.data.len(), len);
        }
        Err(rejection) => {
            assert!(!rejection.reason().is_empty());
            match rejection {
                Rejection::Drop(_) => {}
                Rejection::Ack { seq, errno, .. } => {
                    assert!(errno > 0);
                    // The connector header was readable: seq is its seq.
                    assert!(data.len() >= REQUEST_OFFSET);
                    assert_eq!(seq, u32_at(data, at::CN_SEQ));
                    let mut out = [0u8; REPLY_BUF_LEN];
                    let n = frame::emit_ack(&mut out, seq, errno);
                    check_headers(&out[..n], seq);
                    assert_eq!(n, REQUEST_OFFSET);
                    assert_eq!(u32_at(&out, at::CN_ACK), errno as u32);
                }
                Rejection::Reply { cn_seq, errno, .. } => {
                    assert!(errno > 0);
                    // The server echoes this header: it must be there.
                    assert!(data.len() >= REPLY_DATA_OFFSET);
                    assert_eq!(cn_seq, u32_at(data, at::CN_SEQ));
                }
            }
        }
    }
}

/// Every view over `data`, every accessor.
fn views(data: &[u8]) {
    if let Ok(nl) = NlMsg::new_checked(data) {
        let len = nl.len() as usize;
        assert!(len >= NL_HEADER_LEN && len <= data.len());
        assert_eq!(nl.payload().len(), len - NL_HEADER_LEN);
        let _ = (nl.msg_type(), nl.flags(), nl.seq(), nl.pid(), nl.is_empty());
    } else {
        let len = if data.len() >= 4 {
            u32_at(data, 0) as usize
        } else {
            0
        };
        assert!(data.len() < NL_HEADER_LEN || len < NL_HEADER_LEN || len > data.len());
    }
    if let Ok(cn) = CnMsg::new_checked(data) {
        assert_eq!(cn.payload().len(), cn.len() as usize);
        assert!(CN_HEADER_LEN + cn.len() as usize <= data.len());
        let _ = (
            cn.idx(),
            cn.val(),
            cn.seq(),
            cn.ack(),
            cn.flags(),
            cn.is_empty(),
            cn.is_dm_log(),
        );
    }
    if let Ok(req) = UlogRequest::new_checked(data) {
        assert!(req.uuid().len() <= MAX_UUID_LEN);
        assert!(!req.uuid().contains(&0));
        assert_eq!(req.data().len(), req.data_size() as usize);
        let _ = (
            req.luid(),
            req.version(),
            req.error(),
            req.seq(),
            req.request_type_field(),
            req.request_type(),
        );
    }
}

/// nlmsghdr and cn_msg of a datagram to the kernel: lengths agree, type
/// NLMSG_DONE, id {7, 1}, connector seq as expected, and never the
/// incomplete form 0 < cn len < 160 the kernel drops.
fn check_headers(reply: &[u8], cn_seq: u32) {
    assert!(
        reply.len() >= REQUEST_OFFSET,
        "reply shorter than its headers"
    );
    assert_eq!(u32_at(reply, at::NL_LEN) as usize, reply.len(), "nlmsg_len");
    assert_eq!(u16_at(reply, at::NL_TYPE), NLMSG_DONE, "nlmsg_type");
    assert_eq!(u16_at(reply, at::NL_FLAGS), 0, "nlmsg_flags");
    assert_eq!(u32_at(reply, at::NL_PID), 0, "nlmsg_pid");
    assert_eq!(u32_at(reply, at::CN_IDX), 7, "cn idx");
    assert_eq!(u32_at(reply, at::CN_VAL), 1, "cn val");
    assert_eq!(u32_at(reply, at::CN_SEQ), cn_seq, "cn seq");
    let cn_len = u16_at(reply, at::CN_LEN) as usize;
    assert_eq!(REQUEST_OFFSET + cn_len, reply.len(), "cn len");
    assert!(
        cn_len == 0 || cn_len >= ulog::HEADER_LEN,
        "0 < cn len {cn_len} < 160: the kernel drops it"
    );
}

/// The reply buffer the kernel gives a request (PROTOCOL.md section 3).
pub fn reply_room(kind: Option<RequestType>, payload: &[u8]) -> usize {
    use RequestType::*;
    match kind {
        Some(Ctr) if payload.last() == Some(&0) => 0,
        Some(Ctr) => 128,
        Some(GetRegionSize | IsClean | InSync | GetSyncCount) => 8,
        Some(GetResyncWork | IsRemoteRecovering) => 16,
        Some(StatusInfo | StatusTable) => MAX_REPLY_DATA,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// The `server` target.

/// The limits the fuzzed server runs with.
pub const LIMITS: Limits = Limits {
    max_logs: 4,
    memory_budget: 1 << 20,
};

/// The (uuid, luid) pairs a structured request may name: a log, the same
/// uuid under another luid (a reloaded table), another log, and a uuid of
/// the longest length.
pub const TARGETS: [(&[u8], u64); 4] = [
    (b"LVM-fuzzA", 1),
    (b"LVM-fuzzA", 2),
    (b"LVM-fuzzB", 0xffff_8880_dead_beef),
    (
        b"CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
        4,
    ),
];

/// Bytes of the scratch file that serves as the disk logs' device: room
/// for 122880 regions.
pub const DISK_LEN: u64 = 16 * 1024;

/// Tag bits of a chunk.
pub mod tag {
    pub const RAW: u8 = 0;
    pub const REQUEST: u8 = 1;
    pub const COMPACT: u8 = 2;
    pub const MACRO: u8 = 3;
    pub const TARGET_SHIFT: u8 = 2;
    pub const RESERVED_TYPE_BITS: u8 = 1 << 4;
    pub const VERSION_2: u8 = 1 << 5;
    pub const SPLIT_SEQ: u8 = 1 << 6;
}

/// Bits of the CTR builder's `kind` byte.
pub mod kind {
    pub const CORE: u8 = 0;
    pub const DISK: u8 = 1;
    pub const CLUSTERED_CORE: u8 = 2;
    pub const CLUSTERED_DISK: u8 = 3;
    pub const SYNC: u8 = 1 << 2;
    pub const NOSYNC: u8 = 2 << 2;
    pub const NOSYNC_BLOCK_ON_ERROR: u8 = 3 << 2;
    pub const ARG_COUNT: u8 = 1 << 4;
    pub const WITH_NUL: u8 = 1 << 5;
    pub const SHORT_TARGET: u8 = 1 << 6;
    pub const REGION_SIZE_2: u8 = 1 << 7;
}

/// Prelude bits.
pub mod prelude {
    pub const CTR: u8 = 1;
    pub const RESUME: u8 = 2;
}

/// Macros (`body[0] % 5` of a MACRO chunk).
pub mod macros {
    pub const CTR: u8 = 0;
    pub const RESYNC: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const SUSPEND_RESUME: u8 = 3;
    pub const RESTART: u8 = 4;
}

/// Compact region bytes above 250 and what they stand for.
pub mod region {
    pub const LAST_WORK: u8 = 251;
    pub const LAST: u8 = 252;
    pub const COUNT: u8 = 253;
    pub const MAX: u8 = 254;
    pub const BIT32: u8 = 255;
}

/// Region count encoded by the CTR builder's `size` byte: 1..=240, then
/// powers of two from 256 up to 2^23 (over the 1 MiB budget).
pub fn region_count_of(size: u8) -> u64 {
    if size < 0xf0 {
        u64::from(size) + 1
    } else {
        1 << (u32::from(size - 0xf0) + 8)
    }
}

/// The constructor string (and whether it carries the reconnect NUL) the
/// CTR builder makes from `kind` and `size`; `disk` is the device word.
pub fn ctr_text(kind: u8, size: u8, disk: &str) -> Vec<u8> {
    let region_size: u64 = if kind & kind::REGION_SIZE_2 != 0 {
        2
    } else {
        8
    };
    let count = region_count_of(size);
    let mut sectors = count * region_size;
    if kind & kind::SHORT_TARGET != 0 {
        sectors -= 1;
    }
    let type_name = ["core", "disk", "clustered-core", "clustered-disk"][usize::from(kind & 3)];
    let mut args: Vec<String> = Vec::new();
    if kind & 1 == 1 {
        args.push(disk.to_string());
    }
    args.push(region_size.to_string());
    match (kind >> 2) & 3 {
        1 => args.push("sync".into()),
        2 => args.push("nosync".into()),
        3 => {
            args.push("nosync".into());
            args.push("block_on_error".into());
        }
        _ => {}
    }
    let mut text = format!("{sectors} {type_name}");
    if kind & kind::ARG_COUNT != 0 {
        text += &format!(" {}", args.len());
    }
    for a in &args {
        text += " ";
        text += a;
    }
    let mut bytes = text.into_bytes();
    if kind & kind::WITH_NUL != 0 {
        bytes.push(0);
    }
    bytes
}

/// True when a CTR payload names, under any reading the daemon might
/// make of it, a log device other than `ours`. Such a CTR is never fed to
/// the server: as root it would open (and RESUME would write) that device.
pub fn foreign_device(payload: &[u8], ours: &str) -> bool {
    let mut readings: Vec<&[u8]> = vec![payload];
    if let Some((0, text)) = payload.split_last() {
        readings.push(text);
    }
    let trimmed = payload.len() - payload.iter().rev().take_while(|&&b| b == 0).count();
    readings.push(&payload[..trimmed]);
    if let Some(nul) = payload.iter().position(|&b| b == 0) {
        readings.push(&payload[..nul]);
    }
    readings.iter().any(|text| match params::parse(text) {
        Ok(args) => args.device.is_some_and(|d| d != ours),
        Err(_) => false,
    })
}

/// A scratch directory (the server's state directory) and a scratch file
/// (the only device a disk log may use).
pub struct ServerHarness {
    dir: PathBuf,
    disk_path: String,
    disk: File,
}

impl ServerHarness {
    /// Makes the scratch directory `<base>/<name>-<pid>`.
    pub fn new(base: &Path, name: &str) -> Self {
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("state")).expect("create the scratch directory");
        let disk_path = dir.join("disk");
        let disk = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk_path)
            .expect("create the scratch log device");
        let disk_path = disk_path
            .into_os_string()
            .into_string()
            .expect("UTF-8 path");
        assert!(
            !disk_path.bytes().any(|b| b.is_ascii_whitespace()),
            "the scratch path {disk_path:?} must not contain white space"
        );
        ServerHarness {
            dir,
            disk_path,
            disk,
        }
    }

    /// The device word of a disk log on the scratch file.
    pub fn disk_path(&self) -> &str {
        &self.disk_path
    }

    /// Runs one input; panics on any violation.
    pub fn run(&self, input: &[u8]) {
        // Start from nothing: no state files, a zeroed log device.
        let state = self.dir.join("state");
        if let Ok(entries) = fs::read_dir(&state) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        self.disk.set_len(0).expect("truncate the scratch device");
        self.disk
            .set_len(DISK_LEN)
            .expect("size the scratch device");
        let mut run = Run {
            disk_path: &self.disk_path,
            server: new_server(&state),
            state_dir: &state,
            seq: 0,
            last_work: 0,
            budget: MAX_REQUESTS,
            ctr_texts: HashMap::new(),
            saved: HashMap::new(),
        };
        run.program(input);
    }

    /// Deletes the scratch directory.
    pub fn remove(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Most datagrams one input may send (macros repeat).
const MAX_REQUESTS: usize = 4096;
/// Logs up to this many regions get their bitmaps compared in full.
const DEEP_CHECK_REGIONS: u64 = 1 << 16;

fn new_server(state_dir: &Path) -> Server {
    let fd: OwnedFd = File::open(state_dir)
        .expect("open the state directory")
        .into();
    Server::new(
        LIMITS,
        fd.try_clone().expect("dup the state directory"),
        fd,
        Box::new(dm_ulogd::mirrors::FakeMirrors::two_legs()),
    )
}

/// A log as identified by the kernel.
type Key = (Vec<u8>, u64);

/// A live log's bits when its daemon was restarted.
struct Saved {
    ctr: Vec<u8>,
    clean: Vec<u64>,
    sync: Vec<u64>,
}

struct Run<'h> {
    disk_path: &'h str,
    server: Server,
    state_dir: &'h Path,
    seq: u32,
    /// The region of the last GET_RESYNC_WORK that had work.
    last_work: u64,
    budget: usize,
    /// The constructor string (without NUL) of every log created.
    ctr_texts: HashMap<Key, Vec<u8>>,
    /// Logs live at a restart that the kernel has not reconnected since:
    /// a reconnecting CTR with the same string must find these bits.
    saved: HashMap<Key, Saved>,
}

/// A full reply's verdict, for macros.
struct Answer {
    error: i32,
    data: Vec<u8>,
}

/// Reads the input front to back; missing bytes are 0.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// What a log looked like, to prove an error reply changed nothing.
#[derive(PartialEq, Debug)]
struct Snapshot {
    clean: Vec<u64>,
    sync: Vec<u64>,
    sync_count: u64,
}

impl Run<'_> {
    fn program(&mut self, input: &[u8]) {
        let mut r = Reader(input);
        let pre = r.byte();
        let kind = r.byte();
        let size = r.byte();
        if pre & prelude::CTR != 0 {
            self.ctr(0, kind, size, 0);
        }
        if pre & prelude::RESUME != 0 {
            self.request(0, 0, RequestType::Resume as u32, &[]);
        }
        while !r.0.is_empty() && self.budget > 0 {
            let t = r.byte();
            let len = usize::from(u16::from_le_bytes([r.byte(), r.byte()]));
            let body = r.take(len);
            let target = usize::from((t >> tag::TARGET_SHIFT) & 3);
            match t & 3 {
                tag::RAW => {
                    self.send(body);
                }
                tag::REQUEST | tag::COMPACT => {
                    let mut b = Reader(body);
                    let mut type_field = u32::from(b.byte() % 19);
                    if t & tag::RESERVED_TYPE_BITS != 0 {
                        type_field |= 0x5a5a_5a00;
                    }
                    let payload: Vec<u8> = if t & 3 == tag::COMPACT {
                        b.0.iter()
                            .flat_map(|&x| self.region_of(target, x).to_ne_bytes())
                            .collect()
                    } else {
                        b.0.to_vec()
                    };
                    self.request(target, t, type_field, &payload);
                }
                _ => self.macro_chunk(target, t, body),
            }
        }
    }

    /// A compact region byte as a region number of `target`'s log.
    fn region_of(&self, target: usize, x: u8) -> u64 {
        let count = self.log_region_count(target).unwrap_or(1);
        match x {
            region::LAST_WORK => self.last_work,
            region::LAST => count.saturating_sub(1),
            region::COUNT => count,
            region::MAX => u64::MAX,
            region::BIT32 => 1 << 32,
            n => u64::from(n),
        }
    }

    fn log_region_count(&self, target: usize) -> Option<u64> {
        let (uuid, luid) = TARGETS[target];
        let reg = self.server.registry();
        reg.find(uuid, luid).map(|i| reg.get(i).log.region_count())
    }

    fn macro_chunk(&mut self, target: usize, t: u8, body: &[u8]) {
        let mut b = Reader(body);
        match b.byte() % 5 {
            macros::CTR => {
                let kind = b.byte();
                let size = b.byte();
                self.ctr(target, kind, size, t);
            }
            macros::RESYNC => {
                let rounds = b.byte();
                let fail_mask = b.byte();
                for i in 0..rounds {
                    let Some(a) = self.request(target, t, RequestType::GetResyncWork as u32, &[])
                    else {
                        return;
                    };
                    if a.error != 0 || a.data.len() != 16 || u64_at(&a.data, 0) == 0 {
                        return;
                    }
                    let region = u64_at(&a.data, 8);
                    let in_sync = u64::from(fail_mask >> (i % 8) & 1 == 0);
                    let mut p = region.to_ne_bytes().to_vec();
                    p.extend_from_slice(&in_sync.to_ne_bytes());
                    self.request(target, t, RequestType::SetRegionSync as u32, &p);
                }
            }
            macros::WRITE => {
                let regions: Vec<u8> =
                    b.0.iter()
                        .take(32)
                        .flat_map(|&x| self.region_of(target, x).to_ne_bytes())
                        .collect();
                self.request(target, t, RequestType::MarkRegion as u32, &regions);
                self.request(target, t, RequestType::Flush as u32, &[]);
                self.request(target, t, RequestType::ClearRegion as u32, &regions);
                self.request(target, t, RequestType::Flush as u32, &[]);
            }
            macros::RESTART => self.restart(),
            _ => {
                for kind in [
                    RequestType::Presuspend,
                    RequestType::Postsuspend,
                    RequestType::Resume,
                ] {
                    self.request(target, t, kind as u32, &[]);
                }
            }
        }
    }

    /// The daemon dies and starts again on the same state directory.
    fn restart(&mut self) {
        for e in self.server.registry().iter() {
            let log = &e.log;
            let key = (e.uuid.to_vec(), e.luid);
            let Some(ctr) = self.ctr_texts.get(&key) else {
                continue;
            };
            if log.region_count() <= DEEP_CHECK_REGIONS {
                let saved = Saved {
                    ctr: ctr.clone(),
                    clean: log.clean_bits().words().to_vec(),
                    sync: log.sync_bits().words().to_vec(),
                };
                self.saved.insert(key, saved);
            }
        }
        self.server = new_server(self.state_dir);
    }

    fn ctr(&mut self, target: usize, kind: u8, size: u8, t: u8) -> Option<Answer> {
        let text = ctr_text(kind, size, self.disk_path);
        self.request(target, t, RequestType::Ctr as u32, &text)
    }

    /// Builds a request for `target` (tag bits `t` shape it) and sends it.
    fn request(&mut self, target: usize, t: u8, type_field: u32, payload: &[u8]) -> Option<Answer> {
        let (uuid, luid) = TARGETS[target];
        // The largest request the kernel could send; longer payloads are cut.
        let payload = &payload[..payload.len().min(frame::MAX_REQUEST_DATA)];
        let mut buf = vec![0u8; REPLY_DATA_OFFSET + payload.len()];
        self.seq = self.seq.wrapping_add(1);
        let cn_seq = if t & tag::SPLIT_SEQ != 0 {
            self.seq ^ 0x8000_0000
        } else {
            self.seq
        };
        let n = frame::emit_request(&mut buf, cn_seq, luid, uuid, self.seq, type_field, payload);
        if t & tag::VERSION_2 != 0 {
            buf[at::VERSION..at::VERSION + 4].copy_from_slice(&2u32.to_ne_bytes());
        }
        let reply = self.send(&buf[..n])?;
        (reply.len() >= REPLY_DATA_OFFSET).then(|| Answer {
            error: u32_at(&reply, at::ERROR) as i32,
            data: reply[REPLY_DATA_OFFSET..].to_vec(),
        })
    }

    fn snapshot(&self, uuid: &[u8], luid: u64) -> Option<Snapshot> {
        let reg = self.server.registry();
        let log = &reg.get(reg.find(uuid, luid)?).log;
        (log.region_count() <= DEEP_CHECK_REGIONS).then(|| Snapshot {
            clean: log.clean_bits().words().to_vec(),
            sync: log.sync_bits().words().to_vec(),
            sync_count: log.sync_count(),
        })
    }

    /// Feeds one datagram to the server and checks the reply; returns it.
    fn send(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let parsed = frame::parse_request(datagram);
        let mut before = None;
        if let Ok(req) = &parsed {
            let kind = RequestType::from_field(req.request_type_field);
            if kind == Some(RequestType::Ctr) && foreign_device(req.data, self.disk_path) {
                return None;
            }
            before = self.snapshot(req.uuid, req.luid);
        }
        let known_before = parsed
            .as_ref()
            .ok()
            .and_then(|r| self.server.registry().find(r.uuid, r.luid))
            .is_some();

        let mut out = [0u8; REPLY_BUF_LEN];
        let reply = match self.server.handle(datagram, &mut out) {
            Some(n) => {
                assert!(n <= REPLY_BUF_LEN, "reply length {n} past the buffer");
                Some(out[..n].to_vec())
            }
            None => {
                // Parked for device work, which the synchronous engine
                // finishes in `complete`; or dropped (no reply at all).
                let mut replies = Vec::new();
                self.server.complete(&mut |r| replies.push(r.to_vec()));
                assert!(replies.len() <= 1, "one request, one reply");
                replies.pop()
            }
        };

        match parsed {
            Err(Rejection::Drop(reason)) => {
                assert!(
                    reply.is_none(),
                    "a dropped datagram ({reason}) was answered"
                );
            }
            Err(Rejection::Ack { seq, errno, .. }) => {
                let r = reply
                    .as_deref()
                    .expect("a malformed request must be acknowledged");
                check_headers(r, seq);
                assert_eq!(r.len(), REQUEST_OFFSET, "a bare ack has no payload");
                assert_eq!(u32_at(r, at::CN_ACK), errno as u32);
                assert!(errno > 0);
            }
            Err(Rejection::Reply { cn_seq, errno, .. }) => {
                let r = reply
                    .as_deref()
                    .expect("a malformed request must be answered");
                check_full_reply(r, &datagram[REQUEST_OFFSET..REPLY_DATA_OFFSET], cn_seq);
                assert_eq!(u32_at(r, at::ERROR) as i32, -errno);
                assert_eq!(u32_at(r, at::DATA_SIZE), 0);
            }
            Ok(req) => {
                let r = reply
                    .as_deref()
                    .expect("a well-formed request must be answered");
                check_full_reply(r, req.header, req.cn_seq);
                self.check_answer(&req, r, known_before, before);
            }
        }
        self.check_logs();
        reply
    }

    /// The meaning of a full reply to a well-formed request.
    fn check_answer(
        &mut self,
        req: &frame::Request<'_>,
        reply: &[u8],
        known_before: bool,
        before: Option<Snapshot>,
    ) {
        use RequestType::*;
        let error = u32_at(reply, at::ERROR) as i32;
        let data = &reply[REPLY_DATA_OFFSET..];
        let kind = RequestType::from_field(req.request_type_field);
        let room = reply_room(kind, req.data);
        assert!(
            data.len() <= room,
            "{kind:?}: reply data_size {} exceeds the kernel's buffer of {room}",
            data.len()
        );
        if error != 0 {
            assert!(error < 0, "error {error} must be a negative errno");
            if error == -libc::ESRCH {
                // -ESRCH fills the kernel's buffer with zeros so the
                // reconnect path's resend keeps its reply room.
                assert_eq!(
                    data.len(),
                    dm_ulogd::server::esrch_reply_len(req.request_type_field),
                    "-ESRCH must keep the kernel's reply room"
                );
                assert!(data.iter().all(|&b| b == 0), "-ESRCH data must be zero");
            } else {
                assert!(data.is_empty(), "an error reply carries data");
            }
        }
        let Some(kind) = kind else {
            assert_eq!(error, -libc::EINVAL, "unknown type");
            return;
        };
        if !known_before && matches!(kind, Presuspend | Postsuspend | Resume) {
            // Sent outside the kernel's reconnect path: -ESRCH would only
            // fail the suspend or resume, so nothing to do is success.
            assert_eq!(error, 0, "{kind:?} for an unknown log");
            return;
        }
        if !known_before && !matches!(kind, Ctr | Dtr) {
            assert_eq!(error, -libc::ESRCH, "{kind:?} for an unknown log");
            return;
        }
        let reg = self.server.registry();
        let live = reg.find(req.uuid, req.luid).map(|i| &reg.get(i).log);
        let key = || (req.uuid.to_vec(), req.luid);
        match kind {
            Ctr if !known_before => {
                let (text, reconnect) = match req.data.split_last() {
                    Some((0, text)) => (text, true),
                    _ => (req.data, false),
                };
                let saved = self.saved.remove(&key());
                if error == 0 {
                    self.ctr_texts.insert(key(), text.to_vec());
                }
                if let (Some(log), Some(saved), true) = (live, saved, reconnect)
                    && saved.ctr == text
                {
                    // A previous daemon served this log: its bits are back.
                    assert_eq!(
                        log.clean_bits().words(),
                        &saved.clean[..],
                        "clean bits lost across a restart"
                    );
                    assert_eq!(
                        log.sync_bits().words(),
                        &saved.sync[..],
                        "sync bits lost across a restart"
                    );
                }
            }
            Dtr => {
                // A DTR also deletes the state a previous daemon left for
                // a log not yet reconnected: the table is gone.
                self.saved.remove(&key());
                if known_before {
                    self.ctr_texts.remove(&key());
                }
            }
            _ => {}
        }
        match kind {
            Ctr => {
                if known_before {
                    assert_eq!(error, 0, "CTR of a live log must succeed");
                }
                if error == 0 {
                    assert!(live.is_some(), "CTR succeeded but no log is live");
                    if let Some((last, text)) = data.split_last() {
                        assert_eq!(*last, 0, "CTR reply must be NUL-terminated");
                        assert!(!text.contains(&0));
                    }
                    // A table's first CTR builds a new log as the kernel
                    // does: all clean; all in sync with nosync, else none.
                    if let (false, Some(log)) = (known_before, live)
                        && req.data.last() != Some(&0)
                        && log.region_count() <= DEEP_CHECK_REGIONS
                    {
                        let count = log.region_count();
                        let nosync =
                            params::parse(req.data).is_ok_and(|a| a.sync == params::SyncMode::No);
                        assert_eq!(
                            log.clean_bits().count_ones(),
                            count,
                            "new log not all clean"
                        );
                        let want = if nosync { count } else { 0 };
                        assert_eq!(log.sync_count(), want, "new log's sync count");
                        assert_eq!(log.sync_bits().count_ones(), want, "new log's sync bits");
                    }
                } else {
                    assert!(live.is_none(), "CTR failed but a log is live");
                }
            }
            Dtr => {
                assert_eq!(error, 0, "DTR always succeeds");
                assert!(live.is_none(), "log still live after DTR");
            }
            _ => {}
        }
        if error != 0 {
            // A refused request changes nothing (a disk log's device I/O may
            // fail half way, which is reported, not undone).
            let io = matches!(kind, Flush | Resume | Postsuspend)
                && live.is_some_and(|l| l.disk().is_some());
            if !io && let Some(before) = before {
                let after = self.snapshot(req.uuid, req.luid);
                assert_eq!(
                    Some(before),
                    after,
                    "{kind:?} failed with {error} but changed the log"
                );
            }
            return;
        }
        let Some(log) = live else {
            return;
        };
        let count = log.region_count();
        let arg = |i: usize| u64_at(req.data, 8 * i);
        let word = |i: usize| u64_at(data, 8 * i);
        match kind {
            GetRegionSize => {
                assert_eq!(data.len(), 8);
                assert_eq!(word(0), u64::from(log.region_size()));
            }
            IsClean | InSync => {
                assert_eq!(data.len(), 8);
                let v = word(0);
                assert!(v <= 1, "{kind:?} answered {v}: the kernel tests == 1");
                assert!(arg(0) < count);
                let state = if kind == IsClean {
                    log.is_clean(arg(0))
                } else {
                    log.in_sync(arg(0))
                };
                assert_eq!(v, u64::from(state));
            }
            GetSyncCount => {
                assert_eq!(data.len(), 8);
                assert_eq!(word(0), log.sync_count());
                assert!(word(0) <= count);
            }
            GetResyncWork => {
                assert_eq!(data.len(), 16);
                assert!(word(0) <= 1, "have_work {}", word(0));
                if word(0) == 1 {
                    let r = word(1);
                    assert!(r < count, "resync work {r} past {count} regions");
                    assert!(!log.in_sync(r), "resync work {r} is already in sync");
                    self.last_work = r;
                }
            }
            IsRemoteRecovering => {
                assert_eq!(data.len(), 16);
                assert_eq!(word(0), 0, "single node: nothing recovers remotely");
                let hint = word(1);
                // region_count only when every region is in sync, else
                // region_count - 1: the kernel throttles no write below it.
                let all = log.sync_count() == count;
                assert_eq!(
                    hint,
                    if all { count } else { count - 1 },
                    "in_sync_hint with {} of {count} in sync",
                    log.sync_count()
                );
            }
            StatusInfo | StatusTable => {
                let (last, text) = data.split_last().expect("status text");
                assert_eq!(*last, 0, "status text must be NUL-terminated");
                assert!(text.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
                if kind == StatusInfo {
                    let want = if log.disk().is_some() { b"3 " } else { b"1 " };
                    assert!(
                        text.starts_with(want),
                        "{:?}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
            MarkRegion | Flush => {
                for i in 0..req.data.len() / 8 {
                    assert!(!log.is_clean(arg(i)), "region {} marked but clean", arg(i));
                }
            }
            ClearRegion => {
                for i in 0..req.data.len() / 8 {
                    assert!(log.is_clean(arg(i)), "region {} cleared but dirty", arg(i));
                }
            }
            SetRegionSync => {
                assert_eq!(log.in_sync(arg(0)), arg(1) != 0);
            }
            _ => {}
        }
    }

    /// Invariants of every live log and of the registry.
    fn check_logs(&self) {
        let reg = self.server.registry();
        assert!(reg.len() <= LIMITS.max_logs, "more logs than --max-logs");
        assert!(
            reg.used_bytes() <= LIMITS.memory_budget,
            "over the memory budget"
        );
        for e in reg.iter() {
            let log = &e.log;
            let count = log.region_count();
            assert_eq!(log.clean_bits().len(), count);
            assert_eq!(log.sync_bits().len(), count);
            assert!(log.sync_count() <= count);
            if count <= DEEP_CHECK_REGIONS {
                assert_eq!(
                    log.sync_count(),
                    log.sync_bits().count_ones(),
                    "sync_count disagrees with the sync bits"
                );
            }
        }
    }
}

/// A full reply to a request whose header was `header`: the header echoed
/// but for error and data_size, data_size matching the length.
fn check_full_reply(reply: &[u8], header: &[u8], cn_seq: u32) {
    check_headers(reply, cn_seq);
    assert!(
        reply.len() >= REPLY_DATA_OFFSET,
        "a full reply holds a request header"
    );
    assert_eq!(u32_at(reply, at::CN_ACK), 0, "cn ack of a full reply");
    assert_eq!(
        &reply[REQUEST_OFFSET..at::ERROR],
        &header[..at::ERROR - REQUEST_OFFSET],
        "luid, uuid, version echoed"
    );
    assert_eq!(
        &reply[at::SEQ..at::DATA_SIZE],
        &header[at::SEQ - REQUEST_OFFSET..at::DATA_SIZE - REQUEST_OFFSET],
        "seq and request type echoed"
    );
    assert_eq!(
        u32_at(reply, at::DATA_SIZE) as usize,
        reply.len() - REPLY_DATA_OFFSET,
        "data_size"
    );
}

// ---------------------------------------------------------------------------
// Building inputs (for the seed corpus and for tests).

/// Builds a `server` input.
pub struct Input(pub Vec<u8>);

impl Input {
    /// An input with the given prelude.
    pub fn new(pre: u8, kind: u8, size: u8) -> Self {
        Input(vec![pre, kind, size])
    }
    fn chunk(mut self, t: u8, body: &[u8]) -> Self {
        let len = u16::try_from(body.len()).expect("a chunk holds at most 65535 bytes");
        self.0.push(t);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(body);
        self
    }
    pub fn raw(self, datagram: &[u8]) -> Self {
        self.chunk(tag::RAW, datagram)
    }
    /// A request of type `ty` with the payload as is; `flags` are extra tag bits.
    pub fn request(self, target: u8, flags: u8, ty: u8, payload: &[u8]) -> Self {
        let mut body = vec![ty];
        body.extend_from_slice(payload);
        self.chunk(tag::REQUEST | target << tag::TARGET_SHIFT | flags, &body)
    }
    /// A request of type `ty` whose payload bytes are compact regions.
    pub fn regions(self, target: u8, flags: u8, ty: u8, regions: &[u8]) -> Self {
        let mut body = vec![ty];
        body.extend_from_slice(regions);
        self.chunk(tag::COMPACT | target << tag::TARGET_SHIFT | flags, &body)
    }
    pub fn macro_op(self, target: u8, flags: u8, body: &[u8]) -> Self {
        self.chunk(tag::MACRO | target << tag::TARGET_SHIFT | flags, body)
    }
}

//! The protocol through `Server::handle`, with every reply checked byte by
//! byte against what the kernel expects (PROTOCOL.md sections 2-7): no
//! socket, no kernel, no privileges.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use dm_ulogd::mirrors::FakeMirrors;
use dm_ulogd::server::{ExitVerdict, Limits, Server};
use dm_ulogd::wire::frame::{self, REPLY_BUF_LEN, REPLY_DATA_OFFSET, REQUEST_OFFSET};

const CTR: u32 = 1;
const DTR: u32 = 2;
const PRESUSPEND: u32 = 3;
const POSTSUSPEND: u32 = 4;
const RESUME: u32 = 5;
const GET_REGION_SIZE: u32 = 6;
const IS_CLEAN: u32 = 7;
const IN_SYNC: u32 = 8;
const FLUSH: u32 = 9;
const MARK_REGION: u32 = 10;
const CLEAR_REGION: u32 = 11;
const GET_RESYNC_WORK: u32 = 12;
const SET_REGION_SYNC: u32 = 13;
const GET_SYNC_COUNT: u32 = 14;
const STATUS_INFO: u32 = 15;
const STATUS_TABLE: u32 = 16;
const IS_REMOTE_RECOVERING: u32 = 17;

const EINVAL: i32 = 22;
const ENOMEM: i32 = 12;
const ESRCH: i32 = 3;

const UUID: &[u8] = b"LVM-protocol-test-0001";
const LUID: u64 = 0xffff_8881_0000_1000;

/// A scratch directory of this test binary, empty.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("protocol")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// A request datagram in kernel layout.
fn request(seq: u32, uuid: &[u8], luid: u64, type_field: u32, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; REPLY_DATA_OFFSET + data.len()];
    let n = frame::emit_request(&mut buf, seq, luid, uuid, seq, type_field, data);
    assert_eq!(n, buf.len());
    buf
}

/// Checks the bytes of a full reply to `req`: nlmsghdr (len, NLMSG_DONE,
/// no flags, pid 0), cn_msg {7, 1, the request's seq, ack 0, 160 +
/// data_size, no flags}, the request header echoed with `error` and
/// `data_size` set, then the data. Returns (error, data).
fn check_full_reply(req: &[u8], reply: &[u8]) -> (i32, Vec<u8>) {
    assert!(
        reply.len() >= REPLY_DATA_OFFSET,
        "a full reply has a request header: {} bytes",
        reply.len()
    );
    let data_size = u32_at(reply, REQUEST_OFFSET + 156) as usize;
    let error = u32_at(reply, REQUEST_OFFSET + 144) as i32;
    let mut want = req[..REPLY_DATA_OFFSET].to_vec();
    want[0..4].copy_from_slice(&((REPLY_DATA_OFFSET + data_size) as u32).to_ne_bytes());
    want[4..6].copy_from_slice(&3u16.to_ne_bytes());
    want[6..8].copy_from_slice(&0u16.to_ne_bytes());
    // nlmsg_seq is not read by the kernel: take it as sent.
    want[8..12].copy_from_slice(&reply[8..12]);
    want[12..16].copy_from_slice(&0u32.to_ne_bytes());
    want[16..20].copy_from_slice(&7u32.to_ne_bytes());
    want[20..24].copy_from_slice(&1u32.to_ne_bytes());
    want[28..32].copy_from_slice(&0u32.to_ne_bytes());
    want[32..34].copy_from_slice(&((160 + data_size) as u16).to_ne_bytes());
    want[34..36].copy_from_slice(&0u16.to_ne_bytes());
    want[REQUEST_OFFSET + 144..REQUEST_OFFSET + 148].copy_from_slice(&error.to_ne_bytes());
    want[REQUEST_OFFSET + 156..REQUEST_OFFSET + 160]
        .copy_from_slice(&(data_size as u32).to_ne_bytes());
    assert_eq!(
        &reply[..REPLY_DATA_OFFSET],
        &want[..],
        "reply headers differ from the request's"
    );
    assert_eq!(reply.len(), REPLY_DATA_OFFSET + data_size, "reply length");
    if error != 0 && error != -ESRCH {
        assert_eq!(data_size, 0, "an error reply carries no data");
    }
    (error, reply[REPLY_DATA_OFFSET..].to_vec())
}

/// Checks a bare acknowledgement of connector seq `seq` with `errno`.
fn check_ack(reply: &[u8], seq: u32, errno: i32) {
    assert_eq!(reply.len(), 36, "a bare ack is nlmsghdr + cn_msg");
    assert_eq!(u32_at(reply, 0), 36);
    assert_eq!(u16::from_ne_bytes([reply[4], reply[5]]), 3);
    assert_eq!(u32_at(reply, 12), 0, "nlmsg_pid");
    assert_eq!(u32_at(reply, 16), 7);
    assert_eq!(u32_at(reply, 20), 1);
    assert_eq!(u32_at(reply, 24), seq, "cn seq");
    assert_eq!(u32_at(reply, 28), errno as u32, "cn ack");
    assert_eq!(&reply[32..36], &[0, 0, 0, 0], "cn len and flags");
}

struct Daemon {
    server: Server,
    seq: u32,
}

impl Daemon {
    fn new(name: &str, limits: Limits) -> Self {
        let dir = scratch(name).join("state");
        fs::create_dir_all(&dir).unwrap();
        Self::over(&dir, limits, FakeMirrors::two_legs())
    }

    /// A daemon over an existing state directory: a restart when another
    /// daemon used it before.
    fn over(dir: &Path, limits: Limits, mirrors: FakeMirrors) -> Self {
        let fd: OwnedFd = fs::File::open(dir).unwrap().into();
        Daemon {
            server: Server::new(limits, fd.try_clone().unwrap(), fd, Box::new(mirrors)),
            seq: 100,
        }
    }

    fn with_defaults(name: &str) -> Self {
        Self::new(
            name,
            Limits {
                max_logs: 16,
                memory_budget: 16 << 20,
            },
        )
    }

    /// Handles a raw datagram; the reply's bytes, if any.
    fn raw(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut out = [0u8; REPLY_BUF_LEN];
        match self.server.handle(datagram, &mut out) {
            Some(n) => {
                assert!(n <= REPLY_BUF_LEN);
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
        }
    }

    /// One request to (uuid, luid); returns (error, data) after checking the
    /// reply's bytes.
    fn call_to(&mut self, uuid: &[u8], luid: u64, type_field: u32, data: &[u8]) -> (i32, Vec<u8>) {
        self.seq += 1;
        let req = request(self.seq, uuid, luid, type_field, data);
        let reply = self
            .raw(&req)
            .unwrap_or_else(|| panic!("no reply to request type {type_field:#x}"));
        check_full_reply(&req, &reply)
    }

    fn call(&mut self, type_field: u32, data: &[u8]) -> (i32, Vec<u8>) {
        self.call_to(UUID, LUID, type_field, data)
    }

    /// A request that must succeed; returns its data.
    fn ok(&mut self, type_field: u32, data: &[u8]) -> Vec<u8> {
        let (error, reply) = self.call(type_field, data);
        assert_eq!(error, 0, "request type {type_field} failed");
        reply
    }

    /// A request answering one u64 (8 bytes of data exactly).
    fn word(&mut self, type_field: u32, data: &[u8]) -> u64 {
        let reply = self.ok(type_field, data);
        assert_eq!(reply.len(), 8, "request type {type_field}: data_size");
        u64_at(&reply, 0)
    }

    /// IS_CLEAN / IN_SYNC of one region: exactly 0 or 1.
    fn bit(&mut self, type_field: u32, region: u64) -> bool {
        match self.word(type_field, &u64s(&[region])) {
            0 => false,
            1 => true,
            v => panic!("request type {type_field} answered {v}: the kernel tests == 1"),
        }
    }

    fn is_clean(&mut self, region: u64) -> bool {
        self.bit(IS_CLEAN, region)
    }

    fn in_sync(&mut self, region: u64) -> bool {
        self.bit(IN_SYNC, region)
    }

    /// A 16-byte reply as two words.
    fn pair(&mut self, type_field: u32, data: &[u8]) -> (u64, u64) {
        let reply = self.ok(type_field, data);
        assert_eq!(reply.len(), 16, "request type {type_field}: data_size");
        (u64_at(&reply, 0), u64_at(&reply, 8))
    }

    /// CTR + RESUME of a log that must be accepted.
    fn start(&mut self, table: &[u8]) {
        let (error, data) = self.call(CTR, table);
        assert_eq!(error, 0, "CTR {:?} refused", String::from_utf8_lossy(table));
        assert_eq!(data, b"", "a core log's CTR replies no data");
        self.ok(RESUME, &[]);
    }
}

#[test]
fn ctr_of_a_core_log_replies_data_size_0() {
    for table in [
        &b"2048 core 1 8"[..],
        b"2048 core 2 8 nosync",
        b"2048 core 8 sync",
        b"2048 clustered-core 1 8",
        b"2048 clustered-core 8 nosync block_on_error",
    ] {
        let mut d = Daemon::with_defaults("ctr-core");
        let (error, data) = d.call(CTR, table);
        assert_eq!(error, 0, "{}", String::from_utf8_lossy(table));
        assert!(data.is_empty());
        assert_eq!(d.word(GET_REGION_SIZE, &[]), 8);
    }
}

#[test]
fn reconnect_ctr_with_nul_replies_data_size_0() {
    let mut d = Daemon::with_defaults("ctr-reconnect");
    // A log this daemon does not hold, reconnected by the kernel.
    let (error, data) = d.call(CTR, b"2048 core 1 8\0");
    assert_eq!(error, 0);
    assert!(data.is_empty(), "the reconnect CTR has no reply buffer");
    d.ok(RESUME, &[]);
    assert_eq!(d.word(GET_REGION_SIZE, &[]), 8);
    // And the same for a live log.
    let (error, data) = d.call(CTR, b"2048 core 1 8\0");
    assert_eq!(error, 0);
    assert!(data.is_empty());
}

#[test]
fn ctr_of_a_live_log_succeeds_and_changes_nothing() {
    let mut d = Daemon::with_defaults("ctr-live");
    d.start(b"800 core 2 8 nosync");
    d.ok(MARK_REGION, &u64s(&[3]));
    for table in [&b"800 core 2 8 nosync"[..], b"800 core 2 8 nosync\0"] {
        let (error, data) = d.call(CTR, table);
        assert_eq!(error, 0, "a CTR of a live log must succeed");
        assert!(data.is_empty());
        assert!(!d.is_clean(3), "the live log's marks were lost");
        assert!(d.is_clean(4));
        assert!(d.in_sync(3));
        assert_eq!(d.word(GET_SYNC_COUNT, &[]), 100);
        assert_eq!(d.server.registry().len(), 1);
    }
}

#[test]
fn get_region_size() {
    let mut d = Daemon::with_defaults("region-size");
    d.start(b"4096 core 1 1024");
    let reply = d.ok(GET_REGION_SIZE, &[]);
    assert_eq!(reply, 1024u64.to_ne_bytes());
}

#[test]
fn mark_clear_flush_is_clean_in_sync() {
    let mut d = Daemon::with_defaults("mark-clear");
    d.start(b"160 core 1 8");
    // New core log, default sync: all clean, none in sync.
    for r in 0..20 {
        assert!(d.is_clean(r));
        assert!(!d.in_sync(r));
    }
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), 0);
    assert!(d.ok(MARK_REGION, &u64s(&[1, 2, 19])).is_empty());
    assert!(d.ok(FLUSH, &[]).is_empty());
    assert!(!d.is_clean(1) && !d.is_clean(2) && !d.is_clean(19));
    assert!(d.is_clean(0) && d.is_clean(3));
    assert!(d.ok(CLEAR_REGION, &u64s(&[2])).is_empty());
    assert!(d.is_clean(2));
    assert!(!d.is_clean(1));
    // Integrated flush: the marks ride in the FLUSH.
    assert!(d.ok(FLUSH, &u64s(&[7, 8])).is_empty());
    assert!(!d.is_clean(7) && !d.is_clean(8));
    // Marking twice and clearing once: clear wins (the kernel's bit semantics).
    d.ok(MARK_REGION, &u64s(&[5, 5]));
    d.ok(CLEAR_REGION, &u64s(&[5]));
    assert!(d.is_clean(5));
    // Idempotent resends.
    d.ok(CLEAR_REGION, &u64s(&[5]));
    assert!(d.is_clean(5));
    // A log with nosync starts in sync.
    let mut n = Daemon::with_defaults("mark-clear-nosync");
    n.start(b"160 core 2 8 nosync");
    assert!(n.in_sync(0) && n.in_sync(19));
    assert_eq!(n.word(GET_SYNC_COUNT, &[]), 20);
    // Suspend and resume keep the bits of a core log.
    d.ok(PRESUSPEND, &[]);
    d.ok(POSTSUSPEND, &[]);
    d.ok(RESUME, &[]);
    assert!(!d.is_clean(1) && d.is_clean(2));
}

#[test]
fn resync_work_drives_the_log_to_full_sync() {
    let mut d = Daemon::with_defaults("resync");
    // 75 sectors in regions of 8: 10 regions, the last one short.
    d.start(b"75 core 1 8");
    let count = 10;
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), 0);
    let mut handed_out = Vec::new();
    loop {
        let (recovering, hint) = d.pair(IS_REMOTE_RECOVERING, &u64s(&[0]));
        assert_eq!(recovering, 0, "one node: nothing recovers elsewhere");
        let synced = d.word(GET_SYNC_COUNT, &[]);
        if synced < count {
            // As high as it can be without ending the resync: writes to
            // every other region go on without the kernel's 250 ms throttle.
            assert_eq!(hint, count - 1, "in_sync_hint with {synced} in sync");
        } else {
            assert_eq!(hint, count);
        }
        let (have_work, region) = d.pair(GET_RESYNC_WORK, &[]);
        assert!(have_work <= 1);
        if have_work == 0 {
            break;
        }
        assert!(region < count);
        assert!(!d.in_sync(region));
        handed_out.push(region);
        assert!(d.ok(SET_REGION_SYNC, &u64s(&[region, 1])).is_empty());
        assert!(d.in_sync(region));
        // A resend of the same SET_REGION_SYNC changes nothing.
        d.ok(SET_REGION_SYNC, &u64s(&[region, 1]));
        assert_eq!(d.word(GET_SYNC_COUNT, &[]), synced + 1);
    }
    assert_eq!(handed_out, (0..count).collect::<Vec<_>>());
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), count);
    assert_eq!(d.pair(IS_REMOTE_RECOVERING, &u64s(&[9])), (0, count));
    assert_eq!(d.pair(GET_RESYNC_WORK, &[]).0, 0);

    // A failed recovery takes a region out of sync again.
    d.ok(SET_REGION_SYNC, &u64s(&[4, 0]));
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), count - 1);
    assert!(!d.in_sync(4));
    assert_eq!(d.pair(IS_REMOTE_RECOVERING, &u64s(&[0])), (0, count - 1));
    // The scan moves forward only until the next resume.
    assert_eq!(d.pair(GET_RESYNC_WORK, &[]).0, 0);
    d.ok(RESUME, &[]);
    assert_eq!(d.pair(GET_RESYNC_WORK, &[]), (1, 4));
    d.ok(SET_REGION_SYNC, &u64s(&[4, 1]));
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), count);
}

#[test]
fn status_info_of_a_core_log() {
    let mut d = Daemon::with_defaults("status");
    d.start(b"800 core 1 8");
    assert_eq!(d.ok(STATUS_INFO, &[]), b"1 core\0");
    let table = d.ok(STATUS_TABLE, &[]);
    assert_eq!(table.last(), Some(&0), "status table is NUL-terminated");
    let mut c = Daemon::with_defaults("status-clustered");
    c.start(b"800 clustered-core 8 nosync");
    assert_eq!(c.ok(STATUS_INFO, &[]), b"1 clustered-core\0");
}

#[test]
fn requests_for_an_unknown_log_get_esrch_and_dtr_succeeds() {
    let mut d = Daemon::with_defaults("unknown");
    d.start(b"800 core 1 8");
    let region = u64s(&[1]);
    let cases: &[(u32, &[u8])] = &[
        (GET_REGION_SIZE, &[]),
        (IS_CLEAN, &region),
        (IN_SYNC, &region),
        (FLUSH, &[]),
        (MARK_REGION, &region),
        (CLEAR_REGION, &region),
        (GET_RESYNC_WORK, &[]),
        (SET_REGION_SYNC, &u64s(&[1, 1])),
        (GET_SYNC_COUNT, &[]),
        (STATUS_INFO, &[]),
        (STATUS_TABLE, &[]),
        (IS_REMOTE_RECOVERING, &region),
    ];
    // Another uuid, and the same uuid under another luid.
    for (uuid, luid) in [(&b"LVM-nobody"[..], LUID), (UUID, LUID + 1)] {
        for &(ty, data) in cases {
            let (error, reply) = d.call_to(uuid, luid, ty, data);
            assert_eq!(error, -ESRCH, "request type {ty} for an unknown log");
            // Zeroed data the size of the kernel's reply buffer, which its
            // reconnect path would otherwise shrink to 0 for the resend.
            assert_eq!(reply.len(), dm_ulogd::server::esrch_reply_len(ty));
            assert!(reply.iter().all(|&b| b == 0));
        }
        // Suspend and resume come outside the kernel's reconnect path
        // (-ESRCH would only fail them): nothing to do, success.
        for ty in [PRESUSPEND, POSTSUSPEND, RESUME] {
            assert_eq!(d.call_to(uuid, luid, ty, &[]), (0, vec![]));
        }
        assert_eq!(d.call_to(uuid, luid, DTR, &[]), (0, vec![]));
    }
    // The live log is untouched; DTR of it, then again (a resend).
    assert!(d.is_clean(1));
    assert_eq!(d.call(DTR, &[]), (0, vec![]));
    assert_eq!(d.call(DTR, &[]), (0, vec![]));
    assert_eq!(d.call(GET_REGION_SIZE, &[]).0, -ESRCH);
}

#[test]
fn regions_past_the_end_are_refused_and_change_nothing() {
    let mut d = Daemon::with_defaults("past-end");
    d.start(b"80 core 1 8"); // 10 regions
    d.ok(MARK_REGION, &u64s(&[2]));
    let before = |d: &mut Daemon| {
        (
            (0..10).map(|r| d.is_clean(r)).collect::<Vec<_>>(),
            (0..10).map(|r| d.in_sync(r)).collect::<Vec<_>>(),
            d.word(GET_SYNC_COUNT, &[]),
        )
    };
    let state = before(&mut d);
    for bad in [10u64, 11, 1 << 32, u64::MAX] {
        let one = u64s(&[bad]);
        for ty in [
            IS_CLEAN,
            IN_SYNC,
            IS_REMOTE_RECOVERING,
            MARK_REGION,
            CLEAR_REGION,
            FLUSH,
        ] {
            assert_eq!(
                d.call(ty, &one),
                (-EINVAL, vec![]),
                "type {ty} region {bad}"
            );
        }
        assert_eq!(d.call(SET_REGION_SYNC, &u64s(&[bad, 1])), (-EINVAL, vec![]));
    }
    assert_eq!(before(&mut d), state, "a refused request changed the log");
}

#[test]
fn a_batch_with_one_bad_region_changes_nothing() {
    let mut d = Daemon::with_defaults("bad-batch");
    d.start(b"80 core 1 8"); // 10 regions
    d.ok(MARK_REGION, &u64s(&[6, 7]));
    for ty in [MARK_REGION, FLUSH] {
        assert_eq!(d.call(ty, &u64s(&[1, 2, 10, 3])), (-EINVAL, vec![]));
        assert!(d.is_clean(1) && d.is_clean(2) && d.is_clean(3));
    }
    assert_eq!(d.call(CLEAR_REGION, &u64s(&[6, 99, 7])), (-EINVAL, vec![]));
    assert!(!d.is_clean(6) && !d.is_clean(7));
    // Payloads whose size is not a whole number of regions.
    assert_eq!(d.call(MARK_REGION, &[1, 0, 0, 0]), (-EINVAL, vec![]));
    assert_eq!(d.call(IS_CLEAN, &[1, 0, 0, 0]), (-EINVAL, vec![]));
    assert_eq!(d.call(IS_CLEAN, &u64s(&[1, 2])), (-EINVAL, vec![]));
    assert_eq!(d.call(SET_REGION_SYNC, &u64s(&[1])), (-EINVAL, vec![]));
    assert!(d.is_clean(1));
    assert!(!d.in_sync(1));
}

#[test]
fn bad_table_strings_are_refused_with_einval() {
    let mut d = Daemon::with_defaults("bad-tables");
    let tables: &[&[u8]] = &[
        b"",
        b"\0",
        b"x core 1 8",
        b"0 core 1 8",
        b"-8 core 1 8",
        b"100",
        b"100 mirror 1 8",
        b"100 core",
        b"100 core 0",
        b"100 core 1 0",
        b"100 core 1 1",
        b"100 core 1 24",
        b"100 core 1 128",
        b"100 core 1 abc",
        b"100 core 2 8 fast",
        b"100 core 3 8 sync nosync",
        b"100 core 8 sync nosync",
        b"100 core 5 8 sync block_on_error x y",
        b"100 disk 1 8",
        b"100 clustered-disk 8",
        b"99999999999999 core 1 2",
        b"100 core 1 8\xff",
    ];
    for table in tables {
        let (error, data) = d.call(CTR, table);
        assert_eq!(error, -EINVAL, "CTR {:?}", String::from_utf8_lossy(table));
        assert!(data.is_empty());
        assert_eq!(
            d.call(GET_REGION_SIZE, &[]).0,
            -ESRCH,
            "a refused CTR left a log"
        );
    }
    assert_eq!(d.server.registry().len(), 0);
    // A device that cannot be opened is refused too (with open's errno).
    let (error, _) = d.call(CTR, b"100 disk 2 /nonexistent/dm-ulogd/log 8");
    assert!(error < 0, "CTR on a missing device: {error}");
    assert_eq!(d.server.registry().len(), 0);
    // An empty uuid names no table.
    assert_eq!(d.call_to(b"", 1, CTR, b"100 core 1 8").0, -EINVAL);
}

#[test]
fn max_logs_exhaustion_is_enomem_and_others_keep_being_served() {
    let mut d = Daemon::new(
        "max-logs",
        Limits {
            max_logs: 2,
            memory_budget: 16 << 20,
        },
    );
    assert_eq!(d.call_to(b"LVM-a", 1, CTR, b"800 core 1 8").0, 0);
    assert_eq!(d.call_to(b"LVM-b", 2, CTR, b"800 core 1 8").0, 0);
    assert_eq!(
        d.call_to(b"LVM-c", 3, CTR, b"800 core 1 8"),
        (-ENOMEM, vec![])
    );
    assert_eq!(d.call_to(b"LVM-c", 3, GET_REGION_SIZE, &[]).0, -ESRCH);
    // The live ones are served, and a CTR of a live log still succeeds.
    assert_eq!(d.call_to(b"LVM-a", 1, RESUME, &[]), (0, vec![]));
    assert_eq!(
        d.call_to(b"LVM-a", 1, MARK_REGION, &u64s(&[1])),
        (0, vec![])
    );
    assert_eq!(d.call_to(b"LVM-b", 2, CTR, b"800 core 1 8"), (0, vec![]));
    assert_eq!(
        d.call_to(b"LVM-b", 2, GET_REGION_SIZE, &[]),
        (0, 8u64.to_ne_bytes().to_vec())
    );
    // Room again after a DTR.
    assert_eq!(d.call_to(b"LVM-a", 1, DTR, &[]).0, 0);
    assert_eq!(d.call_to(b"LVM-c", 3, CTR, b"800 core 1 8").0, 0);
}

#[test]
fn memory_budget_exhaustion_is_enomem_and_others_keep_being_served() {
    // Two bitmaps of 4096 regions take 1 KiB: exactly the budget.
    let mut d = Daemon::new(
        "budget",
        Limits {
            max_logs: 16,
            memory_budget: 1024,
        },
    );
    assert_eq!(
        d.call_to(b"LVM-huge", 1, CTR, b"1073741824 core 1 2"),
        (-ENOMEM, vec![])
    );
    assert_eq!(d.call_to(b"LVM-a", 2, CTR, b"32768 core 1 8"), (0, vec![]));
    assert_eq!(
        d.call_to(b"LVM-b", 3, CTR, b"16 core 1 8"),
        (-ENOMEM, vec![])
    );
    assert_eq!(d.call_to(b"LVM-a", 2, RESUME, &[]).0, 0);
    assert_eq!(
        d.call_to(b"LVM-a", 2, GET_SYNC_COUNT, &[]),
        (0, 0u64.to_ne_bytes().to_vec())
    );
    assert_eq!(d.call_to(b"LVM-a", 2, DTR, &[]).0, 0);
    assert_eq!(d.call_to(b"LVM-b", 3, CTR, b"16 core 1 8"), (0, vec![]));
}

#[test]
fn malformed_frames_are_dropped_or_answered_as_frame_rs_says() {
    let mut d = Daemon::with_defaults("malformed");
    d.start(b"800 core 1 8");
    let good = request(77, UUID, LUID, IS_CLEAN, &u64s(&[5]));
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };

    // Dropped: not ours or unreadable.
    let dropped: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated nlmsghdr", good[..10].to_vec()),
        ("truncated connector header", good[..30].to_vec()),
        ("nlmsg_len past the end", good[..150].to_vec()),
        ("nlmsg_len below its header", patch(0, &8u32.to_ne_bytes())),
        ("netlink type NLMSG_ERROR", patch(4, &2u16.to_ne_bytes())),
        ("connector idx 4", patch(16, &4u32.to_ne_bytes())),
        ("connector val 2", patch(20, &2u32.to_ne_bytes())),
        ("cn len past nlmsg_len", patch(32, &300u16.to_ne_bytes())),
    ];
    for (what, frame) in &dropped {
        assert_eq!(d.raw(frame), None, "{what}: must be dropped");
    }

    // A readable connector header with a short request: a bare ack.
    let mut short = good[..REQUEST_OFFSET + 100].to_vec();
    short[0..4].copy_from_slice(&((REQUEST_OFFSET + 100) as u32).to_ne_bytes());
    short[32..34].copy_from_slice(&100u16.to_ne_bytes());
    check_ack(&d.raw(&short).expect("acked"), 77, EINVAL);
    let mut empty = good[..REQUEST_OFFSET].to_vec();
    empty[0..4].copy_from_slice(&(REQUEST_OFFSET as u32).to_ne_bytes());
    empty[32..34].copy_from_slice(&0u16.to_ne_bytes());
    check_ack(&d.raw(&empty).expect("acked"), 77, EINVAL);

    // A readable request header with a bad payload: a full -EINVAL reply.
    let answered: Vec<(&str, Vec<u8>)> = vec![
        (
            "data_size past the end",
            patch(REQUEST_OFFSET + 156, &16u32.to_ne_bytes()),
        ),
        (
            "data_size short of cn len",
            patch(REQUEST_OFFSET + 156, &0u32.to_ne_bytes()),
        ),
        (
            "data_size u32::MAX",
            patch(REQUEST_OFFSET + 156, &u32::MAX.to_ne_bytes()),
        ),
        ("uuid without NUL", patch(REQUEST_OFFSET + 8, &[b'x'; 129])),
        (
            "unknown type 0",
            patch(REQUEST_OFFSET + 152, &0u32.to_ne_bytes()),
        ),
        (
            "unknown type 18",
            patch(REQUEST_OFFSET + 152, &18u32.to_ne_bytes()),
        ),
        (
            "unknown type 0x1ff",
            patch(REQUEST_OFFSET + 152, &0x1ffu32.to_ne_bytes()),
        ),
    ];
    for (what, frame) in &answered {
        let reply = d.raw(frame).unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(check_full_reply(frame, &reply), (-EINVAL, vec![]), "{what}");
    }

    // Bytes past nlmsg_len are not the message's.
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0xee; 7]);
    let reply = d.raw(&trailing).expect("answered");
    assert_eq!(
        check_full_reply(&good, &reply),
        (0, 1u64.to_ne_bytes().to_vec())
    );

    // After all that the log is served as before.
    assert!(d.is_clean(5));
    let c = d.server.counters();
    assert_eq!(c.dropped, dropped.len() as u64);
    assert_eq!(c.acked_malformed, 2 + 4);
}

#[test]
fn reserved_high_bits_of_the_request_type_are_ignored() {
    let mut d = Daemon::with_defaults("reserved-bits");
    assert_eq!(d.call(0x0100_0000 | CTR, b"800 core 1 8"), (0, vec![]));
    assert_eq!(d.call(0xff00_0000 | RESUME, &[]), (0, vec![]));
    assert_eq!(d.call(0x8000_0100 | MARK_REGION, &u64s(&[4])), (0, vec![]));
    assert_eq!(
        d.call(0x0000_ff00 | IS_CLEAN, &u64s(&[4])),
        (0, 0u64.to_ne_bytes().to_vec())
    );
    assert!(!d.is_clean(4));
    // Version 2 requests (older kernels) are served the same.
    let mut v2 = request(9, UUID, LUID, GET_REGION_SIZE, &[]);
    v2[REQUEST_OFFSET + 140..REQUEST_OFFSET + 144].copy_from_slice(&2u32.to_ne_bytes());
    let reply = d.raw(&v2).expect("answered");
    assert_eq!(
        check_full_reply(&v2, &reply),
        (0, 8u64.to_ne_bytes().to_vec())
    );
    // The connector seq is echoed in cn_msg, the request seq in the header.
    let mut split = request(10, UUID, LUID, GET_SYNC_COUNT, &[]);
    split[24..28].copy_from_slice(&0xdead_0001u32.to_ne_bytes());
    let reply = d.raw(&split).expect("answered");
    assert_eq!(check_full_reply(&split, &reply).0, 0);
    assert_eq!(u32_at(&reply, 24), 0xdead_0001);
    assert_eq!(u32_at(&reply, REQUEST_OFFSET + 148), 10);
}

/// The on-disk image of a disk log on a regular file: the kernel's format.
#[test]
fn disk_log_on_a_regular_file_writes_the_kernel_format() {
    const MAGIC: u32 = 0x4D69_5272;
    let dir = scratch("disk-log");
    let path = dir.join("log-device");
    fs::write(&path, vec![0u8; 4096]).unwrap();
    let spec = path.to_str().unwrap();
    let count: u64 = 20;
    let table = format!("{} disk 2 {spec} 8", count * 8 - 3);

    let mut d = Daemon::with_defaults("disk-log-daemon");
    let (error, data) = d.call(CTR, table.as_bytes());
    assert_eq!(error, 0, "CTR {table:?}");
    let mut want = spec.as_bytes().to_vec();
    want.push(0);
    assert_eq!(
        data, want,
        "a disk log's CTR replies the device, NUL-terminated"
    );

    // RESUME on a zeroed device: a new log, nothing in sync.
    d.ok(RESUME, &[]);
    assert_eq!(d.word(GET_SYNC_COUNT, &[]), 0);
    for r in 0..count {
        assert!(!d.in_sync(r), "region {r} in sync on a new disk log");
    }
    let image = fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(image[0..4].try_into().unwrap()), MAGIC);
    assert_eq!(u32::from_le_bytes(image[4..8].try_into().unwrap()), 2);
    assert_eq!(u64::from_le_bytes(image[8..16].try_into().unwrap()), count);

    // Recovery makes every region clean and in sync (the device records a
    // region clean only when it is in sync too); then region 11 is written.
    d.ok(CLEAR_REGION, &u64s(&(0..count).collect::<Vec<_>>()));
    for r in 0..count {
        d.ok(SET_REGION_SYNC, &u64s(&[r, 1]));
    }
    d.ok(MARK_REGION, &u64s(&[11]));
    d.ok(FLUSH, &[]);
    let status = d.ok(STATUS_INFO, &[]);
    assert_eq!(status, b"3 disk 0:0 A\0");
    // The clears are not written yet, so region 11 is still dirty on the
    // device and its mark needed no write; the idle write-back writes them.
    let image = fs::read(&path).unwrap();
    assert!(image[1024..1032].iter().all(|&b| b == 0), "clears deferred");
    assert!(d.server.has_deferred_writes());
    d.server.write_back_all(&mut |_| {});

    let image = fs::read(&path).unwrap();
    assert_eq!(image.len(), 4096, "the device keeps its size");
    assert_eq!(u32::from_le_bytes(image[0..4].try_into().unwrap()), MAGIC);
    assert_eq!(u32::from_le_bytes(image[4..8].try_into().unwrap()), 2);
    assert_eq!(u64::from_le_bytes(image[8..16].try_into().unwrap()), count);
    assert!(image[16..1024].iter().all(|&b| b == 0), "header padding");
    // Region i is bit i & 7 of byte 1024 + i / 8; 20 regions fill one u64.
    let mut bits = [0u8; 8];
    for r in 0..count {
        if r != 11 {
            bits[(r >> 3) as usize] |= 1 << (r & 7);
        }
    }
    assert_eq!(bits[..3], [0xff, 0xf7, 0x0f]);
    assert_eq!(&image[1024..1032], &bits, "clean bits on disk");
    assert!(image[1032..].iter().all(|&b| b == 0), "past the bitmap");

    // Tear down, construct again on the same device under a new luid:
    // clean regions are in sync, the marked one is not.
    assert_eq!(d.call(DTR, &[]), (0, vec![]));
    let (error, data) = d.call_to(UUID, LUID + 1, CTR, table.as_bytes());
    assert_eq!(error, 0);
    assert_eq!(data, want);
    assert_eq!(d.call_to(UUID, LUID + 1, RESUME, &[]), (0, vec![]));
    for r in 0..count {
        let (error, v) = d.call_to(UUID, LUID + 1, IN_SYNC, &u64s(&[r]));
        assert_eq!(error, 0);
        assert_eq!(
            u64_at(&v, 0),
            u64::from(r != 11),
            "IN_SYNC({r}) after reload"
        );
    }
    let (_, synced) = d.call_to(UUID, LUID + 1, GET_SYNC_COUNT, &[]);
    assert_eq!(u64_at(&synced, 0), count - 1);
    let (_, clean) = d.call_to(UUID, LUID + 1, IS_CLEAN, &u64s(&[11]));
    assert_eq!(u64_at(&clean, 0), 0);
    let (_, work) = d.call_to(UUID, LUID + 1, GET_RESYNC_WORK, &[]);
    assert_eq!((u64_at(&work, 0), u64_at(&work, 8)), (1, 11));
    assert_eq!(d.call_to(UUID, LUID + 1, DTR, &[]), (0, vec![]));
}

#[test]
fn disk_log_on_a_device_too_small_is_refused() {
    let dir = scratch("disk-small");
    let path = dir.join("log-device");
    fs::write(&path, vec![0u8; 1024]).unwrap();
    let mut d = Daemon::with_defaults("disk-small-daemon");
    let table = format!("160 disk 2 {} 8", path.to_str().unwrap());
    assert_eq!(d.call(CTR, table.as_bytes()), (-EINVAL, vec![]));
    assert_eq!(d.server.registry().len(), 0);
}

const LIMITS: Limits = Limits {
    max_logs: 16,
    memory_budget: 16 << 20,
};

/// A state directory and two 4 KiB "log devices" (regular files) holding
/// marker bytes.
fn devices(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let state = dir.join("state");
    fs::create_dir_all(&state).unwrap();
    let (a, b) = (dir.join("device-a"), dir.join("device-b"));
    fs::write(&a, vec![0xa5u8; 4096]).unwrap();
    fs::write(&b, vec![0x5au8; 4096]).unwrap();
    (state, a, b)
}

fn disk_table(device: &Path, extra: &str) -> Vec<u8> {
    let nargs = if extra.is_empty() { 2 } else { 3 };
    format!("160 disk {nargs} {} 8{extra}", device.display()).into_bytes()
}

fn nul(table: &[u8]) -> Vec<u8> {
    let mut t = table.to_vec();
    t.push(0);
    t
}

fn on_device(device: &Path, region: u64) -> bool {
    fs::read(device).unwrap()[1024 + (region / 8) as usize] & (1 << (region % 8)) != 0
}

/// dm-log-userspace's userspace_ctr frees its log without a DTR when the
/// device the CTR reply names cannot be held, and a retried load often gets
/// the same luid (the log context's address). The retry's device is the one
/// served; the refused one is never written.
#[test]
fn a_retried_table_load_gets_the_device_it_names() {
    let (state, a, b) = devices("failed-load");
    let mut d = Daemon::over(&state, LIMITS, FakeMirrors::two_legs());
    let (error, reply) = d.call(CTR, &disk_table(&a, ""));
    assert_eq!((error, reply), (0, nul(a.to_str().unwrap().as_bytes())));
    d.word(GET_REGION_SIZE, &[]);
    // The kernel could not hold device A: no DTR, a new load names B.
    let (error, reply) = d.call(CTR, &disk_table(&b, ""));
    assert_eq!(error, 0);
    assert_eq!(
        reply,
        nul(b.to_str().unwrap().as_bytes()),
        "answered from the failed load's log"
    );
    assert_eq!(d.server.registry().len(), 1);
    d.ok(RESUME, &[]);
    d.ok(MARK_REGION, &u64s(&[3]));
    d.ok(FLUSH, &[]);
    d.ok(POSTSUSPEND, &[]);
    d.ok(DTR, &[]);
    assert_eq!(
        fs::read(&a).unwrap(),
        vec![0xa5u8; 4096],
        "device A was written"
    );
    assert_eq!(&fs::read(&b).unwrap()[..4], &0x4D69_5272u32.to_le_bytes());
    assert_eq!(d.server.exit_verdict(), ExitVerdict::Exit);
}

/// A failed load that is never retried leaves a log nothing names: it must
/// not keep the daemon from exiting, while a log an inactive table names
/// (loaded, waiting for its resume) must.
#[test]
fn a_log_no_table_names_does_not_keep_the_daemon_alive() {
    let (state, a, _) = devices("orphan");
    let mirrors = FakeMirrors::two_legs();
    let mut d = Daemon::over(&state, LIMITS, mirrors.clone());
    assert_eq!(d.call(CTR, &disk_table(&a, "")).0, 0);
    assert!(
        matches!(d.server.exit_verdict(), ExitVerdict::AskAgainAt(_)),
        "a log just constructed is too young to judge"
    );
    std::thread::sleep(std::time::Duration::from_millis(5200));
    assert_eq!(
        d.server.exit_verdict(),
        ExitVerdict::Refuse,
        "an inactive table names it"
    );
    mirrors.0.borrow_mut().references = 0;
    assert_eq!(
        d.server.exit_verdict(),
        ExitVerdict::Exit,
        "nothing names it: a failed load's leftover"
    );
    assert_eq!(fs::read(&a).unwrap(), vec![0xa5u8; 4096]);
}

/// A reload after a restart: the old table's log was never reconnected.
/// The kernel constructs the new log, suspends the old table, resumes the
/// new one (whose writes start at once) and only then destroys the old
/// one. The old log's saved image may be written at its POSTSUSPEND, never
/// after the new log has loaded the device.
#[test]
fn a_reload_after_a_restart_never_writes_the_old_image_over_the_new_log() {
    let (state, device, _) = devices("reload-restart");
    let old = LUID;
    let new = LUID + 64;
    {
        let mut d1 = Daemon::over(&state, LIMITS, FakeMirrors::two_legs());
        assert_eq!(
            d1.call_to(UUID, old, CTR, &disk_table(&device, " nosync"))
                .0,
            0
        );
        assert_eq!(d1.call_to(UUID, old, RESUME, &[]).0, 0);
        // SIGKILL: d1 is gone, its state file stays.
    }
    let mut d2 = Daemon::over(&state, LIMITS, FakeMirrors::two_legs());
    assert_eq!(d2.call_to(UUID, new, CTR, &disk_table(&device, "")).0, 0);
    assert_eq!(d2.call_to(UUID, old, PRESUSPEND, &[]).0, 0);
    assert_eq!(d2.call_to(UUID, old, POSTSUSPEND, &[]).0, 0);
    assert_eq!(d2.call_to(UUID, new, RESUME, &[]).0, 0);
    assert_eq!(d2.call_to(UUID, new, MARK_REGION, &u64s(&[7])).0, 0);
    assert_eq!(d2.call_to(UUID, new, FLUSH, &[]).0, 0);
    assert!(!on_device(&device, 7), "the new log's mark is durable");
    // A late POSTSUSPEND and the DTR of the old log write nothing.
    assert_eq!(d2.call_to(UUID, old, POSTSUSPEND, &[]).0, 0);
    assert_eq!(d2.call_to(UUID, old, DTR, &[]).0, 0);
    assert!(
        !on_device(&device, 7),
        "the old log's saved image overwrote the new log's mark"
    );
    assert!(on_device(&device, 8));
}

/// Several callers take the kernel's reconnect path at once: one's CTR
/// comes, then another's FLUSH with marks before the first one's RESUME.
/// The marks must be on the device when the FLUSH is answered, and stay
/// there through the RESUME.
#[test]
fn a_flush_before_the_reconnect_resume_is_durable() {
    let (state, device, _) = devices("flush-before-resume");
    let table = disk_table(&device, " nosync");
    {
        let mut d1 = Daemon::over(&state, LIMITS, FakeMirrors::two_legs());
        assert_eq!(d1.call(CTR, &table).0, 0);
        d1.ok(RESUME, &[]);
    }
    for keep_state in [true, false] {
        if !keep_state {
            for f in fs::read_dir(&state).unwrap() {
                fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        let mut d2 = Daemon::over(&state, LIMITS, FakeMirrors::two_legs());
        assert_eq!(d2.call(CTR, &nul(&table)).0, 0);
        d2.ok(MARK_REGION, &u64s(&[9]));
        d2.ok(FLUSH, &[]);
        assert!(
            !on_device(&device, 9),
            "state kept {keep_state}: FLUSH answered, mark not durable"
        );
        d2.ok(RESUME, &[]);
        assert!(
            !d2.is_clean(9),
            "state kept {keep_state}: the RESUME undid the mark"
        );
        assert!(!on_device(&device, 9));
        // Without saved state the load rebuilt sync from clean: region 9,
        // written while the daemon was away, is resynced first.
        assert_eq!(d2.in_sync(9), keep_state);
        d2.ok(CLEAR_REGION, &u64s(&[9]));
        d2.ok(SET_REGION_SYNC, &u64s(&[9, 1]));
        d2.server.write_back_all(&mut |_| {});
        assert!(on_device(&device, 9));
    }
}

/// A daemon restarted with a lower --max-logs still takes back every log
/// the kernel reconnects from saved state (a refusal would make the kernel
/// retry forever); new logs get -ENOMEM.
#[test]
fn reconnects_keep_their_room_after_a_restart_with_lower_limits() {
    let dir = scratch("lower-limits").join("state");
    fs::create_dir_all(&dir).unwrap();
    let two = Limits {
        max_logs: 2,
        memory_budget: 1 << 20,
    };
    {
        let mut d1 = Daemon::over(&dir, two, FakeMirrors::two_legs());
        for luid in [1, 2] {
            assert_eq!(d1.call_to(UUID, luid, CTR, b"8000 core 1 8").0, 0);
        }
    }
    let one = Limits {
        max_logs: 1,
        memory_budget: 64,
    };
    let mut d2 = Daemon::over(&dir, one, FakeMirrors::two_legs());
    for luid in [1, 2] {
        assert_eq!(
            d2.call_to(UUID, luid, CTR, b"8000 core 1 8\0").0,
            0,
            "luid {luid}"
        );
        assert_eq!(d2.call_to(UUID, luid, RESUME, &[]).0, 0);
    }
    assert_eq!(d2.server.registry().len(), 2);
    assert_eq!(d2.call_to(UUID, 3, CTR, b"8000 core 1 8").0, -ENOMEM);
}

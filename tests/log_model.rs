//! The log against a plain reference model of the kernel's core log
//! (drivers/md/dm-log.c, transcribed with Vec<bool>), driven by long random
//! sequences of operations the way dm-raid1 drives it; and the disk log's
//! promise: after every FLUSH, every dirty region is dirty on the device.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use dm_ulogd::bitmap::Bitmap;
use dm_ulogd::log::device::LogDevice;
use dm_ulogd::log::disk::{BITMAP_OFFSET, DeviceIo, DiskStore, MAGIC, MERGE_GAP, image_len};
use dm_ulogd::log::params::{self, SyncMode};
use dm_ulogd::log::{DirtyLog, Origin};
use dm_ulogd::mirrors::FakeMirrors;

/// The kernel's core log, literally.
struct Model {
    clean: Vec<bool>,
    sync: Vec<bool>,
    recovering: Vec<bool>,
    sync_search: usize,
    sync_count: u64,
}

impl Model {
    fn new(count: usize, sync: SyncMode) -> Self {
        let nosync = sync == SyncMode::No;
        Model {
            clean: vec![true; count],
            sync: vec![nosync; count],
            recovering: vec![false; count],
            sync_search: 0,
            sync_count: if nosync { count as u64 } else { 0 },
        }
    }
    fn get_resync_work(&mut self) -> Option<u64> {
        let count = self.clean.len();
        if self.sync_search >= count {
            return None;
        }
        loop {
            let region = (self.sync_search..count)
                .find(|&r| !self.sync[r])
                .unwrap_or(count);
            self.sync_search = region + 1;
            if region >= count {
                return None;
            }
            if !self.recovering[region] {
                self.recovering[region] = true;
                return Some(region as u64);
            }
        }
    }
    fn set_region_sync(&mut self, r: usize, in_sync: bool) {
        self.recovering[r] = false;
        if in_sync {
            if !self.sync[r] {
                self.sync[r] = true;
                self.sync_count += 1;
            }
        } else if self.sync[r] {
            self.sync_count -= 1;
            self.sync[r] = false;
        }
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn new_core_log(table: &str) -> DirtyLog {
    let args = params::parse(table.as_bytes()).unwrap();
    let clean = Bitmap::try_new(args.region_count).unwrap();
    let sync = Bitmap::try_new(args.region_count).unwrap();
    DirtyLog::new(&args, clean, sync, None, Origin::New)
}

#[test]
fn core_log_matches_the_kernels_core_log() {
    let mut rng = Lcg(42);
    let mut io = DeviceIo::new(Box::new(FakeMirrors::two_legs()));
    for round in 0..40 {
        let count = 1 + rng.below(700);
        let sync_word = ["", " sync", " nosync"][round % 3];
        let nargs = if sync_word.is_empty() { 1 } else { 2 };
        let table = format!("{} core {nargs} 8{sync_word}", count * 8);
        let mut log = new_core_log(&table);
        let mut model = Model::new(
            count as usize,
            params::parse(table.as_bytes()).unwrap().sync,
        );
        // dm-raid1 has at most one region recovering and settles it first.
        let mut outstanding: Option<u64> = None;
        for _ in 0..5_000 {
            let r = rng.below(count);
            match rng.below(9) {
                0 => {
                    log.mark(r);
                    model.clean[r as usize] = false;
                }
                1 => {
                    log.clear(r);
                    model.clean[r as usize] = true;
                }
                2 => {
                    if outstanding.is_none() {
                        let got = log.get_resync_work();
                        assert_eq!(got, model.get_resync_work(), "{table}");
                        outstanding = got;
                    } else {
                        // A resend while a region is out gets the same one.
                        assert_eq!(log.get_resync_work(), outstanding);
                    }
                }
                3 => {
                    if let Some(w) = outstanding.take() {
                        let ok = rng.below(8) != 0;
                        log.set_region_sync(w, ok);
                        model.set_region_sync(w as usize, ok);
                    }
                }
                4 => {
                    // A leg write failed: dm-raid1 marks the region out of sync.
                    if outstanding != Some(r) {
                        log.set_region_sync(r, false);
                        model.set_region_sync(r as usize, false);
                    }
                }
                5 if outstanding.is_none() => {
                    // dm-raid1 suspends only with no recovery in flight.
                    log.resume(&mut io).unwrap();
                    model.sync_search = 0;
                }
                6 => log.flush(&mut io).unwrap(),
                _ => {
                    assert_eq!(log.is_clean(r), model.clean[r as usize]);
                    assert_eq!(log.in_sync(r), model.sync[r as usize]);
                }
            }
            assert_eq!(log.sync_count(), model.sync_count, "{table}");
            // The hint reaches region_count only when every region is in sync.
            let all = model.sync.iter().all(|&s| s);
            assert_eq!(log.in_sync_hint(false), if all { count } else { count - 1 });
        }
        for r in 0..count {
            assert_eq!(log.is_clean(r), model.clean[r as usize]);
            assert_eq!(log.in_sync(r), model.sync[r as usize]);
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("log-model-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dir_fd(path: &Path) -> OwnedFd {
    nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap()
}

fn new_disk_log(dir: &Path, file: &Path, table: &str) -> DirtyLog {
    let args = params::parse(table.as_bytes()).unwrap();
    let node_dir = dir_fd(dir);
    let device =
        LogDevice::open(file.to_str().unwrap(), std::os::fd::AsFd::as_fd(&node_dir)).unwrap();
    let store = DiskStore::new(device, args.region_count).unwrap();
    let clean = Bitmap::try_new(args.region_count).unwrap();
    let sync = Bitmap::try_new(args.region_count).unwrap();
    let mut log = DirtyLog::new(&args, clean, sync, Some(store), Origin::New);
    log.set_legs(FakeMirrors::two_legs().0.borrow().legs.clone());
    log
}

/// A disk log of `count` regions over a fresh zeroed image file of
/// `image_bytes`, resumed (a new log: nothing in sync).
fn resumed_disk_log(name: &str, count: u64, image_bytes: usize) -> (PathBuf, DirtyLog, DeviceIo) {
    let dir = temp_dir(name);
    let file = dir.join("log.img");
    std::fs::write(&file, vec![0u8; image_bytes]).unwrap();
    let table = format!("{} disk 2 {} 8", count * 8, file.display());
    let mut log = new_disk_log(&dir, &file, &table);
    let mut io = DeviceIo::new(Box::new(FakeMirrors::two_legs()));
    log.resume(&mut io).unwrap();
    (file, log, io)
}

/// Makes `regions` in sync and clean, as their recovery would.
fn recover(log: &mut DirtyLog, regions: impl IntoIterator<Item = u64>) {
    for r in regions {
        log.set_region_sync(r, true);
        log.clear(r);
    }
}

fn disk_bit(image: &[u8], region: u64) -> bool {
    let byte = image[(BITMAP_OFFSET + region / 8) as usize];
    byte & (1 << (region % 8)) != 0
}

#[test]
fn a_flushed_mark_is_always_on_the_device() {
    flushed_marks_reach_the_device("flush", 20_000, 9);
}

/// Few regions: regions are cleared and marked again between writes all
/// the time (the unwritten-clear shortcut).
#[test]
fn a_flushed_mark_is_always_on_the_device_with_few_regions() {
    flushed_marks_reach_the_device("flush-few", 50, 10);
}

fn flushed_marks_reach_the_device(name: &str, count: u64, seed: u64) {
    let (file, mut log, mut io) = resumed_disk_log(name, count, image_len(count, 512) as usize);
    // A zeroed device is a new log: everything out of sync, nothing clean on disk.
    assert_eq!(log.sync_count(), 0);
    let image = std::fs::read(&file).unwrap();
    assert_eq!(u32::from_le_bytes(image[0..4].try_into().unwrap()), MAGIC);
    assert_eq!(u64::from_le_bytes(image[8..16].try_into().unwrap()), count);

    let mut rng = Lcg(seed);
    // The resync: every region clean and in sync. The device records a
    // region clean only when it is in sync too.
    for r in 0..count {
        log.clear(r);
        log.set_region_sync(r, true);
    }
    log.flush(&mut io).unwrap();
    for _ in 0..300 {
        for _ in 0..rng.below(40) {
            let r = rng.below(count);
            if rng.below(2) == 0 {
                log.mark(r);
            } else {
                log.clear(r);
            }
        }
        log.flush(&mut io).unwrap();
        // Every dirty region is dirty on the device; a clean one may lag
        // (clears are written lazily).
        let image = std::fs::read(&file).unwrap();
        for r in 0..count {
            assert!(log.is_clean(r) || !disk_bit(&image, r), "region {r}");
        }
        if rng.below(10) == 0 {
            log.write_back(&mut io).unwrap();
            let image = std::fs::read(&file).unwrap();
            for r in 0..count {
                assert_eq!(disk_bit(&image, r), log.is_clean(r), "region {r}");
            }
        }
    }
}

#[test]
fn a_clear_only_flush_is_deferred_until_write_back() {
    let (file, mut log, mut io) = resumed_disk_log("lazy", 100, 4096);
    log.set_region_sync(5, true);
    log.mark(5);
    log.flush(&mut io).unwrap();
    assert!(!disk_bit(&std::fs::read(&file).unwrap(), 5));
    log.clear(5);
    log.flush(&mut io).unwrap();
    assert!(log.has_deferred_writes());
    assert!(!disk_bit(&std::fs::read(&file).unwrap(), 5));
    log.write_back(&mut io).unwrap();
    assert!(!log.has_deferred_writes());
    assert!(disk_bit(&std::fs::read(&file).unwrap(), 5));
}

#[test]
fn a_flush_writes_nearby_changes_as_one_transfer() {
    let count = 4 * 1024 * 1024u64; // 512 KiB of bits: several transfers
    let (file, mut log, mut io) = resumed_disk_log("merge", count, image_len(count, 512) as usize);
    let bits_apart = |bytes: u64| bytes * 8;
    let near = [
        100,
        100 + bits_apart(MERGE_GAP / 2),
        100 + bits_apart(MERGE_GAP),
    ];
    let far = [2_000_000, 2_000_000 + bits_apart(4 * MERGE_GAP)];
    recover(&mut log, near.iter().chain(&far).copied());
    log.write_back(&mut io).unwrap();
    let counts = |log: &DirtyLog| log.disk().unwrap().io_counts();
    let before = counts(&log);

    for r in near {
        log.mark(r);
    }
    log.flush(&mut io).unwrap();
    let after_near = counts(&log);
    assert_eq!(after_near.writes - before.writes, 1, "one span");
    assert_eq!(after_near.flushes - before.flushes, 1);

    for r in far {
        log.mark(r);
    }
    log.flush(&mut io).unwrap();
    let after_far = counts(&log);
    assert_eq!(after_far.writes - after_near.writes, 2, "two spans");

    let image = std::fs::read(&file).unwrap();
    for r in near.iter().chain(&far) {
        assert!(!disk_bit(&image, *r), "region {r} is dirty on the device");
    }
    // Unchanged bits inside a merged span were rewritten as they were.
    assert!(!disk_bit(&image, 101));
}

#[test]
fn marking_a_region_whose_clear_is_unwritten_needs_no_write() {
    let (file, mut log, mut io) = resumed_disk_log("unwritten", 100, 4096);
    recover(&mut log, 0..100);
    log.write_back(&mut io).unwrap();
    let counts = |log: &DirtyLog| log.disk().unwrap().io_counts();
    let on_device = |r| !disk_bit(&std::fs::read(&file).unwrap(), r);

    log.mark(5);
    log.flush(&mut io).unwrap();
    let marked = counts(&log);
    assert!(on_device(5));
    // Cleared, deferred, marked again: the device never saw the clear.
    for _ in 0..10 {
        log.clear(5);
        log.flush(&mut io).unwrap();
        log.mark(5);
        log.flush(&mut io).unwrap();
    }
    assert_eq!(counts(&log), marked, "no write, no cache flush");
    assert!(on_device(5));

    // A clear that reached the device ends the shortcut.
    log.clear(5);
    log.write_back(&mut io).unwrap();
    assert!(!on_device(5));
    log.mark(5);
    log.flush(&mut io).unwrap();
    assert!(on_device(5));

    // A clear written by another mark's flush is forgotten: the next mark
    // of that region is written and flushed.
    log.clear(5);
    log.flush(&mut io).unwrap();
    log.mark(7);
    log.clear(9);
    log.flush(&mut io).unwrap();
    assert!(!on_device(9) && on_device(7));
    let before = counts(&log);
    log.mark(9);
    log.flush(&mut io).unwrap();
    assert!(on_device(9));
    assert_eq!(counts(&log).flushes, before.flushes + 1);
}

#[test]
fn a_disk_log_reloads_its_clean_regions_in_sync() {
    let dir = temp_dir("reload");
    let file = dir.join("log.img");
    std::fs::write(&file, vec![0u8; 8192]).unwrap();
    let table = format!("{} disk 2 {} 8", 1000 * 8, file.display());
    let mut io = DeviceIo::new(Box::new(FakeMirrors::two_legs()));
    {
        let mut log = new_disk_log(&dir, &file, &table);
        log.resume(&mut io).unwrap();
        for r in 0..1000 {
            log.clear(r);
            log.set_region_sync(r, r != 400);
        }
        log.write_back(&mut io).unwrap();
        log.mark(17);
        log.flush(&mut io).unwrap();
    }
    let mut log = new_disk_log(&dir, &file, &table);
    log.resume(&mut io).unwrap();
    // 17 was dirty; 400 was clean but never in sync: neither is trusted.
    assert_eq!(log.sync_count(), 998);
    assert!(!log.in_sync(17) && !log.in_sync(400) && log.in_sync(16) && log.in_sync(999));
    assert_eq!(log.get_resync_work(), Some(17));

    // `sync` forces a full resync whatever the device holds.
    let forced = format!("{} disk 3 {} 8 sync", 1000 * 8, file.display());
    let mut log = new_disk_log(&dir, &file, &forced);
    log.resume(&mut io).unwrap();
    assert_eq!(log.sync_count(), 0);
}

/// A disk log resumed on a fresh image with a `FakeMirrors` the test keeps.
fn disk_log_with_mirrors(name: &str, count: u64) -> (PathBuf, DirtyLog, DeviceIo, FakeMirrors) {
    let dir = temp_dir(name);
    let file = dir.join("log.img");
    std::fs::write(&file, vec![0u8; image_len(count, 512) as usize]).unwrap();
    let table = format!("{} disk 2 {} 8", count * 8, file.display());
    let mut log = new_disk_log(&dir, &file, &table);
    let mirrors = FakeMirrors::two_legs();
    let mut io = DeviceIo::new(Box::new(mirrors.clone()));
    log.resume(&mut io).unwrap();
    (file, log, io, mirrors)
}

/// A log device image and the step of the model it was taken in.
type ImageAtStep = (usize, Vec<u8>);

/// The power-loss rule: a region becomes clean on the device only in a
/// write that a leg flush preceded, and that flush came after the region's
/// last CLEAR (or recovery): its data was on every leg's stable storage
/// before the device called it clean. Random marks, clears, recoveries,
/// flushes and write-backs, as dm-raid1 sends them.
#[test]
fn the_legs_are_flushed_before_any_region_is_recorded_clean() {
    use std::cell::RefCell;
    use std::rc::Rc;
    for (seed, count) in [(1u64, 40u64), (2, 300), (3, 5000)] {
        let (file, mut log, mut io, mirrors) =
            disk_log_with_mirrors(&format!("legs-{seed}"), count);
        // The image as each leg flush saw it, and in which step.
        let at_flush: Rc<RefCell<Vec<ImageAtStep>>> = Rc::default();
        let step = Rc::new(std::cell::Cell::new(0usize));
        {
            let (at_flush, step, file) = (at_flush.clone(), step.clone(), file.clone());
            mirrors.0.borrow_mut().on_flush = Some(Box::new(move || {
                at_flush
                    .borrow_mut()
                    .push((step.get(), std::fs::read(&file).unwrap()));
            }));
        }
        let mut rng = Lcg(seed);
        let mut last_clear = vec![0usize; count as usize];
        let mut before = std::fs::read(&file).unwrap();
        for n in 1..4000usize {
            step.set(n);
            let r = rng.below(count);
            match rng.below(8) {
                0..=2 => log.mark(r),
                3 | 4 => {
                    log.clear(r);
                    last_clear[r as usize] = n;
                }
                5 => {
                    log.set_region_sync(r, true);
                    last_clear[r as usize] = n;
                }
                6 => log.flush(&mut io).unwrap(),
                _ => log.write_back(&mut io).unwrap(),
            }
            let after = std::fs::read(&file).unwrap();
            let flushes = at_flush.borrow();
            let this_step = flushes.iter().find(|(s, _)| *s == n);
            for region in 0..count {
                if disk_bit(&before, region) || !disk_bit(&after, region) {
                    continue;
                }
                let (_, seen) = this_step.unwrap_or_else(|| {
                    panic!("seed {seed} step {n}: region {region} recorded clean with no leg flush")
                });
                assert!(
                    !disk_bit(seen, region),
                    "seed {seed} step {n}: region {region} was written clean before the leg flush"
                );
                assert!(last_clear[region as usize] < n);
            }
            before = after;
        }
        assert!(
            mirrors.0.borrow().flushes > 0,
            "seed {seed}: no leg flush at all"
        );
    }
}

#[test]
fn a_marking_flush_keeps_clears_dirty_and_flushes_no_leg() {
    let (file, mut log, mut io, mirrors) = disk_log_with_mirrors("mark-path", 100);
    recover(&mut log, 0..100);
    log.write_back(&mut io).unwrap();
    let legs_before = mirrors.0.borrow().flushes;
    assert_eq!(
        legs_before, 1,
        "the recovered regions were written after one leg flush"
    );
    // Writes to region 3 completed, one to 50 begins.
    log.mark(3);
    log.flush(&mut io).unwrap();
    log.clear(3);
    log.mark(50);
    log.flush(&mut io).unwrap();
    let image = std::fs::read(&file).unwrap();
    assert!(!disk_bit(&image, 50), "the mark is durable");
    assert!(!disk_bit(&image, 3), "the clear waits for a leg flush");
    assert_eq!(
        mirrors.0.borrow().flushes,
        legs_before,
        "no leg flush on the write path"
    );
    // The idle write-back flushes the legs once and records 3 clean.
    log.write_back(&mut io).unwrap();
    assert_eq!(mirrors.0.borrow().flushes, legs_before + 1);
    assert!(disk_bit(&std::fs::read(&file).unwrap(), 3));
    assert_eq!(log.disk().unwrap().io_counts().leg_flushes, legs_before + 1);
}

/// The clears a marking flush keeps dirty are not rewritten by it: a mark
/// costs one write however many clears wait, and the write-back still
/// records every one of them clean.
#[test]
fn a_marking_flush_does_not_rewrite_the_blocks_of_waiting_clears() {
    let count = 4 * 1024 * 1024u64; // 512 KiB of bits
    let (file, mut log, mut io, mirrors) = disk_log_with_mirrors("mark-only", count);
    let apart = 2 * MERGE_GAP * 8;
    let cleared: Vec<u64> = (0..8).map(|i| 100 + i * apart).collect();
    let marked = 100 + 9 * apart;
    recover(&mut log, cleared.iter().copied().chain([marked]));
    log.write_back(&mut io).unwrap();
    for &r in &cleared {
        log.mark(r);
    }
    log.flush(&mut io).unwrap();
    for &r in &cleared {
        log.clear(r);
    }
    let counts = |log: &DirtyLog| log.disk().unwrap().io_counts();
    let before = counts(&log);
    let legs_before = mirrors.0.borrow().flushes;

    log.mark(marked);
    log.flush(&mut io).unwrap();
    let after = counts(&log);
    assert_eq!(after.writes - before.writes, 1, "only the mark's block");
    assert_eq!(after.flushes - before.flushes, 1);
    assert_eq!(mirrors.0.borrow().flushes, legs_before);
    let image = std::fs::read(&file).unwrap();
    assert!(!disk_bit(&image, marked));
    assert!(cleared.iter().all(|&r| !disk_bit(&image, r)));

    assert!(log.has_deferred_writes());
    log.write_back(&mut io).unwrap();
    assert_eq!(mirrors.0.borrow().flushes, legs_before + 1);
    let image = std::fs::read(&file).unwrap();
    for &r in &cleared {
        assert!(
            disk_bit(&image, r),
            "region {r} is still dirty on the device"
        );
    }
    assert!(!log.has_deferred_writes());
}

#[test]
fn a_failed_leg_flush_records_nothing_clean_again() {
    let (file, mut log, mut io, mirrors) = disk_log_with_mirrors("leg-fails", 100);
    recover(&mut log, 0..100);
    log.write_back(&mut io).unwrap();
    assert_eq!(log_clean_on_device(&file, 100), 100);
    mirrors.0.borrow_mut().fail_flush = true;
    log.mark(7);
    log.flush(&mut io).unwrap();
    log.clear(7);
    log.write_back(&mut io).unwrap();
    // As dm-log.c after a failed flush callback: every region dirty.
    assert!(log.disk().unwrap().flush_failed());
    assert_eq!(log_clean_on_device(&file, 100), 0);
    assert_eq!(log.dirty_count(), 100);
    // Sticky: the legs work again, nothing is recorded clean all the same,
    // and marks are still made durable.
    mirrors.0.borrow_mut().fail_flush = false;
    log.clear(9);
    log.write_back(&mut io).unwrap();
    assert_eq!(log_clean_on_device(&file, 100), 0);
    assert!(!log.is_clean(9));
    log.mark(9);
    log.flush(&mut io).unwrap();
    assert!(!disk_bit(&std::fs::read(&file).unwrap(), 9));
}

#[test]
fn unknown_legs_record_nothing_clean() {
    let (file, mut log, mut io, _mirrors) = disk_log_with_mirrors("no-legs", 64);
    log.set_legs(None);
    recover(&mut log, 0..64);
    log.write_back(&mut io).unwrap();
    assert_eq!(log_clean_on_device(&file, 64), 0);
    assert!(log.disk().unwrap().flush_failed());
}

fn log_clean_on_device(file: &Path, count: u64) -> u64 {
    let image = std::fs::read(file).unwrap();
    (0..count).filter(|&r| disk_bit(&image, r)).count() as u64
}

/// dm-log.c read_header: an unknown version is an error (the log device
/// failed, every region out of sync), except under sync or nosync, which
/// replace any header before the version is looked at.
#[test]
fn an_unknown_header_version_fails_unless_sync_or_nosync() {
    let dir = temp_dir("version");
    let file = dir.join("log.img");
    let mut image = vec![0xffu8; 4096];
    image[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    image[4..8].copy_from_slice(&7u32.to_le_bytes());
    image[8..16].copy_from_slice(&100u64.to_le_bytes());
    let mut io = DeviceIo::new(Box::new(FakeMirrors::two_legs()));
    let status = |log: &DirtyLog| {
        let mut s = String::new();
        log.status_info(&mut s).unwrap();
        s
    };
    for (word, nargs, status_char, in_sync) in [
        ("", 2, 'D', 0),
        (" sync", 3, 'A', 0),
        (" nosync", 3, 'A', 100),
    ] {
        std::fs::write(&file, &image).unwrap();
        let table = format!("800 disk {nargs} {} 8{word}", file.display());
        let mut log = new_disk_log(&dir, &file, &table);
        log.resume(&mut io).unwrap();
        assert!(
            status(&log).ends_with(status_char),
            "{word}: {}",
            status(&log)
        );
        assert_eq!(log.sync_count(), in_sync, "{word}");
        let written = std::fs::read(&file).unwrap();
        assert_eq!(
            u32::from_le_bytes(written[4..8].try_into().unwrap()),
            2,
            "{word}"
        );
    }
}

/// The regions dirty in `fixed_image_bytes`: on both sides of byte, 32-bit
/// and 64-bit word boundaries, and the last region.
const FIXED_DIRTY: [u64; 8] = [0, 7, 8, 63, 64, 127, 128, 199];

/// The image of a 200-region disk log with `FIXED_DIRTY` dirty, as the
/// kernel's `disk` log writes it on every architecture: the header
/// little-endian, bit r of the bitmap in byte 1024 + r / 8 at bit r % 8, the
/// bitmap padded to 64 bits and the image to 512 bytes with zeros. Spelled
/// byte by byte so that no byte-order helper of the code under test (nor of
/// the machine running it) takes part.
fn fixed_image_bytes() -> Vec<u8> {
    let mut image = vec![0u8; 1536];
    // magic 0x4d695272, version 2, nr_regions 200 (0xc8)
    image[..16].copy_from_slice(&[
        0x72, 0x52, 0x69, 0x4d, 0x02, 0, 0, 0, 0xc8, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let ff = 0xff;
    image[1024..1056].copy_from_slice(&[
        0x7e, 0xfe, ff, ff, ff, ff, ff, 0x7f, // regions 0-63: 0, 7, 8, 63 dirty
        0xfe, ff, ff, ff, ff, ff, ff, 0x7f, // 64-127: 64, 127
        0xfe, ff, ff, ff, ff, ff, ff, ff, // 128-191: 128
        0x7f, 0, 0, 0, 0, 0, 0, 0, // 192-199: 199; no regions past 200
    ]);
    image
}

/// A byte-order slip in the disk format (the header's fields, the bitmap's
/// words) fails here on every architecture, not only on a big-endian one:
/// the rendered image is compared with fixed bytes, and fixed bytes are read
/// back into exactly the regions they record.
#[test]
fn the_disk_image_is_the_same_bytes_on_every_architecture() {
    let count = 200;
    let (file, mut log, mut io) = resumed_disk_log("fixed-bytes", count, 1536);
    recover(&mut log, 0..count);
    log.write_back(&mut io).unwrap();
    for r in FIXED_DIRTY {
        log.mark(r);
    }
    log.flush(&mut io).unwrap();
    let written = std::fs::read(&file).unwrap();
    let expected = fixed_image_bytes();
    for (at, (w, e)) in written.iter().zip(&expected).enumerate() {
        assert_eq!(w, e, "byte {at} of the rendered image");
    }
    assert_eq!(written.len(), expected.len());

    // Read back: the fixed bytes load as exactly those regions out of sync.
    std::fs::write(&file, &expected).unwrap();
    let dir = file.parent().unwrap();
    let table = format!("{} disk 2 {} 8", count * 8, file.display());
    let mut log = new_disk_log(dir, &file, &table);
    log.resume(&mut io).unwrap();
    assert_eq!(log.sync_count(), count - FIXED_DIRTY.len() as u64);
    for r in 0..count {
        assert_eq!(log.in_sync(r), !FIXED_DIRTY.contains(&r), "region {r}");
    }
}

//! `dm-ulogd examine DEVICE`: what a disk log device records, read without
//! the daemon and without device-mapper. The device is opened O_RDONLY (a
//! major:minor through a short-lived node, as the daemon does) and only
//! read; the format is the kernel's (log/disk.rs), so logs written by the
//! kernel's `disk` log and by dm-ulogd read alike.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{self, Mode, SFlag};

use crate::bitmap::Bitmap;
pub use crate::cli::ExamineOptions;
use crate::log::device::parse_dev_numbers;
use crate::log::disk::{self, IO_BUF_LEN, IoBuf, MAGIC, VERSION};
use crate::startup::ExitCode;
use crate::sys;

const SECTOR: u128 = 512;

/// What was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Block { major: u64, minor: u64 },
    File,
}

/// A log device's contents.
#[derive(Debug)]
pub struct Examined {
    pub kind: DeviceKind,
    pub size: u64,
    pub block_size: u64,
    pub version: u32,
    /// One bit per region the header records; set = clean.
    pub clean: Bitmap,
}

impl Examined {
    pub fn image_len(&self) -> u64 {
        disk::image_len(self.clean.len(), self.block_size)
    }
}

/// Runs `examine`: the report on stdout, or one line on stderr and exit
/// code 1 when the device is not a readable dm disk log.
pub fn run(opts: &ExamineOptions) -> ExitCode {
    let examined = match examine(&opts.device, &opts.node_dir) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("dm-ulogd examine: {}: {msg}", opts.device);
            return ExitCode::Runtime;
        }
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    match render(&examined, opts, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("dm-ulogd examine: cannot write the report: {e}");
            ExitCode::Runtime
        }
    }
}

/// Opens `spec` read-only and reads its header and clean bits. Errors name
/// what is wrong with the device in one line.
pub fn examine(spec: &str, node_dir: &Path) -> Result<Examined, String> {
    let file = open_read_only(spec, node_dir)?;
    let st = stat::fstat(file.as_fd()).map_err(|e| format!("cannot stat it: {}", e.desc()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let (kind, block_size) = if kind == SFlag::S_IFBLK {
        let bs = sys::logical_block_size(file.as_fd())
            .map_err(|e| format!("cannot read its logical block size: {}", e.desc()))?;
        let major = stat::major(st.st_rdev);
        let minor = stat::minor(st.st_rdev);
        (DeviceKind::Block { major, minor }, u64::from(bs).max(512))
    } else if kind == SFlag::S_IFREG {
        // An image saved with dd: the kernel's own unit of 512 bytes.
        (DeviceKind::File, 512)
    } else {
        return Err("not a block device or a file".into());
    };
    if block_size > IO_BUF_LEN as u64 {
        return Err(format!(
            "its logical block size of {block_size} bytes is larger than dm-ulogd reads ({IO_BUF_LEN})"
        ));
    }
    let size = (&file)
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size it: {}", io_desc(&e)))?;
    if size < disk::HEADER_LEN as u64 {
        return Err(format!(
            "too small for a dm disk log: {size} bytes, its header alone needs {}",
            disk::HEADER_LEN
        ));
    }

    let mut io = IoBuf::new();
    let head = io.get(block_size as usize);
    let got = read_up_to(&file, head, 0)
        .map_err(|e| format!("cannot read its header: {}", io_desc(&e)))?;
    let head = &head[..got];
    let region_count = match disk::parse_header(head) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(format!(
                "not a dm disk log: magic {:#010x} at byte 0, a disk log has {MAGIC:#010x}",
                le_u32(head, 0)
            ));
        }
        Err(e) => return Err(format!("not a dm disk log dm-ulogd can read: {e}")),
    };
    let version = le_u32(head, 4);
    let image_len = disk::image_len(region_count, block_size);
    if size < image_len {
        return Err(format!(
            "cut short, or not this log's device: its header records {region_count} regions, \
             which need {image_len} bytes, but it has {size}"
        ));
    }
    let mut clean = Bitmap::try_new(region_count).map_err(|e| {
        format!(
            "no memory for the bits of {region_count} regions: {}",
            e.desc()
        )
    })?;
    let mut offset = 0u64;
    while offset < image_len {
        let len = (image_len - offset).min(IO_BUF_LEN as u64) as usize;
        let buf = io.get(len);
        file.read_exact_at(buf, offset)
            .map_err(|e| format!("cannot read {len} bytes at byte {offset}: {}", io_desc(&e)))?;
        disk::load_clean_bits(&mut clean, offset, buf);
        offset += len as u64;
    }
    Ok(Examined {
        kind,
        size,
        block_size,
        version,
        clean,
    })
}

/// An I/O error in the words of the errno table, as the other messages.
fn io_desc(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads from `offset` until `buf` is full or the device ends.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Opens a path, or major:minor through a node made in `node_dir`, opened
/// and unlinked at once. O_RDONLY always; O_DIRECT where the file system
/// allows it, so the bits come from the device, not a stale page cache.
fn open_read_only(spec: &str, node_dir: &Path) -> Result<File, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_DIRECT;
    let open = |path: &Path| -> Result<File, Errno> {
        match nix::fcntl::open(path, flags, Mode::empty()) {
            Err(Errno::EINVAL) => nix::fcntl::open(path, flags - OFlag::O_DIRECT, Mode::empty()),
            other => other,
        }
        .map(File::from)
    };
    let Some((major, minor)) = parse_dev_numbers(spec) else {
        return open(Path::new(spec))
            .map_err(|e| format!("cannot open it read-only: {}", e.desc()));
    };
    let name = format!(".dm-ulogd-examine-{}-node", std::process::id());
    let node = node_dir.join(&name);
    let _ = std::fs::remove_file(&node);
    stat::mknod(
        &node,
        SFlag::S_IFBLK,
        Mode::S_IRUSR,
        stat::makedev(major, minor),
    )
    .map_err(|e| {
        format!(
            "cannot make a device node for it in {} ({}); give a path, or a directory that allows device nodes with --node-dir",
            node_dir.display(),
            e.desc()
        )
    })?;
    let opened = open(&node);
    let _ = std::fs::remove_file(&node);
    opened.map_err(|e| {
        format!(
            "cannot open block device {major}:{minor} read-only: {}",
            e.desc()
        )
    })
}

/// Runs of dirty regions as (first, last), inclusive, in order.
pub fn dirty_runs(clean: &Bitmap) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        let first = clean.find_next_zero(from);
        if first >= clean.len() {
            return None;
        }
        let end = clean.find_next_one(first);
        from = end;
        Some((first, end - 1))
    })
}

/// Writes the report.
pub fn render(e: &Examined, opts: &ExamineOptions, out: &mut impl Write) -> io::Result<()> {
    let regions = e.clean.len();
    let clean = e.clean.count_ones();
    let dirty = regions - clean;
    match e.kind {
        DeviceKind::Block { major, minor } => writeln!(
            out,
            "device: {}, block device {major}:{minor}, {} bytes, logical block {} bytes",
            opts.device, e.size, e.block_size
        )?,
        DeviceKind::File => writeln!(out, "device: {}, file, {} bytes", opts.device, e.size)?,
    }
    let read_as = if e.version == VERSION {
        ""
    } else {
        " (read as 2)"
    };
    writeln!(
        out,
        "header: magic {MAGIC:#010x}, version {}{read_as}, {regions} regions",
        e.version
    )?;
    writeln!(out, "image: {} bytes, fits the device", e.image_len())?;
    writeln!(out, "clean: {clean} regions")?;
    writeln!(out, "dirty: {dirty} regions")?;
    let region_bytes = opts.region_size.map(|s| u128::from(s) * SECTOR);
    if let (Some(sectors), Some(bytes)) = (opts.region_size, region_bytes) {
        writeln!(
            out,
            "region size: {sectors} sectors ({bytes} bytes); {regions} regions cover at most {} bytes of the mirror",
            u128::from(regions) * bytes
        )?;
        writeln!(
            out,
            "resync: at most {} bytes in {dirty} regions (the last region ends with the mirror)",
            u128::from(dirty) * bytes
        )?;
    }
    if !opts.dirty && region_bytes.is_none() {
        return Ok(());
    }
    for (first, last) in dirty_runs(&e.clean) {
        write!(out, "dirty regions {first}-{last} ({})", last - first + 1)?;
        if let Some(bytes) = region_bytes {
            let start = u128::from(first) * bytes;
            let end = u128::from(last + 1) * bytes;
            write!(
                out,
                ": bytes {start}-{}, sectors {}-{}",
                end - 1,
                start / SECTOR,
                end / SECTOR - 1
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examined(regions: u64, dirty: &[u64]) -> Examined {
        let mut clean = Bitmap::try_new(regions).unwrap();
        clean.fill(true);
        for &r in dirty {
            clean.clear(r);
        }
        Examined {
            kind: DeviceKind::Block {
                major: 254,
                minor: 3,
            },
            size: 1 << 20,
            block_size: 512,
            version: 2,
            clean,
        }
    }

    fn opts(dirty: bool, region_size: Option<u32>) -> ExamineOptions {
        ExamineOptions {
            device: "/dev/mapper/m0_log".into(),
            dirty,
            region_size,
            node_dir: std::path::PathBuf::from("/dev"),
        }
    }

    fn text(e: &Examined, o: &ExamineOptions) -> String {
        let mut out = Vec::new();
        render(e, o, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn runs_of_dirty_regions() {
        let runs = |n, d: &[u64]| dirty_runs(&examined(n, d).clean).collect::<Vec<_>>();
        assert_eq!(runs(128, &[]), vec![]);
        assert_eq!(
            runs(128, &[0, 3, 4, 5, 63, 64, 127]),
            vec![(0, 0), (3, 5), (63, 64), (127, 127)]
        );
        let all: Vec<u64> = (0..130).collect();
        assert_eq!(runs(130, &all), vec![(0, 129)]);
    }

    #[test]
    fn report_of_a_clean_log() {
        assert_eq!(
            text(&examined(128, &[]), &opts(true, None)),
            "device: /dev/mapper/m0_log, block device 254:3, 1048576 bytes, logical block 512 bytes\n\
             header: magic 0x4d695272, version 2, 128 regions\n\
             image: 1536 bytes, fits the device\n\
             clean: 128 regions\n\
             dirty: 0 regions\n"
        );
    }

    #[test]
    fn report_with_dirty_byte_ranges() {
        let mut e = examined(128, &[3, 100, 101]);
        e.version = 1;
        let t = text(&e, &opts(false, Some(1024)));
        assert!(t.contains("version 1 (read as 2), 128 regions\n"), "{t}");
        assert!(t.contains("clean: 125 regions\ndirty: 3 regions\n"), "{t}");
        assert!(t.contains(
            "region size: 1024 sectors (524288 bytes); 128 regions cover at most 67108864 bytes of the mirror\n"
        ));
        assert!(t.contains("resync: at most 1572864 bytes in 3 regions"));
        assert!(t.ends_with(
            "dirty regions 3-3 (1): bytes 1572864-2097151, sectors 3072-4095\n\
             dirty regions 100-101 (2): bytes 52428800-53477375, sectors 102400-104447\n"
        ));
        // --dirty alone: the regions without bytes.
        let t = text(&e, &opts(true, None));
        assert!(
            t.ends_with("dirty regions 3-3 (1)\ndirty regions 100-101 (2)\n"),
            "{t}"
        );
    }
}

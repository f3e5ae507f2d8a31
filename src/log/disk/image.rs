//! The kernel's on-disk log format (dm-log.c): the header, where the clean
//! bits lie, an image rendered from the bitmaps and read back into them.

use crate::bitmap::{self, Bitmap};

pub const MAGIC: u32 = 0x4D69_5272;
pub const VERSION: u32 = 2;
/// Byte offset of the clean bits (LOG_OFFSET = 2 sectors).
pub const BITMAP_OFFSET: u64 = 1024;
/// Bytes of the header that carry fields (magic, version, nr_regions).
pub const HEADER_LEN: usize = 16;

/// Bytes the on-disk image needs for `region_count` regions on a device with
/// `block_size` logical blocks.
pub fn image_len(region_count: u64, block_size: u64) -> u64 {
    let bitmap_bytes = bitmap::words_for(region_count) as u64 * 8;
    (BITMAP_OFFSET + bitmap_bytes).next_multiple_of(block_size)
}

/// Fills `out` with a disk log's image bytes at `offset` (a block boundary). A
/// region is recorded clean only when it is clean and in sync: the
/// kernel rebuilds the sync bits from the clean bits, so "clean on the
/// device" must imply "in sync" (a CLEAR can reach a region that is out
/// of sync, for instance after a restart without saved state, or just
/// before its recovery is settled). The tracked pending clears stay
/// dirty: no leg flush covers them (a write-back plan empties the list
/// when it starts, after which only clears newer than its leg flush
/// are in it).
pub(super) fn render_image(
    pending_clears: &[u64],
    clean: &Bitmap,
    sync: &Bitmap,
    offset: u64,
    out: &mut [u8],
) {
    let len = out.len() as u64;
    let header_end = BITMAP_OFFSET.min(offset + len);
    if offset < header_end {
        let part = &mut out[..(header_end - offset) as usize];
        part.fill(0);
        if offset == 0 {
            part[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            part[4..8].copy_from_slice(&VERSION.to_le_bytes());
            part[8..16].copy_from_slice(&clean.len().to_le_bytes());
        }
    }
    let bits_from = offset.max(BITMAP_OFFSET);
    if bits_from < offset + len {
        let start = (bits_from - offset) as usize;
        clean.write_le_bytes_masked(
            sync,
            (bits_from - BITMAP_OFFSET) as usize,
            &mut out[start..],
        );
    }
    for &region in pending_clears {
        let byte = BITMAP_OFFSET + region / 8;
        if (offset..offset + len).contains(&byte) {
            out[(byte - offset) as usize] &= !(1u8 << (region % 8));
        }
    }
}

/// Loads into `clean` the clean bits among `chunk`, the image's bytes from
/// `offset` on (a multiple of 8).
pub fn load_clean_bits(clean: &mut Bitmap, offset: u64, chunk: &[u8]) {
    let bits_from = offset.max(BITMAP_OFFSET);
    if bits_from < offset + chunk.len() as u64 {
        let start = (bits_from - offset) as usize;
        clean.read_le_bytes((bits_from - BITMAP_OFFSET) as usize, &chunk[start..]);
    }
}

/// ANDs the clean bits in `chunk`, the image bytes at `offset`, into
/// `clean`.
pub(super) fn and_clean_bits(clean: &mut Bitmap, offset: u64, chunk: &[u8]) {
    let bits_from = offset.max(BITMAP_OFFSET);
    if bits_from < offset + chunk.len() as u64 {
        let start = (bits_from - offset) as usize;
        clean.and_le_bytes((bits_from - BITMAP_OFFSET) as usize, &chunk[start..]);
    }
}

/// Parses the header: Some(nr_regions) for a
/// valid dm-log header, None for anything without the magic; an unknown
/// version is an error, as in the kernel.
pub fn parse_header(h: &[u8]) -> Result<Option<u64>, String> {
    if h.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes cannot hold a dm disk log header ({HEADER_LEN} bytes)",
            h.len()
        ));
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if word(0) != MAGIC {
        return Ok(None);
    }
    let version = word(4);
    // Version 1 is read as 2 on little-endian machines, as the kernel does.
    if version != 1 && version != VERSION {
        return Err(format!("unsupported on-disk log version {version}"));
    }
    let mut nr = [0u8; 8];
    nr.copy_from_slice(&h[8..16]);
    Ok(Some(u64::from_le_bytes(nr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_matches_the_kernel() {
        // 1024 header bytes + bitset rounded to 64 bits, rounded to the block.
        assert_eq!(image_len(1, 512), 1536);
        assert_eq!(image_len(4096, 512), 1536);
        assert_eq!(image_len(4097, 512), 2048);
        assert_eq!(image_len(1, 4096), 4096);
        assert_eq!(image_len(16 * 1024 * 1024, 512), 1024 + 2 * 1024 * 1024);
    }

    #[test]
    fn header_parsing() {
        let mut h = [0u8; 16];
        assert_eq!(parse_header(&h), Ok(None));
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(parse_header(&h), Ok(Some(77)));
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert!(parse_header(&h).is_err());
    }
}

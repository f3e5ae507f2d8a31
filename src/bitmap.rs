//! A fixed-size bitset over u64 words: set/clear/test, popcount and
//! find-next-zero by whole words, and the kernel's little-endian on-disk byte
//! order (region i is bit i & 7 of byte i >> 3).
//!
//! Invariant: bits at and past `len` in the last word are always zero, so a
//! popcount of the words is the count of set bits.

use nix::errno::Errno;

use crate::sys::mapping::MappedWords;

const WORD_BITS: u64 = 64;

#[derive(Debug)]
pub struct Bitmap {
    words: MappedWords,
    len: u64,
}

impl PartialEq for Bitmap {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && *self.words == *other.words
    }
}

/// Number of u64 words that hold `bits` bits.
pub fn words_for(bits: u64) -> usize {
    bits.div_ceil(WORD_BITS) as usize
}

impl Bitmap {
    /// A bitmap of `len` zero bits in memory of its own. Running out of
    /// memory is an error, not an abort: the kernel gets -ENOMEM.
    pub fn try_new(len: u64) -> Result<Self, Errno> {
        let words = MappedWords::anonymous(words_for(len))?;
        Ok(Bitmap { words, len })
    }

    /// A bitmap of `len` bits over existing words (for instance a state
    /// file's mapping), which keep their contents except the tail bits.
    pub fn from_words(words: MappedWords, len: u64) -> Result<Self, Errno> {
        if words.len() != words_for(len) {
            return Err(Errno::EINVAL);
        }
        let mut b = Bitmap { words, len };
        b.trim_tail();
        Ok(b)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory the bits occupy.
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn locate(bit: u64) -> (usize, u64) {
        ((bit / WORD_BITS) as usize, 1u64 << (bit % WORD_BITS))
    }

    /// Caller guarantees `bit < len`.
    pub fn test(&self, bit: u64) -> bool {
        let (w, m) = Self::locate(bit);
        self.words[w] & m != 0
    }

    /// Sets a bit; returns true if it was clear.
    pub fn set(&mut self, bit: u64) -> bool {
        let (w, m) = Self::locate(bit);
        let was = self.words[w] & m;
        self.words[w] |= m;
        was == 0
    }

    /// Clears a bit; returns true if it was set.
    pub fn clear(&mut self, bit: u64) -> bool {
        let (w, m) = Self::locate(bit);
        let was = self.words[w] & m;
        self.words[w] &= !m;
        was != 0
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Sets every bit in `from..to` (clamped to len).
    pub fn set_range(&mut self, from: u64, to: u64) {
        self.apply_range(from, to, true);
    }

    /// Clears every bit in `from..to` (clamped to len).
    pub fn clear_range(&mut self, from: u64, to: u64) {
        self.apply_range(from, to, false);
    }

    fn apply_range(&mut self, from: u64, to: u64, value: bool) {
        let to = to.min(self.len);
        let mut bit = from;
        while bit < to {
            let (w, _) = Self::locate(bit);
            let lo = bit % WORD_BITS;
            let hi = (to - (bit - lo)).min(WORD_BITS);
            let mask = mask_bits(lo, hi);
            if value {
                self.words[w] |= mask;
            } else {
                self.words[w] &= !mask;
            }
            bit += hi - lo;
        }
    }

    /// Sets or clears every bit.
    pub fn fill(&mut self, value: bool) {
        self.words.fill(if value { u64::MAX } else { 0 });
        self.trim_tail();
    }

    /// Copies another bitmap of the same length.
    /// Keeps only the bits also set in `other` (of the same length).
    pub fn and_assign(&mut self, other: &Bitmap) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a &= b;
        }
    }

    pub fn copy_from(&mut self, other: &Bitmap) {
        self.words.copy_from_slice(&other.words);
    }

    /// The first zero bit at or after `from`, or `len` if there is none.
    /// Scans a word at a time.
    pub fn find_next_zero(&self, from: u64) -> u64 {
        if from >= self.len {
            return self.len;
        }
        let (mut w, _) = Self::locate(from);
        let mut word = !self.words[w] & !mask_bits(0, from % WORD_BITS);
        loop {
            if word != 0 {
                let bit = w as u64 * WORD_BITS + u64::from(word.trailing_zeros());
                return bit.min(self.len);
            }
            w += 1;
            if w >= self.words.len() {
                return self.len;
            }
            word = !self.words[w];
        }
    }

    /// The first set bit at or after `from`, or `len` if there is none.
    pub fn find_next_one(&self, from: u64) -> u64 {
        if from >= self.len {
            return self.len;
        }
        let (mut w, _) = Self::locate(from);
        let mut word = self.words[w] & !mask_bits(0, from % WORD_BITS);
        loop {
            if word != 0 {
                return w as u64 * WORD_BITS + u64::from(word.trailing_zeros());
            }
            w += 1;
            if w >= self.words.len() {
                return self.len;
            }
            word = self.words[w];
        }
    }

    /// True when no bit is set.
    pub fn none_set(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    fn trim_tail(&mut self) {
        let rem = self.len % WORD_BITS;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= mask_bits(0, rem);
        }
    }

    /// Writes the bits set both here and in `mask` (a bitmap of the same
    /// length) in the kernel's on-disk byte order into `out`, starting at
    /// byte `byte_offset` of the bitmap (a multiple of 8); bytes past the
    /// end of the bitmap become zero.
    pub fn write_le_bytes_masked(&self, mask: &Bitmap, byte_offset: usize, out: &mut [u8]) {
        let first_word = byte_offset / 8;
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let at = first_word + i;
            let word = match (self.words.get(at), mask.words.get(at)) {
                (Some(a), Some(b)) => a & b,
                _ => 0,
            };
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }

    /// Keeps only the bits also set in `input`, which holds the bitmap's
    /// bytes in the on-disk order from `byte_offset` on (a multiple of 8).
    pub fn and_le_bytes(&mut self, byte_offset: usize, input: &[u8]) {
        let first_word = byte_offset / 8;
        for (i, chunk) in input.chunks(8).enumerate() {
            let Some(word) = self.words.get_mut(first_word + i) else {
                break;
            };
            let mut bytes = [0xffu8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            *word &= u64::from_le_bytes(bytes);
        }
    }

    /// Loads bits from the on-disk byte order, `input` holding the bitmap's
    /// bytes from `byte_offset` on (a multiple of 8). Bits past `len` are
    /// dropped so the tail invariant holds.
    pub fn read_le_bytes(&mut self, byte_offset: usize, input: &[u8]) {
        let first_word = byte_offset / 8;
        for (i, chunk) in input.chunks(8).enumerate() {
            let Some(word) = self.words.get_mut(first_word + i) else {
                break;
            };
            let mut bytes = word.to_le_bytes();
            bytes[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(bytes);
        }
        self.trim_tail();
    }
}

/// A word with bits `lo..hi` set (0 <= lo <= hi <= 64).
fn mask_bits(lo: u64, hi: u64) -> u64 {
    let upper = if hi >= WORD_BITS {
        u64::MAX
    } else {
        (1u64 << hi) - 1
    };
    let lower = if lo >= WORD_BITS {
        u64::MAX
    } else {
        (1u64 << lo) - 1
    };
    upper & !lower
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain Vec<bool> to check the word-level code against.
    fn model_next_zero(bits: &[bool], from: u64) -> u64 {
        (from..bits.len() as u64)
            .find(|&i| !bits[i as usize])
            .unwrap_or(bits.len() as u64)
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
    }

    #[test]
    fn set_clear_test_and_count() {
        let mut b = Bitmap::try_new(130).unwrap();
        assert_eq!(b.words().len(), 3);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(129));
        assert!(b.test(129));
        assert_eq!(b.count_ones(), 2);
        assert!(b.clear(0));
        assert!(!b.clear(0));
        assert_eq!(b.count_ones(), 1);
    }

    #[test]
    fn fill_keeps_the_tail_clear() {
        let mut b = Bitmap::try_new(70).unwrap();
        b.fill(true);
        assert_eq!(b.count_ones(), 70);
        assert_eq!(b.words()[1], (1 << 6) - 1);
        assert_eq!(b.find_next_zero(0), 70);
    }

    #[test]
    fn ranges_match_single_bit_operations() {
        let mut rng = Lcg(7);
        for _ in 0..500 {
            let len = 1 + rng.next() % 300;
            let mut a = Bitmap::try_new(len).unwrap();
            let mut model = vec![false; len as usize];
            for _ in 0..6 {
                let x = rng.next() % (len + 10);
                let y = rng.next() % (len + 10);
                let (from, to) = (x.min(y), x.max(y));
                let value = rng.next().is_multiple_of(2);
                if value {
                    a.set_range(from, to);
                } else {
                    a.clear_range(from, to);
                }
                for i in from..to.min(len) {
                    model[i as usize] = value;
                }
            }
            for i in 0..len {
                assert_eq!(a.test(i), model[i as usize]);
            }
            assert_eq!(a.count_ones(), model.iter().filter(|&&v| v).count() as u64);
            for from in 0..=len + 1 {
                assert_eq!(a.find_next_zero(from), model_next_zero(&model, from));
                let next_one = (from..len).find(|&i| model[i as usize]).unwrap_or(len);
                assert_eq!(a.find_next_one(from), next_one);
            }
        }
    }

    #[test]
    fn on_disk_byte_order_is_the_kernels() {
        // Region i is bit (i & 7) of byte i >> 3.
        let mut b = Bitmap::try_new(128).unwrap();
        b.set(0);
        b.set(9);
        b.set(127);
        let mut all = Bitmap::try_new(128).unwrap();
        all.fill(true);
        let mut out = [0xffu8; 24];
        b.write_le_bytes_masked(&all, 0, &mut out);
        let mut expect = [0u8; 24];
        expect[0] = 0x01;
        expect[1] = 0x02;
        expect[15] = 0x80;
        assert_eq!(out, expect);

        let mut back = Bitmap::try_new(128).unwrap();
        back.read_le_bytes(0, &out[..16]);
        assert_eq!(back, b);

        let mut tail = [0u8; 8];
        b.write_le_bytes_masked(&all, 8, &mut tail);
        assert_eq!(tail[7], 0x80);

        // Only bits set in the mask are written.
        all.clear(9);
        b.write_le_bytes_masked(&all, 0, &mut out);
        expect[1] = 0;
        assert_eq!(out, expect);
    }

    #[test]
    fn reading_drops_bits_past_the_end() {
        let mut b = Bitmap::try_new(10).unwrap();
        b.read_le_bytes(0, &[0xff; 8]);
        assert_eq!(b.count_ones(), 10);
    }
}

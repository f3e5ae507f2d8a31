//! Word arrays in memory mappings: anonymous ones, and shared mappings of a
//! state file so a log's bits outlive the process (a restarted daemon maps
//! the same file again).

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, ProtFlags};

/// `len` u64 words in a mapping of their own, zero-filled when new.
pub struct MappedWords {
    ptr: NonNull<u64>,
    len: usize,
}

fn map_len(words: usize) -> Result<NonZeroUsize, Errno> {
    words
        .checked_mul(8)
        .and_then(NonZeroUsize::new)
        .ok_or(Errno::ENOMEM)
}

impl MappedWords {
    /// Private anonymous memory; ENOMEM when the kernel has none.
    pub fn anonymous(len: usize) -> Result<Self, Errno> {
        if len == 0 {
            return Ok(MappedWords {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        let bytes = map_len(len)?;
        // SAFETY: a fresh anonymous mapping aliases nothing; the result is
        // page-aligned (so u64-aligned) and `bytes` long, and is unmapped
        // only in Drop.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(MappedWords {
            ptr: ptr.cast(),
            len,
        })
    }

    /// A shared mapping of `len` words of `file` at byte `offset` (a
    /// multiple of the page size); stores reach the file at once. The file
    /// must be at least `offset + 8 * len` bytes long.
    pub fn shared(file: BorrowedFd<'_>, offset: u64, len: usize) -> Result<Self, Errno> {
        if len == 0 {
            return Self::anonymous(0);
        }
        let bytes = map_len(len)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        // SAFETY: the mapping is new, page-aligned and `bytes` long. Other
        // mappings of the same file region are made only by another daemon
        // process after this one is gone (the pid file excludes two
        // daemons), so nothing else writes these words while we hold them.
        let ptr = unsafe {
            mman::mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file,
                offset,
            )
        }?;
        Ok(MappedWords {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Deref for MappedWords {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        // SAFETY: `ptr` points at `len` initialised (zero-filled or file
        // backed) u64s, aligned, valid while the mapping lives, which is
        // until Drop; `&self` prevents concurrent mutable access.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for MappedWords {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in deref; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: `ptr`/`len` describe exactly the mapping made in the
        // constructor, and no slice into it outlives `self`.
        let _ = unsafe { mman::munmap(self.ptr.cast(), self.len * 8) };
    }
}

impl std::fmt::Debug for MappedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedWords({} words)", self.len)
    }
}

//! Host memory that can be mapped into an IOAS.

use crate::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// Page-aligned anonymous memory of this process (for example guest RAM), mapped with
/// `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` and unmapped when the last clone is dropped.
///
/// Clones share the memory. [`crate::Ioas::map`] keeps a clone for as long as the memory is
/// mapped, so memory a device can reach is never unmapped under it.
///
/// Devices write this memory behind the compiler's back, so it is only accessed by copying
/// (`read_slice` / `write_slice`, like vm-memory's `Bytes`), never through references.
#[derive(Clone)]
pub struct HostMemory {
    inner: Arc<Mmap>,
}

struct Mmap {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through
// volatile copies of caller-provided buffers, so sharing it between threads is no different
// from sharing it with a device.
unsafe impl Send for Mmap {}
// SAFETY: as for Send: no method hands out references into the mapping.
unsafe impl Sync for Mmap {}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly the mapping made in `HostMemory::new`, and
        // nothing else refers to it any more (this is the last clone, and no IOAS maps it).
        unsafe {
            libc::munmap(self.addr.cast(), self.len);
        }
    }
}

impl fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemory")
            .field("addr", &format_args!("{:#x}", self.host_address()))
            .field("len", &self.inner.len)
            .finish()
    }
}

impl HostMemory {
    /// Allocate `len` bytes (rounded up to whole pages) of zeroed memory.
    pub fn new(len: usize) -> Result<HostMemory> {
        if len == 0 {
            return Err(Error::InvalidArgument);
        }
        let page = page_size();
        let len = len.checked_next_multiple_of(page).ok_or(Error::Overflow)?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing touches no
        // existing memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::last_os_error());
        }
        Ok(HostMemory { inner: Arc::new(Mmap { addr: addr.cast(), len }) })
    }

    /// Size in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always false: host memory holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The host virtual address of the first byte (what `IOMMU_IOAS_MAP` calls `user_va`).
    pub fn host_address(&self) -> u64 {
        self.inner.addr as u64
    }

    /// A raw pointer to the first byte. Accesses through it race with device DMA.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.addr
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => Ok(()),
            _ => Err(Error::BadAddress),
        }
    }

    /// Copy `buf.len()` bytes at `offset` into `buf`. `EFAULT` past the end.
    pub fn read_slice(&self, buf: &mut [u8], offset: usize) -> Result<()> {
        self.check(offset, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: offset + i < len (checked above), so the byte is inside the mapping;
            // a volatile read because devices write this memory concurrently.
            *b = unsafe { self.inner.addr.add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Copy `buf` to `offset`. `EFAULT` past the end.
    pub fn write_slice(&self, buf: &[u8], offset: usize) -> Result<()> {
        self.check(offset, buf.len())?;
        for (i, &b) in buf.iter().enumerate() {
            // SAFETY: inside the mapping (checked above); volatile, as for `read_slice`.
            unsafe { self.inner.addr.add(offset + i).write_volatile(b) };
        }
        Ok(())
    }

    /// Set `len` bytes at `offset` to `byte`.
    pub fn fill(&self, byte: u8, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        for i in 0..len {
            // SAFETY: inside the mapping (checked above).
            unsafe { self.inner.addr.add(offset + i).write_volatile(byte) };
        }
        Ok(())
    }

    /// An owner of the mapping, to keep it alive while an IOAS maps it.
    pub(crate) fn keepalive(&self) -> crate::ioas::KeepAlive {
        Some(self.inner.clone())
    }
}

/// The CPU page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_bounds() {
        let m = HostMemory::new(100).unwrap();
        assert_eq!(m.len(), page_size());
        m.write_slice(b"hello", 10).unwrap();
        let mut b = [0u8; 7];
        m.read_slice(&mut b, 9).unwrap();
        assert_eq!(&b, b"\0hello\0");
        assert_eq!(m.read_slice(&mut b, m.len() - 3), Err(Error::BadAddress));
        assert_eq!(m.write_slice(&b, usize::MAX), Err(Error::BadAddress));
        m.fill(0xaa, 0, 4).unwrap();
        let c = m.clone();
        drop(m);
        c.read_slice(&mut b[..4], 0).unwrap();
        assert_eq!(&b[..4], &[0xaa; 4]);
        assert_eq!(HostMemory::new(0).unwrap_err(), Error::InvalidArgument);
    }
}

//! The kernel self-test's mock IOMMU (`drivers/iommu/iommufd/selftest.c`): its page table,
//! its dma-bufs and the `IOMMU_TEST_CMD` operations.

pub mod pagetable;
pub(crate) mod selftest;

use crate::errno::{Errno, Result};
use crate::platform::{HostFile, HostFileKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A self-test dma-buf: zeroed memory exported by the test driver, revocable.
#[derive(Debug)]
pub struct DmaBuf {
    /// Machine-wide id.
    pub id: u64,
    /// Size in bytes (page multiple).
    pub len: u64,
    pub(crate) mem: Arc<dyn HostFile>,
    revoked: AtomicBool,
}

impl DmaBuf {
    pub(crate) fn new(id: u64, len: u64, mem: Arc<dyn HostFile>) -> DmaBuf {
        DmaBuf { id, len, mem, revoked: AtomicBool::new(false) }
    }

    /// Whether the exporter revoked access.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    pub(crate) fn set_revoked(&self, r: bool) {
        self.revoked.store(r, Ordering::Release)
    }

    /// The memory behind the buffer (what a program's `mmap` of the fd shows).
    pub fn memory(&self) -> &Arc<dyn HostFile> {
        &self.mem
    }
}

/// Stands for a descriptor that is not a mappable file (an engine file given to
/// IOAS_MAP_FILE): accepted at map time, refused when pages are pinned.
#[derive(Debug)]
pub(crate) struct NotAFile;

impl HostFile for NotAFile {
    fn kind(&self) -> HostFileKind {
        HostFileKind::Other
    }
    fn size(&self) -> Result<u64> {
        Ok(0)
    }
    fn resolve_pages(&self, _pgoff: u64, _npages: usize, _out: &mut Vec<u64>) -> Result<()> {
        Err(Errno::EINVAL)
    }
}

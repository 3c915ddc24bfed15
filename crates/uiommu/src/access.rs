//! Emulated-device accesses: DMA by IOVA through an IOAS, on either backend.

use crate::{Error, Ioas, Iova, Result};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use uiommu_uapi::test as t;

/// An emulated device's access to an IOAS (self-test `IOMMU_TEST_OP_CREATE_ACCESS`): reads
/// and writes by IOVA, resolved through the IOAS's mappings the way an emulated (mediated)
/// device's driver accesses guest memory (`iommufd_access_rw`). This is how device DMA is
/// expressed on the kernel backend; it works on the in-process backend too. Closing (drop)
/// destroys the access.
pub struct Access {
    ioas: Mutex<Ioas>,
    afd: i32,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access").field("fd", &self.afd).field("ioas", &self.ioas().raw_id()).finish()
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let ioas = self.ioas();
        ioas.iommufd().backend_ref().close_file(self.afd);
    }
}

impl Access {
    /// A new access to `ioas`.
    pub fn new(ioas: &Ioas) -> Result<Access> {
        let r =
            ioas.iommufd().test_op(t::IOMMU_TEST_OP_CREATE_ACCESS, ioas.raw_id(), &t::TestCreateAccess::default())?;
        Ok(Access { ioas: Mutex::new(ioas.clone()), afd: r.out_access_fd as i32 })
    }

    fn ioas(&self) -> MutexGuard<'_, Ioas> {
        self.ioas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rw(&self, iova: Iova, ptr: u64, len: usize, write: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let p = t::TestAccessRw {
            iova: iova.0,
            length: len as u64,
            uptr: ptr,
            flags: if write { t::MOCK_ACCESS_RW_WRITE } else { 0 },
            pad: 0,
        };
        let ioas = self.ioas().clone();
        ioas.iommufd().test_op(t::IOMMU_TEST_OP_ACCESS_RW, self.afd as u32, &p).map(|_| ())
    }

    /// Read `buf.len()` bytes at `iova` (`IOMMU_TEST_OP_ACCESS_RW`). Fails if any byte is
    /// not mapped in the IOAS.
    pub fn read(&self, iova: Iova, buf: &mut [u8]) -> Result<()> {
        self.rw(iova, buf.as_mut_ptr() as u64, buf.len(), false)
    }

    /// Write `buf` at `iova`. Fails if any byte is not mapped, or not mapped writable.
    pub fn write(&self, iova: Iova, buf: &[u8]) -> Result<()> {
        self.rw(iova, buf.as_ptr() as u64, buf.len(), true)
    }

    /// Move the access to another IOAS of the same iommufd
    /// (`IOMMU_TEST_OP_ACCESS_REPLACE_IOAS`).
    pub fn replace_ioas(&self, ioas: &Ioas) -> Result<()> {
        let mut cur = self.ioas();
        if !cur.iommufd().same_file(ioas.iommufd()) {
            return Err(Error::InvalidArgument);
        }
        let p = t::TestAccessReplaceIoas { ioas_id: ioas.raw_id() };
        cur.iommufd().test_op(t::IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, self.afd as u32, &p)?;
        *cur = ioas.clone();
        Ok(())
    }
}

//! IO page-fault queues.

use crate::{FaultPerm, Iommufd, Iova, ObjectId, Result};
use std::fmt;
use std::sync::Arc;
use uiommu_uapi::iommufd as u;
use uiommu_uapi::IommufdCmd;
use zerocopy::{FromBytes, IntoBytes};

struct FaultInner {
    fd: Iommufd,
    id: u32,
    qfd: i32,
}

impl Drop for FaultInner {
    fn drop(&mut self) {
        // The descriptor holds the object: close it first, then destroy.
        self.fd.backend_ref().close_file(self.qfd);
        crate::destroy_quietly(&self.fd, self.id);
    }
}

/// A queue of IO page requests (`IOMMU_FAULT_QUEUE_ALLOC`): domains allocated with it
/// ([`crate::HwPagetable::with_fault_queue`]) report device page faults here, and the owner
/// answers them ([`FaultQueue::respond`]). Cheap to clone.
#[derive(Clone)]
pub struct FaultQueue {
    inner: Arc<FaultInner>,
}

impl fmt::Debug for FaultQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultQueue").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

/// One page request read from a [`FaultQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The device that faulted.
    pub device: ObjectId,
    /// The PASID of the request, if any.
    pub pasid: Option<u32>,
    /// Page request group.
    pub group: u32,
    /// Requested access.
    pub perm: FaultPerm,
    /// Faulting address.
    pub addr: Iova,
    /// Length hint of the access.
    pub length: u32,
    /// Whether this is the last request of its group (the one to respond to).
    pub last_page: bool,
    /// Identifies the group in [`FaultQueue::respond`].
    pub cookie: u32,
}

/// How a page request was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageResponse {
    /// The page is now mapped: the device may retry.
    Success,
    /// The request cannot be satisfied.
    Invalid,
}

const REC: usize = std::mem::size_of::<u::IommuHwptPgfault>();

impl FaultQueue {
    /// A new fault queue.
    pub fn new(fd: &Iommufd) -> Result<FaultQueue> {
        let mut c = u::IommuFaultAlloc::new_sized();
        fd.cmd(&mut c)?;
        Ok(FaultQueue {
            inner: Arc::new(FaultInner { fd: fd.clone(), id: c.out_fault_id, qfd: c.out_fault_fd as i32 }),
        })
    }

    /// The fault object's id.
    pub fn id(&self) -> ObjectId {
        ObjectId(self.inner.id)
    }

    /// The iommufd the queue belongs to.
    pub fn iommufd(&self) -> &Iommufd {
        &self.inner.fd
    }

    /// Read the queued page requests (up to 64; empty if none are queued).
    pub fn read(&self) -> Result<Vec<PageFault>> {
        let mut buf = vec![0u8; 64 * REC];
        let n = self.inner.fd.backend_ref().read_file(self.inner.qfd, &mut buf)?;
        Ok(buf[..n - n % REC]
            .chunks_exact(REC)
            .filter_map(|c| u::IommuHwptPgfault::read_from_bytes(c).ok())
            .map(|r| PageFault {
                device: ObjectId(r.dev_id),
                pasid: (r.flags & u::IOMMU_PGFAULT_FLAGS_PASID_VALID != 0).then_some(r.pasid),
                group: r.grpid,
                perm: FaultPerm::from_bits_retain(r.perm),
                addr: Iova(r.addr),
                length: r.length,
                last_page: r.flags & u::IOMMU_PGFAULT_FLAGS_LAST_PAGE != 0,
                cookie: r.cookie,
            })
            .collect())
    }

    /// Answer the group `fault` belongs to.
    pub fn respond(&self, fault: &PageFault, response: PageResponse) -> Result<()> {
        let r = u::IommuHwptPageResponse {
            cookie: fault.cookie,
            code: match response {
                PageResponse::Success => u::IOMMUFD_PAGE_RESP_SUCCESS,
                PageResponse::Invalid => u::IOMMUFD_PAGE_RESP_INVALID,
            },
        };
        self.inner.fd.backend_ref().write_file(self.inner.qfd, r.as_bytes()).map(|_| ())
    }
}

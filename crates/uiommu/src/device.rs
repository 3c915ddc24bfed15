//! Emulated devices and hardware page tables (domains).

use crate::backend::DmaBuf;
use crate::{DeviceFlags, Error, FaultPerm, FaultQueue, HwCaps, HwptFlags, Ioas, Iommufd, Iova, ObjectId, Result};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use uiommu_uapi::iommufd as u;
use uiommu_uapi::test as t;
use uiommu_uapi::IommufdCmd;

struct HwptInner {
    fd: Iommufd,
    id: u32,
    ioas: Ioas,
    _fault: Option<FaultQueue>,
}

impl Drop for HwptInner {
    fn drop(&mut self) {
        crate::destroy_quietly(&self.fd, self.id);
    }
}

/// A paging hardware page table (an IOMMU domain) that mirrors an [`Ioas`]
/// (`IOMMU_HWPT_ALLOC`). Devices attached to it translate DMA through it. Cheap to clone;
/// destroyed when the last clone and the last device attached to it are gone.
#[derive(Clone)]
pub struct HwPagetable {
    inner: Arc<HwptInner>,
}

impl fmt::Debug for HwPagetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HwPagetable").field("id", &self.inner.id).field("ioas", &self.inner.ioas.raw_id()).finish()
    }
}

/// Pages devices wrote, as read from a domain ([`HwPagetable::dirty_bitmap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    start: Iova,
    page_size: u64,
    npages: u64,
    bits: Vec<u64>,
}

impl DirtyBitmap {
    /// IOVA of the first page.
    pub fn start(&self) -> Iova {
        self.start
    }

    /// Bytes of IOVA per bit.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Whether the page containing `iova` is dirty (false outside the bitmap's range).
    pub fn is_dirty(&self, iova: Iova) -> bool {
        match iova.checked_offset_from(self.start) {
            Some(off) if off / self.page_size < self.npages => {
                let i = off / self.page_size;
                self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
            }
            _ => false,
        }
    }

    /// The first IOVA of every dirty page, in order.
    pub fn dirty_pages(&self) -> impl Iterator<Item = Iova> + '_ {
        (0..self.npages)
            .filter(|i| self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0)
            .map(|i| self.start.unchecked_add(i * self.page_size))
    }

    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// The raw bitmap (bit `i` = page `start + i * page_size`), as the kernel fills it.
    pub fn as_words(&self) -> &[u64] {
        &self.bits
    }
}

impl HwPagetable {
    /// Allocate a domain for `dev` that mirrors `ioas` (`IOMMU_HWPT_ALLOC`).
    pub fn new(dev: &Device, ioas: &Ioas, flags: HwptFlags) -> Result<HwPagetable> {
        Self::alloc(dev, ioas, flags, None)
    }

    /// Like [`HwPagetable::new`], reporting IO page faults to `fault`
    /// (`IOMMU_HWPT_FAULT_ID_VALID`).
    pub fn with_fault_queue(dev: &Device, ioas: &Ioas, flags: HwptFlags, fault: &FaultQueue) -> Result<HwPagetable> {
        Self::alloc(dev, ioas, flags, Some(fault))
    }

    fn alloc(dev: &Device, ioas: &Ioas, flags: HwptFlags, fault: Option<&FaultQueue>) -> Result<HwPagetable> {
        let fd = ioas.iommufd();
        if !fd.same_file(&dev.fd) || fault.is_some_and(|f| !fd.same_file(f.iommufd())) {
            return Err(Error::InvalidArgument);
        }
        let mut c = u::IommuHwptAlloc {
            flags: flags.bits() | if fault.is_some() { u::IOMMU_HWPT_FAULT_ID_VALID } else { 0 },
            dev_id: dev.id,
            pt_id: ioas.raw_id(),
            data_type: u::IOMMU_HWPT_DATA_NONE,
            fault_id: fault.map_or(0, |f| f.id().0),
            ..u::IommuHwptAlloc::new_sized()
        };
        fd.cmd(&mut c)?;
        Ok(HwPagetable {
            inner: Arc::new(HwptInner {
                fd: fd.clone(),
                id: c.out_hwpt_id,
                ioas: ioas.clone(),
                _fault: fault.cloned(),
            }),
        })
    }

    /// The HWPT's object id.
    pub fn id(&self) -> ObjectId {
        ObjectId(self.inner.id)
    }

    /// The IOAS the domain mirrors.
    pub fn ioas(&self) -> &Ioas {
        &self.inner.ioas
    }

    /// Switch dirty tracking on or off (`IOMMU_HWPT_SET_DIRTY_TRACKING`); the domain must
    /// have been allocated with [`HwptFlags::DIRTY_TRACKING`].
    pub fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        let mut c = u::IommuHwptSetDirtyTracking {
            flags: if enable { u::IOMMU_HWPT_DIRTY_TRACKING_ENABLE } else { 0 },
            hwpt_id: self.inner.id,
            ..u::IommuHwptSetDirtyTracking::new_sized()
        };
        self.inner.fd.cmd(&mut c).map(|_| ())
    }

    /// Read which pages of `[iova, iova + len)` devices wrote, one bit per `page_size` bytes
    /// (`IOMMU_HWPT_GET_DIRTY_BITMAP`); with `clear` the dirty state is reset as it is read.
    pub fn dirty_bitmap(&self, iova: Iova, len: u64, page_size: u64, clear: bool) -> Result<DirtyBitmap> {
        if page_size == 0 || !page_size.is_power_of_two() {
            return Err(Error::InvalidArgument);
        }
        let npages = len.div_ceil(page_size);
        let mut bits = vec![0u64; npages.div_ceil(64).max(1) as usize];
        let mut c = u::IommuHwptGetDirtyBitmap {
            hwpt_id: self.inner.id,
            flags: if clear { 0 } else { u::IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR },
            iova: iova.0,
            length: len,
            page_size,
            data: bits.as_mut_ptr() as u64,
            ..u::IommuHwptGetDirtyBitmap::new_sized()
        };
        self.inner.fd.cmd(&mut c)?;
        Ok(DirtyBitmap { start: iova, page_size, npages, bits })
    }

    /// Mark every page of `[iova, iova + len)` dirty as if devices had written it, one bit
    /// per `page_size` bytes (self-test `IOMMU_TEST_OP_DIRTY`); returns the pages marked.
    /// Works on both backends (unlike [`Device::dma_write`]).
    pub fn mark_dirty(&self, iova: Iova, len: u64, page_size: u64) -> Result<u64> {
        if page_size == 0 || !page_size.is_power_of_two() {
            return Err(Error::InvalidArgument);
        }
        let npages = len.div_ceil(page_size);
        let bits = vec![u64::MAX; npages.div_ceil(64).max(1) as usize];
        let p = t::TestDirty { iova: iova.0, length: len, page_size, uptr: bits.as_ptr() as u64, ..Default::default() };
        let r = self.inner.fd.test_op(t::IOMMU_TEST_OP_DIRTY, self.inner.id, &p)?;
        Ok(r.out_nr_dirty)
    }
}

/// Where a device attaches: an IOAS (iommufd picks or creates a compatible domain) or a
/// specific [`HwPagetable`].
#[derive(Clone, Copy, Debug)]
pub enum PageTable<'a> {
    /// An IOAS.
    Ioas(&'a Ioas),
    /// A hardware page table.
    Hwpt(&'a HwPagetable),
}

impl<'a> From<&'a Ioas> for PageTable<'a> {
    fn from(v: &'a Ioas) -> Self {
        PageTable::Ioas(v)
    }
}

impl<'a> From<&'a HwPagetable> for PageTable<'a> {
    fn from(v: &'a HwPagetable) -> Self {
        PageTable::Hwpt(v)
    }
}

impl PageTable<'_> {
    fn fd(&self) -> &Iommufd {
        match self {
            PageTable::Ioas(i) => i.iommufd(),
            PageTable::Hwpt(h) => &h.inner.fd,
        }
    }

    fn raw_id(&self) -> u32 {
        match self {
            PageTable::Ioas(i) => i.raw_id(),
            PageTable::Hwpt(h) => h.inner.id,
        }
    }

    fn hold(&self) -> Held {
        match self {
            PageTable::Ioas(i) => Held { _ioas: Some((*i).clone()), _hwpt: None },
            PageTable::Hwpt(h) => Held { _ioas: None, _hwpt: Some((*h).clone()) },
        }
    }
}

/// What an attachment keeps alive.
#[derive(Debug)]
struct Held {
    _ioas: Option<Ioas>,
    _hwpt: Option<HwPagetable>,
}

#[derive(Debug)]
struct Attachment {
    hwpt: u32,
    _held: Held,
}

/// IOMMU facts about a device ([`Device::hw_info`], `IOMMU_GET_HW_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwInfo {
    /// `IOMMU_HW_INFO_TYPE_*` of the IOMMU driver's data (the mock's is `0xfeedbeef`).
    pub data_type: u32,
    /// Capabilities.
    pub capabilities: HwCaps,
    /// PASID width in bits (0 if PASIDs are unsupported).
    pub max_pasid_log2: u8,
}

/// An emulated device behind the IOMMU: the mock device of iommufd's self-test ABI
/// (`IOMMU_TEST_OP_MOCK_DOMAIN`), bound to the iommufd and attached to a page table from
/// birth. Destroyed (with its automatic domain, if any) when dropped.
pub struct Device {
    fd: Iommufd,
    stdev: u32,
    id: u32,
    att: Mutex<Attachment>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").field("id", &self.id).field("hwpt", &self.att().hwpt).finish()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        crate::destroy_quietly(&self.fd, self.stdev);
    }
}

impl Device {
    /// A new mock device attached to `pt`.
    pub fn mock<'a>(pt: impl Into<PageTable<'a>>) -> Result<Device> {
        Self::mock_with_flags(pt, DeviceFlags::empty())
    }

    /// A new mock device with `flags`, attached to `pt` (`IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`).
    pub fn mock_with_flags<'a>(pt: impl Into<PageTable<'a>>, flags: DeviceFlags) -> Result<Device> {
        let pt = pt.into();
        let fd = pt.fd().clone();
        let p = t::TestMockDomainFlags { dev_flags: flags.bits(), ..Default::default() };
        let r = fd.test_op(t::IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt.raw_id(), &p)?;
        Ok(Device {
            fd,
            stdev: r.out_stdev_id,
            id: r.out_idev_id,
            att: Mutex::new(Attachment { hwpt: r.out_hwpt_id, _held: pt.hold() }),
        })
    }

    fn att(&self) -> MutexGuard<'_, Attachment> {
        self.att.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device's object id.
    pub fn id(&self) -> ObjectId {
        ObjectId(self.id)
    }

    /// The iommufd the device is bound to.
    pub fn iommufd(&self) -> &Iommufd {
        &self.fd
    }

    /// The HWPT the device is attached to (an automatic one when attached to an IOAS).
    pub fn hwpt_id(&self) -> ObjectId {
        ObjectId(self.att().hwpt)
    }

    /// Move the device to another page table without a window of no translation
    /// (`IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`); returns the HWPT now attached.
    pub fn replace<'a>(&self, pt: impl Into<PageTable<'a>>) -> Result<ObjectId> {
        let pt = pt.into();
        if !pt.fd().same_file(&self.fd) {
            return Err(Error::InvalidArgument);
        }
        let mut att = self.att();
        let p = t::TestMockDomainReplace { pt_id: pt.raw_id() };
        let r = self.fd.test_op(t::IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, self.stdev, &p)?;
        let old = std::mem::replace(&mut *att, Attachment { hwpt: r.pt_id, _held: pt.hold() });
        drop(att);
        drop(old);
        Ok(ObjectId(r.pt_id))
    }

    /// The device's IOMMU information (`IOMMU_GET_HW_INFO`).
    pub fn hw_info(&self) -> Result<HwInfo> {
        let mut data = [0u64; 16];
        let mut c = u::IommuHwInfo {
            dev_id: self.id,
            data_len: std::mem::size_of_val(&data) as u32,
            data_uptr: data.as_mut_ptr() as u64,
            ..u::IommuHwInfo::new_sized()
        };
        self.fd.cmd(&mut c)?;
        Ok(HwInfo {
            data_type: c.out_data_type,
            capabilities: HwCaps::from_bits_retain(c.out_capabilities),
            max_pasid_log2: c.out_max_pasid_log2,
        })
    }

    /// The device reads `buf.len()` bytes at `iova` through its IO page table. A missing
    /// translation or permission is an IO page fault: [`Error::DmaFault`].
    ///
    /// In-process backend only ([`Error::Unsupported`] on the kernel backend, which has no
    /// device-side DMA call: use an [`crate::Access`] there).
    pub fn dma_read(&self, iova: Iova, buf: &mut [u8]) -> Result<()> {
        self.fd.backend_ref().dma(self.id, 0, iova.0, DmaBuf::Read(buf))
    }

    /// The device writes `buf` at `iova` (see [`Device::dma_read`]); written pages become
    /// dirty while the domain tracks dirty pages.
    pub fn dma_write(&self, iova: Iova, buf: &[u8]) -> Result<()> {
        self.fd.backend_ref().dma(self.id, 0, iova.0, DmaBuf::Write(buf))
    }

    /// Make the device raise a page request for `addr` (self-test
    /// `IOMMU_TEST_OP_TRIGGER_IOPF`); it is delivered to the fault queue of the domain
    /// attached at `pasid` (`None`: the device's RID), if that domain has one.
    pub fn inject_page_fault(&self, pasid: Option<u32>, addr: Iova, perm: FaultPerm, group: u32) -> Result<()> {
        let p = t::TestTriggerIopf {
            dev_id: self.id,
            pasid: pasid.unwrap_or(0),
            grpid: group,
            perm: perm.bits(),
            addr: addr.0,
        };
        self.fd.test_op(t::IOMMU_TEST_OP_TRIGGER_IOPF, 0, &p).map(|_| ())
    }
}

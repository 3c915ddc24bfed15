//! vm-memory integration (cargo feature `vm-memory`): [`IoasIommu`] implements vm-memory
//! 0.18's [`Iommu`] trait on a uiommu IOAS, so a vhost-user or virtio backend that accesses
//! guest memory through [`vm_memory::IommuMemory`] translates device addresses (IOVAs)
//! through the IOAS's mappings.
//!
//! An IOAS maps IOVAs to *host* virtual addresses; `IommuMemory` wants *guest physical*
//! addresses of its backend memory. [`IoasIommu::new`] therefore records where each region
//! of the guest memory lives in the host, and translates IOVA → host address (the IOAS) →
//! guest address (the region). [`Ioas::map_guest_memory`] maps part of a guest memory into
//! an IOAS (keeping the memory alive while mapped).
//!
//! The translation cache (vm-memory's [`Iotlb`]) fills on demand from the mappings made
//! through the IOAS's handles ([`Ioas::translate`]) and is flushed whenever the IOAS unmaps
//! anything, so a translation requested after [`Ioas::unmap`] returned never uses the
//! removed mapping. Permissions follow the mapping's [`MapFlags`].
//!
//! ```
//! use uiommu::vm_memory::IoasIommu;
//! use uiommu::{Iommufd, Ioas, Iova, MapFlags};
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};
//!
//! let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let ioas = Ioas::new(&Iommufd::in_process().unwrap()).unwrap();
//! ioas.map_guest_memory(&guest, GuestAddress(0x1000), 0x4000, Iova(0x10_0000), MapFlags::READ | MapFlags::WRITE).unwrap();
//! let iommu = IoasIommu::new(&ioas, &guest).unwrap();
//! let dma = IommuMemory::new(guest.clone(), iommu, true, ());
//! dma.write_obj(0xabcd_u32, GuestAddress(0x10_0010)).unwrap();
//! assert_eq!(guest.read_obj::<u32>(GuestAddress(0x1010)).unwrap(), 0xabcd);
//! ```

use crate::{Error, Ioas, Iova, MapFlags, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange as VmIovaRange};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, Iommu, Iotlb, MemoryRegionAddress, Permissions};

/// One guest memory region as the host sees it.
#[derive(Clone, Copy, Debug)]
struct HostRegion {
    host: u64,
    len: u64,
    gpa: u64,
}

/// vm-memory's [`Iommu`] on a uiommu IOAS: IOVAs translate to guest physical addresses of a
/// guest memory through the IOAS's mappings (see the [module docs](self)).
#[derive(Debug)]
pub struct IoasIommu {
    ioas: Ioas,
    regions: Vec<HostRegion>,
    iotlb: RwLock<Iotlb>,
    /// The IOAS generation the IOTLB's contents belong to.
    seen: AtomicU64,
}

fn perms(f: MapFlags) -> Permissions {
    match (f.contains(MapFlags::READ), f.contains(MapFlags::WRITE)) {
        (true, true) => Permissions::ReadWrite,
        (true, false) => Permissions::Read,
        (false, true) => Permissions::Write,
        (false, false) => Permissions::No,
    }
}

fn cannot(base: u64, length: u64, reason: String) -> IommuError {
    IommuError::CannotResolve { iova_range: VmIovaRange { base: GuestAddress(base), length: length as usize }, reason }
}

impl IoasIommu {
    /// Translate through `ioas` into the guest physical addresses of `mem` (whose regions
    /// must all be host-mapped, as `GuestMemoryMmap` regions are).
    pub fn new<M: GuestMemoryBackend>(ioas: &Ioas, mem: &M) -> Result<IoasIommu> {
        let mut regions = Vec::new();
        for r in mem.iter() {
            let host = r.get_host_address(MemoryRegionAddress(0)).map_err(|_| Error::BadAddress)? as u64;
            regions.push(HostRegion { host, len: r.len(), gpa: r.start_addr().0 });
        }
        Ok(IoasIommu { ioas: ioas.clone(), regions, iotlb: RwLock::default(), seen: AtomicU64::new(ioas.generation()) })
    }

    /// The IOAS translations come from.
    pub fn ioas(&self) -> &Ioas {
        &self.ioas
    }

    /// Drop every cached translation.
    pub fn invalidate_all(&self) {
        self.write().invalidate_all();
    }

    fn write(&self) -> RwLockWriteGuard<'_, Iotlb> {
        self.iotlb.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Iotlb> {
        self.iotlb.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Flush the cache if the IOAS unmapped anything since it was filled. Call with the
    /// write lock held.
    fn sync(&self, tlb: &mut Iotlb) {
        let g = self.ioas.generation();
        if self.seen.load(Ordering::SeqCst) != g {
            tlb.invalidate_all();
            self.seen.store(g, Ordering::SeqCst);
        }
    }

    /// The guest address of host address `hva` and the bytes left in its region.
    fn guest_of(&self, hva: u64) -> Option<(u64, u64)> {
        self.regions
            .iter()
            .find(|r| r.host <= hva && hva - r.host < r.len)
            .map(|r| (r.gpa + (hva - r.host), r.len - (hva - r.host)))
    }

    /// Load the translations of `[start, start + len)` from the IOAS into the cache.
    fn fill(&self, start: u64, len: u64, access: Permissions) -> std::result::Result<(), IommuError> {
        let mut tlb = self.write();
        self.sync(&mut tlb);
        let end = start + len;
        let mut cur = start;
        while cur < end {
            let m = self.ioas.translate(Iova(cur)).ok_or_else(|| {
                cannot(cur, end - cur, format!("IOVA {cur:#x} is not mapped in IOAS {}", self.ioas.id()))
            })?;
            let p = perms(m.flags);
            if !p.allow(access) {
                return Err(cannot(
                    cur,
                    end - cur,
                    format!("IOVA {cur:#x} is mapped {:?}, {access:?} access needed", m.flags),
                ));
            }
            let off = cur - m.iova.0;
            let hva = m.host_address + off;
            let (gpa, left) = self.guest_of(hva).ok_or_else(|| {
                cannot(cur, end - cur, format!("IOVA {cur:#x} maps host address {hva:#x}, which is not guest memory"))
            })?;
            // Cache the whole rest of the mapping (within the region), not just the request.
            let n = (m.len - off).min(left);
            tlb.set_mapping(GuestAddress(cur), GuestAddress(gpa), n as usize, p)?;
            cur += n;
        }
        Ok(())
    }
}

impl Iommu for IoasIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> std::result::Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        if iova.0.checked_add(length as u64).is_none() {
            return Err(cannot(iova.0, length as u64, "IOVA range wraps around".into()));
        }
        if self.seen.load(Ordering::SeqCst) != self.ioas.generation() {
            self.sync(&mut self.write());
        }
        for _ in 0..2 {
            let fails = match Iotlb::lookup(self.read(), iova, length, access) {
                Ok(it) => return Ok(it),
                Err(f) => f,
            };
            for r in fails.misses.iter().chain(&fails.access_fails) {
                self.fill(r.base.0, r.length as u64, access)?;
            }
        }
        Err(cannot(iova.0, length as u64, "the IOAS changed during translation".into()))
    }
}

impl Ioas {
    /// Map guest memory `[gpa, gpa + len)` (within one region of `mem`) at `iova`. The
    /// IOAS keeps a clone of `mem` (so its mappings stay alive) until the range is unmapped.
    pub fn map_guest_memory<M>(&self, mem: &M, gpa: GuestAddress, len: u64, iova: Iova, flags: MapFlags) -> Result<()>
    where
        M: GuestMemoryBackend + Clone + Send + Sync + 'static,
    {
        let r = mem.find_region(gpa).ok_or(Error::BadAddress)?;
        let off = gpa.0 - r.start_addr().0;
        if off.checked_add(len).is_none_or(|e| e > r.len()) {
            return Err(Error::BadAddress);
        }
        let host = r.get_host_address(MemoryRegionAddress(off)).map_err(|_| Error::BadAddress)? as u64;
        self.map_inner(host, len, Some(iova), flags, Some(Arc::new(mem.clone()))).map(|_| ())
    }
}

//! I/O address spaces.

use crate::{Error, HostMemory, Iommufd, Iova, IovaRange, MapFlags, ObjectId, Result};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uiommu_uapi::iommufd as u;
use uiommu_uapi::test as t;
use uiommu_uapi::IommufdCmd;

/// Something that keeps mapped memory alive while an IOAS maps it.
pub(crate) type KeepAlive = Option<Arc<dyn Any + Send + Sync>>;

/// One mapping made through an [`Ioas`] handle, as [`Ioas::mappings`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First IOVA of the mapping.
    pub iova: Iova,
    /// Length in bytes.
    pub len: u64,
    /// Host virtual address the IOVA range translates to.
    pub host_address: u64,
    /// Device permissions.
    pub flags: MapFlags,
}

struct Entry {
    len: u64,
    host_address: u64,
    flags: MapFlags,
    _keep: KeepAlive,
}

impl Entry {
    fn end(&self, iova: u64) -> u64 {
        iova + self.len
    }
}

struct IoasInner {
    fd: Iommufd,
    id: u32,
    /// The mappings made through this IOAS's handles, by IOVA.
    maps: Mutex<BTreeMap<u64, Entry>>,
    /// Bumped by every unmap (translation caches compare it).
    generation: AtomicU64,
}

impl Drop for IoasInner {
    fn drop(&mut self) {
        // Destroying the IOAS unmaps everything; only then may the memory go.
        crate::destroy_quietly(&self.fd, self.id);
    }
}

/// An I/O address space (IOAS): a set of IOVA → host memory mappings that devices attached
/// to it (through a [`crate::HwPagetable`] or an automatic domain) and [`crate::Access`]es
/// see. Cheap to clone; destroyed (`IOMMU_DESTROY`) when the last clone, and the last handle
/// depending on it, is dropped.
///
/// The handle records the mappings it makes ([`Ioas::mappings`], [`Ioas::translate`]) and
/// keeps their memory alive until they are unmapped. Mappings made by other means on the
/// same IOAS id (another process, raw ioctls) are not seen there.
#[derive(Clone)]
pub struct Ioas {
    inner: Arc<IoasInner>,
}

impl fmt::Debug for Ioas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ioas").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

/// The IOVA ranges an IOAS allows and the alignment it requires ([`Ioas::iova_ranges`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IovaRanges {
    /// Usable IOVA intervals, in increasing order.
    pub ranges: Vec<IovaRange>,
    /// Required alignment of IOVAs and lengths for map and copy.
    pub alignment: u64,
}

fn map_cmd(ioas: u32, flags: MapFlags, user_va: u64, length: u64, iova: Option<Iova>) -> u::IommuIoasMap {
    let fixed = if iova.is_some() { u::IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 };
    u::IommuIoasMap {
        flags: flags.bits() | fixed,
        ioas_id: ioas,
        user_va,
        length,
        iova: iova.map_or(0, |i| i.0),
        ..u::IommuIoasMap::new_sized()
    }
}

impl Ioas {
    /// `IOMMU_IOAS_ALLOC`: a new, empty IOAS.
    pub fn new(fd: &Iommufd) -> Result<Ioas> {
        let mut c = u::IommuIoasAlloc::new_sized();
        fd.cmd(&mut c)?;
        Ok(Ioas {
            inner: Arc::new(IoasInner {
                fd: fd.clone(),
                id: c.out_ioas_id,
                maps: Mutex::default(),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// The IOAS's object id.
    pub fn id(&self) -> ObjectId {
        ObjectId(self.inner.id)
    }

    /// The iommufd the IOAS belongs to.
    pub fn iommufd(&self) -> &Iommufd {
        &self.inner.fd
    }

    pub(crate) fn raw_id(&self) -> u32 {
        self.inner.id
    }

    fn maps(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.inner.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether two handles refer to the same IOAS.
    pub fn same_as(&self, other: &Ioas) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn mem_range(mem: &HostMemory, offset: u64, len: u64) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= mem.len() as u64 => Ok(mem.host_address() + offset),
            _ => Err(Error::BadAddress),
        }
    }

    /// Map `len` bytes of `mem` from `offset` at an IOVA the IOAS chooses
    /// (`IOMMU_IOAS_MAP`); returns that IOVA.
    pub fn map(&self, mem: &HostMemory, offset: u64, len: u64, flags: MapFlags) -> Result<Iova> {
        let va = Self::mem_range(mem, offset, len)?;
        self.map_inner(va, len, None, flags, mem.keepalive())
    }

    /// Map `len` bytes of `mem` from `offset` at `iova` (`IOMMU_IOAS_MAP` with
    /// `FIXED_IOVA`). `EEXIST` if the range is taken.
    pub fn map_at(&self, iova: Iova, mem: &HostMemory, offset: u64, len: u64, flags: MapFlags) -> Result<()> {
        let va = Self::mem_range(mem, offset, len)?;
        self.map_inner(va, len, Some(iova), flags, mem.keepalive()).map(|_| ())
    }

    /// Map `len` bytes of host memory at `host_address`, at `iova` or (with `None`) at an
    /// IOVA the IOAS chooses; returns the IOVA.
    ///
    /// # Safety
    /// The memory must stay mapped in this process, and may be read and written by devices
    /// at any time, until the range is unmapped or the IOAS destroyed. (With the kernel
    /// backend the pages are pinned, but the in-process engine reaches them by address.)
    pub unsafe fn map_raw(&self, host_address: u64, len: u64, iova: Option<Iova>, flags: MapFlags) -> Result<Iova> {
        self.map_inner(host_address, len, iova, flags, None)
    }

    pub(crate) fn map_inner(
        &self,
        va: u64,
        len: u64,
        iova: Option<Iova>,
        flags: MapFlags,
        keep: KeepAlive,
    ) -> Result<Iova> {
        let mut maps = self.maps();
        let mut c = map_cmd(self.inner.id, flags, va, len, iova);
        self.inner.fd.cmd(&mut c)?;
        maps.insert(c.iova, Entry { len, host_address: va, flags, _keep: keep });
        Ok(Iova(c.iova))
    }

    /// Unmap every mapping inside `[iova, iova + len)` (`IOMMU_IOAS_UNMAP`); returns the
    /// number of bytes unmapped. A range that cuts a mapping fails, as do ranges with
    /// nothing mapped (`ENOENT`).
    pub fn unmap(&self, iova: Iova, len: u64) -> Result<u64> {
        let mut maps = self.maps();
        let mut c =
            u::IommuIoasUnmap { ioas_id: self.inner.id, iova: iova.0, length: len, ..u::IommuIoasUnmap::new_sized() };
        if let Err(e) = self.inner.fd.cmd(&mut c) {
            // Some areas may be gone even so (the kernel keeps those removed before a failure).
            self.inner.generation.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        let all = iova.0 == 0 && len == u64::MAX;
        let end = iova.0.saturating_add(len);
        maps.retain(|&a, e| !(all || (a >= iova.0 && e.end(a) <= end)));
        // After the record changed: a cache that saw the old generation refills from the new
        // record.
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        Ok(c.length)
    }

    /// Unmap everything (`IOMMU_IOAS_UNMAP` of the whole space); returns the bytes unmapped.
    pub fn unmap_all(&self) -> Result<u64> {
        self.unmap(Iova(0), u64::MAX)
    }

    /// Map the pages `src` maps at `[src_iova, src_iova + len)` into this IOAS too
    /// (`IOMMU_IOAS_COPY`), at `dst_iova` or at an IOVA this IOAS chooses; returns it.
    pub fn copy_from(
        &self,
        src: &Ioas,
        src_iova: Iova,
        len: u64,
        dst_iova: Option<Iova>,
        flags: MapFlags,
    ) -> Result<Iova> {
        if !self.inner.fd.same_file(&src.inner.fd) {
            return Err(Error::InvalidArgument);
        }
        // What the source handle knows of the range (pieces of its mappings).
        let end = src_iova.0.saturating_add(len);
        let pieces: Vec<(u64, u64, u64, KeepAlive)> = src
            .maps()
            .range(..end)
            .filter(|(&a, e)| e.end(a) > src_iova.0)
            .map(|(&a, e)| {
                let s = a.max(src_iova.0);
                let l = e.end(a).min(end) - s;
                (s - src_iova.0, l, e.host_address + (s - a), e._keep.clone())
            })
            .collect();
        let mut maps = self.maps();
        let fixed = if dst_iova.is_some() { u::IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 };
        let mut c = u::IommuIoasCopy {
            flags: flags.bits() | fixed,
            dst_ioas_id: self.inner.id,
            src_ioas_id: src.inner.id,
            length: len,
            dst_iova: dst_iova.map_or(0, |i| i.0),
            src_iova: src_iova.0,
            ..u::IommuIoasCopy::new_sized()
        };
        self.inner.fd.cmd(&mut c)?;
        for (off, l, va, keep) in pieces {
            maps.insert(c.dst_iova + off, Entry { len: l, host_address: va, flags, _keep: keep });
        }
        Ok(Iova(c.dst_iova))
    }

    /// The usable IOVA ranges and the required alignment (`IOMMU_IOAS_IOVA_RANGES`).
    pub fn iova_ranges(&self) -> Result<IovaRanges> {
        let mut cap = 8usize;
        loop {
            let mut v = vec![u::IommuIovaRange::default(); cap];
            let mut c = u::IommuIoasIovaRanges {
                ioas_id: self.inner.id,
                num_iovas: cap as u32,
                allowed_iovas: v.as_mut_ptr() as u64,
                ..u::IommuIoasIovaRanges::new_sized()
            };
            match self.inner.fd.cmd(&mut c) {
                Ok(_) => {
                    v.truncate(c.num_iovas as usize);
                    let ranges = v.iter().map(|r| IovaRange { start: Iova(r.start), last: Iova(r.last) }).collect();
                    return Ok(IovaRanges { ranges, alignment: c.out_iova_alignment });
                }
                Err(Error::Os(libc::EMSGSIZE)) if cap < 1 << 16 => cap = (c.num_iovas as usize).max(cap * 2),
                Err(e) => return Err(e),
            }
        }
    }

    /// Restrict the IOVAs this IOAS may use to `ranges` (`IOMMU_IOAS_ALLOW_IOVAS`; an empty
    /// list lifts the restriction).
    pub fn allow_iovas(&self, ranges: &[IovaRange]) -> Result<()> {
        let v: Vec<u::IommuIovaRange> =
            ranges.iter().map(|r| u::IommuIovaRange { start: r.start.0, last: r.last.0 }).collect();
        let mut c = u::IommuIoasAllowIovas {
            ioas_id: self.inner.id,
            num_iovas: v.len() as u32,
            allowed_iovas: v.as_ptr() as u64,
            ..u::IommuIoasAllowIovas::new_sized()
        };
        self.inner.fd.cmd(&mut c).map(|_| ())
    }

    /// Reserve `[start, start + len)` so nothing is mapped there (self-test
    /// `IOMMU_TEST_OP_ADD_RESERVED`, the way an IOMMU driver reserves an MSI window).
    pub fn add_reserved(&self, start: Iova, len: u64) -> Result<()> {
        let p = t::TestAddReserved { start: start.0, length: len };
        self.inner.fd.test_op(t::IOMMU_TEST_OP_ADD_RESERVED, self.inner.id, &p).map(|_| ())
    }

    /// Allow or forbid large IOMMU pages for this IOAS's domains (`IOMMU_OPTION`
    /// `IOMMU_OPTION_HUGE_PAGES`).
    pub fn set_huge_pages(&self, enabled: bool) -> Result<()> {
        let mut c = u::IommuOption {
            option_id: u::IOMMU_OPTION_HUGE_PAGES,
            op: u::IOMMU_OPTION_OP_SET,
            object_id: self.inner.id,
            val64: enabled as u64,
            ..u::IommuOption::new_sized()
        };
        self.inner.fd.cmd(&mut c).map(|_| ())
    }

    /// The mappings made through this IOAS's handles, in IOVA order.
    pub fn mappings(&self) -> Vec<Mapping> {
        self.maps()
            .iter()
            .map(|(&a, e)| Mapping { iova: Iova(a), len: e.len, host_address: e.host_address, flags: e.flags })
            .collect()
    }

    /// The mapping containing `iova`, if one was made through this IOAS's handles.
    pub fn translate(&self, iova: Iova) -> Option<Mapping> {
        let maps = self.maps();
        let (&a, e) = maps.range(..=iova.0).next_back()?;
        (iova.0 < e.end(a)).then_some(Mapping {
            iova: Iova(a),
            len: e.len,
            host_address: e.host_address,
            flags: e.flags,
        })
    }

    /// Changes whenever a range is unmapped (translation caches compare it).
    #[cfg_attr(not(feature = "vm-memory"), allow(dead_code))]
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }
}

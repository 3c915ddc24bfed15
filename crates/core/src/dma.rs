//! DMA by emulated devices: reads and writes at an IOVA through the domain attached to a
//! device (the hardware half of an IOMMU that the kernel never sees).
//!
//! Translation walks the attached paging domain leaf by leaf (a nested HWPT translates
//! through its parent's stage-2 domain; the mock stage-1 is identity), checks the leaf's
//! permission, copies through the platform, and marks written leaves dirty while dirty
//! tracking is on. A translation failure is an IO page fault: the call fails with EFAULT
//! and nothing at or beyond the faulting address is touched.
//!
//! ## IOTLB
//! A [`DmaPort`] is one device's DMA engine with its own IOTLB: a direct-mapped cache of
//! leaf translations that is used without taking the context lock. Exactness: every device
//! has a [`DmaEpoch`]; any change that can make a cached translation wrong — unmapping from a
//! domain the device uses, attaching/replacing/detaching the device, clearing dirty bits,
//! switching dirty tracking — bumps the epoch (under the context lock) and then waits until
//! no DMA of that device is in flight. A DMA counts itself in flight *before* it checks the
//! epoch, so it either sees the new epoch (and walks the updated table under the lock) or
//! finishes before the invalidation returns: no access ever lands through a stale entry.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::object::ObjType;
use crate::platform::PAGE_SIZE;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A device's IOTLB invalidation epoch and in-flight DMA count.
#[derive(Debug, Default)]
pub struct DmaEpoch {
    gen: AtomicU64,
    inflight: AtomicU32,
}

impl DmaEpoch {
    /// Invalidate every IOTLB entry of the device and wait for DMAs in flight.
    pub(crate) fn invalidate(&self) {
        self.gen.fetch_add(1, Ordering::SeqCst);
        while self.inflight.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }
}

/// Invalidate the IOTLBs of every device translating through paging domain `hwpt`.
pub(crate) fn invalidate_domain(g: &Ictx, hwpt: u32) {
    for d in g.devices.values() {
        if d.attached.values().any(|&h| h == hwpt || g.nested.get(&h).is_some_and(|n| n.parent == hwpt)) {
            d.epoch.invalidate();
        }
    }
}

/// The paging HWPT that translates DMA from (dev, pasid).
fn paging_hwpt(g: &Ictx, dev: u32, pasid: u32) -> Result<u32> {
    g.objs.expect(dev, ObjType::Device)?;
    let h = *g.devices[&dev].attached.get(&pasid).ok_or(Errno::EFAULT)?;
    Ok(g.nested.get(&h).map_or(h, |n| n.parent))
}

/// A translated leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// First IOVA of the leaf.
    pub iova: u64,
    /// Leaf size in bytes.
    pub len: u64,
    /// Physical address of the leaf's first byte.
    pub phys: u64,
    /// Readable by the device.
    pub read: bool,
    /// Writable by the device.
    pub write: bool,
}

/// One IOTLB entry: a cached leaf translation. Plain words, so that a hit reads just the
/// fields it needs (a struct of bools and options copied whole was stalling on store
/// forwarding and cost most of a hit).
#[derive(Clone, Copy, Debug, Default)]
struct TlbEntry {
    /// `iova >> 12` + 1 (0 = empty).
    tag: u64,
    gen: u64,
    /// First IOVA, length and physical address of the leaf.
    iova: u64,
    len: u64,
    phys: u64,
    /// `TLB_*` bits.
    flags: u64,
}

const TLB_READ: u64 = 1;
const TLB_WRITE: u64 = 2;
/// The leaf is known dirty (writes need no page-table update).
const TLB_DIRTY: u64 = 4;
/// The domain tracks dirty pages.
const TLB_TRACKING: u64 = 8;

impl TlbEntry {
    #[inline(always)]
    fn allows(&self, write: bool) -> bool {
        self.flags & if write { TLB_WRITE } else { TLB_READ } != 0
    }
}

const TLB_SIZE: usize = 64;

/// One device's DMA engine: translates through its IOTLB and copies through the platform.
pub struct DmaPort {
    ctx: Arc<Context>,
    dev: u32,
    pasid: u32,
    epoch: Arc<DmaEpoch>,
    tlb: Box<[TlbEntry; TLB_SIZE]>,
    /// The domain translating for this port and whether it tracks dirty pages, valid for
    /// one epoch generation (attachment changes and tracking switches bump the epoch).
    domain: Option<(u64, crate::hw_pagetable::DomainPt, bool)>,
    platform: Arc<dyn crate::Platform>,
    /// The level-0 table the last walk reached (`MockPageTable::lookup_leaf_hinted`).
    walk_hint: usize,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for DmaPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPort").field("dev", &self.dev).field("pasid", &self.pasid).finish_non_exhaustive()
    }
}

impl Context {
    /// A DMA port for device `dev` at `pasid` (0 = RID): ENOENT if `dev` is not a device.
    pub fn dma_port(self: &Arc<Self>, dev: u32, pasid: u32) -> Result<DmaPort> {
        let g = self.lock();
        g.objs.expect(dev, ObjType::Device)?;
        let epoch = g.devices[&dev].epoch.clone();
        Ok(DmaPort {
            ctx: self.clone(),
            dev,
            pasid,
            epoch,
            tlb: Box::new([TlbEntry::default(); TLB_SIZE]),
            domain: None,
            platform: self.machine.platform.clone(),
            walk_hint: usize::MAX,
            hits: 0,
            misses: 0,
        })
    }

    /// An emulated device reads `buf.len()` bytes at `iova` through the domain attached to
    /// its `pasid` (0 = RID). EFAULT on a translation or permission fault (an IO page
    /// fault); ENOENT if `dev` is not a device.
    pub fn dma_read(self: &Arc<Self>, dev: u32, pasid: u32, iova: u64, buf: &mut [u8]) -> Result<()> {
        self.dma_port(dev, pasid)?.read(iova, buf)
    }

    /// An emulated device writes `buf` at `iova` (see [`Context::dma_read`]); written
    /// leaves become dirty while dirty tracking is enabled on the domain.
    pub fn dma_write(self: &Arc<Self>, dev: u32, pasid: u32, iova: u64, buf: &[u8]) -> Result<()> {
        self.dma_port(dev, pasid)?.write(iova, buf)
    }
}

impl DmaPort {
    /// IOTLB hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Drop every cached translation (the next accesses walk the page table).
    pub fn flush(&mut self) {
        self.tlb.fill(TlbEntry::default());
    }

    /// Translate one IOVA through the IOTLB (walking the domain on a miss).
    pub fn translate(&mut self, iova: u64) -> Result<Translation> {
        let e = &self.tlb[self.lookup(iova, false)?];
        Ok(Translation {
            iova: e.iova,
            len: e.len,
            phys: e.phys,
            read: e.flags & TLB_READ != 0,
            write: e.flags & TLB_WRITE != 0,
        })
    }

    #[inline(always)]
    fn slot(iova: u64) -> usize {
        ((iova >> 12) as usize) % TLB_SIZE
    }

    /// The slot of the entry for `iova`, filled from the page table on a miss (under the
    /// context lock); EFAULT if nothing translates it. With `for_write` while tracking, the
    /// leaf is marked dirty first. (A slot index, not a copy of the entry: callers load the
    /// fields they use, in the shape the entry was stored.)
    #[inline(always)]
    fn lookup(&mut self, iova: u64, for_write: bool) -> Result<usize> {
        let tag = (iova >> 12) + 1;
        let slot = Self::slot(iova);
        let e = &self.tlb[slot];
        if e.tag == tag
            && e.gen == self.epoch.gen.load(Ordering::Acquire)
            && !(for_write && e.flags & (TLB_TRACKING | TLB_DIRTY) == TLB_TRACKING)
        {
            self.hits += 1;
            return Ok(slot);
        }
        self.misses += 1;
        self.fill(iova, for_write)
    }

    #[cold]
    #[inline(never)]
    fn fill(&mut self, iova: u64, for_write: bool) -> Result<usize> {
        let gen = self.epoch.gen.load(Ordering::Acquire);
        if !matches!(&self.domain, Some((g0, _, _)) if *g0 == gen) {
            // First miss of this epoch: find the domain under the context lock.
            let g = self.ctx.lock();
            let hwpt = paging_hwpt(&g, self.dev, self.pasid)?;
            let h = g.hwpt.get(&hwpt).ok_or(Errno::EFAULT)?;
            self.domain = Some((gen, h.pt.clone(), h.tracking));
            self.walk_hint = usize::MAX;
        }
        let Some((_, pt, tracking)) = &self.domain else { return Err(Errno::EFAULT) };
        let tracking = *tracking;
        // The walk needs only the page table's own lock. Only translations are cached; a
        // fault is reported again on the next access.
        let (li, ll, lp, prot) = pt.lookup_leaf_hinted(iova, &mut self.walk_hint).ok_or(Errno::EFAULT)?;
        let mut flags = if prot.read { TLB_READ } else { 0 } | if prot.write { TLB_WRITE } else { 0 };
        if tracking {
            flags |= TLB_TRACKING;
            if for_write && prot.write {
                pt.set_dirty(iova);
                flags |= TLB_DIRTY;
            }
        }
        let slot = Self::slot(iova);
        self.tlb[slot] = TlbEntry { tag: (iova >> 12) + 1, gen, iova: li, len: ll, phys: lp, flags };
        Ok(slot)
    }

    /// Read `buf.len()` bytes at `iova`.
    #[inline]
    pub fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<()> {
        self.access(iova, buf.len(), false, |p, phys, r| p.read_phys(phys, &mut buf[r]))
    }

    /// Write `buf` at `iova`.
    #[inline]
    pub fn write(&mut self, iova: u64, buf: &[u8]) -> Result<()> {
        self.access(iova, buf.len(), true, |p, phys, r| p.write_phys(phys, &buf[r]))
    }

    #[inline]
    fn access<F: FnMut(&dyn crate::Platform, u64, std::ops::Range<usize>) -> Result<()>>(
        &mut self,
        iova: u64,
        len: usize,
        write: bool,
        mut copy: F,
    ) -> Result<()> {
        let len = len as u64;
        if len == 0 {
            return Ok(());
        }
        iova.checked_add(len - 1).ok_or(Errno::EFAULT)?;
        let mut done = 0u64;
        while done < len {
            let at = iova + done;
            // Translate (possibly walking the table under the context lock) before
            // counting ourselves in flight: an invalidation holding that lock waits for
            // in-flight DMAs, so we must never wait for the lock while counted.
            let e = self.tlb[self.lookup(at, write)?];
            if !e.allows(write) {
                return Err(Errno::EFAULT);
            }
            // Reads validate after copying (a stale read is simply redone); writes are
            // counted in flight so an invalidation waits for them.
            if write {
                self.epoch.inflight.fetch_add(1, Ordering::SeqCst);
            }
            // (A read's entry was validated by the lookup and is re-checked after the copy.)
            let res = if write && e.gen != self.epoch.gen.load(Ordering::SeqCst) {
                Ok(None) // invalidated meanwhile: translate again
            } else {
                // Copy up to the end of the leaf, within one page per platform call.
                let phys = e.phys + (at - e.iova);
                let n = (e.iova + e.len - at).min(PAGE_SIZE - phys % PAGE_SIZE).min(len - done);
                let r = copy(&*self.platform, phys, done as usize..(done + n) as usize).map(|_| Some(n));
                if !write && e.gen != self.epoch.gen.load(Ordering::SeqCst) {
                    Ok(None)
                } else {
                    r
                }
            };
            if write {
                self.epoch.inflight.fetch_sub(1, Ordering::Release);
            }
            match res? {
                Some(n) => done += n,
                None => continue,
            }
        }
        Ok(())
    }
}

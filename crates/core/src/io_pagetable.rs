//! The IO address space engine (the kernel's `io_pagetable.c`): areas, domains joining and
//! leaving, filling domains from page stores, unmap with access callbacks, copy, split.
//!
//! Invariants (checked by [`Ictx::check_invariants`] in tests):
//! * areas of one IOAS never overlap; each refers to a live store and lies inside it;
//! * while an IOAS has ≥1 domain every area (except revoked dma-buf areas) holds its page
//!   span in its store, and every domain maps exactly the areas' translations;
//! * a store's per-page hold count = covering areas-with-domains + access pins.

use crate::context::Ictx;
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::iova::{self, ReservedOwner, ReservedRanges};
use crate::machine::Machine;
use crate::mock::pagetable::Prot;
use crate::pages::StoreId;
use crate::platform::PAGE_SIZE;
use std::collections::BTreeMap;

/// One mapping of an IOAS: `[iova, last]` onto bytes of a store.
#[derive(Clone, Debug)]
pub(crate) struct Area {
    pub iova: u64,
    pub last: u64,
    pub store: StoreId,
    /// Byte offset of `iova` inside the store.
    pub offset: u64,
    pub prot: Prot,
    /// Access pins covering this area.
    pub num_accesses: u32,
    /// Pins by internal accesses (HW queues): unmap gives EBUSY.
    pub num_locks: u32,
    /// An unmap is waiting for accesses to let go: new pins fail.
    pub prevent_access: bool,
    /// dma-buf revoked: unmapped from every domain for good.
    pub revoked: bool,
}

impl Area {
    pub fn len(&self) -> u64 {
        self.last - self.iova + 1
    }
    /// First and last store page index spanned.
    pub fn page_span(&self) -> (u64, u64) {
        (self.offset / PAGE_SIZE, (self.offset + self.len() - 1) / PAGE_SIZE)
    }
}

/// An IO address space.
#[derive(Debug)]
pub(crate) struct Ioas {
    pub areas: BTreeMap<u64, Area>,
    pub reserved: ReservedRanges,
    pub allowed: Vec<(u64, u64)>,
    /// HWPT_PAGING ids joined, in join order.
    pub domains: Vec<u32>,
    /// Attached access ids.
    pub accesses: Vec<u32>,
    /// `IOMMU_OPTION_HUGE_PAGES`.
    pub large_pages: bool,
}

impl Default for Ioas {
    fn default() -> Self {
        Ioas {
            areas: BTreeMap::new(),
            reserved: ReservedRanges::default(),
            allowed: Vec::new(),
            domains: Vec::new(),
            accesses: Vec::new(),
            large_pages: true,
        }
    }
}

impl Ioas {
    /// Areas intersecting `[start, last]`, ascending.
    pub fn areas_in(&self, start: u64, last: u64) -> Vec<u64> {
        let mut v: Vec<u64> = Vec::new();
        if let Some((&k, a)) = self.areas.range(..start).next_back() {
            if a.last >= start {
                v.push(k);
            }
        }
        v.extend(self.areas.range(start..=last).map(|(&k, _)| k));
        v
    }

    pub fn intersects_area(&self, start: u64, last: u64) -> bool {
        !self.areas_in(start, last).is_empty()
    }

    /// The area containing `iova`.
    pub fn area_at(&self, iova: u64) -> Option<&Area> {
        self.areas.range(..=iova).next_back().map(|(_, a)| a).filter(|a| a.last >= iova)
    }

    /// Occupied ranges for the allocator (areas and reserved ranges).
    pub fn used_ranges(&self) -> Vec<(u64, u64)> {
        let mut v = self.reserved.merged();
        v.extend(self.areas.values().map(|a| (a.iova, a.last)));
        v
    }

    pub fn allowed_intersects(&self, start: u64, last: u64) -> bool {
        self.allowed.iter().any(|&r| iova::overlaps(r, (start, last)))
    }

    /// Whether every area satisfies `align` (iova, length, in-page offset of its source).
    pub fn areas_aligned(&self, align: u64) -> bool {
        self.areas
            .values()
            .all(|a| a.iova % align == 0 && a.len() % align == 0 && (a.offset % PAGE_SIZE).is_multiple_of(align))
    }
}

/// Translation runs `(iova, phys, len)` of an area whose pages are held in its store.
pub(crate) fn area_runs(g: &Ictx, a: &Area) -> Vec<(u64, u64, u64)> {
    let store = &g.stores[&a.store];
    let (first, last) = a.page_span();
    let (lo, hi) = (a.offset, a.offset + a.len());
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    let mut covered = 0;
    for (s, e, phys) in store.pinned_runs(first, last) {
        let b0 = (s * PAGE_SIZE).max(lo);
        let b1 = (e * PAGE_SIZE).min(hi);
        let iova = a.iova + (b0 - lo);
        let p = phys + (b0 - s * PAGE_SIZE);
        let n = b1 - b0;
        covered += n;
        match runs.last_mut() {
            Some(r) if r.0 + r.2 == iova && r.1 + r.2 == p => r.2 += n,
            _ => runs.push((iova, p, n)),
        }
    }
    assert_eq!(covered, a.len(), "area pages held while mapped");
    runs
}

impl Ictx {
    /// Current IOVA alignment of an IOAS (io_pagetable.md §2).
    pub fn iova_alignment(&self, ioas_id: u32) -> u64 {
        self.iova_alignment_of(&self.ioas[&ioas_id])
    }

    /// [`iova_alignment`](Self::iova_alignment) of an IOAS already looked up.
    #[inline]
    pub fn iova_alignment_of(&self, ioas: &Ioas) -> u64 {
        let mut align = if ioas.large_pages { 1 } else { PAGE_SIZE };
        for d in &ioas.domains {
            align = align.max(self.hwpt[d].pt.min_page());
        }
        for a in &ioas.accesses {
            if self.accesses[a].needs_pin {
                align = align.max(PAGE_SIZE);
            }
        }
        align
    }

    /// Map one area into one domain (its pages are held).
    fn map_area_in(&mut self, area_iova: u64, ioas_id: u32, hwpt_id: u32) -> Result<()> {
        let ioas = &self.ioas[&ioas_id];
        let a = &ioas.areas[&area_iova];
        if a.revoked {
            return Ok(());
        }
        let runs = area_runs(self, a);
        // With large pages off every IOPTE is at most one PAGE_SIZE.
        let max_page = if ioas.large_pages { 1 << 63 } else { PAGE_SIZE };
        let prot = a.prot;
        let pt = &mut self.hwpt.get_mut(&hwpt_id).expect("domain").pt;
        for (i, &(iova, phys, len)) in runs.iter().enumerate() {
            if let Err(e) = fail_point(FailSite::DomainMap).and_then(|_| pt.map_max(iova, phys, len, prot, max_page)) {
                for &(iova, _, len) in &runs[..i] {
                    pt.unmap(iova, len);
                }
                crate::dma::invalidate_domain(self, hwpt_id);
                return Err(e);
            }
        }
        Ok(())
    }

    fn unmap_area_in(&mut self, a: &Area, hwpt_id: u32) {
        if a.revoked {
            return;
        }
        if let Some(h) = self.hwpt.get_mut(&hwpt_id) {
            h.pt.unmap(a.iova, a.len());
            crate::dma::invalidate_domain(self, hwpt_id);
        }
    }

    /// Install a new area in every domain of its IOAS (holding its pages first).
    pub fn fill_area(&mut self, m: &Machine, ioas_id: u32, area_iova: u64) -> Result<()> {
        let domains = self.ioas[&ioas_id].domains.clone();
        if domains.is_empty() {
            return Ok(());
        }
        let a = self.ioas[&ioas_id].areas[&area_iova].clone();
        if a.revoked {
            return Ok(());
        }
        let (first, last) = a.page_span();
        self.stores.get_mut(&a.store).expect("store").hold(m, first, last)?;
        for (i, &d) in domains.iter().enumerate() {
            if let Err(e) = self.map_area_in(area_iova, ioas_id, d) {
                for &d in &domains[..i] {
                    self.unmap_area_in(&a, d);
                }
                self.stores.get_mut(&a.store).expect("store").release(m, first, last);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Remove an area completely: from every domain, its page holds, its store reference.
    pub fn remove_area(&mut self, m: &Machine, ioas_id: u32, area_iova: u64) -> u64 {
        let ioas = self.ioas.get_mut(&ioas_id).expect("ioas");
        let a = ioas.areas.remove(&area_iova).expect("area");
        let domains = ioas.domains.clone();
        for &d in &domains {
            self.unmap_area_in(&a, d);
        }
        if !domains.is_empty() && !a.revoked {
            let (first, last) = a.page_span();
            self.stores.get_mut(&a.store).expect("store").release(m, first, last);
        }
        self.put_store(a.store);
        a.len()
    }

    /// Insert an area referencing `store` and fill it into the domains; on failure nothing
    /// remains.
    pub fn add_area(&mut self, m: &Machine, ioas_id: u32, area: Area) -> Result<()> {
        // The area itself (`iopt_area_alloc`).
        fail_point(FailSite::Alloc)?;
        let iova = area.iova;
        let store = area.store;
        self.stores.get_mut(&store).expect("store").area_refs += 1;
        self.ioas.get_mut(&ioas_id).expect("ioas").areas.insert(iova, area);
        if let Err(e) = self.fill_area(m, ioas_id, iova) {
            self.ioas.get_mut(&ioas_id).expect("ioas").areas.remove(&iova);
            self.put_store(store);
            return Err(e);
        }
        Ok(())
    }

    pub fn put_store(&mut self, id: StoreId) {
        let s = self.stores.get_mut(&id).expect("store");
        s.area_refs -= 1;
        if s.area_refs == 0 {
            debug_assert_eq!(s.npinned, 0, "store freed while pinned");
            self.stores.remove(&id);
        }
    }

    /// A domain joins an IOAS (io_pagetable.md §6).
    pub fn domain_join(&mut self, m: &Machine, ioas_id: u32, hwpt_id: u32) -> Result<()> {
        let (min_page, (ap_start, ap_last)) = {
            let pt = &self.hwpt[&hwpt_id].pt;
            (pt.min_page(), pt.aperture())
        };
        if min_page > PAGE_SIZE {
            return Err(Errno::EINVAL);
        }
        let cur = self.iova_alignment(ioas_id);
        let ioas = &self.ioas[&ioas_id];
        if min_page > cur && !ioas.areas_aligned(min_page) {
            return Err(Errno::EADDRINUSE);
        }
        let mut resv = Vec::new();
        if ap_start != 0 {
            resv.push((0, ap_start - 1));
        }
        if ap_last != u64::MAX {
            resv.push((ap_last + 1, u64::MAX));
        }
        for &(s, l) in &resv {
            if ioas.intersects_area(s, l) || ioas.allowed_intersects(s, l) {
                return Err(Errno::EADDRINUSE);
            }
        }
        // The aperture's reserved ranges and the domain's slot in the IOAS.
        fail_point(FailSite::Alloc)?;
        let first_domain = ioas.domains.is_empty();
        let areas: Vec<u64> = ioas.areas.keys().copied().collect();
        // Hold pages for every area if this is the first domain, then map.
        let mut done: Vec<u64> = Vec::new();
        let mut err = None;
        for &k in &areas {
            let a = self.ioas[&ioas_id].areas[&k].clone();
            if a.revoked {
                continue;
            }
            let (first, last) = a.page_span();
            if first_domain {
                if let Err(e) = self.stores.get_mut(&a.store).expect("store").hold(m, first, last) {
                    err = Some(e);
                    break;
                }
            }
            if let Err(e) = self.map_area_in(k, ioas_id, hwpt_id) {
                if first_domain {
                    self.stores.get_mut(&a.store).expect("store").release(m, first, last);
                }
                err = Some(e);
                break;
            }
            done.push(k);
        }
        if let Some(e) = err {
            for k in done {
                let a = self.ioas[&ioas_id].areas[&k].clone();
                self.unmap_area_in(&a, hwpt_id);
                if first_domain {
                    let (first, last) = a.page_span();
                    self.stores.get_mut(&a.store).expect("store").release(m, first, last);
                }
            }
            return Err(e);
        }
        let ioas = self.ioas.get_mut(&ioas_id).expect("ioas");
        for (s, l) in resv {
            ioas.reserved.add(s, l, ReservedOwner::Domain(hwpt_id));
        }
        ioas.domains.push(hwpt_id);
        Ok(())
    }

    /// A domain leaves its IOAS: unmapped from it, pages released if it was the last.
    pub fn domain_leave(&mut self, m: &Machine, ioas_id: u32, hwpt_id: u32) {
        let ioas = self.ioas.get_mut(&ioas_id).expect("ioas");
        ioas.domains.retain(|&d| d != hwpt_id);
        ioas.reserved.remove_owner(ReservedOwner::Domain(hwpt_id));
        let last_domain = ioas.domains.is_empty();
        let areas: Vec<Area> = ioas.areas.values().cloned().collect();
        for a in &areas {
            self.unmap_area_in(a, hwpt_id);
            if last_domain && !a.revoked {
                let (first, last) = a.page_span();
                self.stores.get_mut(&a.store).expect("store").release(m, first, last);
            }
        }
    }

    /// Unmap `[iova, last]` (io_pagetable.md §4). Returns bytes unmapped; areas removed
    /// before an error stay removed, and the error carries what was removed.
    pub fn unmap_range(&mut self, m: &Machine, ioas_id: u32, start: u64, last: u64) -> (u64, Result<()>) {
        let mut unmapped = 0u64;
        let mut retries = 0;
        let mut cursor = start;
        loop {
            let ioas = &self.ioas[&ioas_id];
            let Some(&k) = ioas.areas_in(cursor, last).first() else { break };
            let a = ioas.areas[&k].clone();
            if a.num_locks > 0 {
                return (unmapped, Err(Errno::EBUSY));
            }
            if a.iova < start || a.last > last {
                return (unmapped, Err(Errno::ENOENT));
            }
            if a.num_accesses > 0 {
                if retries > 100 {
                    return (unmapped, Err(Errno::EDEADLK));
                }
                retries += 1;
                self.ioas.get_mut(&ioas_id).expect("ioas").areas.get_mut(&k).expect("area").prevent_access = true;
                let accesses = self.ioas[&ioas_id].accesses.clone();
                for acc in accesses {
                    crate::access::unmap_notify(self, m, acc, a.iova, a.len());
                }
                continue;
            }
            unmapped += self.remove_area(m, ioas_id, k);
            retries = 0;
            if a.last == u64::MAX || a.last >= last {
                break;
            }
            cursor = a.last + 1;
        }
        (unmapped, Ok(()))
    }
}

impl Ictx {
    /// Take a dma-buf area out of every domain for good (the exporter revoked it).
    pub fn revoke_area(&mut self, m: &Machine, ioas_id: u32, area_iova: u64) {
        let a = self.ioas[&ioas_id].areas[&area_iova].clone();
        let domains = self.ioas[&ioas_id].domains.clone();
        for &d in &domains {
            self.unmap_area_in(&a, d);
        }
        if !domains.is_empty() {
            let (first, last) = a.page_span();
            self.stores.get_mut(&a.store).expect("store").release(m, first, last);
        }
        self.ioas.get_mut(&ioas_id).expect("ioas").areas.get_mut(&area_iova).expect("area").revoked = true;
    }
}

impl Ictx {
    /// Check the invariants listed in the module comment; a description of the first
    /// violation on failure.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        use std::collections::{BTreeMap, HashMap};
        let mut refs: HashMap<u64, u32> = HashMap::new();
        // Expected holders per store as count deltas at page boundaries (O(ranges), not
        // O(pages): a store may span terabytes).
        let mut holds: HashMap<u64, BTreeMap<u64, i64>> = HashMap::new();
        let mut hold = |store: u64, f: u64, l: u64| {
            let d = holds.entry(store).or_default();
            *d.entry(f).or_default() += 1;
            *d.entry(l + 1).or_default() -= 1;
        };
        for (&id, ioas) in &self.ioas {
            let mut prev: Option<&Area> = None;
            for (&k, a) in &ioas.areas {
                if k != a.iova || a.last < a.iova {
                    return Err(format!("ioas {id}: bad area key {k:#x}"));
                }
                if let Some(p) = prev {
                    if p.last >= a.iova {
                        return Err(format!("ioas {id}: areas overlap at {:#x}", a.iova));
                    }
                }
                prev = Some(a);
                let s = self.stores.get(&a.store).ok_or(format!("area {k:#x}: no store"))?;
                // (A store may span the whole 64-bit range: compare in 128 bits.)
                if u128::from(a.offset) + u128::from(a.len()) > u128::from(s.npages) * u128::from(PAGE_SIZE) {
                    return Err(format!("area {k:#x}: outside its store"));
                }
                *refs.entry(a.store).or_default() += 1;
                if !ioas.domains.is_empty() && !a.revoked {
                    let (f, l) = a.page_span();
                    hold(a.store, f, l);
                }
                if a.num_accesses == 0 && a.prevent_access {
                    return Err(format!("area {k:#x}: access prevented without accesses"));
                }
            }
            for &d in &ioas.domains {
                let h = self.hwpt.get(&d).ok_or(format!("ioas {id}: missing domain {d}"))?;
                let want: u64 = ioas.areas.values().filter(|a| !a.revoked).map(|a| a.len()).sum();
                if h.pt.mapped_bytes() != want {
                    return Err(format!("domain {d}: maps {} bytes, areas {}", h.pt.mapped_bytes(), want));
                }
                for a in ioas.areas.values().filter(|a| !a.revoked) {
                    for (iova, phys, _) in area_runs(self, a) {
                        if h.pt.iova_to_phys(iova).map(|x| x.0) != Some(phys) {
                            return Err(format!("domain {d}: wrong translation at {iova:#x}"));
                        }
                    }
                }
            }
        }
        for (&aid, acc) in &self.accesses {
            let Some(ioas) = acc.ioas else { continue };
            for it in &acc.items {
                let io = &self.ioas[&ioas];
                for k in io.areas_in(it.iova, it.iova + it.length - 1) {
                    let a = &io.areas[&k];
                    let s = it.iova.max(a.iova);
                    let l = (it.iova + it.length - 1).min(a.last);
                    let f = (a.offset + (s - a.iova)) / PAGE_SIZE;
                    let lp = (a.offset + (l - a.iova)) / PAGE_SIZE;
                    hold(a.store, f, lp);
                }
                let _ = aid;
            }
        }
        for (&sid, s) in &self.stores {
            if refs.get(&sid).copied().unwrap_or(0) != s.area_refs {
                return Err(format!(
                    "store {sid}: area_refs {} but {} areas",
                    s.area_refs,
                    refs.get(&sid).copied().unwrap_or(0)
                ));
            }
            // Expected runs (start, end, holders > 0) against the store's, both with equal
            // neighbours merged.
            let mut want: Vec<(u64, u64, u32)> = Vec::new();
            let mut level = 0i64;
            let mut at = 0u64;
            for (&i, &d) in holds.get(&sid).into_iter().flatten() {
                if level > 0 && i > at {
                    push_run(&mut want, at, i, level as u32);
                }
                level += d;
                at = i;
                if level < 0 {
                    return Err(format!("store {sid}: negative expected holds at page {i}"));
                }
            }
            let mut have: Vec<(u64, u64, u32)> = Vec::new();
            for (f, e, c, _) in s.hold_runs() {
                push_run(&mut have, f, e, c);
            }
            if want != have {
                return Err(format!("store {sid}: held runs {have:?}, expected {want:?}"));
            }
            let pinned: u64 = want.iter().map(|r| r.1 - r.0).sum();
            if want.last().is_some_and(|r| r.1 > s.npages) {
                return Err(format!("store {sid}: holds beyond its {} pages", s.npages));
            }
            if pinned != s.npinned {
                return Err(format!("store {sid}: npinned {} expected {pinned}", s.npinned));
            }
        }
        Ok(())
    }
}

/// Append `[start, end)` with `count` holders, merging with an equal adjacent last run.
fn push_run(v: &mut Vec<(u64, u64, u32)>, start: u64, end: u64, count: u32) {
    match v.last_mut() {
        Some(r) if r.1 == start && r.2 == count => r.1 = end,
        _ => v.push((start, end, count)),
    }
}

impl Ictx {
    /// VFIO type1 v1 cut: split the area containing `c` into `[first, c]` and
    /// `[c + 1, last]` sharing its store (io_pagetable.md §8). Returns whether it split.
    pub fn split_at(&mut self, ioas_id: u32, c: u64) -> Result<bool> {
        let align = self.iova_alignment(ioas_id);
        let ioas = &self.ioas[&ioas_id];
        let Some(a) = ioas.area_at(c).cloned() else { return Ok(false) };
        if c == a.iova || c == a.last {
            return Ok(false);
        }
        if a.prevent_access {
            return Err(Errno::EBUSY);
        }
        if self.stores[&a.store].is_dmabuf() {
            return Err(Errno::EOPNOTSUPP);
        }
        let new_start = c + 1;
        let start_byte = a.offset + (new_start - a.iova);
        if !new_start.is_multiple_of(align) || !start_byte.is_multiple_of(align) {
            return Err(Errno::EINVAL);
        }
        if a.num_accesses > 0 || (!ioas.domains.is_empty() && ioas.large_pages) {
            return Err(Errno::EINVAL);
        }
        // The two new areas (`iopt_area_split`).
        fail_point(FailSite::Alloc)?;
        let mut lhs = a.clone();
        lhs.last = c;
        let mut rhs = a;
        rhs.iova = new_start;
        rhs.offset = start_byte;
        let store = rhs.store;
        let ioas = self.ioas.get_mut(&ioas_id).expect("ioas");
        ioas.areas.insert(lhs.iova, lhs);
        ioas.areas.insert(rhs.iova, rhs);
        self.stores.get_mut(&store).expect("store").area_refs += 1;
        Ok(true)
    }

    /// Undo a [`Ictx::split_at`] at `c` that returned `true` (a later cut of the same
    /// command failed): the two halves become one area again.
    pub fn unsplit_at(&mut self, ioas_id: u32, c: u64) {
        let ioas = self.ioas.get_mut(&ioas_id).expect("ioas");
        let Some(rhs) = ioas.areas.remove(&(c + 1)) else { return };
        let lhs = ioas.areas.range_mut(..=c).next_back().map(|(_, a)| a).expect("left half");
        debug_assert!(lhs.last == c && lhs.store == rhs.store && lhs.offset + lhs.len() == rhs.offset);
        lhs.last = rhs.last;
        self.stores.get_mut(&rhs.store).expect("store").area_refs -= 1;
    }
}

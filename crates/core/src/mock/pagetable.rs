//! The mock IOMMU's IO page table.
//!
//! Linux 7.2's self-test mock uses the generic page-table code in the AMD IOMMU v1 format with
//! a 2 KiB granule (`AMDV1_IOMMUFD_SELFTEST`); this is a faithful radix table in that layout:
//!
//! * 8-byte entries, 512 per 4 KiB table, three levels (top = level 2): level-0 entries map
//!   2 KiB, level-1 entries 1 MiB, level-2 entries 512 MiB, giving a 38-bit IOVA space;
//! * entry bits: present (0), dirty (6), next-level field (9–11), output address ÷ 2048 (12–51),
//!   IR (61), IW (62);
//! * a leaf whose size is the native entry size of its level has next-level 0; any other leaf
//!   size is a naturally aligned run of identical entries with next-level 7, its size encoded
//!   as a string of 1s in the low output-address bits (`2^(lg2 - 12) - 1`), so every entry of
//!   the run decodes directly to the leaf's start and size;
//! * a table pointer has next-level = the level of the entry holding it (1 or 2), IR|IW, and
//!   the index of the child table in the table arena in the address field.
//!
//! Tables live in an arena (`Vec<Option<Box<[u64; 512]>>>`) with a free list; each table keeps a
//! count of its present entries so empty tables are freed on unmap. The top table (arena index
//! 0) always exists.
//!
//! Dirty tracking follows the kernel: the hardware (the self-test `DIRTY` op, [`set_dirty`])
//! marks the one entry it hit; a leaf is dirty if any entry of its run is; reading reports a
//! span per dirty leaf computed exactly like generic_pt's `record_dirty()` (see
//! [`read_and_clear_dirty`]) and clearing cleans the whole run.
//!
//! [`set_dirty`]: MockPageTable::set_dirty
//! [`read_and_clear_dirty`]: MockPageTable::read_and_clear_dirty

use core::fmt;

use crate::errno::{Errno, Result};

/// Which mock page-table format a domain uses (iommu_hwpt_selftest.pagetable_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockPtType {
    /// `MOCK_IOMMUPT_DEFAULT`: every power-of-two page size from 2 KiB to 64 GiB.
    Default,
    /// `MOCK_IOMMUPT_HUGE`: 4 KiB and 1 MiB pages only.
    Huge,
}

/// IO page protection bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Prot {
    /// DMA reads allowed (IR).
    pub read: bool,
    /// DMA writes allowed (IW).
    pub write: bool,
}

/// log2 of the granule (the level-0 entry size): 2 KiB.
const GRANULE_LG2: u32 = 11;
/// log2 of the number of entries per table.
const ITEMS_LG2: u32 = 9;
/// Entries per table.
const ITEMS: usize = 1 << ITEMS_LG2;
/// Level of the top table.
const TOP_LEVEL: u32 = 2;
/// log2 of the IOVA space size.
const VA_LG2: u32 = GRANULE_LG2 + ITEMS_LG2 * (TOP_LEVEL + 1);
/// End (exclusive) of the IOVA space.
const VA_END: u64 = 1 << VA_LG2;
/// End (exclusive) of the output address space (`PT_MAX_OUTPUT_ADDRESS_LG2` = 51).
const OA_END: u64 = 1 << 51;
/// Largest page size of the DEFAULT type (64 GiB).
const DEFAULT_MAX_LG2: u32 = 36;
/// The HUGE type's large page (1 MiB) and small page (4 KiB).
const HUGE_BIG_LG2: u32 = 20;
const HUGE_SMALL_LG2: u32 = 12;

const PTE_PR: u64 = 1 << 0;
const PTE_D: u64 = 1 << 6;
const PTE_NL_SHIFT: u32 = 9;
const PTE_NL_MASK: u64 = 7 << PTE_NL_SHIFT;
const NL_DEFAULT: u64 = 0;
const NL_SIZE: u64 = 7;
const PTE_OA_SHIFT: u32 = 12;
const PTE_OA_MASK: u64 = ((1 << 40) - 1) << PTE_OA_SHIFT;
const PTE_IR: u64 = 1 << 61;
const PTE_IW: u64 = 1 << 62;

type Table = [u64; ITEMS];

/// log2 of the size mapped by one entry at `level`.
#[inline(always)]
fn item_lg2(level: u32) -> u32 {
    GRANULE_LG2 + ITEMS_LG2 * level
}

/// Index of `va` in its table at `level`.
#[inline(always)]
fn index(va: u64, level: u32) -> usize {
    ((va >> item_lg2(level)) as usize) & (ITEMS - 1)
}

/// A table's key: its level and the first IOVA it translates (aligned to its span, so the
/// low bits are free for the level).
#[inline(always)]
fn table_key(base: u64, level: u32) -> u64 {
    base | u64::from(level)
}

/// The key of a free arena slot (no table has it: a base is aligned to at least 2^20).
const FREE_KEY: u64 = u64::MAX;

/// The IOVA where the `level` table holding `va` starts.
#[inline(always)]
fn table_base(va: u64, level: u32) -> u64 {
    let span_lg2 = item_lg2(level) + ITEMS_LG2;
    if span_lg2 >= 64 {
        0
    } else {
        va & !((1u64 << span_lg2) - 1)
    }
}

/// Address field of an entry (output address ÷ 2048, or a table index).
#[inline(always)]
fn pte_oa(e: u64) -> u64 {
    (e & PTE_OA_MASK) >> PTE_OA_SHIFT
}

/// Whether the present entry `e` at `level` points to a table.
#[inline(always)]
fn pte_is_table(e: u64, level: u32) -> bool {
    let nl = (e & PTE_NL_MASK) >> PTE_NL_SHIFT;
    level > 0 && nl != NL_DEFAULT && nl != NL_SIZE
}

/// Decode a present leaf entry at `level`: (log2 of the leaf size, physical address of the
/// leaf's start).
#[inline(always)]
fn leaf_decode(e: u64, level: u32) -> (u32, u64) {
    let oa = pte_oa(e);
    if (e & PTE_NL_MASK) >> PTE_NL_SHIFT == NL_SIZE {
        let ones = oa.trailing_ones();
        let clear = ones + 1;
        (ones + GRANULE_LG2 + 1, ((oa >> clear) << clear) << GRANULE_LG2)
    } else {
        (item_lg2(level), oa << GRANULE_LG2)
    }
}

/// The entry for a leaf of size `2^lg2` at physical `phys`, stored at a level whose entries
/// are `2^isz_lg2` bytes; `bits` are the protection bits.
#[inline(always)]
fn leaf_entry(phys: u64, lg2: u32, isz_lg2: u32, bits: u64) -> u64 {
    let oa = phys >> GRANULE_LG2;
    if lg2 == isz_lg2 {
        PTE_PR | (NL_DEFAULT << PTE_NL_SHIFT) | (oa << PTE_OA_SHIFT) | bits
    } else {
        let code = (1u64 << (lg2 - GRANULE_LG2 - 1)) - 1;
        PTE_PR | (NL_SIZE << PTE_NL_SHIFT) | ((oa | code) << PTE_OA_SHIFT) | bits
    }
}

/// The entry pointing at arena table `child` from a table at `level`.
#[inline(always)]
fn table_entry(child: usize, level: u32) -> u64 {
    PTE_PR | (u64::from(level) << PTE_NL_SHIFT) | ((child as u64) << PTE_OA_SHIFT) | PTE_IR | PTE_IW
}

#[inline(always)]
fn prot_bits(prot: Prot) -> u64 {
    (if prot.read { PTE_IR } else { 0 }) | (if prot.write { PTE_IW } else { 0 })
}

#[inline(always)]
fn prot_of(e: u64) -> Prot {
    Prot { read: e & PTE_IR != 0, write: e & PTE_IW != 0 }
}

/// log2 of the leaf to use at `iova` → `phys` with `rem` (≥ the minimum page) bytes left:
/// the largest supported size dividing both addresses and not exceeding `rem`.
#[inline(always)]
fn leaf_lg2(ty: MockPtType, iova: u64, phys: u64, rem: u64) -> u32 {
    let align = (iova | phys).trailing_zeros();
    let fit = 63 - rem.leading_zeros();
    match ty {
        MockPtType::Default => align.min(fit).min(DEFAULT_MAX_LG2),
        MockPtType::Huge => {
            if align >= HUGE_BIG_LG2 && fit >= HUGE_BIG_LG2 {
                HUGE_BIG_LG2
            } else {
                HUGE_SMALL_LG2
            }
        }
    }
}

/// A mock IOMMU IO page table (one paging domain's translations).
pub struct MockPageTable {
    ty: MockPtType,
    /// Table arena; index 0 is the top (level 2) table; `None` = a free slot.
    tables: Vec<Option<Box<Table>>>,
    /// Number of present entries of each table (parallel to `tables`).
    live: Vec<u16>,
    /// Where each table sits (parallel to `tables`): [`table_key`] of its level and first
    /// IOVA, `FREE_KEY` for a free slot. A live table's key names it uniquely, which lets
    /// [`MockPageTable::lookup_leaf_hinted`] check a remembered table index in one load.
    key: Vec<u64>,
    /// Free arena slots.
    free: Vec<u32>,
    /// Number of allocated tables.
    nr_tables: usize,
    /// Bytes mapped.
    mapped: u64,
    /// log2 of the largest leaf the current `map` call may create.
    cap_lg2: u32,
}

impl fmt::Debug for MockPageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPageTable")
            .field("ty", &self.ty)
            .field("mapped_bytes", &self.mapped)
            .field("tables", &self.nr_tables)
            .finish()
    }
}

impl MockPageTable {
    /// An empty table of the given type.
    pub fn new(ty: MockPtType) -> Self {
        let mut pt = MockPageTable {
            ty,
            tables: Vec::new(),
            live: Vec::new(),
            key: Vec::new(),
            free: Vec::new(),
            nr_tables: 0,
            mapped: 0,
            cap_lg2: 63,
        };
        let top = pt.alloc_table(table_key(0, TOP_LEVEL));
        debug_assert_eq!(top, 0);
        pt
    }

    /// The page-table format.
    pub fn ty(&self) -> MockPtType {
        self.ty
    }

    /// Supported page sizes as a bitmap (bit n set = 2^n bytes): Default = every power of two
    /// 2 KiB..=64 GiB (bits 11..=36); Huge = 4 KiB | 1 MiB.
    pub fn pgsize_bitmap(&self) -> u64 {
        match self.ty {
            MockPtType::Default => ((1u64 << (DEFAULT_MAX_LG2 + 1)) - 1) & !((1u64 << GRANULE_LG2) - 1),
            MockPtType::Huge => (1 << HUGE_SMALL_LG2) | (1 << HUGE_BIG_LG2),
        }
    }

    /// Smallest supported page size (2048 Default, 4096 Huge).
    pub fn min_page(&self) -> u64 {
        1 << self.pgsize_bitmap().trailing_zeros()
    }

    /// Inclusive aperture: Default [0x1000000, 0x7fff_ffff]; Huge [0, 2^38 - 1].
    pub fn aperture(&self) -> (u64, u64) {
        match self.ty {
            MockPtType::Default => (0x100_0000, 0x7fff_ffff),
            MockPtType::Huge => (0, VA_END - 1),
        }
    }

    /// Map [iova, iova+len) onto physical [phys, phys+len). iova, phys and len must be
    /// multiples of [`min_page`](Self::min_page) (else `EINVAL`), the range must be inside the
    /// 38-bit IOVA space and the output inside the 51-bit physical space (`EINVAL`), and nothing
    /// in it may be mapped already (`EEXIST`, and then nothing changes). A zero length maps
    /// nothing. The range is stored as leaf mappings, each the largest supported page size that
    /// divides the current iova and phys and fits the remaining length.
    pub fn map(&mut self, iova: u64, phys: u64, len: u64, prot: Prot) -> Result<()> {
        self.map_max(iova, phys, len, prot, 1 << 63)
    }

    /// [`map`](Self::map) with leaves no larger than `max_page` (a power of two ≥ the
    /// minimum page): how an IOAS with large pages disabled maps, one PAGE_SIZE IOPTE per
    /// page, in a single call.
    pub fn map_max(&mut self, iova: u64, phys: u64, len: u64, prot: Prot, max_page: u64) -> Result<()> {
        if !max_page.is_power_of_two() || max_page < self.min_page() {
            return Err(Errno::EINVAL);
        }
        self.cap_lg2 = max_page.trailing_zeros();
        if (iova | phys | len) & (self.min_page() - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let end = match iova.checked_add(len) {
            Some(end) if end <= VA_END => end,
            _ => return Err(Errno::EINVAL),
        };
        match phys.checked_add(len) {
            Some(pend) if pend <= OA_END => {}
            _ => return Err(Errno::EINVAL),
        }
        if self.any_present(0, TOP_LEVEL, iova, end) {
            return Err(Errno::EEXIST);
        }
        self.map_range(0, TOP_LEVEL, iova, phys, end, prot_bits(prot));
        self.mapped += len;
        Ok(())
    }

    /// Remove every leaf inside [iova, iova+len); returns the bytes unmapped. Leaves that
    /// straddle the boundary are removed whole (the engine only unmaps what it mapped, so this
    /// is a debug assertion failure).
    pub fn unmap(&mut self, iova: u64, len: u64) -> u64 {
        if len == 0 || iova >= VA_END {
            return 0;
        }
        let end = iova.saturating_add(len).min(VA_END);
        let freed = self.unmap_range(0, TOP_LEVEL, iova, end);
        self.mapped -= freed;
        freed
    }

    /// Translate one IOVA: `Some((phys, prot))` of the byte at iova, `None` if unmapped.
    pub fn iova_to_phys(&self, iova: u64) -> Option<(u64, Prot)> {
        let (leaf_iova, _, phys, prot) = self.lookup_leaf(iova)?;
        Some((phys + (iova - leaf_iova), prot))
    }

    /// The leaf containing iova as `(leaf_iova, leaf_len, leaf_phys, prot)`, or `None` if
    /// unmapped. One descent of at most three levels.
    #[inline]
    pub fn lookup_leaf(&self, iova: u64) -> Option<(u64, u64, u64, Prot)> {
        let (_, _, level, e) = self.find(iova)?;
        let (lg2, phys) = leaf_decode(e, level);
        let size = 1u64 << lg2;
        Some((iova & !(size - 1), size, phys, prot_of(e)))
    }

    /// [`lookup_leaf`](Self::lookup_leaf) with a walk hint: `*hint` is the index of a
    /// level-0 table (`usize::MAX` = none). When it is the live level-0 table for `iova`'s
    /// region (checked by its key: a hint may be stale) the lookup reads that table alone
    /// instead of descending from the top, like an IOMMU's paging-structure cache; otherwise
    /// it walks and remembers the level-0 table it reached.
    #[inline]
    pub fn lookup_leaf_hinted(&self, iova: u64, hint: &mut usize) -> Option<(u64, u64, u64, Prot)> {
        let region = table_key(iova & !((1u64 << item_lg2(1)) - 1), 0);
        if iova < VA_END && self.key.get(*hint) == Some(&region) {
            let e = self.table(*hint)[index(iova, 0)];
            if e & PTE_PR == 0 {
                return None;
            }
            let (lg2, phys) = leaf_decode(e, 0);
            let size = 1u64 << lg2;
            return Some((iova & !(size - 1), size, phys, prot_of(e)));
        }
        let (tbl, _, level, e) = self.find(iova)?;
        if level == 0 {
            *hint = tbl;
        }
        let (lg2, phys) = leaf_decode(e, level);
        let size = 1u64 << lg2;
        Some((iova & !(size - 1), size, phys, prot_of(e)))
    }

    /// Mark the leaf containing iova dirty (as the IOMMU does: the dirty bit of the one entry
    /// holding iova is set); false if unmapped.
    pub fn set_dirty(&mut self, iova: u64) -> bool {
        match self.find(iova) {
            Some((tbl, i, _, _)) => {
                self.table_mut(tbl)[i] |= PTE_D;
                true
            }
            None => false,
        }
    }

    /// For every dirty leaf intersecting [iova, iova+len), in ascending order, report a span
    /// with `f(start, len)`; if `clear`, the leaf becomes clean (all entries of its run).
    ///
    /// The span is what Linux 7.2's generic page table (`record_dirty()`) reports, which the
    /// self-tests depend on. The walk visits the leaf first at entry `i` (its first entry, or the
    /// entry holding `iova` when the walk starts inside it); with entries of `esz` bytes:
    /// * a leaf that is one native entry (N = 1) reports `esz` bytes;
    /// * a leaf stored as a run of N > 1 entries reports `(min(last, end) - i) · esz` bytes,
    ///   where `last` is the index of the run's last entry and `end` the walk's exclusive end
    ///   index in that table — so a leaf fully inside the walk reports its first N − 1 entries
    ///   (a dirty 4 KiB DEFAULT leaf reports its first 2 KiB, a dirty 2 MiB DEFAULT leaf its
    ///   first 1 MiB), and a span of zero is not reported (the leaf is still cleaned);
    /// * the span starts at the visited entry's start, or at `iova` if that is later.
    pub fn read_and_clear_dirty(&mut self, iova: u64, len: u64, clear: bool, f: &mut dyn FnMut(u64, u64)) {
        if len == 0 || iova >= VA_END {
            return;
        }
        let end = iova.saturating_add(len).min(VA_END);
        self.dirty_range(0, TOP_LEVEL, iova, end, clear, f);
    }

    /// Make every leaf clean (used when dirty tracking is enabled).
    pub fn clear_all_dirty(&mut self) {
        for t in self.tables.iter_mut().flatten() {
            for e in t.iter_mut() {
                *e &= !PTE_D;
            }
        }
    }

    /// Number of bytes currently mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped
    }

    /// Memory used by the table itself in bytes: the 4 KiB tables plus the arena bookkeeping.
    pub fn table_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.nr_tables * core::mem::size_of::<Table>()
            + self.tables.capacity() * core::mem::size_of::<Option<Box<Table>>>()
            + self.live.capacity() * core::mem::size_of::<u16>()
            + self.free.capacity() * core::mem::size_of::<u32>()
    }

    // ---- internals ----

    #[inline(always)]
    fn table(&self, tbl: usize) -> &Table {
        self.tables[tbl].as_deref().expect("mock page table: dangling table index")
    }

    #[inline(always)]
    fn table_mut(&mut self, tbl: usize) -> &mut Table {
        self.tables[tbl].as_deref_mut().expect("mock page table: dangling table index")
    }

    fn alloc_table(&mut self, key: u64) -> usize {
        // vec! of zeroes is a zeroed allocation: no 4 KiB stack temporary, no memset.
        let t: Box<Table> = vec![0u64; ITEMS].into_boxed_slice().try_into().expect("512 entries");
        self.nr_tables += 1;
        match self.free.pop() {
            Some(i) => {
                let i = i as usize;
                self.tables[i] = Some(t);
                self.live[i] = 0;
                self.key[i] = key;
                i
            }
            None => {
                self.tables.push(Some(t));
                self.live.push(0);
                self.key.push(key);
                self.tables.len() - 1
            }
        }
    }

    fn free_table(&mut self, tbl: usize) {
        debug_assert_ne!(tbl, 0, "the top table is never freed");
        self.tables[tbl] = None;
        self.live[tbl] = 0;
        self.key[tbl] = FREE_KEY;
        self.nr_tables -= 1;
        self.free.push(tbl as u32);
    }

    /// Descend to the leaf entry holding `iova`: (table, index, level, entry).
    #[inline]
    fn find(&self, iova: u64) -> Option<(usize, usize, u32, u64)> {
        if iova >= VA_END {
            return None;
        }
        let mut tbl = 0;
        let mut level = TOP_LEVEL;
        loop {
            let i = index(iova, level);
            let e = self.table(tbl)[i];
            if e & PTE_PR == 0 {
                return None;
            }
            if pte_is_table(e, level) {
                tbl = pte_oa(e) as usize;
                level -= 1;
                continue;
            }
            return Some((tbl, i, level, e));
        }
    }

    /// Whether anything is mapped in [lo, hi) (non-empty, inside the span of `tbl`).
    fn any_present(&self, tbl: usize, level: u32, lo: u64, hi: u64) -> bool {
        let t = self.table(tbl);
        let (first, last) = (index(lo, level), index(hi - 1, level));
        if level == 0 {
            return t[first..=last].iter().any(|&e| e != 0);
        }
        let lg2 = item_lg2(level);
        let base = table_base(lo, level);
        for (i, &e) in t.iter().enumerate().take(last + 1).skip(first) {
            if e & PTE_PR == 0 {
                continue;
            }
            if !pte_is_table(e, level) {
                return true;
            }
            let va = base + ((i as u64) << lg2);
            let (c_lo, c_hi) = (lo.max(va), hi.min(va + (1u64 << lg2)));
            if self.any_present(pte_oa(e) as usize, level - 1, c_lo, c_hi) {
                return true;
            }
        }
        false
    }

    /// Map [iova, end) (inside the span of `tbl`, known to be empty) onto phys.
    fn map_range(&mut self, tbl: usize, level: u32, mut iova: u64, mut phys: u64, end: u64, bits: u64) {
        if level == 0 {
            return self.map_level0(tbl, iova, phys, end, bits);
        }
        let ty = self.ty;
        let isz_lg2 = item_lg2(level);
        let isz = 1u64 << isz_lg2;
        while iova < end {
            let lg2 = leaf_lg2(ty, iova, phys, end - iova).min(self.cap_lg2);
            let i = index(iova, level);
            if lg2 >= isz_lg2 {
                // A leaf at this level: one entry or a run of 2^(lg2 - isz_lg2).
                let n = 1usize << (lg2 - isz_lg2);
                debug_assert!(i + n <= ITEMS);
                let e = leaf_entry(phys, lg2, isz_lg2, bits);
                self.table_mut(tbl)[i..i + n].fill(e);
                self.live[tbl] += n as u16;
                iova += 1 << lg2;
                phys += 1 << lg2;
            } else {
                // Smaller leaves: fill the child table up to this entry's end.
                let e = self.table(tbl)[i];
                let child = if e == 0 {
                    let child = self.alloc_table(table_key(iova & !(isz - 1), level - 1));
                    self.table_mut(tbl)[i] = table_entry(child, level);
                    self.live[tbl] += 1;
                    child
                } else {
                    debug_assert!(pte_is_table(e, level), "map over a present leaf");
                    pte_oa(e) as usize
                };
                let chunk_end = end.min((iova & !(isz - 1)) + isz);
                self.map_range(child, level - 1, iova, phys, chunk_end, bits);
                phys += chunk_end - iova;
                iova = chunk_end;
            }
        }
    }

    /// The hot loop of [`map_range`](Self::map_range) for a level-0 table: runs of 2 KiB
    /// entries written straight into the table.
    ///
    /// Leaf sizes never exceed `2^g` with `g` = the lowest bit where iova and phys differ, and
    /// once iova is `2^g`-aligned every following leaf is exactly `2^g` until the remaining
    /// length is shorter: that uniform body is written in one pass, the head and tail (a few
    /// leaves of other sizes) one leaf at a time.
    fn map_level0(&mut self, tbl: usize, mut iova: u64, mut phys: u64, end: u64, bits: u64) {
        let ty = self.ty;
        let uniform_lg2 = match ty {
            MockPtType::Default => (iova ^ phys).trailing_zeros().min(DEFAULT_MAX_LG2).min(self.cap_lg2),
            // Level 0 holds only the 4 KiB pages of the HUGE type.
            MockPtType::Huge => HUGE_SMALL_LG2,
        };
        let t = self.tables[tbl].as_deref_mut().expect("mock page table: dangling table index");
        let mut added = 0usize;
        while iova < end {
            let lg2 = leaf_lg2(ty, iova, phys, end - iova).min(self.cap_lg2);
            debug_assert!(lg2 < item_lg2(1));
            let n = 1usize << (lg2 - GRANULE_LG2);
            let i = index(iova, 0);
            let e = leaf_entry(phys, lg2, GRANULE_LG2, bits);
            let count = if lg2 == uniform_lg2 { ((end - iova) >> lg2) as usize } else { 1 };
            let run = &mut t[i..i + n * count];
            // Consecutive leaves differ only in the output address.
            let step = (1u64 << (lg2 - GRANULE_LG2)) << PTE_OA_SHIFT;
            match n {
                1 => {
                    for (k, x) in run.iter_mut().enumerate() {
                        *x = e + k as u64 * step;
                    }
                }
                2 => {
                    for (k, pair) in run.chunks_exact_mut(2).enumerate() {
                        let x = e + k as u64 * step;
                        pair[0] = x;
                        pair[1] = x;
                    }
                }
                _ => {
                    for (k, leaf) in run.chunks_exact_mut(n).enumerate() {
                        leaf.fill(e + k as u64 * step);
                    }
                }
            }
            added += n * count;
            let bytes = (count as u64) << lg2;
            iova += bytes;
            phys += bytes;
        }
        self.live[tbl] += added as u16;
    }

    /// Unmap the leaves in [lo, hi) (non-empty, inside the span of `tbl`); returns the bytes.
    fn unmap_range(&mut self, tbl: usize, level: u32, lo: u64, hi: u64) -> u64 {
        let lg2 = item_lg2(level);
        let isz = 1u64 << lg2;
        let base = table_base(lo, level);
        let mut i = index(lo, level);
        let end_i = index(hi - 1, level) + 1;
        let mut freed = 0;
        while i < end_i {
            let e = self.table(tbl)[i];
            if e & PTE_PR == 0 {
                i += 1;
                continue;
            }
            let va = base + ((i as u64) << lg2);
            if pte_is_table(e, level) {
                let child = pte_oa(e) as usize;
                let (c_lo, c_hi) = (lo.max(va), hi.min(va + isz));
                if level == 1 && c_lo == va && c_hi == va + isz {
                    // A whole level-0 table: every present entry is 2 KiB of a leaf lying
                    // entirely inside it.
                    freed += u64::from(self.live[child]) << GRANULE_LG2;
                    self.live[child] = 0;
                } else {
                    freed += self.unmap_range(child, level - 1, c_lo, c_hi);
                }
                if self.live[child] == 0 {
                    self.free_table(child);
                    self.table_mut(tbl)[i] = 0;
                    self.live[tbl] -= 1;
                }
                i += 1;
            } else {
                let (size_lg2, _) = leaf_decode(e, level);
                let n = 1usize << (size_lg2 - lg2);
                let start = i & !(n - 1);
                let leaf_va = base + ((start as u64) << lg2);
                debug_assert!(
                    leaf_va >= lo && leaf_va + (1u64 << size_lg2) <= hi,
                    "unmap [{lo:#x}, {hi:#x}) splits the leaf at {leaf_va:#x} (size {:#x})",
                    1u64 << size_lg2
                );
                self.table_mut(tbl)[start..start + n].fill(0);
                self.live[tbl] -= n as u16;
                freed += 1u64 << size_lg2;
                i = start + n;
            }
        }
        freed
    }

    /// The dirty walk over [lo, hi) (non-empty, inside the span of `tbl`), mirroring generic_pt's
    /// `__read_and_clear_dirty()` / `record_dirty()`.
    fn dirty_range(&mut self, tbl: usize, level: u32, lo: u64, hi: u64, clear: bool, f: &mut dyn FnMut(u64, u64)) {
        if level == 0 {
            return self.dirty_level0(tbl, lo, hi, clear, f);
        }
        let lg2 = item_lg2(level);
        let isz = 1u64 << lg2;
        let base = table_base(lo, level);
        let mut i = index(lo, level);
        let end_i = index(hi - 1, level) + 1;
        while i < end_i {
            let e = self.table(tbl)[i];
            if e & PTE_PR == 0 {
                i += 1;
                continue;
            }
            let va = base + ((i as u64) << lg2);
            if pte_is_table(e, level) {
                let (c_lo, c_hi) = (lo.max(va), hi.min(va + isz));
                self.dirty_range(pte_oa(e) as usize, level - 1, c_lo, c_hi, clear, f);
                i += 1;
                continue;
            }
            let (size_lg2, _) = leaf_decode(e, level);
            let n = 1usize << (size_lg2 - lg2);
            let start = i & !(n - 1);
            let run = &mut self.table_mut(tbl)[start..start + n];
            if run.iter().any(|&x| x & PTE_D != 0) {
                let count = if n == 1 { 1 } else { (start + n - 1).min(end_i).saturating_sub(i) };
                if count > 0 {
                    f(lo.max(va), (count as u64) << lg2);
                }
                if clear {
                    for x in run.iter_mut() {
                        *x &= !PTE_D;
                    }
                }
            }
            i = start + n;
        }
    }
}

impl MockPageTable {
    /// The level-0 case of [`dirty_range`](Self::dirty_range): same results, but clean
    /// stretches are skipped with a tight scan of the dirty bit (most entries of a large
    /// domain are clean), so the walk runs at memory speed.
    fn dirty_level0(&mut self, tbl: usize, lo: u64, hi: u64, clear: bool, f: &mut dyn FnMut(u64, u64)) {
        let base = table_base(lo, 0);
        let first = index(lo, 0);
        let end_i = index(hi - 1, 0) + 1;
        let t = self.tables[tbl].as_deref_mut().expect("mock page table: dangling table index");
        // One leaf run, judged on all its entries (even those outside the window).
        let leaf = |t: &mut Table, k: usize, f: &mut dyn FnMut(u64, u64)| -> usize {
            let (size_lg2, _) = leaf_decode(t[k], 0);
            let n = 1usize << (size_lg2 - GRANULE_LG2);
            let start = k & !(n - 1);
            let run = &mut t[start..start + n];
            if run.iter().any(|&x| x & PTE_D != 0) {
                // Where the walk entered this leaf: its start, or `lo` inside it.
                let entered = start.max(first);
                let count = if n == 1 { 1 } else { (start + n - 1).min(end_i).saturating_sub(entered) };
                if count > 0 {
                    f(lo.max(base + ((entered as u64) << GRANULE_LG2)), (count as u64) << GRANULE_LG2);
                }
                if clear {
                    for x in run.iter_mut() {
                        *x &= !PTE_D;
                    }
                }
            }
            start + n
        };
        let mut i = first;
        // A head leaf starting before the window.
        if t[i] & PTE_PR != 0 {
            let (size_lg2, _) = leaf_decode(t[i], 0);
            if i & ((1usize << (size_lg2 - GRANULE_LG2)) - 1) != 0 {
                i = leaf(t, i, f);
            }
        }
        // A tail leaf running past the window.
        let mut tail = end_i;
        if i < end_i && t[end_i - 1] & PTE_PR != 0 {
            let (size_lg2, _) = leaf_decode(t[end_i - 1], 0);
            let n = 1usize << (size_lg2 - GRANULE_LG2);
            let start = (end_i - 1) & !(n - 1);
            if start + n > end_i {
                tail = start.max(i);
            }
        }
        // Leaves wholly inside: jump from dirty entry to dirty entry.
        while i < tail {
            let Some(k) = t[i..tail].iter().position(|&e| e & PTE_D != 0) else { break };
            i = leaf(t, i + k, f);
        }
        i = i.max(tail);
        if i < end_i {
            leaf(t, i, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const RW: Prot = Prot { read: true, write: true };
    const RO: Prot = Prot { read: true, write: false };

    /// One leaf as found in the table: (iova, len, phys, prot, indices of its dirty entries).
    type Leaf = (u64, u64, u64, Prot, Vec<usize>);

    /// Every leaf of the table in IOVA order, checking the structural invariants on the way:
    /// identical entries in a run (but for D), natural alignment, live counts, no empty
    /// sub-tables, table accounting.
    fn leaves(pt: &MockPageTable) -> Vec<Leaf> {
        fn walk(pt: &MockPageTable, tbl: usize, level: u32, base: u64, out: &mut Vec<Leaf>, seen: &mut usize) {
            *seen += 1;
            assert_eq!(pt.key[tbl], table_key(base, level), "key of table {tbl}");
            let t = pt.table(tbl);
            let lg2 = item_lg2(level);
            let live = t.iter().filter(|&&e| e != 0).count();
            assert_eq!(live, usize::from(pt.live[tbl]), "live count of table {tbl}");
            if tbl != 0 {
                assert!(live > 0, "empty sub-table {tbl} kept");
            }
            let mut i = 0;
            while i < ITEMS {
                let e = t[i];
                let va = base + ((i as u64) << lg2);
                if e == 0 {
                    i += 1;
                    continue;
                }
                assert!(e & PTE_PR != 0, "non-zero entry without present bit");
                if pte_is_table(e, level) {
                    assert_eq!(e & !PTE_OA_MASK, table_entry(0, level), "table entry bits");
                    walk(pt, pte_oa(e) as usize, level - 1, va, out, seen);
                    i += 1;
                    continue;
                }
                let (size_lg2, phys) = leaf_decode(e, level);
                assert!(size_lg2 >= lg2 && size_lg2 < lg2 + ITEMS_LG2);
                let n = 1usize << (size_lg2 - lg2);
                assert_eq!(i % n, 0, "run not aligned");
                assert_eq!(phys & ((1u64 << size_lg2) - 1), 0, "phys not aligned");
                let nl = (e & PTE_NL_MASK) >> PTE_NL_SHIFT;
                assert_eq!(nl == NL_DEFAULT, n == 1, "next-level code vs run length");
                let dirty: Vec<usize> = (0..n).filter(|&k| t[i + k] & PTE_D != 0).collect();
                for &x in &t[i..i + n] {
                    assert_eq!(x & !PTE_D, e & !PTE_D, "run entries differ");
                }
                out.push((va, 1u64 << size_lg2, phys, prot_of(e), dirty));
                i += n;
            }
        }
        let mut out = Vec::new();
        let mut seen = 0;
        walk(pt, 0, TOP_LEVEL, 0, &mut out, &mut seen);
        assert_eq!(seen, pt.nr_tables, "reachable tables vs allocated");
        assert_eq!(pt.tables.iter().flatten().count(), pt.nr_tables);
        let total: u64 = out.iter().map(|l| l.1).sum();
        assert_eq!(total, pt.mapped_bytes(), "mapped_bytes");
        out
    }

    fn sizes(pt: &MockPageTable) -> Vec<(u64, u64)> {
        leaves(pt).into_iter().map(|l| (l.0, l.1)).collect()
    }

    fn read(pt: &mut MockPageTable, iova: u64, len: u64, clear: bool) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        pt.read_and_clear_dirty(iova, len, clear, &mut |a, l| v.push((a, l)));
        v
    }

    #[test]
    fn constants() {
        let d = MockPageTable::new(MockPtType::Default);
        assert_eq!(d.pgsize_bitmap(), 0x1f_ffff_f800);
        assert_eq!(d.min_page(), 2048);
        assert_eq!(d.aperture(), (0x100_0000, 0x7fff_ffff));
        assert_eq!(d.ty(), MockPtType::Default);
        let h = MockPageTable::new(MockPtType::Huge);
        assert_eq!(h.pgsize_bitmap(), 0x10_1000);
        assert_eq!(h.min_page(), 4096);
        assert_eq!(h.aperture(), (0, (1 << 38) - 1));
        assert_eq!(VA_LG2, 38);
        assert_eq!(d.table_bytes(), h.table_bytes());
        assert!(d.table_bytes() >= 4096);
    }

    #[test]
    fn default_leaf_sizes() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x100_0000, 0x20_0000, 0x20_0000, RW).unwrap();
        assert_eq!(sizes(&pt), vec![(0x100_0000, 0x20_0000)]);
        assert_eq!(pt.lookup_leaf(0x11f_ffff), Some((0x100_0000, 0x20_0000, 0x20_0000, RW)));
        assert_eq!(pt.iova_to_phys(0x110_0123), Some((0x30_0123, RW)));
        assert_eq!(pt.iova_to_phys(0x120_0000), None);
        assert_eq!(pt.iova_to_phys(0xff_ffff), None);

        // 2 KiB-misaligned phys: all 2 KiB leaves.
        pt.map(0x200_0000, 0x1800, 0x4000, RO).unwrap();
        let s: Vec<_> = sizes(&pt).into_iter().filter(|l| l.0 >= 0x200_0000).collect();
        assert_eq!(s, (0..8).map(|k| (0x200_0000 + k * 0x800, 0x800)).collect::<Vec<_>>());
        assert_eq!(pt.iova_to_phys(0x200_0900), Some((0x2100, RO)));
        // 2 KiB-misaligned iova.
        pt.map(0x300_0800, 0x1000, 0x2000, RW).unwrap();
        let s: Vec<_> = sizes(&pt).into_iter().filter(|l| l.0 >= 0x300_0000).collect();
        assert_eq!(s, (0..4).map(|k| (0x300_0800 + k * 0x800, 0x800)).collect::<Vec<_>>());

        // Mixed: growing then shrinking sizes.
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x1000, 0x1000, 0x2000 + 0x4000 + 0x800, RW).unwrap();
        assert_eq!(
            sizes(&pt),
            vec![(0x1000, 0x1000), (0x2000, 0x2000), (0x4000, 0x2000), (0x6000, 0x1000), (0x7000, 0x800)]
        );

        // Big leaves at level 2 (runs), capped at 64 GiB.
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(1 << 30, 1 << 30, 3 << 30, RW).unwrap();
        assert_eq!(sizes(&pt), vec![(1 << 30, 1 << 30), (2 << 30, 2 << 30)]);
        pt.map(128 << 30, 0, 128 << 30, RW).unwrap();
        assert_eq!(&sizes(&pt)[2..], &[(128 << 30, 64 << 30), (192 << 30, 64 << 30)]);
        assert_eq!(pt.nr_tables, 1, "only the top table");
        assert_eq!(pt.lookup_leaf((200 << 30) + 5), Some((192 << 30, 64 << 30, 64 << 30, RW)));
        // 512 MiB native level-2 leaf and 1 MiB native level-1 leaf.
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(1 << 29, 1 << 29, 1 << 29, RW).unwrap();
        pt.map(0x10_0000, 0x50_0000, 0x10_0000, RW).unwrap();
        assert_eq!(sizes(&pt), vec![(0x10_0000, 0x10_0000), (1 << 29, 1 << 29)]);
        let e = pt.table(0)[1];
        assert_eq!((e & PTE_NL_MASK) >> PTE_NL_SHIFT, NL_DEFAULT);
    }

    #[test]
    fn entry_encoding() {
        // 4 KiB leaf: two level-0 entries, next-level 7, no size ones.
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x100_0000, 0x12_3000, 0x1000, RW).unwrap();
        let (tbl, i, level, e) = pt.find(0x100_0800).unwrap();
        assert_eq!((level, i), (0, 1));
        assert_eq!(e, PTE_PR | (7 << 9) | ((0x12_3000 >> 11) << 12) | PTE_IR | PTE_IW);
        assert_eq!(pt.table(tbl)[0], e);
        // 64 KiB leaf: 32 entries, 4 ones in the low address bits.
        pt.map(0x200_0000, 0x40_0000, 0x1_0000, RO).unwrap();
        let (_, _, _, e) = pt.find(0x200_0000).unwrap();
        assert_eq!(pte_oa(e), (0x40_0000 >> 11) | 0xf);
        assert_eq!(e & PTE_IW, 0);
    }

    #[test]
    fn huge_leaf_sizes() {
        let mut pt = MockPageTable::new(MockPtType::Huge);
        pt.map(0x100_0000, 0x4000_0000, 0x20_0000, RW).unwrap();
        assert_eq!(sizes(&pt), vec![(0x100_0000, 0x10_0000), (0x110_0000, 0x10_0000)]);
        pt.map(0x20_1000, 0x20_0000, 0x3000, RW).unwrap();
        assert_eq!(&sizes(&pt)[..3], &[(0x20_1000, 0x1000), (0x20_2000, 0x1000), (0x20_3000, 0x1000)]);
        // 1 MiB-aligned phys but 4 KiB-aligned iova: 4 KiB leaves.
        let mut pt = MockPageTable::new(MockPtType::Huge);
        pt.map(0x1000, 0x10_0000, 0x10_0000, RW).unwrap();
        assert_eq!(sizes(&pt).len(), 256);
        // 1 MiB then 4 KiB tail.
        let mut pt = MockPageTable::new(MockPtType::Huge);
        pt.map(0x10_0000, 0x10_0000, 0x10_2000, RW).unwrap();
        assert_eq!(sizes(&pt), vec![(0x10_0000, 0x10_0000), (0x20_0000, 0x1000), (0x20_1000, 0x1000)]);
        // Huge never uses sizes above 1 MiB.
        let mut pt = MockPageTable::new(MockPtType::Huge);
        pt.map(0, 0, 1 << 30, RW).unwrap();
        assert_eq!(sizes(&pt).len(), 1024);
        assert_eq!(pt.map(0x800, 0, 0x1000, RW), Err(Errno::EINVAL));
    }

    #[test]
    fn errors_leave_table_unchanged() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        assert_eq!(pt.map(0x100_0400, 0, 0x800, RW), Err(Errno::EINVAL));
        assert_eq!(pt.map(0x100_0000, 0x400, 0x800, RW), Err(Errno::EINVAL));
        assert_eq!(pt.map(0x100_0000, 0, 0x400, RW), Err(Errno::EINVAL));
        assert_eq!(pt.map((1 << 38) - 0x800, 0, 0x1000, RW), Err(Errno::EINVAL));
        assert_eq!(pt.map(u64::MAX - 0x7ff, 0, 0x1000, RW), Err(Errno::EINVAL));
        assert_eq!(pt.map(0, (1 << 51) - 0x800, 0x1000, RW), Err(Errno::EINVAL));
        pt.map((1 << 38) - 0x800, 0, 0x800, RW).unwrap();
        assert_eq!(pt.map(0, 0, 0, RW), Ok(()));

        pt.map(0x100_0000, 0x1000, 0x10_0000, RW).unwrap();
        pt.map(0x4000_0000, 0x4000_0000, 0x4000_0000, RW).unwrap();
        pt.set_dirty(0x100_0800);
        let before = pt.tables.clone();
        let (bytes, tb) = (pt.mapped_bytes(), pt.table_bytes());
        for (iova, len) in [
            (0x100_0000, 0x800),
            (0xff_f000, 0x2000),
            (0x10f_f800, 0x1000),
            (0, 0x200_0000),
            (0x7fff_f800, 0x1000),
            (0x5000_0000, 0x800),
            ((1 << 38) - 0x1000, 0x1000),
            (0x80_0000, (1 << 38) - 0x80_0000),
        ] {
            assert_eq!(pt.map(iova, 0x8000, len, RW), Err(Errno::EEXIST), "{iova:#x}+{len:#x}");
        }
        assert!(pt.tables == before);
        assert_eq!((pt.mapped_bytes(), pt.table_bytes()), (bytes, tb));
        leaves(&pt);
    }

    #[test]
    fn unmap_and_table_freeing() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        let empty = pt.table_bytes();
        pt.map(0x100_0000, 0x1000, 0x40_0000, RW).unwrap(); // 4 KiB leaves
        assert_eq!(pt.nr_tables, 1 + 1 + 4);
        assert_eq!(pt.unmap(0x100_0000, 0x1000), 0x1000);
        assert_eq!(pt.unmap(0x100_0000, 0x1000), 0);
        assert_eq!(pt.unmap(0x110_0000, 0x10_0000), 0x10_0000);
        assert_eq!(pt.nr_tables, 1 + 1 + 3);
        assert_eq!(pt.unmap(0, 1 << 38), 0x40_0000 - 0x1000 - 0x10_0000);
        assert_eq!(pt.mapped_bytes(), 0);
        assert_eq!(pt.nr_tables, 1);
        assert_eq!(pt.unmap(0, u64::MAX), 0);
        assert_eq!(pt.unmap(1 << 40, 0x1000), 0);
        leaves(&pt);
        // Slots are reused; only bookkeeping capacity remains.
        pt.map(0x100_0000, 0x1000, 0x40_0000, RW).unwrap();
        pt.unmap(0x100_0000, 0x40_0000);
        assert!(pt.table_bytes() - empty <= 256, "{} vs {empty}", pt.table_bytes());
        // Unmap over gaps.
        pt.map(0x1000, 0x1000, 0x1000, RW).unwrap();
        pt.map(0x4000_0000, 0, 0x4000_0000, RW).unwrap();
        assert_eq!(pt.unmap(0, 0x8000_0000), 0x4000_1000);
        leaves(&pt);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "splits the leaf")]
    fn unmap_straddle_asserts() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x100_0000, 0, 0x20_0000, RW).unwrap();
        pt.unmap(0x100_0000, 0x1000);
    }

    #[test]
    fn memory_per_leaf() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x4000_0000, 0x1000, 64 << 20, RW).unwrap();
        let per_leaf = pt.table_bytes() as f64 / f64::from((64 << 20) / 4096);
        assert!(per_leaf < 17.0, "{per_leaf} bytes per 4 KiB leaf");
    }

    #[test]
    fn dirty_default_4k_leaves() {
        // The selftest's get_dirty_bitmap on a DEFAULT domain with IOAS large pages disabled:
        // 4 KiB leaves, marking even 2 KiB units reports exactly those units.
        let mut pt = MockPageTable::new(MockPtType::Default);
        for k in 0..16u64 {
            pt.map(0x100_0000 + k * 0x1000, 0x7_0000 + k * 0x5000, 0x1000, RW).unwrap();
        }
        assert!(pt.set_dirty(0x100_0000));
        assert!(pt.set_dirty(0x100_2000));
        assert!(pt.set_dirty(0x100_3800)); // odd unit: the kernel still reports the leaf's first 2 KiB
        assert!(!pt.set_dirty(0x101_0000));
        let want = vec![(0x100_0000, 0x800), (0x100_2000, 0x800), (0x100_3000, 0x800)];
        assert_eq!(read(&mut pt, 0x100_0000, 0x1_0000, false), want);
        assert_eq!(read(&mut pt, 0x100_0000, 0x1_0000, true), want);
        assert_eq!(read(&mut pt, 0x100_0000, 0x1_0000, true), vec![]);
        // Walk starting on the last entry of a dirty run reports nothing (count 0) but cleans.
        pt.set_dirty(0x100_0000);
        assert_eq!(read(&mut pt, 0x100_0800, 0x800, true), vec![]);
        assert_eq!(read(&mut pt, 0x100_0000, 0x1000, true), vec![]);
        // clear_all_dirty.
        pt.set_dirty(0x100_5000);
        pt.clear_all_dirty();
        assert_eq!(read(&mut pt, 0, 1 << 38, true), vec![]);
    }

    #[test]
    fn dirty_spans() {
        let mut pt = MockPageTable::new(MockPtType::Default);
        pt.map(0x100_0000, 0x100_0000, 0x1_0000, RW).unwrap(); // 64 KiB leaf = 32 entries
        pt.map(0x120_0000, 0x120_0000, 0x10_0000, RW).unwrap(); // native 1 MiB
        pt.map(0x140_0000, 0x140_0000, 0x20_0000, RW).unwrap(); // 2 MiB = 2 level-1 entries
        pt.set_dirty(0x100_f000);
        pt.set_dirty(0x12a_bcde);
        pt.set_dirty(0x15f_ffff);
        assert_eq!(
            read(&mut pt, 0, 1 << 38, false),
            vec![(0x100_0000, 31 * 0x800), (0x120_0000, 0x10_0000), (0x140_0000, 0x10_0000)]
        );
        // A walk starting inside a run starts there; one ending inside stops at its end index.
        assert_eq!(read(&mut pt, 0x100_1000, 0x2000, false), vec![(0x100_1000, 0x2000)]);
        assert_eq!(read(&mut pt, 0x100_1400, 0x100, false), vec![(0x100_1400, 0x800)]);
        assert_eq!(read(&mut pt, 0x120_0800, 0x800, false), vec![(0x120_0800, 0x10_0000)]);
        // Clearing cleans the whole run even when only part of it was walked.
        assert_eq!(read(&mut pt, 0x100_1000, 0x800, true), vec![(0x100_1000, 0x800)]);
        assert_eq!(read(&mut pt, 0x100_0000, 0x1_0000, true), vec![]);

        // HUGE: a dirty 1 MiB leaf reports all of it.
        let mut pt = MockPageTable::new(MockPtType::Huge);
        pt.map(0x100_0000, 0x20_0000, 0x20_0000, RW).unwrap();
        pt.set_dirty(0x110_0800);
        assert_eq!(read(&mut pt, 0x100_0000, 0x20_0000, false), vec![(0x110_0000, 0x10_0000)]);
        assert_eq!(read(&mut pt, 0x100_0000, 0x20_0000, true), vec![(0x110_0000, 0x10_0000)]);
        assert_eq!(read(&mut pt, 0x100_0000, 0x20_0000, true), vec![]);
    }

    // ---- model-based property test ----

    #[derive(Clone, Debug)]
    struct MLeaf {
        len: u64,
        phys: u64,
        prot: Prot,
        esz: u64,
        dirty: Vec<bool>,
    }

    struct Model {
        ty: MockPtType,
        leaves: BTreeMap<u64, MLeaf>,
        /// Successful map calls still mapped (disjoint).
        calls: Vec<(u64, u64)>,
    }

    impl Model {
        fn sizes(&self) -> Vec<u64> {
            match self.ty {
                MockPtType::Default => (11..=36).rev().map(|s| 1u64 << s).collect(),
                MockPtType::Huge => vec![1 << 20, 1 << 12],
            }
        }
        fn esz(&self, size: u64) -> u64 {
            if size < 1 << 20 {
                2048
            } else if size < 1 << 29 {
                1 << 20
            } else {
                1 << 29
            }
        }
        fn overlaps(&self, iova: u64, end: u64) -> bool {
            self.leaves.range(..end).next_back().is_some_and(|(&s, l)| s + l.len > iova)
        }
        fn map(&mut self, iova: u64, phys: u64, len: u64, prot: Prot) -> Result<()> {
            let unit = *self.sizes().last().unwrap();
            if (iova | phys | len) & (unit - 1) != 0 {
                return Err(Errno::EINVAL);
            }
            if len == 0 {
                return Ok(());
            }
            if iova + len > 1 << 38 || phys + len > 1 << 51 {
                return Err(Errno::EINVAL);
            }
            if self.overlaps(iova, iova + len) {
                return Err(Errno::EEXIST);
            }
            let (mut a, mut p, mut rem) = (iova, phys, len);
            while rem > 0 {
                let size = self.sizes().into_iter().find(|&s| a % s == 0 && p % s == 0 && s <= rem).unwrap();
                let esz = self.esz(size);
                self.leaves
                    .insert(a, MLeaf { len: size, phys: p, prot, esz, dirty: vec![false; (size / esz) as usize] });
                a += size;
                p += size;
                rem -= size;
            }
            self.calls.push((iova, len));
            Ok(())
        }
        /// None if the unmap would split a leaf.
        fn unmap(&mut self, iova: u64, len: u64) -> Option<u64> {
            let end = iova + len;
            let hit: Vec<u64> = self.leaves.range(..end).filter(|(&s, l)| s + l.len > iova).map(|(&s, _)| s).collect();
            for &s in &hit {
                if s < iova || s + self.leaves[&s].len > end {
                    return None;
                }
            }
            let mut freed = 0;
            for s in hit {
                freed += self.leaves.remove(&s).unwrap().len;
            }
            self.calls.retain(|&(a, l)| !(a >= iova && a + l <= end));
            Some(freed)
        }
        fn lookup(&self, iova: u64) -> Option<(u64, &MLeaf)> {
            self.leaves.range(..=iova).next_back().filter(|(&s, l)| s + l.len > iova).map(|(&s, l)| (s, l))
        }
        fn set_dirty(&mut self, iova: u64) -> bool {
            let Some((s, _)) = self.lookup(iova) else { return false };
            let l = self.leaves.get_mut(&s).unwrap();
            l.dirty[((iova - s) / l.esz) as usize] = true;
            true
        }
        fn read(&mut self, iova: u64, len: u64, clear: bool) -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            if len == 0 || iova >= 1 << 38 {
                return out;
            }
            let hi = iova.saturating_add(len).min(1 << 38);
            for (&s, l) in self.leaves.range_mut(..hi) {
                if s + l.len <= iova || !l.dirty.iter().any(|&d| d) {
                    continue;
                }
                let n = l.len / l.esz;
                let first = if iova > s { (iova - s) / l.esz } else { 0 };
                let end_rel = (hi - s).div_ceil(l.esz);
                let count = if n == 1 { 1 } else { (n - 1).min(end_rel).saturating_sub(first) };
                if count > 0 {
                    out.push((iova.max(s + first * l.esz), count * l.esz));
                }
                if clear {
                    l.dirty.iter_mut().for_each(|d| *d = false);
                }
            }
            out
        }
        fn leaves(&self) -> Vec<Leaf> {
            self.leaves
                .iter()
                .map(|(&s, l)| (s, l.len, l.phys, l.prot, (0..l.dirty.len()).filter(|&k| l.dirty[k]).collect()))
                .collect()
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Map { iova: (u32, u64), phys: (u32, u64), len: (u32, u64), prot: (bool, bool) },
        UnmapCall(usize),
        UnmapSpan(usize, usize),
        UnmapRange { iova: (u32, u64), len: (u32, u64) },
        DirtyInLeaf(usize, u64),
        DirtyAt((u32, u64)),
        Read { iova: (u32, u64), len: (u32, u64), clear: bool },
        ReadLeaf(usize, bool),
        ReadPartial { leaf: usize, off: u64, len: u64, clear: bool },
        ReadAll(bool),
        ClearAll,
    }

    fn shifted() -> impl Strategy<Value = (u32, u64)> {
        (prop::sample::select(vec![0u32, 1, 2, 5, 9, 10, 18, 19]), 0u64..24)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (shifted(), shifted(), (prop::sample::select(vec![0u32, 1, 3, 9, 10, 19]), 1u64..6), any::<(bool, bool)>())
                .prop_map(|(iova, phys, len, prot)| Op::Map { iova, phys, len, prot }),
            1 => any::<usize>().prop_map(Op::UnmapCall),
            1 => any::<(usize, usize)>().prop_map(|(a, b)| Op::UnmapSpan(a, b)),
            1 => (shifted(), shifted()).prop_map(|(iova, len)| Op::UnmapRange { iova, len }),
            3 => (any::<usize>(), any::<u64>()).prop_map(|(a, b)| Op::DirtyInLeaf(a, b)),
            1 => shifted().prop_map(Op::DirtyAt),
            2 => (shifted(), shifted(), any::<bool>()).prop_map(|(iova, len, clear)| Op::Read { iova, len, clear }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(a, c)| Op::ReadLeaf(a, c)),
            3 => (any::<usize>(), any::<u64>(), any::<u64>(), any::<bool>())
                .prop_map(|(leaf, off, len, clear)| Op::ReadPartial { leaf, off, len, clear }),
            1 => any::<bool>().prop_map(Op::ReadAll),
            1 => Just(Op::ClearAll),
        ]
    }

    fn run(ty: MockPtType, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
        let mut pt = MockPageTable::new(ty);
        let mut m = Model { ty, leaves: BTreeMap::new(), calls: Vec::new() };
        let unit_lg2 = pt.min_page().trailing_zeros();
        let val = |(s, a): (u32, u64)| a << (unit_lg2 + s);
        // One walk hint for the whole run: it goes stale across unmaps and table reuse.
        let mut hint = usize::MAX;
        for op in ops {
            match op {
                Op::Map { iova, phys, len, prot } => {
                    let (iova, phys) = (val(iova), val(phys));
                    let mut len = val(len);
                    // Bound the number of leaves.
                    let tz = (iova | phys).trailing_zeros();
                    let g = match ty {
                        MockPtType::Default => tz.min(36),
                        MockPtType::Huge if tz >= 20 => 20,
                        MockPtType::Huge => 12,
                    };
                    len = len.min(128u64 << g);
                    let want = m.map(iova, phys, len, Prot { read: prot.0, write: prot.1 });
                    let before = (want.is_err()).then(|| pt.tables.clone());
                    let got = pt.map(iova, phys, len, Prot { read: prot.0, write: prot.1 });
                    prop_assert_eq!(got, want, "map {:#x} {:#x} {:#x}", iova, phys, len);
                    if let Some(before) = before {
                        prop_assert!(pt.tables == before, "failed map changed the table");
                    }
                }
                Op::UnmapCall(k) if !m.calls.is_empty() => {
                    let (a, l) = m.calls[k % m.calls.len()];
                    if let Some(want) = m.unmap(a, l) {
                        prop_assert_eq!(pt.unmap(a, l), want);
                    }
                }
                Op::UnmapSpan(x, y) if !m.calls.is_empty() => {
                    let (mut a, mut b) = (m.calls[x % m.calls.len()], m.calls[y % m.calls.len()]);
                    if a.0 > b.0 {
                        std::mem::swap(&mut a, &mut b);
                    }
                    let (start, end) = (a.0, b.0 + b.1);
                    if let Some(want) = m.unmap(start, end - start) {
                        prop_assert_eq!(pt.unmap(start, end - start), want);
                    }
                }
                Op::UnmapRange { iova, len } => {
                    let (iova, len) = (val(iova), val(len));
                    if iova + len <= 1 << 38 {
                        if let Some(want) = m.unmap(iova, len) {
                            prop_assert_eq!(pt.unmap(iova, len), want);
                        }
                    }
                }
                Op::DirtyInLeaf(k, off) if !m.leaves.is_empty() => {
                    let (&s, l) = m.leaves.iter().nth(k % m.leaves.len()).unwrap();
                    let a = s + off % l.len;
                    prop_assert_eq!(pt.set_dirty(a), m.set_dirty(a));
                }
                Op::DirtyAt(a) => {
                    let a = val(a) + 0x123;
                    prop_assert_eq!(pt.set_dirty(a), m.set_dirty(a));
                }
                Op::Read { iova, len, clear } => {
                    let (iova, len) = (val(iova), val(len));
                    prop_assert_eq!(read(&mut pt, iova, len, clear), m.read(iova, len, clear));
                }
                Op::ReadLeaf(k, clear) if !m.leaves.is_empty() => {
                    let (&s, l) = m.leaves.iter().nth(k % m.leaves.len()).unwrap();
                    let len = l.len;
                    prop_assert_eq!(read(&mut pt, s, len, clear), m.read(s, len, clear));
                }
                Op::ReadPartial { leaf, off, len, clear } if !m.leaves.is_empty() => {
                    // Prefer a dirty leaf; start and end anywhere around it (unit-aligned).
                    let dirty: Vec<u64> =
                        m.leaves.iter().filter(|(_, l)| l.dirty.iter().any(|&d| d)).map(|(&s, _)| s).collect();
                    let s = if dirty.is_empty() {
                        *m.leaves.keys().nth(leaf % m.leaves.len()).unwrap()
                    } else {
                        dirty[leaf % dirty.len()]
                    };
                    let unit = pt.min_page();
                    let units = m.leaves[&s].len / unit;
                    let iova = (s + (off % (units + 1)) * unit).saturating_sub(unit * (off >> 63));
                    let len = (len % (2 * units + 1) + 1) * unit;
                    prop_assert_eq!(
                        read(&mut pt, iova, len, clear),
                        m.read(iova, len, clear),
                        "read {:#x}+{:#x}",
                        iova,
                        len
                    );
                }
                Op::ReadAll(clear) => {
                    prop_assert_eq!(read(&mut pt, 0, 1 << 38, clear), m.read(0, 1 << 38, clear));
                }
                Op::ClearAll => {
                    pt.clear_all_dirty();
                    m.read(0, 1 << 38, true);
                }
                _ => {}
            }
            prop_assert_eq!(leaves(&pt), m.leaves());
            prop_assert_eq!(pt.mapped_bytes(), m.leaves.values().map(|l| l.len).sum::<u64>());
            for (&s, l) in m.leaves.iter().take(64) {
                for a in [s, s + l.len / 2 + 0x123, s + l.len - 1] {
                    prop_assert_eq!(pt.iova_to_phys(a), Some((l.phys + (a - s), l.prot)));
                    prop_assert_eq!(pt.lookup_leaf(a), Some((s, l.len, l.phys, l.prot)));
                    prop_assert_eq!(pt.lookup_leaf_hinted(a, &mut hint), Some((s, l.len, l.phys, l.prot)));
                }
                if m.lookup(s + l.len).is_none() {
                    prop_assert_eq!(pt.iova_to_phys(s + l.len), None);
                    prop_assert_eq!(pt.lookup_leaf_hinted(s + l.len, &mut hint), None);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn model_default(ops in prop::collection::vec(op(), 1..32)) {
            run(MockPtType::Default, ops)?;
        }

        #[test]
        fn model_huge(ops in prop::collection::vec(op(), 1..32)) {
            run(MockPtType::Huge, ops)?;
        }
    }

    /// `cargo test --release -p uiommu-core mock::pagetable::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing() {
        use std::time::Instant;
        const GIB: u64 = 1 << 30;
        const LEAVES: u64 = GIB / 4096;
        for ty in [MockPtType::Default, MockPtType::Huge] {
            // Bulk: one map call of 1 GiB with 4 KiB-only physical alignment (best of 5).
            let mut map_ns = f64::INFINITY;
            for _ in 0..5 {
                let mut pt = MockPageTable::new(ty);
                let t = Instant::now();
                pt.map(GIB, 0x1000, GIB, RW).unwrap();
                map_ns = map_ns.min(t.elapsed().as_nanos() as f64 / LEAVES as f64);
            }
            let mut pt = MockPageTable::new(ty);
            pt.map(GIB, 0x1000, GIB, RW).unwrap();
            assert_eq!(pt.mapped_bytes(), GIB);
            let bytes = pt.table_bytes() as f64 / LEAVES as f64;
            let t = Instant::now();
            let mut sum = 0u64;
            for k in 0..LEAVES {
                sum = sum.wrapping_add(pt.lookup_leaf(GIB + k * 4096 + 5).unwrap().2);
            }
            let lookup_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;
            let t = Instant::now();
            for k in 0..LEAVES {
                pt.set_dirty(GIB + k * 4096);
            }
            let set_dirty_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;
            let t = Instant::now();
            let mut n = 0u64;
            pt.read_and_clear_dirty(GIB, GIB, true, &mut |_, _| n += 1);
            let read_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;
            assert_eq!(n, LEAVES);
            let t = Instant::now();
            assert_eq!(pt.unmap(GIB, GIB), GIB);
            let unmap_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;

            // One map / unmap call per 4 KiB page (IOAS large pages disabled).
            let t = Instant::now();
            for k in 0..LEAVES {
                pt.map(GIB + k * 4096, 0x1000 + k * 4096, 4096, RW).unwrap();
            }
            let map1_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;
            let t = Instant::now();
            for k in 0..LEAVES {
                pt.unmap(GIB + k * 4096, 4096);
            }
            let unmap1_ns = t.elapsed().as_nanos() as f64 / LEAVES as f64;
            eprintln!(
                "{ty:?}: 1 GiB @4K: map {map_ns:.2} ns/leaf, {bytes:.2} B/leaf, lookup_leaf {lookup_ns:.2} ns, \
                 set_dirty {set_dirty_ns:.2} ns, read_and_clear {read_ns:.2} ns/leaf, unmap {unmap_ns:.2} ns/leaf; \
                 per-4K calls: map {map1_ns:.2} ns, unmap {unmap1_ns:.2} ns (sum {sum})"
            );
        }
    }
}

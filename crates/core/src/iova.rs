//! IOVA bookkeeping that does not involve pages: reserved and allowed ranges, the gaps
//! reported by IOAS_IOVA_RANGES, and the automatic IOVA allocator.
//!
//! All ranges are inclusive `(start, last)` pairs so that `[x, u64::MAX]` is expressible.

use crate::errno::{Errno, Result};
use crate::platform::PAGE_SIZE;

/// Who put a reserved range in place (removed together when the owner leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReservedOwner {
    /// A domain's aperture (HWPT object id).
    Domain(u32),
    /// Self-test `ADD_RESERVED`: stays until the IOAS is destroyed.
    None,
}

/// A multiset of possibly overlapping reserved ranges.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReservedRanges {
    ranges: Vec<(u64, u64, ReservedOwner)>,
}

/// Whether inclusive ranges intersect.
pub(crate) fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

impl ReservedRanges {
    pub fn add(&mut self, start: u64, last: u64, owner: ReservedOwner) {
        // Kept sorted by start so the gaps can be walked without sorting or allocating.
        let at = self.ranges.partition_point(|r| r.0 <= start);
        self.ranges.insert(at, (start, last, owner));
    }

    /// Call `f(start, last)` for each maximal gap of the reserved set over `[0, u64::MAX]`,
    /// ascending, without allocating.
    #[inline]
    pub fn for_each_gap(&self, mut f: impl FnMut(u64, u64)) {
        let mut cur = Some(0u64);
        for &(s, l, _) in &self.ranges {
            let Some(c) = cur else { return };
            if l < c {
                continue;
            }
            if s > c {
                f(c, s - 1);
            }
            cur = l.checked_add(1);
        }
        if let Some(c) = cur {
            f(c, u64::MAX);
        }
    }

    pub fn remove_owner(&mut self, owner: ReservedOwner) {
        self.ranges.retain(|r| r.2 != owner);
    }

    pub fn intersects(&self, start: u64, last: u64) -> bool {
        self.ranges.iter().any(|r| overlaps((r.0, r.1), (start, last)))
    }

    /// The reserved set as sorted, merged, disjoint ranges.
    pub fn merged(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.ranges.iter().map(|r| (r.0, r.1)).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, l) in v {
            match out.last_mut() {
                Some(prev) if prev.1 == u64::MAX || s <= prev.1 + 1 => prev.1 = prev.1.max(l),
                _ => out.push((s, l)),
            }
        }
        out
    }

    /// Complement of the reserved set over `[0, u64::MAX]`, ascending.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        complement(&self.merged(), 0, u64::MAX)
    }
}

/// Complement of sorted disjoint `used` within `[lo, hi]`.
pub(crate) fn complement(used: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cur = Some(lo);
    for &(s, l) in used {
        let Some(c) = cur else { break };
        if l < c {
            continue;
        }
        if s > hi {
            break;
        }
        if s > c {
            out.push((c, s - 1));
        }
        cur = if l >= hi { None } else { Some(l + 1) };
    }
    if let Some(c) = cur {
        if c <= hi {
            out.push((c, hi));
        }
    }
    out
}

/// Validate a new allowed-range list: each `start < last`, no two overlapping.
pub(crate) fn check_allowed(list: &[(u64, u64)]) -> Result<()> {
    for (i, r) in list.iter().enumerate() {
        if r.0 >= r.1 {
            return Err(Errno::EINVAL);
        }
        if list[..i].iter().any(|p| overlaps(*p, *r)) {
            return Err(Errno::EINVAL);
        }
    }
    Ok(())
}

/// Round `x` up to a multiple of the power of two `align`; None on overflow.
pub(crate) fn round_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The natural alignment the allocator wants for a request (io_pagetable.md §3 step 2).
pub(crate) fn natural_alignment(length: u64, addr: u64) -> u64 {
    const HUGE: u64 = 2 << 20;
    let pow = length.checked_next_power_of_two().unwrap_or(1 << 63);
    let align = if addr == 0 { pow } else { pow.min(1 << addr.trailing_zeros()) };
    align.min(HUGE)
}

/// Automatic IOVA allocation (io_pagetable.md §3).
///
/// `used` is every occupied range (reserved ranges and areas), sorted by start, possibly
/// overlapping; `allowed` the allowed list (empty = everything).
pub(crate) fn alloc_iova(
    length: u64,
    addr: u64,
    iova_alignment: u64,
    allowed: &[(u64, u64)],
    used: &[(u64, u64)],
) -> Result<u64> {
    if length == 0 || length >= (1u64 << 63) - 1 {
        return Err(Errno::EOVERFLOW);
    }
    let align = natural_alignment(length, addr);
    if align < iova_alignment {
        return Err(Errno::EINVAL);
    }
    let offset = addr % PAGE_SIZE;
    let fits = |s: u64, l: u64| -> Option<u64> {
        let a = round_up(s, align)? | offset;
        (a < l && l - a >= length - 1).then_some(a)
    };
    let lo = PAGE_SIZE;
    let hi = u64::MAX - PAGE_SIZE;
    let mut windows: Vec<(u64, u64)> = if allowed.is_empty() {
        vec![(lo, hi)]
    } else {
        allowed.iter().filter(|r| r.1 >= lo && r.0 <= hi).map(|r| (r.0.max(lo), r.1.min(hi))).collect()
    };
    windows.sort_unstable();
    let merged = merge(used);
    for (ws, wl) in windows {
        if fits(ws, wl).is_none() {
            continue;
        }
        for (hs, hl) in complement(&merged, ws, wl) {
            if let Some(a) = fits(hs, hl) {
                return Ok(a);
            }
        }
    }
    Err(Errno::ENOSPC)
}

/// Sort and merge possibly overlapping ranges.
pub(crate) fn merge(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut v = ranges.to_vec();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some(p) if p.1 == u64::MAX || s <= p.1 + 1 => p.1 = p.1.max(l),
            _ => out.push((s, l)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gaps_of_empty_and_mock_domain() {
        let mut r = ReservedRanges::default();
        assert_eq!(r.gaps(), vec![(0, u64::MAX)]);
        r.add(0, 0xffffff, ReservedOwner::Domain(4));
        r.add(0x8000_0000, u64::MAX, ReservedOwner::Domain(4));
        assert_eq!(r.gaps(), vec![(0x1000000, 0x7fff_ffff)]);
        r.remove_owner(ReservedOwner::Domain(4));
        r.add(4096, 8191, ReservedOwner::None);
        assert_eq!(r.gaps(), vec![(0, 4095), (8192, u64::MAX)]);
    }

    #[test]
    fn allocator_examples() {
        // Empty IOAS, 4 KiB of a 2 MiB aligned buffer -> 0x1000.
        assert_eq!(alloc_iova(4096, 0x20_0000, 1, &[], &[]), Ok(0x1000));
        // With the mock domain's reserved ranges -> 16 MiB.
        let used = [(0, 0xffffff), (0x8000_0000, u64::MAX)];
        assert_eq!(alloc_iova(4096, 0x20_0000, 2048, &[], &used), Ok(0x1000000));
        // Reserved overflow test: align-up overflows -> ENOSPC.
        let used = [(6, 6 + 0xffff_ffff_ffff_8001 - 1)];
        assert_eq!(alloc_iova(0x5000, 0x20_0000, 1, &[], &used), Err(Errno::ENOSPC));
        // Natural alignment below IOAS alignment.
        assert_eq!(alloc_iova(1024, 0x20_0000, 2048, &[], &[]), Err(Errno::EINVAL));
        assert_eq!(alloc_iova(0, 0, 1, &[], &[]), Err(Errno::EOVERFLOW));
    }

    proptest! {
        #[test]
        fn allocation_is_free_aligned_and_first_fit(
            used in proptest::collection::vec((0u64..1<<24, 1u64..1<<20), 0..8),
            len in 1u64..1<<16,
            addr_page in 0u64..64,
        ) {
            let used: Vec<(u64,u64)> = used.iter().map(|&(s,l)| (s, s+l-1)).collect();
            let addr = addr_page * PAGE_SIZE;
            let align = natural_alignment(len, addr);
            match alloc_iova(len, addr, 1, &[], &used) {
                Ok(a) => {
                    prop_assert_eq!(a % align, 0);
                    prop_assert!(a >= PAGE_SIZE);
                    prop_assert!(!used.iter().any(|&u| overlaps(u, (a, a+len-1))));
                    // No lower aligned candidate is free.
                    let mut c = PAGE_SIZE.div_ceil(align) * align;
                    while c < a {
                        prop_assert!(used.iter().any(|&u| overlaps(u, (c, c+len-1))), "missed {c:#x}");
                        c += align;
                    }
                }
                Err(e) => prop_assert_eq!(e, Errno::ENOSPC),
            }
        }

        #[test]
        fn gaps_are_exact_complement(rs in proptest::collection::vec((any::<u64>(), 0u64..1<<40), 0..6)) {
            let mut r = ReservedRanges::default();
            for &(s, l) in &rs { r.add(s, s.saturating_add(l), ReservedOwner::None); }
            let gaps = r.gaps();
            let mut walked = Vec::new();
            r.for_each_gap(|s, l| walked.push((s, l)));
            prop_assert_eq!(&walked, &gaps);
            for w in gaps.windows(2) { prop_assert!(w[0].1 < w[1].0 && w[1].0 - w[0].1 > 1); }
            for &(s, l) in &rs {
                let e = s.saturating_add(l);
                prop_assert!(!gaps.iter().any(|&g| overlaps(g, (s, e))));
            }
        }
    }
}

//! Live `mmap`s of iommufd regions (vIOMMU MMIO pages).
//!
//! The kernel keeps a region's owner busy while any mapping of it exists; the engine models
//! that with the `MmapRegion` it returns (its `hold`). The shim keeps each region value (or,
//! for a region of a remote host, a [`crate::client::RemoteHold`]) until every byte of the
//! mapping has been unmapped — by `munmap`, or by a `MAP_FIXED` mapping placed over it — and
//! then drops it. (`mremap` of such a mapping is not tracked: the hold then lives until the
//! old range is unmapped. A fork child's inherited copy of a mapping holds nothing.)

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

pub(crate) struct Live {
    /// Still-mapped `[start, end)` pieces.
    pieces: Vec<(u64, u64)>,
    _hold: Box<dyn Any + Send>,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
/// `LIVE.len()`, readable without the lock (the munmap fast path).
static COUNT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn live() -> MutexGuard<'static, Vec<Live>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a successful mapping at `[addr, addr + len)` kept alive by `hold`.
pub fn add<T: Any + Send>(addr: u64, len: u64, hold: T) {
    let mut g = live();
    g.push(Live { pieces: vec![(addr, addr.saturating_add(len))], _hold: Box::new(hold) });
    COUNT.store(g.len(), Ordering::Release);
}

/// In a fork child (lock held by the fork guard): the parent's holds are not ours.
pub(crate) fn fork_child(g: &mut Vec<Live>) {
    std::mem::forget(std::mem::take(g));
    COUNT.store(0, Ordering::Release);
}

/// `[addr, addr + len)` is no longer mapped: releases regions with nothing left mapped.
pub fn unmapped(addr: u64, len: u64) {
    if COUNT.load(Ordering::Acquire) == 0 || len == 0 {
        return;
    }
    // Like the kernel, work in whole pages.
    let lo = addr & !4095;
    let hi = addr.saturating_add(len).saturating_add(4095) & !4095;
    let gone: Vec<Live> = {
        let mut g = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        for live in g.iter_mut() {
            live.pieces = subtract(&live.pieces, lo, hi);
        }
        let (dead, alive): (Vec<Live>, Vec<Live>) = g.drain(..).partition(|l| l.pieces.is_empty());
        *g = alive;
        COUNT.store(g.len(), Ordering::Release);
        dead
    };
    // Dropping a region releases its hold inside the engine: never under our lock.
    crate::sys::keep_errno(|| crate::drop_quietly(gone));
}

/// `pieces` minus `[lo, hi)`.
fn subtract(pieces: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut next = Vec::with_capacity(pieces.len() + 1);
    for &(s, e) in pieces {
        if e <= lo || s >= hi {
            next.push((s, e));
            continue;
        }
        if s < lo {
            next.push((s, lo));
        }
        if e > hi {
            next.push((hi, e));
        }
    }
    next
}

/// Number of tracked mappings (for tests).
pub fn count() -> usize {
    COUNT.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    fn subtracting_ranges() {
        let p = [(0x1000, 0x5000)];
        assert_eq!(subtract(&p, 0x2000, 0x3000), vec![(0x1000, 0x2000), (0x3000, 0x5000)]);
        assert_eq!(subtract(&p, 0, 0x1000), vec![(0x1000, 0x5000)]);
        assert_eq!(subtract(&p, 0x5000, 0x6000), vec![(0x1000, 0x5000)]);
        assert_eq!(subtract(&p, 0, 0x3000), vec![(0x3000, 0x5000)]);
        assert_eq!(subtract(&p, 0x4000, u64::MAX), vec![(0x1000, 0x4000)]);
        assert!(subtract(&p, 0x1000, 0x5000).is_empty());
        let two = subtract(&p, 0x2000, 0x3000);
        assert_eq!(subtract(&two, 0x1000, 0x2000), vec![(0x3000, 0x5000)]);
        assert!(subtract(&subtract(&two, 0x1000, 0x2000), 0x3000, 0x5000).is_empty());
    }
}

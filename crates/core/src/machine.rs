//! The emulated machine: state shared by every context of one process.
//!
//! The kernel's pins and rlimit counters are global (a page pinned through one iommufd is
//! pinned for everybody, and `MD_CHECK_REFS` on a fresh fd sees it), so they live here, not
//! in a [`crate::Context`]. Lock order: a context's lock may be held while taking the
//! machine's locks, never the other way round.

use crate::errno::{Errno, Result};
use crate::mock::DmaBuf;
use crate::platform::{Platform, PAGE_SIZE};
use crate::spans::SpanMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// How pinned pages are charged against RLIMIT_MEMLOCK (`io_pagetable.md` §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcctMode {
    /// Owner had CAP_IPC_LOCK, or a dma-buf: only `pinned_vm` moves.
    None,
    /// Per-user `locked_vm` (default for `/dev/iommu`).
    User,
    /// Per-process `locked_vm` (`VmLck`; default for `/dev/vfio/vfio`).
    Mm,
}

/// The process a page store charges its pins to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    pub uid: u32,
    pub mode: AcctMode,
    /// RLIMIT_MEMLOCK in pages at map time.
    pub limit_pages: u64,
}

/// Pinned-memory counters, in pages.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    /// `mm->pinned_vm` per process (VmPin).
    pub pinned_vm: HashMap<u32, u64>,
    /// `mm->locked_vm` per process (VmLck) charged by MM-mode stores.
    pub mm_locked: HashMap<u32, u64>,
    /// `user->locked_vm` per uid charged by USER-mode stores.
    pub user_locked: HashMap<u32, u64>,
}

impl Accounting {
    /// Charge `n` pages to `owner`; ENOMEM (nothing changed) if over the limit.
    pub fn charge(&mut self, owner: &Owner, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        match owner.mode {
            AcctMode::None => {}
            AcctMode::User => {
                let cur = self.user_locked.entry(owner.uid).or_default();
                if cur.saturating_add(n) > owner.limit_pages {
                    return Err(Errno::ENOMEM);
                }
                *cur += n;
            }
            AcctMode::Mm => {
                let cur = self.mm_locked.entry(owner.pid).or_default();
                if cur.saturating_add(n) > owner.limit_pages {
                    return Err(Errno::ENOMEM);
                }
                *cur += n;
            }
        }
        *self.pinned_vm.entry(owner.pid).or_default() += n;
        Ok(())
    }

    /// Return `n` pages charged to `owner`.
    pub fn uncharge(&mut self, owner: &Owner, n: u64) {
        if n == 0 {
            return;
        }
        fn sub(m: &mut HashMap<u32, u64>, k: u32, n: u64) {
            if let Some(v) = m.get_mut(&k) {
                debug_assert!(*v >= n, "accounting underflow");
                *v = v.saturating_sub(n);
                if *v == 0 {
                    m.remove(&k);
                }
            }
        }
        match owner.mode {
            AcctMode::None => {}
            AcctMode::User => sub(&mut self.user_locked, owner.uid, n),
            AcctMode::Mm => sub(&mut self.mm_locked, owner.pid, n),
        }
        sub(&mut self.pinned_vm, owner.pid, n);
    }
}

/// One emulated computer: physical-page pins, accounting, the self-test globals.
pub struct Machine {
    pub(crate) platform: Arc<dyn Platform>,
    /// Long-term pin count per physical page frame (what `MD_CHECK_REFS` reads), as runs.
    pins: Mutex<SpanMap>,
    pub(crate) acct: Mutex<Accounting>,
    /// Self-test temporary buffer limit (`SET_TEMP_MEMORY_LIMIT`); affects batching only.
    pub(crate) temp_memory_limit: AtomicU32,
    /// Self-test dma-bufs by id.
    pub(crate) dmabufs: Mutex<HashMap<u64, Weak<DmaBuf>>>,
    pub(crate) next_dmabuf: AtomicU64,
    /// Every live context, for notifications that cross contexts (dma-buf revoke).
    pub(crate) contexts: Mutex<Vec<Weak<crate::Context>>>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside the engine must not wedge every later call: take the data as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Machine {
    /// A machine whose memory and descriptors are provided by `platform`.
    pub fn new(platform: Arc<dyn Platform>) -> Arc<Machine> {
        Arc::new(Machine {
            platform,
            pins: Mutex::new(SpanMap::new(0)),
            acct: Mutex::default(),
            temp_memory_limit: AtomicU32::new(65536),
            dmabufs: Mutex::default(),
            next_dmabuf: AtomicU64::new(1),
            contexts: Mutex::default(),
        })
    }

    /// The platform this machine runs on.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Take one long-term pin on each of `npages` physical pages from `phys`.
    pub(crate) fn pin_run(&self, phys: u64, npages: u64) {
        let pfn = phys / PAGE_SIZE;
        let mut pins = lock(&self.pins);
        for (gs, ge) in pins.gaps(pfn, pfn + npages) {
            pins.insert(gs, ge, 0, 0);
            self.platform.pin_changed(gs * PAGE_SIZE, ge - gs, true);
        }
        pins.add(pfn, pfn + npages, 1, &mut |_, _, _| {});
    }

    /// Drop one long-term pin on each of `npages` physical pages from `phys`.
    pub(crate) fn unpin_run(&self, phys: u64, npages: u64) {
        let pfn = phys / PAGE_SIZE;
        let mut pins = lock(&self.pins);
        pins.add(pfn, pfn + npages, -1, &mut |s, e, _| self.platform.pin_changed(s * PAGE_SIZE, e - s, false));
    }

    /// Long-term pins on one physical page.
    pub fn pin_count(&self, phys: u64) -> u32 {
        lock(&self.pins).at(phys / PAGE_SIZE).0
    }

    /// Total pinned pages on the machine, counting each pin (for invariant checks).
    pub fn total_pins(&self) -> u64 {
        lock(&self.pins).iter_range(0, u64::MAX).map(|(s, e, c, _)| (e - s) * c as u64).sum()
    }

    pub(crate) fn acct(&self) -> MutexGuard<'_, Accounting> {
        lock(&self.acct)
    }

    /// `VmPin` and `VmLck` figures (in pages) the machine charged to `pid`.
    pub fn pinned_pages_of(&self, pid: u32) -> (u64, u64) {
        let a = self.acct();
        (a.pinned_vm.get(&pid).copied().unwrap_or(0), a.mm_locked.get(&pid).copied().unwrap_or(0))
    }

    /// Pages charged to `uid`'s `locked_vm`.
    pub fn user_locked_pages(&self, uid: u32) -> u64 {
        self.acct().user_locked.get(&uid).copied().unwrap_or(0)
    }
}

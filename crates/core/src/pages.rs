//! Page stores (the kernel's `iopt_pages`): a run of PAGE_SIZE pages from one source,
//! pinned at most once per page however many areas, domains and accesses use it.
//!
//! A store counts, per page, how many holders cover it: each *area* of the store holds its
//! span while its IOAS has at least one domain, and each access pin holds its span. A page
//! is pinned (machine pin + rlimit charge to the store's owner) when its count goes from 0
//! to 1 and unpinned when it drops back to 0. Every failure while pinning releases what the
//! failing call pinned, so the store is exactly as before.

use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::machine::{AcctMode, Machine, Owner};
use crate::mock::DmaBuf;
use crate::platform::{Caller, HostFile, HostFileKind, PAGE_SIZE};
use crate::spans::SpanMap;
use std::sync::Arc;

/// Where a store's pages come from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// User memory of process `pid` starting at page-aligned `base`.
    Va { pid: u32, base: u64 },
    /// A shmem/hugetlbfs file from page offset `pgoff`.
    File { file: Arc<dyn HostFile>, pgoff: u64 },
    /// A self-test dma-buf from page offset `pgoff` (MMIO-like: never charged).
    DmaBuf { buf: Arc<DmaBuf>, pgoff: u64 },
}

/// Identifies a store inside a context.
pub(crate) type StoreId = u64;

/// One page store.
#[derive(Debug)]
pub(crate) struct Pages {
    pub source: Source,
    pub npages: u64,
    /// Pages are pinned for write (WRITEABLE requested at creation).
    pub writable: bool,
    pub owner: Owner,
    /// Number of areas referencing this store.
    pub area_refs: u32,
    /// Pinned pages: page index → holders and physical address (runs).
    pinned: SpanMap,
    /// Pages currently pinned (charged).
    pub npinned: u64,
}

impl Pages {
    pub fn new(source: Source, npages: u64, writable: bool, owner: Owner) -> Pages {
        Pages { source, npages, writable, owner, area_refs: 0, pinned: SpanMap::new(PAGE_SIZE), npinned: 0 }
    }

    pub fn is_dmabuf(&self) -> bool {
        matches!(self.source, Source::DmaBuf { .. })
    }

    /// Physical address of a pinned page.
    pub fn pinned_phys(&self, idx: u64) -> Option<u64> {
        match self.pinned.at(idx) {
            (0, _) => None,
            (_, phys) => Some(phys),
        }
    }

    /// Every held run: `(first index, end index, holders, phys of first)` (for checks).
    pub fn hold_runs(&self) -> impl Iterator<Item = (u64, u64, u32, u64)> + '_ {
        self.pinned.iter_range(0, self.npages)
    }

    /// Pinned runs over pages `[first, last]`: `(first index, end index, phys of first)`.
    pub fn pinned_runs(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.pinned.iter_range(first, last + 1).map(|(s, e, _, phys)| (s, e, phys))
    }

    /// Resolve pages `first..first+n` from the source (no pin taken), one address per page.
    pub fn resolve(&self, machine: &Machine, first: u64, n: usize, out: &mut Vec<u64>) -> Result<()> {
        let mut runs = Vec::new();
        self.resolve_runs(machine, first, n, &mut runs)?;
        for (p, k) in runs {
            out.extend((0..k).map(|i| p + i * PAGE_SIZE));
        }
        Ok(())
    }

    /// Resolve pages `first..first+n` from the source as `(phys, npages)` runs.
    pub fn resolve_runs(&self, machine: &Machine, first: u64, n: usize, out: &mut Vec<(u64, u64)>) -> Result<()> {
        match &self.source {
            Source::Va { pid, base } => {
                machine.platform.resolve_user_runs(*pid, base + first * PAGE_SIZE, n, self.writable, out)
            }
            Source::File { file, pgoff } => {
                if file.kind() == HostFileKind::Other {
                    return Err(Errno::EINVAL);
                }
                // In pages: a store may end at the top of the 64-bit file offset space.
                let size = file.size()?;
                if pgoff + first + n as u64 > size.div_ceil(PAGE_SIZE) {
                    return Err(Errno::EINVAL);
                }
                file.resolve_runs(pgoff + first, n, out)
            }
            Source::DmaBuf { buf, pgoff } => buf.mem.resolve_runs(pgoff + first, n, out),
        }
    }

    /// Add one holder to every page of `[first, last]`, pinning pages that had none.
    pub fn hold(&mut self, machine: &Machine, first: u64, last: u64) -> Result<()> {
        debug_assert!(first <= last && last < self.npages);
        // The pin batch (`pfn_reader`'s temporary buffer).
        fail_point(FailSite::TempBuf)?;
        // Resolve every page nobody holds yet, as runs of contiguous physical memory.
        let mut runs: Vec<(u64, u64, u64)> = Vec::new(); // (first idx, end idx, phys)
        let mut phys = Vec::new();
        for (gs, ge) in self.pinned.gaps(first, last + 1) {
            if !self.is_dmabuf() {
                fail_point(FailSite::Pin)?;
            }
            phys.clear();
            self.resolve_runs(machine, gs, (ge - gs) as usize, &mut phys)?;
            let mut at = gs;
            for &(p, k) in &phys {
                match runs.last_mut() {
                    // Physically contiguous with the previous run: one span, one pin run.
                    Some(r) if r.1 == at && r.2 + (r.1 - r.0) * PAGE_SIZE == p => r.1 += k,
                    _ => runs.push((at, at + k, p)),
                }
                at += k;
            }
        }
        let count: u64 = runs.iter().map(|r| r.1 - r.0).sum();
        if !self.is_dmabuf() && count > 0 {
            fail_point(FailSite::Charge)?;
            machine.acct().charge(&self.owner, count)?;
        }
        for &(s, e, p) in &runs {
            machine.pin_run(p, e - s);
            self.pinned.insert(s, e, 0, p);
        }
        self.pinned.add(first, last + 1, 1, &mut |_, _, _| {});
        self.npinned += count;
        Ok(())
    }

    /// Drop one holder from every page of `[first, last]`, unpinning pages left with none.
    pub fn release(&mut self, machine: &Machine, first: u64, last: u64) {
        let mut freed = 0u64;
        self.pinned.add(first, last + 1, -1, &mut |s, e, phys| {
            machine.unpin_run(phys, e - s);
            freed += e - s;
        });
        if !self.is_dmabuf() {
            machine.acct().uncharge(&self.owner, freed);
        }
        self.npinned -= freed;
    }

    /// Read bytes at byte offset `off` of the store (may cross pages).
    pub fn read(&self, machine: &Machine, mut off: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let idx = off / PAGE_SIZE;
            let in_page = off % PAGE_SIZE;
            let n = ((PAGE_SIZE - in_page) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            self.page_io(machine, idx, in_page, Io::Read(chunk))?;
            done += n;
            off += n as u64;
        }
        Ok(())
    }

    /// Write bytes at byte offset `off` of the store (may cross pages).
    pub fn write(&self, machine: &Machine, mut off: u64, buf: &[u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let idx = off / PAGE_SIZE;
            let in_page = off % PAGE_SIZE;
            let n = ((PAGE_SIZE - in_page) as usize).min(buf.len() - done);
            self.page_io(machine, idx, in_page, Io::Write(&buf[done..done + n]))?;
            done += n;
            off += n as u64;
        }
        Ok(())
    }

    fn page_io(&self, machine: &Machine, idx: u64, in_page: u64, io: Io<'_>) -> Result<()> {
        let p = &machine.platform;
        if let Some(phys) = self.pinned_phys(idx) {
            return match io {
                Io::Read(b) => p.read_phys(phys + in_page, b),
                Io::Write(b) => p.write_phys(phys + in_page, b),
            };
        }
        match &self.source {
            Source::Va { pid, base } => {
                let c = Caller::privileged(*pid);
                let va = base + idx * PAGE_SIZE + in_page;
                match io {
                    Io::Read(b) => p.read_user(&c, va, b),
                    Io::Write(b) => p.write_user(&c, va, b),
                }
            }
            _ => {
                let mut v = Vec::with_capacity(1);
                self.resolve(machine, idx, 1, &mut v)?;
                let phys = v[0] + in_page;
                match io {
                    Io::Read(b) => p.read_phys(phys, b),
                    Io::Write(b) => p.write_phys(phys, b),
                }
            }
        }
    }
}

enum Io<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// The owner record for a store created now by `caller` in a context with `mode`.
pub(crate) fn owner_for(caller: &Caller, mode: AcctMode) -> Owner {
    let mode = if caller.cap_ipc_lock { AcctMode::None } else { mode };
    let limit_pages = if caller.memlock_limit == u64::MAX { u64::MAX } else { caller.memlock_limit / PAGE_SIZE };
    Owner { pid: caller.pid, uid: caller.uid, mode, limit_pages }
}

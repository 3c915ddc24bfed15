//! What the engine needs from the machine it runs on.
//!
//! The engine is safe Rust and never touches raw memory. Everything that reads a process's
//! memory, resolves "physical" page identities, creates file descriptors or asks who the
//! caller is goes through [`Platform`]. The preload shim implements it on Linux
//! (`process_vm_readv`, `/proc/PID/maps`, memfds); tests implement it over plain vectors
//! ([`crate::sim::SimPlatform`]), which is what Miri runs.
//!
//! ## Physical addresses
//! uiommu emulates an IOMMU, so it needs "physical" addresses to put in IO page tables.
//! A platform hands out a 64-bit physical address for every page of process or file memory
//! such that two mappings of the same backing page (a MAP_SHARED region seen from two
//! processes, a memfd mapped by the program and by uiommu) resolve to the same address, and
//! contiguous pages of one backing object get contiguous addresses. Pages are PAGE_SIZE.

use crate::errno::Result;
use std::fmt::Debug;
use std::sync::Arc;

/// The CPU page size the engine models (x86-64 and most arm64 configurations).
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// The credentials the kernel would consult for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creds {
    /// Real uid (per-user accounting key).
    pub uid: u32,
    /// Effective CAP_SYS_RESOURCE (needed to change the rlimit accounting mode).
    pub cap_sys_resource: bool,
    /// Effective CAP_IPC_LOCK (exempts pins from RLIMIT_MEMLOCK).
    pub cap_ipc_lock: bool,
    /// RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` for unlimited).
    pub memlock_limit: u64,
}

impl Creds {
    /// Every privilege and no limit.
    pub const PRIVILEGED: Creds = Creds { uid: 0, cap_sys_resource: true, cap_ipc_lock: true, memlock_limit: u64::MAX };
}

/// Who issued a call: the process whose memory user pointers refer to, with the
/// credentials the kernel would consult.
///
/// The credentials may be fetched lazily: most commands never look at them, and asking a
/// real kernel for them costs system calls, so a platform can build a caller with
/// [`Caller::lazy`] and only the commands that need them (mapping, accounting mode, ...)
/// pay. The fields of [`Creds`] are reached through `Deref` (`caller.uid`); writing one
/// (`caller.uid = 1000`, through `DerefMut`) fetches the rest first.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Thread-group id of the calling process; user pointers are in its address space.
    pub pid: u32,
    creds: std::sync::OnceLock<Creds>,
    fetch: Option<fn() -> Creds>,
}

impl Caller {
    /// A caller with known credentials.
    pub fn new(pid: u32, creds: Creds) -> Caller {
        Caller { pid, creds: std::sync::OnceLock::from(creds), fetch: None }
    }

    /// A caller whose credentials `fetch` returns when first needed (it runs at most once,
    /// on the thread that first needs them).
    pub fn lazy(pid: u32, fetch: fn() -> Creds) -> Caller {
        Caller { pid, creds: std::sync::OnceLock::new(), fetch: Some(fetch) }
    }

    /// A caller with every privilege and no limit (for tests and embedded use).
    pub fn privileged(pid: u32) -> Caller {
        Caller::new(pid, Creds::PRIVILEGED)
    }

    /// The credentials (fetched now if they were lazy and not fetched yet).
    pub fn creds(&self) -> &Creds {
        self.creds.get_or_init(|| self.fetch.map_or(Creds::PRIVILEGED, |f| f()))
    }
}

impl std::ops::Deref for Caller {
    type Target = Creds;
    fn deref(&self) -> &Creds {
        self.creds()
    }
}

impl std::ops::DerefMut for Caller {
    fn deref_mut(&mut self) -> &mut Creds {
        let c = *self.creds();
        self.creds = std::sync::OnceLock::from(c);
        self.creds.get_mut().expect("just set")
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Caller) -> bool {
        self.pid == other.pid && self.creds() == other.creds()
    }
}

impl Eq for Caller {}

/// What kind of file backs a `IOAS_MAP_FILE` mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFileKind {
    /// shmem / memfd: pinnable.
    Shmem,
    /// hugetlbfs (incl. `MFD_HUGETLB` memfds): pinnable, compound pages.
    Hugetlb,
    /// Any other file: refused at pin time (EINVAL).
    Other,
}

/// A file the program handed to `IOMMU_IOAS_MAP_FILE`. The engine keeps it (like the kernel
/// keeps a file reference) for as long as an area maps it.
pub trait HostFile: Send + Sync + Debug {
    /// The file's kind.
    fn kind(&self) -> HostFileKind;
    /// Current size in bytes.
    fn size(&self) -> Result<u64>;
    /// Physical addresses of pages `pgoff .. pgoff + npages` (appended to `out`).
    fn resolve_pages(&self, pgoff: u64, npages: usize, out: &mut Vec<u64>) -> Result<()>;

    /// The same pages as runs of physically contiguous memory `(phys, npages)` appended to
    /// `out`. The default coalesces [`resolve_pages`](Self::resolve_pages); implementations
    /// that know their layout override it so large files cost O(runs), not O(pages).
    fn resolve_runs(&self, pgoff: u64, npages: usize, out: &mut Vec<(u64, u64)>) -> Result<()> {
        let mut v = Vec::with_capacity(npages);
        self.resolve_pages(pgoff, npages, &mut v)?;
        coalesce(&v, out);
        Ok(())
    }
}

/// Append per-page physical addresses to `out` as `(phys, npages)` runs.
pub fn coalesce(pages: &[u64], out: &mut Vec<(u64, u64)>) {
    for &p in pages {
        match out.last_mut() {
            Some(r) if r.0 + r.1 * PAGE_SIZE == p => r.1 += 1,
            _ => out.push((p, 1)),
        }
    }
}

/// A file descriptor as the engine sees it when a command names one.
#[derive(Clone, Debug)]
pub enum FdTarget {
    /// One of the engine's own files (access, fault queue, vEVENTQ, dma-buf, iommufd).
    Engine(crate::EngineFile),
    /// Any other open file.
    Host(Arc<dyn HostFile>),
}

/// Services the engine needs from its host. Implementations must be thread safe; every
/// method may be called with engine locks held, so none may call back into the engine.
pub trait Platform: Send + Sync + 'static {
    /// Copy `buf.len()` bytes from `addr` in the caller's memory. EFAULT if unreadable.
    fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<()>;
    /// A read the engine may do speculatively (reading ahead more than it strictly needs)
    /// and falls back from on failure; not a user-visible copy. Defaults to `read_user`.
    fn try_read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.read_user(caller, addr, buf)
    }

    /// Copy `buf` to `addr` in the caller's memory. EFAULT if unwritable.
    fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> Result<()>;

    /// Resolve `npages` pages from page-aligned `va` in process `pid` for pinning: append the
    /// physical address of each page to `out`. Fails EFAULT if any page is not mapped, or is
    /// not writable while `write` is set (or not readable). A read-only pin of a private
    /// mapping must refer to memory that later CPU writes of that process also hit.
    fn resolve_user_pages(&self, pid: u32, va: u64, npages: usize, write: bool, out: &mut Vec<u64>) -> Result<()>;

    /// [`resolve_user_pages`](Self::resolve_user_pages) as runs of contiguous physical
    /// memory `(phys, npages)`; the default coalesces the per-page answer.
    fn resolve_user_runs(
        &self,
        pid: u32,
        va: u64,
        npages: usize,
        write: bool,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let mut v = Vec::with_capacity(npages);
        self.resolve_user_pages(pid, va, npages, write, &mut v)?;
        coalesce(&v, out);
        Ok(())
    }

    /// Whether the physical page is part of a compound (huge) page; MD_CHECK_REFS skips those.
    fn is_compound(&self, phys: u64) -> bool;

    /// Read bytes at a physical address (the range stays within one page). EFAULT if the
    /// backing is gone.
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> Result<()>;
    /// Write bytes at a physical address (the range stays within one page).
    fn write_phys(&self, phys: u64, buf: &[u8]) -> Result<()>;

    /// Called when `npages` physical pages from `phys` gain their first pin / lose their
    /// last pin, so a platform can keep the backing alive while pinned (e.g. hold a file
    /// reference).
    fn pin_changed(&self, _phys: u64, _npages: u64, _pinned: bool) {}

    /// Look up a file descriptor of the caller. EBADF if not open.
    fn fd(&self, caller: &Caller, fd: i32) -> Result<FdTarget>;
    /// Install an engine file as a new descriptor in the caller's table and return its
    /// number. `flags` are `open(2)` flags (`O_CLOEXEC`, `O_RDWR`, ...).
    fn install_fd(&self, caller: &Caller, file: crate::EngineFile, flags: i32) -> Result<i32>;
    /// Take back a descriptor [`Platform::install_fd`] just created for an ioctl that then
    /// failed (its copy-back faulted), so the caller never sees it (the kernel installs the
    /// fd only after the copy-back): close the number and return its engine file for the
    /// engine to drop. `None` (the default) if the platform cannot; the descriptor stays.
    fn uninstall_fd(&self, _caller: &Caller, _fd: i32) -> Option<crate::EngineFile> {
        None
    }
    /// Create the memory behind a self-test dma-buf of `len` bytes; returns its file.
    fn create_dmabuf_memory(&self, len: u64) -> Result<Arc<dyn HostFile>>;
    /// Wake anybody polling an engine file (fault queue or vEVENTQ) whose readiness changed.
    fn notify_readable(&self, _file: &crate::EngineFile, _readable: bool) {}
}

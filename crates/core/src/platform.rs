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

/// Who issued a call: the process whose memory user pointers refer to, with the
/// credentials the kernel would consult.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Thread-group id of the calling process; user pointers are in its address space.
    pub pid: u32,
    /// Real uid (per-user accounting key).
    pub uid: u32,
    /// Effective CAP_SYS_RESOURCE (needed to change the rlimit accounting mode).
    pub cap_sys_resource: bool,
    /// Effective CAP_IPC_LOCK (exempts pins from RLIMIT_MEMLOCK).
    pub cap_ipc_lock: bool,
    /// RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` for unlimited).
    pub memlock_limit: u64,
}

impl Caller {
    /// A caller with every privilege and no limit (for tests and embedded use).
    pub fn privileged(pid: u32) -> Caller {
        Caller { pid, uid: 0, cap_sys_resource: true, cap_ipc_lock: true, memlock_limit: u64::MAX }
    }
}

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
    /// Copy `buf` to `addr` in the caller's memory. EFAULT if unwritable.
    fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> Result<()>;

    /// Resolve `npages` pages from page-aligned `va` in process `pid` for pinning: append the
    /// physical address of each page to `out`. Fails EFAULT if any page is not mapped, or is
    /// not writable while `write` is set (or not readable). A read-only pin of a private
    /// mapping must refer to memory that later CPU writes of that process also hit.
    fn resolve_user_pages(
        &self,
        pid: u32,
        va: u64,
        npages: usize,
        write: bool,
        out: &mut Vec<u64>,
    ) -> Result<()>;

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
    /// Create the memory behind a self-test dma-buf of `len` bytes; returns its file.
    fn create_dmabuf_memory(&self, len: u64) -> Result<Arc<dyn HostFile>>;
    /// Wake anybody polling an engine file (fault queue or vEVENTQ) whose readiness changed.
    fn notify_readable(&self, _file: &crate::EngineFile, _readable: bool) {}
}

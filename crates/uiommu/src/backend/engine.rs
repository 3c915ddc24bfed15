//! The in-process backend: the uiommu engine (`uiommu_core`) on this process's memory.
//!
//! Memory (user copies, physical page identities, reads and writes at physical addresses,
//! memfds handed to `IOMMU_IOAS_MAP_FILE`, dma-buf memory) is `uiommu_linux::LinuxMemory`,
//! the same code the `uiommu run` shim uses, without the shim's libc interposers or its
//! fault handler (copies of our own memory use `process_vm_readv`/`process_vm_writev`).
//!
//! Every in-process iommufd of a process shares one [`Machine`] (as every `/dev/iommu` open
//! shares one kernel): page pins and accounting are machine-wide. The files the engine hands
//! out (access and fault-queue "descriptors") live in a table of the platform's own: their
//! numbers are only meaningful to this API, never to `read(2)` or `close(2)`; any other
//! descriptor number names a real descriptor of this process.

use super::{dma_error, Backend, BackendKind, DmaBuf};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use uiommu_core::{Caller, Context, Creds, EngineFile, Errno, FdTarget, HostFile, Machine, Platform};
use uiommu_linux::LinuxMemory;

/// Engine file numbers start here, clear of the real descriptors a program usually has.
const FIRST_ENGINE_FD: i32 = 1 << 20;

/// The engine's view of this process.
#[derive(Debug, Default)]
pub(crate) struct EnginePlatform {
    mem: LinuxMemory,
    files: Mutex<Files>,
}

#[derive(Debug, Default)]
struct Files {
    map: BTreeMap<i32, EngineFile>,
    next: i32,
}

impl EnginePlatform {
    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self, fd: i32) -> Result<EngineFile> {
        self.files().map.get(&fd).cloned().ok_or(Error::BadFd)
    }
}

impl Platform for EnginePlatform {
    fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> uiommu_core::Result<()> {
        self.mem.read_user(caller, addr, buf)
    }

    fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> uiommu_core::Result<()> {
        self.mem.write_user(caller, addr, buf)
    }

    fn resolve_user_pages(
        &self,
        pid: u32,
        va: u64,
        npages: usize,
        write: bool,
        out: &mut Vec<u64>,
    ) -> uiommu_core::Result<()> {
        self.mem.resolve_user_pages(pid, va, npages, write, out)
    }

    fn is_compound(&self, phys: u64) -> bool {
        self.mem.is_compound(phys)
    }

    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> uiommu_core::Result<()> {
        self.mem.read_phys(phys, buf)
    }

    fn write_phys(&self, phys: u64, buf: &[u8]) -> uiommu_core::Result<()> {
        self.mem.write_phys(phys, buf)
    }

    fn fd(&self, caller: &Caller, fd: i32) -> uiommu_core::Result<FdTarget> {
        if let Some(f) = self.files().map.get(&fd) {
            return Ok(FdTarget::Engine(f.clone()));
        }
        if !(0..FIRST_ENGINE_FD).contains(&fd) {
            return Err(Errno::EBADF);
        }
        let file: Arc<dyn HostFile> = self.mem.host_file(caller.pid, fd)?;
        Ok(FdTarget::Host(file))
    }

    fn install_fd(&self, _caller: &Caller, file: EngineFile, _flags: i32) -> uiommu_core::Result<i32> {
        let mut f = self.files();
        // Numbers are never reused, so no stale entry is ever dropped here (under engine locks).
        let fd = FIRST_ENGINE_FD.checked_add(f.next).ok_or(Errno(libc::EMFILE))?;
        f.next += 1;
        f.map.insert(fd, file);
        Ok(fd)
    }

    fn create_dmabuf_memory(&self, len: u64) -> uiommu_core::Result<Arc<dyn HostFile>> {
        self.mem.create_dmabuf_memory(len)
    }
}

/// The process-wide machine of the in-process backend.
fn machine() -> &'static (Arc<EnginePlatform>, Arc<Machine>) {
    static M: OnceLock<(Arc<EnginePlatform>, Arc<Machine>)> = OnceLock::new();
    M.get_or_init(|| {
        // Keeps uiommu-linux's cached pid right in fork children.
        uiommu_linux::init();
        let p = Arc::new(EnginePlatform::default());
        let m = Machine::new(p.clone());
        (p, m)
    })
}

/// One in-process iommufd: an engine context.
#[derive(Debug)]
pub(crate) struct EngineBackend {
    platform: Arc<EnginePlatform>,
    ctx: Arc<Context>,
    creds: Creds,
}

impl EngineBackend {
    pub(crate) fn open() -> EngineBackend {
        let (platform, m) = machine();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        // The embedding program owns the engine: no RLIMIT_MEMLOCK charge limit.
        let creds = Creds { uid, ..Creds::PRIVILEGED };
        EngineBackend { platform: platform.clone(), ctx: Context::open(m), creds }
    }

    /// The caller: this process (its pid now, so a fork child's calls read its own memory).
    fn caller(&self) -> Caller {
        Caller::new(uiommu_linux::my_pid(), self.creds)
    }
}

impl Backend for EngineBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::InProcess
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i32> {
        // The engine reads and writes the structure through the platform, at its address
        // (the machine's own platform, with its type named: the copies are inlined).
        Ok(self.ctx.ioctl_via(&*self.platform, &self.caller(), cmd, arg.as_mut_ptr() as u64)?)
    }

    fn read_file(&self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        Ok(self.platform.file(fd)?.read(&self.caller(), buf.as_mut_ptr() as u64, buf.len())?)
    }

    fn write_file(&self, fd: i32, buf: &[u8]) -> Result<usize> {
        Ok(self.platform.file(fd)?.write(&self.caller(), buf.as_ptr() as u64, buf.len())?)
    }

    fn close_file(&self, fd: i32) {
        let f = self.platform.files().map.remove(&fd);
        // Dropped outside the table lock: an access's drop takes its context's lock.
        drop(f);
    }

    fn dma(&self, dev: u32, pasid: u32, iova: u64, buf: DmaBuf<'_>) -> Result<()> {
        let r = match buf {
            DmaBuf::Read(b) => self.ctx.dma_read(dev, pasid, iova, b),
            DmaBuf::Write(b) => self.ctx.dma_write(dev, pasid, iova, b),
        };
        r.map_err(|e| dma_error(e.into(), iova))
    }

    fn check_invariants(&self) -> Option<std::result::Result<(), String>> {
        Some(self.ctx.check_invariants())
    }
}

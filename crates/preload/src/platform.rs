//! `LinuxPlatform`: the engine's [`Platform`] in a process running the shim.
//!
//! Memory (user copies, physical page identities, host files, dma-buf memory) is
//! [`uiommu_linux::LinuxMemory`]; this file adds what needs the shim: descriptors. A caller
//! is either this process (its fd table) or a client process whose request the service
//! thread is serving ([`crate::host`]): its descriptors are looked up by file identity
//! through `/proc/PID/fd` (or taken with `pidfd_getfd`), and new ones travel to it over the
//! request's reply channel.

use std::sync::Arc;

use uiommu_core::{Caller, EngineFile, Errno, FdTarget, HostFile, Platform};
use uiommu_linux::LinuxMemory;

pub use uiommu_linux::memory::memory_file;

use crate::fdtable::{self, ShimFile};
use crate::{host, my_pid};

/// The engine's platform for the current Linux process.
#[derive(Debug, Default)]
pub struct LinuxPlatform {
    mem: LinuxMemory,
}

impl LinuxPlatform {
    /// The platform.
    pub const fn new() -> LinuxPlatform {
        LinuxPlatform { mem: LinuxMemory }
    }
}

/// The platform for `Context::ioctl_via`: it is stateless (its state is the process's), so
/// this value behaves exactly as the machine's own.
pub const PLATFORM: LinuxPlatform = LinuxPlatform::new();

impl Platform for LinuxPlatform {
    #[inline]
    fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> uiommu_core::Result<()> {
        self.mem.read_user(caller, addr, buf)
    }

    #[inline]
    fn try_read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> uiommu_core::Result<()> {
        self.mem.read_user(caller, addr, buf)
    }

    #[inline]
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
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        if caller.pid == my_pid() {
            if fdtable::is_private(fd) {
                return Err(Errno::EBADF);
            }
            if let Some(f) = fdtable::lookup(fd) {
                match &*f {
                    ShimFile::Local(c) => return Ok(FdTarget::Engine(c.file.clone())),
                    ShimFile::LocalDmabuf(e) => return Ok(FdTarget::Engine(e.clone())),
                    // Another host's file: to this engine it is just some socket.
                    ShimFile::Remote { .. } => {}
                }
            }
        }
        // Not in this process's table: one of our files held by a client (recognised by
        // the identity of its file), or a plain file.
        let ident = uiommu_linux::memory::file_identity(caller.pid, fd)?;
        if let Some(f) = host::engine_by_ident(ident) {
            return Ok(FdTarget::Engine(f));
        }
        Ok(FdTarget::Host(self.mem.host_file(caller.pid, fd)?))
    }

    fn install_fd(&self, caller: &Caller, file: EngineFile, flags: i32) -> uiommu_core::Result<i32> {
        if caller.pid == my_pid() {
            host::install_local(file, flags)
        } else {
            host::install_remote(caller.pid, file, flags)
        }
    }

    fn uninstall_fd(&self, caller: &Caller, fd: i32) -> Option<EngineFile> {
        if caller.pid == my_pid() {
            host::uninstall_local(fd)
        } else {
            host::uninstall_remote(caller.pid, fd)
        }
    }

    fn create_dmabuf_memory(&self, len: u64) -> uiommu_core::Result<Arc<dyn HostFile>> {
        self.mem.create_dmabuf_memory(len)
    }
}

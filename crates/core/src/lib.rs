//! uiommu engine: Linux iommufd's object model and IO page-table engine in safe Rust.
//!
//! A [`Machine`] is one emulated computer: its physical-page pin table, its mock IOMMU and
//! the self-test globals. Each open of `/dev/iommu` is a [`Context`] on a machine; its
//! [`Context::ioctl`] takes the raw command number and user pointer of an iommufd ioctl
//! and behaves like Linux 7.2's `iommufd_fops_ioctl`, reading and writing user memory
//! through the machine's [`Platform`]. A host that knows its platform's type calls
//! [`Context::ioctl_via`] instead, which compiles the commands for that type (user copies
//! inlined: a cheap ioctl costs about a fifth less).
//!
//! The module split follows the kernel's (`drivers/iommu/iommufd/`): see ARCHITECTURE.md.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod errno;
pub mod platform;

pub mod access;
mod context;
mod device;
mod dma;
mod fault_inject;
pub mod hw_pagetable;
mod io_pagetable;
mod ioas;
mod iova;
#[cfg(test)]
mod lifecycle_model;
mod machine;
pub mod mock;
mod object;
mod pages;
pub mod sim;
mod snapshot;
mod spans;
mod ucmd;
mod vfio_compat;
pub mod viommu;

pub use access::AccessFile;
pub use context::Context;
pub use dma::{DmaEpoch, DmaPort, Translation};
pub use errno::{Errno, Result};
pub use hw_pagetable::FaultFile;
pub use machine::Machine;
pub use platform::{Caller, Creds, FdTarget, HostFile, HostFileKind, Platform, PAGE_SIZE};
pub use viommu::{MmapHold, MmapRegion, VeventqFile};

use std::sync::Arc;

/// A file the engine owns, as installed in a process's descriptor table by the platform.
/// Dropping the last clone is closing the file.
#[derive(Clone, Debug)]
pub enum EngineFile {
    /// `/dev/iommu` itself.
    Iommufd(Arc<Context>),
    /// A self-test access (emulated device) fd; closing it destroys the access.
    Access(Arc<access::AccessFile>),
    /// A self-test dma-buf.
    DmaBuf(Arc<mock::DmaBuf>),
    /// An IO page-fault queue.
    Fault(Arc<hw_pagetable::FaultFile>),
    /// A vEVENTQ.
    Veventq(Arc<viommu::VeventqFile>),
}

impl EngineFile {
    /// `read(2)` on the file: `buf`/`count` are in the caller's memory.
    pub fn read(&self, caller: &Caller, buf: u64, count: usize) -> Result<usize> {
        match self {
            EngineFile::Fault(f) => f.read(caller, buf, count),
            EngineFile::Veventq(f) => f.read(caller, buf, count),
            // No read op on these files: the VFS answers EINVAL.
            EngineFile::Iommufd(_) | EngineFile::Access(_) | EngineFile::DmaBuf(_) => Err(Errno::EINVAL),
        }
    }

    /// `write(2)` on the file.
    pub fn write(&self, caller: &Caller, buf: u64, count: usize) -> Result<usize> {
        match self {
            EngineFile::Fault(f) => f.write(caller, buf, count),
            // No write op on a vEVENTQ.
            EngineFile::Veventq(_) => Err(Errno::EINVAL),
            EngineFile::Iommufd(_) | EngineFile::Access(_) | EngineFile::DmaBuf(_) => Err(Errno::EINVAL),
        }
    }

    /// `poll(2)` readiness as `POLLIN`/`POLLOUT` style bits (`libc` values).
    pub fn poll(&self) -> u32 {
        const POLLIN: u32 = 0x1;
        const POLLOUT: u32 = 0x4;
        const POLLRDNORM: u32 = 0x40;
        const POLLWRNORM: u32 = 0x100;
        match self {
            EngineFile::Fault(f) => f.poll(),
            EngineFile::Veventq(f) => f.poll(),
            // Files without a poll op are always readable and writable.
            EngineFile::Iommufd(_) | EngineFile::Access(_) | EngineFile::DmaBuf(_) => {
                POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
            }
        }
    }
}

//! The two ways to reach an iommufd: the in-process engine and a kernel `/dev/iommu`.
//!
//! Both take ioctl argument structures in this process's memory (the engine reads them
//! through its platform, the kernel through `copy_from_user`), so every typed call builds the
//! same bytes and passes the same pointer whichever backend serves it.

use crate::{Error, Result};
use std::fmt;

pub(crate) mod engine;
pub(crate) mod kernel;

/// Which backend serves an [`crate::Iommufd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The uiommu engine linked into this process (`uiommu_core::Context`), driven through
    /// `Context::ioctl`. Emulated devices can DMA directly ([`crate::Device::dma_read`]).
    InProcess,
    /// A `/dev/iommu` file descriptor and `ioctl(2)`: the Linux kernel's iommufd, or
    /// uiommu's shim when the program runs under `uiommu run`. Device DMA is only reachable
    /// through an [`crate::Access`].
    Kernel,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::InProcess => "in-process",
            BackendKind::Kernel => "kernel",
        })
    }
}

/// Direction and buffer of a device DMA.
pub(crate) enum DmaBuf<'a> {
    /// Device reads memory into the buffer.
    Read(&'a mut [u8]),
    /// Device writes the buffer to memory.
    Write(&'a [u8]),
}

/// One open iommufd. `ioctl`'s `arg` is the command structure in this process's memory;
/// pointers inside it must stay valid for the call.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    fn kind(&self) -> BackendKind;
    /// `ioctl(iommufd, cmd, arg)`: the non-negative result or the error.
    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i32>;
    /// `read(2)` on a file the iommufd handed out (fault queue).
    fn read_file(&self, fd: i32, buf: &mut [u8]) -> Result<usize>;
    /// `write(2)` on a file the iommufd handed out.
    fn write_file(&self, fd: i32, buf: &[u8]) -> Result<usize>;
    /// `close(2)` of a file the iommufd handed out (access, fault queue).
    fn close_file(&self, fd: i32);
    /// DMA by emulated device `dev` at `iova` through the domain attached to its `pasid`.
    fn dma(&self, dev: u32, pasid: u32, iova: u64, buf: DmaBuf<'_>) -> Result<()>;
    /// The engine's invariant check (in-process only).
    fn check_invariants(&self) -> Option<std::result::Result<(), String>> {
        None
    }
}

/// The error for a DMA the engine refused: a translation failure is an IO page fault.
pub(crate) fn dma_error(e: Error, iova: u64) -> Error {
    match e {
        Error::BadAddress => Error::DmaFault { iova: crate::Iova(iova) },
        e => e,
    }
}

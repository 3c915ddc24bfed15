//! A typed Rust API for iommufd (`/dev/iommu`, Linux 7.2).
//!
//! The handles mirror iommufd's objects and clean up after themselves:
//!
//! | handle | iommufd object | created by | dropped by |
//! |---|---|---|---|
//! | [`Iommufd`] | the open file | `open("/dev/iommu")` or a new engine context | `close` |
//! | [`Ioas`] | IOAS | `IOMMU_IOAS_ALLOC` | `IOMMU_DESTROY` |
//! | [`HwPagetable`] | paging HWPT (a domain) | `IOMMU_HWPT_ALLOC` | `IOMMU_DESTROY` |
//! | [`Device`] | an emulated (mock) device | self-test `MOCK_DOMAIN` | `IOMMU_DESTROY` |
//! | [`Access`] | an emulated-device access | self-test `CREATE_ACCESS` | `close` |
//! | [`FaultQueue`] | FAULT object + its fd | `IOMMU_FAULT_QUEUE_ALLOC` | `close` + `IOMMU_DESTROY` |
//!
//! A handle keeps what it depends on alive (a device its page table, a HWPT its IOAS, a
//! mapping its [`HostMemory`]), so dropping handles in any order tears down in an order
//! iommufd accepts. Addresses are the [`Iova`] newtype, flags are typed ([`MapFlags`],
//! [`HwptFlags`], …), and every failure is an [`Error`] that names its errno
//! ([`Error::errno`]). No uAPI structure appears in the public API.
//!
//! Devices: binding a real VFIO device is out of scope; [`Device`] is the mock device of
//! iommufd's self-test ABI (`IOMMU_TEST_OP_MOCK_DOMAIN`), which a kernel built with
//! `CONFIG_IOMMUFD_TEST` and uiommu both provide.
//!
//! # Backends
//!
//! * [`Iommufd::in_process`]: the uiommu engine linked into this program, driven through
//!   `uiommu_core::Context::ioctl` with the argument structures in this process's memory —
//!   nothing to install, no privileges. Emulated devices can DMA through their IO page
//!   table ([`Device::dma_read`], [`Device::dma_write`]): translation, permission checks, IO
//!   page faults ([`Error::DmaFault`]) and dirty tracking as the IOMMU would do them.
//! * [`Iommufd::open`]: `/dev/iommu` and `ioctl(2)` — the Linux kernel's iommufd, or
//!   uiommu's own when the program runs under `uiommu run`. The kernel has no "device, do a
//!   DMA now" call, so here device memory traffic is only reachable through an [`Access`]
//!   (`IOMMU_TEST_OP_ACCESS_RW`: reads and writes by IOVA through the IOAS, the way an
//!   emulated device such as a mediated device would access memory), and
//!   [`Device::dma_read`]/[`Device::dma_write`] return [`Error::Unsupported`]. Code that
//!   must run on both uses [`Access`] (or checks [`Iommufd::supports_device_dma`]).
//!
//! # Example
//!
//! ```
//! use uiommu::{Device, HostMemory, Iommufd, Ioas, Iova, MapFlags};
//!
//! # fn main() -> uiommu::Result<()> {
//! let iommufd = Iommufd::in_process()?;
//! let ioas = Ioas::new(&iommufd)?;
//! let ram = HostMemory::new(1 << 20)?;
//! // The mock IOMMU's aperture starts at 16 MiB.
//! ioas.map_at(Iova(0x100_0000), &ram, 0, 1 << 20, MapFlags::READ | MapFlags::WRITE)?;
//! let dev = Device::mock(&ioas)?;
//! dev.dma_write(Iova(0x100_0010), b"hello")?;
//! let mut buf = [0u8; 5];
//! ram.read_slice(&mut buf, 0x10)?;
//! assert_eq!(&buf, b"hello");
//! ioas.unmap(Iova(0x100_0000), 1 << 20)?;
//! assert!(matches!(dev.dma_write(Iova(0x100_0010), b"x"), Err(uiommu::Error::DmaFault { .. })));
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! * `vm-memory`: `uiommu::vm_memory::IoasIommu` implements vm-memory 0.18's `Iommu` trait
//!   on a uiommu IOAS, so a vhost-user or virtio backend using `IommuMemory` translates IOVAs
//!   through it (and `Ioas::map_guest_memory` maps a `GuestMemory` into an IOAS).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod access;
mod addr;
mod backend;
mod device;
mod error;
mod fault;
mod flags;
mod ioas;
mod memory;
#[cfg(feature = "vm-memory")]
pub mod vm_memory;

pub use access::Access;
pub use addr::{Iova, IovaRange};
pub use backend::BackendKind;
pub use device::{Device, DirtyBitmap, HwInfo, HwPagetable, PageTable};
pub use error::{Error, Result};
pub use fault::{FaultQueue, PageFault, PageResponse};
pub use flags::{DeviceFlags, FaultPerm, HwCaps, HwptFlags, MapFlags};
pub use ioas::{Ioas, IovaRanges, Mapping};
pub use memory::HostMemory;

use backend::Backend;
use std::fmt;
use std::sync::Arc;
use uiommu_uapi::iommufd as u;
use uiommu_uapi::test::{IommuTestCmd, TestPayload};
use uiommu_uapi::IommufdCmd;

/// The id of an iommufd object (IOAS, HWPT, device, fault queue) within its [`Iommufd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u32);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An open iommufd: a `/dev/iommu` file or an in-process engine context.
///
/// Cheap to clone (clones share the file); closed when the last clone and the last object
/// handle made from it are dropped.
#[derive(Clone)]
pub struct Iommufd {
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Iommufd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommufd").field("backend", &self.backend.kind()).finish()
    }
}

impl Iommufd {
    /// Open `/dev/iommu` (the kernel backend).
    pub fn open() -> Result<Iommufd> {
        Iommufd::open_path("/dev/iommu")
    }

    /// Open an iommufd character device at `path` (the kernel backend).
    pub fn open_path(path: &str) -> Result<Iommufd> {
        Ok(Iommufd { backend: Arc::new(backend::kernel::KernelBackend::open(path)?) })
    }

    /// A new context of the uiommu engine inside this process (the in-process backend).
    /// Every in-process iommufd of the process shares one emulated machine.
    pub fn in_process() -> Result<Iommufd> {
        Ok(Iommufd { backend: Arc::new(backend::engine::EngineBackend::open()) })
    }

    /// Which backend serves this iommufd.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Whether [`Device::dma_read`] / [`Device::dma_write`] work (in-process backend only).
    pub fn supports_device_dma(&self) -> bool {
        self.backend.kind() == BackendKind::InProcess
    }

    /// Whether two handles refer to the same open file.
    pub fn same_file(&self, other: &Iommufd) -> bool {
        Arc::ptr_eq(&self.backend, &other.backend)
    }

    /// Issue a command: `v` is the argument structure, updated with what came back.
    pub(crate) fn cmd<T: IommufdCmd>(&self, v: &mut T) -> Result<i32> {
        self.backend.ioctl(T::IOCTL, v.as_mut_bytes())
    }

    /// A self-test operation on object `id`; returns the payload that came back.
    pub(crate) fn test_op<P: TestPayload>(&self, op: u32, id: u32, p: &P) -> Result<P> {
        let mut c = IommuTestCmd::new(op, id, p);
        self.cmd(&mut c)?;
        Ok(c.payload())
    }

    /// `IOMMU_DESTROY`.
    pub(crate) fn destroy(&self, id: u32) -> Result<()> {
        let mut c = u::IommuDestroy { id, ..u::IommuDestroy::new_sized() };
        self.cmd(&mut c).map(|_| ())
    }

    pub(crate) fn backend_ref(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Check the engine's internal invariants (in-process backend; `None` for the kernel).
    /// For tests.
    #[doc(hidden)]
    pub fn check_engine_invariants(&self) -> Option<std::result::Result<(), String>> {
        self.backend.check_invariants()
    }
}

// Every handle can be shared between threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Iommufd>();
    shareable::<Ioas>();
    shareable::<HwPagetable>();
    shareable::<Device>();
    shareable::<Access>();
    shareable::<FaultQueue>();
    shareable::<HostMemory>();
};

/// Drop-time destroy: a failure cannot be reported (the object then lives until the iommufd
/// is closed, which destroys everything).
pub(crate) fn destroy_quietly(fd: &Iommufd, id: u32) {
    let _ = fd.destroy(id);
}

//! Raw system-call wrappers: those of [`uiommu_linux::sys`] (the shim's own I/O never goes
//! through the libc functions it interposes).

pub use uiommu_linux::sys::*;

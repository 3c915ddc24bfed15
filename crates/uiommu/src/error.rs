//! Errors: one variant per errno the iommufd ABI reports, plus DMA faults and backend limits.

use crate::{BackendKind, Iova};

/// Result of a uiommu API call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An iommufd operation failed.
///
/// Every variant corresponds to exactly one Linux errno ([`Error::errno`]); variants that
/// carry context ([`Error::DmaFault`], [`Error::Unsupported`]) still map to the errno the
/// equivalent kernel call would report. Errnos without a variant of their own arrive as
/// [`Error::Os`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `EPERM`: the caller lacks a privilege the operation needs.
    #[error("operation not permitted (EPERM)")]
    NotPermitted,
    /// `ENOENT`: no object with that id, or nothing mapped at that IOVA.
    #[error("no such object or mapping (ENOENT)")]
    NotFound,
    /// `EBADF`: a file descriptor is not open.
    #[error("bad file descriptor (EBADF)")]
    BadFd,
    /// `ENOMEM`: out of memory, or the pin would exceed `RLIMIT_MEMLOCK`.
    #[error("out of memory or over the locked-memory limit (ENOMEM)")]
    NoMemory,
    /// `EFAULT`: a user buffer could not be read or written.
    #[error("bad address (EFAULT)")]
    BadAddress,
    /// `EBUSY`: the object is still in use (attached, mapped, pinned…).
    #[error("object is busy (EBUSY)")]
    Busy,
    /// `EEXIST`: the IOVA range (or PASID attachment) is already taken.
    #[error("already exists (EEXIST)")]
    Exists,
    /// `ENODEV`: the device or queue is gone.
    #[error("no such device (ENODEV)")]
    NoDevice,
    /// `EINVAL`: an argument is invalid (alignment, range, flags combination…).
    #[error("invalid argument (EINVAL)")]
    InvalidArgument,
    /// `ENOTTY`: the file does not implement this ioctl.
    #[error("unknown ioctl for this file (ENOTTY)")]
    UnknownCommand,
    /// `ENOSPC`: no free IOVA range is large enough.
    #[error("no IOVA space left (ENOSPC)")]
    NoSpace,
    /// `ERANGE`: a value is out of the accepted range.
    #[error("value out of range (ERANGE)")]
    OutOfRange,
    /// `EOVERFLOW`: an address or length computation overflows.
    #[error("value overflows (EOVERFLOW)")]
    Overflow,
    /// `EOPNOTSUPP`: the IOMMU, domain or device does not support the operation.
    #[error("operation not supported (EOPNOTSUPP)")]
    NotSupported,
    /// `E2BIG`: an argument structure has unknown non-zero trailing bytes.
    #[error("argument too big (E2BIG)")]
    TooBig,
    /// `EADDRINUSE`: the range overlaps a reserved or already allowed range.
    #[error("address in use (EADDRINUSE)")]
    AddressInUse,
    /// `EFAULT` from a device DMA: the IOVA is not mapped in the device's domain, or not
    /// with the needed permission (an IO page fault).
    #[error("IO page fault: device DMA at IOVA {iova} faulted (EFAULT)")]
    DmaFault {
        /// First IOVA of the DMA that faulted.
        iova: Iova,
    },
    /// `EOPNOTSUPP`: the operation exists only on another backend (for example device DMA
    /// on the kernel backend, where DMA is only reachable through an [`crate::Access`]).
    #[error("{what} is not available on the {backend} backend (EOPNOTSUPP)")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// The backend that cannot do it.
        backend: BackendKind,
    },
    /// Any other errno (positive Linux value).
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Os(i32),
}

impl Error {
    /// The Linux errno this error stands for (a positive value such as `libc::EINVAL`).
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotPermitted => libc::EPERM,
            Error::NotFound => libc::ENOENT,
            Error::BadFd => libc::EBADF,
            Error::NoMemory => libc::ENOMEM,
            Error::BadAddress | Error::DmaFault { .. } => libc::EFAULT,
            Error::Busy => libc::EBUSY,
            Error::Exists => libc::EEXIST,
            Error::NoDevice => libc::ENODEV,
            Error::InvalidArgument => libc::EINVAL,
            Error::UnknownCommand => libc::ENOTTY,
            Error::NoSpace => libc::ENOSPC,
            Error::OutOfRange => libc::ERANGE,
            Error::Overflow => libc::EOVERFLOW,
            Error::NotSupported | Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::TooBig => libc::E2BIG,
            Error::AddressInUse => libc::EADDRINUSE,
            Error::Os(e) => *e,
        }
    }

    /// The error for a (positive) errno value.
    pub fn from_errno(errno: i32) -> Error {
        match errno {
            libc::EPERM => Error::NotPermitted,
            libc::ENOENT => Error::NotFound,
            libc::EBADF => Error::BadFd,
            libc::ENOMEM => Error::NoMemory,
            libc::EFAULT => Error::BadAddress,
            libc::EBUSY => Error::Busy,
            libc::EEXIST => Error::Exists,
            libc::ENODEV => Error::NoDevice,
            libc::EINVAL => Error::InvalidArgument,
            libc::ENOTTY => Error::UnknownCommand,
            libc::ENOSPC => Error::NoSpace,
            libc::ERANGE => Error::OutOfRange,
            libc::EOVERFLOW => Error::Overflow,
            libc::EOPNOTSUPP => Error::NotSupported,
            libc::E2BIG => Error::TooBig,
            libc::EADDRINUSE => Error::AddressInUse,
            e => Error::Os(e),
        }
    }

    /// The last OS error of this thread (`errno` after a failed libc call).
    pub(crate) fn last_os_error() -> Error {
        Error::from_errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<uiommu_core::Errno> for Error {
    fn from(e: uiommu_core::Errno) -> Error {
        Error::from_errno(e.0)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trip() {
        for e in 1..140 {
            assert_eq!(Error::from_errno(e).errno(), e);
        }
        assert_eq!(Error::DmaFault { iova: Iova(0x1000) }.errno(), libc::EFAULT);
        let u = Error::Unsupported { what: "device DMA", backend: BackendKind::Kernel };
        assert_eq!(u.errno(), libc::EOPNOTSUPP);
        assert!(u.to_string().contains("kernel"));
        assert_eq!(Error::Os(libc::EIO).to_string(), std::io::Error::from_raw_os_error(libc::EIO).to_string());
    }
}

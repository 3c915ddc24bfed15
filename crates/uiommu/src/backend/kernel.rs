//! The kernel backend: a `/dev/iommu` descriptor and `ioctl(2)`.

use super::{Backend, BackendKind, DmaBuf};
use crate::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub(crate) struct KernelBackend {
    fd: OwnedFd,
}

impl KernelBackend {
    pub(crate) fn open(path: &str) -> Result<KernelBackend> {
        let c = CString::new(path).map_err(|_| Error::InvalidArgument)?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(KernelBackend { fd })
    }
}

impl Backend for KernelBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i32> {
        // SAFETY: `arg` is a live, writable buffer holding the command structure whose size
        // field covers at most `arg.len()` bytes (the typed callers pass whole structures);
        // pointers embedded in it refer to buffers the caller keeps alive across this call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as libc::c_ulong, arg.as_mut_ptr()) };
        if r < 0 {
            Err(Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn read_file(&self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn write_file(&self, fd: i32, buf: &[u8]) -> Result<usize> {
        // SAFETY: `buf` is readable for `buf.len()` bytes.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn close_file(&self, fd: i32) {
        // SAFETY: `fd` was handed out by this iommufd and is owned by the handle closing it.
        unsafe {
            libc::close(fd);
        }
    }

    fn dma(&self, _dev: u32, _pasid: u32, _iova: u64, _buf: DmaBuf<'_>) -> Result<()> {
        Err(Error::Unsupported { what: "direct device DMA", backend: BackendKind::Kernel })
    }
}

//! Decoding of size-extensible iommufd commands and copying results back.
//!
//! Rules (README §6 of the spec): the leading u32 `size` is read first (EFAULT); `size`
//! below the command's minimum is EINVAL; bytes beyond the known struct must be zero
//! (E2BIG); a short struct reads as if zero-extended; results are copied back truncated to
//! `min(size, known)`.

use crate::errno::{Errno, Result};
use crate::platform::{Caller, Platform};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One user command being executed: where it came from and how big the caller said it is.
///
/// Generic over the platform, so that a host that names its platform's type (the shim) gets
/// every command compiled with its user copies inlined; `dyn Platform` otherwise.
pub(crate) struct Ucmd<'a, P: Platform + ?Sized = dyn Platform> {
    pub caller: &'a Caller,
    pub platform: &'a P,
    /// User pointer to the command struct.
    pub arg: u64,
    /// The caller's `size`.
    pub user_size: u32,
    /// The first `pre_len` bytes at `arg`, when the dispatcher could read the whole known
    /// struct in one copy (0 = not read ahead).
    pub pre: [u8; PRE_MAX],
    pub pre_len: usize,
}

/// The largest command struct (IOMMU_TEST_CMD).
pub(crate) const PRE_MAX: usize = 72;

impl<P: Platform + ?Sized> Ucmd<'_, P> {
    /// Decode the command struct `T` (known size = `size_of::<T>()`), after the minimum
    /// size was checked by the dispatcher.
    #[inline(always)]
    pub fn read<T: FromBytes + IntoBytes + KnownLayout + Immutable>(&self) -> Result<T> {
        let known = core::mem::size_of::<T>();
        if self.user_size as usize == known && self.pre_len >= known {
            // The common case, inlined into the handler so that it loads the fields it uses
            // straight from the read-ahead: whole-struct moves of a different shape than the
            // copy's stores would stall on store forwarding (about 12 ns a call).
            if let Ok(cmd) = T::read_from_bytes(&self.pre[..known]) {
                return Ok(cmd);
            }
        }
        self.read_slow()
    }

    #[inline(never)]
    fn read_slow<T: FromBytes + IntoBytes + KnownLayout + Immutable>(&self) -> Result<T> {
        let known = core::mem::size_of::<T>();
        let mut cmd = T::new_zeroed();
        let n = (self.user_size as usize).min(known);
        if self.pre_len >= n {
            cmd.as_mut_bytes()[..n].copy_from_slice(&self.pre[..n]);
        } else {
            self.platform.read_user(self.caller, self.arg, &mut cmd.as_mut_bytes()[..n])?;
        }
        if (self.user_size as usize) > known {
            check_zero_tail(self.platform, self.caller, self.arg + known as u64, self.user_size as u64 - known as u64)?;
        }
        Ok(cmd)
    }

    /// Copy the command struct back, truncated to the caller's size.
    pub fn respond<T: IntoBytes + Immutable>(&self, cmd: &T) -> Result<()> {
        let bytes = cmd.as_bytes();
        let n = (self.user_size as usize).min(bytes.len());
        self.platform.write_user(self.caller, self.arg, &bytes[..n])
    }

    pub fn read_user(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.platform.read_user(self.caller, addr, buf)
    }

    pub fn write_user(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.platform.write_user(self.caller, addr, buf)
    }
}

/// E2BIG unless the `len` user bytes at `addr` are all zero (EFAULT if unreadable).
pub(crate) fn check_zero_tail<P: Platform + ?Sized>(p: &P, caller: &Caller, addr: u64, len: u64) -> Result<()> {
    let mut buf = [0u8; 256];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        p.read_user(caller, addr + done, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Errno::E2BIG);
        }
        done += n as u64;
    }
    Ok(())
}

/// Copy driver data from the user with the generic driver-data rule: `len < min` or
/// `len > size_of::<T>()` → EINVAL; copy `len` bytes (EFAULT) and zero the rest.
pub(crate) fn read_driver_data<T: FromBytes + IntoBytes + KnownLayout + Immutable, P: Platform + ?Sized>(
    p: &P,
    caller: &Caller,
    uptr: u64,
    len: u32,
    min: usize,
) -> Result<T> {
    let len = len as usize;
    if len < min || len > core::mem::size_of::<T>() {
        return Err(Errno::EINVAL);
    }
    let mut v = T::new_zeroed();
    p.read_user(caller, uptr, &mut v.as_mut_bytes()[..len])?;
    Ok(v)
}

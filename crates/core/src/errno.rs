//! Error numbers as the kernel reports them to userspace.
//!
//! The engine speaks errno, not a rich error type: every ioctl outcome is checked by its
//! exact errno value, so an error carries nothing else. `Errno` is a newtype over the
//! positive Linux value.

use core::fmt;

/// A positive Linux errno value (e.g. `Errno::EINVAL` = 22).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

/// Result of an engine operation.
pub type Result<T, E = Errno> = core::result::Result<T, E>;

macro_rules! errnos {
    ($($name:ident = $val:expr),* $(,)?) => {
        impl Errno {
            $(#[doc = concat!("`", stringify!($name), "`")] pub const $name: Errno = Errno($val);)*

            /// The symbolic name, e.g. `"EINVAL"`.
            pub fn name(self) -> &'static str {
                match self.0 { $($val => stringify!($name),)* _ => "E?" }
            }
        }
    };
}

errnos! {
    EPERM = 1, ENOENT = 2, ESRCH = 3, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9, ENOMEM = 12,
    EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENOTTY = 25, ENOSPC = 28,
    ESPIPE = 29, ERANGE = 34, EDEADLK = 35, EOVERFLOW = 75, EBADFD = 77, EMSGSIZE = 90,
    EOPNOTSUPP = 95, EADDRINUSE = 98, EBADE = 52,
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

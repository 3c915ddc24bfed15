//! Binary interface of Linux 7.2's `/dev/iommu` (iommufd), the VFIO type1
//! container subset served by the iommufd file, and the iommufd self-test
//! ioctl, as plain `#[repr(C)]` Rust types and constants.
//!
//! * [`iommufd`] — every structure, constant and ioctl number of the iommufd
//!   uAPI header (commands `0x80..=0x94`).
//! * [`vfio`] — the VFIO type1 container ioctls, structures and constants that
//!   the iommufd VFIO-compatibility layer understands.
//! * [`test`](mod@test) — the self-test ABI (`IOMMU_TEST_CMD`, mock driver constants and
//!   driver-specific payloads).
//! * [`describe`] — one-line decoding of an ioctl and its result, and per-ioctl summaries
//!   (what `uiommu trace` prints).
//!
//! All structures derive the `zerocopy` traits so they can be read from and
//! written to raw byte buffers without `unsafe`. Layouts are checked at compile
//! time against the x86_64 C layout (see the `const _: () = ...` blocks next to
//! each struct) and, in `tests/c_layout.rs`, against a C program compiled with
//! the real headers.
//!
//! The top level also carries the command table used by an iommufd ioctl
//! dispatcher to implement the size-extensible argument convention
//! ([`IOMMUFD_CMDS`], [`cmd_info`], [`read_extensible`], [`copy_back_len`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Asserts at compile time the size of a struct and the offset of each listed
/// field.
macro_rules! assert_layout {
    ($t:ty, $size:expr $(; $($f:ident = $off:expr),* $(,)?)?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$t>() == $size);
            $($(assert!(::core::mem::offset_of!($t, $f) == $off);)*)?
        };
    };
}

/// Size in bytes of a struct field, usable in `const` context.
///
/// Called as `field_size(|s: &T| &s.field)`; the projection is never invoked,
/// it only names the field's type.
pub const fn field_size<T, F>(_projection: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// End offset (offset + size) of a struct field, usable in `const` context.
#[macro_export]
macro_rules! field_end {
    ($t:ty, $f:ident) => {
        ::core::mem::offset_of!($t, $f) + $crate::field_size(|s: &$t| &s.$f)
    };
}

pub mod describe;
pub mod iommufd;
pub mod test;
pub mod vfio;

/// Bit position of the command number inside an ioctl request (Linux generic
/// encoding).
pub const IOC_NRSHIFT: u32 = 0;
/// Bit position of the type character inside an ioctl request.
pub const IOC_TYPESHIFT: u32 = 8;
/// Bit position of the argument size inside an ioctl request.
pub const IOC_SIZESHIFT: u32 = 16;
/// Bit position of the direction bits inside an ioctl request.
pub const IOC_DIRSHIFT: u32 = 30;

/// Equivalent of the C `_IO(type, nr)` macro: an ioctl request with no
/// direction and no size encoded.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ((ty as u32) << IOC_TYPESHIFT) | ((nr as u32) << IOC_NRSHIFT)
}

/// The command-number byte of an ioctl request (`_IOC_NR`).
pub const fn ioc_nr(request: u32) -> u8 {
    (request >> IOC_NRSHIFT) as u8
}

/// The type byte of an ioctl request (`_IOC_TYPE`).
pub const fn ioc_type(request: u32) -> u8 {
    (request >> IOC_TYPESHIFT) as u8
}

/// Static description of one iommufd ioctl, as needed to decode its
/// size-extensible argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdInfo {
    /// Command number (the low byte of the request).
    pub nr: u8,
    /// Full ioctl request number (`_IO(';', nr)`).
    pub ioctl: u32,
    /// The C macro name of the ioctl, e.g. `"IOMMU_IOAS_MAP"`.
    pub name: &'static str,
    /// Size of the argument structure this implementation knows.
    pub size: usize,
    /// Smallest `size` value the kernel accepts (end of the last mandatory
    /// field); anything shorter is rejected with `EINVAL`.
    pub min_size: usize,
}

/// Implemented by every top-level iommufd command argument structure.
///
/// The constants mirror one row of [`IOMMUFD_CMDS`].
pub trait IommufdCmd: FromBytes + IntoBytes + Immutable + KnownLayout + Copy + Default {
    /// Command number.
    const NR: u8;
    /// Full ioctl request number.
    const IOCTL: u32;
    /// C macro name of the ioctl.
    const NAME: &'static str;
    /// Size of the structure.
    const SIZE: usize = core::mem::size_of::<Self>();
    /// Minimum `size` value accepted by the kernel.
    const MIN_SIZE: usize;
    /// The [`CmdInfo`] row describing this command.
    const INFO: CmdInfo =
        CmdInfo { nr: Self::NR, ioctl: Self::IOCTL, name: Self::NAME, size: Self::SIZE, min_size: Self::MIN_SIZE };

    /// A zeroed structure whose leading `size` field is set to [`Self::SIZE`].
    fn new_sized() -> Self {
        let mut v = Self::default();
        let size = Self::SIZE as u32;
        v.as_mut_bytes()[..4].copy_from_slice(&size.to_ne_bytes());
        v
    }
}

/// Every iommufd ioctl (`0x80..=0x94`) followed by the self-test command
/// (`0xa0`), in increasing command-number order.
pub const IOMMUFD_CMDS: &[CmdInfo] = &[
    <iommufd::IommuDestroy as IommufdCmd>::INFO,
    <iommufd::IommuIoasAlloc as IommufdCmd>::INFO,
    <iommufd::IommuIoasAllowIovas as IommufdCmd>::INFO,
    <iommufd::IommuIoasCopy as IommufdCmd>::INFO,
    <iommufd::IommuIoasIovaRanges as IommufdCmd>::INFO,
    <iommufd::IommuIoasMap as IommufdCmd>::INFO,
    <iommufd::IommuIoasUnmap as IommufdCmd>::INFO,
    <iommufd::IommuOption as IommufdCmd>::INFO,
    <iommufd::IommuVfioIoas as IommufdCmd>::INFO,
    <iommufd::IommuHwptAlloc as IommufdCmd>::INFO,
    <iommufd::IommuHwInfo as IommufdCmd>::INFO,
    <iommufd::IommuHwptSetDirtyTracking as IommufdCmd>::INFO,
    <iommufd::IommuHwptGetDirtyBitmap as IommufdCmd>::INFO,
    <iommufd::IommuHwptInvalidate as IommufdCmd>::INFO,
    <iommufd::IommuFaultAlloc as IommufdCmd>::INFO,
    <iommufd::IommuIoasMapFile as IommufdCmd>::INFO,
    <iommufd::IommuViommuAlloc as IommufdCmd>::INFO,
    <iommufd::IommuVdeviceAlloc as IommufdCmd>::INFO,
    <iommufd::IommuIoasChangeProcess as IommufdCmd>::INFO,
    <iommufd::IommuVeventqAlloc as IommufdCmd>::INFO,
    <iommufd::IommuHwQueueAlloc as IommufdCmd>::INFO,
    <test::IommuTestCmd as IommufdCmd>::INFO,
];

// The table must be dense for 0x80..=0x94 with the self-test command last.
const _: () = {
    let mut i = 0;
    while i < IOMMUFD_CMDS.len() - 1 {
        assert!(IOMMUFD_CMDS[i].nr == iommufd::IOMMUFD_CMD_BASE + i as u8);
        assert!(IOMMUFD_CMDS[i].ioctl == io(iommufd::IOMMUFD_TYPE, IOMMUFD_CMDS[i].nr));
        assert!(IOMMUFD_CMDS[i].min_size <= IOMMUFD_CMDS[i].size);
        i += 1;
    }
    assert!(IOMMUFD_CMDS[i - 1].nr == iommufd::IOMMUFD_CMD_HW_QUEUE_ALLOC);
    assert!(IOMMUFD_CMDS[i].nr == test::IOMMU_TEST_CMD_NR);
    assert!(IOMMUFD_CMDS[i].ioctl == test::IOMMU_TEST_CMD);
};

/// Looks up the command with number `nr` (the low byte of the request).
///
/// Returns `None` for numbers outside the iommufd range and for the unused
/// slots `0x95..=0x9f`. The caller must still compare the full request number
/// against [`CmdInfo::ioctl`].
pub fn cmd_info(nr: u8) -> Option<&'static CmdInfo> {
    let last = IOMMUFD_CMDS.len() - 1;
    if nr == test::IOMMU_TEST_CMD_NR {
        return Some(&IOMMUFD_CMDS[last]);
    }
    let idx = nr.checked_sub(iommufd::IOMMUFD_CMD_BASE)? as usize;
    IOMMUFD_CMDS[..last].get(idx)
}

/// Why a user-supplied size-extensible argument was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensibleError {
    /// `size` is below the command's minimum size (the kernel answers `EINVAL`).
    TooShort,
    /// Bytes past the known structure are not all zero (the kernel answers
    /// `E2BIG`).
    NonZeroTail,
}

/// Decodes a size-extensible argument.
///
/// `user` holds exactly the `size` bytes the caller passed (starting with the
/// `size` field itself). Bytes missing from a short (but at least
/// `min_size`-long) argument read as zero; bytes beyond `size_of::<T>()` must
/// be zero.
pub fn read_extensible<T: FromBytes + IntoBytes + KnownLayout + Immutable>(
    user: &[u8],
    min_size: usize,
) -> Result<T, ExtensibleError> {
    if user.len() < min_size {
        return Err(ExtensibleError::TooShort);
    }
    let known = core::mem::size_of::<T>();
    if user.len() > known && user[known..].iter().any(|&b| b != 0) {
        return Err(ExtensibleError::NonZeroTail);
    }
    let mut v = T::new_zeroed();
    let n = user.len().min(known);
    v.as_mut_bytes()[..n].copy_from_slice(&user[..n]);
    Ok(v)
}

/// Number of bytes of a `T` to copy back to a caller that declared
/// `user_size`: never more than the caller's buffer, never more than `T`.
pub const fn copy_back_len<T>(user_size: usize) -> usize {
    let known = core::mem::size_of::<T>();
    if user_size < known {
        user_size
    } else {
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommufd::*;

    #[test]
    fn table_matches_spec() {
        // (nr, known size, minimum size) from the behavioural spec.
        let expect: &[(u8, usize, usize)] = &[
            (0x80, 8, 8),
            (0x81, 12, 12),
            (0x82, 24, 24),
            (0x83, 40, 40),
            (0x84, 32, 32),
            (0x85, 40, 40),
            (0x86, 24, 24),
            (0x87, 24, 24),
            (0x88, 12, 12),
            (0x89, 48, 24),
            (0x8a, 40, 32),
            (0x8b, 16, 16),
            (0x8c, 48, 48),
            (0x8d, 32, 32),
            (0x8e, 16, 16),
            (0x8f, 40, 40),
            (0x90, 40, 24),
            (0x91, 24, 24),
            (0x92, 8, 8),
            (0x93, 32, 28),
            (0x94, 40, 40),
            (0xa0, 72, 68),
        ];
        assert_eq!(IOMMUFD_CMDS.len(), expect.len());
        for (info, &(nr, size, min)) in IOMMUFD_CMDS.iter().zip(expect) {
            assert_eq!((info.nr, info.size, info.min_size), (nr, size, min), "{}", info.name);
            assert_eq!(info.ioctl, 0x3b00 | nr as u32);
            assert_eq!(cmd_info(nr), Some(info));
        }
        for nr in (0..0x80).chain(0x95..0xa0).chain(0xa1..=0xff) {
            assert_eq!(cmd_info(nr), None, "{nr:#x}");
        }
        assert_eq!(cmd_info(0x85).unwrap().name, "IOMMU_IOAS_MAP");
        assert_eq!(cmd_info(0xa0).unwrap().name, "IOMMU_TEST_CMD");
    }

    #[test]
    fn extensible_decode() {
        let mut m = IommuIoasMap::new_sized();
        m.flags = IOMMU_IOAS_MAP_READABLE;
        m.iova = 0x1234;
        let bytes = m.as_bytes().to_vec();
        assert_eq!(m.size, 40);

        // Exact size.
        assert_eq!(read_extensible::<IommuIoasMap>(&bytes, IommuIoasMap::MIN_SIZE), Ok(m));
        // Too short.
        assert_eq!(
            read_extensible::<IommuIoasMap>(&bytes[..39], IommuIoasMap::MIN_SIZE),
            Err(ExtensibleError::TooShort)
        );
        // Larger with zero tail is fine; non-zero tail is E2BIG.
        let mut big = bytes.clone();
        big.extend_from_slice(&[0; 8]);
        assert_eq!(read_extensible::<IommuIoasMap>(&big, IommuIoasMap::MIN_SIZE), Ok(m));
        big[45] = 1;
        assert_eq!(read_extensible::<IommuIoasMap>(&big, IommuIoasMap::MIN_SIZE), Err(ExtensibleError::NonZeroTail));
        // Shorter than known but above the minimum: tail reads as zero.
        let mut h = IommuHwptAlloc::new_sized();
        h.fault_id = 7;
        h.data_uptr = 9;
        let short = read_extensible::<IommuHwptAlloc>(&h.as_bytes()[..24], IommuHwptAlloc::MIN_SIZE).unwrap();
        assert_eq!(short.fault_id, 0);
        assert_eq!(short.data_uptr, 0);
        assert_eq!(short.size, 48);

        assert_eq!(copy_back_len::<IommuHwptAlloc>(24), 24);
        assert_eq!(copy_back_len::<IommuHwptAlloc>(100), 48);
    }

    #[test]
    fn ioctl_encoding() {
        assert_eq!(io(b';', 0x80), 0x3b80);
        assert_eq!(ioc_nr(IOMMU_IOAS_MAP), 0x85);
        assert_eq!(ioc_type(IOMMU_IOAS_MAP), b';');
        assert_eq!(field_end!(IommuHwInfo, reserved), 32);
    }
}

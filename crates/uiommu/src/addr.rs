//! Addresses and ranges in an I/O address space, named after vm-memory's (`GuestAddress`,
//! `raw_value`, `checked_add`, `unchecked_add`, `checked_offset_from`).

use std::fmt;

/// An I/O virtual address: an address a device uses, translated by the IOMMU through the
/// domain its IOAS is mapped into. A plain `u64` newtype, like vm-memory's `GuestAddress`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(pub u64);

impl Iova {
    /// The address as a number.
    pub const fn raw_value(self) -> u64 {
        self.0
    }

    /// `self + offset`, or `None` on overflow.
    pub const fn checked_add(self, offset: u64) -> Option<Iova> {
        match self.0.checked_add(offset) {
            Some(v) => Some(Iova(v)),
            None => None,
        }
    }

    /// `self + offset`, wrapping on overflow.
    pub const fn unchecked_add(self, offset: u64) -> Iova {
        Iova(self.0.wrapping_add(offset))
    }

    /// `self - base`, or `None` if `base` is above `self`.
    pub const fn checked_offset_from(self, base: Iova) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Iova {
        Iova(self.0 & !(align - 1))
    }
}

impl fmt::Debug for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iova({:#x})", self.0)
    }
}

impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<u64> for Iova {
    fn from(v: u64) -> Iova {
        Iova(v)
    }
}

impl From<Iova> for u64 {
    fn from(v: Iova) -> u64 {
        v.0
    }
}

/// An inclusive IOVA interval `[start, last]`, as iommufd reports and accepts them (an
/// inclusive end can describe the whole 64-bit space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IovaRange {
    /// First IOVA of the interval.
    pub start: Iova,
    /// Last IOVA of the interval (inclusive).
    pub last: Iova,
}

impl IovaRange {
    /// The interval `[start, start + len)`; `None` if `len` is 0 or the end overflows.
    pub fn new(start: Iova, len: u64) -> Option<IovaRange> {
        let last = start.0.checked_add(len.checked_sub(1)?)?;
        Some(IovaRange { start, last: Iova(last) })
    }

    /// Number of bytes in the interval (saturating at `u64::MAX` for the full space).
    pub fn len(&self) -> u64 {
        (self.last.0 - self.start.0).saturating_add(1)
    }

    /// Always false: an inclusive interval holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `iova` lies in the interval.
    pub fn contains(&self, iova: Iova) -> bool {
        self.start <= iova && iova <= self.last
    }
}

impl fmt::Display for IovaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.start.0, self.last.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let a = Iova(0x1000);
        assert_eq!(a.checked_add(0x10), Some(Iova(0x1010)));
        assert_eq!(Iova(u64::MAX).checked_add(1), None);
        assert_eq!(Iova(u64::MAX).unchecked_add(1), Iova(0));
        assert_eq!(Iova(0x1800).checked_offset_from(a), Some(0x800));
        assert_eq!(a.checked_offset_from(Iova(0x1800)), None);
        assert!(a.is_aligned(0x1000) && !Iova(0x1800).is_aligned(0x1000));
        assert_eq!(Iova(0x1fff).align_down(0x1000), a);
        assert_eq!(format!("{a} {a:?} {a:x}"), "0x1000 Iova(0x1000) 1000");
        let r = IovaRange::new(a, 0x1000).unwrap();
        assert_eq!(r.last, Iova(0x1fff));
        assert_eq!(r.len(), 0x1000);
        assert!(r.contains(Iova(0x1fff)) && !r.contains(Iova(0x2000)));
        assert_eq!(IovaRange::new(a, 0), None);
        assert_eq!(IovaRange { start: Iova(0), last: Iova(u64::MAX) }.len(), u64::MAX);
    }
}

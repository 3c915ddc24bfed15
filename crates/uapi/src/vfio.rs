//! The VFIO type1 container subset of `include/uapi/linux/vfio.h` (Linux 7.2)
//! that the iommufd VFIO-compatibility layer serves.
//!
//! VFIO container ioctls share iommufd's type character and use command
//! numbers `100 + k`. Their structures start with `argsz` (the caller's buffer
//! size) rather than iommufd's `size`. Fields holding C `__u64` are `u64`; on
//! every supported 64-bit target they are 8-byte aligned, like C's.

use crate::io;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// API version reported by [`VFIO_GET_API_VERSION`].
pub const VFIO_API_VERSION: u32 = 0;

/// Extension / IOMMU type: type1 IOMMU.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
/// Extension / IOMMU type: POWER sPAPR TCE IOMMU.
pub const VFIO_SPAPR_TCE_IOMMU: u32 = 2;
/// Extension / IOMMU type: type1 IOMMU, version 2 semantics.
#[allow(non_upper_case_globals)]
pub const VFIO_TYPE1v2_IOMMU: u32 = 3;
/// Extension: the IOMMU enforces DMA cache coherency.
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
/// Extension: EEH support (POWER).
pub const VFIO_EEH: u32 = 5;
/// Extension id reserved for the removed type1 nesting IOMMU (C name
/// `__VFIO_RESERVED_TYPE1_NESTING_IOMMU`).
pub const VFIO_RESERVED_TYPE1_NESTING_IOMMU: u32 = 6;
/// Extension / IOMMU type: sPAPR TCE IOMMU version 2.
#[allow(non_upper_case_globals)]
pub const VFIO_SPAPR_TCE_v2_IOMMU: u32 = 7;
/// Extension / IOMMU type: no-IOMMU mode.
pub const VFIO_NOIOMMU_IOMMU: u32 = 8;
/// Extension: [`VFIO_DMA_UNMAP_FLAG_ALL`] is supported.
pub const VFIO_UNMAP_ALL: u32 = 9;
/// Extension: the `VADDR` map/unmap flags are supported.
pub const VFIO_UPDATE_VADDR: u32 = 10;

/// ioctl type character of VFIO (same as iommufd's).
pub const VFIO_TYPE: u8 = b';';
/// First VFIO command number.
pub const VFIO_BASE: u8 = 100;

/// Returns [`VFIO_API_VERSION`]; no argument.
pub const VFIO_GET_API_VERSION: u32 = io(VFIO_TYPE, VFIO_BASE);
/// Asks whether an extension (integer argument) is supported.
pub const VFIO_CHECK_EXTENSION: u32 = io(VFIO_TYPE, VFIO_BASE + 1);
/// Selects the IOMMU model (integer argument) of a container.
pub const VFIO_SET_IOMMU: u32 = io(VFIO_TYPE, VFIO_BASE + 2);
/// Reports the container's IOMMU information ([`VfioIommuType1Info`]).
pub const VFIO_IOMMU_GET_INFO: u32 = io(VFIO_TYPE, VFIO_BASE + 12);
/// Maps process memory for DMA ([`VfioIommuType1DmaMap`]).
pub const VFIO_IOMMU_MAP_DMA: u32 = io(VFIO_TYPE, VFIO_BASE + 13);
/// Removes DMA mappings ([`VfioIommuType1DmaUnmap`]).
pub const VFIO_IOMMU_UNMAP_DMA: u32 = io(VFIO_TYPE, VFIO_BASE + 14);
/// Enables the container (sPAPR only); no argument.
pub const VFIO_IOMMU_ENABLE: u32 = io(VFIO_TYPE, VFIO_BASE + 15);
/// Disables the container (sPAPR only); no argument.
pub const VFIO_IOMMU_DISABLE: u32 = io(VFIO_TYPE, VFIO_BASE + 16);
/// Dirty page logging control ([`VfioIommuType1DirtyBitmap`]).
pub const VFIO_IOMMU_DIRTY_PAGES: u32 = io(VFIO_TYPE, VFIO_BASE + 17);

/// Header of each entry in an info capability chain.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioInfoCapHeader {
    /// Capability id.
    pub id: u16,
    /// Capability version.
    pub version: u16,
    /// Offset of the next capability from the start of the info struct
    /// (0 ends the chain).
    pub next: u32,
}
assert_layout!(VfioInfoCapHeader, 8; id = 0, version = 2, next = 4);

/// Info flag: `iova_pgsizes` is valid.
pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
/// Info flag: a capability chain is present (`cap_offset`).
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;

/// Argument of [`VFIO_IOMMU_GET_INFO`]; capabilities follow in the caller's
/// buffer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1Info {
    /// In: caller's buffer size; out: size needed for everything.
    pub argsz: u32,
    /// Output: `VFIO_IOMMU_INFO_*` flags.
    pub flags: u32,
    /// Output: bitmap of supported IOMMU page sizes.
    pub iova_pgsizes: u64,
    /// Output: offset of the first capability, 0 if none was written.
    pub cap_offset: u32,
    /// Padding.
    pub pad: u32,
}
assert_layout!(VfioIommuType1Info, 24; argsz = 0, flags = 4, iova_pgsizes = 8, cap_offset = 16,
    pad = 20);

impl VfioIommuType1Info {
    /// Size of this structure in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Capability id of [`VfioIommuType1InfoCapIovaRange`].
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
/// Capability id of [`VfioIommuType1InfoCapMigration`].
pub const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: u16 = 2;
/// Capability id of [`VfioIommuType1InfoDmaAvail`].
pub const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: u16 = 3;

/// One usable IOVA interval `[start, end]` (inclusive end).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIovaRange {
    /// First IOVA.
    pub start: u64,
    /// Last IOVA (inclusive).
    pub end: u64,
}
assert_layout!(VfioIovaRange, 16; start = 0, end = 8);

/// IOVA-range capability; `nr_iovas` [`VfioIovaRange`] entries follow it.
///
/// 8-byte aligned because the C struct ends in a flexible array of
/// [`VfioIovaRange`].
#[repr(C, align(8))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1InfoCapIovaRange {
    /// Chain header (id [`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`]).
    pub header: VfioInfoCapHeader,
    /// Number of ranges that follow.
    pub nr_iovas: u32,
    /// Always 0.
    pub reserved: u32,
}
assert_layout!(VfioIommuType1InfoCapIovaRange, 16; header = 0, nr_iovas = 8, reserved = 12);
const _: () = assert!(core::mem::align_of::<VfioIommuType1InfoCapIovaRange>() == 8);

/// Migration (dirty logging) capability.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1InfoCapMigration {
    /// Chain header (id [`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`]).
    pub header: VfioInfoCapHeader,
    /// Capability flags.
    pub flags: u32,
    /// Padding before `pgsize_bitmap` (C implicit padding).
    pub pad: u32,
    /// Page sizes supported for dirty logging.
    pub pgsize_bitmap: u64,
    /// Largest dirty bitmap accepted, in bytes.
    pub max_dirty_bitmap_size: u64,
}
assert_layout!(VfioIommuType1InfoCapMigration, 32; header = 0, flags = 8, pad = 12,
    pgsize_bitmap = 16, max_dirty_bitmap_size = 24);

/// DMA-available capability.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1InfoDmaAvail {
    /// Chain header (id [`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`]).
    pub header: VfioInfoCapHeader,
    /// Number of further DMA mappings allowed.
    pub avail: u32,
}
assert_layout!(VfioIommuType1InfoDmaAvail, 12; header = 0, avail = 8);

/// Map flag: the device may read.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// Map flag: the device may write.
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
/// Map flag: update the process address of an existing mapping.
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 1 << 2;

/// Argument of [`VFIO_IOMMU_MAP_DMA`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1DmaMap {
    /// Caller's structure size.
    pub argsz: u32,
    /// `VFIO_DMA_MAP_FLAG_*` flags.
    pub flags: u32,
    /// Process virtual address.
    pub vaddr: u64,
    /// IO virtual address.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
}
assert_layout!(VfioIommuType1DmaMap, 32; argsz = 0, flags = 4, vaddr = 8, iova = 16, size = 24);

impl VfioIommuType1DmaMap {
    /// Size of this structure in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Dirty page bitmap description used by unmap and dirty-pages requests.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioBitmap {
    /// Bytes of IOVA per bit.
    pub pgsize: u64,
    /// Bitmap size in bytes.
    pub size: u64,
    /// User pointer to the bitmap (C `__u64 *`).
    pub data: u64,
}
assert_layout!(VfioBitmap, 24; pgsize = 0, size = 8, data = 16);

/// Unmap flag: also return the dirty bitmap (a [`VfioBitmap`] follows).
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
/// Unmap flag: unmap everything (`iova` and `size` must be 0).
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
/// Unmap flag: only invalidate the process addresses.
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 1 << 2;

/// Argument of [`VFIO_IOMMU_UNMAP_DMA`] (C has a trailing flexible `data[]`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1DmaUnmap {
    /// Caller's structure size.
    pub argsz: u32,
    /// `VFIO_DMA_UNMAP_FLAG_*` flags.
    pub flags: u32,
    /// First IOVA to unmap.
    pub iova: u64,
    /// In: length; out: bytes unmapped.
    pub size: u64,
}
assert_layout!(VfioIommuType1DmaUnmap, 24; argsz = 0, flags = 4, iova = 8, size = 16);

impl VfioIommuType1DmaUnmap {
    /// Size of this structure in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Dirty-pages flag: start logging.
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_START: u32 = 1 << 0;
/// Dirty-pages flag: stop logging.
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: u32 = 1 << 1;
/// Dirty-pages flag: fetch the bitmap ([`VfioIommuType1DirtyBitmapGet`] follows).
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: u32 = 1 << 2;

/// Argument of [`VFIO_IOMMU_DIRTY_PAGES`] (C has a trailing flexible `data[]`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1DirtyBitmap {
    /// Caller's structure size.
    pub argsz: u32,
    /// One `VFIO_IOMMU_DIRTY_PAGES_FLAG_*` flag.
    pub flags: u32,
}
assert_layout!(VfioIommuType1DirtyBitmap, 8; argsz = 0, flags = 4);

/// Payload of a dirty-pages `GET_BITMAP` request.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VfioIommuType1DirtyBitmapGet {
    /// First IOVA of the range.
    pub iova: u64,
    /// Length of the range.
    pub size: u64,
    /// Where to store the bitmap.
    pub bitmap: VfioBitmap,
}
assert_layout!(VfioIommuType1DirtyBitmapGet, 40; iova = 0, size = 8, bitmap = 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(VFIO_IOMMU_DIRTY_PAGES, 0x3b75);
    }
}

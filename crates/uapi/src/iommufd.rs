//! The iommufd uAPI (`include/uapi/linux/iommufd.h`, Linux 7.2).
//!
//! Every command takes a pointer to a structure whose first `u32` is the
//! structure size the caller was built with (see [`crate::read_extensible`]).
//! Fields named `__reserved` in C are called `reserved` here, and the C field
//! `type` is spelled `type_`. C `__aligned_u64` / `__aligned_le64` fields are
//! plain `u64` (8-byte aligned on every supported target; the `le64` ones hold
//! little-endian data, which is native on x86_64 and arm64).

use crate::{io, IommufdCmd};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------
// ioctl numbers
// ---------------------------------------------------------------------------

/// ioctl type character shared by iommufd and VFIO (`';'`, 0x3b).
pub const IOMMUFD_TYPE: u8 = b';';

/// First iommufd command number.
pub const IOMMUFD_CMD_BASE: u8 = 0x80;
/// Command number of [`IOMMU_DESTROY`].
pub const IOMMUFD_CMD_DESTROY: u8 = IOMMUFD_CMD_BASE;
/// Command number of [`IOMMU_IOAS_ALLOC`].
pub const IOMMUFD_CMD_IOAS_ALLOC: u8 = 0x81;
/// Command number of [`IOMMU_IOAS_ALLOW_IOVAS`].
pub const IOMMUFD_CMD_IOAS_ALLOW_IOVAS: u8 = 0x82;
/// Command number of [`IOMMU_IOAS_COPY`].
pub const IOMMUFD_CMD_IOAS_COPY: u8 = 0x83;
/// Command number of [`IOMMU_IOAS_IOVA_RANGES`].
pub const IOMMUFD_CMD_IOAS_IOVA_RANGES: u8 = 0x84;
/// Command number of [`IOMMU_IOAS_MAP`].
pub const IOMMUFD_CMD_IOAS_MAP: u8 = 0x85;
/// Command number of [`IOMMU_IOAS_UNMAP`].
pub const IOMMUFD_CMD_IOAS_UNMAP: u8 = 0x86;
/// Command number of [`IOMMU_OPTION`].
pub const IOMMUFD_CMD_OPTION: u8 = 0x87;
/// Command number of [`IOMMU_VFIO_IOAS`].
pub const IOMMUFD_CMD_VFIO_IOAS: u8 = 0x88;
/// Command number of [`IOMMU_HWPT_ALLOC`].
pub const IOMMUFD_CMD_HWPT_ALLOC: u8 = 0x89;
/// Command number of [`IOMMU_GET_HW_INFO`].
pub const IOMMUFD_CMD_GET_HW_INFO: u8 = 0x8a;
/// Command number of [`IOMMU_HWPT_SET_DIRTY_TRACKING`].
pub const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: u8 = 0x8b;
/// Command number of [`IOMMU_HWPT_GET_DIRTY_BITMAP`].
pub const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: u8 = 0x8c;
/// Command number of [`IOMMU_HWPT_INVALIDATE`].
pub const IOMMUFD_CMD_HWPT_INVALIDATE: u8 = 0x8d;
/// Command number of [`IOMMU_FAULT_QUEUE_ALLOC`].
pub const IOMMUFD_CMD_FAULT_QUEUE_ALLOC: u8 = 0x8e;
/// Command number of [`IOMMU_IOAS_MAP_FILE`].
pub const IOMMUFD_CMD_IOAS_MAP_FILE: u8 = 0x8f;
/// Command number of [`IOMMU_VIOMMU_ALLOC`].
pub const IOMMUFD_CMD_VIOMMU_ALLOC: u8 = 0x90;
/// Command number of [`IOMMU_VDEVICE_ALLOC`].
pub const IOMMUFD_CMD_VDEVICE_ALLOC: u8 = 0x91;
/// Command number of [`IOMMU_IOAS_CHANGE_PROCESS`].
pub const IOMMUFD_CMD_IOAS_CHANGE_PROCESS: u8 = 0x92;
/// Command number of [`IOMMU_VEVENTQ_ALLOC`].
pub const IOMMUFD_CMD_VEVENTQ_ALLOC: u8 = 0x93;
/// Command number of [`IOMMU_HW_QUEUE_ALLOC`].
pub const IOMMUFD_CMD_HW_QUEUE_ALLOC: u8 = 0x94;

/// Destroy any object by id ([`IommuDestroy`]).
pub const IOMMU_DESTROY: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);
/// Create an I/O address space ([`IommuIoasAlloc`]).
pub const IOMMU_IOAS_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);
/// Set the allowed IOVA list of an IOAS ([`IommuIoasAllowIovas`]).
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
/// Duplicate a mapping from one IOAS into another ([`IommuIoasCopy`]).
pub const IOMMU_IOAS_COPY: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY);
/// Report the usable IOVA ranges of an IOAS ([`IommuIoasIovaRanges`]).
pub const IOMMU_IOAS_IOVA_RANGES: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES);
/// Map user memory into an IOAS ([`IommuIoasMap`]).
pub const IOMMU_IOAS_MAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);
/// Remove mappings from an IOAS ([`IommuIoasUnmap`]).
pub const IOMMU_IOAS_UNMAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP);
/// Get or set a context or IOAS option ([`IommuOption`]).
pub const IOMMU_OPTION: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);
/// Manage the VFIO-compatibility IOAS ([`IommuVfioIoas`]).
pub const IOMMU_VFIO_IOAS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS);
/// Create a hardware page table ([`IommuHwptAlloc`]).
pub const IOMMU_HWPT_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC);
/// Query IOMMU hardware information for a device ([`IommuHwInfo`]).
pub const IOMMU_GET_HW_INFO: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO);
/// Switch dirty tracking of a HWPT on or off ([`IommuHwptSetDirtyTracking`]).
pub const IOMMU_HWPT_SET_DIRTY_TRACKING: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
/// Read (and by default clear) a HWPT's dirty bitmap ([`IommuHwptGetDirtyBitmap`]).
pub const IOMMU_HWPT_GET_DIRTY_BITMAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
/// Flush caches of a nested HWPT or vIOMMU ([`IommuHwptInvalidate`]).
pub const IOMMU_HWPT_INVALIDATE: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE);
/// Create a page-fault queue and its fd ([`IommuFaultAlloc`]).
pub const IOMMU_FAULT_QUEUE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
/// Map a memfd (or supported dma-buf) into an IOAS ([`IommuIoasMapFile`]).
pub const IOMMU_IOAS_MAP_FILE: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE);
/// Create a virtual IOMMU ([`IommuViommuAlloc`]).
pub const IOMMU_VIOMMU_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC);
/// Create a virtual device on a vIOMMU ([`IommuVdeviceAlloc`]).
pub const IOMMU_VDEVICE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC);
/// Move pinned-page accounting to the calling process ([`IommuIoasChangeProcess`]).
pub const IOMMU_IOAS_CHANGE_PROCESS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS);
/// Create a virtual event queue and its fd ([`IommuVeventqAlloc`]).
pub const IOMMU_VEVENTQ_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC);
/// Create a hardware-accelerated queue on a vIOMMU ([`IommuHwQueueAlloc`]).
pub const IOMMU_HW_QUEUE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC);

/// Implements [`IommufdCmd`] and the inherent `SIZE` / `MIN_SIZE` constants.
macro_rules! command {
    ($t:ty, $nr:expr, $ioctl:expr, $name:literal, min = $min_field:ident) => {
        impl $t {
            /// Size of this command structure in bytes.
            pub const SIZE: usize = core::mem::size_of::<$t>();
            /// Smallest argument size the kernel accepts for this command.
            pub const MIN_SIZE: usize = crate::field_end!($t, $min_field);
        }
        impl IommufdCmd for $t {
            const NR: u8 = $nr;
            const IOCTL: u32 = $ioctl;
            const NAME: &'static str = $name;
            const MIN_SIZE: usize = <$t>::MIN_SIZE;
        }
    };
}

// ---------------------------------------------------------------------------
// Structures and constants, in header order
// ---------------------------------------------------------------------------

/// Argument of [`IOMMU_DESTROY`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuDestroy {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Id of the object to destroy (any type).
    pub id: u32,
}
assert_layout!(IommuDestroy, 8; size = 0, id = 4);
command!(IommuDestroy, IOMMUFD_CMD_DESTROY, IOMMU_DESTROY, "IOMMU_DESTROY", min = id);

/// Argument of [`IOMMU_IOAS_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// No flags are defined; must be 0.
    pub flags: u32,
    /// Output: id of the new IOAS.
    pub out_ioas_id: u32,
}
assert_layout!(IommuIoasAlloc, 12; size = 0, flags = 4, out_ioas_id = 8);
command!(IommuIoasAlloc, IOMMUFD_CMD_IOAS_ALLOC, IOMMU_IOAS_ALLOC, "IOMMU_IOAS_ALLOC", min = out_ioas_id);

/// An inclusive IOVA interval `[start, last]`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIovaRange {
    /// First IOVA of the interval.
    pub start: u64,
    /// Last IOVA of the interval (inclusive).
    pub last: u64,
}
assert_layout!(IommuIovaRange, 16; start = 0, last = 8);

/// Argument of [`IOMMU_IOAS_IOVA_RANGES`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasIovaRanges {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// IOAS to query.
    pub ioas_id: u32,
    /// In: capacity of the `allowed_iovas` array; out: number of ranges.
    pub num_iovas: u32,
    /// Must be 0.
    pub reserved: u32,
    /// User pointer to an array of [`IommuIovaRange`] to fill.
    pub allowed_iovas: u64,
    /// Output: required IOVA and length alignment for map/copy.
    pub out_iova_alignment: u64,
}
assert_layout!(IommuIoasIovaRanges, 32; size = 0, ioas_id = 4, num_iovas = 8, reserved = 12,
    allowed_iovas = 16, out_iova_alignment = 24);
command!(
    IommuIoasIovaRanges,
    IOMMUFD_CMD_IOAS_IOVA_RANGES,
    IOMMU_IOAS_IOVA_RANGES,
    "IOMMU_IOAS_IOVA_RANGES",
    min = out_iova_alignment
);

/// Argument of [`IOMMU_IOAS_ALLOW_IOVAS`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasAllowIovas {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// IOAS whose allowed list is replaced.
    pub ioas_id: u32,
    /// Number of entries in `allowed_iovas`.
    pub num_iovas: u32,
    /// Must be 0.
    pub reserved: u32,
    /// User pointer to an array of [`IommuIovaRange`].
    pub allowed_iovas: u64,
}
assert_layout!(IommuIoasAllowIovas, 24; size = 0, ioas_id = 4, num_iovas = 8, reserved = 12,
    allowed_iovas = 16);
command!(
    IommuIoasAllowIovas,
    IOMMUFD_CMD_IOAS_ALLOW_IOVAS,
    IOMMU_IOAS_ALLOW_IOVAS,
    "IOMMU_IOAS_ALLOW_IOVAS",
    min = allowed_iovas
);

/// Map/copy flag: use the caller's `iova` instead of allocating one.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// Map/copy flag: devices may write through the mapping.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// Map/copy flag: devices may read through the mapping.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// Argument of [`IOMMU_IOAS_MAP`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasMap {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_IOAS_MAP_*` flags.
    pub flags: u32,
    /// Target IOAS.
    pub ioas_id: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Start of the user memory to map.
    pub user_va: u64,
    /// Number of bytes to map.
    pub length: u64,
    /// In (with `FIXED_IOVA`) or out: IOVA of the mapping.
    pub iova: u64,
}
assert_layout!(IommuIoasMap, 40; size = 0, flags = 4, ioas_id = 8, reserved = 12, user_va = 16,
    length = 24, iova = 32);
command!(IommuIoasMap, IOMMUFD_CMD_IOAS_MAP, IOMMU_IOAS_MAP, "IOMMU_IOAS_MAP", min = iova);

/// Argument of [`IOMMU_IOAS_MAP_FILE`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasMapFile {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_IOAS_MAP_*` flags.
    pub flags: u32,
    /// Target IOAS.
    pub ioas_id: u32,
    /// memfd (or supported dma-buf) to map from.
    pub fd: i32,
    /// Byte offset into the file.
    pub start: u64,
    /// Number of bytes to map.
    pub length: u64,
    /// In (with `FIXED_IOVA`) or out: IOVA of the mapping.
    pub iova: u64,
}
assert_layout!(IommuIoasMapFile, 40; size = 0, flags = 4, ioas_id = 8, fd = 12, start = 16,
    length = 24, iova = 32);
command!(IommuIoasMapFile, IOMMUFD_CMD_IOAS_MAP_FILE, IOMMU_IOAS_MAP_FILE, "IOMMU_IOAS_MAP_FILE", min = iova);

/// Argument of [`IOMMU_IOAS_COPY`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasCopy {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_IOAS_MAP_*` flags for the new mapping.
    pub flags: u32,
    /// IOAS receiving the mapping.
    pub dst_ioas_id: u32,
    /// IOAS holding the existing mapping.
    pub src_ioas_id: u32,
    /// Number of bytes to copy.
    pub length: u64,
    /// In (with `FIXED_IOVA`) or out: IOVA in the destination.
    pub dst_iova: u64,
    /// IOVA in the source.
    pub src_iova: u64,
}
assert_layout!(IommuIoasCopy, 40; size = 0, flags = 4, dst_ioas_id = 8, src_ioas_id = 12,
    length = 16, dst_iova = 24, src_iova = 32);
command!(IommuIoasCopy, IOMMUFD_CMD_IOAS_COPY, IOMMU_IOAS_COPY, "IOMMU_IOAS_COPY", min = src_iova);

/// Argument of [`IOMMU_IOAS_UNMAP`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasUnmap {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// IOAS to unmap from.
    pub ioas_id: u32,
    /// First IOVA of the range.
    pub iova: u64,
    /// In: range length; out: number of bytes unmapped.
    pub length: u64,
}
assert_layout!(IommuIoasUnmap, 24; size = 0, ioas_id = 4, iova = 8, length = 16);
command!(IommuIoasUnmap, IOMMUFD_CMD_IOAS_UNMAP, IOMMU_IOAS_UNMAP, "IOMMU_IOAS_UNMAP", min = length);

/// Option id: RLIMIT_MEMLOCK accounting mode of the context (0 user, 1 mm).
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
/// Option id: per-IOAS permission to use large IOMMU pages (default 1).
pub const IOMMU_OPTION_HUGE_PAGES: u32 = 1;

/// Option operation: store `val64`.
pub const IOMMU_OPTION_OP_SET: u16 = 0;
/// Option operation: return the value in `val64`.
pub const IOMMU_OPTION_OP_GET: u16 = 1;

/// Argument of [`IOMMU_OPTION`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuOption {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// One of the `IOMMU_OPTION_*` ids.
    pub option_id: u32,
    /// `IOMMU_OPTION_OP_SET` or `IOMMU_OPTION_OP_GET`.
    pub op: u16,
    /// Must be 0.
    pub reserved: u16,
    /// Object the option applies to (0 for global options).
    pub object_id: u32,
    /// Value to set, or value read back.
    pub val64: u64,
}
assert_layout!(IommuOption, 24; size = 0, option_id = 4, op = 8, reserved = 10, object_id = 12,
    val64 = 16);
command!(IommuOption, IOMMUFD_CMD_OPTION, IOMMU_OPTION, "IOMMU_OPTION", min = val64);

/// VFIO-IOAS operation: report the compatibility IOAS.
pub const IOMMU_VFIO_IOAS_GET: u16 = 0;
/// VFIO-IOAS operation: make `ioas_id` the compatibility IOAS.
pub const IOMMU_VFIO_IOAS_SET: u16 = 1;
/// VFIO-IOAS operation: forget the compatibility IOAS.
pub const IOMMU_VFIO_IOAS_CLEAR: u16 = 2;

/// Argument of [`IOMMU_VFIO_IOAS`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuVfioIoas {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// In for SET, out for GET: the IOAS id.
    pub ioas_id: u32,
    /// One of the `IOMMU_VFIO_IOAS_*` operations.
    pub op: u16,
    /// Must be 0.
    pub reserved: u16,
}
assert_layout!(IommuVfioIoas, 12; size = 0, ioas_id = 4, op = 8, reserved = 10);
command!(IommuVfioIoas, IOMMUFD_CMD_VFIO_IOAS, IOMMU_VFIO_IOAS, "IOMMU_VFIO_IOAS", min = reserved);

/// HWPT alloc flag: the HWPT may act as a nesting parent.
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;
/// HWPT alloc flag: require dirty-tracking capable attachments.
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = 1 << 1;
/// HWPT alloc flag: `fault_id` is valid.
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
/// HWPT alloc flag: the domain must be usable on PASIDs.
pub const IOMMU_HWPT_ALLOC_PASID: u32 = 1 << 3;

/// VT-d stage-1 flag: supervisor requests.
pub const IOMMU_VTD_S1_SRE: u64 = 1 << 0;
/// VT-d stage-1 flag: extended access enable.
pub const IOMMU_VTD_S1_EAFE: u64 = 1 << 1;
/// VT-d stage-1 flag: write protect enable.
pub const IOMMU_VTD_S1_WPE: u64 = 1 << 2;

/// Intel VT-d stage-1 page table description ([`IOMMU_HWPT_DATA_VTD_S1`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptVtdS1 {
    /// `IOMMU_VTD_S1_*` flags.
    pub flags: u64,
    /// Base address of the stage-1 table.
    pub pgtbl_addr: u64,
    /// Address width of the stage-1 table.
    pub addr_width: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuHwptVtdS1, 24; flags = 0, pgtbl_addr = 8, addr_width = 16, reserved = 20);

/// ARM SMMUv3 nested stream table entry ([`IOMMU_HWPT_DATA_ARM_SMMUV3`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptArmSmmuv3 {
    /// First two little-endian double words of the STE.
    pub ste: [u64; 2],
}
assert_layout!(IommuHwptArmSmmuv3, 16; ste = 0);

/// AMD guest I/O page table description ([`IOMMU_HWPT_DATA_AMD_GUEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptAmdGuest {
    /// Guest device table entry.
    pub dte: [u64; 4],
}
assert_layout!(IommuHwptAmdGuest, 32; dte = 0);

/// HWPT data type: no driver data (kernel-managed page table).
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
/// HWPT data type: [`IommuHwptVtdS1`].
pub const IOMMU_HWPT_DATA_VTD_S1: u32 = 1;
/// HWPT data type: [`IommuHwptArmSmmuv3`].
pub const IOMMU_HWPT_DATA_ARM_SMMUV3: u32 = 2;
/// HWPT data type: [`IommuHwptAmdGuest`].
pub const IOMMU_HWPT_DATA_AMD_GUEST: u32 = 3;

/// Argument of [`IOMMU_HWPT_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_HWPT_ALLOC_*` / `IOMMU_HWPT_FAULT_ID_VALID` flags.
    pub flags: u32,
    /// Device the HWPT is allocated for.
    pub dev_id: u32,
    /// Parent: an IOAS, a nest-parent HWPT or a vIOMMU.
    pub pt_id: u32,
    /// Output: id of the new HWPT.
    pub out_hwpt_id: u32,
    /// Must be 0.
    pub reserved: u32,
    /// One of the `IOMMU_HWPT_DATA_*` types.
    pub data_type: u32,
    /// Length of the driver data.
    pub data_len: u32,
    /// User pointer to the driver data.
    pub data_uptr: u64,
    /// Fault queue id, used with `IOMMU_HWPT_FAULT_ID_VALID`.
    pub fault_id: u32,
    /// Padding; must be 0.
    pub reserved2: u32,
}
assert_layout!(IommuHwptAlloc, 48; size = 0, flags = 4, dev_id = 8, pt_id = 12, out_hwpt_id = 16,
    reserved = 20, data_type = 24, data_len = 28, data_uptr = 32, fault_id = 40, reserved2 = 44);
command!(IommuHwptAlloc, IOMMUFD_CMD_HWPT_ALLOC, IOMMU_HWPT_ALLOC, "IOMMU_HWPT_ALLOC", min = reserved);

/// VT-d hw-info flag: read-only mappings are refused on nest parents
/// (erratum 772415).
pub const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: u32 = 1 << 0;

/// Intel VT-d hardware information ([`IOMMU_HW_INFO_TYPE_INTEL_VTD`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwInfoVtd {
    /// `IOMMU_HW_INFO_VTD_*` flags.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Capability register.
    pub cap_reg: u64,
    /// Extended capability register.
    pub ecap_reg: u64,
}
assert_layout!(IommuHwInfoVtd, 24; flags = 0, reserved = 4, cap_reg = 8, ecap_reg = 16);

/// ARM SMMUv3 hardware information ([`IOMMU_HW_INFO_TYPE_ARM_SMMUV3`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwInfoArmSmmuv3 {
    /// Always 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
    /// ID registers IDR0..IDR5.
    pub idr: [u32; 6],
    /// Implementation identification register.
    pub iidr: u32,
    /// Architecture version register.
    pub aidr: u32,
}
assert_layout!(IommuHwInfoArmSmmuv3, 40; flags = 0, reserved = 4, idr = 8, iidr = 32, aidr = 36);

/// NVIDIA Tegra241 CMDQV hardware information
/// ([`IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwInfoTegra241Cmdqv {
    /// Always 0.
    pub flags: u32,
    /// CMDQ-V hardware version.
    pub version: u8,
    /// log2 of the number of VCMDQs.
    pub log2vcmdqs: u8,
    /// log2 of the number of SID replacements.
    pub log2vsids: u8,
    /// Must be 0.
    pub reserved: u8,
}
assert_layout!(IommuHwInfoTegra241Cmdqv, 8; flags = 0, version = 4, log2vcmdqs = 5,
    log2vsids = 6, reserved = 7);

/// AMD IOMMU hardware information ([`IOMMU_HW_INFO_TYPE_AMD`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwInfoAmd {
    /// Extended feature register.
    pub efr: u64,
    /// Extended feature 2 register.
    pub efr2: u64,
}
assert_layout!(IommuHwInfoAmd, 16; efr = 0, efr2 = 8);

/// hw-info type: the driver reports no data.
pub const IOMMU_HW_INFO_TYPE_NONE: u32 = 0;
/// hw-info type requested as input: whatever the driver reports by default.
pub const IOMMU_HW_INFO_TYPE_DEFAULT: u32 = 0;
/// hw-info type: [`IommuHwInfoVtd`].
pub const IOMMU_HW_INFO_TYPE_INTEL_VTD: u32 = 1;
/// hw-info type: [`IommuHwInfoArmSmmuv3`].
pub const IOMMU_HW_INFO_TYPE_ARM_SMMUV3: u32 = 2;
/// hw-info type: [`IommuHwInfoTegra241Cmdqv`].
pub const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: u32 = 3;
/// hw-info type: [`IommuHwInfoAmd`].
pub const IOMMU_HW_INFO_TYPE_AMD: u32 = 4;

/// Capability: the IOMMU supports dirty tracking.
pub const IOMMU_HW_CAP_DIRTY_TRACKING: u64 = 1 << 0;
/// Capability: PCI PASID execute permission supported.
pub const IOMMU_HW_CAP_PCI_PASID_EXEC: u64 = 1 << 1;
/// Capability: PCI PASID privileged mode supported.
pub const IOMMU_HW_CAP_PCI_PASID_PRIV: u64 = 1 << 2;
/// Capability: ATS cannot be used on this device.
pub const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: u64 = 1 << 3;

/// hw-info flag: `in_data_type` carries a requested type.
pub const IOMMU_HW_INFO_FLAG_INPUT_TYPE: u32 = 1 << 0;

/// Argument of [`IOMMU_GET_HW_INFO`].
///
/// C overlays `in_data_type` and `out_data_type` in one `u32`; the field is
/// stored as `out_data_type` and [`IommuHwInfo::in_data_type`] /
/// [`IommuHwInfo::set_in_data_type`] give the input view.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwInfo {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_HW_INFO_FLAG_*` flags.
    pub flags: u32,
    /// Device to query.
    pub dev_id: u32,
    /// In: buffer length; out: length of the driver's data.
    pub data_len: u32,
    /// User pointer to the buffer for the driver data.
    pub data_uptr: u64,
    /// In (with `IOMMU_HW_INFO_FLAG_INPUT_TYPE`): requested type;
    /// out: `IOMMU_HW_INFO_TYPE_*` of the returned data.
    pub out_data_type: u32,
    /// Output: PASID width, 0 if PASIDs are unsupported.
    pub out_max_pasid_log2: u8,
    /// Must be 0.
    pub reserved: [u8; 3],
    /// Output: `IOMMU_HW_CAP_*` bits.
    pub out_capabilities: u64,
}
assert_layout!(IommuHwInfo, 40; size = 0, flags = 4, dev_id = 8, data_len = 12, data_uptr = 16,
    out_data_type = 24, out_max_pasid_log2 = 28, reserved = 29, out_capabilities = 32);
command!(IommuHwInfo, IOMMUFD_CMD_GET_HW_INFO, IOMMU_GET_HW_INFO, "IOMMU_GET_HW_INFO", min = reserved);

impl IommuHwInfo {
    /// The input view of the shared type field.
    pub const fn in_data_type(&self) -> u32 {
        self.out_data_type
    }

    /// Sets the input view of the shared type field.
    pub fn set_in_data_type(&mut self, ty: u32) {
        self.out_data_type = ty;
    }
}

/// Dirty-tracking flag: enable (clear to disable).
pub const IOMMU_HWPT_DIRTY_TRACKING_ENABLE: u32 = 1;

/// Argument of [`IOMMU_HWPT_SET_DIRTY_TRACKING`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptSetDirtyTracking {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// `IOMMU_HWPT_DIRTY_TRACKING_ENABLE` or 0.
    pub flags: u32,
    /// HWPT to change.
    pub hwpt_id: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuHwptSetDirtyTracking, 16; size = 0, flags = 4, hwpt_id = 8, reserved = 12);
command!(
    IommuHwptSetDirtyTracking,
    IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
    IOMMU_HWPT_SET_DIRTY_TRACKING,
    "IOMMU_HWPT_SET_DIRTY_TRACKING",
    min = reserved
);

/// Dirty-bitmap flag: report without clearing the dirty state.
pub const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: u32 = 1;

/// Argument of [`IOMMU_HWPT_GET_DIRTY_BITMAP`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptGetDirtyBitmap {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// HWPT to read.
    pub hwpt_id: u32,
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP_*` flags.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
    /// IOVA corresponding to bit 0 of the bitmap.
    pub iova: u64,
    /// Length of the IOVA range.
    pub length: u64,
    /// Bytes of IOVA represented by one bit.
    pub page_size: u64,
    /// User pointer to the bitmap (array of u64).
    pub data: u64,
}
assert_layout!(IommuHwptGetDirtyBitmap, 48; size = 0, hwpt_id = 4, flags = 8, reserved = 12,
    iova = 16, length = 24, page_size = 32, data = 40);
command!(
    IommuHwptGetDirtyBitmap,
    IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP,
    IOMMU_HWPT_GET_DIRTY_BITMAP,
    "IOMMU_HWPT_GET_DIRTY_BITMAP",
    min = data
);

/// Invalidation data type: [`IommuHwptVtdS1Invalidate`].
pub const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: u32 = 0;
/// Invalidation data type: [`IommuViommuArmSmmuv3Invalidate`].
pub const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: u32 = 1;

/// VT-d invalidation flag: leaf entries only.
pub const IOMMU_VTD_INV_FLAGS_LEAF: u32 = 1 << 0;

/// One Intel VT-d stage-1 invalidation request.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptVtdS1Invalidate {
    /// Start address (4 KiB aligned).
    pub addr: u64,
    /// Number of 4 KiB pages.
    pub npages: u64,
    /// `IOMMU_VTD_INV_FLAGS_*` flags.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuHwptVtdS1Invalidate, 24; addr = 0, npages = 8, flags = 16, reserved = 20);

/// One ARM SMMUv3 invalidation command (little-endian).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuArmSmmuv3Invalidate {
    /// 128-bit CMDQ command.
    pub cmd: [u64; 2],
}
assert_layout!(IommuViommuArmSmmuv3Invalidate, 16; cmd = 0);

/// Argument of [`IOMMU_HWPT_INVALIDATE`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptInvalidate {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Nested HWPT or vIOMMU whose caches are flushed.
    pub hwpt_id: u32,
    /// User pointer to the array of requests.
    pub data_uptr: u64,
    /// Invalidation data type of every entry.
    pub data_type: u32,
    /// Size of one entry.
    pub entry_len: u32,
    /// In: number of entries; out: number handled.
    pub entry_num: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuHwptInvalidate, 32; size = 0, hwpt_id = 4, data_uptr = 8, data_type = 16,
    entry_len = 20, entry_num = 24, reserved = 28);
command!(
    IommuHwptInvalidate,
    IOMMUFD_CMD_HWPT_INVALIDATE,
    IOMMU_HWPT_INVALIDATE,
    "IOMMU_HWPT_INVALIDATE",
    min = reserved
);

/// Page-fault flag: `pasid` is valid.
pub const IOMMU_PGFAULT_FLAGS_PASID_VALID: u32 = 1 << 0;
/// Page-fault flag: last fault of its group.
pub const IOMMU_PGFAULT_FLAGS_LAST_PAGE: u32 = 1 << 1;

/// Page-fault permission: read.
pub const IOMMU_PGFAULT_PERM_READ: u32 = 1 << 0;
/// Page-fault permission: write.
pub const IOMMU_PGFAULT_PERM_WRITE: u32 = 1 << 1;
/// Page-fault permission: execute.
pub const IOMMU_PGFAULT_PERM_EXEC: u32 = 1 << 2;
/// Page-fault permission: privileged.
pub const IOMMU_PGFAULT_PERM_PRIV: u32 = 1 << 3;

/// One fault message read from a fault queue fd.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptPgfault {
    /// `IOMMU_PGFAULT_FLAGS_*` flags.
    pub flags: u32,
    /// Device that faulted.
    pub dev_id: u32,
    /// PASID of the request.
    pub pasid: u32,
    /// Page request group index.
    pub grpid: u32,
    /// `IOMMU_PGFAULT_PERM_*` bits.
    pub perm: u32,
    /// Always 0.
    pub reserved: u32,
    /// Faulting address.
    pub addr: u64,
    /// Length hint of the expected access.
    pub length: u32,
    /// Kernel cookie to echo in the response.
    pub cookie: u32,
}
assert_layout!(IommuHwptPgfault, 40; flags = 0, dev_id = 4, pasid = 8, grpid = 12, perm = 16,
    reserved = 20, addr = 24, length = 32, cookie = 36);

/// Response code: fault handled, retry the access.
pub const IOMMUFD_PAGE_RESP_SUCCESS: u32 = 0;
/// Response code: fault not handled, do not retry.
pub const IOMMUFD_PAGE_RESP_INVALID: u32 = 1;

/// One response written to a fault queue fd.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptPageResponse {
    /// Cookie from the fault message.
    pub cookie: u32,
    /// `IOMMUFD_PAGE_RESP_*` code.
    pub code: u32,
}
assert_layout!(IommuHwptPageResponse, 8; cookie = 0, code = 4);

/// Argument of [`IOMMU_FAULT_QUEUE_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuFaultAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// Output: id of the fault object.
    pub out_fault_id: u32,
    /// Output: file descriptor of the fault queue.
    pub out_fault_fd: u32,
}
assert_layout!(IommuFaultAlloc, 16; size = 0, flags = 4, out_fault_id = 8, out_fault_fd = 12);
command!(
    IommuFaultAlloc,
    IOMMUFD_CMD_FAULT_QUEUE_ALLOC,
    IOMMU_FAULT_QUEUE_ALLOC,
    "IOMMU_FAULT_QUEUE_ALLOC",
    min = out_fault_fd
);

/// vIOMMU type: reserved.
pub const IOMMU_VIOMMU_TYPE_DEFAULT: u32 = 0;
/// vIOMMU type: ARM SMMUv3.
pub const IOMMU_VIOMMU_TYPE_ARM_SMMUV3: u32 = 1;
/// vIOMMU type: ARM SMMUv3 with NVIDIA Tegra241 CMDQV.
pub const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: u32 = 2;

/// Tegra241 CMDQV vIOMMU driver data ([`IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuTegra241Cmdqv {
    /// Output: mmap offset of the VINTF page 0.
    pub out_vintf_mmap_offset: u64,
    /// Output: mmap length of the VINTF page 0.
    pub out_vintf_mmap_length: u64,
}
assert_layout!(IommuViommuTegra241Cmdqv, 16; out_vintf_mmap_offset = 0, out_vintf_mmap_length = 8);

/// Argument of [`IOMMU_VIOMMU_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// One of the `IOMMU_VIOMMU_TYPE_*` values (C field `type`).
    pub type_: u32,
    /// Device whose physical IOMMU backs the vIOMMU.
    pub dev_id: u32,
    /// Nest-parent HWPT.
    pub hwpt_id: u32,
    /// Output: id of the new vIOMMU.
    pub out_viommu_id: u32,
    /// Length of the driver data.
    pub data_len: u32,
    /// Must be 0.
    pub reserved: u32,
    /// User pointer to the driver data.
    pub data_uptr: u64,
}
assert_layout!(IommuViommuAlloc, 40; size = 0, flags = 4, type_ = 8, dev_id = 12, hwpt_id = 16,
    out_viommu_id = 20, data_len = 24, reserved = 28, data_uptr = 32);
command!(IommuViommuAlloc, IOMMUFD_CMD_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC, "IOMMU_VIOMMU_ALLOC", min = out_viommu_id);

/// Argument of [`IOMMU_VDEVICE_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuVdeviceAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// vIOMMU to attach the virtual device to.
    pub viommu_id: u32,
    /// Physical device.
    pub dev_id: u32,
    /// Output: id of the new vDEVICE.
    pub out_vdevice_id: u32,
    /// Virtual device id as seen by the guest.
    pub virt_id: u64,
}
assert_layout!(IommuVdeviceAlloc, 24; size = 0, viommu_id = 4, dev_id = 8, out_vdevice_id = 12,
    virt_id = 16);
command!(IommuVdeviceAlloc, IOMMUFD_CMD_VDEVICE_ALLOC, IOMMU_VDEVICE_ALLOC, "IOMMU_VDEVICE_ALLOC", min = virt_id);

/// Argument of [`IOMMU_IOAS_CHANGE_PROCESS`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuIoasChangeProcess {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuIoasChangeProcess, 8; size = 0, reserved = 4);
command!(
    IommuIoasChangeProcess,
    IOMMUFD_CMD_IOAS_CHANGE_PROCESS,
    IOMMU_IOAS_CHANGE_PROCESS,
    "IOMMU_IOAS_CHANGE_PROCESS",
    min = reserved
);

/// vEVENT header flag: events were lost before this point.
pub const IOMMU_VEVENTQ_FLAG_LOST_EVENTS: u32 = 1 << 0;

/// Header preceding every event read from a vEVENTQ fd.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommufdVeventHeader {
    /// `IOMMU_VEVENTQ_FLAG_*` flags.
    pub flags: u32,
    /// Sequence number, wrapping from `i32::MAX` to 0.
    pub sequence: u32,
}
assert_layout!(IommufdVeventHeader, 8; flags = 0, sequence = 4);

/// vEVENTQ type: reserved.
pub const IOMMU_VEVENTQ_TYPE_DEFAULT: u32 = 0;
/// vEVENTQ type: ARM SMMUv3 events ([`IommuVeventArmSmmuv3`]).
pub const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: u32 = 1;
/// vEVENTQ type: Tegra241 CMDQV interrupts ([`IommuVeventTegra241Cmdqv`]).
pub const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: u32 = 2;

/// ARM SMMUv3 virtual event record (little-endian).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuVeventArmSmmuv3 {
    /// 256-bit event record.
    pub evt: [u64; 4],
}
assert_layout!(IommuVeventArmSmmuv3, 32; evt = 0);

/// Tegra241 CMDQV virtual event (little-endian).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuVeventTegra241Cmdqv {
    /// 128-bit logical VCMDQ error map.
    pub lvcmdq_err_map: [u64; 2],
}
assert_layout!(IommuVeventTegra241Cmdqv, 16; lvcmdq_err_map = 0);

/// Argument of [`IOMMU_VEVENTQ_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuVeventqAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// vIOMMU the queue belongs to.
    pub viommu_id: u32,
    /// One of the `IOMMU_VEVENTQ_TYPE_*` values (C field `type`).
    pub type_: u32,
    /// Maximum number of queued events.
    pub veventq_depth: u32,
    /// Output: id of the new vEVENTQ.
    pub out_veventq_id: u32,
    /// Output: file descriptor to read events from.
    pub out_veventq_fd: u32,
    /// Must be 0.
    pub reserved: u32,
}
assert_layout!(IommuVeventqAlloc, 32; size = 0, flags = 4, viommu_id = 8, type_ = 12,
    veventq_depth = 16, out_veventq_id = 20, out_veventq_fd = 24, reserved = 28);
command!(
    IommuVeventqAlloc,
    IOMMUFD_CMD_VEVENTQ_ALLOC,
    IOMMU_VEVENTQ_ALLOC,
    "IOMMU_VEVENTQ_ALLOC",
    min = out_veventq_fd
);

/// HW queue type: reserved.
pub const IOMMU_HW_QUEUE_TYPE_DEFAULT: u32 = 0;
/// HW queue type: Tegra241 CMDQV virtual command queue.
pub const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: u32 = 1;

/// Argument of [`IOMMU_HW_QUEUE_ALLOC`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwQueueAlloc {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// vIOMMU the queue belongs to.
    pub viommu_id: u32,
    /// One of the `IOMMU_HW_QUEUE_TYPE_*` values (C field `type`).
    pub type_: u32,
    /// Logical queue index within the vIOMMU and type.
    pub index: u32,
    /// Output: id of the new HW queue.
    pub out_hw_queue_id: u32,
    /// Guest-physical base of the queue memory.
    pub nesting_parent_iova: u64,
    /// Length of the queue memory.
    pub length: u64,
}
assert_layout!(IommuHwQueueAlloc, 40; size = 0, flags = 4, viommu_id = 8, type_ = 12, index = 16,
    out_hw_queue_id = 20, nesting_parent_iova = 24, length = 32);
command!(IommuHwQueueAlloc, IOMMUFD_CMD_HW_QUEUE_ALLOC, IOMMU_HW_QUEUE_ALLOC, "IOMMU_HW_QUEUE_ALLOC", min = length);

// Alignment of every structure holding a 64-bit field is 8, as in C.
const _: () = {
    use core::mem::align_of;
    assert!(align_of::<IommuIoasMap>() == 8);
    assert!(align_of::<IommuHwInfo>() == 8);
    assert!(align_of::<IommuHwptAlloc>() == 8);
    assert!(align_of::<IommuDestroy>() == 4);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers() {
        assert_eq!(IOMMU_DESTROY, 0x3b80);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_GET_HW_INFO, 0x3b8a);
        assert_eq!(IOMMU_HW_QUEUE_ALLOC, 0x3b94);
    }

    #[test]
    fn hw_info_union_view() {
        let mut h = IommuHwInfo::new_sized();
        h.set_in_data_type(IOMMU_HW_INFO_TYPE_AMD);
        assert_eq!(h.out_data_type, IOMMU_HW_INFO_TYPE_AMD);
        assert_eq!(h.in_data_type(), IOMMU_HW_INFO_TYPE_AMD);
        assert_eq!(h.size, 40);
    }
}

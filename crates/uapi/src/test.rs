//! The iommufd self-test ABI (`drivers/iommu/iommufd/iommufd_test.h`,
//! Linux 7.2): the `IOMMU_TEST_CMD` ioctl, its operations and payloads, the
//! mock IOMMU's constants and the mock driver-specific data structures.
//!
//! The C command structure holds an anonymous union of per-operation
//! structures; here it is [`IommuTestCmd::data`], a 48-byte array, and each
//! union member is a separate `Test*` struct implementing [`TestPayload`],
//! read and written with [`IommuTestCmd::payload`] /
//! [`IommuTestCmd::set_payload`].

use crate::iommufd::{IOMMUFD_CMD_BASE, IOMMUFD_TYPE};
use crate::{io, IommufdCmd};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// Op: reserve an IOVA range in an IOAS ([`TestAddReserved`]).
pub const IOMMU_TEST_OP_ADD_RESERVED: u32 = 1;
/// Op: create a mock device attached to an IOAS/HWPT ([`TestMockDomain`]).
pub const IOMMU_TEST_OP_MOCK_DOMAIN: u32 = 2;
/// Op: verify a mock domain maps a user buffer ([`TestCheckMap`]).
pub const IOMMU_TEST_OP_MD_CHECK_MAP: u32 = 3;
/// Op: verify page reference counts of a user buffer ([`TestCheckRefs`]).
pub const IOMMU_TEST_OP_MD_CHECK_REFS: u32 = 4;
/// Op: create an emulated-device access and its fd ([`TestCreateAccess`]).
pub const IOMMU_TEST_OP_CREATE_ACCESS: u32 = 5;
/// Op: release pages pinned through an access ([`TestDestroyAccessPages`]).
pub const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: u32 = 6;
/// Op: pin pages through an access ([`TestAccessPages`]).
pub const IOMMU_TEST_OP_ACCESS_PAGES: u32 = 7;
/// Op: read or write IOVA memory through an access ([`TestAccessRw`]).
pub const IOMMU_TEST_OP_ACCESS_RW: u32 = 8;
/// Op: temporarily lower the pinned-page limit ([`TestMemoryLimit`]).
pub const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: u32 = 9;
/// Op: re-attach a mock device to another page table ([`TestMockDomainReplace`]).
pub const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: u32 = 10;
/// Op: move an access to another IOAS ([`TestAccessReplaceIoas`]).
pub const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: u32 = 11;
/// Op: like `MOCK_DOMAIN` with device flags ([`TestMockDomainFlags`]).
pub const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: u32 = 12;
/// Op: mark mock IOPTEs dirty from a bitmap ([`TestDirty`]).
pub const IOMMU_TEST_OP_DIRTY: u32 = 13;
/// Op: check a nested domain's mock IOTLB entry ([`TestCheckIotlb`]).
pub const IOMMU_TEST_OP_MD_CHECK_IOTLB: u32 = 14;
/// Op: inject an I/O page fault ([`TestTriggerIopf`]).
pub const IOMMU_TEST_OP_TRIGGER_IOPF: u32 = 15;
/// Op: check a mock device cache entry ([`TestCheckDevCache`]).
pub const IOMMU_TEST_OP_DEV_CHECK_CACHE: u32 = 16;
/// Op: inject a virtual event ([`TestTriggerVevent`]).
pub const IOMMU_TEST_OP_TRIGGER_VEVENT: u32 = 17;
/// Op: attach a PASID of a mock device ([`TestPasidAttach`]).
pub const IOMMU_TEST_OP_PASID_ATTACH: u32 = 18;
/// Op: replace a PASID attachment ([`TestPasidReplace`]).
pub const IOMMU_TEST_OP_PASID_REPLACE: u32 = 19;
/// Op: detach a PASID ([`TestPasidDetach`]).
pub const IOMMU_TEST_OP_PASID_DETACH: u32 = 20;
/// Op: check which HWPT a PASID is attached to ([`TestPasidCheck`]).
pub const IOMMU_TEST_OP_PASID_CHECK_HWPT: u32 = 21;
/// Op: create a test dma-buf ([`TestDmabufGet`]).
pub const IOMMU_TEST_OP_DMABUF_GET: u32 = 22;
/// Op: revoke or restore a test dma-buf ([`TestDmabufRevoke`]).
pub const IOMMU_TEST_OP_DMABUF_REVOKE: u32 = 23;

// ---------------------------------------------------------------------------
// Mock IOMMU constants
// ---------------------------------------------------------------------------

/// Mock page table format: default (2 KiB pages, 31-bit aperture).
pub const MOCK_IOMMUPT_DEFAULT: u32 = 0;
/// Mock page table format: huge-page capable.
pub const MOCK_IOMMUPT_HUGE: u32 = 1;

/// First IOVA of the default mock domain's aperture.
pub const MOCK_APERTURE_START: u64 = 1 << 24;
/// Last IOVA of the default mock domain's aperture.
pub const MOCK_APERTURE_LAST: u64 = (1 << 31) - 1;
/// Page size of the default mock domain.
pub const MOCK_PAGE_SIZE: u64 = 2048;
/// Huge page size of the mock domain.
pub const MOCK_HUGE_PAGE_SIZE: u64 = 512 * MOCK_PAGE_SIZE;

/// `CREATE_ACCESS`/`ACCESS_PAGES` flag: request write access.
pub const MOCK_FLAGS_ACCESS_WRITE: u32 = 1 << 0;
/// `ACCESS_PAGES` flag: syzkaller mode (IOVA is an offset into the IOAS).
pub const MOCK_FLAGS_ACCESS_SYZ: u32 = 1 << 16;

/// `ACCESS_RW` flag: write instead of read.
pub const MOCK_ACCESS_RW_WRITE: u32 = 1 << 0;
/// `ACCESS_RW` flag: force the slow (page by page) path.
pub const MOCK_ACCESS_RW_SLOW_PATH: u32 = 1 << 2;

/// `CREATE_ACCESS` flag: the access pins pages (needs an unmap callback).
pub const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: u32 = 1 << 0;

/// Mock device flag: no dirty-tracking support.
pub const MOCK_FLAGS_DEVICE_NO_DIRTY: u32 = 1 << 0;
/// Mock device flag: PASID capable.
pub const MOCK_FLAGS_DEVICE_PASID: u32 = 1 << 2;

/// Highest valid mock nested-domain IOTLB index.
pub const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: u32 = 3;
/// Number of mock nested-domain IOTLB entries.
pub const MOCK_NESTED_DOMAIN_IOTLB_NUM: u32 = 4;

/// Highest valid mock device cache index.
pub const MOCK_DEV_CACHE_ID_MAX: u32 = 3;
/// Number of mock device cache entries.
pub const MOCK_DEV_CACHE_NUM: u32 = 4;

/// PASID on which the mock driver fakes a replace failure.
pub const IOMMU_TEST_PASID_RESERVED: u32 = 1024;

/// PASID width of the mock IOMMU/device.
pub const MOCK_PASID_WIDTH: u32 = 20;

/// hw-info type reported by the mock IOMMU ([`IommuTestHwInfo`]).
pub const IOMMU_HW_INFO_TYPE_SELFTEST: u32 = 0xfeed_beef;
/// Value of [`IommuTestHwInfo::test_reg`].
pub const IOMMU_HW_INFO_SELFTEST_REGVAL: u32 = 0xdead_beef;

/// HWPT data type of the mock driver ([`IommuHwptSelftest`]).
pub const IOMMU_HWPT_DATA_SELFTEST: u32 = 0xdead;
/// Initial value of every mock nested-domain IOTLB entry.
pub const IOMMU_TEST_IOTLB_DEFAULT: u32 = 0x0bad_beef;
/// Initial value of every mock device cache entry.
pub const IOMMU_TEST_DEV_CACHE_DEFAULT: u32 = 0x00ba_ddad;

/// HWPT invalidation data type of the mock driver
/// ([`IommuHwptInvalidateSelftest`]).
pub const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: u32 = 0xdead_beef;
/// A HWPT invalidation data type the mock driver rejects.
pub const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: u32 = 0x0dad_beef;

/// Mock invalidation flag: flush every entry, ignoring the index.
pub const IOMMU_TEST_INVALIDATE_FLAG_ALL: u32 = 1 << 0;

/// vIOMMU type of the mock driver ([`IommuViommuSelftest`]).
pub const IOMMU_VIOMMU_TYPE_SELFTEST: u32 = 0xdead_beef;

/// vIOMMU invalidation data type of the mock driver
/// ([`IommuViommuInvalidateSelftest`]).
pub const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: u32 = 0xdead_beef;
/// A vIOMMU invalidation data type the mock driver rejects.
pub const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: u32 = 0x0dad_beef;

/// vEVENTQ type of the mock driver ([`IommuViommuEventSelftest`]).
pub const IOMMU_VEVENTQ_TYPE_SELFTEST: u32 = 0xbeef_beef;

/// HW queue type of the mock driver.
pub const IOMMU_HW_QUEUE_TYPE_SELFTEST: u32 = 0xdead_beef;
/// Number of HW queues a mock vIOMMU supports.
pub const IOMMU_TEST_HW_QUEUE_MAX: u32 = 2;

// ---------------------------------------------------------------------------
// IOMMU_TEST_CMD
// ---------------------------------------------------------------------------

/// Command number of [`IOMMU_TEST_CMD`] (not named in the C header).
pub const IOMMU_TEST_CMD_NR: u8 = IOMMUFD_CMD_BASE + 32;
/// The self-test multiplexer ioctl ([`IommuTestCmd`]).
pub const IOMMU_TEST_CMD: u32 = io(IOMMUFD_TYPE, IOMMU_TEST_CMD_NR);

/// Size of the per-operation union inside [`IommuTestCmd`].
pub const IOMMU_TEST_CMD_UNION_SIZE: usize = 48;
/// Offset of the per-operation union inside [`IommuTestCmd`].
pub const IOMMU_TEST_CMD_UNION_OFFSET: usize = 16;

/// Argument of [`IOMMU_TEST_CMD`].
///
/// `data` is the C anonymous union (8-byte aligned, like the C one); use the
/// `Test*` payload structs to interpret it.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuTestCmd {
    /// Structure size supplied by the caller.
    pub size: u32,
    /// One of the `IOMMU_TEST_OP_*` operations.
    pub op: u32,
    /// Object id (or access fd) the operation applies to.
    pub id: u32,
    /// Not checked by the kernel.
    pub reserved: u32,
    /// The per-operation union.
    pub data: [u8; IOMMU_TEST_CMD_UNION_SIZE],
    /// Marks the end of the mandatory part; unused.
    pub last: u32,
    /// Tail padding (C implicit padding).
    pub pad: u32,
}
assert_layout!(IommuTestCmd, 72; size = 0, op = 4, id = 8, reserved = 12,
    data = IOMMU_TEST_CMD_UNION_OFFSET, last = 64, pad = 68);
const _: () = assert!(core::mem::align_of::<IommuTestCmd>() == 8);

impl IommuTestCmd {
    /// Size of this command structure in bytes.
    pub const SIZE: usize = core::mem::size_of::<IommuTestCmd>();
    /// Smallest argument size the kernel accepts for this command.
    pub const MIN_SIZE: usize = crate::field_end!(IommuTestCmd, last);

    /// A command for `op` on `id` with `payload` in the union (rest zero) and
    /// `size` set to [`Self::SIZE`].
    pub fn new<P: TestPayload>(op: u32, id: u32, payload: &P) -> Self {
        let mut cmd = Self::new_sized();
        cmd.op = op;
        cmd.id = id;
        cmd.set_payload(payload);
        cmd
    }

    /// Interprets the start of the union as `P`.
    pub fn payload<P: TestPayload>(&self) -> P {
        match P::read_from_prefix(&self.data) {
            Ok((p, _)) => p,
            // Unreachable: every payload is statically at most 48 bytes.
            Err(_) => P::new_zeroed(),
        }
    }

    /// Stores `payload` at the start of the union, leaving the rest untouched.
    pub fn set_payload<P: TestPayload>(&mut self, payload: &P) {
        let bytes = payload.as_bytes();
        self.data[..bytes.len()].copy_from_slice(bytes);
    }
}

impl Default for IommuTestCmd {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl IommufdCmd for IommuTestCmd {
    const NR: u8 = IOMMU_TEST_CMD_NR;
    const IOCTL: u32 = IOMMU_TEST_CMD;
    const NAME: &'static str = "IOMMU_TEST_CMD";
    const MIN_SIZE: usize = IommuTestCmd::MIN_SIZE;
}

/// A member of the [`IommuTestCmd`] union.
pub trait TestPayload: FromBytes + IntoBytes + Immutable + KnownLayout + Copy {}

/// Declares a union member: struct, layout asserts, fits-in-union assert and
/// [`TestPayload`] impl.
macro_rules! payload {
    ($t:ident, $size:expr; $($f:ident = $off:expr),* $(,)?) => {
        assert_layout!($t, $size; $($f = $off),*);
        const _: () = assert!(core::mem::size_of::<$t>() <= IOMMU_TEST_CMD_UNION_SIZE);
        const _: () = assert!(core::mem::align_of::<$t>() <= 8);
        impl TestPayload for $t {}
    };
}

/// Union member `add_reserved` ([`IOMMU_TEST_OP_ADD_RESERVED`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestAddReserved {
    /// First IOVA to reserve.
    pub start: u64,
    /// Length of the reserved range.
    pub length: u64,
}
payload!(TestAddReserved, 16; start = 0, length = 8);

/// Union member `mock_domain` ([`IOMMU_TEST_OP_MOCK_DOMAIN`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestMockDomain {
    /// Output: id of the self-test object.
    pub out_stdev_id: u32,
    /// Output: id of the HWPT the device got attached to.
    pub out_hwpt_id: u32,
    /// Output: id of the bound device object.
    pub out_idev_id: u32,
}
payload!(TestMockDomain, 12; out_stdev_id = 0, out_hwpt_id = 4, out_idev_id = 8);

/// Union member `mock_domain_flags` ([`IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestMockDomainFlags {
    /// Output: id of the self-test object.
    pub out_stdev_id: u32,
    /// Output: id of the HWPT the device got attached to.
    pub out_hwpt_id: u32,
    /// Output: id of the bound device object.
    pub out_idev_id: u32,
    /// `MOCK_FLAGS_DEVICE_*` flags.
    pub dev_flags: u32,
}
payload!(TestMockDomainFlags, 16; out_stdev_id = 0, out_hwpt_id = 4, out_idev_id = 8,
    dev_flags = 12);

/// Union member `mock_domain_replace` ([`IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestMockDomainReplace {
    /// In: new page table; out: HWPT actually attached.
    pub pt_id: u32,
}
payload!(TestMockDomainReplace, 4; pt_id = 0);

/// Union member `check_map` ([`IOMMU_TEST_OP_MD_CHECK_MAP`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestCheckMap {
    /// First IOVA to check.
    pub iova: u64,
    /// Length of the range.
    pub length: u64,
    /// User buffer expected behind the range.
    pub uptr: u64,
}
payload!(TestCheckMap, 24; iova = 0, length = 8, uptr = 16);

/// Union member `check_refs` ([`IOMMU_TEST_OP_MD_CHECK_REFS`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestCheckRefs {
    /// Length of the user buffer.
    pub length: u64,
    /// User buffer to check.
    pub uptr: u64,
    /// Expected reference count of every page.
    pub refs: u32,
    /// Tail padding (C implicit padding).
    pub pad: u32,
}
payload!(TestCheckRefs, 24; length = 0, uptr = 8, refs = 16, pad = 20);

/// Union member `create_access` ([`IOMMU_TEST_OP_CREATE_ACCESS`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestCreateAccess {
    /// Output: file descriptor of the access.
    pub out_access_fd: u32,
    /// `MOCK_FLAGS_ACCESS_CREATE_*` flags.
    pub flags: u32,
}
payload!(TestCreateAccess, 8; out_access_fd = 0, flags = 4);

/// Union member `destroy_access_pages`
/// ([`IOMMU_TEST_OP_DESTROY_ACCESS_PAGES`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestDestroyAccessPages {
    /// Id returned by `ACCESS_PAGES`.
    pub access_pages_id: u32,
}
payload!(TestDestroyAccessPages, 4; access_pages_id = 0);

/// Union member `access_pages` ([`IOMMU_TEST_OP_ACCESS_PAGES`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestAccessPages {
    /// `MOCK_FLAGS_ACCESS_*` flags.
    pub flags: u32,
    /// Output: id of the pinned-pages record.
    pub out_access_pages_id: u32,
    /// First IOVA to pin.
    pub iova: u64,
    /// Length to pin.
    pub length: u64,
    /// User buffer expected behind the range.
    pub uptr: u64,
}
payload!(TestAccessPages, 32; flags = 0, out_access_pages_id = 4, iova = 8, length = 16,
    uptr = 24);

/// Union member `access_rw` ([`IOMMU_TEST_OP_ACCESS_RW`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestAccessRw {
    /// First IOVA to access.
    pub iova: u64,
    /// Number of bytes.
    pub length: u64,
    /// User buffer to copy from / to.
    pub uptr: u64,
    /// `MOCK_ACCESS_RW_*` flags.
    pub flags: u32,
    /// Tail padding (C implicit padding).
    pub pad: u32,
}
payload!(TestAccessRw, 32; iova = 0, length = 8, uptr = 16, flags = 24, pad = 28);

/// Union member `memory_limit` ([`IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestMemoryLimit {
    /// New limit in pages.
    pub limit: u32,
}
payload!(TestMemoryLimit, 4; limit = 0);

/// Union member `access_replace_ioas` ([`IOMMU_TEST_OP_ACCESS_REPLACE_IOAS`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestAccessReplaceIoas {
    /// IOAS to move the access to.
    pub ioas_id: u32,
}
payload!(TestAccessReplaceIoas, 4; ioas_id = 0);

/// Union member `dirty` ([`IOMMU_TEST_OP_DIRTY`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestDirty {
    /// Unused flags.
    pub flags: u32,
    /// Padding before `iova` (C implicit padding).
    pub pad: u32,
    /// IOVA of bit 0.
    pub iova: u64,
    /// Length of the range.
    pub length: u64,
    /// Bytes of IOVA per bitmap bit.
    pub page_size: u64,
    /// User pointer to the bitmap of pages to mark dirty.
    pub uptr: u64,
    /// Output: number of pages marked dirty.
    pub out_nr_dirty: u64,
}
payload!(TestDirty, 48; flags = 0, pad = 4, iova = 8, length = 16, page_size = 24, uptr = 32,
    out_nr_dirty = 40);

/// Union member `check_iotlb` ([`IOMMU_TEST_OP_MD_CHECK_IOTLB`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestCheckIotlb {
    /// IOTLB entry index.
    pub id: u32,
    /// Expected entry value.
    pub iotlb: u32,
}
payload!(TestCheckIotlb, 8; id = 0, iotlb = 4);

/// Union member `trigger_iopf` ([`IOMMU_TEST_OP_TRIGGER_IOPF`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestTriggerIopf {
    /// Faulting device.
    pub dev_id: u32,
    /// PASID of the fault.
    pub pasid: u32,
    /// Page request group index.
    pub grpid: u32,
    /// `IOMMU_PGFAULT_PERM_*` bits.
    pub perm: u32,
    /// Faulting address.
    pub addr: u64,
}
payload!(TestTriggerIopf, 24; dev_id = 0, pasid = 4, grpid = 8, perm = 12, addr = 16);

/// Union member `check_dev_cache` ([`IOMMU_TEST_OP_DEV_CHECK_CACHE`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestCheckDevCache {
    /// Cache entry index.
    pub id: u32,
    /// Expected entry value.
    pub cache: u32,
}
payload!(TestCheckDevCache, 8; id = 0, cache = 4);

/// Union member `trigger_vevent` ([`IOMMU_TEST_OP_TRIGGER_VEVENT`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestTriggerVevent {
    /// Device to report the event for.
    pub dev_id: u32,
}
payload!(TestTriggerVevent, 4; dev_id = 0);

/// Union member `pasid_attach` ([`IOMMU_TEST_OP_PASID_ATTACH`]); `id` is the
/// self-test object.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestPasidAttach {
    /// PASID to attach.
    pub pasid: u32,
    /// In: page table; out: HWPT attached.
    pub pt_id: u32,
}
payload!(TestPasidAttach, 8; pasid = 0, pt_id = 4);

/// Union member `pasid_replace` ([`IOMMU_TEST_OP_PASID_REPLACE`]); `id` is
/// the self-test object.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestPasidReplace {
    /// PASID to re-attach.
    pub pasid: u32,
    /// In: page table; out: HWPT attached.
    pub pt_id: u32,
}
payload!(TestPasidReplace, 8; pasid = 0, pt_id = 4);

/// Union member `pasid_detach` ([`IOMMU_TEST_OP_PASID_DETACH`]); `id` is the
/// self-test object.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestPasidDetach {
    /// PASID to detach.
    pub pasid: u32,
}
payload!(TestPasidDetach, 4; pasid = 0);

/// Union member `pasid_check` ([`IOMMU_TEST_OP_PASID_CHECK_HWPT`]); `id` is
/// the self-test object.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestPasidCheck {
    /// PASID to inspect.
    pub pasid: u32,
    /// Expected HWPT (0: expect nothing attached).
    pub hwpt_id: u32,
}
payload!(TestPasidCheck, 8; pasid = 0, hwpt_id = 4);

/// Union member `dmabuf_get` ([`IOMMU_TEST_OP_DMABUF_GET`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestDmabufGet {
    /// Size of the dma-buf in bytes.
    pub length: u32,
    /// `open(2)` flags of the new fd.
    pub open_flags: u32,
}
payload!(TestDmabufGet, 8; length = 0, open_flags = 4);

/// Union member `dmabuf_revoke` ([`IOMMU_TEST_OP_DMABUF_REVOKE`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TestDmabufRevoke {
    /// The test dma-buf fd.
    pub dmabuf_fd: i32,
    /// Non-zero to revoke, zero to restore.
    pub revoked: u32,
}
payload!(TestDmabufRevoke, 8; dmabuf_fd = 0, revoked = 4);

// ---------------------------------------------------------------------------
// Mock driver data
// ---------------------------------------------------------------------------

/// hw-info data of the mock IOMMU ([`IOMMU_HW_INFO_TYPE_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuTestHwInfo {
    /// Always 0.
    pub flags: u32,
    /// [`IOMMU_HW_INFO_SELFTEST_REGVAL`].
    pub test_reg: u32,
}
assert_layout!(IommuTestHwInfo, 8; flags = 0, test_reg = 4);

/// Nested HWPT data of the mock driver ([`IOMMU_HWPT_DATA_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptSelftest {
    /// Initial IOTLB value ([`IOMMU_TEST_IOTLB_DEFAULT`]).
    pub iotlb: u32,
    /// `MOCK_IOMMUPT_*` page table format.
    pub pagetable_type: u32,
}
assert_layout!(IommuHwptSelftest, 8; iotlb = 0, pagetable_type = 4);

/// One mock HWPT invalidation request
/// ([`IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuHwptInvalidateSelftest {
    /// [`IOMMU_TEST_INVALIDATE_FLAG_ALL`] or 0.
    pub flags: u32,
    /// IOTLB entry to reset.
    pub iotlb_id: u32,
}
assert_layout!(IommuHwptInvalidateSelftest, 8; flags = 0, iotlb_id = 4);

/// vIOMMU data of the mock driver ([`IOMMU_VIOMMU_TYPE_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuSelftest {
    /// Input value echoed to `out_data`.
    pub in_data: u32,
    /// Output: copy of `in_data`.
    pub out_data: u32,
    /// Output: mmap offset of the mock MMIO page.
    pub out_mmap_offset: u64,
    /// Output: mmap length of the mock MMIO page.
    pub out_mmap_length: u64,
}
assert_layout!(IommuViommuSelftest, 24; in_data = 0, out_data = 4, out_mmap_offset = 8,
    out_mmap_length = 16);

/// One mock vIOMMU invalidation request
/// ([`IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuInvalidateSelftest {
    /// [`IOMMU_TEST_INVALIDATE_FLAG_ALL`] or 0.
    pub flags: u32,
    /// Virtual device id whose cache is flushed.
    pub vdev_id: u32,
    /// Cache entry to reset.
    pub cache_id: u32,
}
assert_layout!(IommuViommuInvalidateSelftest, 12; flags = 0, vdev_id = 4, cache_id = 8);

/// Event data of the mock vEVENTQ ([`IOMMU_VEVENTQ_TYPE_SELFTEST`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IommuViommuEventSelftest {
    /// Virtual device id of the reporting device.
    pub virt_id: u32,
}
assert_layout!(IommuViommuEventSelftest, 4; virt_id = 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let d = TestDirty {
            iova: 0x1000,
            length: 0x2000,
            page_size: 2048,
            uptr: 0xdead_0000,
            out_nr_dirty: 3,
            ..Default::default()
        };
        let mut cmd = IommuTestCmd::new(IOMMU_TEST_OP_DIRTY, 5, &d);
        assert_eq!(cmd.size, 72);
        assert_eq!(cmd.payload::<TestDirty>(), d);
        // The union sits at byte 16 of the command.
        assert_eq!(&cmd.as_bytes()[24..32], &0x1000u64.to_ne_bytes());
        cmd.set_payload(&TestMockDomain { out_stdev_id: 1, out_hwpt_id: 2, out_idev_id: 3 });
        assert_eq!(cmd.payload::<TestMockDomainFlags>().out_idev_id, 3);
        // Bytes beyond the smaller payload were left untouched.
        assert_eq!(cmd.payload::<TestDirty>().length, 0x2000);
        assert_eq!(IommuTestCmd::MIN_SIZE, 68);
        assert_eq!(IOMMU_TEST_CMD, 0x3ba0);
    }
}

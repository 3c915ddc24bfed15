//! Cross-checks every structure layout, constant and ioctl number of this
//! crate against the real Linux 7.2 uAPI headers.
//!
//! One macro-built list drives both sides: each entry has a label, a C
//! expression and the Rust value. The C expressions are compiled into a small
//! program (against the headers under `shared/conformance/linux-7.2`, a sibling
//! of the repository root) that prints `label value` lines; the Rust side
//! prints the same lines from its own values, and the two outputs must agree
//! line by line.
//!
//! The test is skipped (with a message) when the headers or a C compiler are
//! not available. `UIOMMU_LINUX_HEADERS` overrides the header directory.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use uiommu_uapi::field_size;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use uiommu_uapi::vfio::*;
use uiommu_uapi::{cmd_info, IOMMUFD_CMDS};

/// One value compared between C and Rust.
struct Entry {
    label: String,
    c_expr: String,
    rust: u64,
}

#[derive(Default)]
struct Checks(Vec<Entry>);

impl Checks {
    fn push(&mut self, label: impl Into<String>, c_expr: impl Into<String>, rust: impl TryInto<u64>) {
        let label = label.into();
        let rust = match rust.try_into() {
            Ok(v) => v,
            Err(_) => panic!("{label}: value does not fit in u64"),
        };
        self.0.push(Entry { label, c_expr: c_expr.into(), rust });
    }
}

/// The C spelling of a field: the Rust name unless a C name is given.
macro_rules! cname {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $c:literal) => {
        $c
    };
}

/// Size, alignment, and every listed field's offset and size of a struct
/// named `struct <cname>` in C.
macro_rules! c_struct {
    ($out:ident, $cname:literal => $t:ty { $($f:ident $(= $cf:literal)?),* $(,)? }) => {{
        let s = concat!("struct ", $cname);
        $out.push(format!("sizeof {}", $cname), format!("sizeof({s})"), size_of::<$t>());
        $out.push(format!("alignof {}", $cname), format!("_Alignof({s})"), align_of::<$t>());
        $(
            let cf = cname!($f $(, $cf)?);
            $out.push(
                format!("offsetof {}.{cf}", $cname),
                format!("offsetof({s}, {cf})"),
                offset_of!($t, $f),
            );
            $out.push(
                format!("fieldsize {}.{cf}", $cname),
                format!("sizeof((({s} *)0)->{cf})"),
                field_size(|v: &$t| &v.$f),
            );
        )*
    }};
}

/// A member of the anonymous union of `struct iommu_test_cmd`: its size,
/// alignment, and the absolute offset (within the command) and size of each
/// field.
macro_rules! c_test_union {
    ($out:ident, $member:literal => $t:ty { $($f:ident),* $(,)? }) => {{
        let m = concat!("((struct iommu_test_cmd *)0)->", $member);
        $out.push(format!("sizeof iommu_test_cmd.{}", $member), format!("sizeof({m})"), size_of::<$t>());
        $out.push(
            format!("alignof iommu_test_cmd.{}", $member),
            format!("__alignof__({m})"),
            align_of::<$t>(),
        );
        $out.push(
            format!("offsetof iommu_test_cmd.{}", $member),
            format!("offsetof(struct iommu_test_cmd, {})", $member),
            IOMMU_TEST_CMD_UNION_OFFSET,
        );
        $(
            $out.push(
                format!("offsetof iommu_test_cmd.{}.{}", $member, stringify!($f)),
                format!("offsetof(struct iommu_test_cmd, {}.{})", $member, stringify!($f)),
                IOMMU_TEST_CMD_UNION_OFFSET + offset_of!($t, $f),
            );
            $out.push(
                format!("fieldsize iommu_test_cmd.{}.{}", $member, stringify!($f)),
                format!("sizeof({m}.{})", stringify!($f)),
                field_size(|v: &$t| &v.$f),
            );
        )*
    }};
}

/// Values of constants / ioctl numbers, compared under their C names.
macro_rules! c_consts {
    ($out:ident, $($name:ident $(= $cn:literal)?),* $(,)?) => {{
        $(
            let cn = cname!($name $(, $cn)?);
            $out.push(cn.to_string(), cn.to_string(), $name);
        )*
    }};
}

/// One row of the command table: number, request, size and minimum size as
/// computed from the C struct and the kernel's "last required field".
macro_rules! c_cmd {
    ($out:ident, $ioctl:ident, $cstruct:literal, $last:literal) => {{
        let info = IOMMUFD_CMDS
            .iter()
            .find(|c| c.name == stringify!($ioctl))
            .expect(concat!("missing table row ", stringify!($ioctl)));
        assert_eq!(cmd_info(info.nr), Some(info));
        let s = concat!("struct ", $cstruct);
        let name = stringify!($ioctl);
        $out.push(format!("cmd {name} nr"), format!("_IOC_NR({name})"), info.nr);
        $out.push(format!("cmd {name} ioctl"), name.to_string(), info.ioctl);
        $out.push(format!("cmd {name} size"), format!("sizeof({s})"), info.size);
        $out.push(
            format!("cmd {name} min_size"),
            format!("offsetof({s}, {0}) + sizeof((({s} *)0)->{0})", $last),
            info.min_size,
        );
    }};
}

fn build_checks() -> Checks {
    let mut c = Checks::default();

    // ---- iommufd structures -------------------------------------------------
    c_struct!(c, "iommu_destroy" => IommuDestroy { size, id });
    c_struct!(c, "iommu_ioas_alloc" => IommuIoasAlloc { size, flags, out_ioas_id });
    c_struct!(c, "iommu_iova_range" => IommuIovaRange { start, last });
    c_struct!(c, "iommu_ioas_iova_ranges" => IommuIoasIovaRanges {
        size, ioas_id, num_iovas, reserved = "__reserved", allowed_iovas, out_iova_alignment
    });
    c_struct!(c, "iommu_ioas_allow_iovas" => IommuIoasAllowIovas {
        size, ioas_id, num_iovas, reserved = "__reserved", allowed_iovas
    });
    c_struct!(c, "iommu_ioas_map" => IommuIoasMap {
        size, flags, ioas_id, reserved = "__reserved", user_va, length, iova
    });
    c_struct!(c, "iommu_ioas_map_file" => IommuIoasMapFile {
        size, flags, ioas_id, fd, start, length, iova
    });
    c_struct!(c, "iommu_ioas_copy" => IommuIoasCopy {
        size, flags, dst_ioas_id, src_ioas_id, length, dst_iova, src_iova
    });
    c_struct!(c, "iommu_ioas_unmap" => IommuIoasUnmap { size, ioas_id, iova, length });
    c_struct!(c, "iommu_option" => IommuOption {
        size, option_id, op, reserved = "__reserved", object_id, val64
    });
    c_struct!(c, "iommu_vfio_ioas" => IommuVfioIoas { size, ioas_id, op, reserved = "__reserved" });
    c_struct!(c, "iommu_hwpt_vtd_s1" => IommuHwptVtdS1 {
        flags, pgtbl_addr, addr_width, reserved = "__reserved"
    });
    c_struct!(c, "iommu_hwpt_arm_smmuv3" => IommuHwptArmSmmuv3 { ste });
    c_struct!(c, "iommu_hwpt_amd_guest" => IommuHwptAmdGuest { dte });
    c_struct!(c, "iommu_hwpt_alloc" => IommuHwptAlloc {
        size, flags, dev_id, pt_id, out_hwpt_id, reserved = "__reserved", data_type, data_len,
        data_uptr, fault_id, reserved2 = "__reserved2"
    });
    c_struct!(c, "iommu_hw_info_vtd" => IommuHwInfoVtd {
        flags, reserved = "__reserved", cap_reg, ecap_reg
    });
    c_struct!(c, "iommu_hw_info_arm_smmuv3" => IommuHwInfoArmSmmuv3 {
        flags, reserved = "__reserved", idr, iidr, aidr
    });
    c_struct!(c, "iommu_hw_info_tegra241_cmdqv" => IommuHwInfoTegra241Cmdqv {
        flags, version, log2vcmdqs, log2vsids, reserved = "__reserved"
    });
    c_struct!(c, "iommu_hw_info_amd" => IommuHwInfoAmd { efr, efr2 });
    c_struct!(c, "iommu_hw_info" => IommuHwInfo {
        size, flags, dev_id, data_len, data_uptr, out_data_type, out_data_type = "in_data_type",
        out_max_pasid_log2, reserved = "__reserved", out_capabilities
    });
    c_struct!(c, "iommu_hwpt_set_dirty_tracking" => IommuHwptSetDirtyTracking {
        size, flags, hwpt_id, reserved = "__reserved"
    });
    c_struct!(c, "iommu_hwpt_get_dirty_bitmap" => IommuHwptGetDirtyBitmap {
        size, hwpt_id, flags, reserved = "__reserved", iova, length, page_size, data
    });
    c_struct!(c, "iommu_hwpt_vtd_s1_invalidate" => IommuHwptVtdS1Invalidate {
        addr, npages, flags, reserved = "__reserved"
    });
    c_struct!(c, "iommu_viommu_arm_smmuv3_invalidate" => IommuViommuArmSmmuv3Invalidate { cmd });
    c_struct!(c, "iommu_hwpt_invalidate" => IommuHwptInvalidate {
        size, hwpt_id, data_uptr, data_type, entry_len, entry_num, reserved = "__reserved"
    });
    c_struct!(c, "iommu_hwpt_pgfault" => IommuHwptPgfault {
        flags, dev_id, pasid, grpid, perm, reserved = "__reserved", addr, length, cookie
    });
    c_struct!(c, "iommu_hwpt_page_response" => IommuHwptPageResponse { cookie, code });
    c_struct!(c, "iommu_fault_alloc" => IommuFaultAlloc { size, flags, out_fault_id, out_fault_fd });
    c_struct!(c, "iommu_viommu_tegra241_cmdqv" => IommuViommuTegra241Cmdqv {
        out_vintf_mmap_offset, out_vintf_mmap_length
    });
    c_struct!(c, "iommu_viommu_alloc" => IommuViommuAlloc {
        size, flags, type_ = "type", dev_id, hwpt_id, out_viommu_id, data_len,
        reserved = "__reserved", data_uptr
    });
    c_struct!(c, "iommu_vdevice_alloc" => IommuVdeviceAlloc {
        size, viommu_id, dev_id, out_vdevice_id, virt_id
    });
    c_struct!(c, "iommu_ioas_change_process" => IommuIoasChangeProcess {
        size, reserved = "__reserved"
    });
    c_struct!(c, "iommufd_vevent_header" => IommufdVeventHeader { flags, sequence });
    c_struct!(c, "iommu_vevent_arm_smmuv3" => IommuVeventArmSmmuv3 { evt });
    c_struct!(c, "iommu_vevent_tegra241_cmdqv" => IommuVeventTegra241Cmdqv { lvcmdq_err_map });
    c_struct!(c, "iommu_veventq_alloc" => IommuVeventqAlloc {
        size, flags, viommu_id, type_ = "type", veventq_depth, out_veventq_id, out_veventq_fd,
        reserved = "__reserved"
    });
    c_struct!(c, "iommu_hw_queue_alloc" => IommuHwQueueAlloc {
        size, flags, viommu_id, type_ = "type", index, out_hw_queue_id, nesting_parent_iova, length
    });

    // ---- iommufd constants and ioctl numbers --------------------------------
    c_consts!(
        c,
        IOMMUFD_TYPE,
        IOMMUFD_CMD_BASE,
        IOMMUFD_CMD_DESTROY,
        IOMMUFD_CMD_IOAS_ALLOC,
        IOMMUFD_CMD_IOAS_ALLOW_IOVAS,
        IOMMUFD_CMD_IOAS_COPY,
        IOMMUFD_CMD_IOAS_IOVA_RANGES,
        IOMMUFD_CMD_IOAS_MAP,
        IOMMUFD_CMD_IOAS_UNMAP,
        IOMMUFD_CMD_OPTION,
        IOMMUFD_CMD_VFIO_IOAS,
        IOMMUFD_CMD_HWPT_ALLOC,
        IOMMUFD_CMD_GET_HW_INFO,
        IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
        IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP,
        IOMMUFD_CMD_HWPT_INVALIDATE,
        IOMMUFD_CMD_FAULT_QUEUE_ALLOC,
        IOMMUFD_CMD_IOAS_MAP_FILE,
        IOMMUFD_CMD_VIOMMU_ALLOC,
        IOMMUFD_CMD_VDEVICE_ALLOC,
        IOMMUFD_CMD_IOAS_CHANGE_PROCESS,
        IOMMUFD_CMD_VEVENTQ_ALLOC,
        IOMMUFD_CMD_HW_QUEUE_ALLOC,
        IOMMU_DESTROY,
        IOMMU_IOAS_ALLOC,
        IOMMU_IOAS_ALLOW_IOVAS,
        IOMMU_IOAS_COPY,
        IOMMU_IOAS_IOVA_RANGES,
        IOMMU_IOAS_MAP,
        IOMMU_IOAS_UNMAP,
        IOMMU_OPTION,
        IOMMU_VFIO_IOAS,
        IOMMU_HWPT_ALLOC,
        IOMMU_GET_HW_INFO,
        IOMMU_HWPT_SET_DIRTY_TRACKING,
        IOMMU_HWPT_GET_DIRTY_BITMAP,
        IOMMU_HWPT_INVALIDATE,
        IOMMU_FAULT_QUEUE_ALLOC,
        IOMMU_IOAS_MAP_FILE,
        IOMMU_VIOMMU_ALLOC,
        IOMMU_VDEVICE_ALLOC,
        IOMMU_IOAS_CHANGE_PROCESS,
        IOMMU_VEVENTQ_ALLOC,
        IOMMU_HW_QUEUE_ALLOC,
        IOMMU_IOAS_MAP_FIXED_IOVA,
        IOMMU_IOAS_MAP_WRITEABLE,
        IOMMU_IOAS_MAP_READABLE,
        IOMMU_OPTION_RLIMIT_MODE,
        IOMMU_OPTION_HUGE_PAGES,
        IOMMU_OPTION_OP_SET,
        IOMMU_OPTION_OP_GET,
        IOMMU_VFIO_IOAS_GET,
        IOMMU_VFIO_IOAS_SET,
        IOMMU_VFIO_IOAS_CLEAR,
        IOMMU_HWPT_ALLOC_NEST_PARENT,
        IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
        IOMMU_HWPT_FAULT_ID_VALID,
        IOMMU_HWPT_ALLOC_PASID,
        IOMMU_VTD_S1_SRE,
        IOMMU_VTD_S1_EAFE,
        IOMMU_VTD_S1_WPE,
        IOMMU_HWPT_DATA_NONE,
        IOMMU_HWPT_DATA_VTD_S1,
        IOMMU_HWPT_DATA_ARM_SMMUV3,
        IOMMU_HWPT_DATA_AMD_GUEST,
        IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17,
        IOMMU_HW_INFO_TYPE_NONE,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        IOMMU_HW_INFO_TYPE_INTEL_VTD,
        IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
        IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
        IOMMU_HW_INFO_TYPE_AMD,
        IOMMU_HW_CAP_DIRTY_TRACKING,
        IOMMU_HW_CAP_PCI_PASID_EXEC,
        IOMMU_HW_CAP_PCI_PASID_PRIV,
        IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
        IOMMU_HW_INFO_FLAG_INPUT_TYPE,
        IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
        IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
        IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
        IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        IOMMU_VTD_INV_FLAGS_LEAF,
        IOMMU_PGFAULT_FLAGS_PASID_VALID,
        IOMMU_PGFAULT_FLAGS_LAST_PAGE,
        IOMMU_PGFAULT_PERM_READ,
        IOMMU_PGFAULT_PERM_WRITE,
        IOMMU_PGFAULT_PERM_EXEC,
        IOMMU_PGFAULT_PERM_PRIV,
        IOMMUFD_PAGE_RESP_SUCCESS,
        IOMMUFD_PAGE_RESP_INVALID,
        IOMMU_VIOMMU_TYPE_DEFAULT,
        IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
        IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
        IOMMU_VEVENTQ_TYPE_DEFAULT,
        IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
        IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
        IOMMU_HW_QUEUE_TYPE_DEFAULT,
        IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
    );

    // ---- self-test ----------------------------------------------------------
    c_struct!(c, "iommu_test_cmd" => IommuTestCmd {
        size, op, id, reserved = "__reserved", last
    });
    c.push(
        "unionsize iommu_test_cmd",
        "offsetof(struct iommu_test_cmd, last) - offsetof(struct iommu_test_cmd, add_reserved)",
        field_size(|v: &IommuTestCmd| &v.data),
    );
    c_test_union!(c, "add_reserved" => TestAddReserved { start, length });
    c_test_union!(c, "mock_domain" => TestMockDomain { out_stdev_id, out_hwpt_id, out_idev_id });
    c_test_union!(c, "mock_domain_flags" => TestMockDomainFlags {
        out_stdev_id, out_hwpt_id, out_idev_id, dev_flags
    });
    c_test_union!(c, "mock_domain_replace" => TestMockDomainReplace { pt_id });
    c_test_union!(c, "check_map" => TestCheckMap { iova, length, uptr });
    c_test_union!(c, "check_refs" => TestCheckRefs { length, uptr, refs });
    c_test_union!(c, "create_access" => TestCreateAccess { out_access_fd, flags });
    c_test_union!(c, "destroy_access_pages" => TestDestroyAccessPages { access_pages_id });
    c_test_union!(c, "access_pages" => TestAccessPages {
        flags, out_access_pages_id, iova, length, uptr
    });
    c_test_union!(c, "access_rw" => TestAccessRw { iova, length, uptr, flags });
    c_test_union!(c, "memory_limit" => TestMemoryLimit { limit });
    c_test_union!(c, "access_replace_ioas" => TestAccessReplaceIoas { ioas_id });
    c_test_union!(c, "dirty" => TestDirty {
        flags, iova, length, page_size, uptr, out_nr_dirty
    });
    c_test_union!(c, "check_iotlb" => TestCheckIotlb { id, iotlb });
    c_test_union!(c, "trigger_iopf" => TestTriggerIopf { dev_id, pasid, grpid, perm, addr });
    c_test_union!(c, "check_dev_cache" => TestCheckDevCache { id, cache });
    c_test_union!(c, "trigger_vevent" => TestTriggerVevent { dev_id });
    c_test_union!(c, "pasid_attach" => TestPasidAttach { pasid, pt_id });
    c_test_union!(c, "pasid_replace" => TestPasidReplace { pasid, pt_id });
    c_test_union!(c, "pasid_detach" => TestPasidDetach { pasid });
    c_test_union!(c, "pasid_check" => TestPasidCheck { pasid, hwpt_id });
    c_test_union!(c, "dmabuf_get" => TestDmabufGet { length, open_flags });
    c_test_union!(c, "dmabuf_revoke" => TestDmabufRevoke { dmabuf_fd, revoked });

    c_struct!(c, "iommu_test_hw_info" => IommuTestHwInfo { flags, test_reg });
    c_struct!(c, "iommu_hwpt_selftest" => IommuHwptSelftest { iotlb, pagetable_type });
    c_struct!(c, "iommu_hwpt_invalidate_selftest" => IommuHwptInvalidateSelftest {
        flags, iotlb_id
    });
    c_struct!(c, "iommu_viommu_selftest" => IommuViommuSelftest {
        in_data, out_data, out_mmap_offset, out_mmap_length
    });
    c_struct!(c, "iommu_viommu_invalidate_selftest" => IommuViommuInvalidateSelftest {
        flags, vdev_id, cache_id
    });
    c_struct!(c, "iommu_viommu_event_selftest" => IommuViommuEventSelftest { virt_id });

    c_consts!(
        c,
        IOMMU_TEST_CMD,
        IOMMU_TEST_OP_ADD_RESERVED,
        IOMMU_TEST_OP_MOCK_DOMAIN,
        IOMMU_TEST_OP_MD_CHECK_MAP,
        IOMMU_TEST_OP_MD_CHECK_REFS,
        IOMMU_TEST_OP_CREATE_ACCESS,
        IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
        IOMMU_TEST_OP_ACCESS_PAGES,
        IOMMU_TEST_OP_ACCESS_RW,
        IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
        IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
        IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
        IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
        IOMMU_TEST_OP_DIRTY,
        IOMMU_TEST_OP_MD_CHECK_IOTLB,
        IOMMU_TEST_OP_TRIGGER_IOPF,
        IOMMU_TEST_OP_DEV_CHECK_CACHE,
        IOMMU_TEST_OP_TRIGGER_VEVENT,
        IOMMU_TEST_OP_PASID_ATTACH,
        IOMMU_TEST_OP_PASID_REPLACE,
        IOMMU_TEST_OP_PASID_DETACH,
        IOMMU_TEST_OP_PASID_CHECK_HWPT,
        IOMMU_TEST_OP_DMABUF_GET,
        IOMMU_TEST_OP_DMABUF_REVOKE,
        MOCK_IOMMUPT_DEFAULT,
        MOCK_IOMMUPT_HUGE,
        MOCK_APERTURE_START,
        MOCK_APERTURE_LAST,
        MOCK_PAGE_SIZE,
        MOCK_HUGE_PAGE_SIZE,
        MOCK_FLAGS_ACCESS_WRITE,
        MOCK_FLAGS_ACCESS_SYZ,
        MOCK_ACCESS_RW_WRITE,
        MOCK_ACCESS_RW_SLOW_PATH,
        MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
        MOCK_FLAGS_DEVICE_NO_DIRTY,
        MOCK_FLAGS_DEVICE_PASID,
        MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
        MOCK_NESTED_DOMAIN_IOTLB_NUM,
        MOCK_DEV_CACHE_ID_MAX,
        MOCK_DEV_CACHE_NUM,
        IOMMU_TEST_PASID_RESERVED,
        MOCK_PASID_WIDTH,
        IOMMU_HW_INFO_TYPE_SELFTEST,
        IOMMU_HW_INFO_SELFTEST_REGVAL,
        IOMMU_HWPT_DATA_SELFTEST,
        IOMMU_TEST_IOTLB_DEFAULT,
        IOMMU_TEST_DEV_CACHE_DEFAULT,
        IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
        IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
        IOMMU_TEST_INVALIDATE_FLAG_ALL,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
        IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
        IOMMU_VEVENTQ_TYPE_SELFTEST,
        IOMMU_HW_QUEUE_TYPE_SELFTEST,
        IOMMU_TEST_HW_QUEUE_MAX,
    );

    // ---- VFIO ---------------------------------------------------------------
    c_struct!(c, "vfio_info_cap_header" => VfioInfoCapHeader { id, version, next });
    c_struct!(c, "vfio_iommu_type1_info" => VfioIommuType1Info {
        argsz, flags, iova_pgsizes, cap_offset, pad
    });
    c_struct!(c, "vfio_iova_range" => VfioIovaRange { start, end });
    c_struct!(c, "vfio_iommu_type1_info_cap_iova_range" => VfioIommuType1InfoCapIovaRange {
        header, nr_iovas, reserved
    });
    c.push(
        "offsetof vfio_iommu_type1_info_cap_iova_range.iova_ranges",
        "offsetof(struct vfio_iommu_type1_info_cap_iova_range, iova_ranges)",
        size_of::<VfioIommuType1InfoCapIovaRange>(),
    );
    c_struct!(c, "vfio_iommu_type1_info_cap_migration" => VfioIommuType1InfoCapMigration {
        header, flags, pgsize_bitmap, max_dirty_bitmap_size
    });
    c_struct!(c, "vfio_iommu_type1_info_dma_avail" => VfioIommuType1InfoDmaAvail { header, avail });
    c_struct!(c, "vfio_iommu_type1_dma_map" => VfioIommuType1DmaMap {
        argsz, flags, vaddr, iova, size
    });
    c_struct!(c, "vfio_bitmap" => VfioBitmap { pgsize, size, data });
    c_struct!(c, "vfio_iommu_type1_dma_unmap" => VfioIommuType1DmaUnmap {
        argsz, flags, iova, size
    });
    c.push(
        "offsetof vfio_iommu_type1_dma_unmap.data",
        "offsetof(struct vfio_iommu_type1_dma_unmap, data)",
        size_of::<VfioIommuType1DmaUnmap>(),
    );
    c_struct!(c, "vfio_iommu_type1_dirty_bitmap" => VfioIommuType1DirtyBitmap { argsz, flags });
    c.push(
        "offsetof vfio_iommu_type1_dirty_bitmap.data",
        "offsetof(struct vfio_iommu_type1_dirty_bitmap, data)",
        size_of::<VfioIommuType1DirtyBitmap>(),
    );
    c_struct!(c, "vfio_iommu_type1_dirty_bitmap_get" => VfioIommuType1DirtyBitmapGet {
        iova, size, bitmap
    });

    c_consts!(
        c,
        VFIO_API_VERSION,
        VFIO_TYPE1_IOMMU,
        VFIO_SPAPR_TCE_IOMMU,
        VFIO_TYPE1v2_IOMMU,
        VFIO_DMA_CC_IOMMU,
        VFIO_EEH,
        VFIO_RESERVED_TYPE1_NESTING_IOMMU = "__VFIO_RESERVED_TYPE1_NESTING_IOMMU",
        VFIO_SPAPR_TCE_v2_IOMMU,
        VFIO_NOIOMMU_IOMMU,
        VFIO_UNMAP_ALL,
        VFIO_UPDATE_VADDR,
        VFIO_TYPE,
        VFIO_BASE,
        VFIO_GET_API_VERSION,
        VFIO_CHECK_EXTENSION,
        VFIO_SET_IOMMU,
        VFIO_IOMMU_GET_INFO,
        VFIO_IOMMU_MAP_DMA,
        VFIO_IOMMU_UNMAP_DMA,
        VFIO_IOMMU_ENABLE,
        VFIO_IOMMU_DISABLE,
        VFIO_IOMMU_DIRTY_PAGES,
        VFIO_IOMMU_INFO_PGSIZES,
        VFIO_IOMMU_INFO_CAPS,
        VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
        VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
        VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
        VFIO_DMA_MAP_FLAG_READ,
        VFIO_DMA_MAP_FLAG_WRITE,
        VFIO_DMA_MAP_FLAG_VADDR,
        VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
        VFIO_DMA_UNMAP_FLAG_ALL,
        VFIO_DMA_UNMAP_FLAG_VADDR,
        VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
        VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
        VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    );

    // ---- the dispatcher's command table vs the kernel's ---------------------
    // Last field is the one named by the kernel's size table.
    c_cmd!(c, IOMMU_DESTROY, "iommu_destroy", "id");
    c_cmd!(c, IOMMU_IOAS_ALLOC, "iommu_ioas_alloc", "out_ioas_id");
    c_cmd!(c, IOMMU_IOAS_ALLOW_IOVAS, "iommu_ioas_allow_iovas", "allowed_iovas");
    c_cmd!(c, IOMMU_IOAS_COPY, "iommu_ioas_copy", "src_iova");
    c_cmd!(c, IOMMU_IOAS_IOVA_RANGES, "iommu_ioas_iova_ranges", "out_iova_alignment");
    c_cmd!(c, IOMMU_IOAS_MAP, "iommu_ioas_map", "iova");
    c_cmd!(c, IOMMU_IOAS_UNMAP, "iommu_ioas_unmap", "length");
    c_cmd!(c, IOMMU_OPTION, "iommu_option", "val64");
    c_cmd!(c, IOMMU_VFIO_IOAS, "iommu_vfio_ioas", "__reserved");
    c_cmd!(c, IOMMU_HWPT_ALLOC, "iommu_hwpt_alloc", "__reserved");
    c_cmd!(c, IOMMU_GET_HW_INFO, "iommu_hw_info", "__reserved");
    c_cmd!(c, IOMMU_HWPT_SET_DIRTY_TRACKING, "iommu_hwpt_set_dirty_tracking", "__reserved");
    c_cmd!(c, IOMMU_HWPT_GET_DIRTY_BITMAP, "iommu_hwpt_get_dirty_bitmap", "data");
    c_cmd!(c, IOMMU_HWPT_INVALIDATE, "iommu_hwpt_invalidate", "__reserved");
    c_cmd!(c, IOMMU_FAULT_QUEUE_ALLOC, "iommu_fault_alloc", "out_fault_fd");
    c_cmd!(c, IOMMU_IOAS_MAP_FILE, "iommu_ioas_map_file", "iova");
    c_cmd!(c, IOMMU_VIOMMU_ALLOC, "iommu_viommu_alloc", "out_viommu_id");
    c_cmd!(c, IOMMU_VDEVICE_ALLOC, "iommu_vdevice_alloc", "virt_id");
    c_cmd!(c, IOMMU_IOAS_CHANGE_PROCESS, "iommu_ioas_change_process", "__reserved");
    c_cmd!(c, IOMMU_VEVENTQ_ALLOC, "iommu_veventq_alloc", "out_veventq_fd");
    c_cmd!(c, IOMMU_HW_QUEUE_ALLOC, "iommu_hw_queue_alloc", "length");
    c_cmd!(c, IOMMU_TEST_CMD, "iommu_test_cmd", "last");
    c.push("cmd table rows", "22", IOMMUFD_CMDS.len());

    c
}

fn headers_dir() -> PathBuf {
    match std::env::var_os("UIOMMU_LINUX_HEADERS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/linux-7.2"),
    }
}

fn c_program(checks: &Checks) -> String {
    let mut src = String::from(
        "#include <stddef.h>\n\
         #include <stdio.h>\n\
         #include <linux/types.h>\n\
         #include <linux/ioctl.h>\n\
         #include <linux/iommufd.h>\n\
         #include <linux/vfio.h>\n\
         #include \"iommufd_test.h\"\n\
         int main(void)\n{\n",
    );
    for e in &checks.0 {
        writeln!(src, "\tprintf(\"%s %llu\\n\", \"{}\", (unsigned long long)({}));", e.label, e.c_expr).unwrap();
    }
    src.push_str("\treturn 0;\n}\n");
    src
}

#[test]
fn layouts_and_constants_match_c_headers() {
    let checks = build_checks();

    // Labels must be unique so a mismatch report is unambiguous.
    let mut labels: Vec<&str> = checks.0.iter().map(|e| e.label.as_str()).collect();
    labels.sort_unstable();
    for w in labels.windows(2) {
        assert_ne!(w[0], w[1], "duplicate check label");
    }

    let root = headers_dir();
    let uapi_inc = root.join("usr/include");
    let test_inc = root.join("drivers/iommu/iommufd");
    if !uapi_inc.join("linux/iommufd.h").is_file() || !test_inc.join("iommufd_test.h").is_file() {
        eprintln!("SKIP c_layout: Linux 7.2 headers not found under {} (set UIOMMU_LINUX_HEADERS)", root.display());
        return;
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let c_file = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c_file, c_program(&checks)).unwrap();

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = match Command::new(&cc)
        .arg("-std=gnu11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&uapi_inc)
        .arg("-I")
        .arg(&test_inc)
        .arg("-o")
        .arg(&exe)
        .arg(&c_file)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP c_layout: cannot run C compiler `{cc}`: {e}");
            return;
        }
    };
    assert!(out.status.success(), "compiling {} failed:\n{}", c_file.display(), String::from_utf8_lossy(&out.stderr));

    let run = Command::new(&exe).output().expect("run C layout program");
    assert!(run.status.success(), "C layout program failed");
    let c_text = String::from_utf8(run.stdout).unwrap();
    let c_lines: Vec<&str> = c_text.lines().collect();
    let rust_lines: Vec<String> = checks.0.iter().map(|e| format!("{} {}", e.label, e.rust)).collect();

    assert_eq!(c_lines.len(), rust_lines.len(), "line count differs");
    let mismatches: Vec<String> = c_lines
        .iter()
        .zip(&rust_lines)
        .filter(|(c, r)| *c != *r)
        .map(|(c, r)| format!("  C:    {c}\n  Rust: {r}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} values differ from the C headers:\n{}",
        mismatches.len(),
        rust_lines.len(),
        mismatches.join("\n")
    );
    eprintln!("c_layout: {} values match the C headers", rust_lines.len());
}

//! Human-readable decoding of iommufd ioctls, for `uiommu trace` (an strace for iommufd).
//!
//! Pure functions: given the ioctl number, the bytes of the command structure before and
//! after the call and the result, [`describe`] returns one line such as
//!
//! ```text
//! IOMMU_IOAS_MAP(ioas_id=2, flags=FIXED_IOVA|WRITEABLE|READABLE, user_va=0x7f3a1c000000, length=0x40000, iova=0x400000) = 0
//! IOMMU_IOAS_ALLOC(flags=0) = 0 {out_ioas_id=2}
//! IOMMU_DESTROY(id=7) = -1 EBUSY (Device or resource busy)
//! ```
//!
//! Inputs are decoded from the bytes before the call; outputs (in braces) from the bytes
//! after it, only when the call succeeded. A structure shorter than the decoder's reads as
//! zero-filled (the size-extensible convention). [`Summary`] accumulates the per-ioctl
//! table printed at exit.

use crate::iommufd::*;
use crate::test::*;
use crate::vfio;
use std::fmt::Write as _;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `T` from the start of `b`, zero-filled if `b` is short.
fn get<T: FromBytes + IntoBytes + KnownLayout + Immutable>(b: &[u8]) -> T {
    let mut v = T::new_zeroed();
    let n = b.len().min(core::mem::size_of::<T>());
    v.as_mut_bytes()[..n].copy_from_slice(&b[..n]);
    v
}

/// The C macro name of an ioctl the iommufd file answers (iommufd, self-test and VFIO
/// type1 container commands).
pub fn ioctl_name(cmd: u32) -> Option<&'static str> {
    if let Some(i) = crate::cmd_info(crate::ioc_nr(cmd)).filter(|i| i.ioctl == cmd) {
        return Some(i.name);
    }
    Some(match cmd {
        vfio::VFIO_GET_API_VERSION => "VFIO_GET_API_VERSION",
        vfio::VFIO_CHECK_EXTENSION => "VFIO_CHECK_EXTENSION",
        vfio::VFIO_SET_IOMMU => "VFIO_SET_IOMMU",
        vfio::VFIO_IOMMU_GET_INFO => "VFIO_IOMMU_GET_INFO",
        vfio::VFIO_IOMMU_MAP_DMA => "VFIO_IOMMU_MAP_DMA",
        vfio::VFIO_IOMMU_UNMAP_DMA => "VFIO_IOMMU_UNMAP_DMA",
        vfio::VFIO_IOMMU_ENABLE => "VFIO_IOMMU_ENABLE",
        vfio::VFIO_IOMMU_DISABLE => "VFIO_IOMMU_DISABLE",
        vfio::VFIO_IOMMU_DIRTY_PAGES => "VFIO_IOMMU_DIRTY_PAGES",
        _ => return None,
    })
}

/// Whether `describe` decodes a structure for `cmd` (iommufd and self-test commands: their
/// argument starts with a `u32 size`). A tracer snapshots `min(size, 4096)` bytes for these.
pub fn has_sized_arg(cmd: u32) -> bool {
    crate::cmd_info(crate::ioc_nr(cmd)).is_some_and(|i| i.ioctl == cmd)
}

/// Symbolic name and description of a Linux errno.
pub fn errno_name(e: i32) -> (&'static str, &'static str) {
    match e {
        1 => ("EPERM", "Operation not permitted"),
        2 => ("ENOENT", "No such file or directory"),
        3 => ("ESRCH", "No such process"),
        5 => ("EIO", "Input/output error"),
        6 => ("ENXIO", "No such device or address"),
        7 => ("E2BIG", "Argument list too long"),
        9 => ("EBADF", "Bad file descriptor"),
        11 => ("EAGAIN", "Resource temporarily unavailable"),
        12 => ("ENOMEM", "Cannot allocate memory"),
        13 => ("EACCES", "Permission denied"),
        14 => ("EFAULT", "Bad address"),
        16 => ("EBUSY", "Device or resource busy"),
        17 => ("EEXIST", "File exists"),
        19 => ("ENODEV", "No such device"),
        22 => ("EINVAL", "Invalid argument"),
        25 => ("ENOTTY", "Inappropriate ioctl for device"),
        28 => ("ENOSPC", "No space left on device"),
        29 => ("ESPIPE", "Illegal seek"),
        34 => ("ERANGE", "Numerical result out of range"),
        35 => ("EDEADLK", "Resource deadlock avoided"),
        52 => ("EBADE", "Invalid exchange"),
        75 => ("EOVERFLOW", "Value too large for defined data type"),
        77 => ("EBADFD", "File descriptor in bad state"),
        90 => ("EMSGSIZE", "Message too long"),
        95 => ("EOPNOTSUPP", "Operation not supported"),
        98 => ("EADDRINUSE", "Address already in use"),
        _ => ("E?", "Unknown error"),
    }
}

/// A duration for humans: `850ns`, `12.3us`, `4.56ms`, `1.234s`.
pub fn format_duration(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

/// Field list builder.
#[derive(Default)]
struct F(String);

impl F {
    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push_str(", ");
        }
    }
    fn dec(&mut self, k: &str, v: impl Into<u64>) -> &mut Self {
        self.sep();
        let _ = write!(self.0, "{k}={}", v.into());
        self
    }
    fn sdec(&mut self, k: &str, v: i64) -> &mut Self {
        self.sep();
        let _ = write!(self.0, "{k}={v}");
        self
    }
    fn hex(&mut self, k: &str, v: impl Into<u64>) -> &mut Self {
        self.sep();
        let _ = write!(self.0, "{k}={:#x}", v.into());
        self
    }
    fn name(&mut self, k: &str, v: u32, names: &[(u32, &str)]) -> &mut Self {
        self.sep();
        match names.iter().find(|(n, _)| *n == v) {
            Some((_, s)) => {
                let _ = write!(self.0, "{k}={s}");
            }
            None => {
                let _ = write!(self.0, "{k}={v:#x}");
            }
        }
        self
    }
    fn flags(&mut self, k: &str, v: u64, names: &[(u64, &str)]) -> &mut Self {
        self.sep();
        let _ = write!(self.0, "{k}={}", flag_names(v, names));
        self
    }
}

/// `A|B|0x40` for the set bits of `v`, `0` for none.
fn flag_names(v: u64, names: &[(u64, &str)]) -> String {
    if v == 0 {
        return "0".into();
    }
    let mut parts = Vec::new();
    let mut rest = v;
    for &(bit, n) in names {
        if v & bit == bit && bit != 0 {
            parts.push(n.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

const MAP_FLAGS: &[(u64, &str)] = &[
    (IOMMU_IOAS_MAP_FIXED_IOVA as u64, "FIXED_IOVA"),
    (IOMMU_IOAS_MAP_WRITEABLE as u64, "WRITEABLE"),
    (IOMMU_IOAS_MAP_READABLE as u64, "READABLE"),
];
const HWPT_FLAGS: &[(u64, &str)] = &[
    (IOMMU_HWPT_ALLOC_NEST_PARENT as u64, "NEST_PARENT"),
    (IOMMU_HWPT_ALLOC_DIRTY_TRACKING as u64, "DIRTY_TRACKING"),
    (IOMMU_HWPT_FAULT_ID_VALID as u64, "FAULT_ID_VALID"),
    (IOMMU_HWPT_ALLOC_PASID as u64, "PASID"),
];
const HW_CAPS: &[(u64, &str)] = &[
    (IOMMU_HW_CAP_DIRTY_TRACKING, "DIRTY_TRACKING"),
    (IOMMU_HW_CAP_PCI_PASID_EXEC, "PCI_PASID_EXEC"),
    (IOMMU_HW_CAP_PCI_PASID_PRIV, "PCI_PASID_PRIV"),
    (IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED, "PCI_ATS_NOT_SUPPORTED"),
];
const HWPT_DATA: &[(u32, &str)] = &[
    (IOMMU_HWPT_DATA_NONE, "NONE"),
    (IOMMU_HWPT_DATA_VTD_S1, "VTD_S1"),
    (IOMMU_HWPT_DATA_ARM_SMMUV3, "ARM_SMMUV3"),
    (IOMMU_HWPT_DATA_AMD_GUEST, "AMD_GUEST"),
    (IOMMU_HWPT_DATA_SELFTEST, "SELFTEST"),
];
const TEST_OPS: &[(u32, &str)] = &[
    (IOMMU_TEST_OP_ADD_RESERVED, "ADD_RESERVED"),
    (IOMMU_TEST_OP_MOCK_DOMAIN, "MOCK_DOMAIN"),
    (IOMMU_TEST_OP_MD_CHECK_MAP, "MD_CHECK_MAP"),
    (IOMMU_TEST_OP_MD_CHECK_REFS, "MD_CHECK_REFS"),
    (IOMMU_TEST_OP_CREATE_ACCESS, "CREATE_ACCESS"),
    (IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, "DESTROY_ACCESS_PAGES"),
    (IOMMU_TEST_OP_ACCESS_PAGES, "ACCESS_PAGES"),
    (IOMMU_TEST_OP_ACCESS_RW, "ACCESS_RW"),
    (IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, "SET_TEMP_MEMORY_LIMIT"),
    (IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, "MOCK_DOMAIN_REPLACE"),
    (IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, "ACCESS_REPLACE_IOAS"),
    (IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, "MOCK_DOMAIN_FLAGS"),
    (IOMMU_TEST_OP_DIRTY, "DIRTY"),
    (IOMMU_TEST_OP_MD_CHECK_IOTLB, "MD_CHECK_IOTLB"),
    (IOMMU_TEST_OP_TRIGGER_IOPF, "TRIGGER_IOPF"),
    (IOMMU_TEST_OP_DEV_CHECK_CACHE, "DEV_CHECK_CACHE"),
    (IOMMU_TEST_OP_TRIGGER_VEVENT, "TRIGGER_VEVENT"),
    (IOMMU_TEST_OP_PASID_ATTACH, "PASID_ATTACH"),
    (IOMMU_TEST_OP_PASID_REPLACE, "PASID_REPLACE"),
    (IOMMU_TEST_OP_PASID_DETACH, "PASID_DETACH"),
    (IOMMU_TEST_OP_PASID_CHECK_HWPT, "PASID_CHECK_HWPT"),
    (IOMMU_TEST_OP_DMABUF_GET, "DMABUF_GET"),
    (IOMMU_TEST_OP_DMABUF_REVOKE, "DMABUF_REVOKE"),
];

/// (inputs, outputs) of the self-test command.
fn test_cmd(b: &IommuTestCmd, a: &IommuTestCmd, i: &mut F, o: &mut F) {
    i.name("op", b.op, TEST_OPS).dec("id", b.id);
    match b.op {
        IOMMU_TEST_OP_ADD_RESERVED => {
            let p: TestAddReserved = b.payload();
            i.hex("start", p.start).hex("length", p.length);
        }
        IOMMU_TEST_OP_MOCK_DOMAIN | IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS => {
            if b.op == IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS {
                i.hex("dev_flags", b.payload::<TestMockDomainFlags>().dev_flags);
            }
            let p: TestMockDomain = a.payload();
            o.dec("out_stdev_id", p.out_stdev_id).dec("out_hwpt_id", p.out_hwpt_id).dec("out_idev_id", p.out_idev_id);
        }
        IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE => {
            i.dec("pt_id", b.payload::<TestMockDomainReplace>().pt_id);
            o.dec("pt_id", a.payload::<TestMockDomainReplace>().pt_id);
        }
        IOMMU_TEST_OP_MD_CHECK_MAP => {
            let p: TestCheckMap = b.payload();
            i.hex("iova", p.iova).hex("length", p.length).hex("uptr", p.uptr);
        }
        IOMMU_TEST_OP_MD_CHECK_REFS => {
            let p: TestCheckRefs = b.payload();
            i.hex("uptr", p.uptr).hex("length", p.length).dec("refs", p.refs);
        }
        IOMMU_TEST_OP_CREATE_ACCESS => {
            i.hex("flags", b.payload::<TestCreateAccess>().flags);
            o.dec("out_access_fd", a.payload::<TestCreateAccess>().out_access_fd);
        }
        IOMMU_TEST_OP_DESTROY_ACCESS_PAGES => {
            i.dec("access_pages_id", b.payload::<TestDestroyAccessPages>().access_pages_id);
        }
        IOMMU_TEST_OP_ACCESS_PAGES => {
            let p: TestAccessPages = b.payload();
            i.hex("flags", p.flags).hex("iova", p.iova).hex("length", p.length).hex("uptr", p.uptr);
            o.dec("out_access_pages_id", a.payload::<TestAccessPages>().out_access_pages_id);
        }
        IOMMU_TEST_OP_ACCESS_RW => {
            let p: TestAccessRw = b.payload();
            let fl = [(MOCK_ACCESS_RW_WRITE as u64, "WRITE"), (MOCK_ACCESS_RW_SLOW_PATH as u64, "SLOW_PATH")];
            i.hex("iova", p.iova).hex("length", p.length).hex("uptr", p.uptr).flags("flags", p.flags as u64, &fl);
        }
        IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT => {
            i.dec("limit", b.payload::<TestMemoryLimit>().limit);
        }
        IOMMU_TEST_OP_ACCESS_REPLACE_IOAS => {
            i.dec("ioas_id", b.payload::<TestAccessReplaceIoas>().ioas_id);
        }
        IOMMU_TEST_OP_DIRTY => {
            let p: TestDirty = b.payload();
            i.hex("iova", p.iova).hex("length", p.length).hex("page_size", p.page_size).hex("uptr", p.uptr);
            o.dec("out_nr_dirty", a.payload::<TestDirty>().out_nr_dirty);
        }
        IOMMU_TEST_OP_TRIGGER_IOPF => {
            let p: TestTriggerIopf = b.payload();
            i.dec("dev_id", p.dev_id)
                .dec("pasid", p.pasid)
                .dec("grpid", p.grpid)
                .hex("perm", p.perm)
                .hex("addr", p.addr);
        }
        IOMMU_TEST_OP_MD_CHECK_IOTLB => {
            let p: TestCheckIotlb = b.payload();
            i.dec("iotlb_id", p.id).hex("iotlb", p.iotlb);
        }
        IOMMU_TEST_OP_DEV_CHECK_CACHE => {
            let p: TestCheckDevCache = b.payload();
            i.dec("cache_id", p.id).hex("cache", p.cache);
        }
        IOMMU_TEST_OP_TRIGGER_VEVENT => {
            i.dec("dev_id", b.payload::<TestTriggerVevent>().dev_id);
        }
        IOMMU_TEST_OP_PASID_ATTACH | IOMMU_TEST_OP_PASID_REPLACE => {
            let p: TestPasidAttach = b.payload();
            i.dec("pasid", p.pasid).dec("pt_id", p.pt_id);
            o.dec("pt_id", a.payload::<TestPasidAttach>().pt_id);
        }
        IOMMU_TEST_OP_PASID_DETACH => {
            i.dec("pasid", b.payload::<TestPasidDetach>().pasid);
        }
        IOMMU_TEST_OP_PASID_CHECK_HWPT => {
            let p: TestPasidCheck = b.payload();
            i.dec("pasid", p.pasid).dec("hwpt_id", p.hwpt_id);
        }
        IOMMU_TEST_OP_DMABUF_GET => {
            let p: TestDmabufGet = b.payload();
            i.hex("length", p.length).hex("open_flags", p.open_flags);
        }
        IOMMU_TEST_OP_DMABUF_REVOKE => {
            let p: TestDmabufRevoke = b.payload();
            i.sdec("dmabuf_fd", p.dmabuf_fd as i64).dec("revoked", p.revoked);
        }
        _ => {}
    }
}

/// (inputs, outputs) of command `cmd`.
fn fields(cmd: u32, b: &[u8], a: &[u8]) -> (String, String) {
    let (mut i, mut o) = (F::default(), F::default());
    match cmd {
        IOMMU_DESTROY => {
            i.dec("id", get::<IommuDestroy>(b).id);
        }
        IOMMU_IOAS_ALLOC => {
            i.hex("flags", get::<IommuIoasAlloc>(b).flags);
            o.dec("out_ioas_id", get::<IommuIoasAlloc>(a).out_ioas_id);
        }
        IOMMU_IOAS_ALLOW_IOVAS => {
            let c: IommuIoasAllowIovas = get(b);
            i.dec("ioas_id", c.ioas_id).dec("num_iovas", c.num_iovas).hex("allowed_iovas", c.allowed_iovas);
        }
        IOMMU_IOAS_COPY => {
            let c: IommuIoasCopy = get(b);
            i.flags("flags", c.flags as u64, MAP_FLAGS)
                .dec("dst_ioas_id", c.dst_ioas_id)
                .dec("src_ioas_id", c.src_ioas_id);
            i.hex("length", c.length).hex("src_iova", c.src_iova);
            if c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 {
                i.hex("dst_iova", c.dst_iova);
            } else {
                o.hex("dst_iova", get::<IommuIoasCopy>(a).dst_iova);
            }
        }
        IOMMU_IOAS_IOVA_RANGES => {
            let c: IommuIoasIovaRanges = get(b);
            i.dec("ioas_id", c.ioas_id).dec("num_iovas", c.num_iovas).hex("allowed_iovas", c.allowed_iovas);
            let r: IommuIoasIovaRanges = get(a);
            o.dec("num_iovas", r.num_iovas).hex("out_iova_alignment", r.out_iova_alignment);
        }
        IOMMU_IOAS_MAP => {
            let c: IommuIoasMap = get(b);
            i.dec("ioas_id", c.ioas_id).flags("flags", c.flags as u64, MAP_FLAGS);
            i.hex("user_va", c.user_va).hex("length", c.length);
            if c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 {
                i.hex("iova", c.iova);
            } else {
                o.hex("iova", get::<IommuIoasMap>(a).iova);
            }
        }
        IOMMU_IOAS_MAP_FILE => {
            let c: IommuIoasMapFile = get(b);
            i.dec("ioas_id", c.ioas_id).flags("flags", c.flags as u64, MAP_FLAGS).sdec("fd", c.fd as i64);
            i.hex("start", c.start).hex("length", c.length);
            if c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 {
                i.hex("iova", c.iova);
            } else {
                o.hex("iova", get::<IommuIoasMapFile>(a).iova);
            }
        }
        IOMMU_IOAS_UNMAP => {
            let c: IommuIoasUnmap = get(b);
            i.dec("ioas_id", c.ioas_id).hex("iova", c.iova).hex("length", c.length);
            o.hex("length", get::<IommuIoasUnmap>(a).length);
        }
        IOMMU_OPTION => {
            let c: IommuOption = get(b);
            let ids = [(IOMMU_OPTION_RLIMIT_MODE, "RLIMIT_MODE"), (IOMMU_OPTION_HUGE_PAGES, "HUGE_PAGES")];
            let ops = [(IOMMU_OPTION_OP_SET as u32, "SET"), (IOMMU_OPTION_OP_GET as u32, "GET")];
            i.name("option_id", c.option_id, &ids).name("op", c.op as u32, &ops).dec("object_id", c.object_id);
            if c.op == IOMMU_OPTION_OP_SET {
                i.dec("val64", c.val64);
            } else {
                o.dec("val64", get::<IommuOption>(a).val64);
            }
        }
        IOMMU_VFIO_IOAS => {
            let c: IommuVfioIoas = get(b);
            let ops = [
                (IOMMU_VFIO_IOAS_GET as u32, "GET"),
                (IOMMU_VFIO_IOAS_SET as u32, "SET"),
                (IOMMU_VFIO_IOAS_CLEAR as u32, "CLEAR"),
            ];
            i.name("op", c.op as u32, &ops);
            if c.op == IOMMU_VFIO_IOAS_GET {
                o.dec("ioas_id", get::<IommuVfioIoas>(a).ioas_id);
            } else {
                i.dec("ioas_id", c.ioas_id);
            }
        }
        IOMMU_HWPT_ALLOC => {
            let c: IommuHwptAlloc = get(b);
            i.flags("flags", c.flags as u64, HWPT_FLAGS).dec("dev_id", c.dev_id).dec("pt_id", c.pt_id);
            i.name("data_type", c.data_type, HWPT_DATA).dec("data_len", c.data_len);
            if c.flags & IOMMU_HWPT_FAULT_ID_VALID != 0 {
                i.dec("fault_id", c.fault_id);
            }
            o.dec("out_hwpt_id", get::<IommuHwptAlloc>(a).out_hwpt_id);
        }
        IOMMU_GET_HW_INFO => {
            let c: IommuHwInfo = get(b);
            i.hex("flags", c.flags).dec("dev_id", c.dev_id).dec("data_len", c.data_len);
            let r: IommuHwInfo = get(a);
            o.dec("data_len", r.data_len).hex("out_data_type", r.out_data_type);
            o.dec("out_max_pasid_log2", r.out_max_pasid_log2).flags("out_capabilities", r.out_capabilities, HW_CAPS);
        }
        IOMMU_HWPT_SET_DIRTY_TRACKING => {
            let c: IommuHwptSetDirtyTracking = get(b);
            i.dec("hwpt_id", c.hwpt_id).flags(
                "flags",
                c.flags as u64,
                &[(IOMMU_HWPT_DIRTY_TRACKING_ENABLE as u64, "ENABLE")],
            );
        }
        IOMMU_HWPT_GET_DIRTY_BITMAP => {
            let c: IommuHwptGetDirtyBitmap = get(b);
            i.dec("hwpt_id", c.hwpt_id).flags(
                "flags",
                c.flags as u64,
                &[(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR as u64, "NO_CLEAR")],
            );
            i.hex("iova", c.iova).hex("length", c.length).hex("page_size", c.page_size).hex("data", c.data);
        }
        IOMMU_HWPT_INVALIDATE => {
            let c: IommuHwptInvalidate = get(b);
            i.dec("hwpt_id", c.hwpt_id)
                .hex("data_type", c.data_type)
                .dec("entry_len", c.entry_len)
                .dec("entry_num", c.entry_num);
            o.dec("entry_num", get::<IommuHwptInvalidate>(a).entry_num);
        }
        IOMMU_FAULT_QUEUE_ALLOC => {
            i.hex("flags", get::<IommuFaultAlloc>(b).flags);
            let r: IommuFaultAlloc = get(a);
            o.dec("out_fault_id", r.out_fault_id).dec("out_fault_fd", r.out_fault_fd);
        }
        IOMMU_VIOMMU_ALLOC => {
            let c: IommuViommuAlloc = get(b);
            i.hex("flags", c.flags).hex("type", c.type_).dec("dev_id", c.dev_id).dec("hwpt_id", c.hwpt_id);
            i.dec("data_len", c.data_len);
            o.dec("out_viommu_id", get::<IommuViommuAlloc>(a).out_viommu_id);
        }
        IOMMU_VDEVICE_ALLOC => {
            let c: IommuVdeviceAlloc = get(b);
            i.dec("viommu_id", c.viommu_id).dec("dev_id", c.dev_id).hex("virt_id", c.virt_id);
            o.dec("out_vdevice_id", get::<IommuVdeviceAlloc>(a).out_vdevice_id);
        }
        IOMMU_IOAS_CHANGE_PROCESS => {}
        IOMMU_VEVENTQ_ALLOC => {
            let c: IommuVeventqAlloc = get(b);
            i.hex("flags", c.flags)
                .dec("viommu_id", c.viommu_id)
                .hex("type", c.type_)
                .dec("veventq_depth", c.veventq_depth);
            let r: IommuVeventqAlloc = get(a);
            o.dec("out_veventq_id", r.out_veventq_id).dec("out_veventq_fd", r.out_veventq_fd);
        }
        IOMMU_HW_QUEUE_ALLOC => {
            let c: IommuHwQueueAlloc = get(b);
            i.hex("flags", c.flags).dec("viommu_id", c.viommu_id).hex("type", c.type_).dec("index", c.index);
            i.hex("nesting_parent_iova", c.nesting_parent_iova).hex("length", c.length);
            o.dec("out_hw_queue_id", get::<IommuHwQueueAlloc>(a).out_hw_queue_id);
        }
        IOMMU_TEST_CMD => test_cmd(&get(b), &get(a), &mut i, &mut o),
        _ => {}
    }
    (i.0, o.0)
}

/// One trace line for an ioctl on an iommufd: `NAME(inputs) = result {outputs}`.
///
/// `before`/`after` are the command structure's bytes (as many as could be read; empty for
/// commands without a sized structure, or when the pointer was unreadable) and `result` the
/// return value or the (positive) errno.
pub fn describe(cmd: u32, before: &[u8], after: &[u8], result: Result<i64, i32>) -> String {
    let mut line = String::new();
    match ioctl_name(cmd) {
        Some(n) => line.push_str(n),
        None => {
            let _ = write!(line, "ioctl({cmd:#x})");
        }
    }
    let (ins, outs) = if has_sized_arg(cmd) && before.len() >= 4 {
        fields(cmd, before, after)
    } else if has_sized_arg(cmd) {
        ("<unreadable>".to_string(), String::new())
    } else {
        (String::new(), String::new())
    };
    let _ = write!(line, "({ins}) = ");
    match result {
        Ok(v) => {
            let _ = write!(line, "{v}");
            if !outs.is_empty() {
                let _ = write!(line, " {{{outs}}}");
            }
        }
        Err(e) => {
            let (n, d) = errno_name(e);
            let _ = write!(line, "-1 {n} ({d})");
        }
    }
    line
}

/// Slots of a fixed-size per-ioctl counter table (for tracers that count across processes
/// in shared memory): 0..=32 are commands 0x80..=0xa0, 33..=50 the VFIO container commands,
/// [`SUMMARY_SLOTS`]` - 1` everything else.
pub const SUMMARY_SLOTS: usize = 52;

/// The counter slot of `cmd` (see [`SUMMARY_SLOTS`]).
pub fn summary_slot(cmd: u32) -> usize {
    let nr = crate::ioc_nr(cmd);
    if has_sized_arg(cmd) {
        return (nr - IOMMUFD_CMD_BASE) as usize;
    }
    if ioctl_name(cmd).is_some() && (vfio::VFIO_BASE..vfio::VFIO_BASE + 18).contains(&nr) {
        return 33 + (nr - vfio::VFIO_BASE) as usize;
    }
    SUMMARY_SLOTS - 1
}

/// The name shown for a counter slot.
pub fn summary_slot_name(slot: usize) -> &'static str {
    match slot {
        0..=32 => crate::cmd_info(IOMMUFD_CMD_BASE + slot as u8).map_or("?", |i| i.name),
        33..=50 => ioctl_name(crate::io(vfio::VFIO_TYPE, vfio::VFIO_BASE + (slot - 33) as u8)).unwrap_or("?"),
        _ => "other",
    }
}

/// Count, errors and time of one ioctl.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryRow {
    /// The ioctl's name.
    pub name: String,
    /// Number of calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Time spent in the calls, in nanoseconds.
    pub total_ns: u64,
}

/// Per-ioctl totals of a trace (`strace -c` style).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    rows: Vec<SummaryRow>,
}

impl Summary {
    /// An empty summary.
    pub fn new() -> Summary {
        Summary::default()
    }

    /// Count one call of `cmd` that took `ns` nanoseconds.
    pub fn record(&mut self, cmd: u32, failed: bool, ns: u64) {
        let name = ioctl_name(cmd).map_or_else(|| format!("ioctl({cmd:#x})"), str::to_string);
        self.add(SummaryRow { name, calls: 1, errors: failed as u64, total_ns: ns });
    }

    /// Add a row (merged with an existing row of the same name).
    pub fn add(&mut self, row: SummaryRow) {
        match self.rows.iter_mut().find(|r| r.name == row.name) {
            Some(r) => {
                r.calls += row.calls;
                r.errors += row.errors;
                r.total_ns += row.total_ns;
            }
            None => self.rows.push(row),
        }
    }

    /// The rows, by decreasing total time.
    pub fn rows(&self) -> Vec<SummaryRow> {
        let mut v: Vec<_> = self.rows.iter().filter(|r| r.calls > 0).cloned().collect();
        v.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then_with(|| a.name.cmp(&b.name)));
        v
    }

    /// Total number of calls.
    pub fn calls(&self) -> u64 {
        self.rows.iter().map(|r| r.calls).sum()
    }

    /// The table: one row per ioctl (by decreasing total time) and a total row.
    pub fn render(&self) -> String {
        let rows = self.rows();
        let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
        let mut s = String::new();
        let _ = writeln!(s, "{:>6} {:>7} {:>7} {:>10} {:>10}  ioctl", "% time", "calls", "errors", "total", "avg");
        let _ = writeln!(s, "{:->6} {:->7} {:->7} {:->10} {:->10}  {:-<w$}", "", "", "", "", "", "");
        let total_ns: u64 = rows.iter().map(|r| r.total_ns).sum();
        for r in &rows {
            let pct = if total_ns == 0 { 0.0 } else { r.total_ns as f64 * 100.0 / total_ns as f64 };
            let avg = r.total_ns / r.calls.max(1);
            let _ = writeln!(
                s,
                "{pct:>6.2} {:>7} {:>7} {:>10} {:>10}  {}",
                r.calls,
                r.errors,
                format_duration(r.total_ns),
                format_duration(avg),
                r.name
            );
        }
        let _ = writeln!(s, "{:->6} {:->7} {:->7} {:->10} {:->10}  {:-<w$}", "", "", "", "", "", "");
        let calls: u64 = rows.iter().map(|r| r.calls).sum();
        let errors: u64 = rows.iter().map(|r| r.errors).sum();
        let _ = writeln!(
            s,
            "{:>6} {calls:>7} {errors:>7} {:>10} {:>10}  total",
            "100.00",
            format_duration(total_ns),
            format_duration(total_ns / calls.max(1)),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IommufdCmd;

    #[test]
    fn map_and_unmap_lines() {
        let mut m = IommuIoasMap::new_sized();
        m.ioas_id = 2;
        m.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
        m.user_va = 0x7f00_0000_0000;
        m.length = 0x40000;
        m.iova = 0x400000;
        let l = describe(IOMMU_IOAS_MAP, m.as_bytes(), m.as_bytes(), Ok(0));
        assert_eq!(
            l,
            "IOMMU_IOAS_MAP(ioas_id=2, flags=FIXED_IOVA|WRITEABLE|READABLE, user_va=0x7f0000000000, \
             length=0x40000, iova=0x400000) = 0"
        );
        // An allocated IOVA is an output.
        m.flags = IOMMU_IOAS_MAP_READABLE;
        let mut after = m;
        after.iova = 0x1234000;
        let l = describe(IOMMU_IOAS_MAP, m.as_bytes(), after.as_bytes(), Ok(0));
        assert!(l.ends_with("length=0x40000) = 0 {iova=0x1234000}"), "{l}");

        let u = IommuIoasUnmap { ioas_id: 2, iova: 0x400000, length: 0x40000, ..IommuIoasUnmap::new_sized() };
        let l = describe(IOMMU_IOAS_UNMAP, u.as_bytes(), u.as_bytes(), Err(2));
        assert_eq!(
            l,
            "IOMMU_IOAS_UNMAP(ioas_id=2, iova=0x400000, length=0x40000) = -1 ENOENT (No such file or directory)"
        );
        let l = describe(IOMMU_IOAS_UNMAP, u.as_bytes(), u.as_bytes(), Ok(0));
        assert!(l.ends_with("= 0 {length=0x40000}"), "{l}");
    }

    #[test]
    fn other_commands() {
        let a = IommuIoasAlloc { out_ioas_id: 3, ..IommuIoasAlloc::new_sized() };
        assert_eq!(
            describe(IOMMU_IOAS_ALLOC, IommuIoasAlloc::new_sized().as_bytes(), a.as_bytes(), Ok(0)),
            "IOMMU_IOAS_ALLOC(flags=0x0) = 0 {out_ioas_id=3}"
        );
        // Short structure: zero-filled; unreadable: marked.
        assert_eq!(
            describe(IOMMU_DESTROY, &8u32.to_ne_bytes(), &[], Err(16)),
            "IOMMU_DESTROY(id=0) = -1 EBUSY (Device or resource busy)"
        );
        assert_eq!(describe(IOMMU_DESTROY, &[], &[], Err(14)), "IOMMU_DESTROY(<unreadable>) = -1 EFAULT (Bad address)");
        let t = IommuTestCmd::new(IOMMU_TEST_OP_MOCK_DOMAIN, 1, &TestMockDomain::default());
        let r = IommuTestCmd::new(
            IOMMU_TEST_OP_MOCK_DOMAIN,
            1,
            &TestMockDomain { out_stdev_id: 2, out_hwpt_id: 3, out_idev_id: 4 },
        );
        assert_eq!(
            describe(IOMMU_TEST_CMD, t.as_bytes(), r.as_bytes(), Ok(0)),
            "IOMMU_TEST_CMD(op=MOCK_DOMAIN, id=1) = 0 {out_stdev_id=2, out_hwpt_id=3, out_idev_id=4}"
        );
        let h = IommuHwptAlloc {
            flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING | 0x100,
            dev_id: 4,
            pt_id: 1,
            ..IommuHwptAlloc::new_sized()
        };
        let l = describe(IOMMU_HWPT_ALLOC, h.as_bytes(), h.as_bytes(), Err(95));
        assert!(l.starts_with("IOMMU_HWPT_ALLOC(flags=DIRTY_TRACKING|0x100, dev_id=4, pt_id=1, data_type=NONE"), "{l}");
        assert!(l.ends_with("= -1 EOPNOTSUPP (Operation not supported)"), "{l}");
        assert_eq!(describe(crate::vfio::VFIO_GET_API_VERSION, &[], &[], Ok(0)), "VFIO_GET_API_VERSION() = 0");
        assert_eq!(describe(0x1234, &[], &[], Err(25)), "ioctl(0x1234)() = -1 ENOTTY (Inappropriate ioctl for device)");
        // A number whose nr is iommufd's but whose type differs is not iommufd's.
        assert_eq!(ioctl_name(0x4185), None);
    }

    #[test]
    fn every_command_has_a_slot_and_name() {
        for info in crate::IOMMUFD_CMDS {
            let s = summary_slot(info.ioctl);
            assert!(s < SUMMARY_SLOTS - 1);
            assert_eq!(summary_slot_name(s), info.name);
            // Decoding a zeroed structure never panics.
            let z = vec![0u8; info.size];
            let _ = describe(info.ioctl, &z, &z, Ok(0));
        }
        assert_eq!(summary_slot_name(summary_slot(crate::vfio::VFIO_IOMMU_MAP_DMA)), "VFIO_IOMMU_MAP_DMA");
        assert_eq!(summary_slot(0x1234), SUMMARY_SLOTS - 1);
        assert_eq!(summary_slot_name(SUMMARY_SLOTS - 1), "other");
        for op in 0..30 {
            let t = IommuTestCmd::new(op, 1, &TestDirty::default());
            let _ = describe(IOMMU_TEST_CMD, t.as_bytes(), t.as_bytes(), Ok(0));
        }
    }

    #[test]
    fn summary_table() {
        let mut s = Summary::new();
        s.record(IOMMU_IOAS_MAP, false, 3000);
        s.record(IOMMU_IOAS_MAP, true, 1000);
        s.record(IOMMU_IOAS_UNMAP, false, 2000);
        assert_eq!(s.calls(), 3);
        let rows = s.rows();
        assert_eq!(rows[0], SummaryRow { name: "IOMMU_IOAS_MAP".into(), calls: 2, errors: 1, total_ns: 4000 });
        let t = s.render();
        assert!(t.contains("IOMMU_IOAS_UNMAP") && t.contains("total"), "{t}");
        let map_line = t.lines().find(|l| l.ends_with("IOMMU_IOAS_MAP")).unwrap();
        assert!(map_line.contains(" 66.67 ") && map_line.contains("4.0us"), "{map_line}");
        assert_eq!(format_duration(850), "850ns");
        assert_eq!(format_duration(12_340), "12.3us");
        assert_eq!(format_duration(4_560_000), "4.56ms");
        assert_eq!(format_duration(1_234_000_000), "1.234s");
    }
}

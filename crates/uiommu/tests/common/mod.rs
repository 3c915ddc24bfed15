//! The API test suite, written once and run against both backends: in-process in
//! `tests/in_process.rs`, and against `/dev/iommu` under `uiommu run` in
//! `tests/kernel_backend.rs`.
#![allow(dead_code)]

use uiommu::*;

/// An IOVA inside the mock IOMMU's aperture (`MOCK_APERTURE_START` = 16 MiB).
pub const BASE: Iova = Iova(0x100_0000);
const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
/// `IOMMU_HW_INFO_TYPE_SELFTEST`.
const SELFTEST_HW_INFO: u32 = 0xfeed_beef;

/// A case of the suite.
pub type Case = fn(&Iommufd);

/// Every case: name and body. Each gets a fresh iommufd.
pub const CASES: &[(&str, Case)] = &[
    ("ioas_ranges", ioas_ranges),
    ("map_unmap", map_unmap),
    ("map_errors", map_errors),
    ("access_rw", access_rw),
    ("read_only_mapping", read_only_mapping),
    ("device_attach_hw_info", device_attach_hw_info),
    ("device_dma", device_dma),
    ("dirty_tracking", dirty_tracking),
    ("copy_between_ioas", copy_between_ioas),
    ("allowed_and_reserved", allowed_and_reserved),
    ("fault_queue", fault_queue),
    ("access_replace_ioas", access_replace_ioas),
    ("drop_in_any_order", drop_in_any_order),
];

/// Run every case on iommufds from `open`, checking the engine's invariants after each.
pub fn run_all(open: &dyn Fn() -> Iommufd) {
    for (name, case) in CASES {
        eprintln!("case {name} ...");
        let fd = open();
        case(&fd);
        if let Some(r) = fd.check_engine_invariants() {
            r.unwrap_or_else(|e| panic!("{name}: engine invariant broken: {e}"));
        }
        eprintln!("case {name} ok");
    }
}

fn ioas_ranges(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    assert!(ioas.id().0 > 0);
    let r = ioas.iova_ranges().unwrap();
    assert!(!r.ranges.is_empty());
    assert!(r.alignment >= 1 && r.alignment.is_power_of_two());
    // A mock device narrows the usable space to its aperture.
    let _dev = Device::mock(&ioas).unwrap();
    let r = ioas.iova_ranges().unwrap();
    assert_eq!(r.ranges, vec![IovaRange { start: Iova(1 << 24), last: Iova((1 << 31) - 1) }]);
    ioas.set_huge_pages(false).unwrap();
}

fn map_unmap(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(64 << 10).unwrap();
    ioas.map_at(BASE, &mem, 0, 16 << 10, RW).unwrap();
    let auto = ioas.map(&mem, 16 << 10, 16 << 10, MapFlags::READ).unwrap();
    assert_ne!(auto, BASE);
    let maps = ioas.mappings();
    assert_eq!(maps.len(), 2);
    assert!(maps.iter().any(|m| m.iova == BASE && m.len == 16 << 10 && m.host_address == mem.host_address()));
    let t = ioas.translate(auto.unchecked_add(5)).unwrap();
    assert_eq!((t.iova, t.host_address, t.flags), (auto, mem.host_address() + (16 << 10), MapFlags::READ));
    assert_eq!(ioas.translate(Iova(0x10)), None);
    // Overlap.
    assert_eq!(ioas.map_at(BASE, &mem, 0, 4096, RW), Err(Error::Exists));
    assert_eq!(ioas.unmap(BASE, 16 << 10), Ok(16 << 10));
    assert_eq!(ioas.unmap(BASE, 16 << 10), Err(Error::NotFound));
    assert_eq!(Error::NotFound.errno(), libc::ENOENT);
    assert_eq!(ioas.unmap_all(), Ok(16 << 10));
    assert!(ioas.mappings().is_empty());
}

fn map_errors(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(8192).unwrap();
    // Outside the memory: refused before any ioctl.
    assert_eq!(ioas.map_at(BASE, &mem, 4096, 8192, RW), Err(Error::BadAddress));
    // Zero length, no permissions, unaligned IOVA: EINVAL.
    let e = ioas.map_at(BASE, &mem, 0, 0, RW).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(ioas.map_at(BASE, &mem, 0, 4096, MapFlags::empty()), Err(Error::InvalidArgument));
    // With a device attached, IOVAs must be aligned to the IOMMU page size.
    let _dev = Device::mock(&ioas).unwrap();
    assert_eq!(ioas.map_at(Iova(BASE.0 + 1), &mem, 0, 4096, RW), Err(Error::InvalidArgument));
    // An IOVA range that wraps: EOVERFLOW.
    assert_eq!(ioas.map_at(Iova(u64::MAX - 4095), &mem, 0, 8192, RW), Err(Error::Overflow));
    // Unmapped host memory: EFAULT from the pin.
    // SAFETY: nothing is mapped at 4096, so nothing can be reached through the mapping
    // (and the call fails).
    let e = unsafe { ioas.map_raw(4096, 4096, Some(BASE), RW) }.unwrap_err();
    assert_eq!(e, Error::BadAddress);
    assert!(ioas.mappings().is_empty());
}

fn access_rw(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(16 << 10).unwrap();
    ioas.map_at(BASE, &mem, 0, 16 << 10, RW).unwrap();
    let acc = Access::new(&ioas).unwrap();
    // Device writes, CPU sees; across a page boundary.
    acc.write(Iova(BASE.0 + 4090), b"across pages").unwrap();
    let mut b = [0u8; 12];
    mem.read_slice(&mut b, 4090).unwrap();
    assert_eq!(&b, b"across pages");
    // CPU writes, device sees.
    mem.write_slice(b"from the cpu", 9000).unwrap();
    acc.read(Iova(BASE.0 + 9000), &mut b).unwrap();
    assert_eq!(&b, b"from the cpu");
    // Not mapped.
    assert!(acc.read(Iova(BASE.0 + (16 << 10)), &mut b).is_err());
    ioas.unmap_all().unwrap();
    assert!(acc.read(BASE, &mut b).is_err());
}

fn read_only_mapping(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(4096).unwrap();
    mem.write_slice(b"ro", 0).unwrap();
    ioas.map_at(BASE, &mem, 0, 4096, MapFlags::READ).unwrap();
    let acc = Access::new(&ioas).unwrap();
    let mut b = [0u8; 2];
    acc.read(BASE, &mut b).unwrap();
    assert_eq!(&b, b"ro");
    assert_eq!(acc.write(BASE, b"xx"), Err(Error::NotPermitted));
    let dev = Device::mock(&ioas).unwrap();
    if fd.supports_device_dma() {
        dev.dma_read(BASE, &mut b).unwrap();
        assert_eq!(dev.dma_write(BASE, b"xx"), Err(Error::DmaFault { iova: BASE }));
    }
    mem.read_slice(&mut b, 0).unwrap();
    assert_eq!(&b, b"ro");
}

fn device_attach_hw_info(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let dev = Device::mock(&ioas).unwrap();
    assert!(dev.id().0 > 0 && dev.hwpt_id().0 > 0);
    assert_ne!(dev.id(), dev.hwpt_id());
    let info = dev.hw_info().unwrap();
    assert_eq!(info.data_type, SELFTEST_HW_INFO);
    assert!(info.capabilities.contains(HwCaps::DIRTY_TRACKING));
    let nd = Device::mock_with_flags(&ioas, DeviceFlags::NO_DIRTY).unwrap();
    assert!(!nd.hw_info().unwrap().capabilities.contains(HwCaps::DIRTY_TRACKING));
    // Both devices share the IOAS's automatic domain only if compatible; either way each
    // has one.
    assert!(nd.hwpt_id().0 > 0);
}

fn device_dma(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(8192).unwrap();
    ioas.map_at(BASE, &mem, 0, 8192, RW).unwrap();
    let dev = Device::mock(&ioas).unwrap();
    if !fd.supports_device_dma() {
        let e = dev.dma_write(BASE, b"x").unwrap_err();
        assert!(matches!(e, Error::Unsupported { backend: BackendKind::Kernel, .. }), "{e:?}");
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        return;
    }
    dev.dma_write(Iova(BASE.0 + 4000), b"dma across a page").unwrap();
    let mut b = [0u8; 17];
    mem.read_slice(&mut b, 4000).unwrap();
    assert_eq!(&b, b"dma across a page");
    mem.write_slice(b"cpu", 100).unwrap();
    dev.dma_read(Iova(BASE.0 + 100), &mut b[..3]).unwrap();
    assert_eq!(&b[..3], b"cpu");
    // Past the end of the mapping: an IO page fault, at the first unmapped byte's access.
    assert!(matches!(dev.dma_read(Iova(BASE.0 + 8190), &mut b[..4]), Err(Error::DmaFault { .. })));
    ioas.unmap(BASE, 8192).unwrap();
    assert_eq!(dev.dma_read(BASE, &mut b), Err(Error::DmaFault { iova: BASE }));
}

fn dirty_tracking(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    // Dirty state is kept per IOPTE: with large pages one write would dirty a whole leaf.
    ioas.set_huge_pages(false).unwrap();
    let mem = HostMemory::new(64 << 10).unwrap();
    ioas.map_at(BASE, &mem, 0, 64 << 10, RW).unwrap();
    let dev = Device::mock(&ioas).unwrap();
    let hwpt = HwPagetable::new(&dev, &ioas, HwptFlags::DIRTY_TRACKING).unwrap();
    assert_eq!(dev.replace(&hwpt).unwrap(), hwpt.id());
    assert_eq!(dev.hwpt_id(), hwpt.id());
    assert_eq!(hwpt.ioas().id(), ioas.id());
    hwpt.set_dirty_tracking(true).unwrap();
    let clean = hwpt.dirty_bitmap(BASE, 64 << 10, 4096, false).unwrap();
    assert_eq!(clean.count(), 0);
    let (a, b) = (Iova(BASE.0 + 4096), Iova(BASE.0 + 9 * 4096 + 10));
    if fd.supports_device_dma() {
        dev.dma_write(a, b"x").unwrap();
        dev.dma_write(b, b"y").unwrap();
    } else {
        hwpt.mark_dirty(a, 4096, 4096).unwrap();
        hwpt.mark_dirty(b.align_down(4096), 4096, 4096).unwrap();
    }
    let bm = hwpt.dirty_bitmap(BASE, 64 << 10, 4096, true).unwrap();
    assert_eq!(bm.dirty_pages().collect::<Vec<_>>(), vec![a, b.align_down(4096)]);
    assert!(bm.is_dirty(b) && !bm.is_dirty(BASE));
    // Cleared by the read.
    assert_eq!(hwpt.dirty_bitmap(BASE, 64 << 10, 4096, false).unwrap().count(), 0);
    hwpt.set_dirty_tracking(false).unwrap();
    // An automatic domain cannot track dirty pages.
    let plain = Device::mock(&Ioas::new(fd).unwrap()).unwrap();
    let auto = HwPagetable::new(&plain, &ioas, HwptFlags::empty()).unwrap();
    assert!(auto.set_dirty_tracking(true).is_err());
    assert_eq!(hwpt.dirty_bitmap(BASE, 4096, 3000, false).unwrap_err(), Error::InvalidArgument);
}

fn copy_between_ioas(fd: &Iommufd) {
    let a = Ioas::new(fd).unwrap();
    let b = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(16 << 10).unwrap();
    mem.write_slice(b"shared pages", 8192).unwrap();
    a.map_at(BASE, &mem, 0, 16 << 10, RW).unwrap();
    let dst = Iova(0x200_0000);
    assert_eq!(b.copy_from(&a, BASE, 16 << 10, Some(dst), MapFlags::READ).unwrap(), dst);
    let m = b.translate(Iova(dst.0 + 8192)).unwrap();
    assert_eq!(m.host_address, mem.host_address());
    assert_eq!(m.flags, MapFlags::READ);
    let acc = Access::new(&b).unwrap();
    let mut buf = [0u8; 12];
    acc.read(Iova(dst.0 + 8192), &mut buf).unwrap();
    assert_eq!(&buf, b"shared pages");
    // The copy outlives the source mapping.
    a.unmap_all().unwrap();
    acc.read(Iova(dst.0 + 8192), &mut buf).unwrap();
    assert_eq!(&buf, b"shared pages");
}

fn allowed_and_reserved(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(8192).unwrap();
    let allowed = IovaRange::new(Iova(0x400_0000), 0x100_0000).unwrap();
    ioas.allow_iovas(&[allowed]).unwrap();
    // The allowed list steers the IOVA allocator (fixed IOVAs only avoid reserved ranges).
    let at = ioas.map(&mem, 0, 4096, RW).unwrap();
    assert!(allowed.contains(at));
    let at2 = ioas.map(&mem, 4096, 4096, RW).unwrap();
    assert!(allowed.contains(at2) && at2 != at);
    ioas.allow_iovas(&[]).unwrap();
    ioas.add_reserved(Iova(0x800_0000), 0x10_0000).unwrap();
    assert!(ioas.map_at(Iova(0x800_0000), &mem, 0, 4096, RW).is_err());
    assert!(ioas.iova_ranges().unwrap().ranges.iter().all(|r| !r.contains(Iova(0x800_0000))));
}

fn fault_queue(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let fq = FaultQueue::new(fd).unwrap();
    let dev = Device::mock(&ioas).unwrap();
    let hwpt = HwPagetable::with_fault_queue(&dev, &ioas, HwptFlags::empty(), &fq).unwrap();
    dev.replace(&hwpt).unwrap();
    assert!(fq.read().unwrap().is_empty());
    dev.inject_page_fault(None, Iova(0xdead_0000), FaultPerm::READ | FaultPerm::WRITE, 2).unwrap();
    let f = fq.read().unwrap();
    assert_eq!(f.len(), 1);
    let f = f[0];
    assert_eq!((f.device, f.pasid, f.group, f.addr), (dev.id(), None, 2, Iova(0xdead_0000)));
    assert_eq!(f.perm, FaultPerm::READ | FaultPerm::WRITE);
    assert!(f.last_page);
    fq.respond(&f, PageResponse::Success).unwrap();
    // Already answered.
    assert_eq!(fq.respond(&f, PageResponse::Invalid), Err(Error::InvalidArgument));
}

fn access_replace_ioas(fd: &Iommufd) {
    let a = Ioas::new(fd).unwrap();
    let b = Ioas::new(fd).unwrap();
    let (ma, mb) = (HostMemory::new(4096).unwrap(), HostMemory::new(4096).unwrap());
    ma.write_slice(b"A", 0).unwrap();
    mb.write_slice(b"B", 0).unwrap();
    a.map_at(BASE, &ma, 0, 4096, RW).unwrap();
    b.map_at(BASE, &mb, 0, 4096, RW).unwrap();
    let acc = Access::new(&a).unwrap();
    let mut c = [0u8];
    acc.read(BASE, &mut c).unwrap();
    assert_eq!(&c, b"A");
    acc.replace_ioas(&b).unwrap();
    drop(a);
    acc.read(BASE, &mut c).unwrap();
    assert_eq!(&c, b"B");
}

fn drop_in_any_order(fd: &Iommufd) {
    let ioas = Ioas::new(fd).unwrap();
    let mem = HostMemory::new(8192).unwrap();
    ioas.map_at(BASE, &mem, 0, 8192, RW).unwrap();
    let dev = Device::mock(&ioas).unwrap();
    let hwpt = HwPagetable::new(&dev, &ioas, HwptFlags::DIRTY_TRACKING).unwrap();
    let dev2 = Device::mock(&hwpt).unwrap();
    let acc = Access::new(&ioas).unwrap();
    let fq = FaultQueue::new(fd).unwrap();
    let ioas_id = ioas.id();
    // Dropping the IOAS, the memory and the HWPT handles first: the device and access keep
    // what they need.
    drop(ioas);
    drop(mem);
    drop(hwpt);
    let mut b = [0u8; 4];
    acc.read(BASE, &mut b).unwrap();
    drop(dev);
    drop(fq);
    drop(dev2);
    drop(acc);
    // Everything is gone: a new IOAS reuses the lowest free id.
    let again = Ioas::new(fd).unwrap();
    assert!(again.id() <= ioas_id);
}

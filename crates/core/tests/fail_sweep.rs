//! Fault-injection sweeps (the engine-level counterpart of the kernel's `iommufd_fail_nth`):
//! every ioctl of realistic sequences runs with failure site 1, 2, … armed until it gets
//! through un-injected. After each injected failure the call must have returned an errno
//! and left objects, internal state, pins, accounting and descriptors exactly as they were
//! (see `H::sweep`); the un-injected run must then succeed.

mod common;
use common::*;
use uiommu_core::Errno;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use uiommu_uapi::vfio::*;
use zerocopy::IntoBytes;

const P: u64 = 4096;
const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/// Sweep one call and require that it passed at least one failure site.
fn sw<T>(h: &H, what: &str, call: impl FnMut(&H) -> Result<T, Errno>) -> T {
    let (v, sites) = h.sweep(what, call);
    eprintln!("{what}: {sites} failure sites");
    assert!(sites >= 1, "{what}: no failure site reached");
    v
}

/// Sweep a call that must not have any failure site (destroy paths cannot unwind).
fn sw0<T>(h: &H, what: &str, call: impl FnMut(&H) -> Result<T, Errno>) -> T {
    let (v, sites) = h.sweep(what, call);
    assert_eq!(sites, 0, "{what}: a destroy path has failure sites");
    v
}

fn ioas_alloc(h: &H) -> Result<u32, Errno> {
    Ok(h.call(IOMMU_IOAS_ALLOC, IommuIoasAlloc::default())?.out_ioas_id)
}

fn map_file(h: &H, ioas: u32, fd: i32, start: u64, len: u64, iova: Option<u64>) -> Result<u64, Errno> {
    let flags = RW | if iova.is_some() { IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 };
    let c = IommuIoasMapFile {
        flags,
        ioas_id: ioas,
        fd,
        start,
        length: len,
        iova: iova.unwrap_or(0),
        ..Default::default()
    };
    Ok(h.call(IOMMU_IOAS_MAP_FILE, c)?.iova)
}

fn mock_domain_flags(h: &H, pt: u32, flags: u32) -> Result<(u32, u32, u32), Errno> {
    let p = TestMockDomainFlags { dev_flags: flags, ..Default::default() };
    let (_, p) = h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt, &p)?;
    Ok((p.out_stdev_id, p.out_hwpt_id, p.out_idev_id))
}

fn hwpt_alloc(h: &H, dev: u32, pt: u32, flags: u32, fault: u32, data: Option<IommuHwptSelftest>) -> Result<u32, Errno> {
    let mut c = IommuHwptAlloc { flags, dev_id: dev, pt_id: pt, fault_id: fault, ..Default::default() };
    if let Some(d) = data {
        c.data_type = IOMMU_HWPT_DATA_SELFTEST;
        c.data_len = 8;
        c.data_uptr = h.put(0x2000, d.as_bytes());
    }
    Ok(h.call(IOMMU_HWPT_ALLOC, c)?.out_hwpt_id)
}

fn create_access(h: &H, ioas: u32, flags: u32) -> Result<i32, Errno> {
    let (_, p) = h.test_cmd(IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess { flags, ..Default::default() })?;
    Ok(p.out_access_fd as i32)
}

fn access_pages(h: &H, fd: i32, iova: u64, len: u64, uptr: u64, flags: u32) -> Result<u32, Errno> {
    let p = TestAccessPages { flags, iova, length: len, uptr, ..Default::default() };
    let (_, p) = h.test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, fd as u32, &p)?;
    Ok(p.out_access_pages_id)
}

fn access_rw(h: &H, fd: i32, iova: u64, len: u64, flags: u32) -> Result<i32, Errno> {
    let p = TestAccessRw { iova, length: len, uptr: h.scratch + 0x4000, flags, pad: 0 };
    h.test_cmd(IOMMU_TEST_OP_ACCESS_RW, fd as u32, &p).map(|r| r.0)
}

fn vfio_map(h: &H, va: u64, iova: u64, len: u64) -> Result<i32, Errno> {
    let mut m = VfioIommuType1DmaMap {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: va,
        iova,
        size: len,
    };
    h.ioctl(VFIO_IOMMU_MAP_DMA, &mut m)
}

fn vfio_unmap(h: &H, iova: u64, len: u64, flags: u32) -> Result<u64, Errno> {
    let mut u = VfioIommuType1DmaUnmap { argsz: 24, flags, iova, size: len };
    h.ioctl(VFIO_IOMMU_UNMAP_DMA, &mut u)?;
    Ok(u.size)
}

/// `ioas.c` without domains (the kernel's `basic` case and more), charged to an
/// unprivileged user.
#[test]
fn sweep_ioas_without_domains() {
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 256 * P, true);
    let ioas = sw(&h, "IOAS_ALLOC", ioas_alloc);
    sw(&h, "IOAS_IOVA_RANGES", |h| {
        let c = IommuIoasIovaRanges {
            ioas_id: ioas,
            num_iovas: 4,
            allowed_iovas: h.scratch + 0x1000,
            ..Default::default()
        };
        h.call(IOMMU_IOAS_IOVA_RANGES, c)
    });
    let ranges = [
        IommuIovaRange { start: 16 << 10, last: (64 << 20) - 1 },
        IommuIovaRange { start: 1 << 32, last: (1 << 33) - 1 },
    ];
    sw(&h, "IOAS_ALLOW_IOVAS", |h| {
        let c = IommuIoasAllowIovas {
            ioas_id: ioas,
            num_iovas: 2,
            allowed_iovas: h.put(0x1000, ranges.as_bytes()),
            ..Default::default()
        };
        h.call(IOMMU_IOAS_ALLOW_IOVAS, c)
    });
    let iova = sw(&h, "IOAS_MAP", |h| h.map(ioas, buf, 128 * P, None));
    sw(&h, "IOAS_MAP fixed", |h| h.map(ioas, buf + 128 * P, 16 * P, Some(1 << 32)));
    sw(&h, "IOAS_MAP fixed, adjacent", |h| h.map(ioas, buf + 160 * P, 8 * P, Some((1 << 32) + 16 * P)));
    let copy = sw(&h, "IOAS_COPY", |h| h.copy(ioas, ioas, iova + P, 8 * P, None));
    let copy2 = sw(&h, "IOAS_COPY across two areas", |h| h.copy(ioas, ioas, (1 << 32) + 8 * P, 16 * P, None));
    sw(&h, "IOAS_UNMAP across the copies", |h| h.unmap(ioas, copy2, 16 * P));
    sw(&h, "IOAS_OPTION huge pages", |h| {
        let c = IommuOption {
            option_id: IOMMU_OPTION_HUGE_PAGES,
            op: IOMMU_OPTION_OP_SET,
            object_id: ioas,
            val64: 0,
            ..Default::default()
        };
        h.call(IOMMU_OPTION, c)
    });
    let fd = h.sim.memfd(64 * P);
    sw(&h, "IOAS_MAP_FILE", |h| map_file(h, ioas, fd, 4 * P, 16 * P, None));
    assert_eq!(sw(&h, "IOAS_UNMAP", |h| h.unmap(ioas, copy, 8 * P)), 8 * P);
    sw(&h, "IOAS_UNMAP all", |h| h.unmap(ioas, 0, u64::MAX));
    sw0(&h, "IOMMU_DESTROY", |h| h.destroy(ioas));
    assert_eq!(h.ctx.object_count(), 0);
}

/// `iopt_area_fill_domains()`/`iopt_area_fill_domain()` and domain joins: maps, file maps
/// and copies into IOASes with one and two domains, and domains joining populated IOASes.
#[test]
fn sweep_domains() {
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 256 * P, true);
    let fd = h.sim.memfd(64 * P);
    let ioas = ioas_alloc(&h).unwrap();
    let ioas2 = ioas_alloc(&h).unwrap();
    let (stdev, _, _) = sw(&h, "MOCK_DOMAIN", |h| h.mock_domain(ioas));
    let iova = sw(&h, "IOAS_MAP with a domain", |h| h.map(ioas, buf, 64 * P, None));
    sw(&h, "IOAS_MAP_FILE with a domain", |h| map_file(h, ioas, fd, 0, 32 * P, None));
    let (stdev2, _, _) = sw(&h, "MOCK_DOMAIN joining a populated IOAS", |h| h.mock_domain(ioas));
    sw(&h, "IOAS_MAP with two domains", |h| h.map(ioas, buf + 64 * P, 8 * P + 2048, None));
    sw(&h, "MOCK_DOMAIN on a second IOAS", |h| h.mock_domain(ioas2));
    let c = sw(&h, "IOAS_COPY into a domain", |h| h.copy(ioas2, ioas, iova, 16 * P, None));
    sw(&h, "IOAS_UNMAP copy", |h| h.unmap(ioas2, c, 16 * P));
    sw0(&h, "IOMMU_DESTROY stdev", |h| h.destroy(stdev));
    sw0(&h, "IOMMU_DESTROY stdev2", |h| h.destroy(stdev2));
    let huge = IommuHwptSelftest { iotlb: 0, pagetable_type: MOCK_IOMMUPT_HUGE };
    let (_, _, dev) = h.mock_domain(ioas2).unwrap();
    h.map(ioas2, buf, 16 * P, None).unwrap();
    sw(&h, "HWPT_ALLOC huge pages joining a populated IOAS", |h| hwpt_alloc(h, dev, ioas2, 0, 0, Some(huge)));
    sw(&h, "MOCK_DOMAIN again", |h| h.mock_domain(ioas));
    h.ctx.check_invariants().unwrap();
    let H { m, ctx, sim, .. } = h;
    drop(ctx);
    drop(sim);
    assert_eq!(m.total_pins(), 0);
    assert_eq!(m.user_locked_pages(1000), 0);
}

/// Accesses: creation, ACCESS_RW (fast and slow path), ACCESS_PAGES with and without a
/// domain, replacing the IOAS.
#[test]
fn sweep_accesses() {
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 256 * P, true);
    let ioas = ioas_alloc(&h).unwrap();
    let ioas2 = ioas_alloc(&h).unwrap();
    let iova = h.map(ioas, buf, 128 * P, Some(MOCK_APERTURE_START)).unwrap();
    let iova2 = h.map(ioas2, buf, 16 * P, None).unwrap();
    let rw_fd = sw(&h, "CREATE_ACCESS", |h| create_access(h, ioas, 0));
    sw(&h, "ACCESS_RW read", |h| access_rw(h, rw_fd, iova + 100, 64, 0));
    sw(&h, "ACCESS_RW write", |h| access_rw(h, rw_fd, iova + 100, 64, MOCK_ACCESS_RW_WRITE));
    sw(&h, "ACCESS_RW slow path across pages", |h| access_rw(h, rw_fd, iova + P - 8, 3 * P, MOCK_ACCESS_RW_SLOW_PATH));
    let pin_fd =
        sw(&h, "CREATE_ACCESS needs pin", |h| create_access(h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES));
    let item = sw(&h, "ACCESS_PAGES", |h| access_pages(h, pin_fd, iova, 32 * P, buf, 0));
    sw(&h, "ACCESS_PAGES overlapping, for write", |h| {
        access_pages(h, pin_fd, iova + 16 * P, 32 * P, 0, MOCK_FLAGS_ACCESS_WRITE)
    });
    sw0(&h, "DESTROY_ACCESS_PAGES", |h| {
        h.test_cmd(IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, pin_fd as u32, &TestDestroyAccessPages { access_pages_id: item })
    });
    let (stdev, _, _) = sw(&h, "MOCK_DOMAIN under access pins", |h| h.mock_domain(ioas));
    sw(&h, "ACCESS_PAGES with a domain", |h| access_pages(h, pin_fd, iova + 64 * P, 8 * P, buf + 64 * P, 0));
    sw(&h, "IOAS_UNMAP with access pins", |h| h.unmap(ioas, iova, 128 * P));
    sw(&h, "ACCESS_REPLACE_IOAS", |h| {
        h.test_cmd(IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, pin_fd as u32, &TestAccessReplaceIoas { ioas_id: ioas2 })
    });
    sw(&h, "ACCESS_PAGES after replace", |h| access_pages(h, pin_fd, iova2, 4 * P, buf, 0));
    h.destroy(stdev).unwrap();
    h.sim.close(rw_fd);
    h.sim.close(pin_fd);
    h.ctx.check_invariants().unwrap();
    assert_eq!(h.ctx.object_count(), 2);
    h.unmap(ioas2, 0, u64::MAX).unwrap();
    assert_eq!(h.m.total_pins(), 0);
    assert_eq!(h.m.user_locked_pages(1000), 0);
}

/// `device.c`, HWPTs, vIOMMU objects and fault queues (the kernel's `device` case and more).
#[test]
fn sweep_devices_hwpts_viommu() {
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 64 * P, true);
    let ioas = ioas_alloc(&h).unwrap();
    let ioas2 = ioas_alloc(&h).unwrap();
    let iova = MOCK_APERTURE_START;
    h.map(ioas, buf, 16 * P, Some(iova)).unwrap();
    h.map(ioas2, buf, 16 * P, Some(iova)).unwrap();
    let (stdev, _, dev) = sw(&h, "MOCK_DOMAIN_FLAGS pasid", |h| mock_domain_flags(h, ioas, MOCK_FLAGS_DEVICE_PASID));
    sw(&h, "GET_HW_INFO", |h| {
        let c = IommuHwInfo { dev_id: dev, data_len: 8, data_uptr: h.scratch + 0x1000, ..Default::default() };
        h.call(IOMMU_GET_HW_INFO, c)
    });
    let hwpt = sw(&h, "HWPT_ALLOC pasid", |h| hwpt_alloc(h, dev, ioas, IOMMU_HWPT_ALLOC_PASID, 0, None));
    sw(&h, "MOCK_DOMAIN_REPLACE to an IOAS", |h| {
        h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: ioas2 })
    });
    sw(&h, "MOCK_DOMAIN_REPLACE to a HWPT", |h| {
        h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: hwpt })
    });
    let parent = sw(&h, "HWPT_ALLOC nest parent", |h| {
        hwpt_alloc(h, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID, 0, None)
    });
    let data = IommuViommuSelftest { in_data: 0xabcd, ..Default::default() };
    let viommu = sw(&h, "VIOMMU_ALLOC with an mmap region", |h| {
        let c = IommuViommuAlloc {
            type_: IOMMU_VIOMMU_TYPE_SELFTEST,
            dev_id: dev,
            hwpt_id: parent,
            data_len: 24,
            data_uptr: h.put(0x2000, data.as_bytes()),
            ..Default::default()
        };
        Ok(h.call(IOMMU_VIOMMU_ALLOC, c)?.out_viommu_id)
    });
    let vdev = sw(&h, "VDEVICE_ALLOC", |h| {
        let c = IommuVdeviceAlloc { viommu_id: viommu, dev_id: dev, virt_id: 0x99, ..Default::default() };
        Ok(h.call(IOMMU_VDEVICE_ALLOC, c)?.out_vdevice_id)
    });
    sw(&h, "HW_QUEUE_ALLOC", |h| {
        let c = IommuHwQueueAlloc {
            viommu_id: viommu,
            type_: IOMMU_HW_QUEUE_TYPE_SELFTEST,
            index: 0,
            nesting_parent_iova: iova,
            length: P,
            ..Default::default()
        };
        h.call(IOMMU_HW_QUEUE_ALLOC, c)
    });
    let fault = sw(&h, "FAULT_QUEUE_ALLOC", |h| h.call(IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc::default()));
    h.sim.close(fault.out_fault_fd as i32);
    let sel = IommuHwptSelftest { iotlb: IOMMU_TEST_IOTLB_DEFAULT, pagetable_type: 0 };
    let nested = sw(&h, "HWPT_ALLOC nested with a fault queue", |h| {
        hwpt_alloc(h, dev, parent, IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID, fault.out_fault_id, Some(sel))
    });
    let vnested =
        sw(&h, "HWPT_ALLOC nested on the vIOMMU", |h| hwpt_alloc(h, dev, viommu, IOMMU_HWPT_ALLOC_PASID, 0, Some(sel)));
    let q = sw(&h, "VEVENTQ_ALLOC", |h| {
        let c = IommuVeventqAlloc {
            viommu_id: viommu,
            type_: IOMMU_VEVENTQ_TYPE_SELFTEST,
            veventq_depth: 2,
            ..Default::default()
        };
        h.call(IOMMU_VEVENTQ_ALLOC, c)
    });
    sw(&h, "MOCK_DOMAIN_REPLACE to the vIOMMU nested HWPT", |h| {
        h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: vnested })
    });
    sw(&h, "TRIGGER_VEVENT", |h| h.test_cmd(IOMMU_TEST_OP_TRIGGER_VEVENT, 0, &TestTriggerVevent { dev_id: dev }));
    let inv = IommuViommuInvalidateSelftest { flags: 0, vdev_id: 0x99, cache_id: 1 };
    sw(&h, "HWPT_INVALIDATE on the vIOMMU", |h| {
        let c = IommuHwptInvalidate {
            hwpt_id: viommu,
            data_uptr: h.put(0x3000, inv.as_bytes()),
            data_type: IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
            entry_len: 12,
            entry_num: 1,
            ..Default::default()
        };
        h.call(IOMMU_HWPT_INVALIDATE, c)
    });
    let test_hwpt = sw(&h, "HWPT_ALLOC pasid again", |h| hwpt_alloc(h, dev, ioas, IOMMU_HWPT_ALLOC_PASID, 0, None));
    sw(&h, "PASID_ATTACH", |h| {
        h.test_cmd(IOMMU_TEST_OP_PASID_ATTACH, stdev, &TestPasidAttach { pasid: 200, pt_id: parent })
    });
    sw(&h, "PASID_REPLACE", |h| {
        h.test_cmd(IOMMU_TEST_OP_PASID_REPLACE, stdev, &TestPasidAttach { pasid: 200, pt_id: test_hwpt })
    });
    sw(&h, "PASID_ATTACH nested with a fault queue", |h| {
        h.test_cmd(IOMMU_TEST_OP_PASID_ATTACH, stdev, &TestPasidAttach { pasid: 300, pt_id: nested })
    });
    sw(&h, "TRIGGER_IOPF", |h| {
        h.test_cmd(
            IOMMU_TEST_OP_TRIGGER_IOPF,
            0,
            &TestTriggerIopf { dev_id: dev, pasid: 300, grpid: 1, perm: 1, addr: 0x1000 },
        )
    });
    sw(&h, "PASID_DETACH", |h| h.test_cmd(IOMMU_TEST_OP_PASID_DETACH, stdev, &TestPasidDetach { pasid: 200 }));
    // Dirty tracking on a dirty-capable HWPT of a second device.
    let (_, _, dev2) = h.mock_domain(ioas2).unwrap();
    let dirty =
        sw(&h, "HWPT_ALLOC dirty tracking", |h| hwpt_alloc(h, dev2, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 0, None));
    sw(&h, "HWPT_SET_DIRTY_TRACKING", |h| {
        let c =
            IommuHwptSetDirtyTracking { flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id: dirty, ..Default::default() };
        h.call(IOMMU_HWPT_SET_DIRTY_TRACKING, c)
    });
    sw(&h, "DIRTY", |h| {
        let p =
            TestDirty { iova, length: 16 * P, page_size: P, uptr: h.put(0x3000, &[0x55, 0x55]), ..Default::default() };
        h.test_cmd(IOMMU_TEST_OP_DIRTY, dirty, &p)
    });
    sw(&h, "HWPT_GET_DIRTY_BITMAP", |h| {
        let c = IommuHwptGetDirtyBitmap {
            hwpt_id: dirty,
            iova,
            length: 16 * P,
            page_size: P,
            data: h.put(0x3000, &[0, 0]),
            ..Default::default()
        };
        h.call(IOMMU_HWPT_GET_DIRTY_BITMAP, c)
    });
    h.sim.close(q.out_veventq_fd as i32);
    sw0(&h, "IOMMU_DESTROY vEVENTQ", |h| h.destroy(q.out_veventq_id));
    sw0(&h, "IOMMU_DESTROY vDEVICE", |h| h.destroy(vdev));
    sw(&h, "DMABUF_GET", |h| {
        h.test_cmd(IOMMU_TEST_OP_DMABUF_GET, 0, &TestDmabufGet { length: 4 * P as u32, open_flags: 0 })
    });
    h.ctx.check_invariants().unwrap();
    let H { m, ctx, sim, .. } = h;
    drop(ctx);
    for fd in sim.open_fds() {
        sim.close(fd);
    }
    assert_eq!(m.total_pins(), 0);
    assert_eq!(m.user_locked_pages(1000), 0);
}

/// dma-buf areas: map, join a domain, revoke.
#[test]
fn sweep_dmabuf() {
    let h = H::new();
    let ioas = ioas_alloc(&h).unwrap();
    let (r, _) =
        h.test_cmd(IOMMU_TEST_OP_DMABUF_GET, 0, &TestDmabufGet { length: 8 * P as u32, open_flags: 0 }).unwrap();
    let fd = r;
    sw(&h, "IOAS_MAP_FILE dma-buf", |h| map_file(h, ioas, fd, 0, 8 * P, Some(MOCK_APERTURE_START)));
    sw(&h, "MOCK_DOMAIN over a dma-buf area", |h| h.mock_domain(ioas));
    sw(&h, "IOAS_MAP_FILE dma-buf with a domain", |h| map_file(h, ioas, fd, 0, 4 * P, None));
    h.test_cmd(IOMMU_TEST_OP_DMABUF_REVOKE, 0, &TestDmabufRevoke { dmabuf_fd: fd, revoked: 1 }).unwrap();
    sw(&h, "MOCK_DOMAIN over a revoked area", |h| h.mock_domain(ioas));
    h.ctx.check_invariants().unwrap();
}

/// VFIO type1 compat: v1 splitting unmaps and MAP_DMA.
#[test]
fn sweep_vfio_compat() {
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 64 * P, true);
    let ioas = ioas_alloc(&h).unwrap();
    sw(&h, "IOMMU_VFIO_IOAS set", |h| {
        h.call(IOMMU_VFIO_IOAS, IommuVfioIoas { ioas_id: ioas, op: IOMMU_VFIO_IOAS_SET, ..Default::default() })
    });
    sw(&h, "VFIO_SET_IOMMU type1", |h| h.ctx.ioctl(&h.caller, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU as u64));
    let base = MOCK_APERTURE_START;
    sw(&h, "VFIO_IOMMU_MAP_DMA", |h| vfio_map(h, buf, base, 32 * P));
    assert_eq!(sw(&h, "VFIO_IOMMU_UNMAP_DMA middle (two cuts)", |h| vfio_unmap(h, base + 4 * P, 4 * P, 0)), 4 * P);
    sw(&h, "MOCK_DOMAIN on the compat IOAS", |h| h.mock_domain(ioas));
    assert_eq!(sw(&h, "VFIO_IOMMU_UNMAP_DMA with a domain", |h| vfio_unmap(h, base + 12 * P, 4 * P, 0)), 4 * P);
    assert_eq!(sw(&h, "VFIO_IOMMU_UNMAP_DMA tail (one cut)", |h| vfio_unmap(h, base + 28 * P, 4 * P, 0)), 4 * P);
    sw(&h, "VFIO_IOMMU_MAP_DMA with a domain", |h| vfio_map(h, buf + 32 * P, base + 4 * P, 4 * P));
    assert_eq!(sw(&h, "VFIO_IOMMU_UNMAP_DMA all", |h| vfio_unmap(h, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)), 24 * P);
    assert_eq!(h.m.total_pins(), 0);
}

/// A failing second cut of a VFIO v1 unmap leaves the first cut undone too.
#[test]
fn vfio_unmap_cuts_are_all_or_nothing() {
    let h = H::new();
    let buf = h.sim.mmap(PID, 64 * P, true);
    let ioas = ioas_alloc(&h).unwrap();
    h.call(IOMMU_VFIO_IOAS, IommuVfioIoas { ioas_id: ioas, op: IOMMU_VFIO_IOAS_SET, ..Default::default() }).unwrap();
    h.ctx.ioctl(&h.caller, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU as u64).unwrap();
    vfio_map(&h, buf, 1 << 20, 32 * P).unwrap();
    let before = h.state();
    // The cut after the range is page aligned, the one before it is not: EINVAL.
    assert_eq!(vfio_unmap(&h, (1 << 20) + 4 * P + 8, 4 * P - 8, 0), Err(Errno::EINVAL));
    assert_eq!(h.state(), before, "{}", snapshot_diff(&before.snapshot, &h.state().snapshot));
}

/// IOAS_CHANGE_PROCESS moves file-backed charges to the caller; every failure leaves
/// them where they were.
#[test]
fn sweep_change_process() {
    let h = H::unprivileged(64 << 20);
    let fd = h.sim.memfd(64 * P);
    let ioas = ioas_alloc(&h).unwrap();
    h.mock_domain(ioas).unwrap();
    map_file(&h, ioas, fd, 0, 16 * P, None).unwrap();
    map_file(&h, ioas, fd, 32 * P, 8 * P, None).unwrap();
    assert_eq!(h.m.user_locked_pages(1000), 24);
    // The same program after a fork: another pid and uid.
    let mut child = h.another();
    child.caller.pid = PID + 1;
    child.caller.uid = 1001;
    child.scratch = h.sim.mmap(PID + 1, 1 << 16, true);
    sw(&child, "IOAS_CHANGE_PROCESS", |c| c.call(IOMMU_IOAS_CHANGE_PROCESS, IommuIoasChangeProcess::default()));
    assert_eq!(h.m.user_locked_pages(1000), 0);
    assert_eq!(h.m.user_locked_pages(1001), 24);
    assert_eq!(h.m.pinned_pages_of(PID + 1).0, 24);
}

/// A mock device attached straight to an IOAS with an automatic domain, swept through
/// every failure, leaves nothing when its stdev goes; a second sweep over the whole
/// teardown-and-rebuild cycle finds the same number of sites each time.
#[test]
fn sweep_is_repeatable() {
    let h = H::new();
    let buf = h.sim.mmap(PID, 64 * P, true);
    let ioas = ioas_alloc(&h).unwrap();
    h.map(ioas, buf, 16 * P, Some(MOCK_APERTURE_START)).unwrap();
    let ((stdev, _, _), first) = h.sweep("MOCK_DOMAIN", |h| h.mock_domain(ioas));
    h.destroy(stdev).unwrap();
    let ((stdev, _, _), second) = h.sweep("MOCK_DOMAIN again", |h| h.mock_domain(ioas));
    assert_eq!(first, second);
    h.destroy(stdev).unwrap();
    assert_eq!(h.m.total_pins(), 0);
}

/// Faulting user copies (argument reads, driver data, copy-back of results) of every
/// object-creating call undo the whole call: no object id, no descriptor, no pin remains.
#[test]
fn user_copy_faults_unwind() {
    fn swc<T>(h: &H, what: &str, call: impl FnMut(&H) -> Result<T, Errno>) -> T {
        let (v, copies) = h.sweep_copies(what, call);
        eprintln!("{what}: {copies} user copies");
        // The argument struct is read ahead with `try_read_user` (a fault there only makes
        // the engine fall back), so the copy-back is the one copy every call has.
        assert!(copies >= 1, "{what}: the copy-back at least");
        v
    }
    let h = H::unprivileged(64 << 20);
    let buf = h.sim.mmap(PID, 64 * P, true);
    let ioas = swc(&h, "IOAS_ALLOC", ioas_alloc);
    let ranges = [IommuIovaRange { start: MOCK_APERTURE_START, last: MOCK_APERTURE_LAST }];
    h.map(ioas, buf, 16 * P, Some(MOCK_APERTURE_START)).unwrap();
    h.sweep_copies("IOAS_ALLOW_IOVAS", |h| {
        let c = IommuIoasAllowIovas {
            ioas_id: ioas,
            num_iovas: 1,
            allowed_iovas: h.put(0x1000, ranges.as_bytes()),
            ..Default::default()
        };
        h.call(IOMMU_IOAS_ALLOW_IOVAS, c)
    });
    let (stdev, _, dev) = swc(&h, "MOCK_DOMAIN_FLAGS", |h| mock_domain_flags(h, ioas, MOCK_FLAGS_DEVICE_PASID));
    let parent = swc(&h, "HWPT_ALLOC nest parent", |h| {
        hwpt_alloc(h, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID, 0, None)
    });
    let sel = IommuHwptSelftest { iotlb: IOMMU_TEST_IOTLB_DEFAULT, pagetable_type: 0 };
    let fault = swc(&h, "FAULT_QUEUE_ALLOC", |h| h.call(IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc::default()));
    swc(&h, "HWPT_ALLOC nested", |h| {
        hwpt_alloc(h, dev, parent, IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID, fault.out_fault_id, Some(sel))
    });
    let data = IommuViommuSelftest { in_data: 7, ..Default::default() };
    let viommu = swc(&h, "VIOMMU_ALLOC", |h| {
        let c = IommuViommuAlloc {
            type_: IOMMU_VIOMMU_TYPE_SELFTEST,
            dev_id: dev,
            hwpt_id: parent,
            data_len: 24,
            data_uptr: h.put(0x2000, data.as_bytes()),
            ..Default::default()
        };
        Ok(h.call(IOMMU_VIOMMU_ALLOC, c)?.out_viommu_id)
    });
    swc(&h, "VDEVICE_ALLOC", |h| {
        h.call(
            IOMMU_VDEVICE_ALLOC,
            IommuVdeviceAlloc { viommu_id: viommu, dev_id: dev, virt_id: 5, ..Default::default() },
        )
    });
    swc(&h, "VEVENTQ_ALLOC", |h| {
        let c = IommuVeventqAlloc {
            viommu_id: viommu,
            type_: IOMMU_VEVENTQ_TYPE_SELFTEST,
            veventq_depth: 2,
            ..Default::default()
        };
        h.call(IOMMU_VEVENTQ_ALLOC, c)
    });
    swc(&h, "HW_QUEUE_ALLOC", |h| {
        let c = IommuHwQueueAlloc {
            viommu_id: viommu,
            type_: IOMMU_HW_QUEUE_TYPE_SELFTEST,
            nesting_parent_iova: MOCK_APERTURE_START,
            length: P,
            ..Default::default()
        };
        h.call(IOMMU_HW_QUEUE_ALLOC, c)
    });
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: parent }).unwrap();
    swc(&h, "PASID_ATTACH", |h| {
        h.test_cmd(IOMMU_TEST_OP_PASID_ATTACH, stdev, &TestPasidAttach { pasid: 9, pt_id: parent })
    });
    let fd = swc(&h, "CREATE_ACCESS", |h| create_access(h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES));
    swc(&h, "ACCESS_PAGES", |h| access_pages(h, fd, MOCK_APERTURE_START, 4 * P, 0, 0));
    h.ctx.check_invariants().unwrap();
}

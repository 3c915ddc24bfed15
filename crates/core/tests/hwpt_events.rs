//! Dirty bitmaps against a model, and the IO page-fault queue state machine.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use uiommu_core::{EngineFile, Errno, Platform};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use zerocopy::{FromZeros, IntoBytes};

const P: u64 = 4096;

/// IOAS (large pages off) + a DIRTY_TRACKING mock domain with tracking on, `npages` mapped
/// at 16 MiB. Returns (ioas, hwpt, iova).
fn dirty_setup(h: &H, npages: u64) -> (u32, u32, u64) {
    let buf = h.sim.mmap(PID, npages * P, true);
    let ioas = h.ioas_alloc();
    let mut opt = IommuOption {
        size: 24,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_SET,
        object_id: ioas,
        val64: 0,
        ..Default::default()
    };
    h.ioctl(IOMMU_OPTION, &mut opt).unwrap();
    let (_, _, dev) = h.mock_domain(ioas).unwrap();
    let mut a = IommuHwptAlloc {
        size: 48,
        flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
        dev_id: dev,
        pt_id: ioas,
        ..Default::default()
    };
    h.ioctl(IOMMU_HWPT_ALLOC, &mut a).unwrap();
    let iova = h.map(ioas, buf, npages * P, Some(0x1000000)).unwrap();
    let mut t = IommuHwptSetDirtyTracking {
        size: 16,
        flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
        hwpt_id: a.out_hwpt_id,
        reserved: 0,
    };
    h.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, &mut t).unwrap();
    (ioas, a.out_hwpt_id, iova)
}

fn get_bitmap(
    h: &H,
    hwpt: u32,
    iova: u64,
    len: u64,
    page_size: u64,
    misalign: u64,
    no_clear: bool,
) -> Result<Vec<u8>, Errno> {
    let nbits = len / page_size.max(1);
    let nbytes = nbits.div_ceil(8) as usize;
    let bm = h.scratch + 0x8000 + misalign;
    h.sim.write_user(&h.caller, bm, &vec![0u8; nbytes]).unwrap();
    let mut c = IommuHwptGetDirtyBitmap {
        size: 48,
        hwpt_id: hwpt,
        flags: if no_clear { IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR } else { 0 },
        iova,
        length: len,
        page_size,
        data: bm,
        ..Default::default()
    };
    h.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, &mut c)?;
    let mut out = vec![0u8; nbytes];
    h.sim.read_user(&h.caller, bm, &mut out).unwrap();
    Ok(out)
}

fn mark(h: &H, hwpt: u32, iova: u64, pages: &BTreeSet<u64>, npages: u64) {
    // The DIRTY op takes a bitmap of page_size (4 KiB) units.
    let mut bm = vec![0u8; npages.div_ceil(8) as usize];
    for &p in pages {
        bm[(p / 8) as usize] |= 1 << (p % 8);
    }
    let up = h.scratch + 0xc000;
    h.sim.write_user(&h.caller, up, &bm).unwrap();
    let d = TestDirty { iova, length: npages * P, page_size: P, uptr: up, ..Default::default() };
    let (_, out) = h.test_cmd(IOMMU_TEST_OP_DIRTY, hwpt, &d).unwrap();
    assert_eq!(out.out_nr_dirty, pages.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// With large pages off every leaf is one 4 KiB IOPTE (two 2 KiB entries, reported as
    /// its first 2 KiB, like the kernel). Any window, granule and bitmap alignment reports
    /// exactly the units the model says, and clears unless NO_CLEAR.
    #[test]
    fn dirty_bitmap_matches_model(
        npages in 1u64..40,
        dirty in proptest::collection::btree_set(0u64..40, 0..20),
        win in (0u64..40, 1u64..40),
        shift in 11u32..15,
        misalign in 0u64..8,
        no_clear in any::<bool>(),
    ) {
        let h = H::new();
        let (_ioas, hwpt, iova) = dirty_setup(&h, npages);
        let dirty: BTreeSet<u64> = dirty.into_iter().filter(|&p| p < npages).collect();
        mark(&h, hwpt, iova, &dirty, npages);
        let page_size = 1u64 << shift;
        // A window aligned to the granule (and to 4 KiB, the IOAS alignment).
        let gran = page_size.max(P);
        let start = (win.0 * P / gran) * gran;
        let len = (win.1 * P).div_ceil(gran) * gran;
        let (ws, wl) = (iova + start, len);
        let bits = get_bitmap(&h, hwpt, ws, wl, page_size, misalign, no_clear).unwrap();
        let mapped_end = iova + npages * P;
        let mut want = vec![0u8; bits.len()];
        for &p in &dirty {
            // Reported span: the first 2 KiB of the 4 KiB leaf.
            let (s, e) = (iova + p * P, iova + p * P + 2048);
            if e <= ws || s >= ws + wl || s >= mapped_end { continue; }
            // The walk only covers areas contiguous from the window start.
            if ws >= mapped_end { continue; }
            let lo = s.max(ws);
            let hi = (e - 1).min(ws + wl - 1);
            for b in (lo - ws) / page_size..=(hi - ws) / page_size {
                want[(b / 8) as usize] |= 1 << (b % 8);
            }
        }
        prop_assert_eq!(&bits, &want);
        let again = get_bitmap(&h, hwpt, ws, wl, page_size, misalign, true).unwrap();
        if no_clear {
            prop_assert_eq!(&again, &want);
        } else {
            prop_assert!(again.iter().all(|&b| b == 0), "cleared leaves reported again");
        }
    }
}

#[test]
fn dirty_bitmap_argument_checks() {
    let h = H::new();
    let (_ioas, hwpt, iova) = dirty_setup(&h, 4);
    assert_eq!(get_bitmap(&h, hwpt, iova, 4 * P, 0, 0, false), Err(Errno::EINVAL));
    assert_eq!(get_bitmap(&h, hwpt, iova + 2048, 4 * P, 4096, 0, false), Err(Errno::EINVAL), "IOAS alignment");
    assert_eq!(get_bitmap(&h, hwpt, iova, 3 * P, 8192, 0, false), Err(Errno::EINVAL), "granule");
    let mut c = IommuHwptGetDirtyBitmap {
        size: 48,
        hwpt_id: hwpt,
        iova: u64::MAX - 10,
        length: 100,
        page_size: P,
        data: h.scratch,
        ..Default::default()
    };
    assert_eq!(h.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, &mut c), Err(Errno::EOVERFLOW));
}

fn read_fault(h: &H, f: &EngineFile, count: usize) -> Result<Vec<IommuHwptPgfault>, Errno> {
    let at = h.scratch + 0x4000;
    let n = f.read(&h.caller, at, count)?;
    let mut v = vec![IommuHwptPgfault::new_zeroed(); n / 40];
    h.sim.read_user(&h.caller, at, v.as_mut_bytes()).unwrap();
    Ok(v)
}

fn respond(h: &H, f: &EngineFile, cookie: u32, code: u32) -> Result<usize, Errno> {
    let at = h.scratch + 0x5000;
    let r = IommuHwptPageResponse { cookie, code };
    h.sim.write_user(&h.caller, at, r.as_bytes()).unwrap();
    f.write(&h.caller, at, 8)
}

#[test]
fn fault_queue_state_machine() {
    let h = H::new();
    let ioas = h.ioas_alloc();
    let (stdev, _, dev) = h.mock_domain(ioas).unwrap();
    let mut fa = IommuFaultAlloc { size: 16, ..Default::default() };
    h.ioctl(IOMMU_FAULT_QUEUE_ALLOC, &mut fa).unwrap();
    let f = h.sim.engine_file(fa.out_fault_fd as i32).expect("fault fd");
    // Nest-parent + fault-capable nested HWPT, device replaced onto it.
    let mut parent = IommuHwptAlloc {
        size: 48,
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id: dev,
        pt_id: ioas,
        ..Default::default()
    };
    h.ioctl(IOMMU_HWPT_ALLOC, &mut parent).unwrap();
    let data = IommuHwptSelftest { iotlb: 0, pagetable_type: 0 };
    h.sim.write_user(&h.caller, h.scratch + 0x3000, data.as_bytes()).unwrap();
    let mut nested = IommuHwptAlloc {
        size: 48,
        flags: IOMMU_HWPT_FAULT_ID_VALID,
        dev_id: dev,
        pt_id: parent.out_hwpt_id,
        data_type: IOMMU_HWPT_DATA_SELFTEST,
        data_len: 8,
        data_uptr: h.scratch + 0x3000,
        fault_id: fa.out_fault_id,
        ..Default::default()
    };
    h.ioctl(IOMMU_HWPT_ALLOC, &mut nested).unwrap();
    assert_eq!(h.destroy(fa.out_fault_id), Err(Errno::EBUSY), "fd and HWPT hold the queue");
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: nested.out_hwpt_id }).unwrap();

    assert_eq!(f.poll() & 0x1, 0, "empty queue is not readable");
    assert_eq!(read_fault(&h, &f, 40).unwrap().len(), 0, "empty queue reads 0");
    let trig = |grpid| {
        let t = TestTriggerIopf { dev_id: dev, pasid: 1, grpid, perm: 3, addr: 0xdead_b000 };
        h.test_cmd(IOMMU_TEST_OP_TRIGGER_IOPF, 0, &t).unwrap();
    };
    trig(2);
    trig(3);
    assert_eq!(f.poll() & 0x1, 0x1);
    assert_eq!(f.read(&h.caller, h.scratch, 39), Err(Errno::ESPIPE));
    let one = read_fault(&h, &f, 40).unwrap();
    assert_eq!(one.len(), 1);
    let r = one[0];
    assert_eq!((r.dev_id, r.pasid, r.grpid, r.perm, r.addr), (dev, 1, 2, 3, 0xdead_b000));
    assert_eq!(r.flags, IOMMU_PGFAULT_FLAGS_LAST_PAGE | IOMMU_PGFAULT_FLAGS_PASID_VALID);
    assert_eq!(r.cookie, 1);
    let two = read_fault(&h, &f, 80).unwrap();
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].cookie, 2, "cookies count up from 1");
    assert_eq!(respond(&h, &f, 7, 0), Err(Errno::EINVAL), "unknown cookie");
    assert_eq!(respond(&h, &f, 1, 5), Err(Errno::EINVAL), "bad code");
    assert_eq!(f.write(&h.caller, h.scratch, 12), Err(Errno::ESPIPE));
    assert_eq!(respond(&h, &f, 1, 0), Ok(8));
    assert_eq!(respond(&h, &f, 1, 0), Err(Errno::EINVAL), "answered once");
    // Replacing away answers outstanding faults of the attachment (cookie 2 is gone).
    trig(4);
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: ioas }).unwrap();
    assert_eq!(respond(&h, &f, 2, 0), Err(Errno::EINVAL));
    assert_eq!(read_fault(&h, &f, 40).unwrap().len(), 0, "queued group dropped on replace");
    // Cookie 1 is free again and reused.
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: nested.out_hwpt_id }).unwrap();
    trig(5);
    assert_eq!(read_fault(&h, &f, 40).unwrap()[0].cookie, 1);
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: ioas }).unwrap();
    h.destroy(nested.out_hwpt_id).unwrap();
    drop(f);
    h.sim.close(fa.out_fault_fd as i32);
    h.destroy(fa.out_fault_id).unwrap();
}

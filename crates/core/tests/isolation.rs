//! Isolation: nothing reaches memory outside what was mapped, with the permissions it was
//! mapped with, and pinned memory stays within RLIMIT_MEMLOCK however hard it is pushed.

mod common;
use common::*;
use std::sync::Arc;
use uiommu_core::{Errno, Platform};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;

const P: u64 = 4096;
const BASE: u64 = MOCK_APERTURE_START;

/// A buffer of `pages` pages filled with a recognizable pattern.
fn patterned(h: &H, pages: u64) -> (u64, Vec<u8>) {
    let pattern: Vec<u8> = (0..pages * P).map(|i| (i * 7 + 3) as u8).collect();
    let va = h.sim.mmap(PID, pages * P, true);
    h.sim.write_user(&h.caller, va, &pattern).unwrap();
    (va, pattern)
}

fn contents(h: &H, va: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0; len as usize];
    h.sim.read_user(&h.caller, va, &mut v).unwrap();
    v
}

fn map_prot(h: &H, ioas: u32, va: u64, len: u64, iova: u64, flags: u32) -> Result<u64, Errno> {
    let c = IommuIoasMap {
        flags: flags | IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id: ioas,
        user_va: va,
        length: len,
        iova,
        ..Default::default()
    };
    Ok(h.call(IOMMU_IOAS_MAP, c)?.iova)
}

fn access_rw(h: &H, fd: i32, iova: u64, uptr: u64, len: u64, flags: u32) -> Result<i32, Errno> {
    let p = TestAccessRw { iova, length: len, uptr, flags, pad: 0 };
    h.test_cmd(IOMMU_TEST_OP_ACCESS_RW, fd as u32, &p).map(|r| r.0)
}

fn create_access(h: &H, ioas: u32, flags: u32) -> i32 {
    let (_, p) =
        h.test_cmd(IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess { flags, ..Default::default() }).unwrap();
    p.out_access_fd as i32
}

#[test]
fn access_outside_mapped_iova_is_enoent_and_touches_nothing() {
    let h = H::new();
    let (buf, pattern) = patterned(&h, 16);
    let (other, other_pattern) = patterned(&h, 4);
    let ioas = h.ioas_alloc();
    // Two areas with a one-page hole between them.
    map_prot(&h, ioas, buf, 4 * P, BASE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE).unwrap();
    map_prot(&h, ioas, buf + 5 * P, 4 * P, BASE + 5 * P, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE).unwrap();
    let fd = create_access(&h, ioas, 0);
    let before = h.state();
    let user = h.scratch + 0x2000;
    h.sim.write_user(&h.caller, user, &[0xee; 64]).unwrap();
    let cases = [
        (BASE - 64, 64),        // just below the first area
        (BASE - 8, 64),         // straddling its start
        (BASE + 4 * P - 8, 64), // running into the hole
        (BASE + 4 * P, 16),     // inside the hole
        (BASE + 9 * P - 8, 64), // running off the second area's end
        (BASE + (1 << 30), 64), // far away
        (u64::MAX - 8, 9),      // wrapping
    ];
    for (iova, len) in cases {
        for flags in
            [0, MOCK_ACCESS_RW_WRITE, MOCK_ACCESS_RW_SLOW_PATH, MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH]
        {
            let r = access_rw(&h, fd, iova, user, len, flags);
            let want = if iova.checked_add(len - 1).is_none() { Errno::EOVERFLOW } else { Errno::ENOENT };
            assert_eq!(r, Err(want), "iova {iova:#x} len {len} flags {flags:#x}");
        }
    }
    assert!(contents(&h, buf, 16 * P) == pattern, "mapped memory touched");
    assert!(contents(&h, other, 4 * P) == other_pattern, "unmapped memory touched");
    assert_eq!(contents(&h, user, 64), vec![0xee; 64], "a failed read copied nothing out");
    // Pinning outside the mapping fails the same way, with nothing pinned.
    let pin_fd = create_access(&h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    let p = TestAccessPages { iova: BASE + 3 * P, length: 2 * P, ..Default::default() };
    assert_eq!(h.test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, pin_fd as u32, &p).map(|r| r.0), Err(Errno::ENOENT));
    h.sim.close(pin_fd);
    assert_eq!(h.state(), before);
    // Inside the mapping the same access works (the test is not vacuous).
    access_rw(&h, fd, BASE + 8, user, 64, MOCK_ACCESS_RW_WRITE).unwrap();
    assert_eq!(contents(&h, buf + 8, 64), vec![0xee; 64]);
}

#[test]
fn device_dma_outside_mapped_iova_faults_and_touches_nothing() {
    let h = H::new();
    let (buf, pattern) = patterned(&h, 8);
    let ioas = h.ioas_alloc();
    let (stdev, _, dev) = h.mock_domain(ioas).unwrap();
    map_prot(&h, ioas, buf, 4 * P, BASE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE).unwrap();
    let mut b = [0u8; 32];
    // Entirely outside the mapping: nothing anywhere changes.
    for iova in [BASE - 32, BASE + 4 * P, BASE + 100 * P, 0, u64::MAX - 31] {
        assert_eq!(h.ctx.dma_write(dev, 0, iova, &[0x5a; 32]), Err(Errno::EFAULT), "write at {iova:#x}");
        assert_eq!(h.ctx.dma_read(dev, 0, iova, &mut b), Err(Errno::EFAULT), "read at {iova:#x}");
    }
    assert!(contents(&h, buf, 8 * P) == pattern, "memory changed by faulting DMA");
    // Running off the end: the device may write the mapped part before it faults (as real
    // hardware does), but never a byte past the mapping.
    assert_eq!(h.ctx.dma_write(dev, 0, BASE + 4 * P - 16, &[0x5a; 32]), Err(Errno::EFAULT));
    assert!(contents(&h, buf + 4 * P, 4 * P) == pattern[4 * P as usize..], "DMA reached unmapped memory");
    // A port that translated an IOVA loses it with the unmap (no stale IOTLB entry).
    let mut port = h.ctx.dma_port(dev, 0).unwrap();
    port.write(BASE + 8, &[1, 2, 3]).unwrap();
    assert_eq!(contents(&h, buf + 8, 3), vec![1, 2, 3]);
    h.unmap(ioas, BASE, 4 * P).unwrap();
    assert_eq!(port.write(BASE + 8, &[9, 9, 9]), Err(Errno::EFAULT), "stale translation used after unmap");
    assert_eq!(contents(&h, buf + 8, 3), vec![1, 2, 3]);
    // Nor does a device see another domain's mappings after it is moved away.
    map_prot(&h, ioas, buf, 4 * P, BASE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE).unwrap();
    let ioas2 = h.ioas_alloc();
    h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, &TestMockDomainReplace { pt_id: ioas2 }).unwrap();
    assert_eq!(port.read(BASE + 8, &mut b[..3]), Err(Errno::EFAULT), "old domain still reachable");
}

#[test]
fn read_only_mappings_refuse_writes() {
    let h = H::new();
    let (buf, pattern) = patterned(&h, 8);
    let ioas = h.ioas_alloc();
    let (_, _, dev) = h.mock_domain(ioas).unwrap();
    map_prot(&h, ioas, buf, 4 * P, BASE, IOMMU_IOAS_MAP_READABLE).unwrap();
    let fd = create_access(&h, ioas, 0);
    let pin_fd = create_access(&h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    let before = h.state();
    let user = h.scratch + 0x2000;
    h.sim.write_user(&h.caller, user, &[0xaa; 256]).unwrap();
    for flags in [MOCK_ACCESS_RW_WRITE, MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH] {
        assert_eq!(access_rw(&h, fd, BASE + 100, user, 256, flags), Err(Errno::EPERM));
    }
    let p = TestAccessPages { iova: BASE, length: 2 * P, flags: MOCK_FLAGS_ACCESS_WRITE, ..Default::default() };
    assert_eq!(h.test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, pin_fd as u32, &p).map(|r| r.0), Err(Errno::EPERM));
    assert_eq!(h.ctx.dma_write(dev, 0, BASE + 100, &[0xaa; 256]), Err(Errno::EFAULT), "DMA write to a read-only IOVA");
    // A copy cannot upgrade the permission either.
    let ioas2 = h.ioas_alloc();
    let c = IommuIoasCopy {
        flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: ioas2,
        src_ioas_id: ioas,
        length: P,
        src_iova: BASE,
        ..Default::default()
    };
    let r = h.call(IOMMU_IOAS_COPY, c);
    assert!(r.is_err(), "a writable copy of a read-only mapping: {r:?}");
    h.destroy(ioas2).unwrap();
    assert!(contents(&h, buf, 8 * P) == pattern, "something was written");
    assert_eq!(h.state(), before);
    // Reads work (the mapping is real).
    access_rw(&h, fd, BASE + 100, user, 256, 0).unwrap();
    assert_eq!(contents(&h, user, 256), pattern[100..356].to_vec());
    let mut b = [0u8; 16];
    h.ctx.dma_read(dev, 0, BASE + 100, &mut b).unwrap();
    assert_eq!(&b[..], &pattern[100..116]);
}

/// RLIMIT_MEMLOCK: maps by an unprivileged user fail ENOMEM once the pinned total would
/// pass the limit, with nothing leaked; the limit holds with many threads mapping at once.
#[test]
fn rlimit_memlock_holds_under_load() {
    const LIMIT: u64 = 48; // pages
    let h = H::unprivileged(LIMIT * P);
    let buf = h.sim.mmap(PID, 256 * P, true);
    let ioas = h.ioas_alloc();
    h.mock_domain(ioas).unwrap();
    // Sequential: 5-page maps until the limit refuses one.
    let mut mapped = 0;
    loop {
        let before = h.state();
        match h.map(ioas, buf + mapped * P, 5 * P, None) {
            Ok(_) => mapped += 5,
            Err(e) => {
                assert_eq!(e, Errno::ENOMEM);
                assert_eq!(h.state(), before, "a refused map leaked something");
                break;
            }
        }
        assert!(h.m.user_locked_pages(1000) <= LIMIT);
    }
    assert_eq!(mapped, 45);
    assert_eq!(h.m.user_locked_pages(1000), 45);
    // Each mapping is charged for its own pins, even of pages another mapping pinned (the
    // kernel accounts per page store too), so mapping the same memory again is refused.
    let before = h.state();
    assert_eq!(h.map(ioas, buf, 5 * P, None), Err(Errno::ENOMEM));
    assert_eq!(h.state(), before);
    assert_eq!(h.m.user_locked_pages(1000), 45);
    h.unmap(ioas, 0, u64::MAX).unwrap();
    assert_eq!(h.m.user_locked_pages(1000), 0);

    // Concurrent: 8 threads, each mapping 4-page pieces of its own region and unmapping
    // some again, on one IOAS with a domain. The charged total never passes the limit and
    // always equals what is pinned.
    let h = Arc::new(h);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let hh = h.another();
            std::thread::spawn(move || {
                let mut refused = 0;
                let mut mine: Vec<u64> = Vec::new();
                for i in 0..60u64 {
                    let va = buf + t * 32 * P + (i % 8) * 4 * P;
                    match hh.map(ioas, va, 4 * P, None) {
                        Ok(iova) => mine.push(iova),
                        Err(Errno::ENOMEM) => refused += 1,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    let locked = hh.m.user_locked_pages(1000);
                    assert!(locked <= LIMIT, "locked_vm {locked} over the limit {LIMIT}");
                    if i % 3 == 2 {
                        if let Some(iova) = mine.pop() {
                            hh.unmap(ioas, iova, 4 * P).unwrap();
                        }
                    }
                }
                for iova in mine {
                    hh.unmap(ioas, iova, 4 * P).unwrap();
                }
                refused
            })
        })
        .collect();
    let refused: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(refused > 0, "the load never reached the limit");
    h.ctx.check_invariants().unwrap();
    assert_eq!(h.m.user_locked_pages(1000), 0);
    assert_eq!(h.m.total_pins(), 0);
    assert_eq!(h.m.pinned_pages_of(PID), (0, 0));
}

/// Access pins are charged too (IOAS without a domain): the limit stops them, and a
/// refused pin leaves nothing behind.
#[test]
fn rlimit_memlock_limits_access_pins() {
    let h = H::unprivileged(8 * P);
    let buf = h.sim.mmap(PID, 32 * P, true);
    let ioas = h.ioas_alloc();
    let iova = h.map(ioas, buf, 32 * P, None).unwrap();
    assert_eq!(h.m.user_locked_pages(1000), 0, "no domain: nothing pinned at map time");
    let fd = create_access(&h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    let pin = |off: u64, n: u64| {
        let p = TestAccessPages { iova: iova + off * P, length: n * P, ..Default::default() };
        h.test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, fd as u32, &p).map(|r| r.0)
    };
    pin(0, 6).unwrap();
    let before = h.state();
    assert_eq!(pin(6, 4), Err(Errno::ENOMEM));
    assert_eq!(h.state(), before);
    pin(4, 4).unwrap(); // overlaps two pinned pages: 2 new
    assert_eq!(h.m.user_locked_pages(1000), 8);
    h.sim.close(fd);
    assert_eq!(h.m.user_locked_pages(1000), 0);
    assert_eq!(h.m.total_pins(), 0);
}

//! Engine tests through the ioctl ABI, on the simulated platform.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use uiommu_core::Errno;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::{cmd_info, IOMMUFD_CMDS};
use zerocopy::IntoBytes;

#[test]
fn dispatch_size_rules_for_every_command() {
    let h = H::new();
    // The same rules whether the platform is `dyn Platform` or a named type.
    type Raw = fn(&H, u32, &[u8]) -> Result<i32, Errno>;
    for (path, raw) in [("dyn", H::raw as Raw), ("via", H::raw_via as Raw)] {
        for info in IOMMUFD_CMDS {
            // size below the minimum
            let mut b = vec![0u8; info.size + 1];
            b[..4].copy_from_slice(&((info.min_size - 1) as u32).to_ne_bytes());
            assert_eq!(raw(&h, info.ioctl, &b), Err(Errno::EINVAL), "{path} {} short", info.name);
            // a non-zero byte beyond the known struct
            b[..4].copy_from_slice(&((info.size + 1) as u32).to_ne_bytes());
            b[info.size] = 0xff;
            assert_eq!(raw(&h, info.ioctl, &b), Err(Errno::E2BIG), "{path} {} trailing", info.name);
            // wrong direction/size bits or type byte
            assert_eq!(raw(&h, info.ioctl | (1 << 30), &b), Err(Errno::ENOTTY), "{path} {} dir", info.name);
            // unreadable argument
            assert_eq!(h.ctx.ioctl(&h.caller, info.ioctl, 0), Err(Errno::EFAULT), "{} NULL", info.name);
            assert_eq!(
                h.ctx.ioctl_via(&*h.copy_faults, &h.caller, info.ioctl, 0),
                Err(Errno::EFAULT),
                "via {} NULL",
                info.name
            );
        }
        for nr in 0x95u8..0xa0 {
            assert!(cmd_info(nr).is_none());
            let mut b = [0u8; 64];
            b[0] = 64;
            assert_eq!(raw(&h, 0x3b00 | nr as u32, &b), Err(Errno::ENOTTY), "{path}");
        }
        // VFIO-range commands this build does not know.
        assert_eq!(raw(&h, 0x3b7f, &[0u8; 8]), Err(Errno::ENOTTY), "{path}");
        // A command that succeeds and copies back: the same reply either way.
        let mut q = IommuIoasIovaRanges { size: 32, ioas_id: h.ioas_alloc(), ..Default::default() };
        assert_eq!(raw(&h, IOMMU_IOAS_IOVA_RANGES, q.as_bytes()), Err(Errno::EMSGSIZE), "{path}");
        uiommu_core::Platform::read_user(&*h.sim, &h.caller, h.scratch, q.as_mut_bytes()).unwrap();
        assert_eq!((q.num_iovas, q.out_iova_alignment), (1, 1), "{path}");
    }
}

#[test]
fn zero_tail_is_accepted() {
    let h = H::new();
    let mut b = [0u8; 16];
    b[0] = 16;
    b[4] = 1; // id 1 does not exist
    assert_eq!(h.raw(IOMMU_DESTROY, &b), Err(Errno::ENOENT));
    b[12] = 1;
    assert_eq!(h.raw(IOMMU_DESTROY, &b), Err(Errno::E2BIG));
}

/// The worked example of the spec's README §5.
#[test]
fn worked_example_ids_refs_and_teardown() {
    let h = H::new();
    let buf = h.sim.mmap(PID, 64 << 10, true);
    let ioas = h.ioas_alloc();
    assert_eq!(ioas, 1);
    assert_eq!(h.iova_ranges(ioas), (vec![(0, u64::MAX)], 1));
    let (stdev, hwpt, dev) = h.mock_domain(ioas).unwrap();
    assert_eq!((stdev, dev, hwpt), (2, 3, 4));
    assert_eq!(h.iova_ranges(ioas), (vec![(0x1000000, 0x7fff_ffff)], 2048));
    let iova = h.map(ioas, buf, 64 << 10, None).unwrap();
    assert_eq!(iova, 0x1000000);
    h.check_map(hwpt, iova, 64 << 10, buf).unwrap();
    h.check_refs(buf, 64 << 10, 1).unwrap();
    assert_eq!(h.m.pinned_pages_of(PID), (16, 0), "pinned_vm moves even without a limit");
    assert_eq!(h.destroy(ioas), Err(Errno::EBUSY));
    assert_eq!(h.destroy(hwpt), Err(Errno::EBUSY));
    assert_eq!(h.destroy(dev), Err(Errno::EBUSY));
    h.destroy(stdev).unwrap();
    assert_eq!(h.destroy(hwpt), Err(Errno::ENOENT), "automatic HWPT went with its device");
    h.check_refs(buf, 64 << 10, 0).unwrap();
    assert_eq!(h.iova_ranges(ioas), (vec![(0, u64::MAX)], 1));
    h.ctx.check_invariants().unwrap();
    h.destroy(ioas).unwrap();
    assert_eq!(h.ctx.object_count(), 0);
    assert_eq!(h.ioas_alloc(), 1, "ids are reused");
}

#[test]
fn closing_releases_every_pin() {
    let h = H::new();
    let buf = h.sim.mmap(PID, 64 << 10, true);
    let ioas = h.ioas_alloc();
    h.mock_domain(ioas).unwrap();
    h.map(ioas, buf, 64 << 10, None).unwrap();
    assert_eq!(h.m.total_pins(), 16);
    let H { m, ctx, .. } = h;
    drop(ctx);
    assert_eq!(m.total_pins(), 0);
}

#[test]
fn unprivileged_pins_are_charged_and_limited() {
    let mut h = H::new();
    h.caller.cap_ipc_lock = false;
    h.caller.memlock_limit = 8 * 4096;
    let buf = h.sim.mmap(PID, 64 << 10, true);
    let ioas = h.ioas_alloc();
    h.mock_domain(ioas).unwrap();
    assert_eq!(h.map(ioas, buf, 64 << 10, None), Err(Errno::ENOMEM));
    assert_eq!(h.m.total_pins(), 0);
    h.map(ioas, buf, 32 << 10, None).unwrap();
    assert_eq!(h.m.user_locked_pages(0), 8);
    assert_eq!(h.m.pinned_pages_of(PID).0, 8);
    h.unmap(ioas, 0, u64::MAX).unwrap();
    assert_eq!(h.m.user_locked_pages(0), 0);
    h.ctx.check_invariants().unwrap();
}

#[test]
fn map_without_domain_does_not_touch_memory() {
    let h = H::new();
    let ioas = h.ioas_alloc();
    // Nothing is mapped at 2^31 in the simulated process.
    let iova = h.map(ioas, 1 << 31, 4096, Some(0x1000000)).unwrap();
    assert_eq!(h.m.total_pins(), 0);
    // A domain joining now must pin, and fails on the unmapped VA.
    assert_eq!(h.mock_domain(ioas), Err(Errno::EFAULT));
    assert_eq!(h.ctx.object_count(), 1, "failed MOCK_DOMAIN leaves no ids behind");
    h.unmap(ioas, iova, 4096).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Map { page: u64, pages: u64, fixed: Option<u64> },
    Unmap { at: u64, len: u64 },
    UnmapArea { nth: usize },
    Copy { nth: usize },
    Domain,
    Undomain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..16, 1u64..8, proptest::option::of(0u64..64)).prop_map(|(page, pages, fixed)| Op::Map { page, pages, fixed }),
        2 => (0u64..64, 1u64..16).prop_map(|(at, len)| Op::Unmap { at, len }),
        3 => (0usize..8).prop_map(|nth| Op::UnmapArea { nth }),
        1 => (0usize..8).prop_map(|nth| Op::Copy { nth }),
        1 => Just(Op::Domain),
        1 => Just(Op::Undomain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// The IO page table against a model of its areas: every map, copy and unmap result
    /// (IOVA chosen, bytes unmapped, errno) agrees with a map of intervals, and the
    /// engine's invariants hold after every step.
    #[test]
    fn io_pagetable_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        const P: u64 = 4096;
        let h = H::new();
        let buf = h.sim.mmap(PID, 16 * P * 2, true);
        let ioas = h.ioas_alloc();
        let dst = h.ioas_alloc();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new(); // iova -> len
        let mut stdevs: Vec<u32> = Vec::new();
        let base = |d: &Vec<u32>| if d.is_empty() { 0 } else { 0x1000000 };
        for op in ops {
            match op {
                Op::Map { page, pages, fixed } => {
                    let len = pages * P;
                    let want_iova = fixed.map(|f| base(&stdevs) + f * P);
                    let r = h.map(ioas, buf + page * P, len, want_iova);
                    match want_iova {
                        Some(iova) => {
                            let overlap = model.iter().any(|(&s, &l)| s < iova + len && iova < s + l);
                            if overlap { prop_assert_eq!(r, Err(Errno::EEXIST)); } else {
                                prop_assert_eq!(r, Ok(iova));
                                model.insert(iova, len);
                            }
                        }
                        None => {
                            let iova = r.unwrap();
                            prop_assert!(!model.iter().any(|(&s, &l)| s < iova + len && iova < s + l));
                            model.insert(iova, len);
                        }
                    }
                }
                Op::Unmap { at, len } => {
                    let (s, l) = (base(&stdevs) + at * P, len * P);
                    let inter: Vec<(u64, u64)> = model.iter().filter(|(&a, &al)| a < s + l && s < a + al).map(|(&a, &al)| (a, al)).collect();
                    let r = h.unmap(ioas, s, l);
                    // Areas are removed in order until one is only partly covered.
                    let mut removed = 0;
                    let mut err = false;
                    for (a, al) in inter {
                        if a < s || a + al > s + l { err = true; break; }
                        model.remove(&a);
                        removed += al;
                    }
                    if err { prop_assert_eq!(r, Err(Errno::ENOENT)); }
                    else if removed == 0 { prop_assert_eq!(r, Err(Errno::ENOENT)); }
                    else { prop_assert_eq!(r, Ok(removed)); }
                }
                Op::UnmapArea { nth } => {
                    if let Some((&a, &al)) = model.iter().nth(nth) {
                        prop_assert_eq!(h.unmap(ioas, a, al), Ok(al));
                        model.remove(&a);
                    }
                }
                Op::Copy { nth } => {
                    if let Some((&a, &al)) = model.iter().nth(nth) {
                        let iova = h.copy(dst, ioas, a, al, None).unwrap();
                        prop_assert_eq!(h.unmap(dst, iova, al), Ok(al));
                    }
                }
                Op::Domain => {
                    // Only possible while every area sits inside the mock aperture.
                    let r = h.mock_domain(ioas);
                    let inside = model.iter().all(|(&s, &l)| s >= 0x1000000 && s + l <= 0x8000_0000);
                    if inside { stdevs.push(r.unwrap().0); } else { prop_assert_eq!(r, Err(Errno::EADDRINUSE)); }
                }
                Op::Undomain => {
                    if let Some(s) = stdevs.pop() { h.destroy(s).unwrap(); }
                }
            }
            h.ctx.check_invariants().map_err(TestCaseError::fail)?;
        }
        h.unmap(ioas, 0, u64::MAX).unwrap();
        for s in stdevs { h.destroy(s).unwrap(); }
        prop_assert_eq!(h.m.total_pins(), 0);
    }
}

#[test]
fn device_dma_through_the_domain() {
    use uiommu_core::Platform;
    let h = H::new();
    let buf = h.sim.mmap(PID, 64 << 10, true);
    let ioas = h.ioas_alloc();
    let (_stdev, _hwpt, dev) = h.mock_domain(ioas).unwrap();
    let iova = h.map(ioas, buf, 64 << 10, None).unwrap();
    // A device write lands in the process's memory, crossing pages.
    let data: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
    h.ctx.dma_write(dev, 0, iova + 100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    h.sim.read_user(&h.caller, buf + 100, &mut back).unwrap();
    assert_eq!(back, data);
    // And a device read sees what the CPU wrote.
    h.sim.write_user(&h.caller, buf + 5000, b"hello").unwrap();
    let mut five = [0u8; 5];
    h.ctx.dma_read(dev, 0, iova + 5000, &mut five).unwrap();
    assert_eq!(&five, b"hello");
    // Outside the mapping: an IO page fault, nothing copied.
    assert_eq!(h.ctx.dma_read(dev, 0, iova + (64 << 10) - 2, &mut five), Err(Errno::EFAULT));
    h.unmap(ioas, iova, 64 << 10).unwrap();
    assert_eq!(h.ctx.dma_write(dev, 0, iova, b"x"), Err(Errno::EFAULT));
    // A device that is not attached at a pasid faults too.
    assert_eq!(h.ctx.dma_write(dev, 7, iova, b"x"), Err(Errno::EFAULT));
    assert_eq!(h.ctx.dma_write(9999, 0, iova, b"x"), Err(Errno::ENOENT));
}

#[test]
fn read_only_mapping_refuses_device_writes() {
    let h = H::new();
    let buf = h.sim.mmap(PID, 16 << 10, true);
    let ioas = h.ioas_alloc();
    let (_, _, dev) = h.mock_domain(ioas).unwrap();
    let mut c = IommuIoasMap {
        size: 40,
        flags: IOMMU_IOAS_MAP_READABLE,
        ioas_id: ioas,
        user_va: buf,
        length: 16 << 10,
        ..Default::default()
    };
    h.ioctl(IOMMU_IOAS_MAP, &mut c).unwrap();
    let mut b = [0u8; 4];
    h.ctx.dma_read(dev, 0, c.iova, &mut b).unwrap();
    assert_eq!(h.ctx.dma_write(dev, 0, c.iova, &b), Err(Errno::EFAULT));
}

#[test]
fn iotlb_is_kept_exact_by_invalidation() {
    use uiommu_core::Platform;
    let h = H::new();
    let a = h.sim.mmap(PID, 16 << 10, true);
    let b = h.sim.mmap(PID, 16 << 10, true);
    h.sim.write_user(&h.caller, a, b"AAAA").unwrap();
    h.sim.write_user(&h.caller, b, b"BBBB").unwrap();
    let ioas = h.ioas_alloc();
    let (stdev, _, dev) = h.mock_domain(ioas).unwrap();
    let iova = h.map(ioas, a, 16 << 10, Some(0x1000000)).unwrap();
    let mut port = h.ctx.dma_port(dev, 0).unwrap();
    let mut x = [0u8; 4];
    port.read(iova, &mut x).unwrap();
    assert_eq!(&x, b"AAAA");
    port.read(iova, &mut x).unwrap();
    let (hits, misses) = port.stats();
    assert!(hits >= 1 && misses >= 1, "second access hits the IOTLB ({hits} hits, {misses} misses)");
    // Unmap: the cached translation must not survive.
    h.unmap(ioas, iova, 16 << 10).unwrap();
    assert_eq!(port.read(iova, &mut x), Err(Errno::EFAULT));
    // Same IOVA, other memory: the port sees the new translation.
    h.map(ioas, b, 16 << 10, Some(iova)).unwrap();
    port.read(iova, &mut x).unwrap();
    assert_eq!(&x, b"BBBB");
    // Moving the device to another (empty) IOAS invalidates too.
    let other = h.ioas_alloc();
    h.test_cmd(
        uiommu_uapi::test::IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
        stdev,
        &uiommu_uapi::test::TestMockDomainReplace { pt_id: other },
    )
    .unwrap();
    assert_eq!(port.read(iova, &mut x), Err(Errno::EFAULT));
}

/// MAP_FILE lengths at the top of the 64-bit range, in the kernel's order: EOVERFLOW for
/// `length == U64_MAX` or an offset range that wraps, EBADF before the page store's own
/// limit (EINVAL above `U64_MAX - PAGE_SIZE`), and a store that ends at the top of the
/// offset space is a valid area whose pinning fails cleanly (the file is too short).
#[test]
fn map_file_lengths_at_the_top_of_the_range() {
    const PAGE: u64 = 4096;
    let h = H::new();
    let ioas = h.ioas_alloc();
    let fd = h.sim.memfd(4 * PAGE);
    let map_at = |fd: i32, start: u64, length: u64, iova: Option<u64>| {
        let fixed = if iova.is_some() { IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 };
        let c = IommuIoasMapFile {
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | fixed,
            ioas_id: ioas,
            fd,
            start,
            length,
            iova: iova.unwrap_or(0),
            ..Default::default()
        };
        h.call(IOMMU_IOAS_MAP_FILE, c).map(|c| c.iova)
    };
    let map = |fd: i32, start: u64, length: u64| map_at(fd, start, length, None);
    assert_eq!(map(fd, 0, u64::MAX), Err(Errno::EOVERFLOW));
    assert_eq!(map(fd, 3, u64::MAX - 1), Err(Errno::EOVERFLOW));
    assert_eq!(map(fd, 2, u64::MAX - 1), Err(Errno::EINVAL));
    assert_eq!(map(9999, 0, u64::MAX - PAGE + 1), Err(Errno::EBADF));
    assert_eq!(map(fd, 0, u64::MAX - PAGE + 1), Err(Errno::EINVAL));
    assert_eq!(map(fd, 0, u64::MAX - 212), Err(Errno::EINVAL));
    h.ctx.check_invariants().unwrap();
    // The largest store: 2^52 pages, ending at the top of the offset space (at a fixed
    // IOVA: the allocator refuses half the address space or more with EOVERFLOW).
    assert_eq!(map(fd, PAGE - 1, u64::MAX - PAGE), Err(Errno::EOVERFLOW));
    let iova = map_at(fd, PAGE - 1, u64::MAX - PAGE, Some(PAGE - 1)).unwrap();
    h.ctx.check_invariants().unwrap();
    assert_eq!(h.unmap(ioas, iova, u64::MAX - PAGE), Ok(u64::MAX - PAGE));
    // The last page of the offset space (at an IOVA the mock domain can take): accepted
    // (nothing is pinned), then attaching a domain must pin it, which fails because the file
    // is far shorter, and leaves everything as it was.
    let iova = map_at(fd, u64::MAX - PAGE + 1, PAGE, Some(1 << 24)).unwrap();
    h.ctx.check_invariants().unwrap();
    let before = h.state();
    assert_eq!(h.mock_domain(ioas).map(|_| ()), Err(Errno::EINVAL));
    assert_eq!(h.state(), before);
    assert_eq!(h.unmap(ioas, iova, PAGE), Ok(PAGE));
}

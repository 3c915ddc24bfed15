//! A VFIO type1 user on the iommufd fd: set the IOMMU, map guest RAM in chunks, query the
//! IOVA ranges, check the mappings through an access, punch holes (v1), unmap all.

mod common;
use common::*;
use uiommu_core::{EngineFile, Errno, FdTarget, Platform};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use uiommu_uapi::vfio::*;
use zerocopy::FromBytes;

const MIB: u64 = 1 << 20;

fn int_ioctl(h: &H, cmd: u32, arg: u64) -> Result<i32, Errno> {
    h.ctx.ioctl(&h.caller, cmd, arg)
}

fn map_dma(h: &H, vaddr: u64, iova: u64, size: u64) -> Result<i32, Errno> {
    let mut m =
        VfioIommuType1DmaMap { argsz: 32, flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE, vaddr, iova, size };
    h.ioctl(VFIO_IOMMU_MAP_DMA, &mut m)
}

fn unmap_dma(h: &H, iova: u64, size: u64, flags: u32) -> Result<u64, Errno> {
    let mut u = VfioIommuType1DmaUnmap { argsz: 24, flags, iova, size };
    h.ioctl(VFIO_IOMMU_UNMAP_DMA, &mut u)?;
    Ok(u.size)
}

/// Read `len` bytes at `iova` through a self-test access on the compat IOAS.
fn access_read(h: &H, access_fd: u32, iova: u64, len: u64) -> Result<Vec<u8>, Errno> {
    let dst = h.scratch + 0x8000;
    h.test_cmd(IOMMU_TEST_OP_ACCESS_RW, access_fd, &TestAccessRw { iova, length: len, uptr: dst, flags: 0, pad: 0 })?;
    let mut v = vec![0u8; len as usize];
    h.sim.read_user(&h.caller, dst, &mut v).unwrap();
    Ok(v)
}

fn run(version: u32) {
    let h = H::new();
    // Guest RAM: 8 MiB with a recognisable pattern.
    let ram = h.sim.mmap(PID, 8 * MIB, true);
    let pattern: Vec<u8> = (0..8 * MIB).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
    h.sim.write_user(&h.caller, ram, &pattern).unwrap();

    assert_eq!(int_ioctl(&h, VFIO_GET_API_VERSION, 0), Ok(0));
    assert_eq!(int_ioctl(&h, VFIO_CHECK_EXTENSION, version as u64), Ok(1));
    assert_eq!(int_ioctl(&h, VFIO_SET_IOMMU, version as u64), Err(Errno::ENODEV), "no container IOAS yet");
    let ioas = h.ioas_alloc();
    let mut v = IommuVfioIoas { size: 12, ioas_id: ioas, op: IOMMU_VFIO_IOAS_SET, reserved: 0 };
    h.ioctl(IOMMU_VFIO_IOAS, &mut v).unwrap();
    h.mock_domain(ioas).unwrap();
    assert_eq!(int_ioctl(&h, VFIO_SET_IOMMU, version as u64), Ok(0));

    // Map guest RAM in 1 MiB chunks at guest-physical IOVAs from 16 MiB.
    let base = 16 * MIB;
    for k in 0..8 {
        map_dma(&h, ram + k * MIB, base + k * MIB, MIB).unwrap();
    }
    assert_eq!(map_dma(&h, ram, base, MIB), Err(Errno::EEXIST));

    // GET_INFO: page sizes and the IOVA range capability.
    let mut info = [0u8; 128];
    info[..4].copy_from_slice(&128u32.to_ne_bytes());
    h.sim.write_user(&h.caller, h.scratch, &info).unwrap();
    int_ioctl(&h, VFIO_IOMMU_GET_INFO, h.scratch).unwrap();
    h.sim.read_user(&h.caller, h.scratch, &mut info).unwrap();
    let hdr = VfioIommuType1Info::read_from_bytes(&info[..24]).unwrap();
    assert_eq!(hdr.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    assert_eq!(hdr.iova_pgsizes & 4096, 4096);
    assert_eq!(hdr.cap_offset, 24);
    // Walk the chain to the IOVA range cap.
    let mut off = hdr.cap_offset as usize;
    let mut ranges = Vec::new();
    while off != 0 {
        let id = u16::from_ne_bytes([info[off], info[off + 1]]);
        let next = u32::from_ne_bytes(info[off + 4..off + 8].try_into().unwrap()) as usize;
        if id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            let n = u32::from_ne_bytes(info[off + 8..off + 12].try_into().unwrap()) as usize;
            for k in 0..n {
                let at = off + 16 + 16 * k;
                ranges.push((
                    u64::from_ne_bytes(info[at..at + 8].try_into().unwrap()),
                    u64::from_ne_bytes(info[at + 8..at + 16].try_into().unwrap()),
                ));
            }
        }
        off = next;
    }
    assert_eq!(ranges, vec![(0x100_0000, 0x7fff_ffff)], "the mock aperture");

    // The mappings, read through an access (an emulated device on the same IOAS).
    let (_, acc) =
        h.test_cmd(IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess { out_access_fd: 0, flags: 0 }).unwrap();
    assert!(matches!(h.sim.fd(&h.caller, acc.out_access_fd as i32), Ok(FdTarget::Engine(EngineFile::Access(_)))));
    for k in [0u64, 3, 7] {
        let got = access_read(&h, acc.out_access_fd, base + k * MIB + 100, 5000).unwrap();
        let at = (k * MIB + 100) as usize;
        assert_eq!(got, pattern[at..at + 5000], "chunk {k}");
    }

    // Hole punching: only type1 (v1) may unmap part of a mapping.
    let r = unmap_dma(&h, base + MIB + 4096, 8192, 0);
    if version == VFIO_TYPE1_IOMMU {
        assert_eq!(r, Ok(8192));
        assert_eq!(access_read(&h, acc.out_access_fd, base + MIB + 4096, 16), Err(Errno::ENOENT));
        assert_eq!(
            access_read(&h, acc.out_access_fd, base + MIB, 16).unwrap(),
            pattern[MIB as usize..MIB as usize + 16]
        );
    } else {
        assert_eq!(r, Err(Errno::ENOENT));
    }
    // An empty range is no error for VFIO.
    assert_eq!(unmap_dma(&h, 1 << 40, 4096, 0), Ok(0));
    assert_eq!(unmap_dma(&h, 4096, 0, VFIO_DMA_UNMAP_FLAG_ALL), Err(Errno::EINVAL));
    let expect = if version == VFIO_TYPE1_IOMMU { 8 * MIB - 8192 } else { 8 * MIB };
    assert_eq!(unmap_dma(&h, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL), Ok(expect));
    assert_eq!(access_read(&h, acc.out_access_fd, base, 16), Err(Errno::ENOENT));
    h.sim.close(acc.out_access_fd as i32);
    assert_eq!(h.m.total_pins(), 0);
    h.ctx.check_invariants().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "8 MiB of guest RAM is too slow to interpret")]
fn type1v2_user() {
    run(VFIO_TYPE1v2_IOMMU);
}

#[test]
#[cfg_attr(miri, ignore = "8 MiB of guest RAM is too slow to interpret")]
fn type1_user_punches_holes() {
    run(VFIO_TYPE1_IOMMU);
}

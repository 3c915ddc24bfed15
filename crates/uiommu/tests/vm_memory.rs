//! vm-memory integration: guest memory accesses translated through a uiommu IOAS.
//! (The crate's dev-dependency on itself enables the `vm-memory` feature for tests.)
#![cfg(feature = "vm-memory")]

use uiommu::vm_memory::IoasIommu;
use uiommu::{Device, Ioas, Iommufd, Iova, MapFlags};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Iommu, IommuMemory, Permissions};

const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);

/// Two guest RAM regions; the IOAS maps pieces of them at IOVAs unrelated to their GPAs.
fn setup() -> (GuestMemoryMmap, Ioas) {
    let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(0x1000_0000), 1 << 20)])
        .unwrap();
    let ioas = Ioas::new(&Iommufd::in_process().unwrap()).unwrap();
    // IOVA 0x4000_0000.. → GPA 0x2000.. (16 KiB, read/write)
    ioas.map_guest_memory(&guest, GuestAddress(0x2000), 0x4000, Iova(0x4000_0000), RW).unwrap();
    // IOVA 0x4000_4000.. → GPA 0x1000_0000.. (8 KiB, read-only): contiguous in IOVA space,
    // in another region of guest memory.
    ioas.map_guest_memory(&guest, GuestAddress(0x1000_0000), 0x2000, Iova(0x4000_4000), MapFlags::READ).unwrap();
    (guest, ioas)
}

#[test]
fn guest_memory_access_through_ioas() {
    let (guest, ioas) = setup();
    let dma = IommuMemory::new(guest.clone(), IoasIommu::new(&ioas, &guest).unwrap(), true, ());

    // A write by IOVA lands at the guest physical address the IOAS maps it to.
    dma.write_obj(0x1122_3344_5566_7788_u64, GuestAddress(0x4000_0010)).unwrap();
    assert_eq!(guest.read_obj::<u64>(GuestAddress(0x2010)).unwrap(), 0x1122_3344_5566_7788);

    // A read spanning both mappings (and both guest regions) is stitched together.
    guest.write_slice(b"tail", GuestAddress(0x2000 + 0x4000 - 4)).unwrap();
    guest.write_slice(b"head", GuestAddress(0x1000_0000)).unwrap();
    let mut buf = [0u8; 8];
    dma.read_slice(&mut buf, GuestAddress(0x4000_4000 - 4)).unwrap();
    assert_eq!(&buf, b"tailhead");
    let slices: Vec<_> = dma
        .iommu()
        .translate(GuestAddress(0x4000_4000 - 4), 8, Permissions::Read)
        .unwrap()
        .map(|m| (m.base.0, m.length))
        .collect();
    assert_eq!(slices, vec![(0x5ffc, 4), (0x1000_0000, 4)]);

    // Permissions follow the mapping: the second mapping is read-only.
    assert!(dma.write_obj(1u32, GuestAddress(0x4000_4000)).is_err());
    assert!(!dma.check_range(GuestAddress(0x4000_4000), 4, Permissions::Write));
    assert!(dma.check_range(GuestAddress(0x4000_4000), 4, Permissions::Read));
    // Unmapped IOVAs do not translate.
    assert!(dma.read_obj::<u32>(GuestAddress(0x2000)).is_err());
    assert!(dma.read_obj::<u32>(GuestAddress(0x4000_6000)).is_err());

    // Unmapping invalidates what the IOTLB cached.
    assert!(dma.check_range(GuestAddress(0x4000_0000), 8, Permissions::ReadWrite));
    ioas.unmap(Iova(0x4000_0000), 0x4000).unwrap();
    assert!(!dma.check_range(GuestAddress(0x4000_0000), 8, Permissions::Read));
    assert!(dma.read_obj::<u64>(GuestAddress(0x4000_0010)).is_err());
    // Remapping elsewhere in guest memory is picked up.
    ioas.map_guest_memory(&guest, GuestAddress(0x8000), 0x4000, Iova(0x4000_0000), RW).unwrap();
    dma.write_obj(7u32, GuestAddress(0x4000_0000)).unwrap();
    assert_eq!(guest.read_obj::<u32>(GuestAddress(0x8000)).unwrap(), 7);

    // With the IOMMU off, addresses are guest physical again.
    let mut direct = dma.clone();
    direct.set_iommu_enabled(false);
    assert_eq!(direct.read_obj::<u32>(GuestAddress(0x8000)).unwrap(), 7);
}

#[test]
fn device_dma_and_vm_memory_agree() {
    let (guest, ioas) = setup();
    let dma = IommuMemory::new(guest.clone(), IoasIommu::new(&ioas, &guest).unwrap(), true, ());
    // An emulated device behind the same IOAS writes through its IO page table; a virtio
    // backend reading through vm-memory at the same IOVA sees the bytes.
    let dev = Device::mock(&ioas).unwrap();
    dev.dma_write(Iova(0x4000_0100), b"from the device").unwrap();
    let mut buf = [0u8; 15];
    dma.read_slice(&mut buf, GuestAddress(0x4000_0100)).unwrap();
    assert_eq!(&buf, b"from the device");
    // And the other way round.
    dma.write_slice(b"from vm-memory", GuestAddress(0x4000_0200)).unwrap();
    let mut b2 = [0u8; 14];
    dev.dma_read(Iova(0x4000_0200), &mut b2).unwrap();
    assert_eq!(&b2, b"from vm-memory");
}

#[test]
fn map_guest_memory_checks_bounds() {
    let (guest, ioas) = setup();
    // Past the end of a region, or not guest memory at all.
    assert!(ioas.map_guest_memory(&guest, GuestAddress(0xff000), 0x2000, Iova(0x5000_0000), RW).is_err());
    assert!(ioas.map_guest_memory(&guest, GuestAddress(0x200_0000), 0x1000, Iova(0x5000_0000), RW).is_err());
}

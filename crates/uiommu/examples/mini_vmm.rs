//! A miniature VMM: guest RAM, an IOAS mapping it, an emulated device doing DMA into it,
//! and the IO page fault a device gets once the mapping is gone.
//!
//! Run with `cargo run -p uiommu --example mini_vmm` (in-process engine), or against
//! `/dev/iommu` with `--kernel` (e.g. under `uiommu run`, where device DMA goes through an
//! emulated-device access instead).

use uiommu::{Access, Device, Error, HostMemory, Ioas, Iommufd, Iova, MapFlags};

/// Guest RAM size and where the guest's device sees it (IOVA = guest physical address + base).
const RAM_SIZE: usize = 2 << 20;
const DMA_BASE: Iova = Iova(0x100_0000);

fn main() -> Result<(), Error> {
    run(std::env::args().any(|a| a == "--kernel"))
}

/// The whole story on the in-process engine, or on `/dev/iommu` with `kernel`.
pub(crate) fn run(kernel: bool) -> Result<(), Error> {
    let iommufd = if kernel { Iommufd::open()? } else { Iommufd::in_process()? };
    println!("iommufd: {} backend", iommufd.backend());

    // 1. Guest RAM: anonymous memory (mmap) owned by the VMM.
    let ram = HostMemory::new(RAM_SIZE)?;
    println!("guest RAM: {} KiB at host address {:#x}", ram.len() >> 10, ram.host_address());

    // 2. An I/O address space, and the guest RAM mapped into it.
    let ioas = Ioas::new(&iommufd)?;
    ioas.map_at(DMA_BASE, &ram, 0, RAM_SIZE as u64, MapFlags::READ | MapFlags::WRITE)?;
    println!("IOAS {}: mapped guest RAM at IOVA {DMA_BASE}..{:#x}", ioas.id(), DMA_BASE.0 + RAM_SIZE as u64);

    // 3. An emulated device attached to the IOAS (through an automatic domain).
    let dev = Device::mock(&ioas)?;
    println!("device {} attached, domain (HWPT) {}", dev.id(), dev.hwpt_id());

    // 4. The device DMAs a packet into guest RAM at guest physical address 0x3000.
    let gpa = 0x3000u64;
    let iova = DMA_BASE.unchecked_add(gpa);
    let packet = b"\x45\x00 hello from the device";
    // The kernel has no "device, DMA now" call: there, an emulated-device access does it.
    let access = if iommufd.supports_device_dma() { None } else { Some(Access::new(&ioas)?) };
    match &access {
        None => dev.dma_write(iova, packet)?,
        Some(a) => a.write(iova, packet)?,
    }
    println!("device wrote {} bytes at IOVA {iova}", packet.len());

    // 5. The VMM finds the bytes in guest RAM.
    let mut seen = vec![0u8; packet.len()];
    ram.read_slice(&mut seen, gpa as usize)?;
    assert_eq!(&seen, packet);
    println!("guest RAM at GPA {gpa:#x}: {:?}", String::from_utf8_lossy(&seen[2..]));

    // 6. Unmap guest RAM: the device loses access.
    let n = ioas.unmap(DMA_BASE, RAM_SIZE as u64)?;
    println!("unmapped {n:#x} bytes");
    let r = match &access {
        None => dev.dma_write(iova, b"late"),
        Some(a) => a.write(iova, b"late"),
    };
    match r {
        Err(e @ Error::DmaFault { .. }) => println!("DMA to IOVA {iova} after unmap: {e}"),
        Err(e) if access.is_some() => println!("access to IOVA {iova} after unmap: {e} (errno {})", e.errno()),
        other => panic!("DMA to an unmapped IOVA must fault, got {other:?}"),
    }
    let mut check = [0u8; 4];
    ram.read_slice(&mut check, gpa as usize)?;
    assert_eq!(&check, &packet[..4], "guest RAM must be untouched by the faulting DMA");
    println!("mini_vmm: ok");
    Ok(())
}

/// `cargo test` runs the example (in-process) as a test.
#[test]
fn mini_vmm_runs() {
    run(false).unwrap();
}

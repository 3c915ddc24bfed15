//! `uiommu demo`: one screen showing what an IOMMU does, on the in-process engine.

use std::process::ExitCode;
use uiommu::{Device, Error, HostMemory, HwPagetable, HwptFlags, Ioas, Iommufd, Iova, MapFlags};

const BASE: Iova = Iova(0x100_0000);
const LEN: u64 = 64 << 10;
const PAGE: u64 = 4096;

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn say(line: impl AsRef<str>) {
    println!("   {}", line.as_ref());
}

/// Run the demo; any failure is reported as an error.
fn story() -> Result<(), Error> {
    println!("uiommu demo: an IOMMU at work, emulated inside this process (no /dev/iommu needed)");

    step(1, "Open an iommufd and create an I/O address space (IOAS)");
    let fd = Iommufd::in_process()?;
    let ioas = Ioas::new(&fd)?;
    // One IOPTE per 4 KiB page, so dirty tracking reports single pages.
    ioas.set_huge_pages(false)?;
    say(format!("IOMMU_IOAS_ALLOC -> IOAS {}", ioas.id()));

    step(2, "Map a buffer of host memory into it");
    let mem = HostMemory::new(LEN as usize)?;
    ioas.map_at(BASE, &mem, 0, LEN, MapFlags::READ | MapFlags::WRITE)?;
    say(format!("{} KiB at host address {:#x}", LEN >> 10, mem.host_address()));
    say(format!("IOMMU_IOAS_MAP -> IOVA {BASE}..{:#x}, read+write", BASE.0 + LEN));

    step(3, "Attach an emulated device, through a domain that can track dirty pages");
    let dev = Device::mock(&ioas)?;
    let hwpt = HwPagetable::new(&dev, &ioas, HwptFlags::DIRTY_TRACKING)?;
    dev.replace(&hwpt)?;
    say(format!("device {} -> domain (HWPT) {} -> IOAS {}", dev.id(), hwpt.id(), ioas.id()));

    step(4, "The device DMAs into memory by IOVA; the IOMMU translates");
    let at = BASE.unchecked_add(0x2000);
    dev.dma_write(at, b"hello, iommu")?;
    let mut seen = [0u8; 12];
    mem.read_slice(&mut seen, 0x2000)?;
    say(format!("device writes \"hello, iommu\" at IOVA {at}"));
    say(format!("the CPU reads the buffer at offset 0x2000: \"{}\"", String::from_utf8_lossy(&seen)));

    step(5, "Dirty tracking: which pages did the device write?");
    hwpt.set_dirty_tracking(true)?;
    let pages = [BASE, BASE.unchecked_add(5 * PAGE), BASE.unchecked_add(11 * PAGE)];
    for p in pages {
        dev.dma_write(p.unchecked_add(100), b"x")?;
    }
    let bm = hwpt.dirty_bitmap(BASE, LEN, PAGE, true)?;
    let picture: String =
        (0..LEN / PAGE).map(|i| if bm.is_dirty(BASE.unchecked_add(i * PAGE)) { '#' } else { '.' }).collect();
    say("tracking on; the device writes 3 pages; IOMMU_HWPT_GET_DIRTY_BITMAP (4 KiB pages):");
    say(format!(
        "[{picture}]  {} dirty: {}",
        bm.count(),
        bm.dirty_pages().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
    ));
    let again = hwpt.dirty_bitmap(BASE, LEN, PAGE, false)?;
    say(format!("reading cleared them: {} dirty now", again.count()));

    step(6, "Unmap the buffer, and the device loses access");
    let n = ioas.unmap(BASE, LEN)?;
    say(format!("IOMMU_IOAS_UNMAP -> {} KiB unmapped", n >> 10));
    match dev.dma_write(at, b"too late") {
        Err(e @ Error::DmaFault { .. }) => say(format!("device DMA to IOVA {at}: {e}")),
        other => {
            say(format!("device DMA to IOVA {at}: unexpectedly {other:?}"));
            return Err(Error::InvalidArgument);
        }
    }
    mem.read_slice(&mut seen, 0x2000)?;
    say(format!(
        "the buffer still reads \"{}\": the faulting DMA never reached memory",
        String::from_utf8_lossy(&seen)
    ));

    println!("\nDone. Run any iommufd program under `uiommu run`, or watch its ioctls with `uiommu trace`.");
    Ok(())
}

/// `uiommu demo`.
pub fn demo(args: &[std::ffi::OsString]) -> ExitCode {
    if !args.is_empty() {
        eprintln!("uiommu demo: takes no arguments");
        return ExitCode::from(2);
    }
    match story() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uiommu demo: {e}");
            ExitCode::FAILURE
        }
    }
}

//! VFIO type1 container compatibility on the iommufd fd (the kernel's `vfio_compat.c`)
//! and `IOMMU_VFIO_IOAS`.

use crate::context::Context;
use crate::errno::{Errno, Result};
use crate::ioas::{map_pages, set_large_pages, NewPages};
use crate::mock::pagetable::Prot;
use crate::object::ObjType;
use crate::pages::Source;
use crate::platform::{Caller, Platform, PAGE_SIZE};
use crate::ucmd::Ucmd;
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::vfio::*;
use zerocopy::{FromZeros, IntoBytes};

/// `IOMMU_VFIO_IOAS`: get, set or clear the compat IOAS.
pub(crate) fn vfio_ioas<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuVfioIoas = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut g = ctx.lock();
    match cmd.op {
        IOMMU_VFIO_IOAS_GET => {
            cmd.ioas_id = g.vfio_ioas.ok_or(Errno::ENODEV)?;
            drop(g);
            uc.respond(&cmd)?;
        }
        IOMMU_VFIO_IOAS_SET => {
            g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
            g.vfio_ioas = Some(cmd.ioas_id);
        }
        IOMMU_VFIO_IOAS_CLEAR => g.vfio_ioas = None,
        _ => return Err(Errno::EOPNOTSUPP),
    }
    Ok(0)
}

/// VFIO container ioctls (command numbers outside the iommufd range).
pub(crate) fn ioctl(ctx: &Arc<Context>, caller: &Caller, cmd: u32, arg: u64) -> Result<i32> {
    match cmd {
        VFIO_GET_API_VERSION => Ok(VFIO_API_VERSION as i32),
        VFIO_CHECK_EXTENSION => check_extension(ctx, arg),
        VFIO_SET_IOMMU => set_iommu(ctx, arg),
        VFIO_IOMMU_GET_INFO => get_info(ctx, caller, arg),
        VFIO_IOMMU_MAP_DMA => map_dma(ctx, caller, arg),
        VFIO_IOMMU_UNMAP_DMA => unmap_dma(ctx, caller, arg),
        _ => Err(Errno::ENOTTY),
    }
}

fn compat_ioas(g: &crate::context::Ictx) -> Result<u32> {
    g.vfio_ioas.filter(|&id| g.objs.expect(id, ObjType::Ioas).is_ok()).ok_or(Errno::ENODEV)
}

#[allow(non_upper_case_globals)] // VFIO_TYPE1v2_IOMMU is the uAPI's spelling
fn check_extension(ctx: &Arc<Context>, ext: u64) -> Result<i32> {
    match u32::try_from(ext).unwrap_or(u32::MAX) {
        VFIO_TYPE1_IOMMU | VFIO_TYPE1v2_IOMMU | VFIO_UNMAP_ALL => Ok(1),
        VFIO_DMA_CC_IOMMU => {
            let g = ctx.lock();
            let ioas = compat_ioas(&g)?;
            // The mock IOMMU cannot enforce cache coherency: any paging domain says 0.
            Ok(g.ioas[&ioas].domains.is_empty() as i32)
        }
        _ => Ok(0),
    }
}

#[allow(non_upper_case_globals)]
fn set_iommu(ctx: &Arc<Context>, ty: u64) -> Result<i32> {
    let ty = u32::try_from(ty).unwrap_or(u32::MAX);
    if ty != VFIO_TYPE1_IOMMU && ty != VFIO_TYPE1v2_IOMMU {
        return Err(Errno::EINVAL);
    }
    let mut g = ctx.lock();
    let ioas = compat_ioas(&g)?;
    if ty == VFIO_TYPE1_IOMMU {
        set_large_pages(&mut g, ioas, false)?;
    }
    Ok(0)
}

/// Page sizes a type1 user may rely on: the AND of the domains' sizes, at least PAGE_SIZE
/// granular and at least the IOAS alignment.
fn pagesizes(g: &crate::context::Ictx, ioas: u32) -> u64 {
    let mut sizes = u64::MAX;
    for d in &g.ioas[&ioas].domains {
        sizes &= g.hwpt[d].pt.pgsize_bitmap();
    }
    if sizes & (PAGE_SIZE - 1) != 0 {
        sizes &= !(PAGE_SIZE - 1);
        sizes |= PAGE_SIZE;
    }
    sizes.max(g.iova_alignment(ioas))
}

fn get_info(ctx: &Arc<Context>, caller: &Caller, arg: u64) -> Result<i32> {
    let p = &*ctx.machine.platform;
    let mut info = VfioIommuType1Info::new_zeroed();
    p.read_user(caller, arg, &mut info.as_mut_bytes()[..16])?;
    if info.argsz < 16 {
        return Err(Errno::EINVAL);
    }
    let argsz = info.argsz as u64;
    let g = ctx.lock();
    let ioas = compat_ioas(&g)?;
    info.flags = VFIO_IOMMU_INFO_PGSIZES;
    info.iova_pgsizes = pagesizes(&g, ioas);
    info.cap_offset = 0;
    let gaps = g.ioas[&ioas].reserved.gaps();
    drop(g);
    let mut total: u64 = 24;
    let mut last_cap: Option<u64> = None;
    for cap in 0..2 {
        let at = total;
        let avail = argsz.saturating_sub(at);
        let size: u64 = if cap == 0 {
            let mut c = VfioIommuType1InfoDmaAvail::new_zeroed();
            c.header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;
            c.header.version = 1;
            c.avail = u32::MAX;
            let bytes = &c.as_bytes()[..12];
            if argsz > at && avail >= 12 {
                p.write_user(caller, arg + at, bytes)?;
            }
            12
        } else {
            let n = gaps.len() as u64;
            for (k, &(start, end)) in gaps.iter().enumerate() {
                if argsz > at && avail >= 16 + 16 * (k as u64 + 1) {
                    let r = VfioIovaRange { start, end };
                    p.write_user(caller, arg + at + 16 + 16 * k as u64, r.as_bytes())?;
                }
            }
            if argsz > at && avail >= 16 + 16 * n {
                let mut head = [0u8; 16];
                head[0..2].copy_from_slice(&VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE.to_ne_bytes());
                head[2..4].copy_from_slice(&1u16.to_ne_bytes());
                head[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
                p.write_user(caller, arg + at, &head)?;
            }
            16 + 16 * n
        };
        if let Some(prev) = last_cap {
            if argsz >= at {
                p.write_user(caller, prev + 4, &(at as u32).to_ne_bytes())?;
            }
        }
        last_cap = Some(arg + at);
        total += size.div_ceil(8) * 8;
    }
    if argsz >= total {
        info.cap_offset = 24;
    }
    info.argsz = total as u32;
    info.flags |= VFIO_IOMMU_INFO_CAPS;
    let n = (argsz as usize).min(24);
    p.write_user(caller, arg, &info.as_bytes()[..n])?;
    Ok(0)
}

fn map_dma(ctx: &Arc<Context>, caller: &Caller, arg: u64) -> Result<i32> {
    let p = &*ctx.machine.platform;
    let mut map = VfioIommuType1DmaMap::new_zeroed();
    p.read_user(caller, arg, map.as_mut_bytes())?;
    if map.argsz < 32 || map.flags & !(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE) != 0 {
        return Err(Errno::EINVAL);
    }
    let prot = Prot { read: map.flags & VFIO_DMA_MAP_FLAG_READ != 0, write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0 };
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    let ioas = compat_ioas(&g)?;
    map.vaddr.checked_add(map.size).ok_or(Errno::EOVERFLOW)?;
    if map.size == 0 || map.size > u64::MAX - PAGE_SIZE {
        return Err(Errno::EINVAL);
    }
    let src = NewPages {
        source: Source::Va { pid: caller.pid, base: map.vaddr & !(PAGE_SIZE - 1) },
        addr: map.vaddr,
        writable: prot.write,
    };
    map_pages(m, &mut g, caller, ioas, src, map.size, map.iova, true, prot)?;
    Ok(0)
}

fn unmap_dma(ctx: &Arc<Context>, caller: &Caller, arg: u64) -> Result<i32> {
    let p = &*ctx.machine.platform;
    let mut un = VfioIommuType1DmaUnmap::new_zeroed();
    p.read_user(caller, arg, &mut un.as_mut_bytes()[..24])?;
    if un.argsz < 24 || un.flags & !VFIO_DMA_UNMAP_FLAG_ALL != 0 {
        return Err(Errno::EINVAL);
    }
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    let ioas = compat_ioas(&g)?;
    let (done, res) = if un.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0 {
        if un.iova != 0 || un.size != 0 {
            return Err(Errno::EINVAL);
        }
        g.unmap_range(m, ioas, 0, u64::MAX)
    } else {
        if !g.ioas[&ioas].large_pages {
            let mut cuts = vec![un.iova.wrapping_add(un.size).wrapping_sub(1)];
            if un.iova != 0 {
                cuts.push(un.iova - 1);
            }
            // Both cuts or neither.
            let mut split = Vec::new();
            for c in cuts {
                match g.split_at(ioas, c) {
                    Ok(true) => split.push(c),
                    Ok(false) => {}
                    Err(e) => {
                        for c in split.into_iter().rev() {
                            g.unsplit_at(ioas, c);
                        }
                        return Err(e);
                    }
                }
            }
        }
        if un.size == 0 {
            return Err(Errno::EINVAL);
        }
        match un.iova.checked_add(un.size - 1) {
            Some(last) if un.iova != u64::MAX && un.size != u64::MAX => g.unmap_range(m, ioas, un.iova, last),
            _ => return Err(Errno::EOVERFLOW),
        }
    };
    drop(g);
    un.size = done;
    p.write_user(caller, arg, &un.as_bytes()[..24])?;
    res.map(|_| 0)
}

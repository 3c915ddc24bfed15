//! IOAS ioctls (the kernel's `ioas.c`): argument checks in the kernel's order, then the
//! [`crate::io_pagetable`] engine.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::io_pagetable::{Area, Ioas};
use crate::iova;
use crate::machine::{AcctMode, Machine};
use crate::mock::pagetable::Prot;
use crate::object::ObjType;
use crate::pages::{owner_for, Pages, Source};
use crate::platform::Platform;
use crate::platform::{Caller, FdTarget, PAGE_SIZE};
use crate::ucmd::Ucmd;
use crate::EngineFile;
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use zerocopy::IntoBytes;

const MAP_FLAGS: u32 = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
/// Self-test only: `IOAS_COPY.src_iova` is `{nth_area, offset}` (syzkaller mode).
const COPY_FLAG_SYZ: u32 = 1 << 16;

pub(crate) fn alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuIoasAlloc = uc.read()?;
    if cmd.flags != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut g = ctx.lock();
    let id = g.objs.reserve(ObjType::Ioas)?;
    cmd.out_ioas_id = id;
    if let Err(e) = uc.respond(&cmd) {
        g.objs.remove(id);
        return Err(e);
    }
    g.ioas.insert(id, Ioas::default());
    g.objs.publish(id);
    Ok(0)
}

pub(crate) fn destroy(ctx: &Context, g: &mut Ictx, id: u32) {
    let m = &*ctx.machine;
    let keys: Vec<u64> = g.ioas[&id].areas.keys().copied().collect();
    for k in keys {
        g.remove_area(m, id, k);
    }
    g.ioas.remove(&id);
    if g.vfio_ioas == Some(id) {
        g.vfio_ioas = None;
    }
}

pub(crate) fn iova_ranges<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    // (`cmd` stays unchanged and the reply is a new value: see `Ucmd::read`.)
    let cmd: IommuIoasIovaRanges = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let g = ctx.lock();
    let ioas = g.ioas_ref(cmd.ioas_id)?;
    let cap = cmd.num_iovas as usize;
    let mut total = 0usize;
    let mut res = Ok(());
    ioas.reserved.for_each_gap(|start, last| {
        if total < cap && res.is_ok() {
            let r = IommuIovaRange { start, last };
            res = uc.write_user(cmd.allowed_iovas + (total * 16) as u64, r.as_bytes());
        }
        total += 1;
    });
    res?;
    let out_iova_alignment = g.iova_alignment_of(ioas);
    drop(g);
    uc.respond(&IommuIoasIovaRanges { num_iovas: total as u32, out_iova_alignment, ..cmd })?;
    if total > cap {
        return Err(Errno::EMSGSIZE);
    }
    Ok(0)
}

pub(crate) fn allow_iovas<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let cmd: IommuIoasAllowIovas = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut g = ctx.lock();
    g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
    let mut list: Vec<(u64, u64)> = Vec::new();
    for k in 0..cmd.num_iovas as u64 {
        let mut r = IommuIovaRange::default();
        uc.read_user(cmd.allowed_iovas + k * 16, r.as_mut_bytes())?;
        // One interval-tree node per range.
        fail_point(FailSite::Alloc)?;
        list.push((r.start, r.last));
        iova::check_allowed(&list)?;
    }
    let ioas = g.ioas.get_mut(&cmd.ioas_id).expect("ioas");
    if list.iter().any(|&(s, l)| ioas.reserved.intersects(s, l)) {
        return Err(Errno::EADDRINUSE);
    }
    ioas.allowed = list;
    Ok(0)
}

fn prot_of(flags: u32) -> Prot {
    Prot { read: flags & IOMMU_IOAS_MAP_READABLE != 0, write: flags & IOMMU_IOAS_MAP_WRITEABLE != 0 }
}

/// Where new pages come from, for [`map_pages`].
pub(crate) struct NewPages {
    pub source: Source,
    /// Source address used for alignment: the user VA or the file byte offset.
    pub addr: u64,
    pub writable: bool,
}

/// Choose or check the IOVA of a new mapping of `length` bytes (IOAS_MAP steps 6-7).
pub(crate) fn place_iova(g: &Ictx, ioas_id: u32, length: u64, addr: u64, iova: u64, fixed: bool) -> Result<u64> {
    let align = g.iova_alignment(ioas_id);
    if !length.is_multiple_of(align) {
        return Err(Errno::EINVAL);
    }
    let ioas = &g.ioas[&ioas_id];
    if !fixed {
        return iova::alloc_iova(length, addr, align, &ioas.allowed, &ioas.used_ranges());
    }
    if !iova.is_multiple_of(align) {
        return Err(Errno::EINVAL);
    }
    let last = iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?;
    if ioas.reserved.intersects(iova, last) {
        return Err(Errno::EINVAL);
    }
    if ioas.intersects_area(iova, last) {
        return Err(Errno::EEXIST);
    }
    Ok(iova)
}

/// IOAS_MAP steps 6-9 (shared with MAP_FILE and VFIO MAP_DMA). Returns the IOVA.
#[allow(clippy::too_many_arguments)]
pub(crate) fn map_pages(
    m: &Machine,
    g: &mut Ictx,
    caller: &Caller,
    ioas_id: u32,
    src: NewPages,
    length: u64,
    iova: u64,
    fixed: bool,
    prot: Prot,
) -> Result<u64> {
    let iova = place_iova(g, ioas_id, length, src.addr, iova, fixed)?;
    let align = g.iova_alignment(ioas_id);
    let in_page = src.addr % PAGE_SIZE;
    if !in_page.is_multiple_of(align) {
        return Err(Errno::EINVAL);
    }
    let npages = (in_page + length).div_ceil(PAGE_SIZE);
    let mode = if matches!(src.source, Source::DmaBuf { .. }) { AcctMode::None } else { g.acct_mode() };
    // The page store (`iopt_alloc_pages`).
    fail_point(FailSite::Alloc)?;
    let store = g.new_store(Pages::new(src.source, npages, src.writable, owner_for(caller, mode)));
    g.stores.get_mut(&store).expect("store").area_refs = 0;
    let area = Area {
        iova,
        last: iova + length - 1,
        store,
        offset: in_page,
        prot,
        num_accesses: 0,
        num_locks: 0,
        prevent_access: false,
        revoked: false,
    };
    if let Err(e) = g.add_area(m, ioas_id, area) {
        // add_area dropped its reference; a store nobody references is gone.
        g.stores.remove(&store);
        return Err(e);
    }
    Ok(iova)
}

/// The first checks of IOAS_MAP and IOAS_MAP_FILE, in the kernel's order.
fn check_map_args(flags: u32, reserved: u32, iova: u64, length: u64) -> Result<()> {
    if flags & !MAP_FLAGS != 0 || reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if iova == u64::MAX || length == u64::MAX {
        return Err(Errno::EOVERFLOW);
    }
    if flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE) == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

pub(crate) fn map<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuIoasMap = uc.read()?;
    check_map_args(cmd.flags, cmd.reserved, cmd.iova, cmd.length)?;
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
    cmd.user_va.checked_add(cmd.length).ok_or(Errno::EOVERFLOW)?;
    if cmd.length == 0 || cmd.length > u64::MAX - PAGE_SIZE {
        return Err(Errno::EINVAL);
    }
    let src = NewPages {
        source: Source::Va { pid: uc.caller.pid, base: cmd.user_va & !(PAGE_SIZE - 1) },
        addr: cmd.user_va,
        writable: cmd.flags & IOMMU_IOAS_MAP_WRITEABLE != 0,
    };
    let fixed = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0;
    cmd.iova = map_pages(m, &mut g, uc.caller, cmd.ioas_id, src, cmd.length, cmd.iova, fixed, prot_of(cmd.flags))?;
    drop(g);
    uc.respond(&cmd)?;
    Ok(0)
}

pub(crate) fn map_file<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuIoasMapFile = uc.read()?;
    // MAP_FILE has no reserved field.
    check_map_args(cmd.flags, 0, cmd.iova, cmd.length)?;
    let m = &*ctx.machine;
    {
        let g = ctx.lock();
        g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
    }
    if cmd.length == 0 {
        return Err(Errno::EINVAL);
    }
    cmd.start.checked_add(cmd.length - 1).ok_or(Errno::EOVERFLOW)?;
    let source = match m.platform.fd(uc.caller, cmd.fd)? {
        FdTarget::Engine(EngineFile::DmaBuf(buf)) => {
            if cmd.start + cmd.length > buf.len || cmd.length / PAGE_SIZE >= u32::MAX as u64 {
                return Err(Errno::EINVAL);
            }
            if buf.is_revoked() {
                return Err(Errno::ENODEV);
            }
            Source::DmaBuf { buf, pgoff: cmd.start / PAGE_SIZE }
        }
        FdTarget::Engine(_) => Source::File { file: Arc::new(crate::mock::NotAFile), pgoff: cmd.start / PAGE_SIZE },
        FdTarget::Host(file) => Source::File { file, pgoff: cmd.start / PAGE_SIZE },
    };
    // The page store's own limit (the kernel's `iopt_alloc_pages`), after the fd lookup.
    if cmd.length > u64::MAX - PAGE_SIZE {
        return Err(Errno::EINVAL);
    }
    let mut g = ctx.lock();
    g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
    let src = NewPages { source, addr: cmd.start, writable: cmd.flags & IOMMU_IOAS_MAP_WRITEABLE != 0 };
    let fixed = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0;
    cmd.iova = map_pages(m, &mut g, uc.caller, cmd.ioas_id, src, cmd.length, cmd.iova, fixed, prot_of(cmd.flags))?;
    drop(g);
    uc.respond(&cmd)?;
    Ok(0)
}

pub(crate) fn copy<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuIoasCopy = uc.read()?;
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    if cmd.flags & COPY_FLAG_SYZ != 0 {
        cmd.flags &= !COPY_FLAG_SYZ;
        cmd.src_iova = syz_iova(&g, cmd.src_ioas_id, cmd.src_iova);
    }
    if cmd.flags & !MAP_FLAGS != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if cmd.length == u64::MAX || cmd.src_iova == u64::MAX || cmd.dst_iova == u64::MAX {
        return Err(Errno::EOVERFLOW);
    }
    if cmd.flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE) == 0 {
        return Err(Errno::EINVAL);
    }
    g.objs.expect(cmd.src_ioas_id, ObjType::Ioas)?;
    if cmd.length == 0 {
        return Err(Errno::EINVAL);
    }
    let src_last = cmd.src_iova.checked_add(cmd.length - 1).ok_or(Errno::EOVERFLOW)?;
    // The source range must be covered by back-to-back areas.
    let src = &g.ioas[&cmd.src_ioas_id];
    let mut pieces: Vec<(u64, u64, u64)> = Vec::new(); // (store, store byte offset, len)
    let mut expect = cmd.src_iova;
    for k in src.areas_in(cmd.src_iova, src_last) {
        let a = &src.areas[&k];
        if a.iova > expect {
            return Err(Errno::ENOENT);
        }
        let s = expect;
        let l = a.last.min(src_last);
        pieces.push((a.store, a.offset + (s - a.iova), l - s + 1));
        if l == src_last {
            expect = 0;
            break;
        }
        expect = l + 1;
    }
    if pieces.is_empty() || pieces.iter().map(|p| p.2).sum::<u64>() != cmd.length {
        return Err(Errno::ENOENT);
    }
    let _ = expect;
    g.objs.expect(cmd.dst_ioas_id, ObjType::Ioas)?;
    let writable = cmd.flags & IOMMU_IOAS_MAP_WRITEABLE != 0;
    let first_addr = source_addr(&g.stores[&pieces[0].0], pieces[0].1);
    let fixed = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0;
    let dst = cmd.dst_ioas_id;
    let iova = place_iova(&g, dst, cmd.length, first_addr, cmd.dst_iova, fixed)?;
    let align = g.iova_alignment(dst);
    for &(store, off, _) in &pieces {
        if !(off % PAGE_SIZE).is_multiple_of(align) {
            return Err(Errno::EINVAL);
        }
        if writable && !g.stores[&store].writable {
            return Err(Errno::EPERM);
        }
    }
    let mut at = iova;
    let mut added = Vec::new();
    for &(store, offset, len) in &pieces {
        let area = Area {
            iova: at,
            last: at + len - 1,
            store,
            offset,
            prot: prot_of(cmd.flags),
            num_accesses: 0,
            num_locks: 0,
            prevent_access: false,
            revoked: false,
        };
        if let Err(e) = g.add_area(m, dst, area) {
            for k in added {
                g.remove_area(m, dst, k);
            }
            return Err(e);
        }
        added.push(at);
        at += len;
    }
    cmd.dst_iova = iova;
    drop(g);
    uc.respond(&cmd)?;
    Ok(0)
}

/// The source address a store byte offset corresponds to (for IOVA alignment).
fn source_addr(p: &Pages, off: u64) -> u64 {
    match &p.source {
        Source::Va { base, .. } => base + off,
        Source::File { pgoff, .. } | Source::DmaBuf { pgoff, .. } => pgoff * PAGE_SIZE + off,
    }
}

/// Self-test syzkaller addressing: `{u32 nth_area, u32 offset}` → IOVA.
pub(crate) fn syz_iova(g: &Ictx, ioas_id: u32, v: u64) -> u64 {
    let nth = (v & 0xffff_ffff) as usize;
    let off = v >> 32;
    g.ioas.get(&ioas_id).and_then(|i| i.areas.values().nth(nth)).map_or(0, |a| a.iova + off)
}

pub(crate) fn unmap<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuIoasUnmap = uc.read()?;
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    g.objs.expect(cmd.ioas_id, ObjType::Ioas)?;
    let (start, last, all) = if cmd.iova == 0 && cmd.length == u64::MAX {
        (0, u64::MAX, true)
    } else {
        if cmd.iova == u64::MAX || cmd.length == u64::MAX {
            return Err(Errno::EOVERFLOW);
        }
        if cmd.length == 0 {
            return Err(Errno::EINVAL);
        }
        (cmd.iova, cmd.iova.checked_add(cmd.length - 1).ok_or(Errno::EOVERFLOW)?, false)
    };
    let (done, res) = g.unmap_range(m, cmd.ioas_id, start, last);
    res?;
    if done == 0 && !all {
        return Err(Errno::ENOENT);
    }
    drop(g);
    cmd.length = done;
    uc.respond(&cmd)?;
    Ok(0)
}

pub(crate) fn option<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    // (`cmd` stays unchanged: the handler then reads its fields straight from the
    // read-ahead, see `Ucmd::read`.)
    let cmd: IommuOption = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut val64 = cmd.val64;
    let mut g = ctx.lock();
    match cmd.option_id {
        IOMMU_OPTION_RLIMIT_MODE => {
            if cmd.object_id != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            match cmd.op {
                IOMMU_OPTION_OP_GET => val64 = (g.acct_mode() == AcctMode::Mm) as u64,
                IOMMU_OPTION_OP_SET => {
                    if !uc.caller.cap_sys_resource {
                        return Err(Errno::EPERM);
                    }
                    if !g.objs.is_empty() {
                        return Err(Errno::EBUSY);
                    }
                    g.acct_mode = Some(match cmd.val64 {
                        0 => AcctMode::User,
                        1 => AcctMode::Mm,
                        _ => return Err(Errno::EINVAL),
                    });
                }
                _ => return Err(Errno::EOPNOTSUPP),
            }
        }
        IOMMU_OPTION_HUGE_PAGES => {
            let large_pages = g.ioas_ref(cmd.object_id)?.large_pages;
            match cmd.op {
                IOMMU_OPTION_OP_GET => val64 = large_pages as u64,
                IOMMU_OPTION_OP_SET => match cmd.val64 {
                    0 => set_large_pages(&mut g, cmd.object_id, false)?,
                    1 => set_large_pages(&mut g, cmd.object_id, true)?,
                    _ => return Err(Errno::EINVAL),
                },
                _ => return Err(Errno::EOPNOTSUPP),
            }
        }
        _ => return Err(Errno::EOPNOTSUPP),
    }
    drop(g);
    uc.write_user(uc.arg + core::mem::offset_of!(IommuOption, val64) as u64, val64.as_bytes())?;
    Ok(0)
}

/// `IOMMU_OPTION_HUGE_PAGES` set (also used by VFIO type1 v1).
pub(crate) fn set_large_pages(g: &mut Ictx, ioas_id: u32, enable: bool) -> Result<()> {
    let ioas = &g.ioas[&ioas_id];
    if enable {
        g.ioas.get_mut(&ioas_id).expect("ioas").large_pages = true;
        return Ok(());
    }
    if !ioas.large_pages {
        return Ok(());
    }
    if !ioas.domains.is_empty() && !ioas.areas.is_empty() {
        return Err(Errno::EINVAL);
    }
    let align = g.iova_alignment(ioas_id).max(PAGE_SIZE);
    if !ioas.areas_aligned(align) {
        return Err(Errno::EADDRINUSE);
    }
    g.ioas.get_mut(&ioas_id).expect("ioas").large_pages = false;
    Ok(())
}

pub(crate) fn change_process<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let cmd: IommuIoasChangeProcess = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    let mut stores = Vec::new();
    for ioas in g.ioas.values() {
        for a in ioas.areas.values() {
            if !matches!(g.stores[&a.store].source, Source::File { .. }) {
                return Err(Errno::EINVAL);
            }
            if !stores.contains(&a.store) {
                stores.push(a.store);
            }
        }
    }
    let caller = uc.caller;
    let mut acct = m.acct();
    let moving: Vec<u64> = stores
        .into_iter()
        .filter(|s| {
            let o = &g.stores[s].owner;
            o.pid != caller.pid || (o.mode == AcctMode::User && o.uid != caller.uid)
        })
        .collect();
    // Charge the caller first (all or nothing), then uncharge the old owners.
    let mut charged: Vec<(crate::machine::Owner, u64)> = Vec::new();
    for s in &moving {
        let p = &g.stores[s];
        let mut new_owner = owner_for(caller, p.owner.mode);
        new_owner.mode = p.owner.mode;
        if let Err(e) = fail_point(FailSite::Charge).and_then(|_| acct.charge(&new_owner, p.npinned)) {
            for (o, n) in charged {
                acct.uncharge(&o, n);
            }
            return Err(e);
        }
        charged.push((new_owner, p.npinned));
    }
    for (s, (new_owner, n)) in moving.iter().zip(charged) {
        let p = g.stores.get_mut(s).expect("store");
        acct.uncharge(&p.owner, n);
        p.owner = new_owner;
    }
    Ok(0)
}

//! `IOMMU_TEST_CMD`: the self-test operations (selftest_mock.md §8).

use crate::access::{self, AccessFile};
use crate::context::Context;
use crate::device;
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::hw_pagetable::{self, FaultGroup};
use crate::iova::ReservedOwner;
use crate::object::ObjType;
use crate::pages::Source;
use crate::platform::Platform;
use crate::platform::{FdTarget, PAGE_SIZE};
use crate::ucmd::Ucmd;
use crate::EngineFile;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use zerocopy::{FromZeros, IntoBytes};

const MAX_RW: u64 = 16 << 20;

pub(crate) fn test_cmd<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuTestCmd = uc.read()?;
    let m = &*ctx.machine;
    match cmd.op {
        IOMMU_TEST_OP_ADD_RESERVED => {
            let p: TestAddReserved = cmd.payload();
            if p.length == 0 {
                return Err(Errno::EINVAL);
            }
            let last = p.start.checked_add(p.length - 1).ok_or(Errno::EOVERFLOW)?;
            let mut g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Ioas)?;
            let ioas = g.ioas.get_mut(&cmd.id).expect("ioas");
            if ioas.intersects_area(p.start, last) || ioas.allowed_intersects(p.start, last) {
                return Err(Errno::EADDRINUSE);
            }
            fail_point(FailSite::Alloc)?;
            ioas.reserved.add(p.start, last, ReservedOwner::None);
            Ok(0)
        }
        IOMMU_TEST_OP_MOCK_DOMAIN | IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS => {
            let mut p: TestMockDomainFlags = cmd.payload();
            let flags = if cmd.op == IOMMU_TEST_OP_MOCK_DOMAIN { 0 } else { p.dev_flags };
            let mut g = ctx.lock();
            let (stdev, hwpt, dev) = device::mock_domain(ctx, &mut g, cmd.id, flags)?;
            p.out_stdev_id = stdev;
            p.out_hwpt_id = hwpt;
            p.out_idev_id = dev;
            cmd.set_payload(&p);
            if let Err(e) = uc.respond(&cmd) {
                device::destroy_selftest(ctx, &mut g, stdev);
                g.objs.remove(stdev);
                return Err(e);
            }
            device::publish_selftest(&mut g, stdev);
            Ok(0)
        }
        IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE => {
            let mut p: TestMockDomainReplace = cmd.payload();
            let mut g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Selftest)?;
            let dev = g.selftests[&cmd.id].device;
            p.pt_id = device::replace(ctx, &mut g, dev, 0, p.pt_id)?;
            drop(g);
            cmd.set_payload(&p);
            uc.respond(&cmd)?;
            Ok(0)
        }
        IOMMU_TEST_OP_MD_CHECK_MAP => {
            let p: TestCheckMap = cmd.payload();
            let g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::HwptPaging)?;
            let pt = &g.hwpt[&cmd.id].pt;
            let gran = pt.min_page();
            if !p.iova.is_multiple_of(gran) || !p.length.is_multiple_of(gran) || !p.uptr.is_multiple_of(gran) {
                return Err(Errno::EINVAL);
            }
            p.uptr.checked_add(p.length).ok_or(Errno::EINVAL)?;
            if p.length == 0 {
                return Ok(0);
            }
            let first = p.uptr & !(PAGE_SIZE - 1);
            let npages = ((p.uptr + p.length).div_ceil(PAGE_SIZE) * PAGE_SIZE - first) / PAGE_SIZE;
            let mut phys = Vec::with_capacity(npages as usize);
            m.platform.resolve_user_pages(uc.caller.pid, first, npages as usize, false, &mut phys)?;
            let mut off = 0;
            while off < p.length {
                let va = p.uptr + off;
                let want = phys[((va - first) / PAGE_SIZE) as usize] + va % PAGE_SIZE;
                match pt.iova_to_phys(p.iova + off) {
                    Some((got, _)) if got == want => {}
                    _ => return Err(Errno::EINVAL),
                }
                off += gran;
            }
            Ok(0)
        }
        IOMMU_TEST_OP_MD_CHECK_REFS => {
            let p: TestCheckRefs = cmd.payload();
            if !p.length.is_multiple_of(PAGE_SIZE) || !p.uptr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            p.uptr.checked_add(p.length).ok_or(Errno::EINVAL)?;
            let mut phys = Vec::new();
            m.platform.resolve_user_pages(uc.caller.pid, p.uptr, (p.length / PAGE_SIZE) as usize, false, &mut phys)?;
            for ph in phys {
                if m.platform.is_compound(ph) {
                    continue;
                }
                if m.pin_count(ph) != p.refs {
                    return Err(Errno::EIO);
                }
            }
            Ok(0)
        }
        IOMMU_TEST_OP_MD_CHECK_IOTLB => {
            let p: TestCheckIotlb = cmd.payload();
            let g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::HwptNested)?;
            let n = &g.nested[&cmd.id];
            if p.id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || n.iotlb[p.id as usize] != p.iotlb {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_DEV_CHECK_CACHE => {
            let p: TestCheckDevCache = cmd.payload();
            let g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Device)?;
            let d = &g.devices[&cmd.id];
            if p.id > MOCK_DEV_CACHE_ID_MAX || d.cache[p.id as usize] != p.cache {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_CREATE_ACCESS => create_access(ctx, uc, cmd),
        IOMMU_TEST_OP_ACCESS_PAGES => {
            let mut p: TestAccessPages = cmd.payload();
            if p.length > MAX_RW {
                return Err(Errno::ENOMEM);
            }
            if p.flags & !(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ) != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let file = access_file(ctx, uc, cmd.id)?;
            let actx = file.ctx.clone();
            let mut g = actx.lock();
            if !g.accesses[&file.id].needs_pin {
                return Err(Errno::EOPNOTSUPP);
            }
            // The page pointer array.
            fail_point(FailSite::TempBuf)?;
            let mut iova = p.iova;
            if p.flags & MOCK_FLAGS_ACCESS_SYZ != 0 {
                let ioas = g.accesses[&file.id].ioas.unwrap_or(0);
                iova = crate::ioas::syz_iova(&g, ioas, iova);
            }
            let write = p.flags & MOCK_FLAGS_ACCESS_WRITE != 0;
            let phys = access::pin(&mut g, m, file.id, iova, p.length, write)?;
            if p.uptr != 0 {
                let mut want = Vec::with_capacity(phys.len());
                let base = (p.uptr - iova % PAGE_SIZE) & !(PAGE_SIZE - 1);
                let ok = m.platform.resolve_user_pages(uc.caller.pid, base, phys.len(), false, &mut want).is_ok()
                    && want == phys;
                if !ok {
                    access::unpin(&mut g, m, file.id, iova, p.length);
                    return Err(Errno::EBADE);
                }
            }
            // The item recording the pin.
            if let Err(e) = fail_point(FailSite::Alloc) {
                access::unpin(&mut g, m, file.id, iova, p.length);
                return Err(e);
            }
            let a = g.accesses.get_mut(&file.id).expect("access");
            let item_id = a.next_item;
            a.next_item += 1;
            a.items.push(access::AccessItem { id: item_id, iova, length: p.length });
            p.out_access_pages_id = item_id;
            cmd.set_payload(&p);
            if let Err(e) = uc.respond(&cmd) {
                let a = g.accesses.get_mut(&file.id).expect("access");
                a.items.retain(|it| it.id != item_id);
                access::unpin(&mut g, m, file.id, iova, p.length);
                return Err(e);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_DESTROY_ACCESS_PAGES => {
            let p: TestDestroyAccessPages = cmd.payload();
            let file = access_file(ctx, uc, cmd.id)?;
            let mut g = file.ctx.lock();
            let a = g.accesses.get_mut(&file.id).expect("access");
            let pos = a.items.iter().position(|it| it.id == p.access_pages_id).ok_or(Errno::ENOENT)?;
            let it = a.items.remove(pos);
            access::unpin(&mut g, m, file.id, it.iova, it.length);
            Ok(0)
        }
        IOMMU_TEST_OP_ACCESS_RW => {
            let p: TestAccessRw = cmd.payload();
            if p.length > MAX_RW {
                return Err(Errno::ENOMEM);
            }
            if p.flags & !(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ) != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let file = access_file(ctx, uc, cmd.id)?;
            let g = file.ctx.lock();
            let mut iova = p.iova;
            if p.flags & MOCK_FLAGS_ACCESS_SYZ != 0 {
                let ioas = g.accesses[&file.id].ioas.unwrap_or(0);
                iova = crate::ioas::syz_iova(&g, ioas, iova);
            }
            fail_point(FailSite::TempBuf)?;
            let mut buf = vec![0u8; p.length as usize];
            if p.flags & MOCK_ACCESS_RW_WRITE != 0 {
                uc.read_user(p.uptr, &mut buf)?;
                access::rw(&g, m, file.id, iova, &mut buf, true)?;
            } else {
                access::rw(&g, m, file.id, iova, &mut buf, false)?;
                uc.write_user(p.uptr, &buf)?;
            }
            Ok(0)
        }
        IOMMU_TEST_OP_ACCESS_REPLACE_IOAS => {
            let p: TestAccessReplaceIoas = cmd.payload();
            let file = access_file(ctx, uc, cmd.id)?;
            let mut g = file.ctx.lock();
            access::replace_ioas(&mut g, m, file.id, p.ioas_id)?;
            Ok(0)
        }
        IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT => {
            let p: TestMemoryLimit = cmd.payload();
            if p.limit < 12 {
                return Err(Errno::EINVAL);
            }
            m.temp_memory_limit.store(p.limit, Ordering::Relaxed);
            Ok(0)
        }
        IOMMU_TEST_OP_DIRTY => {
            let mut p: TestDirty = cmd.payload();
            if p.page_size == 0
                || p.length == 0
                || !p.iova.is_multiple_of(p.page_size)
                || !p.length.is_multiple_of(p.page_size)
                || p.uptr == 0
            {
                return Err(Errno::EINVAL);
            }
            let n = p.length / p.page_size;
            if n > 1 << 27 {
                return Err(Errno::EOVERFLOW);
            }
            let mut g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::HwptPaging)?;
            let h = g.hwpt.get_mut(&cmd.id).expect("hwpt");
            if !h.tracking {
                return Err(Errno::EINVAL);
            }
            fail_point(FailSite::TempBuf)?;
            let mut bitmap = vec![0u8; n.div_ceil(8) as usize];
            uc.read_user(p.uptr, &mut bitmap)?;
            let mut count = 0u64;
            for i in 0..n {
                if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                    h.pt.set_dirty(p.iova + i * p.page_size);
                    count += 1;
                }
            }
            drop(g);
            p.out_nr_dirty = count;
            cmd.set_payload(&p);
            uc.respond(&cmd)?;
            Ok(0)
        }
        IOMMU_TEST_OP_TRIGGER_IOPF => {
            let p: TestTriggerIopf = cmd.payload();
            let mut g = ctx.lock();
            g.objs.expect(p.dev_id, ObjType::Device)?;
            let d = &g.devices[&p.dev_id];
            let hwpt = match d.attached.get(&p.pasid) {
                Some(&h) => Some((h, p.pasid)),
                None => d.attached.get(&0).copied().filter(|h| g.nested.contains_key(h)).map(|h| (h, 0)),
            };
            if let Some((h, attach_pasid)) = hwpt {
                let mut flags = IOMMU_PGFAULT_FLAGS_LAST_PAGE;
                if p.pasid != 0 {
                    flags |= IOMMU_PGFAULT_FLAGS_PASID_VALID;
                }
                let mut rec = IommuHwptPgfault::new_zeroed();
                rec.flags = flags;
                rec.dev_id = p.dev_id;
                rec.pasid = p.pasid;
                rec.grpid = p.grpid;
                rec.perm = p.perm;
                rec.addr = p.addr;
                fail_point(FailSite::Alloc)?;
                let group = FaultGroup { dev_id: p.dev_id, attach_pasid, faults: vec![rec] };
                hw_pagetable::report_fault(ctx, &mut g, h, group);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_TRIGGER_VEVENT => {
            let p: TestTriggerVevent = cmd.payload();
            let mut g = ctx.lock();
            g.objs.expect(p.dev_id, ObjType::Device)?;
            let (viommu, virt_id) = g.devices[&p.dev_id].viommu_assoc.ok_or(Errno::ENOENT)?;
            if virt_id == 0 {
                return Err(Errno::ENOENT);
            }
            let ev = IommuViommuEventSelftest { virt_id: virt_id as u32 };
            crate::viommu::report_event(&mut g, viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, ev.as_bytes())?;
            Ok(0)
        }
        IOMMU_TEST_OP_PASID_ATTACH | IOMMU_TEST_OP_PASID_REPLACE => {
            let mut p: TestPasidAttach = cmd.payload();
            let mut g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Selftest)?;
            let dev = g.selftests[&cmd.id].device;
            let attach = cmd.op == IOMMU_TEST_OP_PASID_ATTACH;
            let h = if attach {
                device::attach(ctx, &mut g, dev, p.pasid, p.pt_id)?
            } else {
                device::replace(ctx, &mut g, dev, p.pasid, p.pt_id)?
            };
            p.pt_id = h;
            cmd.set_payload(&p);
            if let Err(e) = uc.respond(&cmd) {
                if attach {
                    device::detach(ctx, &mut g, dev, p.pasid);
                }
                return Err(e);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_PASID_DETACH => {
            let p: TestPasidDetach = cmd.payload();
            let mut g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Selftest)?;
            let dev = g.selftests[&cmd.id].device;
            device::detach(ctx, &mut g, dev, p.pasid);
            Ok(0)
        }
        IOMMU_TEST_OP_PASID_CHECK_HWPT => {
            let p: TestPasidCheck = cmd.payload();
            let g = ctx.lock();
            g.objs.expect(cmd.id, ObjType::Selftest)?;
            let dev = g.selftests[&cmd.id].device;
            let cur = g.devices[&dev].attached.get(&p.pasid).copied();
            if p.hwpt_id == 0 {
                return if cur.is_some() { Err(Errno::EINVAL) } else { Ok(0) };
            }
            match g.objs.type_of(p.hwpt_id)? {
                ObjType::HwptPaging | ObjType::HwptNested => {}
                _ => return Err(Errno::EINVAL),
            }
            if cur != Some(p.hwpt_id) {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        IOMMU_TEST_OP_DMABUF_GET => {
            let p: TestDmabufGet = cmd.payload();
            let len = (p.length as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            if len == 0 || len / PAGE_SIZE > 512 {
                return Err(Errno::EINVAL);
            }
            fail_point(FailSite::Alloc)?;
            let mem = m.platform.create_dmabuf_memory(len)?;
            let id = m.next_dmabuf.fetch_add(1, Ordering::Relaxed);
            let buf = Arc::new(super::DmaBuf::new(id, len, mem));
            m.dmabufs.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::downgrade(&buf));
            let installed = fail_point(FailSite::Alloc)
                .and_then(|_| m.platform.install_fd(uc.caller, EngineFile::DmaBuf(buf), p.open_flags as i32));
            match installed {
                Ok(fd) => Ok(fd),
                Err(e) => {
                    m.dmabufs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    Err(e)
                }
            }
        }
        IOMMU_TEST_OP_DMABUF_REVOKE => {
            let p: TestDmabufRevoke = cmd.payload();
            let buf = match m.platform.fd(uc.caller, p.dmabuf_fd)? {
                FdTarget::Engine(EngineFile::DmaBuf(b)) => b,
                _ => return Err(Errno::EINVAL),
            };
            let revoke = p.revoked != 0;
            buf.set_revoked(revoke);
            if revoke {
                revoke_everywhere(m, &buf);
            }
            Ok(0)
        }
        _ => Err(Errno::EOPNOTSUPP),
    }
}

/// The access behind an access fd (EBADFD for any other descriptor).
fn access_file<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>, fd: u32) -> Result<Arc<AccessFile>> {
    match ctx.machine.platform.fd(uc.caller, fd as i32) {
        Ok(FdTarget::Engine(EngineFile::Access(f))) => Ok(f),
        _ => Err(Errno::EBADFD),
    }
}

fn create_access<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>, mut cmd: IommuTestCmd) -> Result<i32> {
    let mut p: TestCreateAccess = cmd.payload();
    if p.flags & !MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let id = {
        let mut g = ctx.lock();
        let id = g.objs.reserve(ObjType::Access)?;
        g.accesses.insert(
            id,
            access::Access { needs_pin: p.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES != 0, ..Default::default() },
        );
        let r = g.objs.expect(cmd.id, ObjType::Ioas).and_then(|_| access::attach(&mut g, id, cmd.id));
        if let Err(e) = r {
            g.accesses.remove(&id);
            g.objs.remove(id);
            return Err(e);
        }
        id
    };
    // From here on the file owns the access: dropping it destroys the access.
    let file = Arc::new(AccessFile { ctx: ctx.clone(), id });
    // The anonymous file and its descriptor.
    fail_point(FailSite::Alloc)?;
    let fd = ctx.machine.platform.install_fd(uc.caller, EngineFile::Access(file), 0o2000000 | 0o2)?;
    p.out_access_fd = fd as u32;
    cmd.set_payload(&p);
    if let Err(e) = uc.respond(&cmd) {
        // The caller never learns the descriptor: take it back; dropping the file
        // destroys the access.
        drop(ctx.machine.platform.uninstall_fd(uc.caller, fd));
        return Err(e);
    }
    Ok(0)
}

/// A dma-buf was revoked: unmap its areas from every domain of every context, for good.
fn revoke_everywhere(m: &crate::Machine, buf: &Arc<super::DmaBuf>) {
    let ctxs: Vec<Arc<Context>> =
        m.contexts.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|w| w.upgrade()).collect();
    for ctx in ctxs {
        let mut g = ctx.lock();
        let ioas_ids: Vec<u32> = g.ioas.keys().copied().collect();
        for ioas in ioas_ids {
            let keys: Vec<u64> = g.ioas[&ioas]
                .areas
                .iter()
                .filter(|(_, a)| {
                    !a.revoked
                        && matches!(&g.stores[&a.store].source, Source::DmaBuf { buf: b, .. } if Arc::ptr_eq(b, buf))
                })
                .map(|(&k, _)| k)
                .collect();
            for k in keys {
                g.revoke_area(m, ioas, k);
            }
        }
    }
}

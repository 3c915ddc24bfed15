//! Hardware page tables (the kernel's `hw_pagetable.c`) and IO page-fault queues
//! (`eventq.c`, fault half): HWPT_ALLOC, invalidation, dirty tracking, FAULT objects.
//!
//! A paging HWPT owns a domain (the IO page table of an IOMMU model, today the mock's)
//! joined to one IOAS; a nested HWPT owns a stage-1 cache model on a nest-parent paging HWPT.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::mock::pagetable::{MockPageTable, MockPtType};
use crate::object::ObjType;
use crate::platform::Platform;
use crate::ucmd::{read_driver_data, Ucmd};
use crate::{Caller, EngineFile};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test as t;
use zerocopy::{FromZeros, IntoBytes};

/// A paging HWPT: a domain joined to an IOAS.
#[derive(Debug)]
pub(crate) struct HwptPaging {
    pub ioas: u32,
    pub pt: DomainPt,
    /// Created by attaching a device to an IOAS; destroyed with its last device.
    pub auto_domain: bool,
    pub nest_parent: bool,
    /// Allocated with DIRTY_TRACKING.
    pub dirty_capable: bool,
    pub pasid_compat: bool,
    pub fault: Option<u32>,
    /// Dirty tracking switched on.
    pub tracking: bool,
}

/// A nested HWPT (mock stage-1): four IOTLB words.
#[derive(Debug)]
pub(crate) struct HwptNested {
    /// The nest-parent paging HWPT it translates through.
    pub parent: u32,
    /// The vIOMMU it was allocated on (holds it instead of the parent).
    pub viommu: Option<u32>,
    pub iotlb: [u32; 4],
    pub pasid_compat: bool,
    pub fault: Option<u32>,
}

/// A group of page requests delivered together.
#[derive(Clone, Debug)]
pub(crate) struct FaultGroup {
    pub dev_id: u32,
    /// The attachment (pasid, 0 = RID) the group was delivered through.
    pub attach_pasid: u32,
    pub faults: Vec<IommuHwptPgfault>,
}

/// An IO page-fault queue.
#[derive(Debug, Default)]
pub(crate) struct Fault {
    pub queued: VecDeque<FaultGroup>,
    pub awaiting: BTreeMap<u32, FaultGroup>,
}

pub(crate) fn alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuHwptAlloc = uc.read()?;
    if cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if (cmd.data_type == IOMMU_HWPT_DATA_NONE) != (cmd.data_len == 0) {
        return Err(Errno::EINVAL);
    }
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    g.objs.expect(cmd.dev_id, ObjType::Device)?;
    let pt_ty = g.objs.type_of(cmd.pt_id).map_err(|_| Errno::EINVAL)?;
    let fault_valid = cmd.flags & IOMMU_HWPT_FAULT_ID_VALID != 0;
    let id = match pt_ty {
        ObjType::Ioas => {
            let known = IOMMU_HWPT_ALLOC_NEST_PARENT
                | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                | IOMMU_HWPT_FAULT_ID_VALID
                | IOMMU_HWPT_ALLOC_PASID;
            if cmd.flags & !known != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let dev_dirty = g.devices[&cmd.dev_id].dirty_capable();
            if cmd.flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING != 0 && !dev_dirty {
                return Err(Errno::EOPNOTSUPP);
            }
            if fault_valid && cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let ty = mock_paging_type(uc.caller, uc, &cmd)?;
            let id = g.objs.reserve(ObjType::HwptPaging)?;
            // The driver's paging domain.
            if let Err(e) = fail_point(FailSite::Alloc) {
                g.objs.remove(id);
                return Err(e);
            }
            let hwpt = HwptPaging {
                ioas: cmd.pt_id,
                pt: DomainPt::new(ty),
                auto_domain: false,
                nest_parent: cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0,
                dirty_capable: cmd.flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING != 0,
                pasid_compat: cmd.flags & IOMMU_HWPT_ALLOC_PASID != 0,
                fault: None,
                tracking: false,
            };
            g.hwpt.insert(id, hwpt);
            if let Err(e) = g.domain_join(m, cmd.pt_id, id) {
                g.hwpt.remove(&id);
                g.objs.remove(id);
                return Err(e);
            }
            g.objs.get(cmd.pt_id);
            id
        }
        ObjType::HwptPaging => {
            if cmd.flags & !(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) != 0 || cmd.data_len == 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let parent = &g.hwpt[&cmd.pt_id];
            if parent.auto_domain || !parent.nest_parent {
                return Err(Errno::EINVAL);
            }
            mock_nested_alloc(&mut g, uc, &cmd, cmd.pt_id, None)?
        }
        ObjType::Viommu => {
            if cmd.flags & !(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) != 0 || cmd.data_len == 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let parent = g.viommus[&cmd.pt_id].parent;
            mock_nested_alloc(&mut g, uc, &cmd, parent, Some(cmd.pt_id))?
        }
        _ => return Err(Errno::EINVAL),
    };
    let undo = |g: &mut Ictx| {
        // The fault queue's user, looked up while the HWPT still exists.
        if let Some(f) = fault_of(g, id) {
            g.objs.put(f);
        }
        let ty = g.objs.type_any_state(id);
        match ty {
            Some(ObjType::HwptPaging) => {
                let ioas = g.hwpt[&id].ioas;
                g.domain_leave(m, ioas, id);
                g.hwpt.remove(&id);
                g.objs.put(ioas);
            }
            _ => {
                if let Some(n) = g.nested.remove(&id) {
                    g.objs.put(n.viommu.unwrap_or(n.parent));
                }
            }
        }
        g.objs.remove(id);
    };
    if fault_valid {
        if let Err(e) = g.objs.expect(cmd.fault_id, ObjType::Fault) {
            undo(&mut g);
            return Err(e);
        }
        g.objs.get(cmd.fault_id);
        if let Some(h) = g.hwpt.get_mut(&id) {
            h.fault = Some(cmd.fault_id);
        } else if let Some(n) = g.nested.get_mut(&id) {
            n.fault = Some(cmd.fault_id);
        }
    }
    cmd.out_hwpt_id = id;
    if let Err(e) = uc.respond(&cmd) {
        undo(&mut g);
        return Err(e);
    }
    g.objs.publish(id);
    Ok(0)
}

/// Mock driver: a nested domain on `parent` (allocated directly or through `viommu`,
/// which it then holds instead of the parent). Returns the reserved HWPT id.
fn mock_nested_alloc<P: Platform + ?Sized>(
    g: &mut Ictx,
    uc: &Ucmd<'_, P>,
    cmd: &IommuHwptAlloc,
    parent: u32,
    viommu: Option<u32>,
) -> Result<u32> {
    if cmd.data_type != t::IOMMU_HWPT_DATA_SELFTEST {
        return Err(Errno::EOPNOTSUPP);
    }
    let data: t::IommuHwptSelftest = read_driver_data(uc.platform, uc.caller, cmd.data_uptr, cmd.data_len, 4)?;
    let id = g.objs.reserve(ObjType::HwptNested)?;
    // The driver's nested domain.
    if let Err(e) = fail_point(FailSite::Alloc) {
        g.objs.remove(id);
        return Err(e);
    }
    g.nested.insert(
        id,
        HwptNested {
            parent,
            viommu,
            iotlb: [data.iotlb; 4],
            pasid_compat: cmd.flags & IOMMU_HWPT_ALLOC_PASID != 0,
            fault: None,
        },
    );
    g.objs.get(viommu.unwrap_or(parent));
    Ok(id)
}

fn fault_of(g: &Ictx, hwpt: u32) -> Option<u32> {
    g.hwpt.get(&hwpt).and_then(|h| h.fault).or_else(|| g.nested.get(&hwpt).and_then(|n| n.fault))
}

/// Mock driver: the page-table type of a paging domain from its optional driver data.
fn mock_paging_type<P: Platform + ?Sized>(
    caller: &Caller,
    uc: &Ucmd<'_, P>,
    cmd: &IommuHwptAlloc,
) -> Result<MockPtType> {
    if cmd.data_len == 0 {
        return Ok(MockPtType::Default);
    }
    if cmd.data_type != t::IOMMU_HWPT_DATA_SELFTEST {
        return Err(Errno::EOPNOTSUPP);
    }
    let data: t::IommuHwptSelftest = read_driver_data(uc.platform, caller, cmd.data_uptr, cmd.data_len, 4)?;
    match data.pagetable_type {
        t::MOCK_IOMMUPT_DEFAULT => Ok(MockPtType::Default),
        t::MOCK_IOMMUPT_HUGE => Ok(MockPtType::Huge),
        _ => Err(Errno::EOPNOTSUPP),
    }
}

/// Create an automatic paging HWPT for `ioas` (flags 0, no data); not yet joined.
pub(crate) fn new_auto_paging(g: &mut Ictx, ioas: u32) -> Result<u32> {
    let id = g.objs.reserve(ObjType::HwptPaging)?;
    // The driver's paging domain.
    if let Err(e) = fail_point(FailSite::Alloc) {
        g.objs.remove(id);
        return Err(e);
    }
    g.hwpt.insert(
        id,
        HwptPaging {
            ioas,
            pt: DomainPt::new(MockPtType::Default),
            auto_domain: true,
            nest_parent: false,
            dirty_capable: false,
            pasid_compat: false,
            fault: None,
            tracking: false,
        },
    );
    Ok(id)
}

pub(crate) fn destroy_paging(ctx: &Context, g: &mut Ictx, id: u32) {
    let h = &g.hwpt[&id];
    let (ioas, fault) = (h.ioas, h.fault);
    g.domain_leave(&ctx.machine, ioas, id);
    g.hwpt.remove(&id);
    g.objs.put(ioas);
    if let Some(f) = fault {
        g.objs.put(f);
    }
}

pub(crate) fn destroy_nested(g: &mut Ictx, id: u32) {
    if let Some(n) = g.nested.remove(&id) {
        g.objs.put(n.viommu.unwrap_or(n.parent));
        if let Some(f) = n.fault {
            g.objs.put(f);
        }
    }
}

pub(crate) fn destroy_fault(g: &mut Ictx, id: u32) {
    // Outstanding groups are answered "invalid" by dropping them.
    g.faults.remove(&id);
}

pub(crate) fn invalidate<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuHwptInvalidate = uc.read()?;
    let (done, res) = invalidate_inner(ctx, uc, &cmd);
    // Copied back whatever happened, with the number of entries handled.
    cmd.entry_num = done;
    uc.respond(&cmd)?;
    res.map(|_| 0)
}

fn invalidate_inner<P: Platform + ?Sized>(
    ctx: &Arc<Context>,
    uc: &Ucmd<'_, P>,
    cmd: &IommuHwptInvalidate,
) -> (u32, Result<()>) {
    if cmd.reserved != 0 {
        return (0, Err(Errno::EOPNOTSUPP));
    }
    if cmd.entry_num != 0
        && (cmd.data_uptr == 0 || cmd.entry_len == 0 || cmd.entry_len > 4096 || cmd.entry_num > 1 << 19)
    {
        return (0, Err(Errno::EINVAL));
    }
    let mut g = ctx.lock();
    let ty = match g.objs.type_of(cmd.hwpt_id) {
        Ok(t) => t,
        Err(e) => return (0, Err(e)),
    };
    match ty {
        ObjType::HwptNested => {
            let n = g.nested.get_mut(&cmd.hwpt_id).expect("nested");
            mock_nested_invalidate(uc, n, cmd, cmd.entry_num)
        }
        ObjType::Viommu => crate::viommu::invalidate(uc, &mut g, cmd.hwpt_id, cmd),
        _ => (0, Err(Errno::EINVAL)),
    }
}

fn mock_nested_invalidate<P: Platform + ?Sized>(
    uc: &Ucmd<'_, P>,
    n: &mut HwptNested,
    cmd: &IommuHwptInvalidate,
    num: u32,
) -> (u32, Result<()>) {
    if cmd.data_type != t::IOMMU_HWPT_INVALIDATE_DATA_SELFTEST {
        return (0, Err(Errno::EINVAL));
    }
    for i in 0..num {
        let addr = cmd.data_uptr + i as u64 * cmd.entry_len as u64;
        let size = core::mem::size_of::<t::IommuHwptInvalidateSelftest>() as u32;
        if cmd.entry_len != size {
            return (i, Err(Errno::EINVAL));
        }
        let e: t::IommuHwptInvalidateSelftest = match read_driver_data(uc.platform, uc.caller, addr, cmd.entry_len, 8) {
            Ok(e) => e,
            Err(err) => return (i, Err(err)),
        };
        if e.flags & !t::IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
            return (i, Err(Errno::EOPNOTSUPP));
        }
        if e.iotlb_id > t::MOCK_NESTED_DOMAIN_IOTLB_ID_MAX {
            return (i, Err(Errno::EINVAL));
        }
        if e.flags & t::IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
            n.iotlb = [0; 4];
        } else {
            n.iotlb[e.iotlb_id as usize] = 0;
        }
    }
    (num, Ok(()))
}

pub(crate) fn set_dirty_tracking<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let cmd: IommuHwptSetDirtyTracking = uc.read()?;
    if cmd.flags & !IOMMU_HWPT_DIRTY_TRACKING_ENABLE != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut g = ctx.lock();
    g.objs.expect(cmd.hwpt_id, ObjType::HwptPaging)?;
    let h = g.hwpt.get_mut(&cmd.hwpt_id).expect("hwpt");
    if !h.dirty_capable {
        return Err(Errno::EOPNOTSUPP);
    }
    let enable = cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE != 0;
    let clean = enable && !h.tracking;
    if clean {
        h.pt.clear_all_dirty();
    }
    h.tracking = enable;
    // Cached "already dirty" state and tracking on/off both live in device IOTLBs.
    crate::dma::invalidate_domain(&g, cmd.hwpt_id);
    Ok(0)
}

pub(crate) fn get_dirty_bitmap<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let cmd: IommuHwptGetDirtyBitmap = uc.read()?;
    if cmd.flags & !IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR != 0 || cmd.reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut g = ctx.lock();
    g.objs.expect(cmd.hwpt_id, ObjType::HwptPaging)?;
    let last = cmd.iova.checked_add(cmd.length.wrapping_sub(1)).filter(|_| cmd.length != 0);
    let last = match last {
        Some(l) => l,
        None if cmd.length == 0 => cmd.iova.wrapping_sub(1),
        None => return Err(Errno::EOVERFLOW),
    };
    let ioas = g.hwpt[&cmd.hwpt_id].ioas;
    let align = g.iova_alignment(ioas);
    let end = last.wrapping_add(1);
    if !cmd.iova.is_multiple_of(align) || end % align != 0 {
        return Err(Errno::EINVAL);
    }
    if cmd.page_size == 0 {
        return Err(Errno::EINVAL);
    }
    let gran = 1u64 << cmd.page_size.trailing_zeros();
    if !cmd.iova.is_multiple_of(gran) || end % gran != 0 {
        return Err(Errno::EINVAL);
    }
    if !g.hwpt[&cmd.hwpt_id].dirty_capable {
        return Err(Errno::EOPNOTSUPP);
    }
    if cmd.length == 0 {
        return Ok(0);
    }
    // The bitmap iterator (`iova_bitmap_alloc`), before any dirty bit is read or cleared.
    fail_point(FailSite::TempBuf)?;
    // Walk the areas contiguous from iova.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let io = &g.ioas[&ioas];
    let mut at = cmd.iova;
    for k in io.areas_in(cmd.iova, last) {
        let a = &io.areas[&k];
        if a.iova > at {
            break;
        }
        let l = a.last.min(last);
        spans.push((at, l));
        if l == last {
            break;
        }
        at = l + 1;
    }
    let clear = cmd.flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR == 0;
    let h = g.hwpt.get_mut(&cmd.hwpt_id).expect("hwpt");
    // Dirty units as ascending, inclusive bit ranges.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (s, l) in spans {
        h.pt.read_and_clear_dirty(s, l - s + 1, clear, &mut |leaf, len| {
            let lo = leaf.max(s);
            let hi = (leaf + len - 1).min(l);
            let (a, b) = ((lo - cmd.iova) / gran, (hi - cmd.iova) / gran);
            match ranges.last_mut() {
                Some(r) if r.1 + 1 >= a => r.1 = r.1.max(b),
                _ => ranges.push((a, b)),
            }
        });
    }
    if clear {
        crate::dma::invalidate_domain(&g, cmd.hwpt_id);
    }
    drop(g);
    set_user_bits(uc, cmd.data, &ranges);
    Ok(0)
}

/// OR the bit ranges into the user bitmap at `data` (bit n in byte n/8, bit n%8), a window
/// of at most 1 MiB at a time. Faults are ignored, as the kernel's walk ignores them.
fn set_user_bits<P: Platform + ?Sized>(uc: &Ucmd<'_, P>, data: u64, ranges: &[(u64, u64)]) {
    const WINDOW: u64 = 1 << 20;
    let mut i = 0;
    let mut buf: Vec<u8> = Vec::new();
    while i < ranges.len() {
        let start_byte = ranges[i].0 / 8;
        let mut end_byte = start_byte; // exclusive, grows
        let mut j = i;
        while j < ranges.len() && ranges[j].0 / 8 < start_byte + WINDOW {
            end_byte = end_byte.max(ranges[j].1.min((start_byte + WINDOW) * 8 - 1) / 8 + 1);
            j += 1;
        }
        buf.clear();
        buf.resize((end_byte - start_byte) as usize, 0);
        if uc.read_user(data + start_byte, &mut buf).is_ok() {
            for &(a, b) in &ranges[i..j] {
                let b = b.min(end_byte * 8 - 1);
                set_bit_range(&mut buf, a - start_byte * 8, b - start_byte * 8);
            }
            let _ = uc.write_user(data + start_byte, &buf);
        }
        // A range running past the window continues in the next one.
        let last = ranges[j - 1];
        if last.1 >= end_byte * 8 {
            let mut rest = ranges[j..].to_vec();
            rest.insert(0, (end_byte * 8, last.1));
            set_user_bits(uc, data, &rest);
            return;
        }
        i = j;
    }
}

/// Set bits `[a, b]` of a byte buffer.
fn set_bit_range(buf: &mut [u8], a: u64, b: u64) {
    let mut n = a;
    while n <= b {
        if n.is_multiple_of(8) && n + 7 <= b {
            buf[(n / 8) as usize] = 0xff;
            n += 8;
        } else {
            buf[(n / 8) as usize] |= 1 << (n % 8);
            n += 1;
        }
    }
}

// ---- fault queues ----

/// An open fault-queue fd.
#[derive(Debug)]
pub struct FaultFile {
    ctx: Arc<Context>,
    id: u32,
}

impl Drop for FaultFile {
    fn drop(&mut self) {
        self.ctx.lock().objs.put(self.id);
    }
}

const PGFAULT_SIZE: usize = core::mem::size_of::<IommuHwptPgfault>();
const RESP_SIZE: usize = core::mem::size_of::<IommuHwptPageResponse>();

impl FaultFile {
    /// `read(2)`: whole groups of 40-byte records.
    pub fn read(&self, caller: &Caller, buf: u64, count: usize) -> Result<usize> {
        if !count.is_multiple_of(PGFAULT_SIZE) {
            return Err(Errno::ESPIPE);
        }
        let mut g = self.ctx.lock();
        let f = g.faults.get_mut(&self.id).ok_or(Errno::ENODEV)?;
        let p = &*self.ctx.machine.platform;
        let mut done = 0usize;
        while let Some(group) = f.queued.front() {
            let need = group.faults.len() * PGFAULT_SIZE;
            if done + need > count {
                if done == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            let mut cookie = 1u32;
            while f.awaiting.contains_key(&cookie) {
                cookie += 1;
            }
            for (i, rec) in group.faults.iter().enumerate() {
                let mut r = *rec;
                r.cookie = cookie;
                p.write_user(caller, buf + (done + i * PGFAULT_SIZE) as u64, r.as_bytes())?;
            }
            done += need;
            let group = f.queued.pop_front().expect("front");
            f.awaiting.insert(cookie, group);
        }
        Ok(done)
    }

    /// `write(2)`: page responses.
    pub fn write(&self, caller: &Caller, buf: u64, count: usize) -> Result<usize> {
        if !count.is_multiple_of(RESP_SIZE) {
            return Err(Errno::ESPIPE);
        }
        let mut g = self.ctx.lock();
        let f = g.faults.get_mut(&self.id).ok_or(Errno::ENODEV)?;
        let p = &*self.ctx.machine.platform;
        let mut done = 0;
        while done < count {
            let mut r = IommuHwptPageResponse::new_zeroed();
            let res = p.read_user(caller, buf + done as u64, r.as_mut_bytes()).and_then(|_| {
                if r.code != IOMMUFD_PAGE_RESP_SUCCESS && r.code != IOMMUFD_PAGE_RESP_INVALID {
                    return Err(Errno::EINVAL);
                }
                f.awaiting.remove(&r.cookie).map(|_| ()).ok_or(Errno::EINVAL)
            });
            if let Err(e) = res {
                if done == 0 {
                    return Err(e);
                }
                break;
            }
            done += RESP_SIZE;
        }
        Ok(done)
    }

    /// Readiness: always writable; readable while groups are queued.
    pub fn poll(&self) -> u32 {
        let g = self.ctx.lock();
        let queued = g.faults.get(&self.id).is_some_and(|f| !f.queued.is_empty());
        0x4 | 0x100 | if queued { 0x1 | 0x40 } else { 0 }
    }

    /// Whether this file refers to fault object `id` of `ctx`.
    pub fn is(&self, ctx: &Arc<Context>, id: u32) -> bool {
        Arc::ptr_eq(&self.ctx, ctx) && self.id == id
    }
}

pub(crate) fn fault_alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuFaultAlloc = uc.read()?;
    if cmd.flags != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let id = {
        let mut g = ctx.lock();
        let id = g.objs.reserve(ObjType::Fault)?;
        g.faults.insert(id, Fault::default());
        // The fd's reference.
        g.objs.get(id);
        id
    };
    let file = Arc::new(FaultFile { ctx: ctx.clone(), id });
    let undo = |ctx: &Arc<Context>| {
        let mut g = ctx.lock();
        g.faults.remove(&id);
        g.objs.remove(id);
    };
    install_and_respond(
        ctx,
        uc,
        EngineFile::Fault(file),
        id,
        &mut cmd,
        |c, fd| {
            c.out_fault_id = id;
            c.out_fault_fd = fd as u32;
        },
        undo,
    )
}

/// The end of every "object + file descriptor" command (FAULT_QUEUE_ALLOC, VEVENTQ_ALLOC):
/// install `file` as a descriptor, fill the command with it, copy the command back, publish
/// `id`. Any failure runs `undo` on the half-built object; as in the kernel, the descriptor
/// exists for the program only once the copy-back succeeded (else it is taken back).
pub(crate) fn install_and_respond<T: zerocopy::IntoBytes + zerocopy::Immutable, P: Platform + ?Sized>(
    ctx: &Arc<Context>,
    uc: &Ucmd<'_, P>,
    file: EngineFile,
    id: u32,
    cmd: &mut T,
    fill: impl FnOnce(&mut T, i32),
    undo: impl Fn(&Arc<Context>),
) -> Result<i32> {
    // The anonymous file and its descriptor.
    if let Err(e) = fail_point(FailSite::Alloc) {
        drop(file);
        undo(ctx);
        return Err(e);
    }
    let fd = match ctx.machine.platform.install_fd(uc.caller, file, libc_o_rdwr_cloexec()) {
        Ok(fd) => fd,
        Err(e) => {
            undo(ctx);
            return Err(e);
        }
    };
    fill(cmd, fd);
    if let Err(e) = uc.respond(&*cmd) {
        // The caller never learns the descriptor: take it back and undo. (If the platform
        // cannot, the object stays reserved for as long as the descriptor holds it.)
        if let Some(f) = ctx.machine.platform.uninstall_fd(uc.caller, fd) {
            drop(f);
            undo(ctx);
        }
        return Err(e);
    }
    ctx.lock().objs.publish(id);
    Ok(0)
}

/// `O_RDWR | O_CLOEXEC`.
pub(crate) fn libc_o_rdwr_cloexec() -> i32 {
    0o2 | 0o2000000
}

/// Deliver one page request group to the HWPT attached at (dev, pasid).
pub(crate) fn report_fault(ctx: &Context, g: &mut Ictx, hwpt: u32, group: FaultGroup) {
    let Some(fid) = fault_of(g, hwpt) else { return };
    if let Some(f) = g.faults.get_mut(&fid) {
        f.queued.push_back(group);
    }
    let _ = ctx;
}

/// Drop (answer "invalid") every outstanding fault of an attachment going away.
pub(crate) fn auto_respond(g: &mut Ictx, hwpt: u32, dev_id: u32, pasid: u32) {
    let Some(fid) = fault_of(g, hwpt) else { return };
    if let Some(f) = g.faults.get_mut(&fid) {
        f.queued.retain(|gr| !(gr.dev_id == dev_id && gr.attach_pasid == pasid));
        f.awaiting.retain(|_, gr| !(gr.dev_id == dev_id && gr.attach_pasid == pasid));
    }
}

/// A domain's IO page table, shared with the DMA ports of devices attached to it so that
/// an IOTLB miss walks it without taking the context lock. Writers (map, unmap, dirty
/// updates) run under the context lock *and* this lock; readers only need this one.
/// A domain's IO page table, shared by the context (under its lock) and the DMA ports of
/// the devices attached to it (IOTLB misses walk it from any thread).
///
/// The lock is biased like the context's (`uiommu_sync::BiasedMutex`): while one thread
/// does all the work (an emulator running its devices on the thread that makes the ioctls)
/// taking it costs no atomic read-modify-write, which is most of an IOTLB miss otherwise;
/// the first access from a second thread turns it into an ordinary mutex for good. Every
/// method holds it for one page-table operation only, so it is never taken twice.
#[derive(Clone, Debug)]
pub(crate) struct DomainPt {
    pt: std::sync::Arc<uiommu_sync::BiasedMutex<MockPageTable>>,
    /// The smallest page size (fixed for a domain; read without the lock).
    min_page: u64,
}

impl DomainPt {
    pub fn new(ty: MockPtType) -> DomainPt {
        let pt = MockPageTable::new(ty);
        let min_page = pt.min_page();
        DomainPt { pt: std::sync::Arc::new(uiommu_sync::BiasedMutex::new(pt)), min_page }
    }
    pub fn read(&self) -> uiommu_sync::BiasedMutexGuard<'_, MockPageTable> {
        self.pt.lock()
    }
    pub fn write(&self) -> uiommu_sync::BiasedMutexGuard<'_, MockPageTable> {
        self.pt.lock()
    }
    pub fn map_max(&self, iova: u64, phys: u64, len: u64, prot: crate::mock::pagetable::Prot, max: u64) -> Result<()> {
        self.write().map_max(iova, phys, len, prot, max)
    }
    pub fn unmap(&self, iova: u64, len: u64) -> u64 {
        self.write().unmap(iova, len)
    }
    pub fn iova_to_phys(&self, iova: u64) -> Option<(u64, crate::mock::pagetable::Prot)> {
        self.read().iova_to_phys(iova)
    }
    pub fn set_dirty(&self, iova: u64) -> bool {
        self.write().set_dirty(iova)
    }
    pub fn read_and_clear_dirty(&self, iova: u64, len: u64, clear: bool, f: &mut dyn FnMut(u64, u64)) {
        self.write().read_and_clear_dirty(iova, len, clear, f)
    }
    pub fn clear_all_dirty(&self) {
        self.write().clear_all_dirty()
    }
    pub fn mapped_bytes(&self) -> u64 {
        self.read().mapped_bytes()
    }
    pub fn min_page(&self) -> u64 {
        self.min_page
    }
    pub fn aperture(&self) -> (u64, u64) {
        self.read().aperture()
    }
    pub fn pgsize_bitmap(&self) -> u64 {
        self.read().pgsize_bitmap()
    }
    #[inline]
    pub fn lookup_leaf(&self, iova: u64) -> Option<(u64, u64, u64, crate::mock::pagetable::Prot)> {
        self.read().lookup_leaf(iova)
    }
    #[inline]
    pub fn lookup_leaf_hinted(
        &self,
        iova: u64,
        hint: &mut usize,
    ) -> Option<(u64, u64, u64, crate::mock::pagetable::Prot)> {
        self.read().lookup_leaf_hinted(iova, hint)
    }
    pub fn table_bytes(&self) -> usize {
        self.read().table_bytes()
    }
}

//! vIOMMU objects (the kernel's `viommu.c` and the vEVENTQ half of `eventq.c`): vIOMMUs,
//! vDEVICEs, vEVENTQs with their event fds, HW queues, and the mmap regions a vIOMMU
//! driver publishes — all with the mock driver's behaviour (selftest_mock.md §6-7).

use crate::access;
use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::object::ObjType;
use crate::platform::Platform;
use crate::platform::{Caller, HostFile, PAGE_SIZE};
use crate::ucmd::{read_driver_data, Ucmd};
use crate::EngineFile;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test as t;
use zerocopy::{FromZeros, IntoBytes};

/// A vIOMMU.
#[derive(Debug)]
pub(crate) struct Viommu {
    /// The nest-parent paging HWPT.
    pub parent: u32,
    /// virt_id → vDEVICE id.
    pub vdevs: BTreeMap<u64, u32>,
    /// vEVENTQ type → vEVENTQ id.
    pub veventqs: BTreeMap<u32, u32>,
    /// HW queue id per index.
    pub hw_queues: [Option<u32>; t::IOMMU_TEST_HW_QUEUE_MAX as usize],
    /// Published mmap region: (offset, length, memory).
    pub region: Option<(u64, u64, Arc<dyn HostFile>)>,
}

/// A vDEVICE: a device's virtual id inside a vIOMMU.
#[derive(Debug)]
pub(crate) struct Vdevice {
    pub viommu: u32,
    pub dev: u32,
    pub virt_id: u64,
}

/// A queued vEVENT: a real event or the lost-events marker (`None`).
#[derive(Debug)]
struct VeventItem {
    seq: u32,
    data: Option<Vec<u8>>,
}

/// A vEVENTQ.
#[derive(Debug)]
pub(crate) struct Veventq {
    pub viommu: u32,
    pub ty: u32,
    depth: u32,
    num_events: u32,
    sequence: u32,
    items: VecDeque<VeventItem>,
}

impl Veventq {
    /// Queue an event (or the lost-events marker when full).
    fn report(&mut self, data: &[u8]) {
        let item = if self.num_events == self.depth {
            None
        } else {
            self.num_events += 1;
            Some(data.to_vec())
        };
        if self.items.back().is_some_and(|i| i.data.is_none()) {
            self.items.pop_back();
        }
        self.items.push_back(VeventItem { seq: self.sequence, data: item });
        self.sequence = (self.sequence + 1) & i32::MAX as u32;
    }
}

/// A HW queue of the mock vIOMMU.
#[derive(Debug)]
pub(crate) struct HwQueue {
    pub viommu: u32,
    pub index: u32,
    /// Internal access holding (and locking) the queue's pages.
    pub access: u32,
    pub iova: u64,
    pub length: u64,
}

pub(crate) fn viommu_alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuViommuAlloc = uc.read()?;
    if cmd.flags != 0 || cmd.type_ == IOMMU_VIOMMU_TYPE_DEFAULT {
        return Err(Errno::EOPNOTSUPP);
    }
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    g.objs.expect(cmd.dev_id, ObjType::Device)?;
    if cmd.type_ != t::IOMMU_VIOMMU_TYPE_SELFTEST {
        return Err(Errno::EOPNOTSUPP);
    }
    g.objs.expect(cmd.hwpt_id, ObjType::HwptPaging)?;
    if !g.hwpt[&cmd.hwpt_id].nest_parent {
        return Err(Errno::EINVAL);
    }
    let mut region = None;
    let mut data = None;
    if cmd.data_len != 0 {
        let mut d: t::IommuViommuSelftest = read_driver_data(uc.platform, uc.caller, cmd.data_uptr, cmd.data_len, 8)?;
        // The mock vIOMMU's page for its mmap region.
        fail_point(FailSite::Alloc)?;
        let mem = m.platform.create_dmabuf_memory(2 * PAGE_SIZE)?;
        let mut page0 = Vec::with_capacity(1);
        mem.resolve_pages(0, 1, &mut page0)?;
        m.platform.write_phys(page0[0], &d.in_data.to_ne_bytes())?;
        let offset = next_region_offset(&g);
        d.out_data = d.in_data;
        d.out_mmap_offset = offset;
        d.out_mmap_length = 2 * PAGE_SIZE;
        region = Some((offset, 2 * PAGE_SIZE, mem));
        data = Some(d);
    }
    let id = g.objs.reserve(ObjType::Viommu)?;
    if let Some(d) = data {
        if let Err(e) = uc.write_user(cmd.data_uptr, &d.as_bytes()[..cmd.data_len as usize]) {
            g.objs.remove(id);
            return Err(e);
        }
    }
    cmd.out_viommu_id = id;
    if let Err(e) = uc.respond(&cmd) {
        g.objs.remove(id);
        return Err(e);
    }
    g.viommus.insert(
        id,
        Viommu { parent: cmd.hwpt_id, vdevs: BTreeMap::new(), veventqs: BTreeMap::new(), hw_queues: [None; 2], region },
    );
    g.objs.get(cmd.hwpt_id);
    g.objs.publish(id);
    Ok(0)
}

/// mmap offsets: allocated from PAGE_SIZE upward, region-length sized.
fn next_region_offset(g: &Ictx) -> u64 {
    let mut off = PAGE_SIZE;
    let mut used: Vec<(u64, u64)> = g.viommus.values().filter_map(|v| v.region.as_ref().map(|r| (r.0, r.1))).collect();
    used.sort_unstable();
    for (o, l) in used {
        if off + 2 * PAGE_SIZE <= o {
            break;
        }
        off = off.max(o + l);
    }
    off
}

pub(crate) fn destroy_viommu(g: &mut Ictx, id: u32) {
    if let Some(v) = g.viommus.remove(&id) {
        g.objs.put(v.parent);
    }
}

pub(crate) fn vdevice_alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuVdeviceAlloc = uc.read()?;
    let mut g = ctx.lock();
    g.objs.expect(cmd.viommu_id, ObjType::Viommu)?;
    g.objs.expect(cmd.dev_id, ObjType::Device)?;
    if g.vdevices.values().any(|v| v.dev == cmd.dev_id) {
        return Err(Errno::EEXIST);
    }
    if g.viommus[&cmd.viommu_id].vdevs.contains_key(&cmd.virt_id) {
        return Err(Errno::EEXIST);
    }
    let id = g.objs.reserve(ObjType::Vdevice)?;
    cmd.out_vdevice_id = id;
    if let Err(e) = uc.respond(&cmd) {
        g.objs.remove(id);
        return Err(e);
    }
    g.vdevices.insert(id, Vdevice { viommu: cmd.viommu_id, dev: cmd.dev_id, virt_id: cmd.virt_id });
    g.viommus.get_mut(&cmd.viommu_id).expect("viommu").vdevs.insert(cmd.virt_id, id);
    g.objs.get(cmd.viommu_id);
    g.objs.get(cmd.dev_id);
    g.objs.publish(id);
    Ok(0)
}

pub(crate) fn destroy_vdevice(g: &mut Ictx, id: u32) {
    if let Some(v) = g.vdevices.remove(&id) {
        if let Some(vi) = g.viommus.get_mut(&v.viommu) {
            vi.vdevs.remove(&v.virt_id);
        }
        g.objs.put(v.viommu);
        g.objs.put(v.dev);
    }
}

/// The vDEVICE of `dev` in `viommu`.
pub(crate) fn vdevice_of(g: &Ictx, viommu: u32, dev: u32) -> Option<(u32, u64)> {
    g.vdevices.iter().find(|(_, v)| v.viommu == viommu && v.dev == dev).map(|(&id, v)| (id, v.virt_id))
}

// ---- vEVENTQ ----

/// An open vEVENTQ fd.
#[derive(Debug)]
pub struct VeventqFile {
    ctx: Arc<Context>,
    id: u32,
}

impl Drop for VeventqFile {
    fn drop(&mut self) {
        self.ctx.lock().objs.put(self.id);
    }
}

const HDR: usize = core::mem::size_of::<IommufdVeventHeader>();

impl VeventqFile {
    /// `read(2)`: headers and payloads, FIFO, never blocking.
    pub fn read(&self, caller: &Caller, buf: u64, count: usize) -> Result<usize> {
        if count < HDR {
            return Err(Errno::EINVAL);
        }
        let mut g = self.ctx.lock();
        let q = g.veventqs.get_mut(&self.id).ok_or(Errno::ENODEV)?;
        let p = &*self.ctx.machine.platform;
        let mut done = 0usize;
        while let Some(item) = q.items.front() {
            if done >= count || HDR > count - done {
                break;
            }
            let need = item.data.as_ref().map_or(0, |d| d.len());
            if item.data.is_some() && HDR + need > count - done {
                if done == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            let mut h = IommufdVeventHeader::new_zeroed();
            h.sequence = item.seq;
            if item.data.is_none() {
                h.flags = IOMMU_VEVENTQ_FLAG_LOST_EVENTS;
            }
            p.write_user(caller, buf + done as u64, h.as_bytes())?;
            if let Some(d) = &item.data {
                if let Err(e) = p.write_user(caller, buf + (done + HDR) as u64, d) {
                    return if done == 0 { Err(e) } else { Ok(done) };
                }
                q.num_events -= 1;
            }
            done += HDR + need;
            q.items.pop_front();
        }
        Ok(done)
    }

    /// Readiness: readable while non-empty; never writable.
    pub fn poll(&self) -> u32 {
        let g = self.ctx.lock();
        if g.veventqs.get(&self.id).is_some_and(|q| !q.items.is_empty()) {
            0x1 | 0x40
        } else {
            0
        }
    }
}

pub(crate) fn veventq_alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuVeventqAlloc = uc.read()?;
    if cmd.flags != 0 || cmd.reserved != 0 || cmd.type_ == IOMMU_VEVENTQ_TYPE_DEFAULT {
        return Err(Errno::EOPNOTSUPP);
    }
    if cmd.veventq_depth == 0 || cmd.veventq_depth > 1 << 19 {
        return Err(Errno::EINVAL);
    }
    let id = {
        let mut g = ctx.lock();
        g.objs.expect(cmd.viommu_id, ObjType::Viommu)?;
        if g.viommus[&cmd.viommu_id].veventqs.contains_key(&cmd.type_) {
            return Err(Errno::EEXIST);
        }
        let id = g.objs.reserve(ObjType::Veventq)?;
        g.veventqs.insert(
            id,
            Veventq {
                viommu: cmd.viommu_id,
                ty: cmd.type_,
                depth: cmd.veventq_depth,
                num_events: 0,
                sequence: 0,
                items: VecDeque::new(),
            },
        );
        g.viommus.get_mut(&cmd.viommu_id).expect("viommu").veventqs.insert(cmd.type_, id);
        g.objs.get(cmd.viommu_id);
        g.objs.get(id);
        id
    };
    let file = Arc::new(VeventqFile { ctx: ctx.clone(), id });
    let undo = |ctx: &Arc<Context>| {
        let mut g = ctx.lock();
        destroy_veventq(&mut g, id);
        g.objs.remove(id);
    };
    crate::hw_pagetable::install_and_respond(
        ctx,
        uc,
        EngineFile::Veventq(file),
        id,
        &mut cmd,
        |c, fd| {
            c.out_veventq_id = id;
            c.out_veventq_fd = fd as u32;
        },
        undo,
    )
}

pub(crate) fn destroy_veventq(g: &mut Ictx, id: u32) {
    if let Some(q) = g.veventqs.remove(&id) {
        if let Some(v) = g.viommus.get_mut(&q.viommu) {
            v.veventqs.remove(&q.ty);
        }
        g.objs.put(q.viommu);
    }
}

/// The mock driver reports an event on a vIOMMU. EOPNOTSUPP without a queue of that type.
pub(crate) fn report_event(g: &mut Ictx, viommu: u32, ty: u32, data: &[u8]) -> Result<()> {
    let qid = *g.viommus.get(&viommu).and_then(|v| v.veventqs.get(&ty)).ok_or(Errno::EOPNOTSUPP)?;
    // The event record.
    fail_point(FailSite::Alloc)?;
    g.veventqs.get_mut(&qid).expect("veventq").report(data);
    Ok(())
}

// ---- HW queues ----

pub(crate) fn hw_queue_alloc<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuHwQueueAlloc = uc.read()?;
    if cmd.flags != 0 || cmd.type_ == IOMMU_HW_QUEUE_TYPE_DEFAULT {
        return Err(Errno::EOPNOTSUPP);
    }
    if cmd.length == 0 {
        return Err(Errno::EINVAL);
    }
    let last = cmd.nesting_parent_iova.checked_add(cmd.length - 1).ok_or(Errno::EOVERFLOW)?;
    let m = &*ctx.machine;
    let mut g = ctx.lock();
    g.objs.expect(cmd.viommu_id, ObjType::Viommu)?;
    if cmd.type_ != t::IOMMU_HW_QUEUE_TYPE_SELFTEST {
        return Err(Errno::EOPNOTSUPP);
    }
    let start = cmd.nesting_parent_iova & !(PAGE_SIZE - 1);
    let end = last.checked_add(1).and_then(|e| e.checked_next_multiple_of(PAGE_SIZE)).ok_or(Errno::ERANGE)?;
    let parent = g.viommus[&cmd.viommu_id].parent;
    let ioas = g.hwpt[&parent].ioas;
    // Internal access: pins lock their areas against unmap.
    let acc = g.objs.reserve(ObjType::Access)?;
    g.accesses.insert(acc, access::Access { needs_pin: true, internal: true, ..Default::default() });
    let undo_access = |g: &mut Ictx| {
        access::destroy(g, m, acc);
    };
    if let Err(e) = access::attach(&mut g, acc, ioas) {
        g.accesses.remove(&acc);
        g.objs.remove(acc);
        return Err(e);
    }
    let phys = match access::pin(&mut g, m, acc, start, end - start, false) {
        Ok(p) => p,
        Err(e) => {
            undo_access(&mut g);
            return Err(e);
        }
    };
    g.accesses.get_mut(&acc).expect("access").items.push(access::AccessItem {
        id: 0,
        iova: start,
        length: end - start,
    });
    if phys.windows(2).any(|w| w[1] != w[0] + PAGE_SIZE) {
        undo_access(&mut g);
        return Err(Errno::EFAULT);
    }
    let base = phys[0] + cmd.nesting_parent_iova % PAGE_SIZE;
    // Mock driver.
    let v = &g.viommus[&cmd.viommu_id];
    let idx = cmd.index as usize;
    let r = if cmd.index >= t::IOMMU_TEST_HW_QUEUE_MAX {
        Err(Errno::EINVAL)
    } else if v.hw_queues[idx].is_some() {
        Err(Errno::EEXIST)
    } else if idx > 0 && v.hw_queues[idx - 1].is_none() {
        Err(Errno::EIO)
    } else if g.hwpt[&parent].pt.iova_to_phys(cmd.nesting_parent_iova).map(|x| x.0) != Some(base) {
        Err(Errno::EFAULT)
    } else {
        Ok(())
    };
    if let Err(e) = r {
        undo_access(&mut g);
        return Err(e);
    }
    let id = match g.objs.reserve(ObjType::HwQueue) {
        Ok(id) => id,
        Err(e) => {
            undo_access(&mut g);
            return Err(e);
        }
    };
    cmd.out_hw_queue_id = id;
    if let Err(e) = uc.respond(&cmd) {
        g.objs.remove(id);
        undo_access(&mut g);
        return Err(e);
    }
    let prev = if idx > 0 { g.viommus[&cmd.viommu_id].hw_queues[idx - 1] } else { None };
    if let Some(p) = prev {
        g.objs.get(p);
    }
    g.viommus.get_mut(&cmd.viommu_id).expect("viommu").hw_queues[idx] = Some(id);
    g.objs.get(cmd.viommu_id);
    g.hw_queues
        .insert(id, HwQueue { viommu: cmd.viommu_id, index: cmd.index, access: acc, iova: start, length: end - start });
    g.objs.publish(id);
    Ok(0)
}

pub(crate) fn destroy_hw_queue(ctx: &Context, g: &mut Ictx, id: u32) {
    let Some(q) = g.hw_queues.remove(&id) else { return };
    let prev =
        if q.index > 0 { g.viommus.get(&q.viommu).and_then(|v| v.hw_queues[q.index as usize - 1]) } else { None };
    if let Some(p) = prev {
        g.objs.put(p);
    }
    if let Some(v) = g.viommus.get_mut(&q.viommu) {
        v.hw_queues[q.index as usize] = None;
    }
    g.objs.put(q.viommu);
    access::destroy(g, &ctx.machine, q.access);
    let _ = (q.iova, q.length);
}

/// What a program's `mmap` of the iommufd maps, and the reference it holds.
#[derive(Debug)]
pub struct MmapRegion {
    /// The memory to map (offset 0, the whole region).
    pub memory: Arc<dyn HostFile>,
    /// Region length in bytes.
    pub length: u64,
    /// Holds the region's owner busy until dropped (the mapping is gone).
    pub hold: MmapHold,
}

/// A live mmap of a vIOMMU region: the vIOMMU cannot be destroyed while one exists.
#[derive(Debug)]
pub struct MmapHold {
    ctx: Arc<Context>,
    viommu: u32,
}

impl Clone for MmapHold {
    fn clone(&self) -> Self {
        self.ctx.lock().objs.get(self.viommu);
        MmapHold { ctx: self.ctx.clone(), viommu: self.viommu }
    }
}

impl Drop for MmapHold {
    fn drop(&mut self) {
        self.ctx.lock().objs.put(self.viommu);
    }
}

/// Resolve an mmap request against the published regions.
pub(crate) fn mmap(ctx: &Arc<Context>, len: u64, offset: u64) -> Result<MmapRegion> {
    let mut g = ctx.lock();
    let found = g.viommus.iter().find_map(|(&id, v)| {
        v.region.as_ref().filter(|r| offset >= r.0 && offset < r.0 + r.1).map(|r| (id, r.0, r.1, r.2.clone()))
    });
    let (id, start, length, memory) = found.ok_or(Errno::ENXIO)?;
    if offset != start || len != length {
        return Err(Errno::ENXIO);
    }
    g.objs.get(id);
    Ok(MmapRegion { memory, length, hold: MmapHold { ctx: ctx.clone(), viommu: id } })
}

/// vIOMMU cache invalidation by the mock driver (selftest_mock.md §6).
pub(crate) fn invalidate<P: Platform + ?Sized>(
    uc: &Ucmd<'_, P>,
    g: &mut Ictx,
    viommu: u32,
    cmd: &IommuHwptInvalidate,
) -> (u32, Result<()>) {
    if cmd.entry_num == 0 && cmd.data_type == t::IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST {
        return (0, Ok(()));
    }
    if cmd.data_type != t::IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST {
        return (0, Err(Errno::EINVAL));
    }
    const SZ: usize = core::mem::size_of::<t::IommuViommuInvalidateSelftest>();
    // The driver's copy of the request array.
    if let Err(e) = fail_point(FailSite::TempBuf) {
        return (0, Err(e));
    }
    let mut entries = Vec::with_capacity(cmd.entry_num as usize);
    for i in 0..cmd.entry_num as u64 {
        let addr = cmd.data_uptr + i * cmd.entry_len as u64;
        let mut e = t::IommuViommuInvalidateSelftest::new_zeroed();
        let n = (cmd.entry_len as usize).min(SZ);
        if let Err(err) = uc.read_user(addr, &mut e.as_mut_bytes()[..n]) {
            return (0, Err(err));
        }
        if cmd.entry_len as usize > SZ {
            if let Err(err) =
                crate::ucmd::check_zero_tail(uc.platform, uc.caller, addr + SZ as u64, cmd.entry_len as u64 - SZ as u64)
            {
                return (0, Err(err));
            }
        }
        entries.push(e);
    }
    for (i, e) in entries.iter().enumerate() {
        if e.flags & !t::IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
            return (i as u32, Err(Errno::EOPNOTSUPP));
        }
        if e.cache_id > t::MOCK_DEV_CACHE_ID_MAX {
            return (i as u32, Err(Errno::EINVAL));
        }
        let Some(&vdev) = g.viommus[&viommu].vdevs.get(&(e.vdev_id as u64)) else {
            return (i as u32, Err(Errno::EINVAL));
        };
        let dev = g.vdevices[&vdev].dev;
        let d = g.devices.get_mut(&dev).expect("device");
        if e.flags & t::IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
            d.cache = [0; 4];
        } else {
            d.cache[e.cache_id as usize] = 0;
        }
    }
    (cmd.entry_num, Ok(()))
}

//! One open `/dev/iommu` file (the kernel's `iommufd_ctx`) and ioctl dispatch.
//!
//! ## Locking and lifetime
//! All state of a context sits in one [`Ictx`] behind one mutex: every ioctl runs start to
//! finish under it, so no other thread ever sees an area, HWPT or device half built, and
//! "being created" states of the kernel never become visible. Machine-wide state (pins,
//! accounting) has its own locks taken *inside* the context lock, never around it.
//!
//! A [`Context`] lives while an `Arc` to it exists: the `/dev/iommu` descriptors, access,
//! fault and vEVENTQ descriptors all hold one. When the last goes, [`Drop`] runs the
//! kernel's teardown: repeated passes in increasing id order destroying every object that
//! nothing else uses, until the table is empty.

use crate::access::Access;
use crate::device::{Device, Selftest};
use crate::errno::{Errno, Result};
use crate::hw_pagetable::{Fault, HwptNested, HwptPaging};
use crate::io_pagetable::Ioas;
use crate::machine::{AcctMode, Machine};
use crate::object::{ObjType, ObjectTable};
use crate::pages::{Pages, StoreId};
use crate::platform::{Caller, Platform};
use crate::ucmd::Ucmd;
use std::collections::BTreeMap;
use std::sync::Arc;
use uiommu_sync::{BiasedMutex, BiasedMutexGuard};
use uiommu_uapi::iommufd as uapi;

/// Everything one context owns; see the module comment for the locking rule.
#[derive(Debug, Default)]
pub(crate) struct Ictx {
    pub objs: ObjectTable,
    pub ioas: BTreeMap<u32, Ioas>,
    pub hwpt: BTreeMap<u32, HwptPaging>,
    pub nested: BTreeMap<u32, HwptNested>,
    pub devices: BTreeMap<u32, Device>,
    pub selftests: BTreeMap<u32, Selftest>,
    pub accesses: BTreeMap<u32, Access>,
    pub faults: BTreeMap<u32, Fault>,
    pub viommus: BTreeMap<u32, crate::viommu::Viommu>,
    pub vdevices: BTreeMap<u32, crate::viommu::Vdevice>,
    pub veventqs: BTreeMap<u32, crate::viommu::Veventq>,
    pub hw_queues: BTreeMap<u32, crate::viommu::HwQueue>,
    pub stores: BTreeMap<StoreId, Pages>,
    pub next_store: StoreId,
    pub acct_mode: Option<AcctMode>,
    /// The IOAS VFIO type1 commands act on.
    pub vfio_ioas: Option<u32>,
}

impl Ictx {
    pub fn acct_mode(&self) -> AcctMode {
        self.acct_mode.unwrap_or(AcctMode::User)
    }

    /// A published IOAS (ENOENT otherwise). IOAS entries exist exactly while their id is
    /// published (inserted and removed together under the lock), so one map lookup serves.
    #[inline(always)]
    pub fn ioas_ref(&self, id: u32) -> Result<&Ioas> {
        crate::fault_inject::fail_point(crate::fault_inject::FailSite::Lookup)?;
        self.ioas.get(&id).ok_or(Errno::ENOENT)
    }

    pub fn new_store(&mut self, pages: Pages) -> StoreId {
        self.next_store += 1;
        self.stores.insert(self.next_store, pages);
        self.next_store
    }
}

/// An iommufd context (one open of `/dev/iommu`).
pub struct Context {
    pub(crate) machine: Arc<Machine>,
    /// The machine's platform, kept here too: an ioctl's user copies reach it in one load
    /// fewer (the chain of dependent loads is what a cheap ioctl waits on).
    platform: Arc<dyn crate::platform::Platform>,
    /// Biased towards the first thread that locks it (no atomic read-modify-write on that
    /// thread's uncontended ioctls; see `uiommu_sync`).
    state: BiasedMutex<Ictx>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// Open a new context on `machine` (`open("/dev/iommu")`).
    pub fn open(machine: &Arc<Machine>) -> Arc<Context> {
        let ctx = Arc::new(Context {
            machine: machine.clone(),
            platform: machine.platform.clone(),
            state: BiasedMutex::default(),
        });
        let mut list = machine.contexts.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&ctx));
        ctx
    }

    /// The machine this context runs on.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    #[inline]
    pub(crate) fn lock(&self) -> BiasedMutexGuard<'_, Ictx> {
        self.state.lock()
    }

    /// `mmap(addr, len, prot, flags, fd, offset)` on the iommufd: checks in the kernel's
    /// order, then the vIOMMU region at exactly `offset` with exactly `len` (ENXIO
    /// otherwise). The returned hold keeps the region's owner busy until dropped.
    pub fn mmap(self: &Arc<Self>, len: u64, prot: i32, flags: i32, offset: u64) -> Result<crate::MmapRegion> {
        const PROT_EXEC: i32 = 0x4;
        const MAP_SHARED: i32 = 0x1;
        if flags & MAP_SHARED == 0 {
            return Err(Errno::EINVAL);
        }
        if prot & PROT_EXEC != 0 {
            return Err(Errno::EPERM);
        }
        crate::viommu::mmap(self, len, offset)
    }

    /// Check the engine's internal invariants (areas, stores, pins, domains); for tests
    /// and fuzzers. Returns a description of the first violation.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.lock().check_invariants()
    }

    /// Number of objects (any state) the context holds.
    pub fn object_count(&self) -> usize {
        self.lock().objs.len()
    }

    /// `ioctl(fd, cmd, arg)`: returns the ioctl's non-negative result or an errno.
    pub fn ioctl(self: &Arc<Self>, caller: &Caller, cmd: u32, arg: u64) -> Result<i32> {
        self.ioctl_via(&*self.platform, caller, cmd, arg)
    }

    /// [`Context::ioctl`] with the iommufd commands' user copies made through `platform`, a
    /// value of the machine's platform type that behaves as the machine's own (a stateless
    /// platform: any value of its type). Naming the type lets the compiler inline the
    /// copies into the commands, which is most of what a cheap ioctl costs.
    pub fn ioctl_via<P: Platform + ?Sized>(
        self: &Arc<Self>,
        platform: &P,
        caller: &Caller,
        cmd: u32,
        arg: u64,
    ) -> Result<i32> {
        let nr = (cmd & 0xff) as u8;
        if !(uapi::IOMMUFD_CMD_BASE..=uiommu_uapi::test::IOMMU_TEST_CMD_NR).contains(&nr) {
            return crate::vfio_compat::ioctl(self, caller, cmd, arg);
        }
        let info = uiommu_uapi::cmd_info(nr).filter(|i| i.ioctl == cmd);
        // Read the whole known struct in one copy when we can; if that faults (the struct
        // may be shorter and end a mapping), read just `size` like the kernel does. The
        // kernel's order holds either way: EFAULT for `size`, then ENOTTY, then EINVAL.
        // (Built in place: the read-ahead lands where the decoders read it.)
        let mut uc = Ucmd { caller, platform, arg, user_size: 0, pre: [0; crate::ucmd::PRE_MAX], pre_len: 0 };
        match info {
            Some(i) if platform.try_read_user(caller, arg, &mut uc.pre[..i.size]).is_ok() => uc.pre_len = i.size,
            _ => platform.read_user(caller, arg, &mut uc.pre[..4])?,
        }
        uc.user_size = u32::from_ne_bytes([uc.pre[0], uc.pre[1], uc.pre[2], uc.pre[3]]);
        let info = info.ok_or(Errno::ENOTTY)?;
        if (uc.user_size as usize) < info.min_size {
            return Err(Errno::EINVAL);
        }
        self.dispatch(nr, &uc)
    }

    fn dispatch<P: Platform + ?Sized>(self: &Arc<Self>, nr: u8, uc: &Ucmd<'_, P>) -> Result<i32> {
        use uapi::*;
        match nr {
            IOMMUFD_CMD_DESTROY => self.destroy(uc),
            IOMMUFD_CMD_IOAS_ALLOC => crate::ioas::alloc(self, uc),
            IOMMUFD_CMD_IOAS_ALLOW_IOVAS => crate::ioas::allow_iovas(self, uc),
            IOMMUFD_CMD_IOAS_COPY => crate::ioas::copy(self, uc),
            IOMMUFD_CMD_IOAS_IOVA_RANGES => crate::ioas::iova_ranges(self, uc),
            IOMMUFD_CMD_IOAS_MAP => crate::ioas::map(self, uc),
            IOMMUFD_CMD_IOAS_MAP_FILE => crate::ioas::map_file(self, uc),
            IOMMUFD_CMD_IOAS_UNMAP => crate::ioas::unmap(self, uc),
            IOMMUFD_CMD_OPTION => crate::ioas::option(self, uc),
            IOMMUFD_CMD_VFIO_IOAS => crate::vfio_compat::vfio_ioas(self, uc),
            IOMMUFD_CMD_HWPT_ALLOC => crate::hw_pagetable::alloc(self, uc),
            IOMMUFD_CMD_GET_HW_INFO => crate::device::get_hw_info(self, uc),
            IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING => crate::hw_pagetable::set_dirty_tracking(self, uc),
            IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP => crate::hw_pagetable::get_dirty_bitmap(self, uc),
            IOMMUFD_CMD_HWPT_INVALIDATE => crate::hw_pagetable::invalidate(self, uc),
            IOMMUFD_CMD_FAULT_QUEUE_ALLOC => crate::hw_pagetable::fault_alloc(self, uc),
            IOMMUFD_CMD_IOAS_CHANGE_PROCESS => crate::ioas::change_process(self, uc),
            uiommu_uapi::test::IOMMU_TEST_CMD_NR => crate::mock::selftest::test_cmd(self, uc),
            IOMMUFD_CMD_VIOMMU_ALLOC => crate::viommu::viommu_alloc(self, uc),
            IOMMUFD_CMD_VDEVICE_ALLOC => crate::viommu::vdevice_alloc(self, uc),
            IOMMUFD_CMD_VEVENTQ_ALLOC => crate::viommu::veventq_alloc(self, uc),
            IOMMUFD_CMD_HW_QUEUE_ALLOC => crate::viommu::hw_queue_alloc(self, uc),
            _ => Err(Errno::ENOTTY),
        }
    }

    /// `IOMMU_DESTROY`.
    fn destroy<P: Platform + ?Sized>(self: &Arc<Self>, uc: &Ucmd<'_, P>) -> Result<i32> {
        let cmd: uapi::IommuDestroy = uc.read()?;
        let mut g = self.lock();
        let ty = g.objs.type_of(cmd.id)?;
        if g.objs.users(cmd.id) > 0 {
            return Err(Errno::EBUSY);
        }
        self.destroy_object(&mut g, cmd.id, ty)?;
        Ok(0)
    }

    /// Destroy an object nothing uses any more (type-specific undo, then the id is freed).
    pub(crate) fn destroy_object(&self, g: &mut Ictx, id: u32, ty: ObjType) -> Result<()> {
        match ty {
            ObjType::Ioas => crate::ioas::destroy(self, g, id),
            ObjType::HwptPaging => crate::hw_pagetable::destroy_paging(self, g, id),
            ObjType::HwptNested => crate::hw_pagetable::destroy_nested(g, id),
            ObjType::Selftest => crate::device::destroy_selftest(self, g, id),
            ObjType::Fault => crate::hw_pagetable::destroy_fault(g, id),
            ObjType::Viommu => crate::viommu::destroy_viommu(g, id),
            ObjType::Vdevice => crate::viommu::destroy_vdevice(g, id),
            ObjType::Veventq => crate::viommu::destroy_veventq(g, id),
            ObjType::HwQueue => crate::viommu::destroy_hw_queue(self, g, id),
            // Devices go with their self-test object; accesses with their fd.
            ObjType::Device | ObjType::Access => return Err(Errno::EBUSY),
        }
        g.objs.remove(id);
        Ok(())
    }

    /// Kernel teardown order: passes over ids destroying unused objects.
    fn teardown(&self) {
        let mut g = self.lock();
        loop {
            let mut progress = false;
            for (id, ty) in g.objs.live_ids() {
                // An earlier destroy in this pass may have taken this one with it.
                if g.objs.type_of(id) != Ok(ty) {
                    continue;
                }
                if g.objs.users(id) == 0 && self.destroy_object(&mut g, id, ty).is_ok() {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        debug_assert!(g.objs.live_ids().is_empty(), "teardown left objects: {:?}", g.objs.live_ids());
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.teardown();
    }
}

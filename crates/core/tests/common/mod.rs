//! Test harness: one simulated process driving a context through raw ioctls.
#![allow(dead_code)]

use std::sync::Arc;
use uiommu_core::sim::SimPlatform;
use uiommu_core::{Caller, Context, Errno, Machine};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const PID: u32 = 100;

pub struct H {
    pub sim: Arc<SimPlatform>,
    pub m: Arc<Machine>,
    pub ctx: Arc<Context>,
    pub caller: Caller,
    pub scratch: u64,
    /// Arms faults in the engine's own user copies (the machine's platform wraps `sim`).
    pub copy_faults: Arc<CopyFaults>,
}

impl H {
    pub fn new() -> H {
        let sim = SimPlatform::new();
        let copy_faults = Arc::new(CopyFaults { sim: sim.clone(), countdown: Default::default() });
        let m = Machine::new(copy_faults.clone());
        let ctx = Context::open(&m);
        let scratch = sim.mmap(PID, 1 << 16, true);
        H { sim, m, ctx, caller: Caller::privileged(PID), scratch, copy_faults }
    }

    /// Issue `cmd` with `v` as the argument struct; `v` is updated with what came back.
    pub fn ioctl<T: IntoBytes + FromBytes + KnownLayout + Immutable>(&self, cmd: u32, v: &mut T) -> Result<i32, Errno> {
        use uiommu_core::Platform;
        self.sim.write_user(&self.caller, self.scratch, v.as_bytes()).unwrap();
        let r = self.ctx.ioctl(&self.caller, cmd, self.scratch);
        self.sim.read_user(&self.caller, self.scratch, v.as_mut_bytes()).unwrap();
        r
    }

    pub fn raw(&self, cmd: u32, bytes: &[u8]) -> Result<i32, Errno> {
        use uiommu_core::Platform;
        self.sim.write_user(&self.caller, self.scratch, bytes).unwrap();
        self.ctx.ioctl(&self.caller, cmd, self.scratch)
    }

    /// [`H::raw`] through `Context::ioctl_via`, with the platform's type named (the commands
    /// as a host that knows its platform type runs them).
    pub fn raw_via(&self, cmd: u32, bytes: &[u8]) -> Result<i32, Errno> {
        use uiommu_core::Platform;
        self.sim.write_user(&self.caller, self.scratch, bytes).unwrap();
        self.ctx.ioctl_via(&*self.copy_faults, &self.caller, cmd, self.scratch)
    }

    pub fn ioas_alloc(&self) -> u32 {
        let mut c = IommuIoasAlloc { size: 12, ..Default::default() };
        self.ioctl(IOMMU_IOAS_ALLOC, &mut c).unwrap();
        c.out_ioas_id
    }

    pub fn destroy(&self, id: u32) -> Result<i32, Errno> {
        let mut c = IommuDestroy { size: 8, id };
        self.ioctl(IOMMU_DESTROY, &mut c)
    }

    pub fn test_cmd<P: TestPayload>(&self, op: u32, id: u32, p: &P) -> Result<(i32, P), Errno> {
        let mut c = IommuTestCmd::new(op, id, p);
        let r = self.ioctl(IOMMU_TEST_CMD, &mut c)?;
        Ok((r, c.payload()))
    }

    /// MOCK_DOMAIN on `pt`: (stdev, hwpt, device).
    pub fn mock_domain(&self, pt: u32) -> Result<(u32, u32, u32), Errno> {
        let (_, p) = self.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN, pt, &TestMockDomain::default())?;
        Ok((p.out_stdev_id, p.out_hwpt_id, p.out_idev_id))
    }

    pub fn map(&self, ioas: u32, va: u64, len: u64, iova: Option<u64>) -> Result<u64, Errno> {
        let mut c = IommuIoasMap {
            size: 40,
            flags: IOMMU_IOAS_MAP_READABLE
                | IOMMU_IOAS_MAP_WRITEABLE
                | if iova.is_some() { IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 },
            ioas_id: ioas,
            user_va: va,
            length: len,
            iova: iova.unwrap_or(0),
            ..Default::default()
        };
        self.ioctl(IOMMU_IOAS_MAP, &mut c)?;
        Ok(c.iova)
    }

    pub fn unmap(&self, ioas: u32, iova: u64, len: u64) -> Result<u64, Errno> {
        let mut c = IommuIoasUnmap { size: 24, ioas_id: ioas, iova, length: len };
        self.ioctl(IOMMU_IOAS_UNMAP, &mut c)?;
        Ok(c.length)
    }

    pub fn copy(&self, dst: u32, src: u32, src_iova: u64, len: u64, dst_iova: Option<u64>) -> Result<u64, Errno> {
        let mut c = IommuIoasCopy {
            size: 40,
            flags: IOMMU_IOAS_MAP_READABLE | if dst_iova.is_some() { IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 },
            dst_ioas_id: dst,
            src_ioas_id: src,
            length: len,
            dst_iova: dst_iova.unwrap_or(0),
            src_iova,
        };
        self.ioctl(IOMMU_IOAS_COPY, &mut c)?;
        Ok(c.dst_iova)
    }

    pub fn iova_ranges(&self, ioas: u32) -> (Vec<(u64, u64)>, u64) {
        use uiommu_core::Platform;
        let buf = self.scratch + 0x1000;
        let mut c =
            IommuIoasIovaRanges { size: 32, ioas_id: ioas, num_iovas: 16, allowed_iovas: buf, ..Default::default() };
        self.ioctl(IOMMU_IOAS_IOVA_RANGES, &mut c).unwrap();
        let mut v = vec![IommuIovaRange::default(); c.num_iovas as usize];
        self.sim.read_user(&self.caller, buf, v.as_mut_bytes()).unwrap();
        (v.iter().map(|r| (r.start, r.last)).collect(), c.out_iova_alignment)
    }

    pub fn check_map(&self, hwpt: u32, iova: u64, len: u64, uptr: u64) -> Result<i32, Errno> {
        self.test_cmd(IOMMU_TEST_OP_MD_CHECK_MAP, hwpt, &TestCheckMap { iova, length: len, uptr }).map(|r| r.0)
    }

    pub fn check_refs(&self, uptr: u64, len: u64, refs: u32) -> Result<i32, Errno> {
        self.test_cmd(IOMMU_TEST_OP_MD_CHECK_REFS, 0, &TestCheckRefs { length: len, uptr, refs, pad: 0 }).map(|r| r.0)
    }
}

// ---- Fault-injection sweeps and state comparison ----

use std::sync::atomic::{AtomicU32, Ordering};
use uiommu_core::{EngineFile, FdTarget, HostFile, Platform};

/// The simulated platform as the engine sees it, with a countdown over the engine's own
/// `read_user`/`write_user` calls: armed with n, the n-th copy faults (EFAULT), like a
/// user buffer that goes away mid-ioctl. The harness itself writes through `sim` directly.
#[derive(Debug)]
pub struct CopyFaults {
    sim: Arc<SimPlatform>,
    countdown: AtomicU32,
}

impl CopyFaults {
    /// Arm (n ≥ 1) or disarm (0).
    pub fn arm(&self, n: u32) {
        self.countdown.store(n, Ordering::SeqCst);
    }
    /// What is left of the countdown (0 = the fault happened or was never armed).
    pub fn left(&self) -> u32 {
        self.countdown.load(Ordering::SeqCst)
    }
    fn hit(&self) -> Result<(), Errno> {
        let r = self.countdown.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if r == Ok(1) {
            Err(Errno::EFAULT)
        } else {
            Ok(())
        }
    }
}

impl Platform for CopyFaults {
    fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.hit()?;
        self.sim.read_user(caller, addr, buf)
    }
    fn try_read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        // A read-ahead the engine falls back from is not a user copy to fault.
        self.sim.read_user(caller, addr, buf)
    }
    fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> Result<(), Errno> {
        self.hit()?;
        self.sim.write_user(caller, addr, buf)
    }
    fn resolve_user_pages(&self, pid: u32, va: u64, n: usize, write: bool, out: &mut Vec<u64>) -> Result<(), Errno> {
        self.sim.resolve_user_pages(pid, va, n, write, out)
    }
    fn is_compound(&self, phys: u64) -> bool {
        self.sim.is_compound(phys)
    }
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.sim.read_phys(phys, buf)
    }
    fn write_phys(&self, phys: u64, buf: &[u8]) -> Result<(), Errno> {
        self.sim.write_phys(phys, buf)
    }
    fn fd(&self, caller: &Caller, fd: i32) -> Result<FdTarget, Errno> {
        self.sim.fd(caller, fd)
    }
    fn install_fd(&self, caller: &Caller, file: EngineFile, flags: i32) -> Result<i32, Errno> {
        self.sim.install_fd(caller, file, flags)
    }
    fn uninstall_fd(&self, caller: &Caller, fd: i32) -> Option<EngineFile> {
        self.sim.uninstall_fd(caller, fd)
    }
    fn create_dmabuf_memory(&self, len: u64) -> Result<Arc<dyn HostFile>, Errno> {
        self.sim.create_dmabuf_memory(len)
    }
}

/// Everything a failed call must leave as it was: the context's objects and complete
/// internal state, the machine's pins and accounting, and the simulated descriptor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub objects: usize,
    pub total_pins: u64,
    /// `VmPin`, `VmLck` of [`PID`].
    pub pinned: (u64, u64),
    /// `locked_vm` of the caller's uid.
    pub user_locked: u64,
    pub fds: Vec<i32>,
    pub snapshot: String,
}

/// The first lines where two snapshots differ, for assertion messages.
pub fn snapshot_diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i).copied().unwrap_or("<none>"), lb.get(i).copied().unwrap_or("<none>"));
        if x != y {
            out += &format!("  before: {x}\n  after:  {y}\n");
            if out.len() > 2000 {
                break;
            }
        }
    }
    out
}

impl H {
    /// A harness whose caller lacks CAP_IPC_LOCK (uid 1000) with `memlock` bytes of
    /// RLIMIT_MEMLOCK, so pins are charged to `locked_vm`.
    pub fn unprivileged(memlock: u64) -> H {
        let mut h = H::new();
        h.caller.uid = 1000;
        h.caller.cap_ipc_lock = false;
        h.caller.cap_sys_resource = false;
        h.caller.memlock_limit = memlock;
        h
    }

    /// Another thread's view of the same context: same process and caller, its own
    /// scratch buffer for ioctl arguments.
    pub fn another(&self) -> H {
        let scratch = self.sim.mmap(PID, 1 << 16, true);
        H {
            sim: self.sim.clone(),
            m: self.m.clone(),
            ctx: self.ctx.clone(),
            caller: self.caller.clone(),
            scratch,
            copy_faults: self.copy_faults.clone(),
        }
    }

    /// The current [`State`]; panics if the engine's invariants do not hold.
    pub fn state(&self) -> State {
        if let Err(e) = self.ctx.check_invariants() {
            panic!("invariants: {e}\n{}", self.ctx.snapshot());
        }
        State {
            objects: self.ctx.object_count(),
            total_pins: self.m.total_pins(),
            pinned: self.m.pinned_pages_of(PID),
            user_locked: self.m.user_locked_pages(self.caller.uid),
            fds: self.sim.open_fds(),
            snapshot: self.ctx.snapshot(),
        }
    }

    /// Issue `cmd` with `v` (its leading u32 set to `size_of::<T>()`); returns what came back.
    pub fn call<T: IntoBytes + FromBytes + KnownLayout + Immutable>(&self, cmd: u32, mut v: T) -> Result<T, Errno> {
        let size = (core::mem::size_of::<T>() as u32).to_ne_bytes();
        v.as_mut_bytes()[..4].copy_from_slice(&size);
        self.ioctl(cmd, &mut v)?;
        Ok(v)
    }

    /// Write `bytes` at `scratch + off` (for arrays and driver data the argument points at).
    pub fn put(&self, off: u64, bytes: &[u8]) -> u64 {
        assert!(off >= 0x1000, "the first page holds the ioctl argument");
        self.sim.write_user(&self.caller, self.scratch + off, bytes).unwrap();
        self.scratch + off
    }

    /// The fail-nth sweep of one call: run it with failure site n = 1, 2, … armed until a
    /// run reaches fewer than n sites. Every injected failure must return an errno and leave
    /// the [`State`] exactly as before the call; the final, un-injected run must succeed.
    /// Returns its result and the number of failure sites the call passed.
    pub fn sweep<T>(&self, what: &str, mut call: impl FnMut(&H) -> Result<T, Errno>) -> (T, u32) {
        use uiommu_core::Machine;
        let before = self.state();
        let mut n = 1u32;
        loop {
            Machine::set_fail_nth(n);
            let r = call(self);
            let left = Machine::fail_nth();
            Machine::set_fail_nth(0);
            if left != 0 {
                let v = r.unwrap_or_else(|e| panic!("{what}: the un-injected run failed: {e:?}"));
                return (v, n - left);
            }
            let site = Machine::last_injected_site().unwrap_or("?");
            let Err(e) = r else {
                panic!("{what}: failure injected at site {n} ({site}) but the call succeeded");
            };
            let after = self.state();
            if after != before {
                panic!(
                    "{what}: failure at site {n} ({site}, {e:?}) did not unwind:\n{}objects {} -> {}, pins {} -> {}, \
                     pinned {:?} -> {:?}, user_locked {} -> {}, fds {:?} -> {:?}",
                    snapshot_diff(&before.snapshot, &after.snapshot),
                    before.objects,
                    after.objects,
                    before.total_pins,
                    after.total_pins,
                    before.pinned,
                    after.pinned,
                    before.user_locked,
                    after.user_locked,
                    before.fds,
                    after.fds
                );
            }
            n += 1;
            assert!(n < 10_000, "{what}: more than 10000 failure sites?");
        }
    }
}

impl H {
    /// The user-copy counterpart of [`H::sweep`]: the engine's 1st, 2nd, … `read_user` or
    /// `write_user` of the call faults, until a run gets through. For calls whose failure
    /// must undo everything (all but the kernel's documented exceptions: map, copy, unmap,
    /// option and invalidation keep their effect when only the copy-back faults).
    pub fn sweep_copies<T>(&self, what: &str, mut call: impl FnMut(&H) -> Result<T, Errno>) -> (T, u32) {
        let before = self.state();
        let mut n = 1u32;
        loop {
            self.copy_faults.arm(n);
            let r = call(self);
            let left = self.copy_faults.left();
            self.copy_faults.arm(0);
            if left != 0 {
                let v = r.unwrap_or_else(|e| panic!("{what}: the run without a fault failed: {e:?}"));
                return (v, n - left);
            }
            let Err(e) = r else { panic!("{what}: user copy {n} faulted but the call succeeded") };
            assert_eq!(e, Errno::EFAULT, "{what}: user copy {n} faulted");
            let after = self.state();
            if after != before {
                panic!(
                    "{what}: fault of user copy {n} did not unwind:\n{}objects {} -> {}, pins {} -> {}, fds {:?} -> {:?}",
                    snapshot_diff(&before.snapshot, &after.snapshot),
                    before.objects,
                    after.objects,
                    before.total_pins,
                    after.total_pins,
                    before.fds,
                    after.fds
                );
            }
            n += 1;
        }
    }
}

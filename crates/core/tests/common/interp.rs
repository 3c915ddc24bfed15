//! The fuzz interpreter: turns arbitrary bytes into a sequence of iommufd ioctls (and file
//! operations) against one simulated machine, checking the engine's invariants after every
//! step and that closing everything releases every pin and every charge.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/dispatch.rs`, through `#[path]`)
//! and the plain smoke test `crates/core/tests/fuzz_smoke.rs`; it depends only on
//! `uiommu-core`, `uiommu-uapi` and `zerocopy`.
//!
//! Each step starts with a selector byte; the operation then draws what it needs: object
//! ids from a small range (so they hit live objects), IOVAs, lengths and user addresses
//! from lists of interesting values (mapped buffers, the mock aperture, boundaries,
//! overflowing values) or raw from the input, flags as raw bits. A "raw" operation sends
//! input bytes as the argument struct of any command. Another arms the thread's fail-nth
//! countdown for the next step, so injected failures meet hostile input.
#![allow(dead_code, unused_must_use)]

use std::sync::Arc;
use uiommu_core::sim::SimPlatform;
use uiommu_core::{Caller, Context, Creds, Machine, MmapRegion, Platform};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use uiommu_uapi::vfio::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const P: u64 = 4096;
const PID: u32 = 4242;
const UID: u32 = 777;
/// Most steps a single input may run (keeps every input fast).
pub const MAX_STEPS: usize = 96;

/// Reads the input front to back; past the end everything reads as zero.
pub struct Reader<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub fn new(d: &'a [u8]) -> Self {
        Reader { d, i: 0 }
    }
    pub fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// One fuzzing run's world: a machine, two contexts of one unprivileged process, real
/// mapped buffers (one read-only), memfds, and every descriptor the engine handed out.
pub struct World {
    pub sim: Arc<SimPlatform>,
    pub m: Arc<Machine>,
    pub ctxs: Vec<Arc<Context>>,
    pub caller: Caller,
    /// ioctl argument area (first page) and arrays/driver data (the rest).
    pub scratch: u64,
    /// (va, len, writable) of mapped buffers.
    pub bufs: Vec<(u64, u64, bool)>,
    pub memfds: Vec<i32>,
    /// Descriptors returned by the engine (accesses, fault queues, vEVENTQs, dma-bufs).
    pub fds: Vec<i32>,
    /// Ids the engine returned, to aim at besides the small ones.
    pub ids: Vec<u32>,
    pub mmaps: Vec<MmapRegion>,
    pub steps: usize,
    /// Typed-argument ioctls issued (alternating `ioctl` and `ioctl_via`).
    pub calls: u64,
    /// Successful ioctls per command number (low byte), for coverage statistics.
    pub ok: std::collections::BTreeMap<u8, usize>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        let sim = SimPlatform::new();
        let m = Machine::new(sim.clone());
        let ctxs = vec![Context::open(&m), Context::open(&m)];
        let creds = Creds { uid: UID, cap_sys_resource: false, cap_ipc_lock: false, memlock_limit: 256 * P };
        let caller = Caller::new(PID, creds);
        let scratch = sim.mmap(PID, 1 << 16, true);
        let bufs = vec![
            (sim.mmap(PID, 64 * P, true), 64 * P, true),
            (sim.mmap(PID, 16 * P, true), 16 * P, true),
            (sim.mmap(PID, 8 * P, false), 8 * P, false),
        ];
        let memfds = vec![sim.memfd(32 * P), sim.memfd(4 * P + 100)];
        World {
            sim,
            m,
            ctxs,
            caller,
            scratch,
            bufs,
            memfds,
            fds: Vec::new(),
            ids: Vec::new(),
            mmaps: Vec::new(),
            steps: 0,
            calls: 0,
            ok: Default::default(),
        }
    }

    fn ctx(&self, r: &mut Reader) -> Arc<Context> {
        // Mostly the first context.
        let i = if r.u8() % 8 == 7 { 1 } else { 0 };
        self.ctxs[i].clone()
    }

    fn id(&mut self, r: &mut Reader) -> u32 {
        let b = r.u8();
        match b % 16 {
            0..=11 => (b % 12) as u32,
            12 | 13 if !self.ids.is_empty() => self.ids[(b as usize / 16) % self.ids.len()],
            14 => r.u32(),
            _ => 1 + (b as u32 / 16),
        }
    }

    fn iova(&mut self, r: &mut Reader) -> u64 {
        let b = r.u8();
        let k = r.u8() as u64;
        match b % 12 {
            0 => 0,
            1 => MOCK_APERTURE_START + k * P,
            2 => MOCK_APERTURE_START + k * 2048,
            3 => k * P,
            4 => (1 << 32) + k * P,
            5 => MOCK_APERTURE_LAST + 1 - k * P,
            6 => u64::MAX - k,
            7 => r.u64(),
            8 => MOCK_APERTURE_START + (k << 20),
            _ => MOCK_APERTURE_START + (k % 8) * 16 * P,
        }
    }

    fn len(&mut self, r: &mut Reader) -> u64 {
        let b = r.u8();
        let k = (r.u8() % 8) as u64 + 1;
        match b % 12 {
            0 => 0,
            1 => 2048 * k,
            2 => u64::MAX,
            3 => r.u64(),
            4 => 1,
            5 => k * P - 1,
            6 => 1 << 20,
            7 => 4 * k * P,
            _ => k * P,
        }
    }

    fn va(&mut self, r: &mut Reader) -> u64 {
        let b = r.u8();
        let k = r.u8() as u64;
        match b % 8 {
            0 => 0,
            1 => r.u64(),
            2 => 1 << 31,
            i => {
                // Mostly the first half of a buffer, so lengths of a few pages fit.
                let (va, len, _) = self.bufs[(i as usize) % self.bufs.len()];
                va + (k % 16 * P) % (len / 2) + if k & 0x80 != 0 { 2048 } else { 0 }
            }
        }
    }

    fn fd(&mut self, r: &mut Reader) -> i32 {
        let b = r.u8();
        match b % 8 {
            0..=3 if !self.fds.is_empty() => self.fds[(b as usize / 8) % self.fds.len()],
            4 | 5 => self.memfds[b as usize % self.memfds.len()],
            6 => -1,
            _ => (b / 8) as i32,
        }
    }

    fn flags(r: &mut Reader, common: u32) -> u32 {
        let b = r.u8();
        match b % 4 {
            0 => r.u32(),
            _ => common & (b as u32 | (b as u32) << 8),
        }
    }

    /// Issue an iommufd ioctl with `v` as its argument (size set to the struct's);
    /// returns the struct as copied back.
    fn call<T: IntoBytes + FromBytes + KnownLayout + Immutable>(
        &mut self,
        ctx: &Arc<Context>,
        cmd: u32,
        mut v: T,
    ) -> (Result<i32, uiommu_core::Errno>, T) {
        let size = (core::mem::size_of::<T>() as u32).to_ne_bytes();
        v.as_mut_bytes()[..4].copy_from_slice(&size);
        self.sim.write_user(&self.caller, self.scratch, v.as_bytes()).expect("scratch");
        // Every other call names the platform's type (`ioctl_via`): both ways of compiling
        // the commands get the same inputs.
        self.calls += 1;
        let res = if self.calls.is_multiple_of(2) {
            ctx.ioctl(&self.caller, cmd, self.scratch)
        } else {
            ctx.ioctl_via(&*self.sim, &self.caller, cmd, self.scratch)
        };
        if res.is_ok() {
            *self.ok.entry(cmd as u8).or_default() += 1;
        }
        self.sim.read_user(&self.caller, self.scratch, v.as_mut_bytes()).expect("scratch");
        (res, v)
    }

    fn test<Pl: TestPayload>(
        &mut self,
        ctx: &Arc<Context>,
        op: u32,
        id: u32,
        p: &Pl,
    ) -> (Result<i32, uiommu_core::Errno>, Pl) {
        let c = IommuTestCmd::new(op, id, p);
        let (res, c) = self.call(ctx, IOMMU_TEST_CMD, c);
        if res.is_ok() {
            // Test ops are counted as 0xc0 + op.
            *self.ok.entry(0xc0 + op as u8).or_default() += 1;
        }
        (res, c.payload())
    }

    /// Put bytes in the data area of the scratch buffer; returns their address.
    fn put(&self, off: u64, bytes: &[u8]) -> u64 {
        let at = self.scratch + 0x1000 + off % 0x8000;
        let n = bytes.len().min((self.scratch + (1 << 16) - at) as usize);
        self.sim.write_user(&self.caller, at, &bytes[..n]).expect("scratch");
        at
    }

    fn keep_id(&mut self, res: &Result<i32, uiommu_core::Errno>, id: u32) {
        if res.is_ok() && !self.ids.contains(&id) && self.ids.len() < 32 {
            self.ids.push(id);
        }
    }

    fn keep_fd(&mut self, res: &Result<i32, uiommu_core::Errno>, fd: i32) {
        if res.is_ok() {
            self.fds.push(fd);
        }
    }

    /// Run one step.
    pub fn step(&mut self, r: &mut Reader) {
        self.steps += 1;
        let ctx = self.ctx(r);
        let op = r.u8();
        match op % 40 {
            0 => {
                let (res, c) = self.call(
                    &ctx,
                    IOMMU_IOAS_ALLOC,
                    IommuIoasAlloc { flags: Self::flags(r, 0), ..Default::default() },
                );
                self.keep_id(&res, c.out_ioas_id);
            }
            1 => {
                let id = self.id(r);
                self.call(&ctx, IOMMU_DESTROY, IommuDestroy { size: 0, id });
            }
            2 | 3 => {
                let flags =
                    Self::flags(r, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);
                let c = IommuIoasMap {
                    flags,
                    ioas_id: self.id(r),
                    user_va: self.va(r),
                    length: self.len(r),
                    iova: self.iova(r),
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_IOAS_MAP, c);
            }
            4 => {
                let flags =
                    Self::flags(r, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);
                let c = IommuIoasMapFile {
                    flags,
                    ioas_id: self.id(r),
                    fd: self.fd(r),
                    start: (r.u8() as u64 % 40) * 2048,
                    length: self.len(r),
                    iova: self.iova(r),
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_IOAS_MAP_FILE, c);
            }
            5 => {
                let flags = Self::flags(
                    r,
                    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | 1 << 16,
                );
                let c = IommuIoasCopy {
                    flags,
                    dst_ioas_id: self.id(r),
                    src_ioas_id: self.id(r),
                    length: self.len(r),
                    dst_iova: self.iova(r),
                    src_iova: self.iova(r),
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_IOAS_COPY, c);
            }
            6 | 7 => {
                let all = r.u8().is_multiple_of(4);
                let c = IommuIoasUnmap {
                    size: 0,
                    ioas_id: self.id(r),
                    iova: if all { 0 } else { self.iova(r) },
                    length: if all { u64::MAX } else { self.len(r) },
                };
                self.call(&ctx, IOMMU_IOAS_UNMAP, c);
            }
            8 => {
                let n = r.u8() % 4;
                let mut ranges = Vec::new();
                for _ in 0..n {
                    let s = self.iova(r);
                    let l = s.saturating_add(self.len(r));
                    ranges.extend_from_slice(IommuIovaRange { start: s, last: l }.as_bytes());
                }
                let at = self.put(0, &ranges);
                let c = IommuIoasAllowIovas {
                    ioas_id: self.id(r),
                    num_iovas: n as u32,
                    allowed_iovas: at,
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_IOAS_ALLOW_IOVAS, c);
            }
            9 => {
                let c = IommuIoasIovaRanges {
                    ioas_id: self.id(r),
                    num_iovas: r.u8() as u32 % 6,
                    allowed_iovas: self.scratch + 0x1000,
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_IOAS_IOVA_RANGES, c);
            }
            10 => {
                let c = IommuOption {
                    option_id: r.u8() as u32 % 3,
                    op: r.u8() as u16 % 3,
                    object_id: self.id(r),
                    val64: r.u8() as u64 % 3,
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_OPTION, c);
            }
            11 | 12 => {
                let p = TestMockDomainFlags {
                    dev_flags: Self::flags(r, MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID),
                    ..Default::default()
                };
                let op = if r.bool() { IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS } else { IOMMU_TEST_OP_MOCK_DOMAIN };
                let id = self.id(r);
                let (res, p) = self.test(&ctx, op, id, &p);
                self.keep_id(&res, p.out_stdev_id);
                self.keep_id(&res, p.out_idev_id);
                self.keep_id(&res, p.out_hwpt_id);
            }
            13 => {
                let (id, pt) = (self.id(r), self.id(r));
                self.test(&ctx, IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id, &TestMockDomainReplace { pt_id: pt });
            }
            14 | 15 => {
                let flags = Self::flags(
                    r,
                    IOMMU_HWPT_ALLOC_NEST_PARENT
                        | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                        | IOMMU_HWPT_FAULT_ID_VALID
                        | IOMMU_HWPT_ALLOC_PASID,
                );
                let mut c = IommuHwptAlloc {
                    flags,
                    dev_id: self.id(r),
                    pt_id: self.id(r),
                    fault_id: self.id(r),
                    ..Default::default()
                };
                if r.bool() {
                    let d = IommuHwptSelftest { iotlb: r.u32(), pagetable_type: r.u8() as u32 % 3 };
                    c.data_type = if r.u8().is_multiple_of(8) { r.u32() } else { IOMMU_HWPT_DATA_SELFTEST };
                    c.data_len = [8, 4, 0, 12, 3][r.u8() as usize % 5];
                    c.data_uptr = self.put(0x100, d.as_bytes());
                }
                let (res, c) = self.call(&ctx, IOMMU_HWPT_ALLOC, c);
                self.keep_id(&res, c.out_hwpt_id);
            }
            16 => {
                let id = self.id(r);
                let p = TestCreateAccess {
                    flags: Self::flags(r, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES),
                    ..Default::default()
                };
                let (res, p) = self.test(&ctx, IOMMU_TEST_OP_CREATE_ACCESS, id, &p);
                self.keep_fd(&res, p.out_access_fd as i32);
            }
            17 => {
                let fd = self.fd(r) as u32;
                let p = TestAccessPages {
                    flags: Self::flags(r, MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ),
                    iova: self.iova(r),
                    length: self.len(r).min(1 << 21),
                    uptr: if r.bool() { 0 } else { self.va(r) },
                    ..Default::default()
                };
                let (res, p) = self.test(&ctx, IOMMU_TEST_OP_ACCESS_PAGES, fd, &p);
                self.keep_id(&res, p.out_access_pages_id);
            }
            18 => {
                let (fd, item) = (self.fd(r) as u32, self.id(r));
                self.test(
                    &ctx,
                    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
                    fd,
                    &TestDestroyAccessPages { access_pages_id: item },
                );
            }
            19 => {
                let fd = self.fd(r) as u32;
                let length = self.len(r).min(1 << 20);
                let flags = Self::flags(r, MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ);
                let uptr = if r.bool() { self.scratch + 0x2000 } else { self.va(r) };
                let p = TestAccessRw { iova: self.iova(r), length: length.min(0xe000), uptr, flags, pad: 0 };
                self.test(&ctx, IOMMU_TEST_OP_ACCESS_RW, fd, &p);
            }
            20 => {
                let (fd, ioas) = (self.fd(r) as u32, self.id(r));
                self.test(&ctx, IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, fd, &TestAccessReplaceIoas { ioas_id: ioas });
            }
            21 => {
                // close(2) of an engine descriptor.
                if !self.fds.is_empty() {
                    let i = r.u8() as usize % self.fds.len();
                    let fd = self.fds.swap_remove(i);
                    drop(self.sim.close(fd));
                }
            }
            22 => {
                let (res, c) = self.call(
                    &ctx,
                    IOMMU_FAULT_QUEUE_ALLOC,
                    IommuFaultAlloc { flags: Self::flags(r, 0), ..Default::default() },
                );
                self.keep_id(&res, c.out_fault_id);
                self.keep_fd(&res, c.out_fault_fd as i32);
            }
            23 => {
                let d = IommuViommuSelftest { in_data: r.u32(), ..Default::default() };
                let ty = if r.u8().is_multiple_of(8) { r.u32() } else { IOMMU_VIOMMU_TYPE_SELFTEST };
                let c = IommuViommuAlloc {
                    flags: Self::flags(r, 0),
                    type_: ty,
                    dev_id: self.id(r),
                    hwpt_id: self.id(r),
                    data_len: [0, 24, 8, 4, 32][r.u8() as usize % 5],
                    data_uptr: self.put(0x200, d.as_bytes()),
                    ..Default::default()
                };
                let (res, c) = self.call(&ctx, IOMMU_VIOMMU_ALLOC, c);
                self.keep_id(&res, c.out_viommu_id);
            }
            24 => {
                let c = IommuVdeviceAlloc {
                    viommu_id: self.id(r),
                    dev_id: self.id(r),
                    virt_id: r.u8() as u64 % 4,
                    ..Default::default()
                };
                let (res, c) = self.call(&ctx, IOMMU_VDEVICE_ALLOC, c);
                self.keep_id(&res, c.out_vdevice_id);
            }
            25 => {
                let ty = if r.u8().is_multiple_of(8) { r.u32() } else { IOMMU_VEVENTQ_TYPE_SELFTEST };
                let c = IommuVeventqAlloc {
                    viommu_id: self.id(r),
                    type_: ty,
                    veventq_depth: r.u8() as u32 % 4,
                    ..Default::default()
                };
                let (res, c) = self.call(&ctx, IOMMU_VEVENTQ_ALLOC, c);
                self.keep_id(&res, c.out_veventq_id);
                self.keep_fd(&res, c.out_veventq_fd as i32);
            }
            26 => {
                let ty = if r.u8().is_multiple_of(8) { r.u32() } else { IOMMU_HW_QUEUE_TYPE_SELFTEST };
                let c = IommuHwQueueAlloc {
                    viommu_id: self.id(r),
                    type_: ty,
                    index: r.u8() as u32 % 3,
                    nesting_parent_iova: self.iova(r),
                    length: self.len(r),
                    ..Default::default()
                };
                let (res, c) = self.call(&ctx, IOMMU_HW_QUEUE_ALLOC, c);
                self.keep_id(&res, c.out_hw_queue_id);
            }
            27 => {
                let n = r.u8() as u32 % 4;
                let mut entries = Vec::new();
                for _ in 0..n {
                    entries.extend_from_slice(&r.bytes(12));
                }
                let data_uptr = self.put(0x300, &entries);
                let data_type = match r.u8() % 3 {
                    0 => IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
                    1 => IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
                    _ => r.u32(),
                };
                let c = IommuHwptInvalidate {
                    hwpt_id: self.id(r),
                    data_uptr,
                    data_type,
                    entry_len: [8, 12, 16, 0][r.u8() as usize % 4],
                    entry_num: n,
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_HWPT_INVALIDATE, c);
            }
            28 => {
                let hwpt = self.id(r);
                match r.u8() % 3 {
                    0 => {
                        let c = IommuHwptSetDirtyTracking {
                            flags: Self::flags(r, IOMMU_HWPT_DIRTY_TRACKING_ENABLE),
                            hwpt_id: hwpt,
                            ..Default::default()
                        };
                        self.call(&ctx, IOMMU_HWPT_SET_DIRTY_TRACKING, c);
                    }
                    1 => {
                        let bitmap = r.bytes(16);
                        let p = TestDirty {
                            iova: self.iova(r),
                            length: self.len(r).min(1 << 22),
                            page_size: [P, 2048, 1 << 20, 0][r.u8() as usize % 4],
                            uptr: self.put(0x400, &bitmap),
                            ..Default::default()
                        };
                        self.test(&ctx, IOMMU_TEST_OP_DIRTY, hwpt, &p);
                    }
                    _ => {
                        let c = IommuHwptGetDirtyBitmap {
                            hwpt_id: hwpt,
                            flags: Self::flags(r, 1),
                            iova: self.iova(r),
                            length: self.len(r).min(1 << 22),
                            page_size: [P, 2048, 1 << 20, 0, 3][r.u8() as usize % 5],
                            data: self.scratch + 0x3000,
                            ..Default::default()
                        };
                        self.call(&ctx, IOMMU_HWPT_GET_DIRTY_BITMAP, c);
                    }
                }
            }
            29 => {
                let dev = self.id(r);
                if r.bool() {
                    let p = TestTriggerIopf {
                        dev_id: dev,
                        pasid: [0, 200, 1024][r.u8() as usize % 3],
                        grpid: r.u8() as u32,
                        perm: 1,
                        addr: self.iova(r),
                    };
                    self.test(&ctx, IOMMU_TEST_OP_TRIGGER_IOPF, 0, &p);
                } else {
                    self.test(&ctx, IOMMU_TEST_OP_TRIGGER_VEVENT, 0, &TestTriggerVevent { dev_id: dev });
                }
            }
            30 => {
                let stdev = self.id(r);
                let pasid = [0, 200, 1024, 1 << 20, 7][r.u8() as usize % 5];
                let pt = self.id(r);
                let op = [
                    IOMMU_TEST_OP_PASID_ATTACH,
                    IOMMU_TEST_OP_PASID_REPLACE,
                    IOMMU_TEST_OP_PASID_DETACH,
                    IOMMU_TEST_OP_PASID_CHECK_HWPT,
                ][r.u8() as usize % 4];
                self.test(&ctx, op, stdev, &TestPasidAttach { pasid, pt_id: pt });
            }
            31 => {
                if r.bool() {
                    let (res, _) = self.test(
                        &ctx,
                        IOMMU_TEST_OP_DMABUF_GET,
                        0,
                        &TestDmabufGet { length: (r.u8() as u32 % 9) * 4096, open_flags: 0 },
                    );
                    if let Ok(fd) = res {
                        self.fds.push(fd);
                    }
                } else {
                    let p = TestDmabufRevoke { dmabuf_fd: self.fd(r), revoked: r.u8() as u32 % 2 };
                    self.test(&ctx, IOMMU_TEST_OP_DMABUF_REVOKE, 0, &p);
                }
            }
            32 => self.vfio(&ctx, r),
            33 => {
                // read(2)/write(2) on an engine descriptor.
                if let Some(file) = self.fds.first().copied().and_then(|_| {
                    let fd = self.fd(r);
                    self.sim.engine_file(fd)
                }) {
                    let count = [0, 32, 40, 48, 80, 64, 4096][r.u8() as usize % 7];
                    let buf = self.scratch + 0x4000;
                    if r.bool() {
                        let _ = file.read(&self.caller, buf, count);
                    } else {
                        let bytes = r.bytes(count.min(64));
                        self.put(0x3000, &bytes);
                        let _ = file.write(&self.caller, buf, count);
                    }
                    let _ = file.poll();
                }
            }
            34 => {
                // Arm fault injection for the next step.
                Machine::set_fail_nth(1 + r.u8() as u32 % 24);
                return;
            }
            35 => {
                let mut other = self.caller.clone();
                other.pid = PID + 1;
                // The child shares the scratch page (as after fork).
                self.sim.share(PID, self.scratch, PID + 1);
                let c = IommuIoasChangeProcess { size: 8, reserved: if r.u8().is_multiple_of(8) { 1 } else { 0 } };
                self.sim.write_user(&self.caller, self.scratch, c.as_bytes()).expect("scratch");
                let _ = ctx.ioctl(&other, IOMMU_IOAS_CHANGE_PROCESS, self.scratch);
            }
            36 => {
                let id = self.id(r);
                match r.u8() % 5 {
                    0 => {
                        let p = TestCheckMap { iova: self.iova(r), length: self.len(r).min(1 << 20), uptr: self.va(r) };
                        self.test(&ctx, IOMMU_TEST_OP_MD_CHECK_MAP, id, &p);
                    }
                    1 => {
                        let p = TestCheckRefs {
                            length: self.len(r).min(1 << 20),
                            uptr: self.va(r),
                            refs: r.u8() as u32 % 3,
                            pad: 0,
                        };
                        self.test(&ctx, IOMMU_TEST_OP_MD_CHECK_REFS, id, &p);
                    }
                    2 => {
                        self.test(
                            &ctx,
                            IOMMU_TEST_OP_MD_CHECK_IOTLB,
                            id,
                            &TestCheckIotlb { id: r.u8() as u32 % 5, iotlb: r.u32() },
                        );
                    }
                    3 => {
                        self.test(
                            &ctx,
                            IOMMU_TEST_OP_DEV_CHECK_CACHE,
                            id,
                            &TestCheckDevCache { id: r.u8() as u32 % 5, cache: r.u32() },
                        );
                    }
                    _ => {
                        let p = TestAddReserved { start: self.iova(r), length: self.len(r) };
                        self.test(&ctx, IOMMU_TEST_OP_ADD_RESERVED, id, &p);
                    }
                }
            }
            37 => {
                let c = IommuHwInfo {
                    flags: Self::flags(r, 1),
                    dev_id: self.id(r),
                    data_len: r.u8() as u32 % 24,
                    data_uptr: self.scratch + 0x5000,
                    out_data_type: [0, IOMMU_HW_INFO_TYPE_SELFTEST, 3][r.u8() as usize % 3],
                    ..Default::default()
                };
                self.call(&ctx, IOMMU_GET_HW_INFO, c);
            }
            38 => {
                // mmap(2) of a vIOMMU region, or munmap of an earlier one.
                if r.bool() && !self.mmaps.is_empty() {
                    let i = r.u8() as usize % self.mmaps.len();
                    drop(self.mmaps.swap_remove(i));
                } else {
                    let len = [2 * P, P, 0][r.u8() as usize % 3];
                    let off = [P, 3 * P, 0, 5 * P][r.u8() as usize % 4];
                    if let Ok(region) = ctx.mmap(len, 0x3, 0x1, off) {
                        self.mmaps.push(region);
                    }
                }
            }
            _ => self.raw(&ctx, r),
        }
        Machine::set_fail_nth(0);
    }

    /// Any command with input bytes as its argument (size field from the input too).
    fn raw(&mut self, ctx: &Arc<Context>, r: &mut Reader) {
        let cmds = uiommu_uapi::IOMMUFD_CMDS;
        let info = &cmds[r.u8() as usize % cmds.len()];
        let mut bytes = r.bytes(info.size + 8);
        let size = match r.u8() % 4 {
            0 => info.min_size as u32,
            1 => (info.size + 8) as u32,
            _ => info.size as u32,
        };
        bytes[..4].copy_from_slice(&size.to_ne_bytes());
        // Small object ids most of the time: the u32 after `size` is an id in most commands.
        if r.bool() && bytes.len() >= 8 {
            let id = self.id(r);
            bytes[4..8].copy_from_slice(&id.to_ne_bytes());
        }
        self.sim.write_user(&self.caller, self.scratch, &bytes).expect("scratch");
        let _ = ctx.ioctl_via(&*self.sim, &self.caller, info.ioctl, self.scratch);
    }

    fn vfio(&mut self, ctx: &Arc<Context>, r: &mut Reader) {
        match r.u8() % 6 {
            0 => {
                let c = IommuVfioIoas { ioas_id: self.id(r), op: r.u8() as u16 % 4, ..Default::default() };
                self.call(ctx, IOMMU_VFIO_IOAS, c);
            }
            1 => {
                let _ = ctx.ioctl(&self.caller, VFIO_SET_IOMMU, [1, 3, 0, 8][r.u8() as usize % 4]);
            }
            2 => {
                let m = VfioIommuType1DmaMap {
                    argsz: 32,
                    flags: r.u8() as u32 % 8,
                    vaddr: self.va(r),
                    iova: self.iova(r),
                    size: self.len(r),
                };
                self.sim.write_user(&self.caller, self.scratch, m.as_bytes()).expect("scratch");
                let _ = ctx.ioctl(&self.caller, VFIO_IOMMU_MAP_DMA, self.scratch);
            }
            3 => {
                let u = VfioIommuType1DmaUnmap {
                    argsz: 24,
                    flags: [0, VFIO_DMA_UNMAP_FLAG_ALL, 1][r.u8() as usize % 3],
                    iova: self.iova(r),
                    size: self.len(r),
                };
                self.sim.write_user(&self.caller, self.scratch, u.as_bytes()).expect("scratch");
                let _ = ctx.ioctl(&self.caller, VFIO_IOMMU_UNMAP_DMA, self.scratch);
            }
            4 => {
                let argsz = [16u32, 24, 40, 64, 200][r.u8() as usize % 5];
                self.sim.write_user(&self.caller, self.scratch, &argsz.to_ne_bytes()).expect("scratch");
                let _ = ctx.ioctl(&self.caller, VFIO_IOMMU_GET_INFO, self.scratch);
            }
            _ => {
                let _ = ctx.ioctl(&self.caller, VFIO_CHECK_EXTENSION, r.u8() as u64 % 10);
            }
        }
    }

    /// A populated starting point, so short inputs start deep: two IOASes (ids 1, 2), a
    /// mock device with an automatic domain on IOAS 1, mappings in both, a pinning access,
    /// a fault queue, a nest-parent HWPT, a vIOMMU and a vDEVICE.
    pub fn populate(&mut self) {
        let ctx = self.ctxs[0].clone();
        let rw = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
        let (_, a) = self.call(&ctx, IOMMU_IOAS_ALLOC, IommuIoasAlloc::default());
        let (_, b) = self.call(&ctx, IOMMU_IOAS_ALLOC, IommuIoasAlloc::default());
        let (ioas, ioas2) = (a.out_ioas_id, b.out_ioas_id);
        let (_, d) = self.test(
            &ctx,
            IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
            ioas,
            &TestMockDomainFlags { dev_flags: MOCK_FLAGS_DEVICE_PASID, ..Default::default() },
        );
        let (buf0, buf1) = (self.bufs[0].0, self.bufs[1].0);
        let m = IommuIoasMap {
            flags: rw | IOMMU_IOAS_MAP_FIXED_IOVA,
            ioas_id: ioas,
            user_va: buf0,
            length: 16 * P,
            iova: MOCK_APERTURE_START,
            ..Default::default()
        };
        self.call(&ctx, IOMMU_IOAS_MAP, m);
        let m = IommuIoasMap { flags: rw, ioas_id: ioas2, user_va: buf1, length: 8 * P, ..Default::default() };
        self.call(&ctx, IOMMU_IOAS_MAP, m);
        let (res, acc) = self.test(
            &ctx,
            IOMMU_TEST_OP_CREATE_ACCESS,
            ioas,
            &TestCreateAccess { flags: MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES, ..Default::default() },
        );
        self.keep_fd(&res, acc.out_access_fd as i32);
        let (res, f) = self.call(&ctx, IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc::default());
        self.keep_fd(&res, f.out_fault_fd as i32);
        let c = IommuHwptAlloc {
            flags: IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID,
            dev_id: d.out_idev_id,
            pt_id: ioas,
            ..Default::default()
        };
        let (_, h) = self.call(&ctx, IOMMU_HWPT_ALLOC, c);
        let c = IommuViommuAlloc {
            type_: IOMMU_VIOMMU_TYPE_SELFTEST,
            dev_id: d.out_idev_id,
            hwpt_id: h.out_hwpt_id,
            ..Default::default()
        };
        let (_, v) = self.call(&ctx, IOMMU_VIOMMU_ALLOC, c);
        let c =
            IommuVdeviceAlloc { viommu_id: v.out_viommu_id, dev_id: d.out_idev_id, virt_id: 1, ..Default::default() };
        self.call(&ctx, IOMMU_VDEVICE_ALLOC, c);
        self.check();
    }

    /// Every context's invariants.
    pub fn check(&self) {
        for (i, c) in self.ctxs.iter().enumerate() {
            if let Err(e) = c.check_invariants() {
                panic!("step {}: context {i}: invariant violated: {e}\n{}", self.steps, c.snapshot());
            }
        }
    }

    /// Close every descriptor, drop every mmap and both contexts: nothing may stay pinned
    /// or charged.
    pub fn finish(mut self) {
        Machine::set_fail_nth(0);
        self.mmaps.clear();
        for fd in self.sim.open_fds() {
            drop(self.sim.close(fd));
        }
        let m = self.m.clone();
        self.ctxs.clear();
        assert_eq!(m.total_pins(), 0, "pins left after closing everything");
        assert_eq!(m.user_locked_pages(UID), 0, "locked_vm left after closing everything");
        assert_eq!(m.pinned_pages_of(PID), (0, 0), "pinned_vm left after closing everything");
        assert_eq!(m.pinned_pages_of(PID + 1), (0, 0), "pinned_vm left after closing everything");
    }
}

/// Interpret `data` from start to end (at most [`MAX_STEPS`] steps).
pub fn run(data: &[u8]) {
    run_stats(data);
}

/// [`run`], returning the successful ioctls per command number and the most pages that
/// were pinned at once.
pub fn run_stats(data: &[u8]) -> (std::collections::BTreeMap<u8, usize>, u64) {
    let mut w = World::new();
    let mut r = Reader::new(data);
    // The first byte chooses between an empty and a populated world.
    if r.u8() & 1 != 0 {
        w.populate();
    }
    let mut max_pins = 0;
    while !r.done() && w.steps < MAX_STEPS {
        w.step(&mut r);
        w.check();
        max_pins = max_pins.max(w.m.total_pins());
    }
    let ok = std::mem::take(&mut w.ok);
    w.finish();
    (ok, max_pins)
}

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
}

impl H {
    pub fn new() -> H {
        let sim = SimPlatform::new();
        let m = Machine::new(sim.clone());
        let ctx = Context::open(&m);
        let scratch = sim.mmap(PID, 1 << 16, true);
        H { sim, m, ctx, caller: Caller::privileged(PID), scratch }
    }

    /// Issue `cmd` with `v` as the argument struct; `v` is updated with what came back.
    pub fn ioctl<T: IntoBytes + FromBytes + KnownLayout + Immutable>(&self, cmd: u32, v: &mut T) -> Result<i64, Errno> {
        use uiommu_core::Platform;
        self.sim.write_user(&self.caller, self.scratch, v.as_bytes()).unwrap();
        let r = self.ctx.ioctl(&self.caller, cmd, self.scratch);
        self.sim.read_user(&self.caller, self.scratch, v.as_mut_bytes()).unwrap();
        r
    }

    pub fn raw(&self, cmd: u32, bytes: &[u8]) -> Result<i64, Errno> {
        use uiommu_core::Platform;
        self.sim.write_user(&self.caller, self.scratch, bytes).unwrap();
        self.ctx.ioctl(&self.caller, cmd, self.scratch)
    }

    pub fn ioas_alloc(&self) -> u32 {
        let mut c = IommuIoasAlloc { size: 12, ..Default::default() };
        self.ioctl(IOMMU_IOAS_ALLOC, &mut c).unwrap();
        c.out_ioas_id
    }

    pub fn destroy(&self, id: u32) -> Result<i64, Errno> {
        let mut c = IommuDestroy { size: 8, id };
        self.ioctl(IOMMU_DESTROY, &mut c)
    }

    pub fn test_cmd<P: TestPayload>(&self, op: u32, id: u32, p: &P) -> Result<(i64, P), Errno> {
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
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | if iova.is_some() { IOMMU_IOAS_MAP_FIXED_IOVA } else { 0 },
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
        let mut c = IommuIoasIovaRanges { size: 32, ioas_id: ioas, num_iovas: 16, allowed_iovas: buf, ..Default::default() };
        self.ioctl(IOMMU_IOAS_IOVA_RANGES, &mut c).unwrap();
        let mut v = vec![IommuIovaRange::default(); c.num_iovas as usize];
        self.sim.read_user(&self.caller, buf, v.as_mut_bytes()).unwrap();
        (v.iter().map(|r| (r.start, r.last)).collect(), c.out_iova_alignment)
    }

    pub fn check_map(&self, hwpt: u32, iova: u64, len: u64, uptr: u64) -> Result<i64, Errno> {
        self.test_cmd(IOMMU_TEST_OP_MD_CHECK_MAP, hwpt, &TestCheckMap { iova, length: len, uptr }).map(|r| r.0)
    }

    pub fn check_refs(&self, uptr: u64, len: u64, refs: u32) -> Result<i64, Errno> {
        self.test_cmd(IOMMU_TEST_OP_MD_CHECK_REFS, 0, &TestCheckRefs { length: len, uptr, refs, pad: 0 }).map(|r| r.0)
    }
}

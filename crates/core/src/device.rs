//! Devices and their attachments (the kernel's `device.c`), the mock device's driver
//! callbacks, and the self-test object that owns a mock device.
//!
//! Each mock device is its own IOMMU group, so an attachment is keyed by (device, pasid);
//! pasid 0 is the RID. An attachment holds a user on its HWPT and on the device.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::hw_pagetable;
use crate::object::ObjType;
use crate::platform::Platform;
use crate::ucmd::Ucmd;
use std::collections::BTreeMap;
use std::sync::Arc;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test as t;
use zerocopy::IntoBytes;

/// A bound (mock) device.
#[derive(Debug)]
pub(crate) struct Device {
    /// `MOCK_FLAGS_DEVICE_*`.
    pub flags: u32,
    /// The four mock device cache words.
    pub cache: [u32; 4],
    /// HWPT attached per pasid (0 = RID).
    pub attached: BTreeMap<u32, u32>,
    /// Mock driver: pasid 1024 fails its next set (one-shot, see selftest_mock.md §2).
    pub pasid_fail_armed: bool,
    /// Mock driver: (vIOMMU, virt_id) of the vIOMMU-based nested HWPT on the RID.
    pub viommu_assoc: Option<(u32, u64)>,
    /// Invalidation epoch of the device's IOTLB (see `dma.rs`).
    pub epoch: std::sync::Arc<crate::dma::DmaEpoch>,
}

impl Device {
    pub fn dirty_capable(&self) -> bool {
        self.flags & t::MOCK_FLAGS_DEVICE_NO_DIRTY == 0
    }
    pub fn max_pasids(&self) -> u32 {
        if self.flags & t::MOCK_FLAGS_DEVICE_PASID != 0 {
            1 << t::MOCK_PASID_WIDTH
        } else {
            0
        }
    }
}

/// The self-test object (`MOCK_DOMAIN`'s `out_stdev_id`).
#[derive(Debug)]
pub(crate) struct Selftest {
    pub device: u32,
}

/// What a `pt_id` names for attach/replace.
enum Target {
    Ioas(u32),
    Hwpt(u32),
}

fn target(g: &Ictx, pt_id: u32) -> Result<Target> {
    match g.objs.type_of(pt_id)? {
        ObjType::Ioas => Ok(Target::Ioas(pt_id)),
        ObjType::HwptPaging | ObjType::HwptNested => Ok(Target::Hwpt(pt_id)),
        _ => Err(Errno::EINVAL),
    }
}

fn pasid_compat(g: &Ictx, hwpt: u32) -> bool {
    g.hwpt.get(&hwpt).map(|h| h.pasid_compat).or_else(|| g.nested.get(&hwpt).map(|n| n.pasid_compat)).unwrap_or(false)
}

fn is_dirty_domain(g: &Ictx, hwpt: u32) -> bool {
    g.hwpt.get(&hwpt).is_some_and(|h| h.dirty_capable)
}

/// PASID compatibility and mock driver checks for putting `hwpt` at (dev, pasid).
fn check_attach(g: &mut Ictx, dev: u32, pasid: u32, hwpt: u32) -> Result<()> {
    let d = &g.devices[&dev];
    if pasid != 0 {
        if !pasid_compat(g, hwpt) {
            return Err(Errno::EINVAL);
        }
        if let Some(&rid) = d.attached.get(&0) {
            if !pasid_compat(g, rid) {
                return Err(Errno::EINVAL);
            }
        }
        if d.max_pasids() != 0 && pasid >= d.max_pasids() {
            return Err(Errno::EINVAL);
        }
        // Mock driver PASID set: the one-shot fake failure of pasid 1024.
        if pasid == t::IOMMU_TEST_PASID_RESERVED {
            let d = g.devices.get_mut(&dev).expect("device");
            if d.pasid_fail_armed {
                d.pasid_fail_armed = false;
                return Err(Errno::ENOMEM);
            }
            d.pasid_fail_armed = true;
        }
        return Ok(());
    }
    if d.attached.keys().any(|&p| p != 0) && !pasid_compat(g, hwpt) {
        return Err(Errno::EINVAL);
    }
    // Mock driver RID attach.
    if is_dirty_domain(g, hwpt) && !d.dirty_capable() {
        return Err(Errno::EINVAL);
    }
    let assoc = match g.nested.get(&hwpt).and_then(|n| n.viommu) {
        Some(v) => Some((v, crate::viommu::vdevice_of(g, v, dev).ok_or(Errno::ENOENT)?.1)),
        None => None,
    };
    g.devices.get_mut(&dev).expect("device").viommu_assoc = assoc;
    Ok(())
}

/// Attach (dev, pasid) to `pt_id`; returns the HWPT id used.
pub(crate) fn attach(ctx: &Context, g: &mut Ictx, dev: u32, pasid: u32, pt_id: u32) -> Result<u32> {
    match target(g, pt_id)? {
        Target::Hwpt(h) => {
            attach_hwpt(g, dev, pasid, h)?;
            Ok(h)
        }
        Target::Ioas(ioas) => {
            if pasid != 0 {
                return Err(Errno::EINVAL);
            }
            for h in auto_hwpts(g, ioas) {
                match attach_hwpt(g, dev, pasid, h) {
                    Ok(()) => return Ok(h),
                    Err(Errno::EINVAL) => continue,
                    Err(e) => return Err(e),
                }
            }
            let h = hw_pagetable::new_auto_paging(g, ioas)?;
            if let Err(e) = attach_hwpt(g, dev, pasid, h) {
                g.hwpt.remove(&h);
                g.objs.remove(h);
                return Err(e);
            }
            if let Err(e) = g.domain_join(&ctx.machine, ioas, h) {
                detach_raw(g, dev, pasid);
                g.hwpt.remove(&h);
                g.objs.remove(h);
                return Err(e);
            }
            g.objs.get(ioas);
            g.objs.publish(h);
            Ok(h)
        }
    }
}

fn auto_hwpts(g: &Ictx, ioas: u32) -> Vec<u32> {
    g.hwpt
        .iter()
        .filter(|(id, h)| h.auto_domain && h.ioas == ioas && g.objs.type_of(**id).is_ok())
        .map(|(&id, _)| id)
        .collect()
}

fn attach_hwpt(g: &mut Ictx, dev: u32, pasid: u32, hwpt: u32) -> Result<()> {
    if g.devices[&dev].attached.contains_key(&pasid) {
        return Err(Errno::EBUSY);
    }
    // The attach handle.
    fail_point(FailSite::Alloc)?;
    check_attach(g, dev, pasid, hwpt)?;
    g.devices.get_mut(&dev).expect("device").attached.insert(pasid, hwpt);
    g.devices[&dev].epoch.invalidate();
    g.objs.get(hwpt);
    g.objs.get(dev);
    Ok(())
}

/// Remove the attachment without destroying an automatic HWPT.
fn detach_raw(g: &mut Ictx, dev: u32, pasid: u32) -> Option<u32> {
    let h = g.devices.get_mut(&dev)?.attached.remove(&pasid)?;
    g.devices[&dev].epoch.invalidate();
    if pasid == t::IOMMU_TEST_PASID_RESERVED {
        g.devices.get_mut(&dev).expect("device").pasid_fail_armed = false;
    }
    hw_pagetable::auto_respond(g, h, dev, pasid);
    g.objs.put(h);
    g.objs.put(dev);
    Some(h)
}

/// Destroy an automatic HWPT nobody uses any more.
fn reap_auto(ctx: &Context, g: &mut Ictx, h: u32) {
    if g.hwpt.get(&h).is_some_and(|x| x.auto_domain) && g.objs.users(h) == 0 {
        hw_pagetable::destroy_paging(ctx, g, h);
        g.objs.remove(h);
    }
}

/// Detach (dev, pasid); nothing attached is fine.
pub(crate) fn detach(ctx: &Context, g: &mut Ictx, dev: u32, pasid: u32) {
    if let Some(h) = detach_raw(g, dev, pasid) {
        reap_auto(ctx, g, h);
    }
}

/// Replace the HWPT at (dev, pasid) with `pt_id`; returns the HWPT id now attached.
pub(crate) fn replace(ctx: &Context, g: &mut Ictx, dev: u32, pasid: u32, pt_id: u32) -> Result<u32> {
    let tgt = target(g, pt_id)?;
    let Some(&old) = g.devices[&dev].attached.get(&pasid) else {
        return Err(Errno::EINVAL);
    };
    let new = match tgt {
        Target::Hwpt(h) => {
            if h == old {
                return Ok(h);
            }
            replace_hwpt(g, dev, pasid, old, h)?;
            h
        }
        Target::Ioas(ioas) => {
            if pasid != 0 {
                return Err(Errno::EINVAL);
            }
            let mut found = None;
            for h in auto_hwpts(g, ioas) {
                if h == old {
                    return Ok(h);
                }
                match replace_hwpt(g, dev, pasid, old, h) {
                    Ok(()) => {
                        found = Some(h);
                        break;
                    }
                    Err(Errno::EINVAL) => continue,
                    Err(e) => return Err(e),
                }
            }
            match found {
                Some(h) => h,
                None => {
                    let h = hw_pagetable::new_auto_paging(g, ioas)?;
                    if let Err(e) = g.domain_join(&ctx.machine, ioas, h) {
                        g.hwpt.remove(&h);
                        g.objs.remove(h);
                        return Err(e);
                    }
                    g.objs.get(ioas);
                    if let Err(e) = replace_hwpt(g, dev, pasid, old, h) {
                        hw_pagetable::destroy_paging(ctx, g, h);
                        g.objs.remove(h);
                        return Err(e);
                    }
                    g.objs.publish(h);
                    h
                }
            }
        }
    };
    reap_auto(ctx, g, old);
    Ok(new)
}

fn replace_hwpt(g: &mut Ictx, dev: u32, pasid: u32, old: u32, new: u32) -> Result<()> {
    // The new attach handle.
    fail_point(FailSite::Alloc)?;
    // Checks run as if the old attachment were gone at this pasid.
    let d = g.devices.get_mut(&dev).expect("device");
    d.attached.remove(&pasid);
    let r = check_attach(g, dev, pasid, new);
    let d = g.devices.get_mut(&dev).expect("device");
    match r {
        Ok(()) => {
            d.attached.insert(pasid, new);
            d.epoch.invalidate();
            hw_pagetable::auto_respond(g, old, dev, pasid);
            g.objs.get(new);
            g.objs.put(old);
            Ok(())
        }
        Err(e) => {
            d.attached.insert(pasid, old);
            Err(e)
        }
    }
}

/// Create a mock device bound to the context and attached to `pt_id`
/// (`IOMMU_TEST_OP_MOCK_DOMAIN[_FLAGS]`). Returns (stdev, hwpt, device).
pub(crate) fn mock_domain(ctx: &Context, g: &mut Ictx, pt_id: u32, dev_flags: u32) -> Result<(u32, u32, u32)> {
    let stdev = g.objs.reserve(ObjType::Selftest)?;
    if dev_flags & !(t::MOCK_FLAGS_DEVICE_NO_DIRTY | t::MOCK_FLAGS_DEVICE_PASID) != 0 {
        g.objs.remove(stdev);
        return Err(Errno::EINVAL);
    }
    // The mock device itself (`mock_dev_create`).
    if let Err(e) = fail_point(FailSite::Alloc) {
        g.objs.remove(stdev);
        return Err(e);
    }
    let dev = match g.objs.reserve(ObjType::Device) {
        Ok(d) => d,
        Err(e) => {
            g.objs.remove(stdev);
            return Err(e);
        }
    };
    g.devices.insert(
        dev,
        Device {
            flags: dev_flags,
            cache: [t::IOMMU_TEST_DEV_CACHE_DEFAULT; 4],
            attached: BTreeMap::new(),
            pasid_fail_armed: false,
            viommu_assoc: None,
            epoch: Default::default(),
        },
    );
    // The driver's binding reference.
    g.objs.get(dev);
    g.objs.publish(dev);
    match attach(ctx, g, dev, 0, pt_id) {
        Ok(hwpt) => {
            g.selftests.insert(stdev, Selftest { device: dev });
            Ok((stdev, hwpt, dev))
        }
        Err(e) => {
            g.devices.remove(&dev);
            g.objs.remove(dev);
            g.objs.remove(stdev);
            Err(e)
        }
    }
}

/// Publish a self-test object created by [`mock_domain`] (after the response was copied).
pub(crate) fn publish_selftest(g: &mut Ictx, stdev: u32) {
    g.objs.publish(stdev);
}

/// `IOMMU_DESTROY` of a self-test object: detach the RID, unbind, delete the device.
pub(crate) fn destroy_selftest(ctx: &Context, g: &mut Ictx, stdev: u32) {
    let Some(st) = g.selftests.remove(&stdev) else { return };
    let dev = st.device;
    let pasids: Vec<u32> = g.devices[&dev].attached.keys().copied().collect();
    for p in pasids {
        detach(ctx, g, dev, p);
    }
    // Unbind: the device's vDEVICE is destroyed by force and its id tombstoned.
    let vdevs: Vec<u32> = g.vdevices.iter().filter(|(_, v)| v.dev == dev).map(|(&id, _)| id).collect();
    for v in vdevs {
        crate::viommu::destroy_vdevice(g, v);
        g.objs.tombstone(v);
    }
    g.devices.remove(&dev);
    g.objs.remove(dev);
}

pub(crate) fn get_hw_info<P: Platform + ?Sized>(ctx: &Arc<Context>, uc: &Ucmd<'_, P>) -> Result<i32> {
    let mut cmd: IommuHwInfo = uc.read()?;
    if cmd.flags & !IOMMU_HW_INFO_FLAG_INPUT_TYPE != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if cmd.reserved.iter().any(|&b| b != 0) {
        return Err(Errno::EOPNOTSUPP);
    }
    let req =
        if cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE != 0 { cmd.out_data_type } else { IOMMU_HW_INFO_TYPE_DEFAULT };
    let g = ctx.lock();
    g.objs.expect(cmd.dev_id, ObjType::Device)?;
    let d = &g.devices[&cmd.dev_id];
    if req != IOMMU_HW_INFO_TYPE_DEFAULT && req != t::IOMMU_HW_INFO_TYPE_SELFTEST {
        return Err(Errno::EOPNOTSUPP);
    }
    // The driver's info buffer.
    fail_point(FailSite::TempBuf)?;
    let info = t::IommuTestHwInfo { flags: 0, test_reg: t::IOMMU_HW_INFO_SELFTEST_REGVAL };
    let bytes = info.as_bytes();
    let n = (cmd.data_len as usize).min(bytes.len());
    if n > 0 {
        uc.write_user(cmd.data_uptr, &bytes[..n])?;
    }
    if cmd.data_len as usize > bytes.len() {
        let zeros = vec![0u8; cmd.data_len as usize - bytes.len()];
        uc.write_user(cmd.data_uptr + bytes.len() as u64, &zeros)?;
    }
    cmd.data_len = bytes.len() as u32;
    cmd.out_data_type = t::IOMMU_HW_INFO_TYPE_SELFTEST;
    cmd.out_capabilities = IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
    if d.dirty_capable() {
        cmd.out_capabilities |= IOMMU_HW_CAP_DIRTY_TRACKING;
    }
    cmd.out_max_pasid_log2 = if d.max_pasids() != 0 { t::MOCK_PASID_WIDTH as u8 } else { 0 };
    drop(g);
    uc.respond(&cmd)?;
    Ok(0)
}

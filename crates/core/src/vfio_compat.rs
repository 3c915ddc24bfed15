//! VFIO type1 container compatibility on the iommufd fd (the kernel's `vfio_compat.c`)
//! and `IOMMU_VFIO_IOAS`.

use crate::context::Context;
use crate::errno::{Errno, Result};
use crate::object::ObjType;
use crate::platform::Caller;
use crate::ucmd::Ucmd;
use std::sync::Arc;
use uiommu_uapi::iommufd::*;

/// `IOMMU_VFIO_IOAS`: get, set or clear the compat IOAS.
pub(crate) fn vfio_ioas(ctx: &Arc<Context>, uc: &Ucmd<'_>) -> Result<i64> {
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
pub(crate) fn ioctl(_ctx: &Arc<Context>, _caller: &Caller, _cmd: u32, _arg: u64) -> Result<i64> {
    Err(Errno::ENOTTY)
}

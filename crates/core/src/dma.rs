//! DMA by emulated devices: reads and writes at an IOVA through the domain attached to a
//! device (the hardware half of an IOMMU that the kernel never sees).
//!
//! Translation walks the attached paging domain leaf by leaf (a nested HWPT translates
//! through its parent's stage-2 domain; the mock stage-1 is identity), checks the leaf's
//! permission, copies through the platform, and marks written leaves dirty while dirty
//! tracking is on. A translation failure is an IO page fault: the call fails with EFAULT
//! and nothing beyond the faulting address is touched.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::object::ObjType;
use crate::platform::PAGE_SIZE;

/// Direction of a DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// The paging HWPT that translates DMA from (dev, pasid).
fn paging_hwpt(g: &Ictx, dev: u32, pasid: u32) -> Result<u32> {
    g.objs.expect(dev, ObjType::Device)?;
    let h = *g.devices[&dev].attached.get(&pasid).ok_or(Errno::EFAULT)?;
    Ok(g.nested.get(&h).map_or(h, |n| n.parent))
}

impl Context {
    /// An emulated device reads `buf.len()` bytes at `iova` through the domain attached to
    /// its `pasid` (0 = RID). EFAULT on a translation or permission fault (an IO page
    /// fault); ENOENT if `dev` is not a device.
    pub fn dma_read(&self, dev: u32, pasid: u32, iova: u64, buf: &mut [u8]) -> Result<()> {
        let mut g = self.lock();
        dma(&mut g, self, dev, pasid, iova, Buf::Read(buf))
    }

    /// An emulated device writes `buf` at `iova` (see [`Context::dma_read`]); written
    /// leaves become dirty while dirty tracking is enabled on the domain.
    pub fn dma_write(&self, dev: u32, pasid: u32, iova: u64, buf: &[u8]) -> Result<()> {
        let mut g = self.lock();
        dma(&mut g, self, dev, pasid, iova, Buf::Write(buf))
    }
}

enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }
    fn dir(&self) -> Dir {
        match self {
            Buf::Read(_) => Dir::Read,
            Buf::Write(_) => Dir::Write,
        }
    }
}

fn dma(g: &mut Ictx, ctx: &Context, dev: u32, pasid: u32, iova: u64, mut buf: Buf<'_>) -> Result<()> {
    let hwpt = paging_hwpt(g, dev, pasid)?;
    let len = buf.len() as u64;
    if len == 0 {
        return Ok(());
    }
    iova.checked_add(len - 1).ok_or(Errno::EFAULT)?;
    let p = &*ctx.machine.platform;
    let h = g.hwpt.get_mut(&hwpt).expect("hwpt");
    let dir = buf.dir();
    let mut done = 0u64;
    while done < len {
        let at = iova + done;
        let (leaf_iova, leaf_len, leaf_phys, prot) = h.pt.lookup_leaf(at).ok_or(Errno::EFAULT)?;
        let ok = match dir {
            Dir::Read => prot.read,
            Dir::Write => prot.write,
        };
        if !ok {
            return Err(Errno::EFAULT);
        }
        let phys = leaf_phys + (at - leaf_iova);
        // Stay within the leaf and within one page per platform copy.
        let n = (leaf_iova + leaf_len - at).min(PAGE_SIZE - phys % PAGE_SIZE).min(len - done) as usize;
        let r = done as usize..done as usize + n;
        match &mut buf {
            Buf::Read(b) => p.read_phys(phys, &mut b[r])?,
            Buf::Write(b) => {
                p.write_phys(phys, &b[r])?;
                if h.tracking {
                    h.pt.set_dirty(at);
                }
            }
        }
        done += n as u64;
    }
    Ok(())
}

//! Access objects (the kernel's `iommufd_access`): emulated devices and in-kernel users
//! that pin IOAS pages or read/write through IOVA (io_pagetable.md §10).
//!
//! The self-test access keeps a list of pinned items; its unmap callback drops every item
//! intersecting the range being unmapped, which is what lets IOAS_UNMAP proceed.

use crate::context::{Context, Ictx};
use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use crate::machine::Machine;
use crate::platform::PAGE_SIZE;
use std::sync::Arc;

/// One pinned range of a self-test access.
#[derive(Clone, Debug)]
pub(crate) struct AccessItem {
    pub id: u32,
    pub iova: u64,
    pub length: u64,
}

/// An access object.
#[derive(Debug, Default)]
pub(crate) struct Access {
    pub ioas: Option<u32>,
    /// Can pin pages (raises the IOAS alignment to PAGE_SIZE).
    pub needs_pin: bool,
    pub items: Vec<AccessItem>,
    pub next_item: u32,
    /// Internal (HW queue) access: its pins lock areas and it gets no unmap callbacks.
    pub internal: bool,
}

/// An open self-test access fd; closing it destroys the access.
#[derive(Debug)]
pub struct AccessFile {
    pub(crate) ctx: Arc<Context>,
    pub(crate) id: u32,
}

impl Drop for AccessFile {
    fn drop(&mut self) {
        let m = self.ctx.machine.clone();
        let mut g = self.ctx.lock();
        if g.accesses.contains_key(&self.id) {
            destroy(&mut g, &m, self.id);
        }
    }
}

/// Unpin everything, detach, free the id.
pub(crate) fn destroy(g: &mut Ictx, m: &Machine, id: u32) {
    let items = std::mem::take(&mut g.accesses.get_mut(&id).expect("access").items);
    for it in items {
        unpin(g, m, id, it.iova, it.length);
    }
    detach(g, id);
    g.accesses.remove(&id);
    g.objs.remove(id);
}

/// An access that pins pages raises its IOAS's alignment to PAGE_SIZE: EADDRINUSE if an
/// existing area would not satisfy it.
fn check_alignment(g: &Ictx, id: u32, ioas: u32) -> Result<()> {
    if g.accesses[&id].needs_pin && g.iova_alignment(ioas) < PAGE_SIZE && !g.ioas[&ioas].areas_aligned(PAGE_SIZE) {
        return Err(Errno::EADDRINUSE);
    }
    Ok(())
}

/// Attach an access to an IOAS (alignment may rise: EADDRINUSE if areas disagree).
pub(crate) fn attach(g: &mut Ictx, id: u32, ioas: u32) -> Result<()> {
    check_alignment(g, id, ioas)?;
    // The IOAS's access list slot (`iopt_add_access`).
    fail_point(FailSite::Alloc)?;
    g.ioas.get_mut(&ioas).expect("ioas").accesses.push(id);
    g.objs.get(ioas);
    g.accesses.get_mut(&id).expect("access").ioas = Some(ioas);
    Ok(())
}

fn detach(g: &mut Ictx, id: u32) {
    if let Some(ioas) = g.accesses.get_mut(&id).and_then(|a| a.ioas.take()) {
        if let Some(i) = g.ioas.get_mut(&ioas) {
            i.accesses.retain(|&a| a != id);
        }
        g.objs.put(ioas);
    }
}

/// Move an access to another IOAS: attach there, drop all pins, leave the old one.
pub(crate) fn replace_ioas(g: &mut Ictx, m: &Machine, id: u32, ioas: u32) -> Result<()> {
    let old = g.accesses[&id].ioas.ok_or(Errno::ENOENT)?;
    g.objs.expect(ioas, ObjType::Ioas)?;
    if old == ioas {
        return Ok(());
    }
    // Attach to the new one first (may fail with nothing changed).
    check_alignment(g, id, ioas)?;
    // The new IOAS's access list slot.
    fail_point(FailSite::Alloc)?;
    unmap_notify(g, m, id, 0, u64::MAX);
    if let Some(i) = g.ioas.get_mut(&old) {
        i.accesses.retain(|&a| a != id);
    }
    g.objs.put(old);
    g.ioas.get_mut(&ioas).expect("ioas").accesses.push(id);
    g.objs.get(ioas);
    g.accesses.get_mut(&id).expect("access").ioas = Some(ioas);
    Ok(())
}

use crate::object::ObjType;

/// The unmap callback of the self-test access: drop items intersecting the range.
pub(crate) fn unmap_notify(g: &mut Ictx, m: &Machine, id: u32, iova: u64, length: u64) {
    let last = iova.saturating_add(length.saturating_sub(1));
    let Some(a) = g.accesses.get_mut(&id) else { return };
    if a.internal {
        return;
    }
    let (drop_items, keep): (Vec<_>, Vec<_>) =
        a.items.drain(..).partition(|it| crate::iova::overlaps((it.iova, it.iova + it.length - 1), (iova, last)));
    a.items = keep;
    for it in drop_items {
        unpin(g, m, id, it.iova, it.length);
    }
}

/// The pieces of `[iova, last]` as (area key, first iova, last iova), checking coverage.
fn pieces(g: &Ictx, ioas: u32, iova: u64, last: u64) -> Result<Vec<(u64, u64, u64)>> {
    let io = &g.ioas[&ioas];
    let mut out = Vec::new();
    let mut at = iova;
    for k in io.areas_in(iova, last) {
        let a = &io.areas[&k];
        if a.iova > at {
            return Err(Errno::ENOENT);
        }
        let l = a.last.min(last);
        out.push((k, at, l));
        if l == last {
            return Ok(out);
        }
        at = l + 1;
    }
    Err(Errno::ENOENT)
}

/// Pin `[iova, iova+length)` for an access; returns the physical page of each page.
pub(crate) fn pin(g: &mut Ictx, m: &Machine, id: u32, iova: u64, length: u64, write: bool) -> Result<Vec<u64>> {
    if length == 0 {
        return Err(Errno::EINVAL);
    }
    let last = iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?;
    let ioas = g.accesses[&id].ioas.ok_or(Errno::ENOENT)?;
    let ps = pieces(g, ioas, iova, last)?;
    let n = ps.len();
    for (i, &(k, s, l)) in ps.iter().enumerate() {
        let a = &g.ioas[&ioas].areas[&k];
        let start_byte = a.offset + (s - a.iova);
        let end_byte = a.offset + (l - a.iova);
        if a.prevent_access
            || !start_byte.is_multiple_of(PAGE_SIZE)
            || (i + 1 < n && end_byte % PAGE_SIZE != PAGE_SIZE - 1)
        {
            return Err(Errno::EINVAL);
        }
        if (write && !a.prot.write) || (!write && !a.prot.read) {
            return Err(Errno::EPERM);
        }
        if g.stores[&a.store].is_dmabuf() {
            return Err(Errno::EINVAL);
        }
    }
    let mut held: Vec<(u64, u64, u64)> = Vec::new();
    let mut phys = Vec::new();
    for &(k, s, l) in &ps {
        let a = g.ioas[&ioas].areas[&k].clone();
        let first = (a.offset + (s - a.iova)) / PAGE_SIZE;
        let lastp = (a.offset + (l - a.iova)) / PAGE_SIZE;
        let store = g.stores.get_mut(&a.store).expect("store");
        if let Err(e) = fail_point(FailSite::Xarray).and_then(|_| store.hold(m, first, lastp)) {
            let internal = g.accesses[&id].internal;
            for (k, f, l) in held {
                let st = g.ioas[&ioas].areas[&k].store;
                g.stores.get_mut(&st).expect("store").release(m, f, l);
                let area = g.ioas.get_mut(&ioas).expect("ioas").areas.get_mut(&k).expect("area");
                area.num_accesses -= 1;
                if internal {
                    area.num_locks -= 1;
                }
            }
            return Err(e);
        }
        for p in first..=lastp {
            phys.push(store.pinned_phys(p).unwrap_or(0));
        }
        let internal = g.accesses[&id].internal;
        let area = g.ioas.get_mut(&ioas).expect("ioas").areas.get_mut(&k).expect("area");
        area.num_accesses += 1;
        if internal {
            area.num_locks += 1;
        }
        held.push((k, first, lastp));
    }
    Ok(phys)
}

/// Undo [`pin`] for exactly the same range.
pub(crate) fn unpin(g: &mut Ictx, m: &Machine, id: u32, iova: u64, length: u64) {
    let Some(ioas) = g.accesses.get(&id).and_then(|a| a.ioas) else { return };
    let last = iova + length - 1;
    let Ok(ps) = pieces(g, ioas, iova, last) else {
        debug_assert!(false, "unpin of a range that is not mapped");
        return;
    };
    let internal = g.accesses[&id].internal;
    for (k, s, l) in ps {
        let a = g.ioas.get_mut(&ioas).expect("ioas").areas.get_mut(&k).expect("area");
        a.num_accesses -= 1;
        if internal {
            a.num_locks -= 1;
        }
        if a.num_accesses == 0 {
            a.prevent_access = false;
        }
        let first = (a.offset + (s - a.iova)) / PAGE_SIZE;
        let lastp = (a.offset + (l - a.iova)) / PAGE_SIZE;
        let st = a.store;
        g.stores.get_mut(&st).expect("store").release(m, first, lastp);
    }
}

/// Read or write through IOVA for an access (`ACCESS_RW`).
pub(crate) fn rw(g: &Ictx, m: &Machine, id: u32, iova: u64, buf: &mut [u8], write: bool) -> Result<()> {
    let length = buf.len() as u64;
    if length == 0 {
        return Err(Errno::EINVAL);
    }
    let last = iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?;
    let ioas = g.accesses[&id].ioas.ok_or(Errno::ENOENT)?;
    let ps = pieces(g, ioas, iova, last)?;
    for &(k, s, l) in &ps {
        let a = &g.ioas[&ioas].areas[&k];
        if a.prevent_access {
            return Err(Errno::EINVAL);
        }
        let store = &g.stores[&a.store];
        if (write && (!a.prot.write || !store.writable)) || (!write && !a.prot.read) {
            return Err(Errno::EPERM);
        }
        if store.is_dmabuf() {
            return Err(Errno::EINVAL);
        }
        let off = a.offset + (s - a.iova);
        let chunk = &mut buf[(s - iova) as usize..=(l - iova) as usize];
        fail_point(FailSite::RwPage)?;
        if write {
            store.write(m, off, chunk)?;
        } else {
            store.read(m, off, chunk)?;
        }
    }
    Ok(())
}

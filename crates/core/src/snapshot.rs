//! A canonical text description of a context's state, for tests and fuzzers that check a
//! failed call changed nothing ([`Context::snapshot`]).

use crate::context::{Context, Ictx};
use crate::pages::Source;
use crate::platform::PAGE_SIZE;
use std::fmt::Write;

impl Context {
    /// Everything the context holds, as text that two equal states render identically:
    /// the object table (ids, types, states, users), every IOAS (areas, reserved and
    /// allowed ranges, domains, accesses), every HWPT with its IO page table's leaves and
    /// table memory, page stores with their per-page holds, devices and attachments,
    /// accesses with their pinned items, fault queues, vIOMMU objects and the VFIO compat
    /// IOAS. Internal counters that only name future objects (next store or item number)
    /// or count invalidations (DMA epochs) are left out. For debugging and tests; the format is not stable.
    pub fn snapshot(&self) -> String {
        describe(&self.lock())
    }
}

fn describe(g: &Ictx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "objects {:?}", g.objs);
    let _ = writeln!(s, "acct_mode {:?} vfio_ioas {:?}", g.acct_mode, g.vfio_ioas);
    for (id, io) in &g.ioas {
        let _ = writeln!(
            s,
            "ioas {id}: large_pages {} domains {:?} accesses {:?} allowed {:?} reserved {:?}",
            io.large_pages, io.domains, io.accesses, io.allowed, io.reserved
        );
        for a in io.areas.values() {
            let _ = writeln!(s, "  area {a:?}");
        }
    }
    for (id, h) in &g.hwpt {
        let _ = writeln!(
            s,
            "hwpt {id}: ioas {} auto {} nest_parent {} dirty {} pasid {} fault {:?} tracking {} mapped {} table_bytes {}",
            h.ioas,
            h.auto_domain,
            h.nest_parent,
            h.dirty_capable,
            h.pasid_compat,
            h.fault,
            h.tracking,
            h.pt.mapped_bytes(),
            h.pt.table_bytes()
        );
        // Every leaf over the IOAS's areas: placement, size, target and permissions.
        if let Some(io) = g.ioas.get(&h.ioas) {
            for a in io.areas.values().filter(|a| !a.revoked) {
                let mut at = a.iova;
                while at <= a.last {
                    match h.pt.lookup_leaf(at) {
                        Some((leaf, len, phys, prot)) => {
                            let _ = writeln!(s, "  leaf {leaf:#x}+{len:#x} -> {phys:#x} {prot:?}");
                            match (leaf + len).checked_sub(1) {
                                Some(l) if l < a.last => at = l + 1,
                                _ => break,
                            }
                        }
                        None => {
                            // Not mapped (check_invariants reports it); one line per area.
                            let _ = writeln!(s, "  hole at {at:#x} in area {:#x}", a.iova);
                            break;
                        }
                    }
                }
            }
        }
    }
    for (id, n) in &g.nested {
        let _ = writeln!(s, "nested {id}: {n:?}");
    }
    for (id, st) in &g.stores {
        let source = match &st.source {
            Source::Va { pid, base } => format!("va pid {pid} base {base:#x}"),
            Source::File { file, pgoff } => format!("file {:?} pgoff {pgoff}", file.kind()),
            Source::DmaBuf { buf, pgoff } => format!("dmabuf {} pgoff {pgoff}", buf.id),
        };
        let _ = writeln!(
            s,
            "store {id}: {source} npages {} writable {} owner {:?} area_refs {} npinned {}",
            st.npages, st.writable, st.owner, st.area_refs, st.npinned
        );
        // Held pages as runs of equal holders over contiguous physical pages.
        let mut run: Option<(u64, u64, u32, u64)> = None; // (first, end, holders, phys of first)
        for (f, e, c, p) in st.hold_runs() {
            match &mut run {
                Some(r) if r.1 == f && r.2 == c && r.3 + (f - r.0) * PAGE_SIZE == p => r.1 = e,
                _ => {
                    if let Some((f, e, c, p)) = run.take() {
                        let _ = writeln!(s, "  pages {f}..{e} holds {c} phys {p:#x}");
                    }
                    run = Some((f, e, c, p));
                }
            }
        }
        if let Some((f, e, c, p)) = run {
            let _ = writeln!(s, "  pages {f}..{e} holds {c} phys {p:#x}");
        }
    }
    for (id, d) in &g.devices {
        // Not the DMA epoch: a generation counter that every unmap advances.
        let _ = writeln!(
            s,
            "device {id}: flags {:#x} cache {:?} attached {:?} pasid_fail_armed {} viommu_assoc {:?}",
            d.flags, d.cache, d.attached, d.pasid_fail_armed, d.viommu_assoc
        );
    }
    for (id, t) in &g.selftests {
        let _ = writeln!(s, "selftest {id}: {t:?}");
    }
    for (id, a) in &g.accesses {
        let _ = writeln!(
            s,
            "access {id}: ioas {:?} needs_pin {} internal {} items {:?}",
            a.ioas, a.needs_pin, a.internal, a.items
        );
    }
    for (id, f) in &g.faults {
        let _ = writeln!(s, "fault {id}: {f:?}");
    }
    for (id, v) in &g.viommus {
        let _ = writeln!(
            s,
            "viommu {id}: parent {} vdevs {:?} veventqs {:?} hw_queues {:?} region {:?}",
            v.parent,
            v.vdevs,
            v.veventqs,
            v.hw_queues,
            v.region.as_ref().map(|r| (r.0, r.1))
        );
    }
    for (id, v) in &g.vdevices {
        let _ = writeln!(s, "vdevice {id}: {v:?}");
    }
    for (id, q) in &g.veventqs {
        let _ = writeln!(s, "veventq {id}: {q:?}");
    }
    for (id, q) in &g.hw_queues {
        let _ = writeln!(s, "hw_queue {id}: {q:?}");
    }
    s
}

//! The object table: ids, types, users, publication and tombstones.
//!
//! Ids are the lowest free u32 ≥ 1 (max 2^31−1). Creating an object first *reserves* an id
//! (lookups see ENOENT), and only when the whole ioctl succeeded is it *published*; a failed
//! ioctl aborts the reservation, so the id is free again and nothing leaks. `users` counts
//! the references that block `IOMMU_DESTROY` besides the table's own (which is implicit):
//! an HWPT on its IOAS, an attachment on its HWPT and device, and so on. A tombstone keeps
//! an id reserved forever without an object behind it (a vDEVICE removed by unbind).
//!
//! The payload of each object lives in a typed map in [`crate::context::Ictx`]; this table
//! only knows type, state and users, so handlers can borrow two objects of different types
//! mutably at once.

use crate::errno::{Errno, Result};
use crate::fault_inject::{fail_point, FailSite};
use std::collections::BTreeMap;

/// Largest object id.
pub(crate) const ID_MAX: u32 = (1 << 31) - 1;

/// Object types, numbered like the kernel's `enum iommufd_object_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ObjType {
    Device,
    HwptPaging,
    HwptNested,
    Ioas,
    Access,
    Fault,
    Viommu,
    Vdevice,
    Veventq,
    HwQueue,
    Selftest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reserved,
    Live,
    Tombstone,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    ty: ObjType,
    state: State,
    users: u32,
}

/// Ids, types and user counts of every object of one context.
#[derive(Debug, Default)]
pub(crate) struct ObjectTable {
    slots: BTreeMap<u32, Slot>,
}

impl ObjectTable {
    /// Reserve the lowest free id for an object of `ty` (invisible until published).
    pub fn reserve(&mut self, ty: ObjType) -> Result<u32> {
        fail_point(FailSite::Object)?;
        let mut want = 1u32;
        for &id in self.slots.keys() {
            if id != want {
                break;
            }
            want += 1;
        }
        if want > ID_MAX {
            return Err(Errno::ENOSPC);
        }
        self.slots.insert(want, Slot { ty, state: State::Reserved, users: 0 });
        Ok(want)
    }

    /// Make a reserved id visible.
    pub fn publish(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(&id) {
            debug_assert_eq!(s.state, State::Reserved);
            s.state = State::Live;
        }
    }

    /// Release an id (reserved, live or tombstone) so it can be reused.
    pub fn remove(&mut self, id: u32) {
        self.slots.remove(&id);
    }

    /// Turn a live object into a tombstone (id never reused until the context dies).
    pub fn tombstone(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.state = State::Tombstone;
            s.users = 0;
        }
    }

    /// Type of a published object, ENOENT otherwise.
    pub fn type_of(&self, id: u32) -> Result<ObjType> {
        match self.slots.get(&id) {
            Some(s) if s.state == State::Live => Ok(s.ty),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Type of a reserved-or-published object (for internal use on objects being built).
    pub fn type_any_state(&self, id: u32) -> Option<ObjType> {
        self.slots.get(&id).filter(|s| s.state != State::Tombstone).map(|s| s.ty)
    }

    /// Check that `id` is a published object of type `ty` (ENOENT otherwise).
    pub fn expect(&self, id: u32, ty: ObjType) -> Result<()> {
        fail_point(FailSite::Lookup)?;
        if self.type_of(id)? == ty {
            Ok(())
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// Add a user reference (a dependent object now points at `id`).
    pub fn get(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.users += 1;
        }
    }

    /// Drop a user reference.
    pub fn put(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(&id) {
            debug_assert!(s.users > 0, "users underflow on id {id}");
            s.users = s.users.saturating_sub(1);
        }
    }

    /// Users besides the table.
    pub fn users(&self, id: u32) -> u32 {
        self.slots.get(&id).map_or(0, |s| s.users)
    }

    /// Whether the context holds any object, hidden ones and tombstones included.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Published objects in increasing id order.
    pub fn live_ids(&self) -> Vec<(u32, ObjType)> {
        self.slots.iter().filter(|(_, s)| s.state == State::Live).map(|(&i, s)| (i, s.ty)).collect()
    }

    /// Number of slots (any state).
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_id_and_reuse() {
        let mut t = ObjectTable::default();
        let a = t.reserve(ObjType::Ioas).unwrap();
        let b = t.reserve(ObjType::Ioas).unwrap();
        let c = t.reserve(ObjType::Ioas).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        t.publish(a);
        assert_eq!(t.type_of(b), Err(Errno::ENOENT), "reserved ids are invisible");
        t.remove(b);
        assert_eq!(t.reserve(ObjType::Access).unwrap(), 2);
        t.tombstone(c);
        assert_eq!(t.type_of(c), Err(Errno::ENOENT));
        assert_eq!(t.reserve(ObjType::Ioas).unwrap(), 4, "tombstones are not reused");
    }

    #[test]
    fn users_and_expect() {
        let mut t = ObjectTable::default();
        let a = t.reserve(ObjType::Ioas).unwrap();
        t.publish(a);
        assert_eq!(t.expect(a, ObjType::HwptPaging), Err(Errno::ENOENT));
        t.expect(a, ObjType::Ioas).unwrap();
        t.get(a);
        assert_eq!(t.users(a), 1);
        t.put(a);
        assert_eq!(t.users(a), 0);
    }
}

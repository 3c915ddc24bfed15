//! Model check of the object lifecycle protocol with `shuttle` (randomized and PCT
//! schedules over every interleaving point of its synchronization primitives).
//!
//! The engine itself uses `std::sync::Mutex`, which shuttle cannot schedule, and making the
//! context lock generic over a lock type would touch every file of the engine for a test.
//! So this model runs the *real* [`ObjectTable`] (reserve → publish, users, remove) under a
//! shuttle mutex and replays the protocol the engine builds on it:
//!
//! * a context lives while any `Arc` to it does; descriptors (fault queue, access) hold one,
//!   and the last drop runs the teardown (passes over live ids destroying unused objects);
//! * an object with a descriptor is reserved and gets the descriptor's user *in the same
//!   critical section*, is published later, and the descriptor's close puts the user;
//! * an access is owned by its descriptor: closing it drops the IOAS user and the id;
//! * `IOMMU_DESTROY` removes only published objects with zero users.
//!
//! Checked in every schedule: no user is put on an id that is gone or was reused, no
//! destroy removes an object somebody still uses, teardown runs exactly once, after every
//! holder, and leaves the table empty, and nothing deadlocks.

use crate::object::{ObjType, ObjectTable};
use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::sync::Mutex;
use std::sync::Arc;

struct Ctx {
    table: Mutex<ObjectTable>,
    teardowns: Arc<AtomicUsize>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Context::teardown: passes in increasing id order destroying unused objects.
        let mut t = self.table.lock().unwrap();
        loop {
            let mut progress = false;
            for (id, ty) in t.live_ids() {
                if t.type_of(id) == Ok(ty) && t.users(id) == 0 {
                    t.remove(id);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        assert!(t.live_ids().is_empty(), "teardown left {:?}", t.live_ids());
        self.teardowns.fetch_add(1, Ordering::SeqCst);
    }
}

/// A fault-queue (or vEVENTQ) descriptor: holds the context and one user of its object.
struct FdHolder {
    ctx: Arc<Ctx>,
    id: u32,
    ty: ObjType,
}

impl Drop for FdHolder {
    fn drop(&mut self) {
        let mut t = self.ctx.table.lock().unwrap();
        assert_eq!(t.type_any_state(self.id), Some(self.ty), "descriptor outlived its object");
        assert!(t.users(self.id) > 0, "descriptor's user already gone");
        t.put(self.id);
    }
}

/// An access descriptor: owns the access object and its IOAS user.
struct AccessHolder {
    ctx: Arc<Ctx>,
    id: u32,
    ioas: u32,
}

impl Drop for AccessHolder {
    fn drop(&mut self) {
        let mut t = self.ctx.table.lock().unwrap();
        assert_eq!(t.type_any_state(self.id), Some(ObjType::Access));
        assert_eq!(t.type_of(self.ioas), Ok(ObjType::Ioas), "IOAS destroyed under an access");
        t.put(self.ioas);
        t.remove(self.id);
    }
}

/// `IOMMU_DESTROY`: published, zero users.
fn destroy(ctx: &Ctx, id: u32) -> bool {
    let mut t = ctx.table.lock().unwrap();
    if t.type_of(id).is_ok() && t.users(id) == 0 {
        t.remove(id);
        true
    } else {
        false
    }
}

fn scenario() {
    let teardowns = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new(Ctx { table: Mutex::new(ObjectTable::default()), teardowns: teardowns.clone() });
    let ioas = {
        let mut t = ctx.table.lock().unwrap();
        let id = t.reserve(ObjType::Ioas).unwrap();
        t.publish(id);
        id
    };
    let mut threads = Vec::new();
    // FAULT_QUEUE_ALLOC, then close(fd).
    let c = ctx.clone();
    threads.push(shuttle::thread::spawn(move || {
        let id = {
            let mut t = c.table.lock().unwrap();
            let id = t.reserve(ObjType::Fault).unwrap();
            t.get(id); // the descriptor's user, in the same critical section
            id
        };
        let fd = FdHolder { ctx: c.clone(), id, ty: ObjType::Fault };
        // install_fd + copy-back happen here, unlocked; then publish.
        shuttle::thread::yield_now();
        c.table.lock().unwrap().publish(id);
        drop(fd);
    }));
    // CREATE_ACCESS on the IOAS, then close(fd).
    let c = ctx.clone();
    threads.push(shuttle::thread::spawn(move || {
        let holder = {
            let mut t = c.table.lock().unwrap();
            // (`type_of` alone would accept a newer object that reused the IOAS's id.)
            if t.expect(ioas, ObjType::Ioas).is_err() {
                return; // the IOAS was destroyed first: ENOENT
            }
            let id = t.reserve(ObjType::Access).unwrap();
            t.get(ioas);
            AccessHolder { ctx: c.clone(), id, ioas }
        };
        shuttle::thread::yield_now();
        drop(holder);
    }));
    // IOMMU_DESTROY of everything, racing the above.
    let c = ctx.clone();
    threads.push(shuttle::thread::spawn(move || {
        for _ in 0..3 {
            for id in 1..=3 {
                let _ = destroy(&c, id);
            }
            shuttle::thread::yield_now();
        }
    }));
    // The program closes /dev/iommu while the others run.
    drop(ctx);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(teardowns.load(Ordering::SeqCst), 1, "teardown ran once, after the last holder");
}

#[test]
fn object_lifecycle_random_schedules() {
    shuttle::check_random(scenario, 3000);
}

#[test]
fn object_lifecycle_pct_schedules() {
    shuttle::check_pct(scenario, 3000, 3);
}

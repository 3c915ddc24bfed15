//! The shim's descriptor table: which of the process's fd numbers stand for engine files.
//!
//! Every engine file the program can see (an open `/dev/iommu`, an access fd, a dma-buf, ...)
//! is represented by a **real kernel descriptor** (a socketpair end for iommufd, an eventfd
//! for an access, ...), so fd numbers are allocated by the kernel, `fork`, `dup`, `poll` of
//! mixed sets and `exec`'s close-on-exec all keep working, and unrelated code never gets a
//! number the shim believes is its own.
//!
//! * [`FLAGS`]: one `AtomicU8` per fd number below [`FLAG_FDS`]. Bit [`ENGINE`] says "look in
//!   the table", bit [`PRIVATE`] marks the shim's own high descriptors. The hot path
//!   (`ioctl`/`read`/`write`/`close`/`mmap` on a non-engine fd) is one relaxed atomic load.
//!   Engine descriptors at or above `FLAG_FDS` (rare) are counted in `HIGH_ENGINE`, and only
//!   when that is non-zero does a high fd take the lock.
//! * `TABLE`: fd number → `Arc<ShimFile>`. A `ShimFile` is one *open file description*:
//!   `dup`/`F_DUPFD`/`dup2` insert another clone of the same `Arc` under the new number.
//!   Closing a number removes its entry; when the last number goes the `ShimFile` drops, which
//!   drops the engine file (engine tear-down runs in its `Drop`) and closes the host-side end.
//! * The engine is never called with the table lock held, and entries are always dropped
//!   after the lock is released (their `Drop` runs engine tear-down, which may call back into
//!   the platform and so into this table).
//!
//! `fork`: the child gets a copy of the whole table (and the engine state): both processes
//! then have independent engines whose files happen to be shared kernel sockets. That is
//! accepted for now; serving several processes from one host process over the socketpair is
//! the next step. A fork while another thread holds the table lock would deadlock the child's
//! next engine call (no `pthread_atfork` handling, deliberately).
//!
//! `exec`: the new image starts with an empty table; inherited (non-`O_CLOEXEC`) engine fds
//! become plain sockets/eventfds there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uiommu_core::EngineFile;

use crate::sys::Fd;

/// Fd numbers below this have a flag byte.
pub const FLAG_FDS: usize = 65536;
/// Flag bit: the fd is (probably) in `TABLE`.
pub const ENGINE: u8 = 1;
/// Flag bit: the fd is one of the shim's private descriptors.
pub const PRIVATE: u8 = 2;

/// Per-fd flag bytes.
pub static FLAGS: [AtomicU8; FLAG_FDS] = [const { AtomicU8::new(0) }; FLAG_FDS];
/// Number of engine entries whose fd is `>= FLAG_FDS`.
static HIGH_ENGINE: AtomicUsize = AtomicUsize::new(0);

/// One open engine file description.
#[derive(Debug)]
pub struct ShimFile {
    /// The engine's file.
    pub file: EngineFile,
    /// The host-side end of the socketpair standing for an iommufd (closed with the file).
    _host_end: Option<Fd>,
}

impl ShimFile {
    /// A new description for `file`, with an optional host-side descriptor to keep open.
    pub fn new(file: EngineFile, host_end: Option<Fd>) -> Arc<ShimFile> {
        Arc::new(ShimFile { file, _host_end: host_end })
    }
}

/// fd number → open engine file description.
static TABLE: Mutex<BTreeMap<i32, Arc<ShimFile>>> = Mutex::new(BTreeMap::new());

fn table() -> MutexGuard<'static, BTreeMap<i32, Arc<ShimFile>>> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lock-free pre-check: could `fd` be an engine fd? (`false` is definitive.)
#[inline(always)]
pub fn maybe_engine(fd: i32) -> bool {
    if fd < 0 {
        return false;
    }
    match FLAGS.get(fd as usize) {
        Some(f) => f.load(Ordering::Acquire) & ENGINE != 0,
        None => HIGH_ENGINE.load(Ordering::Acquire) != 0,
    }
}

/// Whether `fd` is one of the shim's private descriptors.
#[inline(always)]
pub fn is_private(fd: i32) -> bool {
    fd >= 0
        && FLAGS.get(fd as usize).is_some_and(|f| f.load(Ordering::Relaxed) & PRIVATE != 0)
}

/// Marks or unmarks `fd` as private.
pub fn mark_private(fd: i32, on: bool) {
    if let Some(f) = usize::try_from(fd).ok().and_then(|i| FLAGS.get(i)) {
        if on {
            f.fetch_or(PRIVATE, Ordering::Release);
        } else {
            f.fetch_and(!PRIVATE, Ordering::Release);
        }
    }
}

fn set_engine_flag(fd: i32, on: bool) {
    match FLAGS.get(fd as usize) {
        Some(f) => {
            if on {
                f.fetch_or(ENGINE, Ordering::Release);
            } else {
                f.fetch_and(!ENGINE, Ordering::Release);
            }
        }
        None => {
            if on {
                HIGH_ENGINE.fetch_add(1, Ordering::AcqRel);
            } else {
                HIGH_ENGINE.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The engine file description behind `fd`, if any.
#[inline]
pub fn lookup(fd: i32) -> Option<Arc<ShimFile>> {
    if !maybe_engine(fd) {
        return None;
    }
    table().get(&fd).cloned()
}

/// Registers `fd` as standing for `file`. Returns the entry it replaced (a stale one whose
/// number was closed behind the shim's back); drop it *after* this returns.
#[must_use]
pub fn insert(fd: i32, file: Arc<ShimFile>) -> Option<Arc<ShimFile>> {
    debug_assert!(fd >= 0);
    let mut t = table();
    let old = t.insert(fd, file);
    if old.is_none() {
        set_engine_flag(fd, true);
    }
    old
}

/// Unregisters `fd`; returns its entry (drop it after this returns, outside any lock).
#[must_use]
pub fn remove(fd: i32) -> Option<Arc<ShimFile>> {
    if !maybe_engine(fd) {
        return None;
    }
    let mut t = table();
    let old = t.remove(&fd);
    if old.is_some() {
        set_engine_flag(fd, false);
    }
    old
}

/// Unregisters every fd in `first..=last`; returns the entries.
#[must_use]
pub fn remove_range(first: u32, last: u32) -> Vec<Arc<ShimFile>> {
    let first = first.min(i32::MAX as u32) as i32;
    let last = last.min(i32::MAX as u32) as i32;
    if first > last {
        return Vec::new();
    }
    let mut t = table();
    let fds: Vec<i32> = t.range(first..=last).map(|(fd, _)| *fd).collect();
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        if let Some(e) = t.remove(&fd) {
            set_engine_flag(fd, false);
            out.push(e);
        }
    }
    out
}

/// After the kernel handed out `fd` for something that is not an engine file: forget any
/// stale entry under that number (closed behind the shim's back). errno is preserved.
#[inline]
pub fn forget_stale(fd: i32) {
    if maybe_engine(fd) {
        crate::sys::keep_errno(|| crate::drop_quietly(remove(fd)));
    }
}

/// Entries to drop once no engine call is in progress on this thread (see [`defer_drop`]).
static DEFERRED: Mutex<Vec<Arc<ShimFile>>> = Mutex::new(Vec::new());
static HAVE_DEFERRED: AtomicUsize = AtomicUsize::new(0);

/// Drops `f` later, from [`drop_deferred`]: for platform callbacks, which run with engine
/// locks held, where an engine file's tear-down must not run.
pub fn defer_drop(f: Arc<ShimFile>) {
    let mut g = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
    g.push(f);
    HAVE_DEFERRED.store(g.len(), Ordering::Release);
}

/// Drops what [`defer_drop`] queued. Call only outside engine calls (errno is preserved).
#[inline]
pub fn drop_deferred() {
    if HAVE_DEFERRED.load(Ordering::Acquire) == 0 {
        return;
    }
    let v = {
        let mut g = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        HAVE_DEFERRED.store(0, Ordering::Release);
        std::mem::take(&mut *g)
    };
    crate::sys::keep_errno(|| crate::drop_quietly(v));
}

/// Number of registered engine fds (for tests and diagnostics).
pub fn len() -> usize {
    table().len()
}

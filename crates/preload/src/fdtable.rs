//! The shim's descriptor table: which of the process's fd numbers stand for engine files.
//!
//! Every engine file the program can see (an open `/dev/iommu`, an access fd, a fault or
//! vEVENTQ fd, a dma-buf) is represented by a **real kernel descriptor**, so fd numbers are
//! allocated by the kernel, `fork`, `dup`, `poll` of mixed sets, SCM_RIGHTS and `exec`'s
//! close-on-exec all keep working, and unrelated code never gets a number the shim believes
//! is its own. iommufd, access, fault and vEVENTQ files are the *client end* of a
//! SOCK_SEQPACKET socket pair whose other end the hosting process keeps (see
//! [`crate::host`] and ARCHITECTURE.md, "Processes"); a dma-buf is a duplicate of its memfd.
//!
//! * [`FLAGS`]: one `AtomicU8` per fd number below [`FLAG_FDS`]. Bit [`ENGINE`] says "look in
//!   the table", bit [`PRIVATE`] marks the shim's own high descriptors. The hot path
//!   (`ioctl`/`read`/`write`/`close`/`mmap` on a non-engine fd) is one relaxed atomic load.
//!   Engine descriptors at or above `FLAG_FDS` (rare) are counted in `HIGH_ENGINE`, and only
//!   when that is non-zero does a high fd take the lock.
//! * `TABLE`: fd number → `Arc<ShimFile>`. A [`ShimFile`] is one *open file description* as
//!   this process knows it: a file it hosts ([`ShimFile::Local`], served in-process), or a
//!   file another process hosts ([`ShimFile::Remote`], served by messages over the
//!   descriptor itself). `dup`/`F_DUPFD`/`dup2` insert another clone of the same `Arc` under
//!   the new number. Closing a number removes its entry; when the last number goes the
//!   `ShimFile` drops, and for a hosted file the host checks whether any other process still
//!   holds the descriptor ([`crate::host::released`]): if none does, the engine file is
//!   dropped (engine tear-down runs in its `Drop`) before `close()` returns.
//! * The engine is never called with the table lock held, and entries are always dropped
//!   after the lock is released (their `Drop` may run engine tear-down, which may call back
//!   into the platform and so into this table).
//!
//! `fork`: a `pthread_atfork` child handler ([`crate::fork`]) turns every hosted entry into a
//! remote one whose host is the parent (the child's copy of the engine is abandoned, never
//! dropped), so parent and child share one context exactly as they share one kernel file.
//!
//! `exec`: the new image starts with an empty table; inherited (non-`O_CLOEXEC`) client ends
//! are recognised at start-up by their socket peer name and become remote entries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uiommu_core::{Context, EngineFile};
use uiommu_sync::asym;

use crate::host::Conn;

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

/// What kind of engine file a descriptor is (also encoded in the host's socket name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `/dev/iommu`.
    Iommufd,
    /// A self-test access.
    Access,
    /// An IO page-fault queue.
    Fault,
    /// A vEVENTQ.
    Veventq,
    /// A self-test dma-buf.
    DmaBuf,
}

impl FileKind {
    /// The kind of an engine file.
    pub fn of(f: &EngineFile) -> FileKind {
        match f {
            EngineFile::Iommufd(_) => FileKind::Iommufd,
            EngineFile::Access(_) => FileKind::Access,
            EngineFile::Fault(_) => FileKind::Fault,
            EngineFile::Veventq(_) => FileKind::Veventq,
            EngineFile::DmaBuf(_) => FileKind::DmaBuf,
        }
    }

    /// One-letter code used in socket names and messages.
    pub fn code(self) -> u8 {
        match self {
            FileKind::Iommufd => b'i',
            FileKind::Access => b'a',
            FileKind::Fault => b'f',
            FileKind::Veventq => b'v',
            FileKind::DmaBuf => b'd',
        }
    }

    /// Inverse of [`FileKind::code`].
    pub fn from_code(c: u8) -> Option<FileKind> {
        Some(match c {
            b'i' => FileKind::Iommufd,
            b'a' => FileKind::Access,
            b'f' => FileKind::Fault,
            b'v' => FileKind::Veventq,
            b'd' => FileKind::DmaBuf,
            _ => return None,
        })
    }
}

/// One open engine file description, as this process sees it.
#[derive(Debug)]
pub enum ShimFile {
    /// A file this process hosts, stood for by the client end of its connection.
    Local(Arc<Conn>),
    /// A dma-buf this process hosts, stood for by a duplicate of its memfd.
    LocalDmabuf(EngineFile),
    /// A file another process hosts: requests go over the descriptor itself.
    Remote {
        /// The hosting process.
        host: u32,
        /// What the file is.
        kind: FileKind,
    },
}

impl ShimFile {
    /// The engine file, when this process hosts it.
    pub fn engine(&self) -> Option<&EngineFile> {
        match self {
            ShimFile::Local(c) => Some(&c.file),
            ShimFile::LocalDmabuf(f) => Some(f),
            ShimFile::Remote { .. } => None,
        }
    }

    /// The file's kind.
    pub fn kind(&self) -> FileKind {
        match self {
            ShimFile::Local(c) => c.kind,
            ShimFile::LocalDmabuf(_) => FileKind::DmaBuf,
            ShimFile::Remote { kind, .. } => *kind,
        }
    }
}

impl Drop for ShimFile {
    fn drop(&mut self) {
        if let ShimFile::Local(conn) = self {
            crate::host::released(conn);
        }
    }
}

/// fd number → open engine file description.
static TABLE: Mutex<BTreeMap<i32, Arc<ShimFile>>> = Mutex::new(BTreeMap::new());

pub(crate) fn table() -> MutexGuard<'static, BTreeMap<i32, Arc<ShimFile>>> {
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
    fd >= 0 && FLAGS.get(fd as usize).is_some_and(|f| f.load(Ordering::Relaxed) & PRIVATE != 0)
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

pub(crate) fn set_engine_flag(fd: i32, on: bool) {
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

/// The engine file description behind `fd`, if any (a reference-counted clone, taken under
/// the table lock: for paths that are not hot).
#[inline]
pub fn lookup(fd: i32) -> Option<Arc<ShimFile>> {
    if !maybe_engine(fd) {
        return None;
    }
    table().get(&fd).cloned()
}

// ---------------------------------------------------------------------------------------
// The hot path: lookups without a lock or a reference count
// ---------------------------------------------------------------------------------------
//
// `FAST[fd]` points at the `ShimFile` the table holds for `fd` (null if none) and has an
// *owner*: the first thread that used it on the hot path (forever; other threads take the
// counted path under the lock). The owner announces a use by setting the slot's `busy`
// flag (a plain store), then — after a light fence — loads the pointer and uses the file
// without touching any reference count. A writer that removes or replaces an entry clears
// or swaps the pointer, issues a heavy fence (membarrier) and waits until `busy` is clear
// before the old entry may be dropped: by the asymmetric-fence argument (uiommu_sync::asym)
// either the owner's load saw the new pointer or the writer sees `busy`. So an ioctl on an
// engine fd costs no atomic read-modify-write and no TLS lookup, and a concurrent `close()`
// of the same fd waits for the ioctl to finish before tearing the file down (as the
// kernel's file reference does).

/// One fd's hot-path slot.
pub(crate) struct FastSlot {
    ptr: AtomicPtr<ShimFile>,
    /// For an iommufd this process hosts, the context inside the entry `ptr` points at
    /// (null otherwise): an ioctl reaches it with one load instead of three dependent ones.
    iommufd: AtomicPtr<Arc<Context>>,
    owner: AtomicUsize,
    busy: AtomicBool,
}

/// fd → hot-path slot, for fds below [`FLAG_FDS`].
static FAST: [FastSlot; FLAG_FDS] = [const {
    FastSlot {
        ptr: AtomicPtr::new(std::ptr::null_mut()),
        iommufd: AtomicPtr::new(std::ptr::null_mut()),
        owner: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
    }
}; FLAG_FDS];

/// One past the highest fd whose slot was ever used (bounds the fork-child scan).
static FAST_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Clears `busy` when the use ends (also on unwinding).
struct Using(&'static AtomicBool);

impl Drop for Using {
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `fd`'s hot-path slot, announced busy until the returned guard drops; `None` when the
/// counted path must serve (another thread's slot, a nested use, a high fd, no fences).
#[inline(always)]
fn enter(fd: i32) -> Option<(&'static FastSlot, Using)> {
    let s = usize::try_from(fd).ok().and_then(|i| FAST.get(i))?;
    if !asym::available() {
        return None;
    }
    let me = uiommu_sync::thread_id();
    let o = s.owner.load(Ordering::Relaxed);
    let mine = o == me || (o == 0 && s.owner.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed).is_ok());
    // `busy` already set on the owner: a nested use further up this thread's stack.
    if !mine || s.busy.load(Ordering::Relaxed) {
        return None;
    }
    s.busy.store(true, Ordering::Relaxed);
    let using = Using(&s.busy);
    asym::light();
    Some((s, using))
}

/// The entry a busy slot points at (null if none).
///
/// SAFETY (for dereferencing the result while the slot is busy): the pointer is the
/// table's entry for `fd`, loaded after our `busy` store and a light fence; a writer that
/// removes it clears the pointer, issues a heavy fence and waits for `busy` to clear
/// before dropping it (`quiesce`), and until then the table's Arc keeps it alive.
#[inline(always)]
fn entry(s: &FastSlot) -> *const ShimFile {
    s.ptr.load(Ordering::Acquire)
}

/// Runs `f` on the engine file behind `fd` (`None` if `fd` is not one): no lock, no
/// reference count (see above).
#[inline(always)]
pub fn with<R>(fd: i32, f: impl FnOnce(&ShimFile) -> R) -> Option<R> {
    let Some((s, _using)) = enter(fd) else { return with_slow(fd, f) };
    let p = entry(s);
    // SAFETY: see `entry`; the slot stays busy until `_using` drops.
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// The hot path of `ioctl`: [`with`], except that an iommufd this process hosts goes to
/// `iommufd` with its context, reached in one load from the slot.
#[inline(always)]
pub fn with_ioctl<R>(fd: i32, iommufd: impl FnOnce(&Arc<Context>) -> R, f: impl FnOnce(&ShimFile) -> R) -> Option<R> {
    let Some((s, _using)) = enter(fd) else { return with_slow(fd, f) };
    let ctx = s.iommufd.load(Ordering::Acquire);
    if !ctx.is_null() {
        // SAFETY: the context lives inside the entry the slot points at (`set_fast`), so
        // what `entry` says of that entry holds for it.
        return Some(iommufd(unsafe { &*ctx }));
    }
    let p = entry(s);
    // SAFETY: see `entry`; the slot stays busy until `_using` drops.
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// [`with`] through the locked table (another thread's slot, a nested use, a high fd).
#[cold]
#[inline(never)]
fn with_slow<R>(fd: i32, f: impl FnOnce(&ShimFile) -> R) -> Option<R> {
    lookup(fd).map(|e| f(&e))
}

fn set_fast(fd: i32, e: Option<&Arc<ShimFile>>) {
    if let Some(i) = usize::try_from(fd).ok().filter(|&i| i < FLAG_FDS) {
        let p = e.map_or(std::ptr::null_mut(), |a| Arc::as_ptr(a) as *mut ShimFile);
        let ctx = match e.map(|a| &**a) {
            Some(ShimFile::Local(c)) => match &c.file {
                EngineFile::Iommufd(ctx) => ctx as *const Arc<Context> as *mut Arc<Context>,
                _ => std::ptr::null_mut(),
            },
            _ => std::ptr::null_mut(),
        };
        FAST[i].ptr.store(p, Ordering::Release);
        FAST[i].iommufd.store(ctx, Ordering::Release);
        if e.is_some() {
            FAST_HIGH.fetch_max(i + 1, Ordering::Relaxed);
        }
    }
}

/// Waits until no thread uses the entries `gone` (removed from the slots of `fds`) through
/// the hot path; an entry this thread itself is using further up the stack is deferred
/// instead. Returns the entries that may be dropped now.
fn quiesce(fds: &[i32], gone: Vec<Arc<ShimFile>>) -> Vec<Arc<ShimFile>> {
    if gone.is_empty() || !asym::available() {
        return gone;
    }
    asym::heavy();
    let me = uiommu_sync::thread_id();
    let mut now = Vec::with_capacity(gone.len());
    for (&fd, g) in fds.iter().zip(gone) {
        let Some(s) = usize::try_from(fd).ok().and_then(|i| FAST.get(i)) else {
            now.push(g);
            continue;
        };
        if s.owner.load(Ordering::Relaxed) == me {
            if s.busy.load(Ordering::Relaxed) {
                defer(Some(fd), g);
                continue;
            }
        } else {
            while s.busy.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
        }
        now.push(g);
    }
    now
}

/// In a fork child: only this thread exists, so no other owner can be using a slot.
pub(crate) fn fork_fast() {
    let me = uiommu_sync::thread_id();
    for s in &FAST[..FAST_HIGH.load(Ordering::Relaxed).min(FLAG_FDS)] {
        if s.owner.load(Ordering::Relaxed) != me {
            s.busy.store(false, Ordering::Relaxed);
        }
    }
}

/// Puts `file` in the table and the hot-path slot under `fd`; returns the entry replaced.
fn put(fd: i32, file: Arc<ShimFile>) -> Option<Arc<ShimFile>> {
    let mut t = table();
    set_fast(fd, Some(&file));
    let old = t.insert(fd, file);
    if old.is_none() {
        set_engine_flag(fd, true);
    }
    old
}

/// Registers `fd` as standing for `file`. Returns the entry it replaced (a stale one whose
/// number was closed behind the shim's back); drop it *after* this returns.
#[must_use]
pub fn insert(fd: i32, file: Arc<ShimFile>) -> Option<Arc<ShimFile>> {
    debug_assert!(fd >= 0);
    let old = put(fd, file);
    quiesce(&[fd], old.into_iter().collect()).pop()
}

/// [`insert`] from inside an engine call (engine locks held): a replaced (stale) entry is
/// queued for [`drop_deferred`] instead of being waited for and returned.
pub fn insert_deferred(fd: i32, file: Arc<ShimFile>) {
    let old = put(fd, file);
    if let Some(old) = old {
        defer(Some(fd), old);
    }
}

/// Unregisters `fd`; returns its entry (drop it after this returns, outside any lock).
#[must_use]
pub fn remove(fd: i32) -> Option<Arc<ShimFile>> {
    if !maybe_engine(fd) {
        return None;
    }
    let old = {
        let mut t = table();
        let old = t.remove(&fd);
        if old.is_some() {
            set_fast(fd, None);
            set_engine_flag(fd, false);
        }
        old
    };
    quiesce(&[fd], old.into_iter().collect()).pop()
}

/// Unregisters every fd in `first..=last`; returns the entries.
#[must_use]
pub fn remove_range(first: u32, last: u32) -> Vec<Arc<ShimFile>> {
    let first = first.min(i32::MAX as u32) as i32;
    let last = last.min(i32::MAX as u32) as i32;
    if first > last {
        return Vec::new();
    }
    let out = {
        let mut t = table();
        let fds: Vec<i32> = t.range(first..=last).map(|(fd, _)| *fd).collect();
        let mut out = Vec::with_capacity(fds.len());
        let mut gone_fds = Vec::with_capacity(fds.len());
        for fd in fds {
            if let Some(e) = t.remove(&fd) {
                set_fast(fd, None);
                set_engine_flag(fd, false);
                out.push(e);
                gone_fds.push(fd);
            }
        }
        (gone_fds, out)
    };
    quiesce(&out.0, out.1)
}

/// In a fork child (table lock held by the fork guard): `fd`'s entry was replaced or
/// removed in place.
pub(crate) fn fork_set(fd: i32, e: Option<&Arc<ShimFile>>) {
    set_fast(fd, e);
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
/// Entries waiting to be dropped, with the fd whose hot-path slot may still be in use.
pub(crate) type Deferred = Vec<(Option<i32>, Arc<ShimFile>)>;
pub(crate) static DEFERRED: Mutex<Deferred> = Mutex::new(Vec::new());
pub(crate) static HAVE_DEFERRED: AtomicUsize = AtomicUsize::new(0);

/// Drops `f` later, from [`drop_deferred`]: for platform callbacks, which run with engine
/// locks held, where an engine file's tear-down must not run.
pub fn defer_drop(f: Arc<ShimFile>) {
    defer(None, f);
}

/// Queues `f` (which was removed from `fd`'s slot) for [`drop_deferred`], which drops it
/// only once nobody uses that slot.
fn defer(fd: Option<i32>, f: Arc<ShimFile>) {
    let mut g = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
    g.push((fd, f));
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
    // Entries removed from a hot-path slot: drop only those whose slot is idle now (never
    // wait here: the caller may be any thread), keep the others for a later call.
    if v.iter().any(|(fd, _)| fd.is_some()) && asym::available() {
        asym::heavy();
    }
    let (now, later): (Deferred, Deferred) =
        v.into_iter().partition(|(fd, _)| match fd.and_then(|fd| usize::try_from(fd).ok()).and_then(|i| FAST.get(i)) {
            Some(s) => !s.busy.load(Ordering::Acquire),
            None => true,
        });
    for (fd, f) in later {
        defer(fd, f);
    }
    crate::sys::keep_errno(|| crate::drop_quietly(now));
}

/// Number of registered engine fds (for tests and diagnostics).
pub fn len() -> usize {
    table().len()
}

/// The distinct hosts of remote entries, each with a private duplicate of one of its
/// descriptors (taken under the lock, so a concurrent close cannot redirect it), for
/// questions only a host can answer (accounting figures).
pub fn remote_hosts() -> Vec<(u32, crate::sys::Fd)> {
    let t = table();
    let mut out: Vec<(u32, crate::sys::Fd)> = Vec::new();
    for (&fd, f) in t.iter() {
        if let ShimFile::Remote { host, .. } = **f {
            if !out.iter().any(|(h, _)| *h == host) {
                if let Ok(d) = crate::sys::Fd::dup_private(fd) {
                    out.push((host, d));
                }
            }
        }
    }
    out
}

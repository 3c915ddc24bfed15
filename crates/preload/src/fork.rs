//! Processes: `fork()` handling, and recognising uiommu descriptors that arrive with
//! SCM_RIGHTS or survive an `exec`.
//!
//! `fork`: the prepare handler takes every shim lock (so no other thread can hold one
//! while the address space is copied); the child handler then turns the child's copy of
//! each hosted table entry into a remote entry whose host is the parent, abandons (leaks,
//! never drops) its copy of the engine and of everything holding engine objects, and closes
//! its copies of the parent's server ends, so the parent keeps serving the one shared file.
//! Children made by raw `clone`/`fork` system calls bypass the handlers and are not
//! supported. `vfork`/`posix_spawn` children run no shim code before `exec`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use uiommu_core::Machine;

use crate::fdtable::{self, ShimFile};
use crate::sys::{self, Fd};
use crate::{host, mapping, my_pid, proto};

type Table = BTreeMap<i32, Arc<ShimFile>>;

/// The locks the prepare handler took, in order.
struct Held {
    parent: u32,
    _serving: MutexGuard<'static, ()>,
    registry: MutexGuard<'static, Option<host::Registry>>,
    machine: MutexGuard<'static, Option<Arc<Machine>>>,
    table: MutexGuard<'static, Table>,
    deferred: MutexGuard<'static, fdtable::Deferred>,
    live: MutexGuard<'static, Vec<mapping::Live>>,
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    let held = Held {
        parent: my_pid(),
        _serving: host::serving(),
        registry: host::registry(),
        machine: crate::machine_lock(),
        table: fdtable::table(),
        deferred: fdtable::DEFERRED.lock().unwrap_or_else(|e| e.into_inner()),
        live: mapping::live(),
    };
    HELD.with(|h| *h.borrow_mut() = Some(held));
}

extern "C" fn parent() {
    let held = HELD.with(|h| h.borrow_mut().take());
    drop(held);
}

extern "C" fn child() {
    let Some(mut held) = HELD.with(|h| h.borrow_mut().take()) else { return };
    // uiommu_linux's own child handler (registered first) has refreshed the pid.
    if let Some(m) = held.machine.take() {
        std::mem::forget(m);
    }
    let parent = held.parent;
    let mut plain = Vec::new();
    for (fd, e) in held.table.iter_mut() {
        match &**e {
            ShimFile::Local(c) => {
                let kind = c.kind;
                let old = std::mem::replace(e, Arc::new(ShimFile::Remote { host: parent, kind }));
                std::mem::forget(old);
                fdtable::fork_set(*fd, Some(e));
            }
            // The child's copy of a dma-buf descriptor is just its memfd.
            ShimFile::LocalDmabuf(_) => plain.push(*fd),
            ShimFile::Remote { .. } => {}
        }
    }
    for fd in plain {
        if let Some(e) = held.table.remove(&fd) {
            std::mem::forget(e);
            fdtable::fork_set(fd, None);
            fdtable::set_engine_flag(fd, false);
        }
    }
    std::mem::forget(std::mem::take(&mut *held.deferred));
    fdtable::HAVE_DEFERRED.store(0, std::sync::atomic::Ordering::Release);
    mapping::fork_child(&mut held.live);
    fdtable::fork_fast();
    host::fork_child(&mut held.registry);
    drop(held);
}

/// Registers the fork handlers (after `uiommu_linux::init`, so its child handler runs
/// first).
pub(crate) fn register() {
    // SAFETY: the handlers are `extern "C" fn()` valid for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Under Yama ptrace_scope 1 a host may only read a client's memory if the client allows it.
fn allow_ptrace_by(host: u32) {
    static SCOPE: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    let scope = *SCOPE.get_or_init(|| {
        let mut b = Vec::new();
        match sys::read_file(c"/proc/sys/kernel/yama/ptrace_scope", &mut b) {
            Ok(()) => b.first().map_or(0, |c| c.wrapping_sub(b'0')),
            Err(_) => 0,
        }
    });
    if scope == 1 {
        // SAFETY: PR_SET_PTRACER takes a pid; no memory.
        unsafe { libc::prctl(libc::PR_SET_PTRACER, host as libc::c_ulong, 0, 0, 0) };
    }
}

/// If `fd` is a uiommu descriptor (a Unix socket whose peer is bound to a uiommu name),
/// enter it in the table. Costs an `fstat` (and a `getpeername` for sockets).
pub fn recognise(fd: i32) {
    let Ok(st) = sys::fstat(fd) else { return };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return;
    }
    let Some(name) = sys::abstract_peer_name(fd) else { return };
    let Some((h, nonce, id, kind)) = proto::parse_socket_name(&name) else { return };
    let entry = if host::is_ours(h, nonce) {
        match host::conn(id) {
            Some(c) => ShimFile::Local(c),
            None => return,
        }
    } else {
        allow_ptrace_by(h);
        ShimFile::Remote { host: h, kind }
    };
    let stale = fdtable::insert(fd, Arc::new(entry));
    crate::drop_quietly(stale);
}

/// Recognises the uiommu descriptors this process image started with (inherited across
/// `exec` without close-on-exec).
pub fn scan_inherited() {
    let Ok(dir) = sys::openat(libc::AT_FDCWD, c"/proc/self/fd", libc::O_RDONLY | libc::O_DIRECTORY, 0) else { return };
    let dir = Fd::plain(dir);
    let mut fds = Vec::new();
    let mut buf = [0u64; 512];
    loop {
        // SAFETY: buf is a writable, 8-aligned buffer of the stated size.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir.raw(), buf.as_mut_ptr(), std::mem::size_of_val(&buf)) };
        if n <= 0 {
            break;
        }
        // SAFETY: the kernel wrote `n` bytes of linux_dirent64 records into buf.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        while at + 19 <= bytes.len() {
            let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            if reclen == 0 || at + reclen > bytes.len() {
                break;
            }
            let name = &bytes[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            if let Some(fd) = std::str::from_utf8(name).ok().and_then(|s| s.parse::<i32>().ok()) {
                if fd != dir.raw() {
                    fds.push(fd);
                }
            }
            at += reclen;
        }
    }
    drop(dir);
    for fd in fds {
        recognise(fd);
    }
}

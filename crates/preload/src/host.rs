//! Hosting engine files: the process that opened `/dev/iommu` runs the engine and serves
//! every other process holding one of its descriptors (ARCHITECTURE.md, "Processes").
//!
//! Each engine file the host hands out (iommufd, access, fault, vEVENTQ) is a *connection*
//! ([`Conn`]): a SOCK_SEQPACKET socket pair whose client end is the descriptor the program
//! sees and whose server end the host keeps (a private descriptor, SO_PASSCRED on, bound to
//! the abstract name `uiommu-HOSTPID-NONCE-ID-KIND`, so that any process can recognise a
//! uiommu descriptor with `getpeername`; the name is never listened on, so nobody can
//! connect to it). The host's own calls on the client end never touch the socket: its fd
//! table maps the number straight to the engine file.
//!
//! A **service thread** (started with the first connection; all signals blocked) waits on
//! the server ends with epoll and answers requests from other processes ([`crate::proto`]):
//! it runs the engine with a [`Caller`] for the pid the kernel attached to the message, so
//! user pointers are read and written in that process with `process_vm_readv`/`writev`.
//! When a server end reports hang-up, every client end is closed everywhere (no process, no
//! message in flight holds one): the connection, and with it the engine file, is dropped.
//! The host's own `close()` checks the same condition synchronously ([`released`]), so when
//! nobody else holds the file, tear-down has finished before `close()` returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use uiommu_core::mock::DmaBuf;
use uiommu_core::{Caller, EngineFile, Errno, MmapRegion};

use crate::fdtable::{self, FileKind, ShimFile};
use crate::proto::{self, kind, op, Ans, Msg, Req};
use crate::sys::{self, Fd};
use crate::{guard, my_pid};

/// One engine file served over a socket pair.
#[derive(Debug)]
pub struct Conn {
    /// Connection id (unique in this host).
    pub id: u64,
    /// What the file is.
    pub kind: FileKind,
    /// The engine file.
    pub file: EngineFile,
    /// The host's end (private descriptor).
    server: Fd,
    /// `(st_dev, st_ino)` of the client end (to recognise it when a client names it).
    ident: (u64, u64),
    /// Live mmaps of other processes, by hold id.
    holds: Mutex<HashMap<u64, MmapRegion>>,
}

#[derive(Default)]
pub(crate) struct Registry {
    nonce: u64,
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
    by_ident: HashMap<(u64, u64), u64>,
    /// Dma-bufs of this host by memfd identity: the host's own (weak; its table holds them).
    local_dmabufs: HashMap<(u64, u64), Weak<DmaBuf>>,
    /// Dma-bufs handed to other processes: kept for the life of the host (a memfd in another
    /// process gives no sign of being closed).
    remote_dmabufs: HashMap<(u64, u64), Arc<DmaBuf>>,
    epoll: Option<Fd>,
    next_hold: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Held by the service thread while it serves one event. [`released`] waits for it when the
/// service thread saw the hang-up first, so a host `close()` never returns while the service
/// thread still holds the connection.
static SERVING: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set on the service thread (which must never wait for `SERVING` itself).
    static IN_SERVICE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn serving() -> MutexGuard<'static, ()> {
    SERVING.lock().unwrap_or_else(|e| e.into_inner())
}

/// This host's nonce (random per process image and per fork child).
fn nonce(r: &mut Registry) -> u64 {
    if r.nonce == 0 {
        r.nonce = sys::random_u64() | 1;
    }
    r.nonce
}

/// Whether a parsed socket name is one of ours (this pid, this image).
pub fn is_ours(host: u32, n: u64) -> bool {
    host == my_pid() && registry().as_ref().is_some_and(|r| r.nonce == n)
}

/// The connection with id `id`, if it is still registered.
pub fn conn(id: u64) -> Option<Arc<Conn>> {
    registry().as_ref()?.conns.get(&id).cloned()
}

/// Starts the service thread if needed; returns the epoll descriptor.
fn ensure_started(r: &mut Registry) -> Result<i32, Errno> {
    if let Some(ep) = &r.epoll {
        return Ok(ep.raw());
    }
    let ep = sys::epoll_create().map_err(Errno)?;
    let ep = Fd::private(ep).map_err(Errno)?;
    let raw = ep.raw();
    // The thread must not take the program's signals: block them all while spawning (the
    // new thread inherits the mask), then restore ours.
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: valid 8-byte kernel signal sets.
    unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all as *const u64, &mut old as *mut u64, 8usize)
    };
    let spawned = std::thread::Builder::new().name("uiommu-host".into()).spawn(move || service(raw));
    // SAFETY: restores the saved mask.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    spawned.map_err(|_| Errno::ENOMEM)?;
    r.epoll = Some(ep);
    Ok(raw)
}

/// Creates the connection for `file`: returns the client end (close-on-exec iff `cloexec`;
/// not private: it goes to the program, here or in another process) and the connection.
pub fn new_conn(file: EngineFile, cloexec: bool) -> Result<(i32, Arc<Conn>), Errno> {
    let kind = FileKind::of(&file);
    let [client, server] = sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC).map_err(Errno)?;
    let client = Fd::plain(client);
    let server = Fd::private(server).map_err(Errno)?;
    if !cloexec {
        sys::fcntl(client.raw(), libc::F_SETFD, 0).map_err(Errno)?;
    }
    sys::setsockopt_int(server.raw(), libc::SO_PASSCRED, 1).map_err(Errno)?;
    let st = sys::fstat(client.raw()).map_err(Errno)?;
    let ident = (st.st_dev, st.st_ino);
    let mut g = registry();
    let r = g.get_or_insert_with(Registry::default);
    let ep = ensure_started(r)?;
    let n = nonce(r);
    r.next += 1;
    let id = r.next;
    sys::bind_abstract(server.raw(), &proto::socket_name(my_pid(), n, id, kind)).map_err(Errno)?;
    sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, server.raw(), libc::EPOLLIN as u32, id).map_err(Errno)?;
    let conn = Arc::new(Conn { id, kind, file, server, ident, holds: Mutex::default() });
    r.conns.insert(id, conn.clone());
    r.by_ident.insert(ident, id);
    Ok((client.into_raw(), conn))
}

/// Removes a connection from the registry (and epoll); returns the registry's reference.
fn unregister(id: u64) -> Option<Arc<Conn>> {
    let mut g = registry();
    let r = g.as_mut()?;
    let c = r.conns.remove(&id)?;
    r.by_ident.remove(&c.ident);
    if let Some(ep) = &r.epoll {
        let _ = sys::epoll_ctl(ep.raw(), libc::EPOLL_CTL_DEL, c.server.raw(), 0, 0);
    }
    Some(c)
}

/// Whether no process holds the client end any more (and no message in flight carries it).
fn hung_up(c: &Conn) -> bool {
    sys::poll1(c.server.raw(), libc::POLLIN, 0).is_ok_and(|ev| ev & libc::POLLHUP != 0)
}

/// The host's last table entry for `c` went away (its `ShimFile` is being dropped): when no
/// other process holds the client end either, drop the connection now, so that tear-down
/// completes before the program's `close()` returns. The caller's own reference is the last
/// one then (unless a request for it is being served, which `SERVING` waits out).
pub fn released(c: &Arc<Conn>) {
    if !hung_up(c) {
        return;
    }
    if let Some(reg) = unregister(c.id) {
        crate::drop_quietly(reg);
    }
    // The service thread may have seen the hang-up too and be holding its own reference
    // (taken from the registry before we unregistered, or unregistering it itself): wait
    // until it has let go, so that the caller's reference is the last one.
    if !IN_SERVICE.with(|f| f.get()) {
        drop(serving());
    }
}

/// Registers a dma-buf's memfd so that its descriptor in any process can be recognised.
fn register_dmabuf(buf: &Arc<DmaBuf>, remote: bool) -> Result<(), Errno> {
    let mem = crate::platform::memory_file(buf.memory()).ok_or(Errno::ENODEV)?;
    let st = sys::fstat(mem.raw_fd()).map_err(Errno)?;
    let mut g = registry();
    let r = g.get_or_insert_with(Registry::default);
    r.local_dmabufs.retain(|_, w| w.strong_count() > 0);
    let key = (st.st_dev, st.st_ino);
    r.local_dmabufs.insert(key, Arc::downgrade(buf));
    if remote {
        r.remote_dmabufs.insert(key, buf.clone());
    }
    Ok(())
}

/// The engine file a client-side descriptor stands for, by the identity of its file.
pub fn engine_by_ident(ident: (u64, u64)) -> Option<EngineFile> {
    let g = registry();
    let r = g.as_ref()?;
    if let Some(id) = r.by_ident.get(&ident) {
        return r.conns.get(id).map(|c| c.file.clone());
    }
    r.local_dmabufs.get(&ident).and_then(Weak::upgrade).map(EngineFile::DmaBuf)
}

/// A descriptor for `file` in this process's table (the platform's `install_fd` for the
/// host itself).
pub fn install_local(file: EngineFile, flags: i32) -> Result<i32, Errno> {
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let (fd, entry) = match &file {
        EngineFile::DmaBuf(buf) => {
            // A dma-buf is stood for by a duplicate of its memfd (so fstat/size/mmap look
            // right).
            register_dmabuf(buf, false)?;
            let mem = crate::platform::memory_file(buf.memory()).ok_or(Errno::ENODEV)?;
            let cmd = if cloexec { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
            let fd = sys::fcntl(mem.raw_fd(), cmd, 0).map_err(Errno)?;
            (fd, ShimFile::LocalDmabuf(file))
        }
        _ => {
            let (fd, conn) = new_conn(file, cloexec)?;
            (fd, ShimFile::Local(conn))
        }
    };
    // A stale entry (its number was closed behind the shim's back) must not be dropped
    // here: engine locks are held, and its tear-down could need them.
    fdtable::insert_deferred(fd, Arc::new(entry));
    Ok(fd)
}

/// Takes back a descriptor [`install_local`] made (the platform's `uninstall_fd`).
pub fn uninstall_local(fd: i32) -> Option<EngineFile> {
    let entry = fdtable::remove(fd)?;
    let _ = sys::close(fd);
    take_file(entry)
}

/// The engine file out of a table entry nobody else references.
fn take_file(entry: Arc<ShimFile>) -> Option<EngineFile> {
    let conn = match &*entry {
        ShimFile::Local(c) => c.clone(),
        ShimFile::LocalDmabuf(f) => {
            let f = f.clone();
            drop(entry);
            return Some(f);
        }
        ShimFile::Remote { .. } => return None,
    };
    // Dropping the entry unregisters the connection (its client end is closed everywhere).
    drop(entry);
    let _ = unregister(conn.id);
    Arc::try_unwrap(conn).ok().map(|c| c.file)
}

// ---------------------------------------------------------------------------------------
// Requests from other processes
// ---------------------------------------------------------------------------------------

/// A descriptor installed in the client during the current request: its number, and its
/// connection or (dma-buf) memfd identity.
type Installed = (i32, Option<Arc<Conn>>, Option<(u64, u64)>);

/// The request being served on this (the service) thread.
struct Current {
    pid: u32,
    reply: i32,
    /// Descriptors installed in the client during this request.
    installed: Vec<Installed>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

fn recv_ans(reply: i32) -> Result<Ans, Errno> {
    let mut buf = [0u8; Ans::LEN];
    let r = sys::recv_with_fds(reply, &mut buf, true, false).map_err(|_| Errno::EIO)?;
    for fd in r.fds {
        let _ = sys::close(fd);
    }
    Ans::decode(&buf[..r.len]).ok_or(Errno::EIO)
}

/// The platform's `install_fd` for another process: the new descriptor travels to the
/// client over the request's reply channel and the client answers with its number.
pub fn install_remote(pid: u32, file: EngineFile, flags: i32) -> Result<i32, Errno> {
    let reply = CURRENT.with(|c| c.borrow().as_ref().filter(|c| c.pid == pid).map(|c| c.reply)).ok_or(Errno::EBADF)?;
    let kind = FileKind::of(&file);
    let (send, conn, ident) = match &file {
        EngineFile::DmaBuf(buf) => {
            register_dmabuf(buf, true)?;
            let mem = crate::platform::memory_file(buf.memory()).ok_or(Errno::ENODEV)?;
            let st = sys::fstat(mem.raw_fd()).map_err(Errno)?;
            let fd = sys::fcntl(mem.raw_fd(), libc::F_DUPFD_CLOEXEC, 0).map_err(Errno)?;
            (Fd::plain(fd), None, Some((st.st_dev, st.st_ino)))
        }
        _ => {
            let (fd, conn) = new_conn(file, true)?;
            (Fd::plain(fd), Some(conn), None)
        }
    };
    let msg = Msg { kind: kind::INSTALL, a: flags as u32 as u64, b: kind.code() as u64, ..Default::default() };
    let sent = sys::send_with_fds(reply, &msg.encode(), &[send.raw()]);
    drop(send);
    let ans = sent.map_err(|_| Errno::EIO).and_then(|_| recv_ans(reply));
    match ans {
        Ok(Ans { fd, err: 0 }) if fd >= 0 => {
            CURRENT.with(|c| {
                if let Some(c) = c.borrow_mut().as_mut() {
                    c.installed.push((fd, conn, ident));
                }
            });
            Ok(fd)
        }
        Ok(Ans { err, .. }) => {
            drop_conn_later(conn);
            Err(if err > 0 { Errno(err) } else { Errno::EIO })
        }
        Err(e) => {
            drop_conn_later(conn);
            Err(e)
        }
    }
}

/// A connection whose client end never reached the client: drop it outside engine locks.
fn drop_conn_later(conn: Option<Arc<Conn>>) {
    if let Some(c) = conn {
        let reg = unregister(c.id);
        drop(reg);
        fdtable::defer_drop(Arc::new(ShimFile::Local(c)));
    }
}

/// The platform's `uninstall_fd` for another process.
pub fn uninstall_remote(pid: u32, fd: i32) -> Option<EngineFile> {
    let (reply, conn, ident) = CURRENT.with(|c| {
        let mut b = c.borrow_mut();
        let cur = b.as_mut().filter(|c| c.pid == pid)?;
        let pos = cur.installed.iter().position(|(f, _, _)| *f == fd)?;
        let (_, conn, ident) = cur.installed.remove(pos);
        Some((cur.reply, conn, ident))
    })?;
    let msg = Msg { kind: kind::UNINSTALL, a: fd as u32 as u64, ..Default::default() };
    sys::send_with_fds(reply, &msg.encode(), &[]).ok()?;
    recv_ans(reply).ok()?;
    if let Some(c) = conn {
        let _ = unregister(c.id);
        return Arc::try_unwrap(c).ok().map(|c| c.file);
    }
    let ident = ident?;
    let mut g = registry();
    let buf = g.as_mut()?.remote_dmabufs.remove(&ident)?;
    Some(EngineFile::DmaBuf(buf))
}

/// What to send back for one request.
enum Outcome {
    Reply(Msg, Option<Fd>),
    /// CLOSE: the "go" was sent and the client has closed; answer once torn down.
    Closed,
}

fn dispatch(c: &Arc<Conn>, caller: &Caller, req: &Req, reply: i32) -> Result<Outcome, Errno> {
    let plain = |r: Result<i64, Errno>| Ok(Outcome::Reply(Msg::reply(r), None));
    match req.op {
        op::IOCTL => match &c.file {
            EngineFile::Iommufd(ctx) => {
                plain(ctx.ioctl_via(&crate::platform::PLATFORM, caller, req.a as u32, req.b).map(i64::from))
            }
            _ => plain(Err(Errno::ENOTTY)),
        },
        op::READ => plain(c.file.read(caller, req.a, req.b as usize).map(|n| n as i64)),
        op::WRITE => plain(c.file.write(caller, req.a, req.b as usize).map(|n| n as i64)),
        op::POLL => plain(Ok(c.file.poll() as i64)),
        op::STATUS => {
            let (pin, lck) = crate::machine_if_any().map(|m| m.pinned_pages_of(req.a as u32)).unwrap_or((0, 0));
            Ok(Outcome::Reply(Msg { kind: kind::REPLY, a: pin, b: lck, ..Default::default() }, None))
        }
        op::MMAP => {
            let EngineFile::Iommufd(ctx) = &c.file else { return plain(Err(Errno::ENODEV)) };
            let region = ctx.mmap(req.a, req.b as u32 as i32, (req.b >> 32) as u32 as i32, req.c)?;
            let mem = crate::platform::memory_file(&region.memory).ok_or(Errno::ENODEV)?;
            let fd = sys::fcntl(mem.raw_fd(), libc::F_DUPFD_CLOEXEC, 0).map_err(Errno)?;
            let id = {
                let mut g = registry();
                let r = g.get_or_insert_with(Registry::default);
                r.next_hold += 1;
                r.next_hold
            };
            c.holds.lock().unwrap_or_else(|e| e.into_inner()).insert(id, region);
            Ok(Outcome::Reply(Msg { kind: kind::REPLY, a: id, ..Default::default() }, Some(Fd::plain(fd))))
        }
        op::MUNMAP => {
            let gone = c.holds.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.a);
            crate::drop_quietly(gone);
            plain(Ok(0))
        }
        op::CLOSE => {
            sys::send_with_fds(reply, &Msg::reply(Ok(0)).encode(), &[]).map_err(|_| Errno::EIO)?;
            // Wait for "closed" (or the client's end of the channel going away).
            let _ = recv_ans(reply);
            Ok(Outcome::Closed)
        }
        _ => plain(Err(Errno::EINVAL)),
    }
}

/// Serves one message (or the hang-up) of connection `c`.
fn serve(c: Arc<Conn>, events: u32) {
    let mut buf = [0u8; 2 * Req::LEN];
    let r = match sys::recv_with_fds(c.server.raw(), &mut buf, true, true) {
        Ok(r) if r.len > 0 => r,
        Ok(_) => {
            // EOF: every client end is closed.
            let reg = unregister(c.id);
            drop(c);
            crate::drop_quietly(reg);
            return;
        }
        Err(libc::EAGAIN) | Err(libc::EINTR) => {
            if events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 && hung_up(&c) {
                let reg = unregister(c.id);
                drop(c);
                crate::drop_quietly(reg);
            }
            return;
        }
        Err(_) => {
            let reg = unregister(c.id);
            drop(c);
            crate::drop_quietly(reg);
            return;
        }
    };
    let mut fds = r.fds.into_iter().map(Fd::plain);
    let (Some(reply), Some(pid), Some(req)) = (fds.next(), r.pid, Req::decode(&buf[..r.len])) else { return };
    drop(fds);
    let caller = Caller::new(pid, req.creds());
    CURRENT.with(|cur| *cur.borrow_mut() = Some(Current { pid, reply: reply.raw(), installed: Vec::new() }));
    let out = guard(|| dispatch(&c, &caller, &req, reply.raw()));
    CURRENT.with(|cur| *cur.borrow_mut() = None);
    match out {
        Ok(Outcome::Reply(msg, fd)) => {
            let fds: Vec<i32> = fd.iter().map(Fd::raw).collect();
            let _ = sys::send_with_fds(reply.raw(), &msg.encode(), &fds);
        }
        Ok(Outcome::Closed) => {
            if hung_up(&c) {
                let reg = unregister(c.id);
                drop(c);
                crate::drop_quietly(reg);
            } else {
                drop(c);
            }
            let _ = sys::send_with_fds(reply.raw(), &Msg::reply(Ok(0)).encode(), &[]);
        }
        Err(e) => {
            let _ = sys::send_with_fds(reply.raw(), &Msg::reply(Err(e)).encode(), &[]);
        }
    }
}

/// The service thread.
fn service(ep: i32) {
    IN_SERVICE.with(|f| f.set(true));
    // SAFETY: an all-zero epoll_event is a valid value.
    let mut evs = [unsafe { std::mem::zeroed::<libc::epoll_event>() }; 16];
    loop {
        let n = match sys::epoll_wait(ep, &mut evs, -1) {
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            Err(_) => return,
        };
        for ev in &evs[..n] {
            let (id, events) = (ev.u64, ev.events);
            {
                let _s = serving();
                if let Some(c) = conn(id) {
                    serve(c, events);
                }
            }
            fdtable::drop_deferred();
        }
    }
}

/// After `fork()` in the child (registry lock held by the caller's fork guard): the parent's
/// connections belong to the parent. Close the child's copies of their server ends and of
/// the epoll descriptor (so hang-up detection keeps working for the parent) without
/// dropping anything (the child's copy of the engine is abandoned), and start afresh.
pub(crate) fn fork_child(r: &mut Option<Registry>) {
    if let Some(old) = r.take() {
        for c in old.conns.values() {
            fdtable::mark_private(c.server.raw(), false);
            let _ = sys::close(c.server.raw());
        }
        if let Some(ep) = &old.epoll {
            fdtable::mark_private(ep.raw(), false);
            let _ = sys::close(ep.raw());
        }
        std::mem::forget(old);
    }
}

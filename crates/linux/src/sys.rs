//! Thin wrappers over raw Linux system calls.
//!
//! uiommu's own I/O never goes through the libc functions the shim interposes (`open`,
//! `close`, `read`, `sigaction`, ...): it uses `syscall(2)` directly, so its internal work
//! neither recurses into the interposers nor shows up to other preloaded libraries. Every
//! wrapper returns the positive errno on failure and leaves the caller to decide whether to
//! publish it.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// A positive errno value from a failed system call.
pub type SysResult<T> = Result<T, i32>;

/// `TMPFS_MAGIC` from `<linux/magic.h>` (shmem, memfd, /dev/shm, MAP_SHARED anonymous).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `HUGETLBFS_MAGIC` from `<linux/magic.h>`.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to the thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Set the calling thread's errno.
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location always returns a valid pointer to the thread's errno.
    unsafe { *libc::__errno_location() = e }
}

/// Runs `f` and restores errno afterwards (for bookkeeping done after a passed-through call
/// whose errno the program will look at).
pub fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let saved = errno();
    let r = f();
    set_errno(saved);
    r
}

fn check(r: libc::c_long) -> SysResult<i64> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `openat(dirfd, path, flags | O_CLOEXEC, mode)` (the shim's own opens are never inherited).
pub fn openat(dirfd: i32, path: &CStr, flags: i32, mode: u32) -> SysResult<i32> {
    // SAFETY: path is a valid NUL-terminated string for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_openat, dirfd, path.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    check(r).map(|v| v as i32)
}

/// `close(fd)` without going through the interposed `close`.
pub fn close(fd: i32) -> SysResult<()> {
    // SAFETY: closing a descriptor has no memory-safety preconditions.
    check(unsafe { libc::syscall(libc::SYS_close, fd) }).map(drop)
}

/// `read(fd, buf)` into a Rust buffer.
pub fn read(fd: i32, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    check(r).map(|v| v as usize)
}

/// `pread(fd, buf, off)`.
pub fn pread(fd: i32, buf: &mut [u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), off as i64) };
    check(r).map(|v| v as usize)
}

/// `pwrite(fd, buf, off)`.
pub fn pwrite(fd: i32, buf: &[u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_pwrite64, fd, buf.as_ptr(), buf.len(), off as i64) };
    check(r).map(|v| v as usize)
}

/// `fcntl(fd, cmd, arg)` for integer-argument commands.
pub fn fcntl(fd: i32, cmd: i32, arg: libc::c_long) -> SysResult<i32> {
    // SAFETY: only integer-argument commands are passed here (no pointer is dereferenced).
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) }).map(|v| v as i32)
}

/// `fstat(fd)`.
pub fn fstat(fd: i32) -> SysResult<libc::stat> {
    // SAFETY: an all-zero `struct stat` is a valid value of the plain-data type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable struct stat.
    check(unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) })?;
    Ok(st)
}

/// `fstatfs(fd).f_type`.
pub fn fstatfs_type(fd: i32) -> SysResult<i64> {
    // SAFETY: an all-zero `struct statfs` is a valid value of the plain-data type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable struct statfs.
    check(unsafe { libc::syscall(libc::SYS_fstatfs, fd, &mut st as *mut libc::statfs) })?;
    Ok(st.f_type as i64)
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: i32, len: u64) -> SysResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_ftruncate, fd, len as i64) }).map(drop)
}

/// `memfd_create(name, flags)`.
pub fn memfd_create(name: &CStr, flags: u32) -> SysResult<i32> {
    // SAFETY: name is a valid NUL-terminated string.
    check(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) }).map(|v| v as i32)
}

/// `eventfd2(initval, flags)`.
pub fn eventfd(initval: u32, flags: i32) -> SysResult<i32> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_eventfd2, initval, flags) }).map(|v| v as i32)
}

/// `socketpair(domain, type, 0)`.
pub fn socketpair(domain: i32, ty: i32) -> SysResult<[i32; 2]> {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a valid int[2].
    check(unsafe { libc::syscall(libc::SYS_socketpair, domain, ty, 0, fds.as_mut_ptr()) })?;
    Ok(fds)
}

/// `getpid()` (the thread-group id), as the kernel answers it now (a system call; see
/// [`crate::my_pid`] for the cached value).
pub fn getpid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_getpid) as u32 }
}

/// `process_vm_readv` of one contiguous range; a short transfer is EFAULT.
pub fn vm_read(pid: u32, addr: u64, buf: &mut [u8]) -> SysResult<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: the local iovec covers exactly `buf`; the remote one is only accessed by the
    // kernel, which validates it against the target's address space.
    let r = unsafe {
        libc::syscall(libc::SYS_process_vm_readv, pid as libc::pid_t, &local, 1usize, &remote, 1usize, 0usize)
    };
    match check(r)? {
        n if n as usize == buf.len() => Ok(()),
        _ => Err(libc::EFAULT),
    }
}

/// `process_vm_writev` of one contiguous range; a short transfer is EFAULT.
pub fn vm_write(pid: u32, addr: u64, buf: &[u8]) -> SysResult<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: the local iovec covers exactly `buf` and is only read by the kernel; the
    // remote one is validated by the kernel against the target's address space.
    let r = unsafe {
        libc::syscall(libc::SYS_process_vm_writev, pid as libc::pid_t, &local, 1usize, &remote, 1usize, 0usize)
    };
    match check(r)? {
        n if n as usize == buf.len() => Ok(()),
        _ => Err(libc::EFAULT),
    }
}

/// Reads a whole (proc) file into `out` (cleared first).
pub fn read_file(path: &CStr, out: &mut Vec<u8>) -> SysResult<()> {
    out.clear();
    let fd = openat(libc::AT_FDCWD, path, libc::O_RDONLY, 0)?;
    let fd = Fd::plain(fd);
    if out.capacity() < 16384 {
        out.reserve(16384);
    }
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity());
        }
        let len = out.len();
        let spare = out.capacity() - len;
        out.resize(len + spare, 0);
        match read(fd.raw(), &mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                return Ok(());
            }
            Ok(n) => out.truncate(len + n),
            Err(libc::EINTR) => out.truncate(len),
            Err(e) => {
                out.truncate(len);
                return Err(e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Private descriptors
// ---------------------------------------------------------------------------------------

/// Called with `(fd, true)` when a private descriptor is created and `(fd, false)` before it
/// is closed (the shim marks them in its descriptor table). A `fn(i32, bool)` stored as usize.
static PRIVATE_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Registers the function that learns about private descriptors (see [`Fd`]).
pub fn set_private_hook(hook: fn(i32, bool)) {
    PRIVATE_HOOK.store(hook as *const () as usize, Ordering::Release);
}

fn mark_private(fd: i32, on: bool) {
    let h = PRIVATE_HOOK.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: the only values stored are 0 and `fn(i32, bool)` pointers (set_private_hook).
        let f = unsafe { std::mem::transmute::<usize, fn(i32, bool)>(h) };
        f(fd, on);
    }
}

/// Lowest number for the shim's private descriptors (0 = not computed yet).
static PRIVATE_MIN: AtomicI32 = AtomicI32::new(0);

fn private_min() -> i32 {
    let v = PRIVATE_MIN.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    // SAFETY: an all-zero rlimit is a valid value; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: rl is a valid, writable struct rlimit.
    let soft = if unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_NOFILE, &mut rl as *mut libc::rlimit) } == 0
    {
        rl.rlim_cur
    } else {
        1024
    };
    let v = if soft >= 2048 { 1000 } else { ((soft / 2) as i32).max(3) };
    PRIVATE_MIN.store(v, Ordering::Relaxed);
    v
}

/// An owned descriptor, closed (with the raw syscall) on drop.
///
/// A *private* `Fd` is one of uiommu's own descriptors, kept at a high number (≥ 1000 when
/// the fd limit allows) and reported to the private hook ([`set_private_hook`]; the shim marks
/// it in its descriptor table so that the program's `close()` and `close_range()` cannot
/// close it from under uiommu).
#[derive(Debug)]
pub struct Fd {
    raw: i32,
    private: bool,
}

impl Fd {
    /// Takes ownership of `raw` as is (not marked private).
    pub fn plain(raw: i32) -> Fd {
        Fd { raw, private: false }
    }

    /// Moves `raw` to a high close-on-exec descriptor marked private; `raw` is closed.
    pub fn private(raw: i32) -> SysResult<Fd> {
        let r = Fd::dup_private(raw);
        let _ = close(raw);
        r
    }

    /// A private close-on-exec duplicate of `raw` (which stays open).
    pub fn dup_private(raw: i32) -> SysResult<Fd> {
        let new = match fcntl(raw, libc::F_DUPFD_CLOEXEC, private_min() as libc::c_long) {
            Ok(fd) => fd,
            // Limit lower than our minimum (changed since we computed it): take any number.
            Err(libc::EINVAL) | Err(libc::EMFILE) => fcntl(raw, libc::F_DUPFD_CLOEXEC, 3)?,
            Err(e) => return Err(e),
        };
        mark_private(new, true);
        Ok(Fd { raw: new, private: true })
    }

    /// The descriptor number.
    pub fn raw(&self) -> i32 {
        self.raw
    }

    /// Gives up ownership without closing (the number stays open and marked as it was).
    pub fn into_raw(self) -> i32 {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        keep_errno(|| {
            if self.private {
                mark_private(self.raw, false);
            }
            let _ = close(self.raw);
        });
    }
}

// ---------------------------------------------------------------------------------------
// More calls (sockets, pidfds, signals)
// ---------------------------------------------------------------------------------------

/// `lseek(fd, off, whence)`.
pub fn lseek(fd: i32, off: i64, whence: i32) -> SysResult<u64> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_lseek, fd, off, whence) }).map(|v| v as u64)
}

/// `write(fd, buf)` of a Rust buffer (one call; may be short).
pub fn write(fd: i32, buf: &[u8]) -> SysResult<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) };
    check(r).map(|v| v as usize)
}

/// Writes all of `buf` (retrying short writes and EINTR).
pub fn write_all(fd: i32, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `stat(path)` (following symlinks, e.g. `/proc/PID/fd/N`).
pub fn stat(path: &CStr) -> SysResult<libc::stat> {
    // SAFETY: an all-zero `struct stat` is a valid value of the plain-data type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated; st is a valid, writable struct stat.
    check(unsafe {
        libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, path.as_ptr(), &mut st as *mut libc::stat, 0)
    })?;
    Ok(st)
}

/// `poll` of one descriptor: the returned events (0 on timeout).
pub fn poll1(fd: i32, events: i16, timeout_ms: i32) -> SysResult<i16> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    let ts = libc::timespec { tv_sec: (timeout_ms / 1000) as _, tv_nsec: ((timeout_ms % 1000) * 1_000_000) as _ };
    let tsp = if timeout_ms < 0 { std::ptr::null() } else { &ts as *const libc::timespec };
    // SAFETY: p is one valid pollfd; tsp is null or a valid timespec; no signal mask.
    let r = unsafe {
        libc::syscall(libc::SYS_ppoll, &mut p as *mut libc::pollfd, 1usize, tsp, std::ptr::null::<u8>(), 8usize)
    };
    check(r)?;
    Ok(p.revents)
}

/// `getsockopt(fd, SOL_SOCKET, opt)` of an int option.
pub fn getsockopt_int(fd: i32, opt: i32) -> SysResult<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid, writable and describe an int.
    check(unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int,
            &mut len as *mut libc::socklen_t,
        )
    })?;
    Ok(v)
}

/// `setsockopt(fd, SOL_SOCKET, opt, int)`.
pub fn setsockopt_int(fd: i32, opt: i32, v: i32) -> SysResult<()> {
    // SAFETY: passes a valid int of the stated size.
    check(unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd,
            libc::SOL_SOCKET,
            opt,
            &v as *const i32,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The abstract-namespace name of a Unix socket's peer (`getpeername`), without the leading
/// NUL; `None` if it is not a Unix socket with an abstract peer name.
pub fn abstract_peer_name(fd: i32) -> Option<Vec<u8>> {
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: a and len describe a writable sockaddr_un.
    let r = unsafe {
        libc::syscall(libc::SYS_getpeername, fd, &mut a as *mut libc::sockaddr_un, &mut len as *mut libc::socklen_t)
    };
    if r < 0 || a.sun_family as i32 != libc::AF_UNIX {
        return None;
    }
    let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let n = (len as usize).checked_sub(base)?.min(a.sun_path.len());
    if n < 2 || a.sun_path[0] != 0 {
        return None;
    }
    Some(a.sun_path[1..n].iter().map(|&c| c as u8).collect())
}

/// Binds a Unix socket to the abstract name `name` (no leading NUL).
pub fn bind_abstract(fd: i32, name: &[u8]) -> SysResult<()> {
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() + 1 > a.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, &c) in name.iter().enumerate() {
        a.sun_path[i + 1] = c as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    // SAFETY: a is a valid sockaddr_un of at least `len` bytes.
    check(unsafe { libc::syscall(libc::SYS_bind, fd, &a as *const libc::sockaddr_un, len as libc::socklen_t) })
        .map(drop)
}

/// Sends one message: `data`, and `fds` as SCM_RIGHTS when not empty (MSG_NOSIGNAL).
pub fn send_with_fds(fd: i32, data: &[u8], fds: &[i32]) -> SysResult<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cbuf = [0u64; 16];
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        if space > std::mem::size_of_val(&cbuf) {
            return Err(libc::EINVAL);
        }
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` writable, aligned bytes, enough for one
        // header carrying `bytes` of data (checked above); CMSG_* stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
        }
    }
    loop {
        // SAFETY: msg describes valid buffers (data, and the control buffer above).
        let r = unsafe { libc::syscall(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL) };
        match check(r) {
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => {
                // A non-blocking descriptor with a full queue: wait for room.
                let _ = poll1(fd, libc::POLLOUT, -1);
                continue;
            }
            other => return other.map(|n| n as usize),
        }
    }
}

/// What [`recv_with_fds`] received.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes of the message.
    pub len: usize,
    /// Descriptors that came with it (SCM_RIGHTS), owned by the caller.
    pub fds: Vec<i32>,
    /// The sender's pid (SCM_CREDENTIALS, when SO_PASSCRED is on).
    pub pid: Option<u32>,
    /// The message was cut (MSG_TRUNC) or its control data was (MSG_CTRUNC).
    pub truncated: bool,
}

/// Receives one message into `buf` (descriptors close-on-exec when `cloexec`).
pub fn recv_with_fds(fd: i32, buf: &mut [u8], cloexec: bool, dontwait: bool) -> SysResult<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; 32];
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let flags = if cloexec { libc::MSG_CMSG_CLOEXEC } else { 0 } | if dontwait { libc::MSG_DONTWAIT } else { 0 };
    let n = loop {
        // SAFETY: msg describes buf and cbuf, both writable.
        let r = unsafe { libc::syscall(libc::SYS_recvmsg, fd, &mut msg as *mut libc::msghdr, flags) };
        match check(r) {
            Err(libc::EINTR) => continue,
            other => break other? as usize,
        }
    };
    let mut out =
        Received { len: n, truncated: msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0, ..Default::default() };
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let dlen = (*c).cmsg_len as usize - (data as usize - c as usize);
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                for i in 0..dlen / 4 {
                    out.fds.push(std::ptr::read_unaligned(data.add(4 * i).cast::<i32>()));
                }
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS && dlen >= 12 {
                let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                out.pid = Some(cred.pid as u32);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: u32) -> SysResult<i32> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) }).map(|v| v as i32)
}

/// `pidfd_getfd(pidfd, fd, 0)`: a close-on-exec duplicate of another process's descriptor.
pub fn pidfd_getfd(pidfd: i32, fd: i32) -> SysResult<i32> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) }).map(|v| v as i32)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> SysResult<i32> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC) }).map(|v| v as i32)
}

/// `epoll_ctl(epfd, op, fd, {events, data})`.
pub fn epoll_ctl(epfd: i32, op: i32, fd: i32, events: u32, data: u64) -> SysResult<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event.
    check(unsafe { libc::syscall(libc::SYS_epoll_ctl, epfd, op, fd, &mut ev as *mut libc::epoll_event) }).map(drop)
}

/// `epoll_wait` into `evs`; returns the number of events.
pub fn epoll_wait(epfd: i32, evs: &mut [libc::epoll_event], timeout_ms: i32) -> SysResult<usize> {
    // SAFETY: evs is a writable array of evs.len() events.
    let r = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait,
            epfd,
            evs.as_mut_ptr(),
            evs.len() as i32,
            timeout_ms,
            std::ptr::null::<u8>(),
            8usize,
        )
    };
    check(r).map(|v| v as usize)
}

/// `gettid()`.
pub fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// 16 random bytes-worth of entropy as a u64 (`getrandom`, falling back to time and pid).
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: v is 8 writable bytes.
    let r = unsafe { libc::syscall(libc::SYS_getrandom, &mut v as *mut u64, 8usize, libc::GRND_NONBLOCK) };
    if r == 8 {
        return v;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts as *mut libc::timespec) };
    (ts.tv_nsec as u64) ^ ((ts.tv_sec as u64) << 30) ^ ((getpid() as u64) << 40)
}

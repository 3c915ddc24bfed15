//! The exported libc entry points.
//!
//! Variadic C functions (`open`, `openat`, `ioctl`, `fcntl`) are defined with their optional
//! argument as an ordinary extra parameter: on x86-64 (and arm64 Linux) a variadic caller
//! passes it in the same register, and when it was not passed the value is ignored by us and
//! by the next definition alike. The next definitions are called through their real
//! (variadic) C types.
//!
//! Path matching: exactly `"/dev/iommu"`, whatever the directory fd (an absolute path ignores
//! it). Everything else, including relative spellings, passes straight through.

use libc::{c_char, c_int, c_uint, c_ulong, c_void, mode_t, nfds_t, off_t, pollfd, size_t, ssize_t};
use std::sync::Arc;
use uiommu_core::{Context, EngineFile, Errno};

use crate::fdtable::{self, FileKind, ShimFile};
use crate::real::real_fn;
use crate::sys;
use crate::{client, current_caller, drop_quietly, guard, machine, mapping, platform, status};

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenAtFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type OpenAt2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type DupFn = unsafe extern "C" fn(c_int) -> c_int;
type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
type WriteFn = unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t;
type PollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int;
type PpollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int;
type MmapFn = unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void;
type MunmapFn = unsafe extern "C" fn(*mut c_void, size_t) -> c_int;
type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
type RecvmsgFn = unsafe extern "C" fn(c_int, *mut libc::msghdr, c_int) -> ssize_t;
type RecvmmsgFn = unsafe extern "C" fn(c_int, *mut libc::mmsghdr, c_uint, c_int, *mut libc::timespec) -> c_int;
type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
type SigactionFn = unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
type SignalFn = unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;

real_fn!(real_open, c"open", OpenFn);
real_fn!(real_open64, c"open64", OpenFn);
real_fn!(real_openat, c"openat", OpenAtFn);
real_fn!(real_openat64, c"openat64", OpenAtFn);
real_fn!(real_open_2, c"__open_2", Open2Fn);
real_fn!(real_open64_2, c"__open64_2", Open2Fn);
real_fn!(real_openat_2, c"__openat_2", OpenAt2Fn);
real_fn!(real_openat64_2, c"__openat64_2", OpenAt2Fn);
real_fn!(real_ioctl, c"ioctl", IoctlFn);
real_fn!(real_close, c"close", CloseFn);
real_fn!(real_dup, c"dup", DupFn);
real_fn!(real_dup2, c"dup2", Dup2Fn);
real_fn!(real_dup3, c"dup3", Dup3Fn);
real_fn!(real_fcntl, c"fcntl", FcntlFn);
real_fn!(real_fcntl64, c"fcntl64", FcntlFn);
real_fn!(real_read, c"read", ReadFn);
real_fn!(real_write, c"write", WriteFn);
real_fn!(real_poll, c"poll", PollFn);
real_fn!(real_ppoll, c"ppoll", PpollFn);
real_fn!(real_mmap, c"mmap", MmapFn);
real_fn!(real_mmap64, c"mmap64", MmapFn);
real_fn!(real_close_range, c"close_range", CloseRangeFn);
real_fn!(real_munmap, c"munmap", MunmapFn);
real_fn!(real_recvmsg, c"recvmsg", RecvmsgFn);
real_fn!(real_recvmmsg, c"recvmmsg", RecvmmsgFn);
real_fn!(real_fopen, c"fopen", FopenFn);
real_fn!(real_fopen64, c"fopen64", FopenFn);
real_fn!(real_sigaction, c"sigaction", SigactionFn);
real_fn!(real_signal, c"signal", SignalFn);
real_fn!(real_bsd_signal, c"bsd_signal", SignalFn);
real_fn!(real_sysv_signal, c"sysv_signal", SignalFn);
real_fn!(real_sysv_signal_internal, c"__sysv_signal", SignalFn);

const DEV_IOMMU: &[u8] = b"/dev/iommu\0";

/// Whether the C string at `path` is exactly "/dev/iommu".
#[inline]
unsafe fn is_iommu_path(path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    for (i, &want) in DEV_IOMMU.iter().enumerate() {
        // SAFETY: `path` is a NUL-terminated string (the caller's contract with open()); we
        // stop at the first byte that differs, and DEV_IOMMU ends in NUL, so we never read
        // past the string's terminator.
        if unsafe { *path.add(i) } as u8 != want {
            return false;
        }
    }
    true
}

fn fail<T>(e: Errno, v: T) -> T {
    sys::set_errno(e.0);
    v
}

/// After the kernel handed out `fd` for a non-engine file.
#[inline]
fn new_plain_fd(fd: c_int) -> c_int {
    if fd >= 0 {
        fdtable::forget_stale(fd);
    }
    fd
}

/// After `newfd` became a duplicate of `oldfd` (kernel call succeeded).
fn new_dup_fd(newfd: c_int, old: Option<Arc<ShimFile>>) -> c_int {
    if newfd < 0 {
        return newfd;
    }
    match old {
        Some(f) => sys::keep_errno(|| drop_quietly(fdtable::insert(newfd, f))),
        None => fdtable::forget_stale(newfd),
    }
    newfd
}

/// `open("/dev/iommu", flags)`: a new context hosted by this process, stood for by the
/// client end of its connection (see [`crate::host`]).
fn open_iommu(flags: c_int) -> c_int {
    let r = guard(|| {
        let ctx = Context::open(&machine());
        let (fd, conn) = crate::host::new_conn(EngineFile::Iommufd(ctx), flags & libc::O_CLOEXEC != 0)?;
        let stale = fdtable::insert(fd, std::sync::Arc::new(ShimFile::Local(conn)));
        drop_quietly(stale);
        Ok(fd)
    });
    r.unwrap_or_else(|e| fail(e, -1))
}

/// Cheap pre-check for [`status::open`]: does the path start with "/proc/"?
#[inline]
unsafe fn maybe_proc(path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    for (i, &want) in b"/proc/".iter().enumerate() {
        // SAFETY: `path` is NUL-terminated (open's contract) and we stop at the first
        // mismatch, which a NUL always is.
        if unsafe { *path.add(i) } as u8 != want {
            return false;
        }
    }
    true
}

/// `open` of `/proc/<pid>/status` and friends: served here when uiommu has figures to add.
/// `None` means "open it for real".
unsafe fn open_status(path: *const c_char, flags: c_int) -> Option<c_int> {
    // SAFETY: per the caller, `path` is a NUL-terminated string.
    if !unsafe { maybe_proc(path) } {
        return None;
    }
    // SAFETY: as above.
    let p = unsafe { std::ffi::CStr::from_ptr(path) };
    if let Some(fd) = crate::failnth::open(p, flags) {
        return Some(new_plain_fd(fd));
    }
    let r = guard(|| Ok(status::open(p, flags))).ok().flatten()?;
    Some(match r {
        Ok(fd) => new_plain_fd(fd),
        Err(e) => fail(Errno(e), -1),
    })
}

// ---------------------------------------------------------------------------------------
// open
// ---------------------------------------------------------------------------------------

unsafe fn sys_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwards the caller's arguments unchanged to the kernel, which validates them.
    unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags, mode) as c_int }
}

/// `open(2)`.
///
/// # Safety
/// As for libc's `open`.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: path comes from the caller under open()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments to the next open().
    new_plain_fd(unsafe {
        match real_open() {
            Some(f) => f(path, flags, mode as c_uint),
            None => sys_openat(libc::AT_FDCWD, path, flags, mode),
        }
    })
}

/// `open64(2)`.
///
/// # Safety
/// As for libc's `open64`.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: path comes from the caller under open()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments to the next open64().
    new_plain_fd(unsafe {
        match real_open64() {
            Some(f) => f(path, flags, mode as c_uint),
            None => sys_openat(libc::AT_FDCWD, path, flags, mode),
        }
    })
}

/// `openat(2)`.
///
/// # Safety
/// As for libc's `openat`.
#[no_mangle]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: path comes from the caller under openat()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments to the next openat().
    new_plain_fd(unsafe {
        match real_openat() {
            Some(f) => f(dirfd, path, flags, mode as c_uint),
            None => sys_openat(dirfd, path, flags, mode),
        }
    })
}

/// `openat64(2)`.
///
/// # Safety
/// As for libc's `openat64`.
#[no_mangle]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: path comes from the caller under openat()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments to the next openat64().
    new_plain_fd(unsafe {
        match real_openat64() {
            Some(f) => f(dirfd, path, flags, mode as c_uint),
            None => sys_openat(dirfd, path, flags, mode),
        }
    })
}

/// `__open_2` (`_FORTIFY_SOURCE` open without a mode).
///
/// # Safety
/// As for glibc's `__open_2`.
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: path comes from the caller under open()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments.
    new_plain_fd(unsafe {
        match real_open_2() {
            Some(f) => f(path, flags),
            None => sys_openat(libc::AT_FDCWD, path, flags, 0),
        }
    })
}

/// `__open64_2`.
///
/// # Safety
/// As for glibc's `__open64_2`.
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: path comes from the caller under open()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments.
    new_plain_fd(unsafe {
        match real_open64_2() {
            Some(f) => f(path, flags),
            None => sys_openat(libc::AT_FDCWD, path, flags, 0),
        }
    })
}

/// `__openat_2`.
///
/// # Safety
/// As for glibc's `__openat_2`.
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: path comes from the caller under openat()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments.
    new_plain_fd(unsafe {
        match real_openat_2() {
            Some(f) => f(dirfd, path, flags),
            None => sys_openat(dirfd, path, flags, 0),
        }
    })
}

/// `__openat64_2`.
///
/// # Safety
/// As for glibc's `__openat64_2`.
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: path comes from the caller under openat()'s contract.
    if unsafe { is_iommu_path(path) } {
        return open_iommu(flags);
    }
    // SAFETY: as above.
    if let Some(fd) = unsafe { open_status(path, flags) } {
        return fd;
    }
    // SAFETY: forwarding the caller's arguments.
    new_plain_fd(unsafe {
        match real_openat64_2() {
            Some(f) => f(dirfd, path, flags),
            None => sys_openat(dirfd, path, flags, 0),
        }
    })
}

// ---------------------------------------------------------------------------------------
// ioctl
// ---------------------------------------------------------------------------------------

unsafe fn pass_ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    // SAFETY: forwarding the caller's arguments to the next ioctl() or the kernel.
    unsafe {
        match real_ioctl() {
            Some(f) => f(fd, request, arg),
            None => libc::syscall(libc::SYS_ioctl, fd, request, arg) as c_int,
        }
    }
}

/// `ioctl(2)`.
///
/// # Safety
/// As for libc's `ioctl`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    // The VFS answers these itself, before the driver; the socket standing for the file
    // gives the same results.
    if fdtable::maybe_engine(fd) && !matches!(request, libc::FIOCLEX | libc::FIONCLEX | libc::FIONBIO | libc::FIOASYNC)
    {
        let r = fdtable::with_ioctl(fd, |ctx| iommufd_ioctl(ctx, request, arg), |f| engine_ioctl(fd, f, request, arg));
        if let Some(r) = r {
            return r;
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { pass_ioctl(fd, request, arg) }
}

/// `ioctl` on an iommufd this process hosts.
#[inline]
fn iommufd_ioctl(ctx: &Arc<Context>, request: c_ulong, arg: *mut c_void) -> c_int {
    // The kernel's ioctl command is an unsigned int: the upper bits are dropped.
    let r = if crate::trace::enabled() {
        traced_engine_ioctl(ctx, request as u32, arg as u64)
    } else {
        guard(|| ctx.ioctl_via(&crate::platform::PLATFORM, &current_caller(), request as u32, arg as u64))
    };
    fdtable::drop_deferred();
    match r {
        Ok(v) => v,
        Err(e) => fail(e, -1),
    }
}

/// `ioctl` on any other engine file.
fn engine_ioctl(fd: c_int, f: &ShimFile, request: c_ulong, arg: *mut c_void) -> c_int {
    let r = match f {
        ShimFile::Local(conn) => match &conn.file {
            EngineFile::Iommufd(ctx) => return iommufd_ioctl(ctx, request, arg),
            // Access, fault and vEVENTQ files have no ioctls the self-tests use.
            _ => Err(Errno::ENOTTY),
        },
        ShimFile::Remote { host, kind: FileKind::Iommufd } => {
            let t = crate::trace::begin(request as u32, arg as u64);
            let r = guard(|| client::ioctl(fd, *host, request as u32, arg as u64));
            crate::trace::end(t, &r);
            r
        }
        _ => Err(Errno::ENOTTY),
    };
    match r {
        Ok(v) => v as c_int,
        Err(e) => fail(e, -1),
    }
}

#[cold]
#[inline(never)]
fn traced_engine_ioctl(ctx: &Arc<Context>, request: u32, arg: u64) -> Result<i32, Errno> {
    let t = crate::trace::begin(request, arg);
    let r = guard(|| ctx.ioctl_via(&crate::platform::PLATFORM, &current_caller(), request, arg));
    crate::trace::end(t, &r.map(i64::from));
    r
}

// ---------------------------------------------------------------------------------------
// close, dup, fcntl
// ---------------------------------------------------------------------------------------

unsafe fn pass_close(fd: c_int) -> c_int {
    // SAFETY: forwarding the caller's argument.
    unsafe {
        match real_close() {
            Some(f) => f(fd),
            None => libc::syscall(libc::SYS_close, fd) as c_int,
        }
    }
}

/// `close(2)`.
///
/// # Safety
/// As for libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fdtable::is_private(fd) {
        // One of the shim's own descriptors: the program does not own it.
        return fail(Errno::EBADF, -1);
    }
    let entry = fdtable::remove(fd);
    if let Some(e) = &entry {
        if let ShimFile::Remote { host, .. } = **e {
            // Tell the host, so that a last close tears the file down before we return.
            // SAFETY: forwarding the caller's argument.
            let r = client::close(fd, host, || unsafe { pass_close(fd) });
            sys::keep_errno(|| drop_quietly(entry));
            return r;
        }
    }
    // SAFETY: forwarding the caller's argument.
    let r = unsafe { pass_close(fd) };
    if entry.is_some() {
        sys::keep_errno(|| drop_quietly(entry));
    }
    r
}

/// `dup(2)`.
///
/// # Safety
/// As for libc's `dup`.
#[no_mangle]
pub unsafe extern "C" fn dup(oldfd: c_int) -> c_int {
    let old = fdtable::lookup(oldfd);
    // SAFETY: forwarding the caller's argument.
    let r = unsafe {
        match real_dup() {
            Some(f) => f(oldfd),
            None => libc::syscall(libc::SYS_dup, oldfd) as c_int,
        }
    };
    new_dup_fd(r, old)
}

/// Shared by dup2/dup3: `newfd` is replaced atomically by the kernel.
fn dup_onto(oldfd: c_int, newfd: c_int, call: impl FnOnce() -> c_int) -> c_int {
    if fdtable::is_private(newfd) {
        // Would silently replace one of the shim's descriptors; EBUSY is dup2's documented
        // "try again" answer for a number in transition.
        return fail(Errno::EBUSY, -1);
    }
    let old = fdtable::lookup(oldfd);
    let r = call();
    if r < 0 || oldfd == newfd {
        return r;
    }
    let replaced = match old {
        Some(f) => fdtable::insert(newfd, f),
        None => fdtable::remove(newfd),
    };
    sys::keep_errno(|| drop_quietly(replaced));
    r
}

/// `dup2(2)`.
///
/// # Safety
/// As for libc's `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup2(oldfd: c_int, newfd: c_int) -> c_int {
    dup_onto(oldfd, newfd, || {
        // SAFETY: forwarding the caller's arguments.
        unsafe {
            match real_dup2() {
                Some(f) => f(oldfd, newfd),
                None => libc::syscall(libc::SYS_dup2, oldfd, newfd) as c_int,
            }
        }
    })
}

/// `dup3(2)`.
///
/// # Safety
/// As for libc's `dup3`.
#[no_mangle]
pub unsafe extern "C" fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int {
    dup_onto(oldfd, newfd, || {
        // SAFETY: forwarding the caller's arguments.
        unsafe {
            match real_dup3() {
                Some(f) => f(oldfd, newfd, flags),
                None => libc::syscall(libc::SYS_dup3, oldfd, newfd, flags) as c_int,
            }
        }
    })
}

fn fcntl_common(fd: c_int, cmd: c_int, arg: c_ulong, next: Option<FcntlFn>) -> c_int {
    let is_dup = cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC;
    let old = if is_dup { fdtable::lookup(fd) } else { None };
    // SAFETY: forwarding the caller's arguments (the third one as the machine word the
    // caller passed, pointer or integer).
    let r = unsafe {
        match next {
            Some(f) => f(fd, cmd, arg),
            None => libc::syscall(libc::SYS_fcntl, fd, cmd, arg) as c_int,
        }
    };
    if is_dup {
        new_dup_fd(r, old)
    } else {
        r
    }
}

/// `fcntl(2)`.
///
/// # Safety
/// As for libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real_fcntl())
}

/// `fcntl64` (glibc ≥ 2.28).
///
/// # Safety
/// As for libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real_fcntl64().or_else(real_fcntl))
}

/// Closes `[first, last]` except the shim's private descriptors.
unsafe fn close_range_skipping_private(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let call = |a: c_uint, b: c_uint| -> c_int {
        // SAFETY: close_range has no memory arguments.
        unsafe {
            match real_close_range() {
                Some(f) => f(a, b, flags),
                None => libc::syscall(libc::SYS_close_range, a, b, flags) as c_int,
            }
        }
    };
    let mut ret = 0;
    let mut lo = first;
    let scan_end = last.min(fdtable::FLAG_FDS as c_uint - 1);
    let mut fd = first;
    while fd <= scan_end {
        if fdtable::is_private(fd as c_int) {
            if fd > lo {
                let r = call(lo, fd - 1);
                if r < 0 && ret == 0 {
                    ret = r;
                }
            }
            lo = fd + 1;
        }
        fd += 1;
    }
    if lo <= last && lo >= first {
        let r = call(lo, last);
        if r < 0 && ret == 0 {
            ret = r;
        }
    }
    ret
}

/// `close_range(2)` (glibc ≥ 2.34).
///
/// # Safety
/// As for libc's `close_range`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if first > last {
        return fail(Errno::EINVAL, -1);
    }
    if flags as c_uint & libc::CLOSE_RANGE_CLOEXEC != 0 {
        // Only sets close-on-exec; the shim's descriptors have it anyway.
        // SAFETY: close_range has no memory arguments.
        return unsafe {
            match real_close_range() {
                Some(f) => f(first, last, flags),
                None => libc::syscall(libc::SYS_close_range, first, last, flags) as c_int,
            }
        };
    }
    // SAFETY: as above.
    let r = unsafe { close_range_skipping_private(first, last, flags) };
    if r == 0 {
        let gone = fdtable::remove_range(first, last);
        sys::keep_errno(|| drop_quietly(gone));
    }
    r
}

/// `closefrom(3)` (glibc ≥ 2.34).
///
/// # Safety
/// As for libc's `closefrom`.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    if lowfd >= 0 {
        // SAFETY: plain integer arguments.
        unsafe { close_range(lowfd as c_uint, c_uint::MAX, 0) };
    }
}

// ---------------------------------------------------------------------------------------
// read, write
// ---------------------------------------------------------------------------------------

/// `read(2)`.
///
/// # Safety
/// As for libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: the caller's arguments (a fail-nth file answers itself).
    if let Some(n) = unsafe { crate::failnth::read(fd, buf, count) } {
        return n;
    }
    if fdtable::maybe_engine(fd) {
        if let Some(f) = fdtable::lookup(fd) {
            let r = match &*f {
                ShimFile::Remote { host, .. } => guard(|| client::read(fd, *host, buf as u64, count)),
                ShimFile::Local(c) => guard(|| c.file.read(&current_caller(), buf as u64, count)),
                ShimFile::LocalDmabuf(e) => guard(|| e.read(&current_caller(), buf as u64, count)),
            };
            return match r {
                Ok(n) => n as ssize_t,
                Err(e) => fail(e, -1),
            };
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_read() {
            Some(f) => f(fd, buf, count),
            None => libc::syscall(libc::SYS_read, fd, buf, count) as ssize_t,
        }
    }
}

/// `write(2)`.
///
/// # Safety
/// As for libc's `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: the caller's arguments (a fail-nth file answers itself).
    if let Some(n) = unsafe { crate::failnth::write(fd, buf, count) } {
        return n;
    }
    if fdtable::maybe_engine(fd) {
        if let Some(f) = fdtable::lookup(fd) {
            let r = match &*f {
                ShimFile::Remote { host, .. } => guard(|| client::write(fd, *host, buf as u64, count)),
                ShimFile::Local(c) => guard(|| c.file.write(&current_caller(), buf as u64, count)),
                ShimFile::LocalDmabuf(e) => guard(|| e.write(&current_caller(), buf as u64, count)),
            };
            return match r {
                Ok(n) => n as ssize_t,
                Err(e) => fail(e, -1),
            };
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_write() {
            Some(f) => f(fd, buf, count),
            None => libc::syscall(libc::SYS_write, fd, buf, count) as ssize_t,
        }
    }
}

/// `__read_chk` (`_FORTIFY_SOURCE` read).
///
/// # Safety
/// As for glibc's `__read_chk`.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t {
    if count > buflen {
        // glibc's __chk_fail: a buffer overflow was about to happen.
        eprintln_raw(b"*** buffer overflow detected ***: terminated\n");
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
    // SAFETY: the caller's arguments, checked as glibc would.
    unsafe { read(fd, buf, count) }
}

fn eprintln_raw(msg: &[u8]) {
    // SAFETY: writes a live byte slice to fd 2.
    unsafe { libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len()) };
}

// ---------------------------------------------------------------------------------------
// poll
// ---------------------------------------------------------------------------------------

/// Poll bits the kernel always reports, whatever was requested.
const ALWAYS: i16 = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;

/// Engine entries of a poll set: `None` when there are none (the fast path).
///
/// # Safety
/// `fds` must point to `nfds` readable `pollfd`s (or be anything when `nfds` is 0).
unsafe fn engine_entries(fds: *const pollfd, nfds: nfds_t) -> Option<Vec<Option<Arc<ShimFile>>>> {
    if fds.is_null() || nfds == 0 || nfds > 1 << 20 {
        return None;
    }
    // SAFETY: per the contract, fds[0..nfds] are readable.
    let set = unsafe { std::slice::from_raw_parts(fds, nfds as usize) };
    if !set.iter().any(|p| fdtable::maybe_engine(p.fd)) {
        return None;
    }
    let v: Vec<_> = set.iter().map(|p| fdtable::lookup(p.fd)).collect();
    v.iter().any(Option::is_some).then_some(v)
}

/// Polls a set that has engine entries: they are answered from the engine, the rest by the
/// kernel (without waiting when an engine entry is ready).
///
/// # Safety
/// `fds` must point to `nfds` readable and writable `pollfd`s.
unsafe fn poll_mixed(
    fds: *mut pollfd,
    nfds: nfds_t,
    ours: Vec<Option<Arc<ShimFile>>>,
    wait: impl FnOnce(*mut pollfd, nfds_t, bool) -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let set = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    let mut copy: Vec<pollfd> = set.to_vec();
    let mut ready = 0;
    for (p, f) in copy.iter_mut().zip(&ours) {
        if let Some(f) = f {
            let fd = p.fd;
            let bits = guard(|| {
                Ok(match &**f {
                    ShimFile::Remote { host, .. } => client::poll(fd, *host),
                    _ => f.engine().map_or(libc::POLLERR as u32, |e| e.poll()),
                })
            })
            .unwrap_or(libc::POLLERR as u32) as i16;
            p.revents = bits & (p.events | ALWAYS);
            if p.revents != 0 {
                ready += 1;
            }
            p.fd = -1; // the kernel ignores negative fds (and reports 0 for them)
        }
    }
    let others = ours.iter().any(Option::is_none);
    let saved: Vec<i16> = copy.iter().map(|p| p.revents).collect();
    let r = if others || ready == 0 { wait(copy.as_mut_ptr(), nfds, ready > 0) } else { 0 };
    if r < 0 && ready == 0 {
        return r;
    }
    for ((dst, src), (f, ourbits)) in set.iter_mut().zip(&copy).zip(ours.iter().zip(saved)) {
        dst.revents = if f.is_some() {
            ourbits
        } else if r < 0 {
            0
        } else {
            src.revents
        };
    }
    ready + r.max(0)
}

unsafe fn pass_poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_poll() {
            Some(f) => f(fds, nfds, timeout),
            None => libc::syscall(
                libc::SYS_ppoll,
                fds,
                nfds,
                if timeout < 0 {
                    std::ptr::null::<libc::timespec>()
                } else {
                    &libc::timespec { tv_sec: (timeout / 1000) as _, tv_nsec: ((timeout % 1000) * 1_000_000) as _ }
                },
                std::ptr::null::<libc::sigset_t>(),
                8usize,
            ) as c_int,
        }
    }
}

/// `poll(2)`.
///
/// # Safety
/// As for libc's `poll`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: poll's contract: fds points to nfds pollfds.
    match unsafe { engine_entries(fds, nfds) } {
        // SAFETY: as above.
        None => unsafe { pass_poll(fds, nfds, timeout) },
        // SAFETY: as above; the closure forwards a private copy of the set.
        Some(ours) => unsafe {
            poll_mixed(fds, nfds, ours, |p, n, now| pass_poll(p, n, if now { 0 } else { timeout }))
        },
    }
}

unsafe fn pass_ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_ppoll() {
            Some(f) => f(fds, nfds, tmo, sigmask),
            None => libc::syscall(libc::SYS_ppoll, fds, nfds, tmo, sigmask, 8usize) as c_int,
        }
    }
}

/// `ppoll(2)`.
///
/// # Safety
/// As for libc's `ppoll`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: ppoll's contract: fds points to nfds pollfds.
    match unsafe { engine_entries(fds, nfds) } {
        // SAFETY: as above.
        None => unsafe { pass_ppoll(fds, nfds, tmo, sigmask) },
        // SAFETY: as above; the closure forwards a private copy of the set.
        Some(ours) => unsafe {
            poll_mixed(fds, nfds, ours, |p, n, now| {
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                pass_ppoll(p, n, if now { &zero } else { tmo }, sigmask)
            })
        },
    }
}

/// `__poll_chk` (`_FORTIFY_SOURCE` poll).
///
/// # Safety
/// As for glibc's `__poll_chk`.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < nfds as usize {
        eprintln_raw(b"*** buffer overflow detected ***: terminated\n");
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
    // SAFETY: the caller's arguments, checked as glibc would.
    unsafe { poll(fds, nfds, timeout) }
}

/// `__ppoll_chk` (`_FORTIFY_SOURCE` ppoll).
///
/// # Safety
/// As for glibc's `__ppoll_chk`.
#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    fdslen: size_t,
) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < nfds as usize {
        eprintln_raw(b"*** buffer overflow detected ***: terminated\n");
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
    // SAFETY: the caller's arguments, checked as glibc would.
    unsafe { ppoll(fds, nfds, tmo, sigmask) }
}

// ---------------------------------------------------------------------------------------
// mmap
// ---------------------------------------------------------------------------------------

unsafe fn pass_mmap(
    next: Option<MmapFn>,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarding the caller's arguments to the next mmap() or the kernel.
    let p = unsafe {
        match next {
            Some(f) => f(addr, len, prot, flags, fd, off),
            None => libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void,
        }
    };
    if p != libc::MAP_FAILED && flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) == libc::MAP_FIXED {
        // A fixed mapping replaced whatever was there, possibly an iommufd region mapping.
        mapping::unmapped(p as u64, len as u64);
    }
    p
}

/// `mmap` of an engine file; `None` means "not ours to answer, pass it through".
#[allow(clippy::too_many_arguments)]
unsafe fn engine_mmap(
    next: Option<MmapFn>,
    fd: c_int,
    f: &ShimFile,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    off: off_t,
) -> Option<*mut c_void> {
    let ctx = match f {
        ShimFile::Local(c) => match &c.file {
            EngineFile::Iommufd(ctx) => ctx,
            // Other engine files: the standing-in socket answers (ENODEV, like the kernel's
            // anonymous files without an mmap op).
            _ => return None,
        },
        ShimFile::Remote { host, kind: FileKind::Iommufd } => {
            // SAFETY: the caller's arguments, under mmap's contract.
            return Some(unsafe { remote_mmap(next, fd, *host, addr, len, prot, flags, off) });
        }
        // A remote host's other files, and dma-bufs (memfds): the kernel answers.
        _ => return None,
    };
    let region = match guard(|| ctx.mmap(len as u64, prot, flags, off as u64)) {
        Ok(r) => r,
        Err(e) => return Some(fail(e, libc::MAP_FAILED)),
    };
    let Some(mem) = platform::memory_file(&region.memory) else {
        // The engine's memory did not come from create_dmabuf_memory: cannot be mapped.
        drop_quietly(region);
        return Some(fail(Errno::ENODEV, libc::MAP_FAILED));
    };
    // SAFETY: maps the region's memfd with the caller's address, protection and flags; the
    // kernel validates them as for any mmap.
    let p = unsafe { pass_mmap(next, addr, len, prot, flags, mem.raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        sys::keep_errno(|| drop_quietly(region));
    } else {
        mapping::add(p as u64, len as u64, region);
    }
    Some(p)
}

/// `mmap` of a region of an iommufd another process hosts: the host sends the region's
/// memory and keeps its owner busy until we report the mapping gone.
#[allow(clippy::too_many_arguments)]
unsafe fn remote_mmap(
    next: Option<MmapFn>,
    fd: c_int,
    host: u32,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    off: off_t,
) -> *mut c_void {
    let (mem, id) = match guard(|| client::mmap(fd, host, len as u64, prot, flags, off as u64)) {
        Ok(r) => r,
        Err(e) => return fail(e, libc::MAP_FAILED),
    };
    let hold = match client::RemoteHold::new(fd, host, id) {
        Ok(h) => h,
        Err(e) => {
            client::release_hold(fd, host, id);
            return fail(e, libc::MAP_FAILED);
        }
    };
    // SAFETY: maps the region's memfd with the caller's address, protection and flags; the
    // kernel validates them as for any mmap.
    let p = unsafe { pass_mmap(next, addr, len, prot, flags, mem.raw(), 0) };
    if p == libc::MAP_FAILED {
        sys::keep_errno(|| drop_quietly(hold));
    } else {
        mapping::add(p as u64, len as u64, hold);
    }
    p
}

/// `mmap(2)`.
///
/// # Safety
/// As for libc's `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    if flags & libc::MAP_ANONYMOUS == 0 && fdtable::maybe_engine(fd) {
        if let Some(f) = fdtable::lookup(fd) {
            // SAFETY: the caller's arguments, under mmap's contract.
            if let Some(p) = unsafe { engine_mmap(real_mmap(), fd, &f, addr, len, prot, flags, off) } {
                return p;
            }
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { pass_mmap(real_mmap(), addr, len, prot, flags, fd, off) }
}

/// `mmap64`.
///
/// # Safety
/// As for libc's `mmap64`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let next = real_mmap64().or_else(real_mmap);
    if flags & libc::MAP_ANONYMOUS == 0 && fdtable::maybe_engine(fd) {
        if let Some(f) = fdtable::lookup(fd) {
            // SAFETY: the caller's arguments, under mmap's contract.
            if let Some(p) = unsafe { engine_mmap(next, fd, &f, addr, len, prot, flags, off) } {
                return p;
            }
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { pass_mmap(next, addr, len, prot, flags, fd, off) }
}

/// `munmap(2)`.
///
/// # Safety
/// As for libc's `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe {
        match real_munmap() {
            Some(f) => f(addr, len),
            None => libc::syscall(libc::SYS_munmap, addr, len) as c_int,
        }
    };
    if r == 0 {
        mapping::unmapped(addr as u64, len as u64);
    }
    r
}

// ---------------------------------------------------------------------------------------
// fopen (status files)
// ---------------------------------------------------------------------------------------

/// `fopen` of a status file: `Some(FILE or NULL)` when served here.
unsafe fn fopen_status(path: *const c_char, mode: *const c_char) -> Option<*mut libc::FILE> {
    // SAFETY: path is NUL-terminated (fopen's contract).
    if !unsafe { maybe_proc(path) } || mode.is_null() {
        return None;
    }
    // SAFETY: mode is NUL-terminated (fopen's contract).
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    if m.first() != Some(&b'r') || m.contains(&b'+') {
        return None;
    }
    let flags = libc::O_RDONLY | if m.contains(&b'e') { libc::O_CLOEXEC } else { 0 };
    // SAFETY: as above.
    let fd = unsafe { open_status(path, flags) }?;
    if fd < 0 {
        return Some(std::ptr::null_mut());
    }
    // SAFETY: fd is a fresh descriptor we own; mode is the caller's valid mode string.
    let f = unsafe { libc::fdopen(fd, mode) };
    if f.is_null() {
        sys::keep_errno(|| sys::close(fd).ok());
    }
    Some(f)
}

unsafe fn fopen_fallback(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // Only while dlsym is resolving `fopen` itself: open read-only and wrap.
    // SAFETY: forwarding the caller's path.
    let fd = unsafe { sys_openat(libc::AT_FDCWD, path, libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: fd is ours; mode is the caller's.
    unsafe { libc::fdopen(fd, mode) }
}

/// `fopen(3)`: `/proc/<pid>/status` gets uiommu's pinned-memory figures.
///
/// # Safety
/// As for libc's `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments, under fopen's contract.
    if let Some(f) = unsafe { fopen_status(path, mode) } {
        return f;
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_fopen() {
            Some(f) => f(path, mode),
            None => fopen_fallback(path, mode),
        }
    }
}

/// `fopen64(3)`.
///
/// # Safety
/// As for libc's `fopen64`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments, under fopen's contract.
    if let Some(f) = unsafe { fopen_status(path, mode) } {
        return f;
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real_fopen64().or_else(real_fopen) {
            Some(f) => f(path, mode),
            None => fopen_fallback(path, mode),
        }
    }
}

// ---------------------------------------------------------------------------------------
// recvmsg: descriptors received with SCM_RIGHTS
// ---------------------------------------------------------------------------------------

/// Enters received uiommu descriptors in the table.
///
/// # Safety
/// `msg` must be a msghdr the kernel just filled (recvmsg succeeded).
unsafe fn received(msg: *const libc::msghdr) {
    // SAFETY: per the contract, msg is valid.
    let m = unsafe { &*msg };
    if m.msg_control.is_null() || m.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
        return;
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let dlen = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..dlen / 4 {
                    fds.push(std::ptr::read_unaligned(data.add(4 * i).cast::<i32>()));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    if fds.is_empty() {
        return;
    }
    sys::keep_errno(|| {
        let _ = guard(|| {
            for fd in fds {
                fdtable::forget_stale(fd);
                crate::fork::recognise(fd);
            }
            Ok(())
        });
    });
}

/// `recvmsg(2)`: uiommu descriptors among the SCM_RIGHTS ones become engine files here.
///
/// # Safety
/// As for libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe {
        match real_recvmsg() {
            Some(f) => f(fd, msg, flags),
            None => libc::syscall(libc::SYS_recvmsg, fd, msg, flags) as ssize_t,
        }
    };
    if r >= 0 && !msg.is_null() {
        // SAFETY: the call succeeded, so the kernel filled *msg.
        unsafe { received(msg) };
    }
    r
}

/// `recvmmsg(2)`.
///
/// # Safety
/// As for libc's `recvmmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    vlen: c_uint,
    flags: c_int,
    tmo: *mut libc::timespec,
) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe {
        match real_recvmmsg() {
            Some(f) => f(fd, msgs, vlen, flags, tmo),
            None => libc::syscall(libc::SYS_recvmmsg, fd, msgs, vlen, flags, tmo) as c_int,
        }
    };
    if r > 0 && !msgs.is_null() {
        for i in 0..r as usize {
            // SAFETY: the kernel filled the first r entries.
            unsafe { received(std::ptr::addr_of!((*msgs.add(i)).msg_hdr)) };
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// sigaction, signal: SIGSEGV/SIGBUS belong to the fault-safe user copies
// ---------------------------------------------------------------------------------------

use uiommu_linux::uaccess::{self, KernelSigaction};

fn kernel_mask(set: &libc::sigset_t) -> u64 {
    // SAFETY: glibc's sigset_t is at least 8 bytes and starts with the kernel's 64-bit set.
    unsafe { std::ptr::read_unaligned((set as *const libc::sigset_t).cast::<u64>()) }
}

/// `sigaction(2)`: while the shim's fault handler is installed, SIGSEGV and SIGBUS
/// dispositions are remembered (the handler hands the program's faults to them) instead of
/// replacing it.
///
/// # Safety
/// As for libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, oldact: *mut libc::sigaction) -> c_int {
    let pass = || {
        // SAFETY: forwarding the caller's arguments.
        unsafe {
            match real_sigaction() {
                Some(f) => f(sig, act, oldact),
                None => fail(Errno(libc::ENOSYS), -1),
            }
        }
    };
    if sig != libc::SIGSEGV && sig != libc::SIGBUS {
        return pass();
    }
    // SAFETY: act is null or a valid sigaction (the caller's contract).
    let new = unsafe { act.as_ref() }.map(|a| KernelSigaction {
        handler: a.sa_sigaction,
        flags: a.sa_flags as u32 as u64,
        // SAFETY: a function pointer (or None) read as an address.
        restorer: unsafe { std::mem::transmute::<Option<extern "C" fn()>, usize>(a.sa_restorer) },
        mask: kernel_mask(&a.sa_mask),
    });
    let mut old = KernelSigaction::default();
    match uaccess::intercept(sig, new, &mut old, pass) {
        Some(r) => r,
        None => {
            // SAFETY: oldact is null or a valid, writable sigaction.
            if let Some(o) = unsafe { oldact.as_mut() } {
                // SAFETY: an all-zero sigaction is a valid value.
                *o = unsafe { std::mem::zeroed() };
                o.sa_sigaction = old.handler;
                o.sa_flags = old.flags as u32 as c_int;
                // SAFETY: the sigset starts with the 64-bit kernel set (see kernel_mask).
                unsafe { std::ptr::write_unaligned((&mut o.sa_mask as *mut libc::sigset_t).cast::<u64>(), old.mask) };
                // SAFETY: an address the program gave as a restorer (or 0), back as it was.
                o.sa_restorer = unsafe { std::mem::transmute::<usize, Option<extern "C" fn()>>(old.restorer) };
            }
            0
        }
    }
}

/// The `signal` family: `flags` are the SA_* semantics of that variant.
fn signal_common(sig: c_int, handler: libc::sighandler_t, flags: c_int, next: Option<SignalFn>) -> libc::sighandler_t {
    let pass = || match next {
        // SAFETY: forwarding the caller's arguments.
        Some(f) => unsafe { f(sig, handler) },
        None => fail(Errno(libc::ENOSYS), libc::SIG_ERR),
    };
    if sig != libc::SIGSEGV && sig != libc::SIGBUS {
        return pass();
    }
    let mask = if flags & libc::SA_NODEFER != 0 { 0 } else { 1u64 << (sig - 1) };
    let new = KernelSigaction { handler, flags: flags as u32 as u64, restorer: 0, mask };
    let mut old = KernelSigaction::default();
    match uaccess::intercept(sig, Some(new), &mut old, pass) {
        Some(r) => r,
        None => old.handler,
    }
}

/// `signal(3)` (BSD semantics, glibc's default).
///
/// # Safety
/// As for libc's `signal`.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signal_common(sig, handler, libc::SA_RESTART, real_signal())
}

/// `bsd_signal(3)`.
///
/// # Safety
/// As for libc's `bsd_signal`.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signal_common(sig, handler, libc::SA_RESTART, real_bsd_signal().or_else(real_signal))
}

/// `sysv_signal(3)` (one-shot, no masking).
///
/// # Safety
/// As for libc's `sysv_signal`.
#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signal_common(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, real_sysv_signal())
}

/// `__sysv_signal`.
///
/// # Safety
/// As for glibc's `__sysv_signal`.
#[no_mangle]
pub unsafe extern "C" fn __sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signal_common(
        sig,
        handler,
        libc::SA_RESETHAND | libc::SA_NODEFER,
        real_sysv_signal_internal().or_else(real_sysv_signal),
    )
}

//! Thin wrappers over raw Linux system calls.
//!
//! The shim's own I/O never goes through the libc functions it interposes (`open`, `close`,
//! `read`, ...): it uses `syscall(2)` directly, so its internal work neither recurses into the
//! interposers nor shows up to other preloaded libraries. Every wrapper returns the positive
//! errno on failure and leaves the caller to decide whether to publish it.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, Ordering};

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
    let r = unsafe {
        libc::syscall(libc::SYS_openat, dirfd, path.as_ptr(), flags | libc::O_CLOEXEC, mode)
    };
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

/// `getpid()` (the thread-group id).
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
    let soft = if unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_NOFILE, &mut rl as *mut libc::rlimit) } == 0 {
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
/// A *private* `Fd` is one of the shim's own descriptors, kept at a high number (≥ 1000 when
/// the fd limit allows) and marked in the descriptor table so that the program's `close()`
/// and `close_range()` cannot close it from under the shim.
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
        crate::fdtable::mark_private(new, true);
        Ok(Fd { raw: new, private: true })
    }

    /// The descriptor number.
    pub fn raw(&self) -> i32 {
        self.raw
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        keep_errno(|| {
            if self.private {
                crate::fdtable::mark_private(self.raw, false);
            }
            let _ = close(self.raw);
        });
    }
}

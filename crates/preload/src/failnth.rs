//! The kernel's fault-injection interface, as `iommufd_fail_nth` uses it, served from the
//! engine's per-thread fail-nth countdown ([`Machine::set_fail_nth`]).
//!
//! * **debugfs**: `opendir("/sys/kernel/debug")` (with or without the trailing slash) opens
//!   a private directory instead, created on first use under `$TMPDIR` (removed at exit by
//!   the process that made it) with the files a fault-injection kernel has there:
//!   `failslab/`, `fail_page_alloc/` and `fail_iommufd/` with `verbose`,
//!   `ignore-gfp-wait`, …. The program's `openat(dirfd(dir), "failslab/ignore-gfp-wait")`,
//!   `readdir` and writes then work on those ordinary files; their values change nothing.
//! * **fail-nth**: an `open` of `/proc/self/task/<tid>/fail-nth`,
//!   `/proc/<pid>/task/<tid>/fail-nth`, `/proc/thread-self/fail-nth`, `/proc/self/fail-nth`
//!   or `/proc/<pid>/fail-nth` (this process, an existing thread) returns a memfd that is
//!   registered as that task's fail-nth file. `read`/`pread` give the calling thread's
//!   remaining count as `"%u\n"` (0 once the failure was injected); `write`/`pwrite` take an
//!   unsigned integer (`kstrtouint` rules: decimal, `0x` hex, `0` octal, one trailing
//!   newline) and arm the countdown: the n-th failure site of the engine this thread then
//!   reaches fails. Another thread's file answers EPERM (the countdown is thread-local in
//!   the engine). Registration is checked against the descriptor's identity on every use, so
//!   a closed and reused fd number is never mistaken for one.
//!
//! Hooks: `opendir`, `pread`, `pread64`, `pwrite`, `pwrite64` are interposed here;
//! `interpose.rs` calls [`open`] from its `/proc/` path check and [`read()`]/[`write()`] first
//! thing in its `read`/`write`.

use crate::sys;
use libc::{c_char, c_int, c_void, off_t, size_t, ssize_t};
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use uiommu_core::Machine;

// ---------------------------------------------------------------------------------------
// debugfs
// ---------------------------------------------------------------------------------------

/// Files of the fake debugfs and their initial contents (a fault-injection kernel's).
const DEBUGFS_FILES: &[(&str, &str)] = &[
    ("failslab/ignore-gfp-wait", "Y\n"),
    ("failslab/verbose", "2\n"),
    ("failslab/probability", "0\n"),
    ("fail_page_alloc/ignore-gfp-wait", "Y\n"),
    ("fail_page_alloc/ignore-gfp-highmem", "Y\n"),
    ("fail_page_alloc/verbose", "2\n"),
    ("fail_page_alloc/probability", "0\n"),
    ("fail_iommufd/verbose", "2\n"),
    ("fail_iommufd/probability", "0\n"),
    ("fail_iommufd/interval", "1\n"),
    ("fail_iommufd/times", "1\n"),
];

struct FakeDebugfs {
    path: CString,
    /// The process that created it (and removes it at exit).
    owner: u32,
}

static DEBUGFS: OnceLock<Option<FakeDebugfs>> = OnceLock::new();

fn fake_debugfs() -> Option<&'static FakeDebugfs> {
    DEBUGFS
        .get_or_init(|| {
            let owner = sys::getpid();
            let dir = std::env::temp_dir().join(format!("uiommu-debugfs.{owner}"));
            for (file, value) in DEBUGFS_FILES {
                let p = dir.join(file);
                std::fs::create_dir_all(p.parent()?).ok()?;
                std::fs::write(&p, value).ok()?;
            }
            // SAFETY: registers a function without preconditions to run at exit().
            unsafe { libc::atexit(remove_fake_debugfs) };
            Some(FakeDebugfs { path: CString::new(dir.into_os_string().into_vec()).ok()?, owner })
        })
        .as_ref()
}

extern "C" fn remove_fake_debugfs() {
    if let Some(Some(d)) = DEBUGFS.get() {
        // A fork child exiting leaves its parent's directory alone.
        if d.owner == sys::getpid() {
            let _ = std::fs::remove_dir_all(OsStr::from_bytes(d.path.as_bytes()));
        }
    }
}

type OpendirFn = unsafe extern "C" fn(*const c_char) -> *mut libc::DIR;

/// The next `opendir`. Resolved once under a `OnceLock`, so a second thread waits for the
/// first lookup instead of failing (there is no system call to fall back on).
fn real_opendir() -> Option<OpendirFn> {
    static R: OnceLock<usize> = OnceLock::new();
    // SAFETY: RTLD_NEXT with a NUL-terminated symbol name is a valid dlsym call.
    let a = *R.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"opendir".as_ptr()) } as usize);
    // SAFETY: dlsym returned the address of libc's `opendir`, whose C type is OpendirFn.
    (a != 0).then(|| unsafe { std::mem::transmute::<usize, OpendirFn>(a) })
}

/// `opendir(3)`: `/sys/kernel/debug` is the fake debugfs; everything else passes through.
///
/// # Safety
/// As for libc's `opendir`.
#[no_mangle]
pub unsafe extern "C" fn opendir(name: *const c_char) -> *mut libc::DIR {
    let mut target = name;
    if !name.is_null() {
        // SAFETY: `name` is a NUL-terminated string (opendir's contract).
        let p = unsafe { CStr::from_ptr(name) }.to_bytes();
        if p == b"/sys/kernel/debug" || p == b"/sys/kernel/debug/" {
            if let Some(d) = fake_debugfs() {
                target = d.path.as_ptr();
            }
        }
    }
    match real_opendir() {
        // SAFETY: forwarding a valid path (the caller's or our own CString) to opendir.
        Some(f) => unsafe { f(target) },
        None => {
            sys::set_errno(libc::ENOSYS);
            std::ptr::null_mut()
        }
    }
}

// ---------------------------------------------------------------------------------------
// fail-nth files
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct NthFile {
    fd: c_int,
    dev: u64,
    ino: u64,
    /// The task whose countdown the file is.
    tid: i32,
    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
    accmode: c_int,
}

/// Registered files (a handful at most); `REGISTERED` lets every other descriptor skip the
/// lock.
static NTH: Mutex<Vec<NthFile>> = Mutex::new(Vec::new());
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

fn table() -> std::sync::MutexGuard<'static, Vec<NthFile>> {
    NTH.lock().unwrap_or_else(|e| e.into_inner())
}

fn digits(d: &[u8]) -> Option<i32> {
    if d.is_empty() || d.len() > 10 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(d).ok()?.parse().ok()
}

/// The task a fail-nth path names, if it is one of this process's threads.
pub fn target(path: &[u8]) -> Option<i32> {
    let rest = path.strip_prefix(b"/proc/")?.strip_suffix(b"/fail-nth")?;
    let me = sys::getpid() as i32;
    if rest == b"thread-self" {
        return Some(sys::gettid());
    }
    let (who, task) = match rest.iter().position(|&c| c == b'/') {
        Some(i) => (&rest[..i], Some(rest[i + 1..].strip_prefix(b"task/")?)),
        None => (rest, None),
    };
    let pid = if who == b"self" { me } else { digits(who)? };
    if pid != me {
        return None;
    }
    let tid = match task {
        None => pid,
        Some(t) => digits(t)?,
    };
    // A thread of ours? (Otherwise the real open answers ENOENT.)
    let probe = CString::new(format!("/proc/self/task/{tid}")).ok()?;
    sys::stat(&probe).ok()?;
    Some(tid)
}

/// `open` of a fail-nth path: a registered memfd (or -1 with errno set); `None` for any
/// other path.
pub fn open(path: &CStr, flags: c_int) -> Option<c_int> {
    let tid = target(path.to_bytes())?;
    if flags & libc::O_DIRECTORY != 0 {
        sys::set_errno(libc::ENOTDIR);
        return Some(-1);
    }
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 { libc::MFD_CLOEXEC } else { 0 };
    let fd = match sys::memfd_create(c"fail-nth", mfd_flags) {
        Ok(fd) => fd,
        Err(e) => {
            sys::set_errno(e);
            return Some(-1);
        }
    };
    let st = match sys::fstat(fd) {
        Ok(st) => st,
        Err(e) => {
            let _ = sys::close(fd);
            sys::set_errno(e);
            return Some(-1);
        }
    };
    let mut t = table();
    t.retain(|f| f.fd != fd);
    t.push(NthFile { fd, dev: st.st_dev, ino: st.st_ino, tid, accmode: flags & libc::O_ACCMODE });
    REGISTERED.store(t.len(), Ordering::Release);
    Some(fd)
}

/// The registered file behind `fd`, if it is still the descriptor we made.
fn lookup(fd: c_int) -> Option<NthFile> {
    if REGISTERED.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut t = table();
    let i = t.iter().position(|f| f.fd == fd)?;
    let f = t[i];
    match sys::fstat(fd) {
        Ok(st) if st.st_dev == f.dev && st.st_ino == f.ino => Some(f),
        _ => {
            // Closed (and maybe reused) behind our back.
            t.swap_remove(i);
            REGISTERED.store(t.len(), Ordering::Release);
            None
        }
    }
}

fn fail(e: c_int) -> Option<ssize_t> {
    sys::set_errno(e);
    Some(-1)
}

/// `kstrtouint(s, 0)` as `kstrtouint_from_user` applies it: optional `+`, then `0x` hex,
/// `0` octal or decimal, optionally one trailing newline.
fn parse_uint(s: &[u8]) -> Result<u32, c_int> {
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (radix, digits) = if let Some(h) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        (16, h)
    } else if s.len() > 1 && s[0] == b'0' {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() {
        return Err(libc::EINVAL);
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix).ok_or(libc::EINVAL)? as u64;
        v = v * radix as u64 + d;
        if v > u32::MAX as u64 {
            return Err(libc::ERANGE);
        }
    }
    Ok(v as u32)
}

/// `read`/`pread` of a fail-nth file (`off` = None: at and advancing the file position).
///
/// # Safety
/// `buf`/`count` as for `read(2)` (bad pointers answer EFAULT).
unsafe fn nth_read(fd: c_int, buf: *mut c_void, count: size_t, off: Option<off_t>) -> Option<ssize_t> {
    let f = lookup(fd)?;
    if f.accmode == libc::O_WRONLY {
        return fail(libc::EBADF);
    }
    if f.tid != sys::gettid() {
        return fail(libc::EPERM);
    }
    let pos = match off {
        Some(o) if o < 0 => return fail(libc::EINVAL),
        Some(o) => o as u64,
        None => match sys::lseek(fd, 0, libc::SEEK_CUR) {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
    };
    let text = format!("{}\n", Machine::fail_nth());
    let bytes = text.as_bytes();
    let start = (pos as usize).min(bytes.len());
    let n = count.min(bytes.len() - start);
    if let Err(e) = uiommu_linux::uaccess::write_self(buf as u64, &bytes[start..start + n]) {
        return fail(e.0);
    }
    if off.is_none() {
        let _ = sys::lseek(fd, (pos + n as u64) as i64, libc::SEEK_SET);
    }
    Some(n as ssize_t)
}

/// `write`/`pwrite` of a fail-nth file: arm (or with 0 disarm) the countdown.
///
/// # Safety
/// `buf`/`count` as for `write(2)` (bad pointers answer EFAULT).
unsafe fn nth_write(fd: c_int, buf: *const c_void, count: size_t) -> Option<ssize_t> {
    let f = lookup(fd)?;
    if f.accmode == libc::O_RDONLY {
        return fail(libc::EBADF);
    }
    if f.tid != sys::gettid() {
        return fail(libc::EPERM);
    }
    // kstrtouint_from_user copies at most 23 bytes.
    let mut text = vec![0u8; count.min(23)];
    if let Err(e) = uiommu_linux::uaccess::read_self(buf as u64, &mut text) {
        return fail(e.0);
    }
    match parse_uint(&text) {
        Ok(n) => {
            Machine::set_fail_nth(n);
            Some(count as ssize_t)
        }
        Err(e) => fail(e),
    }
}

/// `read(2)` hook: `Some` if `fd` is a fail-nth file.
///
/// # Safety
/// As for `read(2)`.
#[inline]
pub unsafe fn read(fd: c_int, buf: *mut c_void, count: size_t) -> Option<ssize_t> {
    if REGISTERED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    // SAFETY: the caller's read() arguments.
    unsafe { nth_read(fd, buf, count, None) }
}

/// `write(2)` hook: `Some` if `fd` is a fail-nth file.
///
/// # Safety
/// As for `write(2)`.
#[inline]
pub unsafe fn write(fd: c_int, buf: *const c_void, count: size_t) -> Option<ssize_t> {
    if REGISTERED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    // SAFETY: the caller's write() arguments.
    unsafe { nth_write(fd, buf, count) }
}

type PreadFn = unsafe extern "C" fn(c_int, *mut c_void, size_t, off_t) -> ssize_t;
type PwriteFn = unsafe extern "C" fn(c_int, *const c_void, size_t, off_t) -> ssize_t;

crate::real::real_fn!(real_pread, c"pread", PreadFn);
crate::real::real_fn!(real_pread64, c"pread64", PreadFn);
crate::real::real_fn!(real_pwrite, c"pwrite", PwriteFn);
crate::real::real_fn!(real_pwrite64, c"pwrite64", PwriteFn);

unsafe fn pass_pread(real: Option<PreadFn>, fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real {
            Some(f) => f(fd, buf, count, off),
            None => libc::syscall(libc::SYS_pread64, fd, buf, count, off) as ssize_t,
        }
    }
}

unsafe fn pass_pwrite(real: Option<PwriteFn>, fd: c_int, buf: *const c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match real {
            Some(f) => f(fd, buf, count, off),
            None => libc::syscall(libc::SYS_pwrite64, fd, buf, count, off) as ssize_t,
        }
    }
}

/// `pread(2)`.
///
/// # Safety
/// As for libc's `pread`.
#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { nth_read(fd, buf, count, Some(off)) } {
        return r;
    }
    // SAFETY: as above.
    unsafe { pass_pread(real_pread(), fd, buf, count, off) }
}

/// `pread64(2)`.
///
/// # Safety
/// As for libc's `pread64`.
#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { nth_read(fd, buf, count, Some(off)) } {
        return r;
    }
    // SAFETY: as above.
    unsafe { pass_pread(real_pread64(), fd, buf, count, off) }
}

/// `pwrite(2)`.
///
/// # Safety
/// As for libc's `pwrite`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { nth_write(fd, buf, count) } {
        return r;
    }
    // SAFETY: as above.
    unsafe { pass_pwrite(real_pwrite(), fd, buf, count, off) }
}

/// `pwrite64(2)`.
///
/// # Safety
/// As for libc's `pwrite64`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { nth_write(fd, buf, count) } {
        return r;
    }
    // SAFETY: as above.
    unsafe { pass_pwrite(real_pwrite64(), fd, buf, count, off) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstrtouint_rules() {
        assert_eq!(parse_uint(b"0"), Ok(0));
        assert_eq!(parse_uint(b"17\n"), Ok(17));
        assert_eq!(parse_uint(b"+5"), Ok(5));
        assert_eq!(parse_uint(b"0x1f"), Ok(31));
        assert_eq!(parse_uint(b"010"), Ok(8));
        assert_eq!(parse_uint(b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse_uint(b"4294967296"), Err(libc::ERANGE));
        assert_eq!(parse_uint(b""), Err(libc::EINVAL));
        assert_eq!(parse_uint(b"1 "), Err(libc::EINVAL));
        assert_eq!(parse_uint(b"-1"), Err(libc::EINVAL));
        assert_eq!(parse_uint(b"08"), Err(libc::EINVAL));
    }

    #[test]
    fn fail_nth_paths() {
        let me = sys::getpid();
        let tid = sys::gettid();
        assert_eq!(target(format!("/proc/self/task/{tid}/fail-nth").as_bytes()), Some(tid));
        assert_eq!(target(format!("/proc/{me}/task/{tid}/fail-nth").as_bytes()), Some(tid));
        assert_eq!(target(b"/proc/thread-self/fail-nth"), Some(tid));
        assert_eq!(target(b"/proc/self/fail-nth"), Some(me as i32));
        assert_eq!(target(b"/proc/self/task/999999999/fail-nth"), None, "no such thread");
        assert_eq!(target(b"/proc/1/fail-nth").filter(|_| me != 1), None, "another process");
        assert_eq!(target(b"/proc/self/status"), None);
        assert_eq!(target(b"/proc/self/task/x/fail-nth"), None);
    }
}

//! `UIOMMU_TRACE`: one line per ioctl on an iommufd, like strace (`uiommu trace` sets it).
//!
//! `UIOMMU_TRACE` is a descriptor number (lines go to that inherited descriptor, e.g. `2`)
//! or a path (opened for appending by each process). For every ioctl the engine serves on an
//! iommufd, the command structure is snapshotted before and after the call (read from this
//! process's memory), the call is timed, and [`uiommu_uapi::describe::describe`] turns it
//! into a line, written with one `write(2)` (so lines of concurrent processes never mix);
//! lines from a process other than the one that started tracing carry `[pid N]`.
//!
//! Per-ioctl counts, errors and time are kept in a shared anonymous mapping created at load
//! time, so the children a program forks (the kernel selftests run every case in one) add to
//! the same table; the process that loaded the shim prints the summary at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use uiommu_core::Errno;
use uiommu_uapi::describe::{self, Summary, SummaryRow, SUMMARY_SLOTS};

/// The environment variable naming the trace output.
pub const TRACE_ENV: &str = "UIOMMU_TRACE";

/// Counters per slot: calls, errors, nanoseconds.
const WORDS: usize = SUMMARY_SLOTS * 3;

struct Tracer {
    fd: i32,
    root_pid: u32,
    counters: &'static [AtomicU64],
}

static TRACER: OnceLock<Option<Tracer>> = OnceLock::new();

// Set up at load time, before the program can fork, so children share the counters.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init_at_load;

extern "C" fn init_at_load() {
    let _ = tracer();
}

fn tracer() -> Option<&'static Tracer> {
    TRACER.get_or_init(setup).as_ref()
}

/// Runs `f` keeping the caller's `errno`.
fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let saved = unsafe { *libc::__errno_location() };
    let r = f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    r
}

fn setup() -> Option<Tracer> {
    let target = std::env::var_os(TRACE_ENV).filter(|v| !v.is_empty())?;
    let fd = match target.to_str().and_then(|s| s.parse::<i32>().ok()) {
        Some(fd) => fd,
        None => {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(target.as_bytes()).ok()?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
            // SAFETY: `path` is a NUL-terminated string alive across the call; the raw system
            // call bypasses the shim's own `open`.
            let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, 0o644) };
            if fd < 0 {
                return None;
            }
            fd as i32
        }
    };
    let len = WORDS * std::mem::size_of::<AtomicU64>();
    // SAFETY: a fresh shared anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is `len` bytes, page aligned (so aligned for AtomicU64), zeroed (a
    // valid AtomicU64 is any bit pattern), never unmapped, and only ever accessed atomically
    // (by this process and by forked children sharing it).
    let counters = unsafe { std::slice::from_raw_parts(p as *const AtomicU64, WORDS) };
    // SAFETY: registers a plain `extern "C" fn()` that stays valid for the process's life.
    unsafe { libc::atexit(summary_at_exit) };
    Some(Tracer { fd, root_pid: std::process::id(), counters })
}

fn write_all(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: `b` is a live byte slice; the raw system call bypasses the shim's `write`.
        let n = unsafe { libc::syscall(libc::SYS_write, fd, b.as_ptr(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// Read `buf.len()` bytes of this process's memory at `addr` (EFAULT-safe).
fn read_own(addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: the local iovec covers exactly `buf`; the remote one is checked by the kernel
    // against our own address space (a bad pointer is EFAULT, not a fault).
    let n =
        unsafe { libc::syscall(libc::SYS_process_vm_readv, libc::getpid(), &local, 1usize, &remote, 1usize, 0usize) };
    n == buf.len() as i64
}

/// The command structure at `arg`: `min(size, known size)` bytes, or nothing if unreadable.
fn snapshot(cmd: u32, arg: u64) -> Vec<u8> {
    let Some(info) = uiommu_uapi::cmd_info(uiommu_uapi::ioc_nr(cmd)).filter(|i| i.ioctl == cmd) else {
        return Vec::new();
    };
    let mut size = [0u8; 4];
    if !read_own(arg, &mut size) {
        return Vec::new();
    }
    let n = (u32::from_ne_bytes(size) as usize).clamp(4, info.size);
    let mut v = vec![0u8; n];
    if !read_own(arg, &mut v) {
        v.truncate(4);
        v.copy_from_slice(&size);
    }
    v
}

/// An ioctl being traced.
pub(crate) struct Pending {
    cmd: u32,
    arg: u64,
    before: Vec<u8>,
    start: Instant,
}

/// Whether `uiommu trace` is on (one atomic load): callers keep the traced path out of line.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    tracer().is_some()
}

/// Before an engine ioctl: `None` (one atomic load) unless tracing is on.
#[inline]
pub(crate) fn begin(cmd: u32, arg: u64) -> Option<Pending> {
    tracer()?;
    Some(keep_errno(|| Pending { cmd, arg, before: snapshot(cmd, arg), start: Instant::now() }))
}

/// After it: write the line and count the call (nothing if `begin` returned `None`).
#[inline]
pub(crate) fn end(p: Option<Pending>, result: &Result<i64, Errno>) {
    if let Some(p) = p {
        finish(p, result);
    }
}

fn finish(p: Pending, result: &Result<i64, Errno>) {
    let ns = p.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    let Some(t) = tracer() else { return };
    keep_errno(|| {
        let after = if result.is_ok() { snapshot(p.cmd, p.arg) } else { Vec::new() };
        let line = describe::describe(p.cmd, &p.before, &after, result.map_err(|e| e.0));
        let pid = std::process::id();
        let prefix = if pid == t.root_pid { String::new() } else { format!("[pid {pid}] ") };
        let text = format!("{prefix}{line} <{}>\n", describe::format_duration(ns));
        write_all(t.fd, text.as_bytes());
        let slot = describe::summary_slot(p.cmd);
        t.counters[slot * 3].fetch_add(1, Ordering::Relaxed);
        t.counters[slot * 3 + 1].fetch_add(result.is_err() as u64, Ordering::Relaxed);
        t.counters[slot * 3 + 2].fetch_add(ns, Ordering::Relaxed);
    });
}

/// The per-ioctl table, printed by the process that loaded the shim (forked children exit
/// without it: their calls are in the shared counters).
extern "C" fn summary_at_exit() {
    let Some(t) = tracer() else { return };
    if std::process::id() != t.root_pid {
        return;
    }
    let mut s = Summary::new();
    for slot in 0..SUMMARY_SLOTS {
        let calls = t.counters[slot * 3].load(Ordering::Relaxed);
        if calls > 0 {
            s.add(SummaryRow {
                name: describe::summary_slot_name(slot).to_string(),
                calls,
                errors: t.counters[slot * 3 + 1].load(Ordering::Relaxed),
                total_ns: t.counters[slot * 3 + 2].load(Ordering::Relaxed),
            });
        }
    }
    if s.calls() == 0 {
        return;
    }
    let text = format!("uiommu trace: summary for pid {} and its children\n{}", t.root_pid, s.render());
    write_all(t.fd, text.as_bytes());
}

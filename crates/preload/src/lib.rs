//! `libuiommu_preload.so`: an `LD_PRELOAD` shim that serves `/dev/iommu` from the uiommu
//! engine inside the program's own process.
//!
//! * [`interpose`]: the exported libc entry points (`open*`, `fopen*`, `ioctl`, `close`,
//!   `dup*`, `fcntl*`, `read`, `write`, `poll`, `ppoll`, `mmap*`, `munmap`, `close_range`,
//!   `closefrom`, `recvmsg`, `sigaction`, `signal`). A call on anything that is not an engine
//!   file is passed to the next definition (`dlsym(RTLD_NEXT)`, or the raw system call)
//!   after one lock-free flag check.
//! * [`fdtable`]: which fd numbers are engine files, hosted here or by another process (see
//!   there for the design, `fork` and `exec` behaviour).
//! * [`host`], [`client`], [`proto`]: one engine file shared by several processes — the
//!   process that opened `/dev/iommu` hosts it and serves the others over the descriptor
//!   itself (ARCHITECTURE.md, "Processes"). [`fork`]: fork handlers and recognising uiommu
//!   descriptors received with SCM_RIGHTS or inherited across `exec`.
//! * [`status`]: `/proc/PID/status` with the engine's VmPin/VmLck.
//! * [`mapping`]: live mmaps of iommufd regions (they keep the region's owner busy).
//! * [`platform`]: [`LinuxPlatform`], the engine's view of this process: memory from
//!   `uiommu-linux`, descriptors from the fd table.
//!
//! No Rust panic crosses the C boundary: engine calls run under `catch_unwind`, a panic
//! becomes `EIO` plus one line on stderr.

pub mod client;
pub mod failnth;
pub mod fdtable;
pub mod fork;
pub mod host;
pub mod interpose;
pub mod mapping;
pub mod platform;
pub mod proto;
mod real;
pub mod status;
pub mod sys;
mod trace;

pub use platform::LinuxPlatform;
pub use uiommu_linux::{current_caller, current_creds, my_pid, HostFd};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use uiommu_core::{Errno, Machine};

/// This process's machine (None until the first `/dev/iommu` open; a fork child starts
/// without one).
static MACHINE: Mutex<Option<Arc<Machine>>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();
static INIT: Once = Once::new();

pub(crate) fn machine_lock() -> MutexGuard<'static, Option<Arc<Machine>>> {
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's machine, created on first use (which also puts the fault handler for
/// syscall-free user copies in place).
pub fn machine() -> Arc<Machine> {
    init();
    let mut g = machine_lock();
    g.get_or_insert_with(|| {
        install_panic_hook();
        uiommu_linux::uaccess::install();
        Machine::new(Arc::new(LinuxPlatform::new()))
    })
    .clone()
}

/// The process's machine if it has one.
pub fn machine_if_any() -> Option<Arc<Machine>> {
    machine_lock().clone()
}

/// One-time set-up (also run as a library constructor): fork handlers, the private
/// descriptor hook, and recognising uiommu descriptors inherited across `exec`.
pub fn init() {
    INIT.call_once(|| {
        uiommu_linux::init();
        sys::set_private_hook(fdtable::mark_private);
        fork::register();
        fork::scan_inherited();
    });
}

extern "C" fn constructor() {
    init();
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

/// Makes panics print a single `uiommu: ...` line (they are turned into EIO by [`guard`]).
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic".to_string()
            };
            let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let line = format!("uiommu: internal error{loc}: {} (reported as EIO)\n", msg.replace('\n', " "));
            // Raw write: stderr may be anything, and the interposed write must not be used.
            let _ = sys::keep_errno(|| {
                // SAFETY: writes the bytes of a live String to fd 2.
                unsafe { libc::syscall(libc::SYS_write, 2, line.as_ptr(), line.len()) }
            });
        }));
    });
}

/// Runs an engine call, turning a panic into `EIO`.
#[inline]
pub fn guard<T>(f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Errno::EIO))
}

/// Drops a value (an engine file: its `Drop` runs engine tear-down) without letting a panic
/// escape.
pub fn drop_quietly<T>(x: T) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(x)));
}

//! `libuiommu_preload.so`: an `LD_PRELOAD` shim that serves `/dev/iommu` from the uiommu
//! engine inside the program's own process.
//!
//! * [`interpose`]: the exported libc entry points (`open*`, `ioctl`, `close`, `dup*`,
//!   `fcntl*`, `read`, `write`, `poll`, `ppoll`, `mmap*`, `munmap`, `close_range`,
//!   `closefrom`). A call on anything that is not an engine file is passed to the next
//!   definition (`dlsym(RTLD_NEXT)`, or the raw system call) after one lock-free flag check.
//! * [`mapping`]: live mmaps of iommufd regions (they keep the region's owner busy).
//! * [`fdtable`]: which fd numbers are engine files (see there for the design, `fork` and
//!   `exec` behaviour).
//! * [`platform`]: [`LinuxPlatform`], the engine's view of this process: user memory,
//!   physical page identities, descriptors.
//!
//! All `unsafe` code of uiommu lives in this crate (the engine forbids it); each block states
//! why it is sound. No Rust panic crosses the C boundary: engine calls run under
//! `catch_unwind`, a panic becomes `EIO` plus one line on stderr.

pub mod fdtable;
pub mod interpose;
pub mod mapping;
pub mod platform;
mod real;
pub mod sys;

pub use platform::{current_caller, HostFd, LinuxPlatform};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once, OnceLock};
use uiommu_core::{Errno, Machine};

static MACHINE: OnceLock<Arc<Machine>> = OnceLock::new();
static PANIC_HOOK: Once = Once::new();

/// The process's machine, created on first use.
pub fn machine() -> &'static Arc<Machine> {
    MACHINE.get_or_init(|| {
        install_panic_hook();
        Machine::new(Arc::new(LinuxPlatform))
    })
}

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
pub fn guard<T>(f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Errno::EIO))
}

/// Drops a value (an engine file: its `Drop` runs engine tear-down) without letting a panic
/// escape.
pub fn drop_quietly<T>(x: T) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(x)));
}

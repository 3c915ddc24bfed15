//! `uiommu-linux`: the engine's view of a real Linux process, without the shim.
//!
//! Everything `uiommu_core::Platform` needs that does not depend on the shim's descriptor
//! table lives here, so that an in-process engine over real process memory (the typed API)
//! can use it without linking the libc interposers:
//!
//! * [`memory`]: [`LinuxMemory`] — user memory, physical page identities (the region table),
//!   reads and writes at physical addresses, [`HostFd`] (a host file over a descriptor),
//!   dma-buf memory (memfds).
//! * [`uaccess`]: syscall-free, fault-safe copies of this process's own memory (an x86-64
//!   exception-table copy plus a SIGSEGV/SIGBUS handler).
//! * [`caller`]: the cached pid, credentials (capabilities, `UIOMMU_GRANT_CAPS`, rlimit) and
//!   a lazily-credentialed [`uiommu_core::Caller`] for the current process.
//! * [`maps`]: `/proc/PID/maps` parsing. [`sys`]: raw system-call wrappers and [`sys::Fd`],
//!   with a hook ([`sys::set_private_hook`]) for a shim that marks its private descriptors.
//!
//! Call [`init`] once before use (idempotent): it registers the `pthread_atfork` handlers
//! that keep the cached pid right in a fork child and keep the region table's locks from
//! being inherited held.

pub mod caller;
pub mod maps;
pub mod memory;
pub mod sys;
pub mod uaccess;

pub use caller::{current_caller, current_creds, granted_caps, my_pid};
pub use memory::{memory_file, HostFd, LinuxMemory};

use std::cell::RefCell;
use std::sync::Once;

static INIT: Once = Once::new();

thread_local! {
    /// Locks held from the atfork prepare handler to the parent/child handler.
    static HELD: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    let held = memory::fork_acquire();
    HELD.with(|h| *h.borrow_mut() = Some(held));
}

extern "C" fn parent() {
    if let Some(h) = HELD.with(|h| h.borrow_mut().take()) {
        memory::fork_release(h);
    }
}

extern "C" fn child() {
    fork_child();
    if let Some(h) = HELD.with(|h| h.borrow_mut().take()) {
        memory::fork_release(h);
    }
}

/// What a fork child must redo before anything else (also called by [`init`]'s handler).
pub fn fork_child() {
    caller::refresh_pid();
    uaccess::fork_child();
}

/// Registers the fork handlers (once). A shim that has its own handlers should call this
/// first, so that in the child this crate's state (the pid) is right before the shim's run.
pub fn init() {
    INIT.call_once(|| {
        caller::refresh_pid();
        // SAFETY: the three handlers are `extern "C" fn()` that stay valid for the life of
        // the process (this library is never unloaded while in use).
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

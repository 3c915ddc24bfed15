//! Asymmetric fences over `membarrier(2)`.

use std::sync::atomic::{compiler_fence, AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

#[cfg(all(target_os = "linux", not(miri)))]
mod sys {
    pub const CMD_QUERY: libc::c_int = 0;
    pub const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    pub const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    pub fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier takes no pointers.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) }
    }

    pub fn errno() -> i32 {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() }
    }
}

#[cold]
fn probe() -> bool {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let q = sys::membarrier(sys::CMD_QUERY);
        let ok = q >= 0
            && q & sys::CMD_PRIVATE_EXPEDITED as libc::c_long != 0
            && sys::membarrier(sys::CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
        STATE.store(if ok { YES } else { NO }, Ordering::Release);
        ok
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        STATE.store(NO, Ordering::Release);
        false
    }
}

/// Whether [`heavy`] works (the light side may then rely on it). Decided once per process
/// image; a fork child inherits the answer (and re-registers on first use).
#[inline]
pub fn available() -> bool {
    match STATE.load(Ordering::Acquire) {
        YES => true,
        NO => false,
        _ => probe(),
    }
}

/// The frequent side's fence: orders a preceding store before a following load *given*
/// that the other side uses [`heavy`]. A compiler fence only.
#[inline(always)]
pub fn light() {
    compiler_fence(Ordering::SeqCst);
}

/// The rare side's fence: every running thread of the process executes a full memory
/// barrier before this returns. Falls back to a sequentially consistent fence (which is
/// *not* enough against [`light`]) only if membarrier stopped working, which [`available`]
/// rules out in practice.
pub fn heavy() {
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(all(target_os = "linux", not(miri)))]
    if available() {
        for _ in 0..3 {
            if sys::membarrier(sys::CMD_PRIVATE_EXPEDITED) == 0 {
                return;
            }
            // A fork child's mm is not registered yet.
            if sys::errno() == libc::EPERM {
                let _ = sys::membarrier(sys::CMD_REGISTER_PRIVATE_EXPEDITED);
            }
        }
    }
}

//! `uiommu-sync`: making the uncontended path of the emulated kernel free of atomic
//! read-modify-write instructions.
//!
//! On the machines uiommu targets a locked instruction costs 20–40 cycles, and a kernel
//! ioctl that fails early costs ~100 ns; an emulated ioctl that took a mutex and two
//! reference counts would cost as much as the system call it replaces. Two tools:
//!
//! * [`asym`]: an *asymmetric fence*. The frequent side orders its store before a later load
//!   with only a compiler fence ([`asym::light`]); the rare side calls [`asym::heavy`],
//!   which runs `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` so every thread of the
//!   process executes a full barrier. Together they give the Dekker guarantee (of "I store
//!   A then load B" and "you store B then load A", at least one sees the other's store).
//! * [`BiasedMutex`]: a mutex biased towards the first thread that locks it: that thread
//!   locks and unlocks with plain stores until another thread locks it once, which revokes
//!   the bias for good (one heavy fence) and from then on everybody uses an ordinary mutex.
//!
//! Without `membarrier` (old kernels, seccomp, Miri) [`asym::available`] is false and both
//! fall back to ordinary atomics.

pub mod asym;
mod biased;

pub use biased::{BiasedMutex, BiasedMutexGuard};

/// A non-zero number unique to each live thread (threads that exited may have theirs
/// reused), without a system call or a TLS lookup: on x86-64 the thread pointer (`%fs:0`
/// holds its own address under the ABI's TLS variant II, glibc and musl alike); elsewhere
/// the address of a thread-local.
#[inline(always)]
pub fn thread_id() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    {
        let v: usize;
        // SAFETY: reads the word at %fs:0, which the x86-64 TLS ABI requires to be the
        // thread pointer itself; no memory is written.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) v, options(nostack, readonly, preserves_flags))
        };
        v
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
    {
        thread_local! {
            static ID: u8 = const { 0 };
        }
        ID.with(|x| x as *const u8 as usize)
    }
}

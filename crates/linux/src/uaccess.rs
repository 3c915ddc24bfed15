//! Copies to and from this process's own memory without a system call that still answer
//! EFAULT for bad pointers instead of crashing: the kernel's "exception table" trick.
//!
//! On x86-64 the copy is a short routine (`uiommu_linux_copy_user`, in `global_asm!`
//! below) whose only memory accesses are those of the copy, all between two labels.
//! [`install`] puts a SIGSEGV/SIGBUS handler in place (raw `rt_sigaction`, with SA_ONSTACK
//! and our own restorer). When a fault hits while the saved instruction pointer lies
//! between those labels, the handler moves it to the fixup label, which returns a non-zero
//! count of bytes not copied (the whole length for short copies; exact, kept by the CPU,
//! for an interrupted `rep movsb`). Any other fault is handed to the program's own
//! disposition, which the shim remembers instead of installing ([`intercept`]): a handler
//! is called as the kernel would (its mask and flags applied, SA_SIGINFO or not,
//! SA_RESETHAND honoured); SIG_DFL/SIG_IGN for a real fault restores the default action and
//! lets the instruction fault again, so the program dies as it would have.
//!
//! Until [`install`] succeeded (or on other architectures), [`read_self`]/[`write_self`] use
//! `process_vm_readv`/`process_vm_writev` on our own pid, which are slower but equally safe.
//!
//! Limits: a program that replaces the handler with a raw `rt_sigaction` system call
//! (bypassing libc's `sigaction`/`signal`, which the shim interposes) or that runs an ioctl
//! on a thread with SIGSEGV/SIGBUS blocked turns a bad ioctl pointer into a crash.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use uiommu_core::Errno;

use crate::sys;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.uiommu_linux_uaccess,\"ax\",@progbits",
    ".p2align 4",
    ".globl uiommu_linux_copy_user",
    ".hidden uiommu_linux_copy_user",
    ".type uiommu_linux_copy_user,@function",
    // usize uiommu_linux_copy_user(dst rdi, src rsi, len rdx): 0 when every byte was copied,
    // otherwise the number of bytes not copied (exact for the `rep movsb` of copies over 64
    // bytes; the whole length for the short ones).
    //
    // Up to 64 bytes the copy is a few overlapping moves with no loop (glibc's memcpy
    // shape): for 16..=32 bytes the first and the last 16, for 33..=64 the first and the
    // last 32, and likewise with 8- and 4-byte moves below 16; all loads come before any
    // store. Every instruction between `uiommu_linux_copy_begin` and
    // `uiommu_linux_copy_end` that touches memory touches the caller's `dst` or `src`; a
    // fault on any of them resumes at the fixup, which returns `rcx`: the length for a
    // short copy, the bytes left (kept exact by the CPU) for `rep movsb`.
    "uiommu_linux_copy_user:",
    ".globl uiommu_linux_copy_begin",
    ".hidden uiommu_linux_copy_begin",
    "uiommu_linux_copy_begin:",
    "    mov rcx, rdx",
    "    cmp rdx, 16",
    "    jb 30f",
    "    cmp rdx, 32",
    "    ja 40f",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmm1, xmmword ptr [rsi + rdx - 16]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    movdqu xmmword ptr [rdi + rdx - 16], xmm1",
    "    xor eax, eax",
    "    ret",
    "40:",
    "    cmp rdx, 64",
    "    ja 9f",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmm1, xmmword ptr [rsi + 16]",
    "    movdqu xmm2, xmmword ptr [rsi + rdx - 32]",
    "    movdqu xmm3, xmmword ptr [rsi + rdx - 16]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    movdqu xmmword ptr [rdi + 16], xmm1",
    "    movdqu xmmword ptr [rdi + rdx - 32], xmm2",
    "    movdqu xmmword ptr [rdi + rdx - 16], xmm3",
    "    xor eax, eax",
    "    ret",
    "30:",
    "    cmp rdx, 8",
    "    jb 31f",
    "    mov rax, qword ptr [rsi]",
    "    mov r8, qword ptr [rsi + rdx - 8]",
    "    mov qword ptr [rdi], rax",
    "    mov qword ptr [rdi + rdx - 8], r8",
    "    xor eax, eax",
    "    ret",
    "31:",
    "    cmp rdx, 4",
    "    jb 32f",
    "    mov eax, dword ptr [rsi]",
    "    mov r8d, dword ptr [rsi + rdx - 4]",
    "    mov dword ptr [rdi], eax",
    "    mov dword ptr [rdi + rdx - 4], r8d",
    "    xor eax, eax",
    "    ret",
    "32:",
    // 0..=3 bytes: the first, the middle and the last (one, two or three distinct bytes).
    "    test rdx, rdx",
    "    jz 33f",
    "    mov r9, rdx",
    "    shr r9, 1",
    "    movzx eax, byte ptr [rsi]",
    "    movzx r8d, byte ptr [rsi + r9]",
    "    movzx r10d, byte ptr [rsi + rdx - 1]",
    "    mov byte ptr [rdi], al",
    "    mov byte ptr [rdi + r9], r8b",
    "    mov byte ptr [rdi + rdx - 1], r10b",
    "33:",
    "    xor eax, eax",
    "    ret",
    // usize uiommu_linux_copy_out(dst rdi, src rsi, len rdx): the same, for copies out of a
    // reply the caller has just built field by field. For 8..=32 bytes it reads the source
    // in 4-byte pieces, which store forwarding serves from those field stores (a 16-byte
    // load spanning several of them would wait until they reach the cache, a dozen cycles
    // or so), and writes the user 8 bytes at a time: groups at 0 and n-8, and for more than
    // 16 bytes first at 8 and n-16 (groups may overlap).
    ".globl uiommu_linux_copy_out",
    ".hidden uiommu_linux_copy_out",
    "uiommu_linux_copy_out:",
    "    mov rcx, rdx",
    "    cmp rdx, 8",
    "    jb 31b",
    "    cmp rdx, 32",
    "    ja 40b",
    "    cmp rdx, 16",
    "    jbe 51f",
    // 17..=32 bytes: the two middle groups here, the two outer ones below.
    "    mov eax, dword ptr [rsi + 8]",
    "    mov r8d, dword ptr [rsi + 12]",
    "    shl r8, 32",
    "    or rax, r8",
    "    mov qword ptr [rdi + 8], rax",
    "    mov eax, dword ptr [rsi + rdx - 16]",
    "    mov r8d, dword ptr [rsi + rdx - 12]",
    "    shl r8, 32",
    "    or rax, r8",
    "    mov qword ptr [rdi + rdx - 16], rax",
    "51:",
    "    mov eax, dword ptr [rsi]",
    "    mov r8d, dword ptr [rsi + 4]",
    "    shl r8, 32",
    "    or rax, r8",
    "    mov qword ptr [rdi], rax",
    "    mov eax, dword ptr [rsi + rdx - 8]",
    "    mov r8d, dword ptr [rsi + rdx - 4]",
    "    shl r8, 32",
    "    or rax, r8",
    "    mov qword ptr [rdi + rdx - 8], rax",
    "    xor eax, eax",
    "    ret",
    "9:",
    "    rep movsb",
    ".globl uiommu_linux_copy_end",
    ".hidden uiommu_linux_copy_end",
    "uiommu_linux_copy_end:",
    "    xor eax, eax",
    "    ret",
    ".globl uiommu_linux_copy_fixup",
    ".hidden uiommu_linux_copy_fixup",
    "uiommu_linux_copy_fixup:",
    "    mov rax, rcx",
    "    ret",
    ".size uiommu_linux_copy_user, . - uiommu_linux_copy_user",
    ".p2align 4",
    ".globl uiommu_linux_restore_rt",
    ".hidden uiommu_linux_restore_rt",
    ".type uiommu_linux_restore_rt,@function",
    // The signal return trampoline (what glibc's __restore_rt is): rt_sigreturn().
    "uiommu_linux_restore_rt:",
    "    mov rax, 15",
    "    syscall",
    "    ud2",
    ".size uiommu_linux_restore_rt, . - uiommu_linux_restore_rt",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn uiommu_linux_copy_user(dst: *mut u8, src: *const u8, len: usize) -> usize;
    fn uiommu_linux_copy_out(dst: *mut u8, src: *const u8, len: usize) -> usize;
    fn uiommu_linux_restore_rt();
    static uiommu_linux_copy_begin: u8;
    static uiommu_linux_copy_end: u8;
    static uiommu_linux_copy_fixup: u8;
}

// ---------------------------------------------------------------------------------------
// Inline copies: an exception table
// ---------------------------------------------------------------------------------------
//
// A call into the routine above costs more than the copy itself (a cheap ioctl makes two or
// three). So copies of 4 to 32 bytes are inlined into their callers as `asm!` blocks, and
// every instruction of theirs that touches the program's memory is listed in the
// `uiommu_extable` section as a pair of 32-bit offsets, relative to the entry itself as in
// the kernel: the instruction, then where to resume when it faults. The resume point (in
// `.text.uiommu_linux_fixup`) sets the block's "bytes not copied" to the whole length and
// jumps to the block's end. The fault handler looks the faulting address up there.
//
// Reads load the user bytes into registers and then store them in the buffer; writes read
// the (just built) buffer in 4-byte pieces, for store forwarding, as `uiommu_linux_copy_out`
// does, and store 8 bytes at a time. Numeric labels only, as inline assembly may be
// duplicated by the compiler (each copy then lists its own instructions).

#[cfg(target_arch = "x86_64")]
extern "C" {
    static __start_uiommu_extable: u8;
    static __stop_uiommu_extable: u8;
}

/// The resume address for a fault at `rip` in an inline copy, if it is one.
#[cfg(target_arch = "x86_64")]
fn extable_fixup(rip: usize) -> Option<usize> {
    // SAFETY: the linker defines both symbols around the section of 4-byte-aligned pairs of
    // i32 offsets that the `asm!` blocks below emit; only their addresses are taken here.
    let (start, stop) =
        unsafe { (&__start_uiommu_extable as *const u8 as usize, &__stop_uiommu_extable as *const u8 as usize) };
    let mut at = start;
    while at + 8 <= stop {
        // SAFETY: `at..at + 8` lies inside the section (checked above), which is readable.
        let (insn, fix) = unsafe { (std::ptr::read(at as *const i32), std::ptr::read((at + 4) as *const i32)) };
        if at.wrapping_add_signed(insn as isize) == rip {
            return Some((at + 4).wrapping_add_signed(fix as isize));
        }
        at += 8;
    }
    None
}

/// One inline copy: `$body` (whose instructions that touch user memory carry the labels
/// `$labels`, from 2, 3, 6 and 7), then the shared fixup and table entries. `$a` and `$b`
/// are scratch registers of class `$class`. Evaluates to the bytes not copied (0, or `$n`).
#[cfg(target_arch = "x86_64")]
macro_rules! inline_copy {
    ([$($label:literal),*], [$($body:expr),* $(,)?], $class:ident, $dst:expr, $src:expr, $n:expr) => {{
        let left: usize;
        core::arch::asm!(
            $($body,)*
            "xor {left:e}, {left:e}",
            "4:",
            ".pushsection .text.uiommu_linux_fixup,\"ax\",@progbits",
            "5:",
            "mov {left}, {n}",
            "jmp 4b",
            ".popsection",
            ".pushsection uiommu_extable,\"aR\",@progbits",
            ".balign 4",
            $(concat!(".long ", $label, "b - ., 5b - ."),)*
            ".popsection",
            left = out(reg) left,
            dst = in(reg) $dst,
            src = in(reg) $src,
            n = in(reg) $n,
            a = out($class) _,
            b = out($class) _,
            options(nostack),
        );
        left
    }};
}

/// A read of the first and the last `$width` bytes (`$ptr`-sized moves through `$a`/`$b`):
/// both user loads (labels 2 and 3) before the stores.
#[cfg(target_arch = "x86_64")]
macro_rules! read_ends {
    ($class:ident, $mov:literal, $ptr:literal, $a:literal, $b:literal, $width:literal, $dst:expr, $src:expr, $n:expr) => {
        inline_copy!(
            ["2", "3"],
            [
                concat!("2: ", $mov, " ", $a, ", ", $ptr, " ptr [{src}]"),
                concat!("3: ", $mov, " ", $b, ", ", $ptr, " ptr [{src} + {n} - ", $width, "]"),
                concat!($mov, " ", $ptr, " ptr [{dst}], ", $a),
                concat!($mov, " ", $ptr, " ptr [{dst} + {n} - ", $width, "], ", $b),
            ],
            $class,
            $dst,
            $src,
            $n
        )
    };
}

/// A write of 8-byte groups at the offsets given (with their user-store labels), each read
/// from the source in two 4-byte pieces.
#[cfg(target_arch = "x86_64")]
macro_rules! write_groups {
    ($(($label:literal, $off:literal)),*; $dst:expr, $src:expr, $n:expr) => {
        inline_copy!(
            [$($label),*],
            [$(
                concat!("mov {a:e}, dword ptr [{src} + ", $off, "]"),
                concat!("mov {b:e}, dword ptr [{src} + ", $off, " + 4]"),
                "shl {b}, 32",
                "or {a}, {b}",
                concat!($label, ": mov qword ptr [{dst} + ", $off, "], {a}"),
            )*],
            reg,
            $dst,
            $src,
            $n
        )
    };
}

/// Copies `n` (4..=32) bytes from user `src` to our `dst`; returns the bytes not copied.
///
/// # Safety
/// `dst` is valid for `n` bytes of writes; the fault handler is installed.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn read_small(dst: *mut u8, src: *const u8, n: usize) -> usize {
    // SAFETY: each block lists its user accesses in the exception table; `dst` is ours.
    unsafe {
        if n >= 16 {
            read_ends!(xmm_reg, "movdqu", "xmmword", "{a}", "{b}", "16", dst, src, n)
        } else if n >= 8 {
            read_ends!(reg, "mov", "qword", "{a}", "{b}", "8", dst, src, n)
        } else {
            read_ends!(reg, "mov", "dword", "{a:e}", "{b:e}", "4", dst, src, n)
        }
    }
}

/// Copies `n` (4..=32) bytes from our `src` to user `dst`; returns the bytes not copied.
///
/// # Safety
/// `src` is valid for `n` bytes of reads; the fault handler is installed; `dst` is memory
/// the program asked the emulated kernel to write.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn write_small(dst: *mut u8, src: *const u8, n: usize) -> usize {
    // SAFETY: each block lists its user accesses in the exception table; `src` is ours.
    unsafe {
        if n < 8 {
            return inline_copy!(
                ["2", "3"],
                [
                    "mov {a:e}, dword ptr [{src}]",
                    "mov {b:e}, dword ptr [{src} + {n} - 4]",
                    "2: mov dword ptr [{dst}], {a:e}",
                    "3: mov dword ptr [{dst} + {n} - 4], {b:e}",
                ],
                reg,
                dst,
                src,
                n
            );
        }
        if n > 16 {
            // The two middle groups (they may overlap each other and the outer ones).
            let left = write_groups!(("2", "8"), ("3", "{n} - 16"); dst, src, n);
            if left != 0 {
                return left;
            }
        }
        write_groups!(("2", "0"), ("3", "{n} - 8"); dst, src, n)
    }
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether the fault handler is in place (fast copies are in use).
#[inline(always)]
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// The result of one of the copy routines: the number of bytes not copied.
#[inline(always)]
fn copied(left: usize) -> Result<(), Errno> {
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

#[inline(always)]
fn range_ok(addr: u64, len: usize) -> bool {
    // Wrapping ranges and the kernel half are never user memory.
    addr.checked_add(len as u64).is_some_and(|end| end <= 0x0000_8000_0000_0000)
}

/// [`read_self`] when the fault handler is installed and the range is plain user memory
/// (`None` otherwise: take the general path).
#[inline(always)]
pub(crate) fn read_self_fast(addr: u64, buf: &mut [u8]) -> Option<Result<(), Errno>> {
    #[cfg(target_arch = "x86_64")]
    if installed() && range_ok(addr, buf.len()) {
        let (dst, src, n) = (buf.as_mut_ptr(), addr as usize as *const u8, buf.len());
        return Some(copied(if (4..=32).contains(&n) {
            // SAFETY: the handler is installed, so a fault at an instruction of the inline
            // copy resumes at its fixup (exception table); `buf` is ours exclusively.
            unsafe { read_small(dst, src, n) }
        } else {
            // SAFETY: the handler is installed, so a fault inside the routine resumes at its
            // fixup; `buf` is ours exclusively; `addr` is only read.
            unsafe { uiommu_linux_copy_user(dst, src, n) }
        }));
    }
    let _ = (addr, buf);
    None
}

/// [`write_self`] when the fault handler is installed and the range is plain user memory
/// (`None` otherwise: take the general path). The source is read in the way that suits a
/// reply just built field by field (`uiommu_linux_copy_out`).
#[inline(always)]
pub(crate) fn write_self_fast(addr: u64, buf: &[u8]) -> Option<Result<(), Errno>> {
    #[cfg(target_arch = "x86_64")]
    if installed() && range_ok(addr, buf.len()) {
        let (dst, src, n) = (addr as usize as *mut u8, buf.as_ptr(), buf.len());
        return Some(copied(if (4..=32).contains(&n) {
            // SAFETY: the handler is installed, so a fault at an instruction of the inline
            // copy resumes at its fixup (exception table); `addr` is memory the program
            // asked the emulated kernel to write; `buf` is only read.
            unsafe { write_small(dst, src, n) }
        } else {
            // SAFETY: the handler is installed, so a fault inside the routine resumes at its
            // fixup; `addr` is memory the program asked the emulated kernel to write (its
            // contract, as with a real kernel); `buf` is only read.
            unsafe { uiommu_linux_copy_out(dst, src, n) }
        }));
    }
    let _ = (addr, buf);
    None
}

/// Copies `buf.len()` bytes from `addr` in this process. EFAULT if unreadable.
#[inline]
pub fn read_self(addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    if buf.is_empty() {
        return Ok(());
    }
    if !range_ok(addr, buf.len()) {
        return Err(Errno::EFAULT);
    }
    read_self_fast(addr, buf).unwrap_or_else(|| sys::vm_read(crate::my_pid(), addr, buf).map_err(|_| Errno::EFAULT))
}

/// Copies `buf` to `addr` in this process. EFAULT if unwritable.
#[inline]
pub fn write_self(addr: u64, buf: &[u8]) -> Result<(), Errno> {
    if buf.is_empty() {
        return Ok(());
    }
    if !range_ok(addr, buf.len()) {
        return Err(Errno::EFAULT);
    }
    write_self_fast(addr, buf).unwrap_or_else(|| sys::vm_write(crate::my_pid(), addr, buf).map_err(|_| Errno::EFAULT))
}

// ---------------------------------------------------------------------------------------
// Dispositions
// ---------------------------------------------------------------------------------------

/// The kernel's `struct sigaction` on x86-64 (what `rt_sigaction` takes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelSigaction {
    /// Handler address, or SIG_DFL (0) / SIG_IGN (1).
    pub handler: usize,
    /// SA_* flags.
    pub flags: u64,
    /// Signal return trampoline (with SA_RESTORER).
    pub restorer: usize,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

const SA_RESTORER: u64 = 0x0400_0000;

fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>, old: Option<&mut KernelSigaction>) -> sys::SysResult<()> {
    let newp = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    let oldp = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigaction);
    // SAFETY: newp/oldp are null or valid kernel sigaction structs; sigsetsize is 8.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, newp, oldp, 8usize) };
    if r < 0 {
        Err(sys::errno())
    } else {
        Ok(())
    }
}

/// The program's own disposition of one signal, kept while ours is installed. Read by the
/// signal handler, so plain atomics (a torn read during a concurrent `sigaction` is no worse
/// than the kernel's own race between the two).
struct ProgAction {
    handler: AtomicUsize,
    flags: AtomicU64,
    restorer: AtomicUsize,
    mask: AtomicU64,
}

impl ProgAction {
    const fn new() -> ProgAction {
        ProgAction {
            handler: AtomicUsize::new(0),
            flags: AtomicU64::new(0),
            restorer: AtomicUsize::new(0),
            mask: AtomicU64::new(0),
        }
    }
    fn get(&self) -> KernelSigaction {
        KernelSigaction {
            handler: self.handler.load(Ordering::Acquire),
            flags: self.flags.load(Ordering::Acquire),
            restorer: self.restorer.load(Ordering::Acquire),
            mask: self.mask.load(Ordering::Acquire),
        }
    }
    fn set(&self, a: &KernelSigaction) {
        self.flags.store(a.flags, Ordering::Release);
        self.restorer.store(a.restorer, Ordering::Release);
        self.mask.store(a.mask, Ordering::Release);
        self.handler.store(a.handler, Ordering::Release);
    }
}

static PROG: [ProgAction; 2] = [ProgAction::new(), ProgAction::new()];
/// Serialises installation and program `sigaction` calls on the two signals. A spin lock
/// (held for a few stores) so that a fork child can reset it.
static LOCK: AtomicBool = AtomicBool::new(false);

struct LockGuard;

fn lock() -> LockGuard {
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    LockGuard
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

fn slot(sig: i32) -> Option<&'static ProgAction> {
    match sig {
        libc::SIGSEGV => Some(&PROG[0]),
        libc::SIGBUS => Some(&PROG[1]),
        _ => None,
    }
}

/// Installs the fault handler for SIGSEGV and SIGBUS (once; later calls return the first
/// outcome). The dispositions found are remembered as the program's. Returns whether fast
/// copies are now in use (always false off x86-64).
pub fn install() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if installed() {
            return true;
        }
        let _g = lock();
        if installed() {
            return true;
        }
        let ours = KernelSigaction {
            handler: on_fault as *const () as usize,
            flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART) as u64 | SA_RESTORER,
            restorer: uiommu_linux_restore_rt as *const () as usize,
            mask: 0,
        };
        let mut olds = [KernelSigaction::default(); 2];
        for (i, sig) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate() {
            if rt_sigaction(sig, None, Some(&mut olds[i])).is_err() {
                return false;
            }
        }
        for (i, sig) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate() {
            PROG[i].set(&olds[i]);
            if rt_sigaction(sig, Some(&ours), None).is_err() {
                // Put back what was there; stay on the slow path.
                for (j, s) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate().take(i + 1) {
                    let _ = rt_sigaction(s, Some(&olds[j]), None);
                }
                return false;
            }
        }
        INSTALLED.store(true, Ordering::Release);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A program's `sigaction(sig, new, old)` while the handler may be installed: for SIGSEGV
/// and SIGBUS with the handler in place, `new` only replaces the remembered program
/// disposition, `old` receives the previous one and the result is `None`. Otherwise runs
/// `pass` (the real call) under the same lock, so an installation cannot lose it, and
/// returns its result.
pub fn intercept<R>(
    sig: i32,
    new: Option<KernelSigaction>,
    old: &mut KernelSigaction,
    pass: impl FnOnce() -> R,
) -> Option<R> {
    let Some(s) = slot(sig) else { return Some(pass()) };
    let _g = lock();
    if !installed() {
        return Some(pass());
    }
    *old = s.get();
    if let Some(n) = new {
        s.set(&n);
    }
    None
}

/// After `fork()` in the child: the lock may have been held by another thread of the parent.
pub(crate) fn fork_child() {
    // Only the forking thread exists in the child: nobody else can be inside the lock.
    LOCK.store(false, Ordering::Release);
}

#[cfg(target_arch = "x86_64")]
fn sig_bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

#[cfg(target_arch = "x86_64")]
extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let uc = uctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO handler; taking the
    // addresses of the labels reads nothing.
    unsafe {
        let rip = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        let begin = &uiommu_linux_copy_begin as *const u8 as usize;
        let end = &uiommu_linux_copy_end as *const u8 as usize;
        if (begin..end).contains(&rip) {
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = &uiommu_linux_copy_fixup as *const u8 as usize as i64;
            return;
        }
        if let Some(fix) = extable_fixup(rip) {
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = fix as i64;
            return;
        }
    }
    // SAFETY: info and uctx are the kernel's, passed on unchanged.
    unsafe { chain(sig, info, uctx) }
}

/// Gives a signal that is not ours to the program's disposition.
///
/// # Safety
/// Only from the signal handler, with the kernel's `info` and `uctx`.
#[cfg(target_arch = "x86_64")]
unsafe fn chain(sig: i32, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let Some(s) = slot(sig) else { return };
    let a = s.get();
    // SAFETY: info is the kernel's siginfo.
    let code = unsafe { (*info).si_code };
    if a.handler == libc::SIG_DFL || a.handler == libc::SIG_IGN {
        if a.handler == libc::SIG_IGN && code <= 0 {
            return; // sent by a process, and ignored
        }
        // The default action (terminate with a core dump). The kernel forces it for a
        // synchronous fault even when the signal is ignored.
        let dfl = KernelSigaction { handler: libc::SIG_DFL, ..Default::default() };
        let _ = rt_sigaction(sig, Some(&dfl), None);
        if code <= 0 {
            // Not a fault: send it again; it is delivered when the handler returns.
            // SAFETY: tgkill has no memory arguments.
            unsafe { libc::syscall(libc::SYS_tgkill, sys::getpid(), sys::gettid(), sig) };
        }
        // A fault: returning re-executes the instruction, which faults again.
        return;
    }
    if a.flags & libc::SA_RESETHAND as u64 != 0 {
        s.set(&KernelSigaction::default());
    }
    // The mask the kernel would have applied for the program's handler.
    let uc = uctx.cast::<libc::ucontext_t>();
    // SAFETY: uc is the kernel's ucontext; its signal mask starts with the 64-bit kernel set.
    let interrupted = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*uc).uc_sigmask).cast::<u64>()) };
    let mut mask = interrupted | a.mask;
    if a.flags & libc::SA_NODEFER as u64 == 0 {
        mask |= sig_bit(sig);
    }
    // SAFETY: mask is a valid 8-byte kernel sigset; the old set is not wanted (sigreturn
    // restores the interrupted mask).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if a.flags & libc::SA_SIGINFO as u64 != 0 {
        // SAFETY: the program registered this address as an SA_SIGINFO handler.
        let f = unsafe {
            std::mem::transmute::<usize, extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void)>(a.handler)
        };
        f(sig, info, uctx);
    } else {
        // SAFETY: the program registered this address as a one-argument handler.
        let f = unsafe { std::mem::transmute::<usize, extern "C" fn(i32)>(a.handler) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_copies_fault_safely() {
        let fast = install();
        let src = *b"0123456789abcdef";
        let mut dst = [0u8; 16];
        read_self(src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(dst, src);
        let mut out = [0u8; 4];
        write_self(out.as_mut_ptr() as u64, b"wxyz").unwrap();
        assert_eq!(&out, b"wxyz");
        assert_eq!(read_self(0, &mut dst), Err(Errno::EFAULT));
        assert_eq!(read_self(8, &mut dst), Err(Errno::EFAULT));
        assert_eq!(write_self(16, b"x"), Err(Errno::EFAULT));
        assert_eq!(read_self(u64::MAX - 3, &mut dst), Err(Errno::EFAULT));
        // A page that ends in a hole: the readable part is not enough.
        // SAFETY: a fresh mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the second page of our own mapping.
        unsafe { libc::munmap((p as usize + 4096) as *mut libc::c_void, 4096) };
        let mut big = [0u8; 64];
        assert_eq!(read_self(p as u64 + 4096 - 32, &mut big), Err(Errno::EFAULT));
        read_self(p as u64 + 4096 - 64, &mut big).unwrap();
        // Each path of the copy routine (1-3, 4-7, 8-15, 16-32, 33-64 bytes, rep movsb):
        // exact bytes, nothing written around them, and faults on reads and writes.
        for len in 0..=130usize {
            let src: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut dst = vec![0xeeu8; len + 32];
            write_self(dst.as_mut_ptr() as u64 + 16, &src).unwrap();
            assert!(dst[..16].iter().chain(&dst[16 + len..]).all(|&b| b == 0xee), "canary {len}");
            assert_eq!(&dst[16..16 + len], &src[..], "copy {len}");
            let mut back = vec![0u8; len];
            read_self(dst.as_ptr() as u64 + 16, &mut back).unwrap();
            assert_eq!(back, src, "read {len}");
        }
        for len in [1usize, 2, 3, 4, 5, 7, 8, 13, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 200, 4096] {
            let mut b = vec![0u8; len];
            let at = p as u64 + 4096 - len as u64 / 2;
            if len > 1 {
                assert_eq!(read_self(at, &mut b), Err(Errno::EFAULT), "read {len}");
                assert_eq!(write_self(at, &b), Err(Errno::EFAULT), "write {len}");
            }
            let ok = p as u64 + 4096 - len as u64;
            b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            write_self(ok, &b).unwrap();
            let mut c = vec![0u8; len];
            read_self(ok, &mut c).unwrap();
            assert_eq!(b, c, "round trip {len}");
        }
        // SAFETY: unmapping our own page.
        unsafe { libc::munmap(p, 4096) };
        if cfg!(target_arch = "x86_64") {
            assert!(fast);
        }
    }
}

//! Who is calling: the cached pid of this process and the credentials the emulated kernel
//! consults (effective capabilities, uid, RLIMIT_MEMLOCK).

use std::sync::atomic::{AtomicU32, Ordering};
use uiommu_core::{Caller, Creds};

use crate::sys;

/// This process's pid, cached (0 = not known yet). Reset in a fork child ([`crate::fork_child`]).
static MY_PID: AtomicU32 = AtomicU32::new(0);

/// This process's pid without a system call (after the first).
///
/// Kept right across `fork()` by the `pthread_atfork` child handler [`crate::init`]
/// registers; a child made by a raw `clone`/`fork` system call that bypasses libc keeps the
/// parent's value.
#[inline]
pub fn my_pid() -> u32 {
    match MY_PID.load(Ordering::Relaxed) {
        0 => refresh_pid(),
        p => p,
    }
}

/// The cached pid, 0 while not known (never a real caller's pid).
#[inline(always)]
pub(crate) fn my_pid_cached() -> u32 {
    MY_PID.load(Ordering::Relaxed)
}

/// Asks the kernel again (after a fork).
#[cold]
pub fn refresh_pid() -> u32 {
    let p = sys::getpid();
    MY_PID.store(p, Ordering::Relaxed);
    p
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_RESOURCE: u32 = 24;

/// Capabilities the emulated kernel grants on top of the process's real effective set,
/// from `UIOMMU_GRANT_CAPS` (comma separated: `sys_resource`, `ipc_lock`), which
/// `uiommu run --grant-cap` sets. For sandboxes whose bounding set withholds a capability the
/// program legitimately expects (e.g. root in a container without CAP_SYS_RESOURCE).
pub fn granted_caps() -> u32 {
    static GRANTED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        let v = std::env::var("UIOMMU_GRANT_CAPS").unwrap_or_default();
        v.split(',').fold(0, |acc, n| match n.trim().trim_start_matches("cap_") {
            "sys_resource" => acc | (1 << CAP_SYS_RESOURCE),
            "ipc_lock" => acc | (1 << CAP_IPC_LOCK),
            _ => acc,
        })
    })
}

/// The calling thread's credentials as the kernel sees them now (three system calls:
/// capabilities and limits can change at any time, e.g. a test dropping CAP_IPC_LOCK with
/// libcap), plus the granted capabilities.
pub fn current_creds() -> Creds {
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are valid, writable capget arguments for version 3 (two data
    // elements).
    let ok = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) } == 0;
    let eff = if ok { data[0].effective } else { 0 };
    // SAFETY: an all-zero rlimit is a valid value; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: rl is a valid, writable struct rlimit.
    let memlock_limit =
        if unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_MEMLOCK, &mut rl as *mut libc::rlimit) } == 0 {
            if rl.rlim_cur == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                rl.rlim_cur
            }
        } else {
            u64::MAX
        };
    let granted = granted_caps();
    Creds {
        // SAFETY: getuid has no preconditions.
        uid: unsafe { libc::syscall(libc::SYS_getuid) } as u32,
        cap_sys_resource: (eff | granted) & (1 << CAP_SYS_RESOURCE) != 0,
        cap_ipc_lock: (eff | granted) & (1 << CAP_IPC_LOCK) != 0,
        memlock_limit,
    }
}

/// The calling thread as the engine should see it: this process's pid, credentials
/// fetched only if the command needs them. No system call on the way.
#[inline]
pub fn current_caller() -> Caller {
    Caller::lazy(my_pid(), current_creds)
}

//! Fault injection: the kernel's per-task `fail-nth` countdown over the engine's own
//! failure sites.
//!
//! Each place where the kernel can fail an iommufd operation (allocating an object, an area
//! or a page store, pinning user pages, charging RLIMIT_MEMLOCK, mapping into a domain, a
//! temporary buffer, ...) calls [`fail_point`] *before* it has any side effect. While the
//! calling thread's countdown is armed, every site reached decrements it and the site that
//! takes it to zero fails with the errno the kernel's site would give. Every such failure
//! must unwind completely; the engine's `fail_sweep` test proves it call by call.
//!
//! Like `/proc/<tid>/fail-nth` the countdown belongs to the thread, not to a machine or a
//! context: [`Machine::set_fail_nth`] arms it for the calling thread only.

use crate::errno::{Errno, Result};
use crate::machine::Machine;
use std::cell::Cell;

thread_local! {
    /// Remaining sites before the failing one (0 = disarmed).
    static FAIL_NTH: Cell<u32> = const { Cell::new(0) };
    /// The last site that was made to fail on this thread.
    static LAST: Cell<Option<FailSite>> = const { Cell::new(None) };
}

/// The kinds of failure site, each with the errno its kernel counterpart returns
/// (selftest_mock.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailSite {
    /// Allocating an object and its id (`iommufd_object_alloc`): ENOMEM.
    Object,
    /// Allocating engine memory: an area, a page store, a domain, an attach handle, a mock
    /// device, an event, a descriptor: ENOMEM.
    Alloc,
    /// A temporary buffer (pin batches, bitmaps, copies of user arrays): ENOMEM.
    TempBuf,
    /// Pinning user or file pages (`pfn_reader_user_pin`): EFAULT.
    Pin,
    /// Charging pinned pages to RLIMIT_MEMLOCK / `pinned_vm`: ENOMEM.
    Charge,
    /// Mapping a run into an IO page table (table allocation): ENOMEM.
    DomainMap,
    /// Recording an access's pinned pages (`iopt_pages_fill_xarray`'s xarray store): EINVAL.
    Xarray,
    /// Reading or writing one page for an access (`iopt_pages_rw_page`): EINVAL.
    RwPage,
    /// Looking an object up by id: ENOENT.
    Lookup,
}

impl FailSite {
    /// The errno an injected failure at this site returns.
    pub(crate) fn errno(self) -> Errno {
        match self {
            FailSite::Object | FailSite::Alloc | FailSite::TempBuf | FailSite::Charge | FailSite::DomainMap => {
                Errno::ENOMEM
            }
            FailSite::Pin => Errno::EFAULT,
            FailSite::Xarray | FailSite::RwPage => Errno::EINVAL,
            FailSite::Lookup => Errno::ENOENT,
        }
    }
}

/// A failure site: `Err` if this is the site the calling thread's countdown selected.
/// Whether any thread ever armed fail-nth (only ever goes from false to true).
static EVER_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[inline]
pub(crate) fn fail_point(site: FailSite) -> Result<()> {
    // Until some thread arms its countdown, no site needs the thread-local at all (in a
    // shared library every thread-local access is a call).
    if !EVER_ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    FAIL_NTH.with(|c| match c.get() {
        0 => Ok(()),
        1 => {
            c.set(0);
            LAST.with(|l| l.set(Some(site)));
            Err(site.errno())
        }
        n => {
            c.set(n - 1);
            Ok(())
        }
    })
}

impl Machine {
    /// Arm the calling thread's countdown: with `n ≥ 1` the `n`-th failure site this thread
    /// reaches fails (like writing `n` to `/proc/thread-self/fail-nth`); 0 disarms it.
    pub fn set_fail_nth(n: u32) {
        if n != 0 {
            EVER_ARMED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        FAIL_NTH.with(|c| c.set(n));
    }

    /// The calling thread's remaining count: 0 once the failure was injected (or when it
    /// was never armed), otherwise how many more sites must be reached before one fails.
    pub fn fail_nth() -> u32 {
        FAIL_NTH.with(|c| c.get())
    }

    /// The kind of the last site made to fail on this thread (for diagnostics).
    pub fn last_injected_site() -> Option<&'static str> {
        LAST.with(|l| l.get()).map(|s| match s {
            FailSite::Object => "object",
            FailSite::Alloc => "alloc",
            FailSite::TempBuf => "temp-buffer",
            FailSite::Pin => "pin",
            FailSite::Charge => "charge",
            FailSite::DomainMap => "domain-map",
            FailSite::Xarray => "xarray",
            FailSite::RwPage => "rw-page",
            FailSite::Lookup => "lookup",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_fails_exactly_the_nth_site() {
        Machine::set_fail_nth(3);
        assert_eq!(fail_point(FailSite::Alloc), Ok(()));
        assert_eq!(Machine::fail_nth(), 2);
        assert_eq!(fail_point(FailSite::Pin), Ok(()));
        assert_eq!(fail_point(FailSite::Pin), Err(Errno::EFAULT));
        assert_eq!(Machine::fail_nth(), 0);
        assert_eq!(Machine::last_injected_site(), Some("pin"));
        assert_eq!(fail_point(FailSite::Alloc), Ok(()), "one failure per arming");
        // Disarmed threads never fail, and the counter is per thread.
        Machine::set_fail_nth(1);
        std::thread::spawn(|| {
            assert_eq!(Machine::fail_nth(), 0);
            assert_eq!(fail_point(FailSite::Alloc), Ok(()));
        })
        .join()
        .unwrap();
        assert_eq!(fail_point(FailSite::Lookup), Err(Errno::ENOENT));
        assert_eq!(fail_point(FailSite::Xarray), Ok(()));
    }
}

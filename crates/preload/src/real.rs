//! The "real" libc functions behind the interposers, found with `dlsym(RTLD_NEXT, ..)`.
//!
//! Each [`RealFn`] caches the address in an atomic. While a lookup is in progress (dlsym can
//! allocate, and an allocator may call `open`), or if the symbol does not exist, callers get
//! `None` and fall back to the raw system call, so resolution can never recurse forever.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

const UNRESOLVED: usize = 0;
const RESOLVING: usize = 1;
const MISSING: usize = 2;

/// A lazily resolved pointer to the next definition of a libc symbol.
pub struct RealFn {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl RealFn {
    /// A not-yet-resolved symbol.
    pub const fn new(name: &'static CStr) -> RealFn {
        RealFn { name, addr: AtomicUsize::new(UNRESOLVED) }
    }

    /// The address of the next definition, or `None` (use the system call instead).
    #[inline]
    pub fn get(&self) -> Option<usize> {
        match self.addr.load(Ordering::Acquire) {
            UNRESOLVED => self.resolve(),
            RESOLVING | MISSING => None,
            a => Some(a),
        }
    }

    #[cold]
    fn resolve(&self) -> Option<usize> {
        if self.addr.compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return match self.addr.load(Ordering::Acquire) {
                UNRESOLVED | RESOLVING | MISSING => None,
                a => Some(a),
            };
        }
        // SAFETY: RTLD_NEXT with a valid NUL-terminated symbol name is a valid dlsym call.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        let v = if p <= MISSING { MISSING } else { p };
        self.addr.store(v, Ordering::Release);
        (v != MISSING).then_some(v)
    }
}

/// Declares an accessor `fn NAME() -> Option<FNTYPE>` for the next definition of `SYMBOL`.
/// `FNTYPE` must be the symbol's exact C type (variadic where the C function is).
macro_rules! real_fn {
    ($acc:ident, $sym:literal, $fty:ty) => {
        fn $acc() -> Option<$fty> {
            static R: $crate::real::RealFn = $crate::real::RealFn::new($sym);
            // SAFETY: the address was returned by dlsym for the libc function `$sym`, whose C
            // type is `$fty` (see glibc's headers); function pointers are usize-sized.
            R.get().map(|a| unsafe { std::mem::transmute::<usize, $fty>(a) })
        }
    };
}
pub(crate) use real_fn;

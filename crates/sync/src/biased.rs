//! A mutex biased towards one thread.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::asym;

use crate::thread_id;

/// A mutual-exclusion lock whose first locking thread (the *owner*) locks and unlocks with
/// plain stores and a compiler fence, until some other thread locks it: that revokes the
/// bias for good (the other thread announces it, issues a heavy fence ([`asym::heavy`]) and
/// waits for the owner to leave its critical section), and from then on every thread uses
/// an ordinary mutex. Re-locking on the thread that holds it deadlocks, as with
/// [`std::sync::Mutex`]; there is no poisoning.
pub struct BiasedMutex<T> {
    /// Thread id of the owner; 0 while unclaimed.
    owner: AtomicUsize,
    /// The owner is in (or entering) a fast-path critical section. Written only by the owner.
    busy: AtomicBool,
    /// Some other thread has locked: nobody takes the fast path any more.
    revoked: AtomicBool,
    inner: Mutex<()>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `data` (see `lock`), so sharing it
// between threads is sound when T may move between threads.
unsafe impl<T: Send> Sync for BiasedMutex<T> {}
// SAFETY: owning the mutex is owning the T.
unsafe impl<T: Send> Send for BiasedMutex<T> {}

impl<T: Default> Default for BiasedMutex<T> {
    fn default() -> Self {
        BiasedMutex::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for BiasedMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiasedMutex").finish_non_exhaustive()
    }
}

/// Access to the data of a locked [`BiasedMutex`]; unlocks when dropped.
pub struct BiasedMutexGuard<'a, T> {
    m: &'a BiasedMutex<T>,
    /// `None` on the owner's fast path.
    _inner: Option<MutexGuard<'a, ()>>,
}

impl<T> BiasedMutex<T> {
    /// A new, unlocked, unclaimed mutex.
    pub const fn new(v: T) -> BiasedMutex<T> {
        BiasedMutex {
            owner: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            inner: Mutex::new(()),
            data: UnsafeCell::new(v),
        }
    }

    /// Locks, waiting if another thread holds the lock.
    #[inline(always)]
    pub fn lock(&self) -> BiasedMutexGuard<'_, T> {
        if asym::available() && !self.revoked.load(Ordering::Relaxed) {
            let me = thread_id();
            let o = self.owner.load(Ordering::Relaxed);
            let mine =
                o == me || (o == 0 && self.owner.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed).is_ok());
            // `busy` already set on the owner thread means it holds the lock: re-locking goes
            // to the slow path (and deadlocks there, like std's Mutex) instead of aliasing.
            if mine && !self.busy.load(Ordering::Relaxed) {
                self.busy.store(true, Ordering::Relaxed);
                asym::light();
                if !self.revoked.load(Ordering::Relaxed) {
                    // Until the bias is revoked only this thread ever held the lock, so
                    // there are no other threads' writes to acquire.
                    return BiasedMutexGuard { m: self, _inner: None };
                }
                self.busy.store(false, Ordering::Release);
            }
        }
        self.lock_slow()
    }

    #[cold]
    fn lock_slow(&self) -> BiasedMutexGuard<'_, T> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !self.revoked.load(Ordering::Relaxed) {
            self.revoked.store(true, Ordering::Relaxed);
            // Dekker against the owner's `busy = true; light(); load revoked`: after this,
            // either the owner saw `revoked` or we see its `busy`.
            asym::heavy();
            while self.busy.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
        }
        BiasedMutexGuard { m: self, _inner: Some(g) }
    }

    /// Mutable access without locking (the borrow checker proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The data, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T> Drop for BiasedMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self._inner.is_none() {
            // Release: whoever revokes next acquires our writes through `busy`.
            self.m.busy.store(false, Ordering::Release);
        }
        // A slow-path guard unlocks `inner` when its MutexGuard drops.
    }
}

impl<T> std::ops::Deref for BiasedMutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this thread holds the lock (fast path: the owner with
        // `busy` set and the bias not revoked; slow path: `inner` held after any owner left),
        // so no other reference to the data exists.
        unsafe { &*self.m.data.get() }
    }
}

impl<T> std::ops::DerefMut for BiasedMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only access through the guard.
        unsafe { &mut *self.m.data.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn owner_then_others() {
        let m = Arc::new(BiasedMutex::new(0u64));
        for _ in 0..1000 {
            *m.lock() += 1;
        }
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for _ in 0..10_000 {
            *m.lock() += 1;
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*m.lock(), 1000 + 5 * 10_000);
    }

    #[test]
    fn contended_from_the_start() {
        let m = Arc::new(BiasedMutex::new(Vec::new()));
        let hs: Vec<_> = (0..3)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let mut g = m.lock();
                        let n = g.len();
                        g.push((t, i));
                        assert_eq!(g.len(), n + 1);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(m.lock().len(), 15_000);
    }
}

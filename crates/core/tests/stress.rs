//! Racing threads on one context: maps, unmaps, copies, destroys, mock-domain attach and
//! replace, HWPT allocation, access pins and reads/writes, with fail-nth injection mixed
//! in, all on shared objects. Every call may fail (the races make EBUSY, ENOENT, EEXIST …
//! legitimate); none may panic or deadlock, the invariants must hold at the end, and
//! closing everything must release every pin and every charge.
//!
//! `UIOMMU_STRESS_ITERS=N` sets the operations per thread (default 1500).

mod common;
use common::*;
use std::sync::mpsc;
use std::time::Duration;
use uiommu_core::Machine;
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;

const P: u64 = 4096;
const THREADS: u64 = 6;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iters() -> u64 {
    std::env::var("UIOMMU_STRESS_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

/// One thread's work: `buf` is 64 pages shared by everybody.
fn worker(h: H, seed: u64, buf: u64) -> u64 {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut access_fds: Vec<i32> = Vec::new();
    let mut ok = 0u64;
    for _ in 0..iters() {
        // IOAS ids 1 and 2 exist at the start; anything may have destroyed them since.
        let ioas = 1 + rng.below(2) as u32;
        let slot = rng.below(8);
        let iova = MOCK_APERTURE_START + slot * 16 * P;
        if rng.below(16) == 0 {
            Machine::set_fail_nth(1 + rng.below(12) as u32);
        }
        let r = match rng.below(14) {
            0 | 1 => h.map(ioas, buf + rng.below(32) * P, (1 + rng.below(16)) * P, Some(iova)).map(|_| 0),
            2 => h.map(ioas, buf + rng.below(48) * P, (1 + rng.below(16)) * P, None).map(|_| 0),
            3 | 4 => h.unmap(ioas, iova, 16 * P).map(|_| 0),
            5 => h.unmap(ioas, 0, u64::MAX).map(|_| 0),
            6 => h.copy(3 - ioas, ioas, iova, (1 + rng.below(4)) * P, None).map(|_| 0),
            7 => h.mock_domain(ioas).map(|_| 0),
            8 => h.destroy(1 + rng.below(24) as u32),
            9 => {
                let p = TestMockDomainReplace { pt_id: 1 + rng.below(12) as u32 };
                h.test_cmd(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, 3 + rng.below(20) as u32, &p).map(|r| r.0)
            }
            10 => {
                let c =
                    IommuHwptAlloc { size: 48, dev_id: 1 + rng.below(24) as u32, pt_id: ioas, ..Default::default() };
                h.call(IOMMU_HWPT_ALLOC, c).map(|_| 0)
            }
            11 => {
                let flags = if rng.below(2) == 0 { MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES } else { 0 };
                let r =
                    h.test_cmd(IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess { flags, ..Default::default() });
                if let Ok((_, p)) = &r {
                    access_fds.push(p.out_access_fd as i32);
                }
                r.map(|r| r.0)
            }
            12 if !access_fds.is_empty() => {
                let fd = access_fds[rng.below(access_fds.len() as u64) as usize] as u32;
                if rng.below(2) == 0 {
                    let p = TestAccessPages {
                        iova: iova + rng.below(4) * P,
                        length: (1 + rng.below(8)) * P,
                        ..Default::default()
                    };
                    h.test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, fd, &p).map(|r| r.0)
                } else {
                    let flags = if rng.below(2) == 0 { MOCK_ACCESS_RW_WRITE } else { MOCK_ACCESS_RW_SLOW_PATH };
                    let p = TestAccessRw {
                        iova: iova + rng.below(8000),
                        length: 1 + rng.below(8000),
                        uptr: h.scratch + 0x2000,
                        flags,
                        pad: 0,
                    };
                    h.test_cmd(IOMMU_TEST_OP_ACCESS_RW, fd, &p).map(|r| r.0)
                }
            }
            13 if !access_fds.is_empty() => {
                let i = rng.below(access_fds.len() as u64) as usize;
                drop(h.sim.close(access_fds.swap_remove(i)));
                Ok(0)
            }
            _ => h.ioctl(IOMMU_IOAS_ALLOC, &mut IommuIoasAlloc { size: 12, ..Default::default() }),
        };
        Machine::set_fail_nth(0);
        ok += r.is_ok() as u64;
    }
    for fd in access_fds {
        drop(h.sim.close(fd));
    }
    ok
}

#[test]
fn racing_threads_keep_invariants_and_release_everything() {
    let h = H::unprivileged(1 << 30);
    let buf = h.sim.mmap(PID, 64 * P, true);
    let a = h.ioas_alloc();
    let b = h.ioas_alloc();
    assert_eq!((a, b), (1, 2));
    let (tx, rx) = mpsc::channel();
    let mut joins = Vec::new();
    for t in 0..THREADS {
        let hh = h.another();
        let tx = tx.clone();
        joins.push(std::thread::spawn(move || {
            let ok = worker(hh, t + 1, buf);
            tx.send(ok).unwrap();
        }));
    }
    drop(tx);
    // A hang guard, not a timing assertion: the workers finish in well under a second
    // each; ten minutes without a report means a deadlock.
    let mut total_ok = 0;
    for _ in 0..THREADS {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(ok) => total_ok += ok,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("a worker made no progress for 10 minutes: deadlock")
            }
            // A worker panicked: join reports it below.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for j in joins {
        j.join().expect("a worker panicked");
    }
    assert!(total_ok > 0, "no call succeeded at all");
    h.ctx.check_invariants().unwrap();
    eprintln!("{total_ok} successful calls; {} pins held before closing", h.m.total_pins());
    let H { m, ctx, sim, .. } = h;
    for fd in sim.open_fds() {
        drop(sim.close(fd));
    }
    drop(ctx);
    assert_eq!(m.total_pins(), 0, "closing released every pin");
    assert_eq!(m.user_locked_pages(1000), 0);
    assert_eq!(m.pinned_pages_of(PID), (0, 0));
}

/// Two contexts of one machine, raced against each other with dma-buf revocation (which
/// walks every context without holding its own): no lock-order deadlock.
#[test]
fn contexts_race_dmabuf_revoke() {
    let h1 = H::new();
    let mut h2 = h1.another();
    h2.ctx = uiommu_core::Context::open(&h1.m);
    let (r, _) =
        h1.test_cmd(IOMMU_TEST_OP_DMABUF_GET, 0, &TestDmabufGet { length: 16 * P as u32, open_flags: 0 }).unwrap();
    let fd = r;
    let (tx, rx) = mpsc::channel();
    let mut joins = Vec::new();
    for (i, h) in [h1.another(), h2.another()].into_iter().enumerate() {
        let tx = tx.clone();
        joins.push(std::thread::spawn(move || {
            let ioas = h.ioas_alloc();
            let mut rng = Rng(i as u64 + 7);
            for _ in 0..iters() {
                match rng.below(4) {
                    0 => {
                        let c = IommuIoasMapFile {
                            size: 40,
                            flags: 3,
                            ioas_id: ioas,
                            fd,
                            length: 4 * P,
                            ..Default::default()
                        };
                        let _ = h.call(IOMMU_IOAS_MAP_FILE, c);
                    }
                    1 => {
                        let _ = h.mock_domain(ioas);
                    }
                    2 => {
                        let p = TestDmabufRevoke { dmabuf_fd: fd, revoked: rng.below(2) as u32 };
                        let _ = h.test_cmd(IOMMU_TEST_OP_DMABUF_REVOKE, 0, &p);
                    }
                    _ => {
                        let _ = h.unmap(ioas, 0, u64::MAX);
                    }
                }
            }
            tx.send(()).unwrap();
        }));
    }
    drop(tx);
    for _ in 0..2 {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(600)) {
            panic!("no progress for 10 minutes: deadlock");
        }
    }
    for j in joins {
        j.join().expect("a worker panicked");
    }
    h1.ctx.check_invariants().unwrap();
    h2.ctx.check_invariants().unwrap();
}

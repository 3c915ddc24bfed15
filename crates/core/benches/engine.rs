//! Engine benchmarks: each goal of issue 8 (and the dirty-bitmap goal of issue 4) as a
//! ratio against a baseline measured in the same process, the same run.
//!
//! `cargo bench -p uiommu-core --bench engine` (full sizes) or `... -- --short` (tiny sizes,
//! for CI: proves the benchmarks still run; the ratios then mean little).
//!
//! The engine runs on `BenchPlatform`: process memory is not touched for mapping (pages
//! resolve to contiguous physical addresses, like one shared object), and physical
//! reads/writes for DMA go to one real buffer. What is measured is the engine's own work:
//! dispatch, IOVA allocation, pinning bookkeeping, accounting, IO page tables, IOTLB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use uiommu_core::mock::pagetable::{MockPageTable, MockPtType, Prot};
use uiommu_core::{Caller, Context, EngineFile, Errno, FdTarget, HostFile, HostFileKind, Machine, Platform, Result};
use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---- a counting allocator, for memory per mapped page ----

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---- the platform ----

const SCRATCH_VA: u64 = 0x1000;
const SCRATCH_LEN: usize = 1 << 22;
const RAM_VA: u64 = 0x10_0000_0000;
const REGION: u64 = 1 << 48;

/// Scratch memory for ioctl arguments at SCRATCH_VA; "RAM" that DMA reaches at phys
/// `REGION | offset`, any VA at or above RAM_VA resolving to it linearly.
struct BenchPlatform {
    scratch: Mutex<Vec<u8>>,
    ram: Ram,
}

/// Guest RAM reached by physical address, like memory a real platform maps once and then
/// copies to and from without locks.
struct Ram {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer lives (leaked) for the whole process; the benchmark never lets two
// threads copy to overlapping bytes at once.
unsafe impl Send for Ram {}
// SAFETY: as above.
unsafe impl Sync for Ram {}

impl Ram {
    fn new(len: usize) -> Ram {
        let v: &'static mut [u8] = Box::leak(vec![0u8; len].into_boxed_slice());
        Ram { ptr: v.as_mut_ptr(), len }
    }
    fn range(&self, phys: u64, n: usize) -> Result<usize> {
        let o = phys.checked_sub(REGION).ok_or(Errno::EFAULT)? as usize;
        if o.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(Errno::EFAULT);
        }
        Ok(o)
    }
}

#[derive(Debug)]
struct HugeFile {
    len: u64,
}

impl HostFile for HugeFile {
    fn kind(&self) -> HostFileKind {
        HostFileKind::Hugetlb
    }
    fn size(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn resolve_pages(&self, pgoff: u64, n: usize, out: &mut Vec<u64>) -> Result<()> {
        out.extend((0..n as u64).map(|i| (2 * REGION) | ((pgoff + i) << 12)));
        Ok(())
    }
    fn resolve_runs(&self, pgoff: u64, n: usize, out: &mut Vec<(u64, u64)>) -> Result<()> {
        // 2 MiB huge pages: one run per huge page (contiguous within, as hugetlb is).
        let mut at = pgoff;
        let end = pgoff + n as u64;
        while at < end {
            let next = ((at >> 9) + 1) << 9;
            let k = next.min(end) - at;
            out.push(((2 * REGION) | (at << 12), k));
            at += k;
        }
        Ok(())
    }
}

impl Platform for BenchPlatform {
    fn read_user(&self, _c: &Caller, addr: u64, buf: &mut [u8]) -> Result<()> {
        let s = self.scratch.lock().unwrap();
        let o = addr.checked_sub(SCRATCH_VA).ok_or(Errno::EFAULT)? as usize;
        buf.copy_from_slice(s.get(o..o + buf.len()).ok_or(Errno::EFAULT)?);
        Ok(())
    }
    fn write_user(&self, _c: &Caller, addr: u64, buf: &[u8]) -> Result<()> {
        let mut s = self.scratch.lock().unwrap();
        let o = addr.checked_sub(SCRATCH_VA).ok_or(Errno::EFAULT)? as usize;
        s.get_mut(o..o + buf.len()).ok_or(Errno::EFAULT)?.copy_from_slice(buf);
        Ok(())
    }
    fn resolve_user_pages(&self, _pid: u32, va: u64, n: usize, _w: bool, out: &mut Vec<u64>) -> Result<()> {
        let off = va.checked_sub(RAM_VA).ok_or(Errno::EFAULT)?;
        out.extend((0..n as u64).map(|i| REGION | (off + (i << 12))));
        Ok(())
    }
    fn is_compound(&self, _phys: u64) -> bool {
        false
    }
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> Result<()> {
        let o = self.ram.range(phys, buf.len())?;
        // SAFETY: o..o+len is inside the live RAM buffer (checked), buf is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(self.ram.ptr.add(o), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write_phys(&self, phys: u64, buf: &[u8]) -> Result<()> {
        let o = self.ram.range(phys, buf.len())?;
        // SAFETY: as in read_phys.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ram.ptr.add(o), buf.len()) };
        Ok(())
    }
    fn resolve_user_runs(&self, _pid: u32, va: u64, n: usize, _w: bool, out: &mut Vec<(u64, u64)>) -> Result<()> {
        let off = va.checked_sub(RAM_VA).ok_or(Errno::EFAULT)?;
        out.push((REGION | off, n as u64));
        Ok(())
    }
    fn fd(&self, _c: &Caller, fd: i32) -> Result<FdTarget> {
        if fd == 1000 {
            Ok(FdTarget::Host(Arc::new(HugeFile { len: 1 << 40 })))
        } else {
            Err(Errno::EBADF)
        }
    }
    fn install_fd(&self, _c: &Caller, _f: EngineFile, _flags: i32) -> Result<i32> {
        Err(Errno::ENOMEM)
    }
    fn create_dmabuf_memory(&self, _len: u64) -> Result<Arc<dyn HostFile>> {
        Err(Errno::ENOMEM)
    }
}

struct Bench {
    ctx: Arc<Context>,
    p: Arc<BenchPlatform>,
    caller: Caller,
}

impl Bench {
    fn new(ram: usize) -> Bench {
        let p = Arc::new(BenchPlatform { scratch: Mutex::new(vec![0; SCRATCH_LEN]), ram: Ram::new(ram) });
        let m = Machine::new(p.clone());
        Bench { ctx: Context::open(&m), p, caller: Caller::privileged(1) }
    }
    fn ioctl<T: IntoBytes + FromBytes + KnownLayout + Immutable>(&self, cmd: u32, v: &mut T) -> Result<i32> {
        self.p.write_user(&self.caller, SCRATCH_VA, v.as_bytes())?;
        let r = self.ctx.ioctl(&self.caller, cmd, SCRATCH_VA);
        self.p.read_user(&self.caller, SCRATCH_VA, v.as_mut_bytes())?;
        r
    }
    fn ioas(&self) -> u32 {
        let mut c = IommuIoasAlloc { size: 12, ..Default::default() };
        self.ioctl(IOMMU_IOAS_ALLOC, &mut c).unwrap();
        c.out_ioas_id
    }
    fn domain(&self, ioas: u32) -> (u32, u32, u32) {
        let mut c = IommuTestCmd::new(IOMMU_TEST_OP_MOCK_DOMAIN, ioas, &TestMockDomain::default());
        self.ioctl(IOMMU_TEST_CMD, &mut c).unwrap();
        let p: TestMockDomain = c.payload();
        (p.out_stdev_id, p.out_hwpt_id, p.out_idev_id)
    }
    fn large_pages(&self, ioas: u32, on: bool) {
        let mut o = IommuOption {
            size: 24,
            option_id: IOMMU_OPTION_HUGE_PAGES,
            op: IOMMU_OPTION_OP_SET,
            object_id: ioas,
            val64: on as u64,
            ..Default::default()
        };
        self.ioctl(IOMMU_OPTION, &mut o).unwrap();
    }
    fn map(&self, ioas: u32, va: u64, len: u64, iova: u64) -> Result<u64> {
        let flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
        let mut c =
            IommuIoasMap { size: 40, flags, ioas_id: ioas, user_va: va, length: len, iova, ..Default::default() };
        self.ioctl(IOMMU_IOAS_MAP, &mut c)?;
        Ok(c.iova)
    }
    fn map_file(&self, ioas: u32, start: u64, len: u64, iova: u64) -> Result<u64> {
        let flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
        let mut c = IommuIoasMapFile { size: 40, flags, ioas_id: ioas, fd: 1000, start, length: len, iova };
        self.ioctl(IOMMU_IOAS_MAP_FILE, &mut c)?;
        Ok(c.iova)
    }
    fn unmap(&self, ioas: u32, iova: u64, len: u64) -> Result<u64> {
        let mut c = IommuIoasUnmap { size: 24, ioas_id: ioas, iova, length: len };
        self.ioctl(IOMMU_IOAS_UNMAP, &mut c)?;
        Ok(c.length)
    }
}

/// Best of `reps` timings of `f`, in nanoseconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(name: &str, what: f64, base_name: &str, base: f64, ratio: f64, goal: &str, ok: bool) {
    println!(
        "{name:<58} {what:>12.1} ns | {base_name:<34} {base:>10.1} ns | ratio {ratio:>9.4} (goal {goal}) {}",
        if ok { "MET" } else { "NOT MET" }
    );
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let gib: u64 = if short { 16 << 20 } else { 1 << 30 };
    let pages = gib >> 12;
    let reps = if short { 2 } else { 5 };
    println!("uiommu engine benchmarks ({} mode; sizes: {} MiB)", if short { "short" } else { "full" }, gib >> 20);

    // Baseline: sequential 8-byte stores, one per 4 KiB page of the mapping.
    let mut words = vec![0u64; pages as usize];
    let stores = best(20, || {
        for (i, w) in words.iter_mut().enumerate() {
            *w = i as u64;
        }
        black_box(&words);
    });

    // Goals 1 and 3: map and unmap 1 GiB with one mock domain, 4 KiB IOPTEs.
    let b = Bench::new(1 << 20);
    let ioas = b.ioas();
    b.domain(ioas);
    b.large_pages(ioas, false);
    let iova = 0x4000_0000;
    let (mut map_4k, mut unmap_4k) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let t = Instant::now();
        b.map(ioas, RAM_VA, gib, iova).unwrap();
        map_4k = map_4k.min(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        b.unmap(ioas, iova, gib).unwrap();
        unmap_4k = unmap_4k.min(t.elapsed().as_nanos() as f64);
    }
    let r1 = map_4k / stores;
    report(
        "1 IOAS_MAP 1 GiB, 4 KiB IOPTEs, one mock domain",
        map_4k,
        "262144 sequential 8-byte stores",
        stores,
        r1,
        "<= 15",
        r1 <= 15.0,
    );

    // Goal 2: the same 1 GiB backed by 2 MiB huge pages (hugetlb MAP_FILE), large pages on.
    let b2 = Bench::new(1 << 20);
    let ioas2 = b2.ioas();
    b2.domain(ioas2);
    let mut map_huge = f64::INFINITY;
    for _ in 0..reps * 4 {
        let t = Instant::now();
        b2.map_file(ioas2, 0, gib, iova).unwrap();
        map_huge = map_huge.min(t.elapsed().as_nanos() as f64);
        b2.unmap(ioas2, iova, gib).unwrap();
    }
    let r2 = map_huge / map_4k;
    report(
        "2 IOAS_MAP_FILE 1 GiB of 2 MiB hugetlb pages",
        map_huge,
        "goal 1 (4 KiB map)",
        map_4k,
        r2,
        "<= 0.02",
        r2 <= 0.02,
    );

    // Goal 3: unmap vs map; per-page unmap vs a single-page unmap call.
    let r3 = unmap_4k / map_4k;
    report("3a IOAS_UNMAP 1 GiB (4 KiB IOPTEs)", unmap_4k, "its map (goal 1)", map_4k, r3, "<= 1.0", r3 <= 1.0);
    b.map(ioas, RAM_VA, 4096, iova).unwrap();
    b.unmap(ioas, iova, 4096).unwrap();
    let n1 = if short { 200 } else { 5000 };
    let one = best(reps, || {
        for _ in 0..n1 {
            b.map(ioas, RAM_VA, 4096, iova).unwrap();
            b.unmap(ioas, iova, 4096).unwrap();
        }
    }) / n1 as f64;
    let map_only = best(reps, || {
        for k in 0..n1 as u64 {
            b.map(ioas, RAM_VA, 4096, iova + k * 4096).unwrap();
        }
        b.unmap(ioas, 0, u64::MAX).unwrap();
    }) / n1 as f64;
    let single_unmap = (one - map_only).max(one / 2.0);
    let per_page = unmap_4k / pages as f64;
    let r3b = per_page / single_unmap;
    report(
        "3b per-page cost inside one 1 GiB unmap",
        per_page,
        "one single-page IOAS_UNMAP call",
        single_unmap,
        r3b,
        "<= 0.05",
        r3b <= 0.05,
    );

    // Goal 4: IOTLB hit vs a dependent hash lookup; miss vs hit.
    let b4 = Bench::new(1 << 24);
    let ioas4 = b4.ioas();
    let (_, _, dev) = b4.domain(ioas4);
    b4.large_pages(ioas4, false);
    b4.map(ioas4, RAM_VA, 1 << 24, iova).unwrap();
    let mut port = b4.ctx.dma_port(dev, 0).unwrap();
    let n4 = if short { 10_000 } else { 2_000_000 };
    let mut chain = std::collections::HashMap::new();
    for i in 0..64u64 {
        chain.insert(i, (i * 37 + 11) % 64);
    }
    let hash = best(reps, || {
        let mut x = 0u64;
        for _ in 0..n4 {
            x = chain[&x];
        }
        black_box(x);
    }) / n4 as f64;
    for i in 0..32u64 {
        port.translate(iova + i * 4096).unwrap();
    }
    let hit = best(reps, || {
        let mut a = iova;
        for i in 0..n4 as u64 {
            let t = port.translate(a).unwrap();
            a = iova + ((t.phys >> 12).wrapping_add(i) % 32) * 4096;
        }
        black_box(a);
    }) / n4 as f64;
    let n4m = n4 / 20;
    // Conflict misses: two pages sharing one IOTLB slot evict each other (no flush cost
    // in the loop); the page table is hot in cache.
    let miss = best(reps, || {
        for i in 0..n4m as u64 {
            black_box(port.translate(iova + (i & 1) * 64 * 4096).unwrap());
        }
    }) / n4m as f64;
    let r4a = hit / hash;
    report("4a IOTLB hit (translate)", hit, "dependent HashMap lookup", hash, r4a, "<= 2", r4a <= 2.0);
    let r4b = miss / hit;
    report("4b IOTLB miss, tables in cache", miss, "IOTLB hit", hit, r4b, "<= 4", r4b <= 4.0);

    // Goal 5: device DMA of 64 KiB through 4 KiB mappings vs memcpy with the same chunking.
    let mut buf = vec![0u8; 64 << 10];
    let n5 = if short { 50 } else { 20_000 };
    // The baseline copies the same bytes (the guest RAM behind the IOVAs) into the same
    // destination buffer, in the same 4 KiB chunks, with plain memcpy.
    let ram = b4.p.ram.ptr;
    let memcpy64 = best(reps, || {
        for _ in 0..n5 {
            for (k, d) in buf.chunks_mut(4096).enumerate() {
                // SAFETY: RAM holds 16 MiB; k * 4096 + 4096 <= 64 KiB.
                unsafe { std::ptr::copy_nonoverlapping(black_box(ram).add(k * 4096), d.as_mut_ptr(), black_box(4096)) };
            }
            black_box(&buf);
        }
    }) / n5 as f64;
    let dma64 = best(reps, || {
        for _ in 0..n5 {
            port.read(iova, &mut buf).unwrap();
            black_box(&buf);
        }
    }) / n5 as f64;
    let r5a = memcpy64 / dma64;
    report(
        "5a DMA read 64 KiB via 4 KiB IOPTEs (throughput ratio)",
        dma64,
        "memcpy 64 KiB in 4 KiB chunks",
        memcpy64,
        r5a,
        ">= 0.85",
        r5a >= 0.85,
    );
    let memcpy4 = best(reps, || {
        for _ in 0..n5 * 16 {
            // SAFETY: bytes 8192..12288 of the 16 MiB RAM, into the first 4 KiB of buf.
            unsafe { std::ptr::copy_nonoverlapping(black_box(ram).add(8192), buf.as_mut_ptr(), black_box(4096)) };
            black_box(&buf);
        }
    }) / (n5 * 16) as f64;
    let dma4 = best(reps, || {
        for _ in 0..n5 * 16 {
            port.read(iova + 8192, &mut buf[..4096]).unwrap();
            black_box(&buf);
        }
    }) / (n5 * 16) as f64;
    let dma8 = best(reps, || {
        for _ in 0..n5 * 16 {
            port.read(iova + 8192, &mut buf[..8]).unwrap();
            black_box(&buf);
        }
    }) / (n5 * 16) as f64;
    println!("   (DMA read of 8 bytes, i.e. fixed cost per transfer: {dma8:.1} ns)");
    let r5b = memcpy4 / dma4;
    report("5b DMA read 4 KiB (throughput ratio)", dma4, "memcpy 4 KiB", memcpy4, r5b, ">= 0.8", r5b >= 0.8);

    // Goal 6: scale — 100,000 areas; memory per mapped page.
    let nareas = if short { 2_000 } else { 100_000 };
    let b6 = Bench::new(1 << 20);
    let ioas6 = b6.ioas();
    b6.domain(ioas6);
    let probe = |b: &Bench| {
        best(reps, || {
            for k in 0..200u64 {
                b.map(ioas6, RAM_VA, 4096, 0x7000_0000 + k * 8192).unwrap();
            }
            for k in 0..200u64 {
                b.unmap(ioas6, 0x7000_0000 + k * 8192, 4096).unwrap();
            }
        }) / 200.0
    };
    b6.map(ioas6, RAM_VA, 4096, 0x100_0000).unwrap();
    let with_one = probe(&b6);
    for k in 1..nareas as u64 {
        b6.map(ioas6, RAM_VA + k * 4096, 4096, 0x100_0000 + k * 8192).unwrap();
    }
    let with_many = probe(&b6);
    let r6 = with_many / with_one;
    report(
        &format!("6a map+unmap one area with {nareas} areas"),
        with_many,
        "the same with one area",
        with_one,
        r6,
        "<= 3",
        r6 <= 3.0,
    );
    drop(b6);
    let before = LIVE.load(Ordering::Relaxed);
    let b7 = Bench::new(1 << 12);
    let ioas7 = b7.ioas();
    b7.domain(ioas7);
    b7.large_pages(ioas7, false);
    let base_mem = LIVE.load(Ordering::Relaxed);
    b7.map(ioas7, RAM_VA, gib, iova).unwrap();
    let used = LIVE.load(Ordering::Relaxed) as f64 - base_mem as f64;
    let per = used / pages as f64;
    let _ = before;
    println!(
        "{:<58} {per:>12.2} B  | goal <= 24 B per mapped 4 KiB page (pins + page tables) {}",
        "6b engine memory per mapped 4 KiB page",
        if per <= 24.0 { "MET" } else { "NOT MET" }
    );

    // Issue 4: read-and-clear of the dirty bitmap over 64 GiB at 4 KiB, 1 % dirty.
    let span: u64 = if short { 64 << 20 } else { 64 << 30 };
    let mut pt = MockPageTable::new(MockPtType::Default);
    let leaves = span >> 12;
    let rw = Prot { read: true, write: true };
    pt.map_max(0, 0, span, rw, 4096).unwrap();
    let entries = (span >> 11) as usize;
    let table = vec![1u64; entries];
    let seq = best(reps, || {
        let mut s = 0u64;
        for &e in &table {
            s = s.wrapping_add(e);
        }
        black_box(s);
    });
    let mut x = 12345u64;
    let mut dirty = 0;
    let mut read_clear = f64::INFINITY;
    let mut bitmap = vec![0u64; (leaves as usize).div_ceil(64)];
    for _ in 0..reps {
        for _ in 0..leaves / 100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            pt.set_dirty((x % leaves) << 12);
        }
        bitmap.fill(0);
        let t = Instant::now();
        pt.read_and_clear_dirty(0, span, true, &mut |iova, len| {
            let (a, b) = (iova >> 12, (iova + len - 1) >> 12);
            for bit in a..=b {
                bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        });
        read_clear = read_clear.min(t.elapsed().as_nanos() as f64);
        dirty = bitmap.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        black_box(&bitmap);
    }
    let r8 = read_clear / seq;
    report(
        &format!("I4 read+clear dirty bitmap, {} GiB at 4 KiB, 1% dirty ({dirty} leaves)", span >> 30),
        read_clear,
        &format!("sequential read of {entries} entries"),
        seq,
        r8,
        "<= 2",
        r8 <= 2.0,
    );
}

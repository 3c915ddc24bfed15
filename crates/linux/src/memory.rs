//! The memory half of the platform: user memory, physical page identities, host files.
//!
//! * User memory: this process's own memory with the fault-safe copies of
//!   [`crate::uaccess`] (no system call), any other process's with
//!   `process_vm_readv`/`process_vm_writev` on its pid (bad pointers, NULL included, give
//!   EFAULT; zero-length copies succeed without a system call).
//! * Physical addresses: `phys = (region_id << 48) | byte_offset`. A *region* is either a
//!   shared backing object (shmem, memfd, SysV shm, hugetlbfs, a MAP_SHARED file), keyed by
//!   the (device, inode) shown in `/proc/PID/maps` or by `fstat`, with `byte_offset` = offset
//!   in the object; or the private memory of one process, keyed by pid, with `byte_offset` =
//!   the virtual address. So every mapping of one shared page, from any process or through a
//!   memfd handed to `IOAS_MAP_FILE`, resolves to the same address, and a read-only pin of a
//!   private page keeps naming what the process sees after a copy-on-write (the kernel's
//!   "unshare" semantics hold by construction).
//! * Region data: shared objects are reached through an fd on the object (opened from
//!   `/proc/PID/map_files/START-END`, or the program's own fd for MAP_FILE), which keeps them
//!   alive after the mapping process unmaps them or exits; failing that, through the memory
//!   of the process that mapped them. Private regions through the memory of their process
//!   (so they are readable only while it lives and keeps them mapped).
//!
//! Regions are never forgotten (ids are not reused), so a region's fd stays open for the life
//! of the process. Region ids are below 2^15, so a process may meet at most 32767 distinct
//! shared objects or processes; past that, pinning fails with ENOMEM.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, RwLock, Weak};

use uiommu_core::{Caller, Errno, HostFile, HostFileKind, PAGE_SIZE};

use crate::maps::{is_hugetlb_path, read_maps, vmas, Vma};
use crate::sys::{self, Fd, HUGETLBFS_MAGIC, TMPFS_MAGIC};
use crate::uaccess;

const REGION_SHIFT: u32 = 48;
const OFFSET_MASK: u64 = (1 << REGION_SHIFT) - 1;
const MAX_REGIONS: usize = (1 << 15) - 1;

fn errno(e: i32) -> Errno {
    Errno(e)
}

// ---------------------------------------------------------------------------------------
// Regions
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RegionKey {
    /// A shared object: (major, minor, inode).
    Object(u32, u32, u64),
    /// The private memory of a process.
    Private(u32),
}

#[derive(Debug, Clone)]
enum Backing {
    /// An fd on the object; byte offset = file offset.
    File(Arc<Fd>),
    /// Memory of process `pid` at `va_base + byte_offset` (wrapping).
    Mem { pid: u32, va_base: u64 },
}

#[derive(Debug)]
struct Region {
    key: RegionKey,
    hugetlb: bool,
    backing: RwLock<Backing>,
}

#[derive(Default)]
struct Regions {
    by_key: HashMap<RegionKey, u16>,
    list: Vec<Arc<Region>>,
}

static REGIONS: RwLock<Option<Regions>> = RwLock::new(None);

fn region(id: u64) -> Option<Arc<Region>> {
    let g = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let idx = (id as usize).checked_sub(1)?;
    g.as_ref()?.list.get(idx).cloned()
}

fn find_region(key: RegionKey) -> Option<(u16, Arc<Region>)> {
    let g = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let r = g.as_ref()?;
    let id = *r.by_key.get(&key)?;
    Some((id, r.list[id as usize - 1].clone()))
}

/// Interns a region, building its backing only if it is new (`make` runs without the lock).
fn intern(key: RegionKey, make: impl FnOnce() -> (Backing, bool)) -> Result<(u16, Arc<Region>), Errno> {
    if let Some(found) = find_region(key) {
        return Ok(found);
    }
    let (backing, hugetlb) = make();
    let mut g = REGIONS.write().unwrap_or_else(|e| e.into_inner());
    let r = g.get_or_insert_with(Regions::default);
    if let Some(&id) = r.by_key.get(&key) {
        return Ok((id, r.list[id as usize - 1].clone()));
    }
    if r.list.len() >= MAX_REGIONS {
        return Err(Errno::ENOMEM);
    }
    let reg = Arc::new(Region { key, hugetlb, backing: RwLock::new(backing) });
    r.list.push(reg.clone());
    let id = r.list.len() as u16;
    r.by_key.insert(key, id);
    Ok((id, reg))
}

fn phys(id: u16, off: u64) -> Result<u64, Errno> {
    if off > OFFSET_MASK {
        return Err(Errno::EFAULT);
    }
    Ok(((id as u64) << REGION_SHIFT) | off)
}

/// The region of a shared VMA of process `pid`.
fn shared_region(pid: u32, vma: &Vma<'_>) -> Result<(u16, Arc<Region>), Errno> {
    let key = RegionKey::Object(vma.major, vma.minor, vma.inode);
    if let Some((id, reg)) = find_region(key) {
        // Without an fd on the object, follow its most recent mapping (the one we saw may be
        // gone, and without our reference the inode number may even have been reused).
        let mut b = reg.backing.write().unwrap_or_else(|e| e.into_inner());
        if let Backing::Mem { .. } = *b {
            *b = Backing::Mem { pid, va_base: vma.start.wrapping_sub(vma.offset) };
        }
        drop(b);
        return Ok((id, reg));
    }
    intern(key, || {
        let name = format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end);
        let name = CString::new(name).expect("no NUL");
        let fd = sys::openat(libc::AT_FDCWD, &name, libc::O_RDWR, 0)
            .or_else(|_| sys::openat(libc::AT_FDCWD, &name, libc::O_RDONLY, 0))
            .ok()
            .and_then(|fd| Fd::private(fd).ok());
        let mut hugetlb = is_hugetlb_path(vma.path);
        let backing = match fd {
            Some(fd) => {
                hugetlb |= sys::fstatfs_type(fd.raw()) == Ok(HUGETLBFS_MAGIC);
                Backing::File(Arc::new(fd))
            }
            None => Backing::Mem { pid, va_base: vma.start.wrapping_sub(vma.offset) },
        };
        (backing, hugetlb)
    })
}

fn private_region(pid: u32) -> Result<(u16, Arc<Region>), Errno> {
    intern(RegionKey::Private(pid), || (Backing::Mem { pid, va_base: 0 }, false))
}

/// Whether a shared writable long-term pin of this VMA is allowed: the kernel refuses
/// FOLL_LONGTERM|FOLL_WRITE on file mappings that need dirty tracking (ordinary filesystems);
/// shmem and hugetlbfs are fine. Only decided when we hold an fd on the object.
fn shared_write_pin_allowed(reg: &Region) -> bool {
    match &*reg.backing.read().unwrap_or_else(|e| e.into_inner()) {
        Backing::File(fd) => matches!(sys::fstatfs_type(fd.raw()), Ok(TMPFS_MAGIC) | Ok(HUGETLBFS_MAGIC) | Err(_)),
        Backing::Mem { .. } => true,
    }
}

fn region_read(reg: &Region, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let backing = reg.backing.read().unwrap_or_else(|e| e.into_inner()).clone();
    match backing {
        Backing::File(fd) => {
            let mut done = 0;
            while done < buf.len() {
                match sys::pread(fd.raw(), &mut buf[done..], off + done as u64) {
                    Ok(0) => {
                        // Past the end of the object: reads as zeroes.
                        buf[done..].fill(0);
                        break;
                    }
                    Ok(n) => done += n,
                    Err(libc::EINTR) => {}
                    Err(_) => return Err(Errno::EFAULT),
                }
            }
            Ok(())
        }
        Backing::Mem { pid, va_base } => read_mem(pid, va_base.wrapping_add(off), buf),
    }
}

fn region_write(reg: &Region, off: u64, buf: &[u8]) -> Result<(), Errno> {
    let backing = reg.backing.read().unwrap_or_else(|e| e.into_inner()).clone();
    match backing {
        Backing::File(fd) => {
            let mut done = 0;
            while done < buf.len() {
                match sys::pwrite(fd.raw(), &buf[done..], off + done as u64) {
                    Ok(0) => return Err(Errno::EFAULT),
                    Ok(n) => done += n,
                    Err(libc::EINTR) => {}
                    Err(_) => return Err(Errno::EFAULT),
                }
            }
            Ok(())
        }
        Backing::Mem { pid, va_base } => write_mem(pid, va_base.wrapping_add(off), buf),
    }
}

// ---------------------------------------------------------------------------------------
// Host files
// ---------------------------------------------------------------------------------------

/// A program file given to the engine (IOAS_MAP_FILE), or dma-buf memory: a private dup.
#[derive(Debug)]
pub struct HostFd {
    fd: Arc<Fd>,
    kind: HostFileKind,
    key: RegionKey,
}

impl HostFd {
    /// Wraps an owned descriptor.
    pub fn new(fd: Fd) -> Result<HostFd, Errno> {
        let st = sys::fstat(fd.raw()).map_err(errno)?;
        let kind = match sys::fstatfs_type(fd.raw()) {
            Ok(TMPFS_MAGIC) => HostFileKind::Shmem,
            Ok(HUGETLBFS_MAGIC) => HostFileKind::Hugetlb,
            _ => HostFileKind::Other,
        };
        let key = RegionKey::Object(libc::major(st.st_dev), libc::minor(st.st_dev), st.st_ino);
        Ok(HostFd { fd: Arc::new(fd), kind, key })
    }

    /// The descriptor (a private one of the shim).
    pub fn raw_fd(&self) -> i32 {
        self.fd.raw()
    }
}

impl HostFile for HostFd {
    fn kind(&self) -> HostFileKind {
        self.kind
    }

    fn size(&self) -> uiommu_core::Result<u64> {
        sys::fstat(self.fd.raw()).map(|st| st.st_size as u64).map_err(errno)
    }

    fn resolve_pages(&self, pgoff: u64, npages: usize, out: &mut Vec<u64>) -> uiommu_core::Result<()> {
        let hugetlb = self.kind == HostFileKind::Hugetlb;
        let (id, reg) = intern(self.key, || (Backing::File(self.fd.clone()), hugetlb))?;
        // A region first met through a process mapping without an fd: use ours from now on.
        {
            let mut b = reg.backing.write().unwrap_or_else(|e| e.into_inner());
            if matches!(*b, Backing::Mem { .. }) {
                *b = Backing::File(self.fd.clone());
            }
        }
        out.reserve(npages);
        for i in 0..npages as u64 {
            let off = pgoff.checked_add(i).and_then(|p| p.checked_mul(PAGE_SIZE)).ok_or(Errno::EFAULT)?;
            out.push(phys(id, off)?);
        }
        Ok(())
    }
}

/// Memory files the platform created for the engine (dma-bufs, vIOMMU MMIO pages), so that
/// an `Arc<dyn HostFile>` the engine hands back (e.g. in an `MmapRegion`) can be traced to its
/// descriptor. Keyed by the address of the shared allocation.
static MEMORY_FILES: Mutex<Vec<(usize, Weak<HostFd>)>> = Mutex::new(Vec::new());

fn register_memory(file: &Arc<HostFd>) {
    let mut g = MEMORY_FILES.lock().unwrap_or_else(|e| e.into_inner());
    g.retain(|(_, w)| w.strong_count() > 0);
    g.push((Arc::as_ptr(file) as *const () as usize, Arc::downgrade(file)));
}

/// The shim's own file behind a `HostFile` it created with `create_dmabuf_memory`.
pub fn memory_file(file: &Arc<dyn HostFile>) -> Option<Arc<HostFd>> {
    let key = Arc::as_ptr(file) as *const () as usize;
    let g = MEMORY_FILES.lock().unwrap_or_else(|e| e.into_inner());
    g.iter().filter(|(k, _)| *k == key).find_map(|(_, w)| w.upgrade())
}

/// Reads memory of process `pid` (this one without a system call).
///
/// The common case (this process, handler installed) is inlined with no stack frame; the
/// rest is outlined, because an ioctl's cost is mostly its two or three small user copies.
#[inline(always)]
fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    if pid == crate::caller::my_pid_cached() {
        if let Some(r) = uaccess::read_self_fast(addr, buf) {
            return r;
        }
    }
    read_mem_slow(pid, addr, buf)
}

#[inline(never)]
fn read_mem_slow(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    if pid == crate::my_pid() {
        uaccess::read_self(addr, buf)
    } else {
        sys::vm_read(pid, addr, buf).map_err(|_| Errno::EFAULT)
    }
}

/// Writes memory of process `pid` (this one without a system call); see [`read_mem`].
#[inline(always)]
fn write_mem(pid: u32, addr: u64, buf: &[u8]) -> Result<(), Errno> {
    if pid == crate::caller::my_pid_cached() {
        if let Some(r) = uaccess::write_self_fast(addr, buf) {
            return r;
        }
    }
    write_mem_slow(pid, addr, buf)
}

#[inline(never)]
fn write_mem_slow(pid: u32, addr: u64, buf: &[u8]) -> Result<(), Errno> {
    if pid == crate::my_pid() {
        uaccess::write_self(addr, buf)
    } else {
        sys::vm_write(pid, addr, buf).map_err(|_| Errno::EFAULT)
    }
}

// ---------------------------------------------------------------------------------------
// The memory half of the platform
// ---------------------------------------------------------------------------------------

/// The engine's view of real Linux process memory: the memory methods of
/// `uiommu_core::Platform`, as inherent methods, for a platform to delegate to. Region state
/// is process-wide, so every `LinuxMemory` value sees the same regions.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxMemory;

impl LinuxMemory {
    /// `Platform::read_user`.
    #[inline]
    pub fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        read_mem(caller.pid, addr, buf)
    }

    /// `Platform::write_user`.
    #[inline]
    pub fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> Result<(), Errno> {
        write_mem(caller.pid, addr, buf)
    }

    /// `Platform::resolve_user_pages`.
    pub fn resolve_user_pages(
        &self,
        pid: u32,
        va: u64,
        npages: usize,
        write: bool,
        out: &mut Vec<u64>,
    ) -> Result<(), Errno> {
        self.resolve(pid, va, npages, write, out)
    }

    /// `Platform::is_compound`.
    pub fn is_compound(&self, phys: u64) -> bool {
        let Some(reg) = region(phys >> REGION_SHIFT) else { return false };
        match reg.key {
            RegionKey::Object(..) => reg.hugetlb,
            RegionKey::Private(pid) => {
                let va = phys & OFFSET_MASK;
                let mut maps = Vec::new();
                if read_maps(pid, &mut maps).is_err() {
                    return false;
                }
                let found = vmas(&maps).find(|v| v.start <= va && va < v.end).is_some_and(|v| is_hugetlb_path(v.path));
                found
            }
        }
    }

    /// `Platform::read_phys`.
    pub fn read_phys(&self, phys: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let reg = region(phys >> REGION_SHIFT).ok_or(Errno::EFAULT)?;
        region_read(&reg, phys & OFFSET_MASK, buf)
    }

    /// `Platform::write_phys`.
    pub fn write_phys(&self, phys: u64, buf: &[u8]) -> Result<(), Errno> {
        let reg = region(phys >> REGION_SHIFT).ok_or(Errno::EFAULT)?;
        region_write(&reg, phys & OFFSET_MASK, buf)
    }

    /// A host file for descriptor `fd` of process `pid` (a private duplicate; for another
    /// process taken with `pidfd_getfd`, or reopened through `/proc/PID/fd/N`). EBADF if
    /// it is not open.
    pub fn host_file(&self, pid: u32, fd: i32) -> Result<Arc<HostFd>, Errno> {
        let dup = dup_of(pid, fd)?;
        Ok(Arc::new(HostFd::new(dup)?))
    }

    /// `Platform::create_dmabuf_memory`: a memfd of `len` bytes (see [`memory_file`]).
    pub fn create_dmabuf_memory(&self, len: u64) -> Result<Arc<dyn HostFile>, Errno> {
        let fd = sys::memfd_create(c"uiommu-dmabuf", libc::MFD_CLOEXEC).map_err(errno)?;
        let fd = Fd::private(fd).map_err(errno)?;
        sys::ftruncate(fd.raw(), len).map_err(errno)?;
        let file = Arc::new(HostFd::new(fd)?);
        register_memory(&file);
        Ok(file)
    }

    fn resolve(&self, pid: u32, va: u64, npages: usize, write: bool, out: &mut Vec<u64>) -> Result<(), Errno> {
        if npages == 0 {
            return Ok(());
        }
        if va & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let end = (npages as u64).checked_mul(PAGE_SIZE).and_then(|len| va.checked_add(len)).ok_or(Errno::EFAULT)?;
        let mut maps = Vec::new();
        read_maps(pid, &mut maps)?;
        let start_len = out.len();
        out.reserve(npages);
        let mut cur = va;
        let r = (|| {
            for vma in vmas(&maps) {
                if vma.end <= cur {
                    continue;
                }
                if vma.start > cur {
                    return Err(Errno::EFAULT); // hole
                }
                if !vma.read || (write && !vma.write) || vma.path.starts_with(b"[vvar") || vma.path == b"[vsyscall]" {
                    return Err(Errno::EFAULT);
                }
                let upto = vma.end.min(end);
                if vma.shared && vma.inode != 0 {
                    let (id, reg) = shared_region(pid, &vma)?;
                    if write && !shared_write_pin_allowed(&reg) {
                        return Err(Errno::EFAULT);
                    }
                    let mut a = cur;
                    while a < upto {
                        out.push(phys(id, vma.offset + (a - vma.start))?);
                        a += PAGE_SIZE;
                    }
                } else {
                    let (id, _) = private_region(pid)?;
                    let mut a = cur;
                    while a < upto {
                        out.push(phys(id, a)?);
                        a += PAGE_SIZE;
                    }
                }
                cur = upto;
                if cur >= end {
                    return Ok(());
                }
            }
            Err(Errno::EFAULT)
        })();
        if r.is_err() {
            out.truncate(start_len);
        }
        r
    }
}

/// A private duplicate of descriptor `fd` of process `pid`.
pub fn dup_of(pid: u32, fd: i32) -> Result<Fd, Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    if pid == crate::my_pid() {
        return Fd::dup_private(fd).map_err(|e| if e == libc::EBADF { Errno::EBADF } else { errno(e) });
    }
    // Another process: take its descriptor (same open file) with a pidfd, or else reopen
    // it through /proc (a new open of the same file; fine for memfds and regular files).
    if let Ok(pidfd) = sys::pidfd_open(pid) {
        let pidfd = Fd::plain(pidfd);
        match sys::pidfd_getfd(pidfd.raw(), fd) {
            Ok(raw) => return Fd::private(raw).map_err(errno),
            Err(libc::EBADF) => return Err(Errno::EBADF),
            Err(_) => {}
        }
    }
    let path = CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no NUL in numbers");
    let raw = sys::openat(libc::AT_FDCWD, &path, libc::O_RDWR, 0)
        .or_else(|_| sys::openat(libc::AT_FDCWD, &path, libc::O_RDONLY, 0))
        .map_err(|e| if e == libc::ENOENT { Errno::EBADF } else { errno(e) })?;
    Fd::private(raw).map_err(errno)
}

/// `(st_dev, st_ino)` of descriptor `fd` of process `pid` (without opening it).
pub fn file_identity(pid: u32, fd: i32) -> Result<(u64, u64), Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    let st = if pid == crate::my_pid() {
        sys::fstat(fd)
    } else {
        let path = CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no NUL in numbers");
        sys::stat(&path).map_err(|e| if e == libc::ENOENT { libc::EBADF } else { e })
    };
    let st = st.map_err(errno)?;
    Ok((st.st_dev, st.st_ino))
}

/// Holds the region locks across `fork()` (from a `pthread_atfork` prepare handler, paired
/// with [`fork_release`] in the parent and the child), so the child never inherits them held.
pub fn fork_acquire() -> Box<dyn std::any::Any> {
    let r = REGIONS.write().unwrap_or_else(|e| e.into_inner());
    let m = MEMORY_FILES.lock().unwrap_or_else(|e| e.into_inner());
    Box::new((r, m))
}

/// Releases what [`fork_acquire`] took.
pub fn fork_release(held: Box<dyn std::any::Any>) {
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::parse_maps_line;
    use crate::{current_caller, my_pid};

    #[test]
    fn parses_maps_lines() {
        let l = b"7f4334b1f000-7f4334b21000 rw-s 00001000 00:01 3                          /dev/zero (deleted)";
        let v = parse_maps_line(l).unwrap();
        assert_eq!(v.start, 0x7f4334b1f000);
        assert_eq!(v.end, 0x7f4334b21000);
        assert!(v.read && v.write && v.shared);
        assert_eq!(v.offset, 0x1000);
        assert_eq!((v.major, v.minor, v.inode), (0, 1, 3));
        assert_eq!(v.path, b"/dev/zero (deleted)");
        let v = parse_maps_line(b"7f4334b0b000-7f4334b18000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(!v.shared);
        assert_eq!(v.path, b"");
        let v = parse_maps_line(b"5608f0eb5000-5608f0eb6000 r--p 00000000 fe:00 10011007   /tmp/a b").unwrap();
        assert_eq!((v.major, v.minor, v.inode), (0xfe, 0, 10011007));
        assert!(!v.write);
        assert_eq!(v.path, b"/tmp/a b");
        assert!(parse_maps_line(b"").is_none());
        assert!(parse_maps_line(b"garbage").is_none());
    }

    fn mmap(len: usize, prot: i32, flags: i32, fd: i32) -> u64 {
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        p as u64
    }

    fn munmap(a: u64, len: usize) {
        // SAFETY: unmaps a mapping this test created and no longer references.
        unsafe { libc::munmap(a as *mut libc::c_void, len) };
    }

    #[test]
    fn user_copies() {
        let p = LinuxMemory;
        let c = current_caller();
        let mut b = [0u8; 8];
        assert_eq!(p.read_user(&c, 0, &mut b), Err(Errno::EFAULT));
        assert_eq!(p.write_user(&c, 0, &b), Err(Errno::EFAULT));
        assert_eq!(p.read_user(&c, 0, &mut []), Ok(()));
        let src = *b"abcdefgh";
        p.read_user(&c, src.as_ptr() as u64, &mut b).unwrap();
        assert_eq!(&b, b"abcdefgh");
        let mut dst = [0u8; 8];
        p.write_user(&c, dst.as_mut_ptr() as u64, b"12345678").unwrap();
        assert_eq!(&dst, b"12345678");
    }

    #[test]
    fn caller_has_sane_values() {
        let c = current_caller();
        assert_eq!(c.pid, std::process::id());
        assert!(c.memlock_limit > 0);
    }

    #[test]
    fn shared_anon_identity_and_data() {
        let p = LinuxMemory;
        let pid = my_pid();
        let len = 4 * 4096;
        let a = mmap(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
        let mut v1 = Vec::new();
        p.resolve_user_pages(pid, a, 4, true, &mut v1).unwrap();
        let mut v2 = Vec::new();
        p.resolve_user_pages(pid, a + 4096, 2, false, &mut v2).unwrap();
        assert_eq!(&v1[1..3], &v2[..]);
        for w in v1.windows(2) {
            assert_eq!(w[1], w[0] + 4096);
        }
        assert!(!p.is_compound(v1[0]));
        p.write_phys(v1[2] + 10, b"hi").unwrap();
        let mut got = [0u8; 2];
        let c = current_caller();
        p.read_user(&c, a + 2 * 4096 + 10, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Survives munmap (the region holds the object).
        munmap(a, len);
        let mut got = [0u8; 2];
        p.read_phys(v1[2] + 10, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        let mut v3 = Vec::new();
        assert_eq!(p.resolve_user_pages(pid, a, 1, false, &mut v3), Err(Errno::EFAULT));
        assert!(v3.is_empty());
    }

    #[test]
    fn private_and_permissions() {
        let p = LinuxMemory;
        let pid = my_pid();
        let a = mmap(3 * 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
        let mut v = Vec::new();
        p.resolve_user_pages(pid, a, 3, true, &mut v).unwrap();
        assert_eq!(v[0] & OFFSET_MASK, a);
        // SAFETY: changes the protection of a mapping owned by this test.
        unsafe { libc::mprotect((a + 4096) as *mut libc::c_void, 4096, libc::PROT_READ) };
        let mut w = Vec::new();
        assert_eq!(p.resolve_user_pages(pid, a, 3, true, &mut w), Err(Errno::EFAULT));
        p.resolve_user_pages(pid, a, 3, false, &mut w).unwrap();
        assert_eq!(v, w);
        // SAFETY: as above.
        unsafe { libc::mprotect((a + 4096) as *mut libc::c_void, 4096, libc::PROT_NONE) };
        let mut x = Vec::new();
        assert_eq!(p.resolve_user_pages(pid, a, 3, false, &mut x), Err(Errno::EFAULT));
        munmap(a + 4096, 4096);
        assert_eq!(p.resolve_user_pages(pid, a, 3, false, &mut x), Err(Errno::EFAULT));
        p.write_phys(v[2], b"xy").unwrap();
        let mut got = [0u8; 2];
        p.read_phys(v[2], &mut got).unwrap();
        assert_eq!(&got, b"xy");
        munmap(a, 3 * 4096);
    }

    #[test]
    fn memfd_matches_mapping() {
        let p = LinuxMemory;
        let pid = my_pid();
        let c = current_caller();
        let raw = sys::memfd_create(c"t", libc::MFD_CLOEXEC).unwrap();
        let mfd = Fd::plain(raw);
        sys::ftruncate(mfd.raw(), 8 * 4096).unwrap();
        let a = mmap(4 * 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, mfd.raw());
        let hf = p.host_file(pid, mfd.raw()).unwrap();
        assert_eq!(hf.kind(), HostFileKind::Shmem);
        assert_eq!(hf.size().unwrap(), 8 * 4096);
        let mut v = Vec::new();
        hf.resolve_pages(1, 2, &mut v).unwrap();
        let mut w = Vec::new();
        p.resolve_user_pages(pid, a + 4096, 2, true, &mut w).unwrap();
        assert_eq!(v, w);
        p.write_phys(v[0], b"memfd").unwrap();
        let mut got = [0u8; 5];
        p.read_user(&c, a + 4096, &mut got).unwrap();
        assert_eq!(&got, b"memfd");
        munmap(a, 4 * 4096);
        assert_eq!(p.host_file(pid, 987_654).err(), Some(Errno::EBADF));
        let dm = p.create_dmabuf_memory(16384).unwrap();
        assert_eq!(dm.size().unwrap(), 16384);
        let own = memory_file(&dm).expect("registered");
        assert!(own.raw_fd() >= 3);
        let other: Arc<dyn HostFile> = hf.clone();
        assert!(memory_file(&other).is_none());
    }

    #[test]
    fn hugetlb_is_compound() {
        let p = LinuxMemory;
        let len = 2 << 20;
        // SAFETY: a fresh mapping chosen by the kernel.
        let a = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
                -1,
                0,
            )
        };
        if a == libc::MAP_FAILED {
            eprintln!("no hugetlb pages; skipping");
            return;
        }
        let mut v = Vec::new();
        p.resolve_user_pages(my_pid(), a as u64, 2, true, &mut v).unwrap();
        assert!(p.is_compound(v[0]));
        munmap(a as u64, len);
    }
}

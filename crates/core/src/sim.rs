//! A simulated platform: processes with byte-vector memory, for tests and for embedding
//! the engine where no real process memory is involved. Everything is safe Rust, so the
//! engine's tests run under Miri.
//!
//! Physical addresses follow the same scheme as the Linux platform:
//! `phys = (object << 48) | byte offset`, where an object is one allocation made by
//! [`SimPlatform::mmap`] (shared by every process that maps it).

use crate::errno::{Errno, Result};
use crate::platform::{Caller, FdTarget, HostFile, HostFileKind, Platform, PAGE_SIZE};
use crate::EngineFile;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Bytes = Arc<Mutex<Vec<u8>>>;

#[derive(Clone, Debug)]
struct Mapping {
    len: u64,
    obj: u64,
    obj_off: u64,
    writable: bool,
}

#[derive(Default, Debug)]
struct SimState {
    objects: BTreeMap<u64, Bytes>,
    next_obj: u64,
    /// Per pid: va → mapping.
    maps: BTreeMap<u32, BTreeMap<u64, Mapping>>,
    next_va: u64,
    fds: BTreeMap<i32, FdTarget>,
    next_fd: i32,
}

/// The simulated machine's memory and descriptor tables.
#[derive(Default, Debug)]
pub struct SimPlatform {
    st: Mutex<SimState>,
}

/// A simulated shmem file (an object).
#[derive(Debug)]
struct SimFile {
    obj: u64,
    bytes: Bytes,
}

impl HostFile for SimFile {
    fn kind(&self) -> HostFileKind {
        HostFileKind::Shmem
    }
    fn size(&self) -> Result<u64> {
        Ok(self.bytes.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }
    fn resolve_pages(&self, pgoff: u64, npages: usize, out: &mut Vec<u64>) -> Result<()> {
        out.extend((0..npages as u64).map(|i| (self.obj << 48) | ((pgoff + i) * PAGE_SIZE)));
        Ok(())
    }
}

impl SimPlatform {
    /// A new, empty simulated machine.
    pub fn new() -> Arc<SimPlatform> {
        Arc::new(SimPlatform::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Map `len` bytes of new zeroed memory into `pid`; returns the (2 MiB aligned) VA.
    pub fn mmap(&self, pid: u32, len: u64, writable: bool) -> u64 {
        let mut s = self.lock();
        s.next_obj += 1;
        let obj = s.next_obj;
        s.objects.insert(obj, Arc::new(Mutex::new(vec![0; len as usize])));
        let va = 0x10_0000_0000 + s.next_va;
        s.next_va += (len.div_ceil(2 << 20) + 1) * (2 << 20);
        s.maps.entry(pid).or_default().insert(va, Mapping { len, obj, obj_off: 0, writable });
        va
    }

    /// Map the memory already mapped at `va` in `from` into `to` at the same address
    /// (what fork does to a MAP_SHARED region).
    pub fn share(&self, from: u32, va: u64, to: u32) {
        let mut s = self.lock();
        if let Some(m) = s.maps.get(&from).and_then(|m| m.get(&va)).cloned() {
            s.maps.entry(to).or_default().insert(va, m);
        }
    }

    /// Remove the mapping starting at `va`.
    pub fn munmap(&self, pid: u32, va: u64) {
        if let Some(m) = self.lock().maps.get_mut(&pid) {
            m.remove(&va);
        }
    }

    /// A shmem file of `len` bytes installed as a descriptor; returns the fd.
    pub fn memfd(&self, len: u64) -> i32 {
        let mut s = self.lock();
        s.next_obj += 1;
        let obj = s.next_obj;
        let bytes: Bytes = Arc::new(Mutex::new(vec![0; len as usize]));
        s.objects.insert(obj, bytes.clone());
        s.next_fd += 1;
        let fd = s.next_fd + 2;
        s.fds.insert(fd, FdTarget::Host(Arc::new(SimFile { obj, bytes })));
        fd
    }

    /// Close a descriptor (drops the engine file it held).
    pub fn close(&self, fd: i32) -> Option<FdTarget> {
        self.lock().fds.remove(&fd)
    }

    /// Every open descriptor, ascending.
    pub fn open_fds(&self) -> Vec<i32> {
        self.lock().fds.keys().copied().collect()
    }

    /// The engine file behind a descriptor.
    pub fn engine_file(&self, fd: i32) -> Option<EngineFile> {
        match self.lock().fds.get(&fd) {
            Some(FdTarget::Engine(f)) => Some(f.clone()),
            _ => None,
        }
    }

    fn locate(s: &SimState, pid: u32, va: u64) -> Option<(Mapping, u64)> {
        let (&start, m) = s.maps.get(&pid)?.range(..=va).next_back()?;
        (va < start + m.len).then(|| (m.clone(), va - start))
    }

    fn copy(&self, pid: u32, addr: u64, len: usize, write: bool, mut f: impl FnMut(&mut [u8], usize)) -> Result<()> {
        let s = self.lock();
        let mut done = 0usize;
        while done < len {
            let va = addr.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let (m, off) = Self::locate(&s, pid, va).ok_or(Errno::EFAULT)?;
            if write && !m.writable {
                return Err(Errno::EFAULT);
            }
            let n = ((m.len - off) as usize).min(len - done);
            let obj = s.objects[&m.obj].clone();
            let mut bytes = obj.lock().unwrap_or_else(|e| e.into_inner());
            let o = (m.obj_off + off) as usize;
            f(&mut bytes[o..o + n], done);
            done += n;
        }
        Ok(())
    }

    fn phys_slice(&self, phys: u64, len: usize, f: impl FnOnce(&mut [u8])) -> Result<()> {
        let s = self.lock();
        let obj = s.objects.get(&(phys >> 48)).ok_or(Errno::EFAULT)?.clone();
        drop(s);
        let mut b = obj.lock().unwrap_or_else(|e| e.into_inner());
        let o = (phys & ((1 << 48) - 1)) as usize;
        let slice = b.get_mut(o..o + len).ok_or(Errno::EFAULT)?;
        f(slice);
        Ok(())
    }
}

impl Platform for SimPlatform {
    fn read_user(&self, caller: &Caller, addr: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.copy(caller.pid, addr, len, false, |src, at| buf[at..at + src.len()].copy_from_slice(src))
    }

    fn write_user(&self, caller: &Caller, addr: u64, buf: &[u8]) -> Result<()> {
        self.copy(caller.pid, addr, buf.len(), true, |dst, at| dst.copy_from_slice(&buf[at..at + dst.len()]))
    }

    fn resolve_user_pages(&self, pid: u32, va: u64, npages: usize, write: bool, out: &mut Vec<u64>) -> Result<()> {
        let s = self.lock();
        let mut tmp = Vec::with_capacity(npages);
        for i in 0..npages as u64 {
            let (m, off) = Self::locate(&s, pid, va + i * PAGE_SIZE).ok_or(Errno::EFAULT)?;
            if write && !m.writable {
                return Err(Errno::EFAULT);
            }
            tmp.push((m.obj << 48) | (m.obj_off + off));
        }
        out.extend(tmp);
        Ok(())
    }

    fn is_compound(&self, _phys: u64) -> bool {
        false
    }

    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> Result<()> {
        self.phys_slice(phys, buf.len(), |s| buf.copy_from_slice(s))
    }

    fn write_phys(&self, phys: u64, buf: &[u8]) -> Result<()> {
        self.phys_slice(phys, buf.len(), |s| s.copy_from_slice(buf))
    }

    fn fd(&self, _caller: &Caller, fd: i32) -> Result<FdTarget> {
        self.lock().fds.get(&fd).cloned().ok_or(Errno::EBADF)
    }

    fn install_fd(&self, _caller: &Caller, file: EngineFile, _flags: i32) -> Result<i32> {
        let mut s = self.lock();
        s.next_fd += 1;
        let fd = s.next_fd + 2;
        s.fds.insert(fd, FdTarget::Engine(file));
        Ok(fd)
    }

    fn uninstall_fd(&self, _caller: &Caller, fd: i32) -> Option<EngineFile> {
        let mut s = self.lock();
        match s.fds.remove(&fd) {
            Some(FdTarget::Engine(f)) => Some(f),
            Some(other) => {
                s.fds.insert(fd, other);
                None
            }
            None => None,
        }
    }

    fn create_dmabuf_memory(&self, len: u64) -> Result<Arc<dyn HostFile>> {
        let mut s = self.lock();
        s.next_obj += 1;
        let obj = s.next_obj;
        let bytes: Bytes = Arc::new(Mutex::new(vec![0; len as usize]));
        s.objects.insert(obj, bytes.clone());
        Ok(Arc::new(SimFile { obj, bytes }))
    }
}

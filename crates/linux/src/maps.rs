//! `/proc/PID/maps` parsing.

use std::ffi::CString;
use uiommu_core::Errno;

use crate::sys;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r` permission.
    pub read: bool,
    /// `w` permission.
    pub write: bool,
    /// `s` (MAP_SHARED) rather than `p`.
    pub shared: bool,
    /// Byte offset into the backing object.
    pub offset: u64,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode number (0 = anonymous private memory).
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `/dev/zero (deleted)`, ...), possibly empty.
    pub path: &'a [u8],
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

fn dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// Parses one maps line.
pub fn parse_maps_line(line: &[u8]) -> Option<Vma<'_>> {
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
        let n = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        let (f, tail) = rest.split_at(n);
        rest = tail;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let colon = dev.iter().position(|&c| c == b':')?;
    if perms.len() < 4 {
        return None;
    }
    let path = {
        let mut p = rest;
        while let [b' ', tail @ ..] = p {
            p = tail;
        }
        p
    };
    Some(Vma {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        shared: perms[3] == b's',
        offset: hex(offset)?,
        major: hex(&dev[..colon])? as u32,
        minor: hex(&dev[colon + 1..])? as u32,
        inode: dec(inode)?,
        path,
    })
}

/// Iterates the VMAs of a maps file.
pub fn vmas(maps: &[u8]) -> impl Iterator<Item = Vma<'_>> {
    maps.split(|&c| c == b'\n').filter_map(parse_maps_line)
}

/// Reads `/proc/PID/maps` (EFAULT if the process is gone).
pub fn read_maps(pid: u32, buf: &mut Vec<u8>) -> Result<(), Errno> {
    let path = if pid == crate::my_pid() {
        CString::from(c"/proc/self/maps")
    } else {
        CString::new(format!("/proc/{pid}/maps")).expect("no NUL in a number")
    };
    // A process that is gone has no memory to pin.
    sys::read_file(&path, buf).map_err(|_| Errno::EFAULT)
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn is_hugetlb_path(path: &[u8]) -> bool {
    contains(path, b"anon_hugepage")
}

//! `/proc/PID/status` with the emulated kernel's pinned-memory accounting.
//!
//! The kernel shows `mm->pinned_vm` as `VmPin:` and `mm->locked_vm` as `VmLck:`. uiommu
//! charges its pins in the engine ([`uiommu_core::Machine::pinned_pages_of`]), so an open of
//! `/proc/self/status`, `/proc/thread-self/status` or `/proc/<pid>/status` (through `open`,
//! `openat` or `fopen`) is answered with a copy of the real file whose `VmPin:` (and
//! `VmLck:`, charged in per-process accounting mode) lines include the engine's figures
//! for that pid: from this process's own engine, and from the host of every remote engine
//! file this process holds (asked over one of its descriptors). When those figures are all
//! zero (no uiommu involvement) the open passes through untouched. The copy is a sealed
//! memfd positioned at 0.

use crate::sys::{self, Fd};
use crate::{client, fdtable, my_pid};

/// The pid a status path is about: `/proc/self/status`, `/proc/thread-self/status`,
/// `/proc/<digits>/status` (exact spellings only).
pub fn status_target(path: &[u8]) -> Option<u32> {
    let rest = path.strip_prefix(b"/proc/")?;
    let who = rest.strip_suffix(b"/status")?;
    match who {
        b"self" | b"thread-self" => Some(my_pid()),
        d if !d.is_empty() && d.len() <= 10 && d.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(d).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// The engine figures (VmPin pages, VmLck pages) for `pid` from every engine this process
/// can reach.
pub fn figures(pid: u32) -> (u64, u64) {
    let (mut pin, mut lck) = crate::machine_if_any().map(|m| m.pinned_pages_of(pid)).unwrap_or((0, 0));
    for (host, fd) in fdtable::remote_hosts() {
        if host == my_pid() {
            continue;
        }
        if let Some((p, l)) = client::status(fd.raw(), host, pid) {
            pin += p;
            lck += l;
        }
    }
    (pin, lck)
}

/// Adds `kb` to the value of the line starting with `tag` (kernel layout: `TAG:\t%8lu kB`).
fn bump(text: &str, tag: &str, kb: u64) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        if kb != 0 {
            if let Some(rest) = line.strip_prefix(tag) {
                let num: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
                if let Ok(v) = num.parse::<u64>() {
                    let nl = if line.ends_with('\n') { "\n" } else { "" };
                    out.push_str(&format!("{tag}\t{:>8} kB{nl}", v + kb));
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}

/// The status file for `pid` with the engine's figures added (None: nothing to add, or the
/// real file cannot be read — let the real open answer).
pub fn contents(path: &std::ffi::CStr, pid: u32) -> Option<Vec<u8>> {
    let (pin, lck) = figures(pid);
    if pin == 0 && lck == 0 {
        return None;
    }
    let mut raw = Vec::new();
    sys::read_file(path, &mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let page_kb = uiommu_core::PAGE_SIZE / 1024;
    let text = bump(&text, "VmPin:", pin * page_kb);
    let text = bump(&text, "VmLck:", lck * page_kb);
    Some(text.into_bytes())
}

/// A sealed memfd holding `data`, positioned at 0.
pub fn memfd_with(data: &[u8], cloexec: bool) -> Result<i32, i32> {
    let flags = libc::MFD_ALLOW_SEALING | if cloexec { libc::MFD_CLOEXEC } else { 0 };
    let fd = Fd::plain(sys::memfd_create(c"status", flags)?);
    sys::write_all(fd.raw(), data)?;
    sys::lseek(fd.raw(), 0, libc::SEEK_SET)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    let _ = sys::fcntl(fd.raw(), libc::F_ADD_SEALS, seals as libc::c_long);
    Ok(fd.into_raw())
}

/// `open(path, flags)` of a status file: `Some(fd or -errno)` when served here.
pub fn open(path: &std::ffi::CStr, flags: i32) -> Option<Result<i32, i32>> {
    if flags & libc::O_ACCMODE != libc::O_RDONLY {
        return None;
    }
    let pid = status_target(path.to_bytes())?;
    let data = contents(path, pid)?;
    Some(memfd_with(&data, flags & libc::O_CLOEXEC != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_lines() {
        assert_eq!(status_target(b"/proc/123/status"), Some(123));
        assert_eq!(status_target(b"/proc/self/status"), Some(my_pid()));
        assert_eq!(status_target(b"/proc/thread-self/status"), Some(my_pid()));
        assert_eq!(status_target(b"/proc/12a/status"), None);
        assert_eq!(status_target(b"/proc/123/stat"), None);
        assert_eq!(status_target(b"/proc//status"), None);
        let t = "Name:\tx\nVmLck:\t       0 kB\nVmPin:\t       4 kB\nVmHWM:\t    1000 kB\n";
        let b = bump(&bump(t, "VmPin:", 8), "VmLck:", 4);
        assert_eq!(b, "Name:\tx\nVmLck:\t       4 kB\nVmPin:\t      12 kB\nVmHWM:\t    1000 kB\n");
        assert_eq!(bump(t, "VmPin:", 0), t);
    }
}

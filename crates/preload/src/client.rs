//! The client side: calls on an engine file another process hosts become requests over the
//! descriptor itself ([`crate::proto`]).
//!
//! Errors of the transport: if the host process is gone (its end of the connection is
//! closed), every call fails with ENODEV — the answer of a device whose driver went away —
//! `poll` reports POLLERR|POLLHUP, and `close` just closes.

use std::sync::Arc;

use uiommu_core::Errno;

use crate::fdtable::{self, FileKind, ShimFile};
use crate::proto::{kind, op, Ans, Msg, Req};
use crate::sys::{self, Fd};

/// Transport failures: the host is gone.
fn dead(e: i32) -> Errno {
    match e {
        libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED | libc::EBADF => Errno::ENODEV,
        e => Errno(e),
    }
}

/// One request on `fd` (a client end whose host is `host`): sends `req` with a fresh reply
/// channel, serves the host's sub-requests, and returns the final reply (and the descriptor
/// that came with it, if any).
pub fn call(fd: i32, host: u32, req: Req) -> Result<(Msg, Option<Fd>), Errno> {
    let (msg, fd, _) = call_with(fd, host, req, |_| Ok(()))?;
    Ok((msg, fd))
}

/// [`call`], with `first` run on the reply channel after the first REPLY instead of
/// returning (for CLOSE, which has two REPLYs). Returns the channel too.
fn call_with(
    fd: i32,
    host: u32,
    req: Req,
    mut first: impl FnMut(&Fd) -> Result<(), Errno>,
) -> Result<(Msg, Option<Fd>, Fd), Errno> {
    let [mine, theirs] = sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC).map_err(Errno)?;
    let mine = Fd::plain(mine);
    let theirs = Fd::plain(theirs);
    sys::send_with_fds(fd, &req.encode(), &[theirs.raw()]).map_err(dead)?;
    drop(theirs);
    let mut replies = 0;
    loop {
        let mut buf = [0u8; 2 * Msg::LEN];
        let r = sys::recv_with_fds(mine.raw(), &mut buf, true, false).map_err(|_| Errno::ENODEV)?;
        let mut fds = r.fds.into_iter().map(Fd::plain);
        if r.len == 0 {
            // The host closed the channel without answering: it is gone.
            return Err(Errno::ENODEV);
        }
        let msg = Msg::decode(&buf[..r.len]).ok_or(Errno::EIO)?;
        match msg.kind {
            kind::REPLY => {
                replies += 1;
                if replies == 1 && req.op == op::CLOSE {
                    first(&mine)?;
                    continue;
                }
                return Ok((msg, fds.next(), mine));
            }
            kind::INSTALL => {
                let ans = match fds.next() {
                    Some(new) => install(new, host, msg.a as i32, msg.b as u8),
                    None => Ans { fd: -1, err: libc::EBADF },
                };
                sys::send_with_fds(mine.raw(), &ans.encode(), &[]).map_err(|_| Errno::ENODEV)?;
            }
            kind::UNINSTALL => {
                let n = msg.a as i32;
                let entry = fdtable::remove(n);
                let _ = sys::close(n);
                crate::drop_quietly(entry);
                sys::send_with_fds(mine.raw(), &Ans::default().encode(), &[]).map_err(|_| Errno::ENODEV)?;
            }
            _ => return Err(Errno::EIO),
        }
    }
}

/// Puts a descriptor the host sent into this process's table.
fn install(new: Fd, host: u32, flags: i32, code: u8) -> Ans {
    if flags & libc::O_CLOEXEC == 0 {
        if let Err(e) = sys::fcntl(new.raw(), libc::F_SETFD, 0) {
            return Ans { fd: -1, err: e };
        }
    }
    let n = new.into_raw();
    fdtable::forget_stale(n);
    match FileKind::from_code(code) {
        // A dma-buf is its memfd here: an ordinary descriptor.
        Some(FileKind::DmaBuf) | None => {}
        Some(kind) => {
            let stale = fdtable::insert(n, Arc::new(ShimFile::Remote { host, kind }));
            crate::drop_quietly(stale);
        }
    }
    Ans { fd: n, err: 0 }
}

fn result(msg: &Msg) -> Result<i64, Errno> {
    if msg.err != 0 {
        Err(Errno(msg.err))
    } else {
        Ok(msg.val)
    }
}

fn req(o: u32, a: u64, b: u64, c: u64) -> Req {
    Req::new(o, a, b, c, &crate::current_creds())
}

/// `ioctl(fd, cmd, arg)` on a remote iommufd.
pub fn ioctl(fd: i32, host: u32, cmd: u32, arg: u64) -> Result<i64, Errno> {
    result(&call(fd, host, req(op::IOCTL, cmd as u64, arg, 0))?.0)
}

/// `read(fd, buf, count)` on a remote file.
pub fn read(fd: i32, host: u32, buf: u64, count: usize) -> Result<usize, Errno> {
    result(&call(fd, host, req(op::READ, buf, count as u64, 0))?.0).map(|n| n as usize)
}

/// `write(fd, buf, count)` on a remote file.
pub fn write(fd: i32, host: u32, buf: u64, count: usize) -> Result<usize, Errno> {
    result(&call(fd, host, req(op::WRITE, buf, count as u64, 0))?.0).map(|n| n as usize)
}

/// Poll readiness of a remote file (`POLLERR|POLLHUP` if the host is gone).
pub fn poll(fd: i32, host: u32) -> u32 {
    match call(fd, host, Req { op: op::POLL, ..Default::default() }) {
        Ok((m, _)) if m.err == 0 => m.val as u32,
        _ => (libc::POLLERR | libc::POLLHUP) as u32,
    }
}

/// `mmap` of a remote iommufd region: its memory's descriptor and the hold id.
pub fn mmap(fd: i32, host: u32, len: u64, prot: i32, flags: i32, off: u64) -> Result<(Fd, u64), Errno> {
    let b = prot as u32 as u64 | (flags as u32 as u64) << 32;
    let (msg, mem) = call(fd, host, req(op::MMAP, len, b, off))?;
    result(&msg)?;
    Ok((mem.ok_or(Errno::ENODEV)?, msg.a))
}

/// The pinned-memory figures (VmPin, VmLck in pages) host `host` charged to `pid`.
pub fn status(fd: i32, host: u32, pid: u32) -> Option<(u64, u64)> {
    match call(fd, host, Req { op: op::STATUS, a: pid as u64, ..Default::default() }) {
        Ok((m, _)) if m.err == 0 => Some((m.a, m.b)),
        _ => None,
    }
}

/// A live mmap of a remote region: tells the host when it is gone. Holds a duplicate of
/// the client end (a mapping keeps the file open, as in the kernel).
#[derive(Debug)]
pub struct RemoteHold {
    conn: Fd,
    host: u32,
    id: u64,
}

impl RemoteHold {
    /// A hold on `id` through a private duplicate of `fd`.
    pub fn new(fd: i32, host: u32, id: u64) -> Result<RemoteHold, Errno> {
        Ok(RemoteHold { conn: Fd::dup_private(fd).map_err(Errno)?, host, id })
    }
}

impl Drop for RemoteHold {
    fn drop(&mut self) {
        let _ = call(self.conn.raw(), self.host, Req { op: op::MUNMAP, a: self.id, ..Default::default() });
    }
}

/// Drops a hold id without a mapping (the local mmap failed).
pub fn release_hold(fd: i32, host: u32, id: u64) {
    let _ = call(fd, host, Req { op: op::MUNMAP, a: id, ..Default::default() });
}

/// `close(fd)` of a remote file: the host learns of it and, if that was the last holder
/// anywhere, tears the file down before this returns. `close_now` performs the real close.
pub fn close(fd: i32, host: u32, close_now: impl FnOnce() -> i32) -> i32 {
    let mut close_now = Some(close_now);
    let mut rc = None;
    let r = call_with(fd, host, Req { op: op::CLOSE, ..Default::default() }, |chan| {
        if let Some(f) = close_now.take() {
            let v = f();
            rc = Some((v, sys::errno()));
        }
        sys::send_with_fds(chan.raw(), &Ans::default().encode(), &[]).map(drop).map_err(|_| Errno::ENODEV)
    });
    drop(r);
    match (rc, close_now) {
        (Some((v, e)), _) => {
            sys::set_errno(e);
            v
        }
        // The host did not answer (gone): close anyway.
        (None, Some(f)) => f(),
        (None, None) => 0,
    }
}

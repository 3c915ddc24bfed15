//! Messages between a client process and the host of an engine file.
//!
//! A request is one SOCK_SEQPACKET message on the client end of the file's connection
//! (the program's own descriptor), carrying a [`Req`] and, as SCM_RIGHTS, one end of a fresh
//! socket pair: the *reply channel*. Everything about that request travels on the reply
//! channel, so processes sharing one descriptor never see each other's answers. The host's
//! end has SO_PASSCRED set, so the kernel attaches the sender's pid to every request.
//!
//! On the reply channel the host sends [`Msg`]s: zero or more sub-requests (install a new
//! descriptor in the client's table — the fd travels with it — or take one back), each
//! answered by the client with an [`Ans`], then exactly one `REPLY`.

use uiommu_core::Creds;

/// Request operations.
pub mod op {
    /// `ioctl(fd, a as cmd, b as arg)`.
    pub const IOCTL: u32 = 1;
    /// `read(fd, a as buf, b as count)`.
    pub const READ: u32 = 2;
    /// `write(fd, a as buf, b as count)`.
    pub const WRITE: u32 = 3;
    /// Poll readiness bits.
    pub const POLL: u32 = 4;
    /// `mmap(len a, prot b & 0xffffffff, flags b >> 32, offset c)`: REPLY carries the memory's
    /// descriptor and a hold id (`a`).
    pub const MMAP: u32 = 5;
    /// The mapping of hold `a` is gone.
    pub const MUNMAP: u32 = 6;
    /// The client is about to close its descriptor: REPLY "go", then the client closes and
    /// sends [`Ans`](super::Ans) on the reply channel, and the host answers with a second REPLY once it
    /// has torn the file down if that was the last holder.
    pub const CLOSE: u32 = 7;
    /// Pinned-memory figures of pid `a`: REPLY `a` = VmPin pages, `b` = VmLck pages.
    pub const STATUS: u32 = 8;
}

/// Message kinds on the reply channel (host → client).
pub mod kind {
    /// The final answer.
    pub const REPLY: u32 = 1;
    /// Install the descriptor that comes with this message (`a` = open flags, `b` = kind
    /// code); answer with the new number.
    pub const INSTALL: u32 = 2;
    /// Close descriptor `a` (installed earlier in this request); answer 0.
    pub const UNINSTALL: u32 = 3;
}

fn put(out: &mut [u8], at: usize, v: &[u8]) {
    out[at..at + v.len()].copy_from_slice(v);
}

fn get8(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

fn get4(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

/// A request (client → host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Req {
    /// One of [`op`].
    pub op: u32,
    /// Arguments (see [`op`]).
    pub a: u64,
    /// Argument.
    pub b: u64,
    /// Argument.
    pub c: u64,
    /// The client's uid.
    pub uid: u32,
    /// Bit 0: CAP_SYS_RESOURCE, bit 1: CAP_IPC_LOCK (effective, plus granted).
    pub caps: u32,
    /// RLIMIT_MEMLOCK in bytes.
    pub memlock: u64,
}

impl Req {
    /// Encoded size.
    pub const LEN: usize = 48;

    /// A request with the caller's credentials filled in.
    pub fn new(op: u32, a: u64, b: u64, c: u64, creds: &Creds) -> Req {
        Req {
            op,
            a,
            b,
            c,
            uid: creds.uid,
            caps: creds.cap_sys_resource as u32 | (creds.cap_ipc_lock as u32) << 1,
            memlock: creds.memlock_limit,
        }
    }

    /// The credentials it carries.
    pub fn creds(&self) -> Creds {
        Creds {
            uid: self.uid,
            cap_sys_resource: self.caps & 1 != 0,
            cap_ipc_lock: self.caps & 2 != 0,
            memlock_limit: self.memlock,
        }
    }

    /// Bytes on the wire.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut o = [0u8; Self::LEN];
        put(&mut o, 0, &self.op.to_ne_bytes());
        put(&mut o, 4, &self.uid.to_ne_bytes());
        put(&mut o, 8, &self.a.to_ne_bytes());
        put(&mut o, 16, &self.b.to_ne_bytes());
        put(&mut o, 24, &self.c.to_ne_bytes());
        put(&mut o, 32, &self.caps.to_ne_bytes());
        put(&mut o, 40, &self.memlock.to_ne_bytes());
        o
    }

    /// Parses a request (`None` if it has the wrong size).
    pub fn decode(b: &[u8]) -> Option<Req> {
        (b.len() == Self::LEN).then(|| Req {
            op: get4(b, 0),
            uid: get4(b, 4),
            a: get8(b, 8),
            b: get8(b, 16),
            c: get8(b, 24),
            caps: get4(b, 32),
            memlock: get8(b, 40),
        })
    }
}

/// A message on the reply channel (host → client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// One of [`kind`].
    pub kind: u32,
    /// REPLY: 0 or a positive errno.
    pub err: i32,
    /// REPLY: the result.
    pub val: i64,
    /// Extra values (see [`kind`] and [`op`]).
    pub a: u64,
    /// Extra value.
    pub b: u64,
}

impl Msg {
    /// Encoded size.
    pub const LEN: usize = 32;

    /// A final answer.
    pub fn reply(r: Result<i64, uiommu_core::Errno>) -> Msg {
        match r {
            Ok(v) => Msg { kind: kind::REPLY, val: v, ..Default::default() },
            Err(e) => Msg { kind: kind::REPLY, err: e.0, ..Default::default() },
        }
    }

    /// Bytes on the wire.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut o = [0u8; Self::LEN];
        put(&mut o, 0, &self.kind.to_ne_bytes());
        put(&mut o, 4, &self.err.to_ne_bytes());
        put(&mut o, 8, &self.val.to_ne_bytes());
        put(&mut o, 16, &self.a.to_ne_bytes());
        put(&mut o, 24, &self.b.to_ne_bytes());
        o
    }

    /// Parses a message.
    pub fn decode(b: &[u8]) -> Option<Msg> {
        (b.len() == Self::LEN).then(|| Msg {
            kind: get4(b, 0),
            err: get4(b, 4) as i32,
            val: get8(b, 8) as i64,
            a: get8(b, 16),
            b: get8(b, 24),
        })
    }
}

/// A client's answer to a sub-request: the installed descriptor, or an errno.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ans {
    /// Descriptor number (INSTALL) or 0.
    pub fd: i32,
    /// 0 or a positive errno.
    pub err: i32,
}

impl Ans {
    /// Encoded size.
    pub const LEN: usize = 8;

    /// Bytes on the wire.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut o = [0u8; Self::LEN];
        put(&mut o, 0, &self.fd.to_ne_bytes());
        put(&mut o, 4, &self.err.to_ne_bytes());
        o
    }

    /// Parses an answer.
    pub fn decode(b: &[u8]) -> Option<Ans> {
        (b.len() == Self::LEN).then(|| Ans { fd: get4(b, 0) as i32, err: get4(b, 4) as i32 })
    }
}

/// The abstract socket name of a host's end: `uiommu-PID-NONCE-ID-K`.
pub fn socket_name(host: u32, nonce: u64, id: u64, kind: crate::fdtable::FileKind) -> Vec<u8> {
    format!("uiommu-{host}-{nonce:016x}-{id}-{}", kind.code() as char).into_bytes()
}

/// Parses [`socket_name`]: (host pid, nonce, id, kind).
pub fn parse_socket_name(name: &[u8]) -> Option<(u32, u64, u64, crate::fdtable::FileKind)> {
    let s = std::str::from_utf8(name.strip_prefix(b"uiommu-")?).ok()?;
    let mut it = s.split('-');
    let host = it.next()?.parse().ok()?;
    let nonce = u64::from_str_radix(it.next()?, 16).ok()?;
    let id = it.next()?.parse().ok()?;
    let k = it.next()?;
    if it.next().is_some() || k.len() != 1 {
        return None;
    }
    Some((host, nonce, id, crate::fdtable::FileKind::from_code(k.as_bytes()[0])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::FileKind;

    #[test]
    fn round_trips() {
        let c = Creds { uid: 7, cap_sys_resource: true, cap_ipc_lock: false, memlock_limit: 1 << 20 };
        let r = Req::new(op::IOCTL, 1, 2, 3, &c);
        assert_eq!(Req::decode(&r.encode()), Some(r));
        assert_eq!(Req::decode(&r.encode()).unwrap().creds(), c);
        let m = Msg { kind: kind::INSTALL, err: -1, val: -5, a: 9, b: 10 };
        assert_eq!(Msg::decode(&m.encode()), Some(m));
        let a = Ans { fd: 12, err: 3 };
        assert_eq!(Ans::decode(&a.encode()), Some(a));
        let n = socket_name(123, 0xabc, 5, FileKind::Fault);
        assert_eq!(parse_socket_name(&n), Some((123, 0xabc, 5, FileKind::Fault)));
        assert_eq!(parse_socket_name(b"uiommu-1-2"), None);
        assert_eq!(parse_socket_name(b"other"), None);
    }
}

//! One `/dev/iommu` shared by two unrelated processes, the way the kernel's file is.
//!
//! Process A (this test binary re-run under `LD_PRELOAD`) opens `/dev/iommu`, allocates an
//! IOAS with a mock domain and a self-test access, starts process B with `posix_spawn` (a
//! fresh image: nothing inherited but one socket) and passes the iommufd over it with
//! SCM_RIGHTS. B maps its own MAP_SHARED buffer into A's IOAS; A reads B's data through the
//! access and sees B's pinned memory in `/proc/B/status`; B overwrites its buffer, unmaps it
//! and exits; A still reads the last data through the IOMMU.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::io::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use uiommu_uapi::iommufd::*;
use uiommu_uapi::test::*;
use zerocopy::{FromZeros, IntoBytes};

const ROLE: &str = "UIOMMU_XPROC_ROLE";
const SOCK: &str = "UIOMMU_XPROC_SOCK";

/// The cdylib built alongside this test (same profile directory), building it if needed.
fn preload_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let deps = exe.parent().expect("deps dir");
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let lib = dir.join("libuiommu_preload.so");
        if lib.exists() {
            return lib;
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tdir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preload-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-p", "uiommu-preload", "--target-dir"])
        .arg(&tdir)
        .current_dir(manifest)
        .status()
        .expect("run cargo build");
    assert!(st.success(), "cargo build -p uiommu-preload failed");
    tdir.join("debug/libuiommu_preload.so")
}

/// Re-runs this test binary as process `role` under the shim; returns its stdout after
/// checking that it exited with 0 and printed `XPROC <role> OK`. `None` inside a role
/// process (the drivers are tests too, and must not start processes there).
fn run_role(role: &str) -> Option<String> {
    if std::env::var_os(ROLE).is_some() {
        return None;
    }
    let lib = preload_lib();
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "xproc_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("LD_PRELOAD", &lib)
        .output()
        .unwrap_or_else(|e| panic!("run process {role}: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(o.status.success(), "process {role} failed: {:?}", o.status);
    assert!(stdout.contains(&format!("XPROC {role} OK")), "{role} did not finish");
    assert!(!stderr.contains("uiommu: internal error"), "a panic was caught");
    Some(stdout)
}

#[test]
fn fd_passed_to_a_spawned_process() {
    run_role("A");
}

#[test]
fn fork_children_are_clients() {
    if let Some(stdout) = run_role("F") {
        assert!(stdout.contains("XPROC ORPHAN OK"), "the orphaned client did not report");
    }
}

/// A last `close()` of `/dev/iommu` returns only once the file is torn down: a new file
/// opened right after sees none of the old one's pins. (The host's service thread watches
/// every descriptor for hang-ups; it must never be left holding the last reference.) A race,
/// so many rounds: before the fix, about one run in five failed.
#[test]
fn last_close_releases_before_returning() {
    run_role("C");
}

/// Runs as process A, B, C or F when a driver above starts it; does nothing otherwise.
#[test]
fn xproc_role() {
    match std::env::var(ROLE).as_deref() {
        Ok("A") => process_a(),
        Ok("B") => process_b(),
        Ok("C") => process_c(),
        Ok("F") => process_f(),
        _ => {}
    }
}

fn process_c() {
    // A fresh private page of our own.
    let buf = anon_page(libc::MAP_PRIVATE);
    let refs = TestCheckRefs { length: 4096, uptr: buf as u64, refs: 0, pad: 0 };
    for round in 0..3000 {
        // SAFETY: plain libc calls on our own descriptors.
        let fd = unsafe { libc::open(c"/dev/iommu".as_ptr(), libc::O_RDWR) };
        assert!(fd >= 0);
        let mut alloc = IommuIoasAlloc { size: std::mem::size_of::<IommuIoasAlloc>() as u32, ..Default::default() };
        ioctl(fd, IOMMU_IOAS_ALLOC, &mut alloc).expect("IOAS_ALLOC");
        test_cmd(fd, IOMMU_TEST_OP_MOCK_DOMAIN, alloc.out_ioas_id, &TestMockDomain::new_zeroed()).expect("MOCK_DOMAIN");
        map_page(fd, alloc.out_ioas_id, buf).expect("IOAS_MAP");
        let held = TestCheckRefs { refs: 1, ..refs };
        test_cmd(fd, IOMMU_TEST_OP_MD_CHECK_REFS, 0, &held).expect("pinned once while mapped");
        // A fault queue's descriptor closed first wakes the service thread (its hang-up),
        // which then races the last close of the iommufd.
        let mut fault = IommuFaultAlloc { size: std::mem::size_of::<IommuFaultAlloc>() as u32, ..Default::default() };
        ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &mut fault).expect("FAULT_QUEUE_ALLOC");
        // SAFETY: closing our own descriptors.
        unsafe {
            assert_eq!(libc::close(fault.out_fault_fd as i32), 0);
            assert_eq!(libc::close(fd), 0);
        }
        // SAFETY: as above.
        let fd = unsafe { libc::open(c"/dev/iommu".as_ptr(), libc::O_RDWR) };
        assert!(fd >= 0);
        let r = test_cmd(fd, IOMMU_TEST_OP_MD_CHECK_REFS, 0, &refs);
        assert!(r.is_ok(), "round {round}: a pin outlived close(): {r:?}");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::close(fd) }, 0);
    }
    println!("XPROC C OK");
}

/// Waits for a forked child; panics unless it exited with 0.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
}

/// Ends a forked child without running the parent's test harness again.
fn child_exit(ok: bool) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

fn process_f() {
    // SAFETY: plain libc calls on our own descriptors and memory.
    let fd = unsafe { libc::open(c"/dev/iommu".as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    let mut alloc = IommuIoasAlloc { size: std::mem::size_of::<IommuIoasAlloc>() as u32, ..Default::default() };
    ioctl(fd, IOMMU_IOAS_ALLOC, &mut alloc).expect("IOAS_ALLOC");
    let ioas = alloc.out_ioas_id;
    test_cmd(fd, IOMMU_TEST_OP_MOCK_DOMAIN, ioas, &TestMockDomain::new_zeroed()).expect("MOCK_DOMAIN");
    // A fresh shared page, inherited by the children.
    let buf = anon_page(libc::MAP_SHARED);
    // SAFETY: our page.
    unsafe { std::ptr::copy_nonoverlapping(c"parent data".as_ptr().cast::<u8>(), buf.cast::<u8>(), 12) };

    // A fork child is a client: it maps, creates an access (its descriptor is installed in
    // the child's table by the host), reads through it, meets EFAULT for bad pointers, and
    // closes what it opened.
    // SAFETY: fork in a process whose other threads hold no locks we need in the child.
    let c = unsafe { libc::fork() };
    if c == 0 {
        let r = std::panic::catch_unwind(|| {
            let iova = map_page(fd, ioas, buf).expect("IOAS_MAP in the child");
            let access = test_cmd(fd, IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess::default())
                .expect("CREATE_ACCESS in the child")
                .payload::<TestCreateAccess>()
                .out_access_fd;
            let got = access_read(fd, access, iova, 12).expect("ACCESS_RW in the child");
            assert_eq!(&got, b"parent data\0");
            let bad = TestAccessRw { iova, length: 4, uptr: 8, ..Default::default() };
            assert_eq!(test_cmd(fd, IOMMU_TEST_OP_ACCESS_RW, access, &bad).err(), Some(libc::EFAULT));
            // SAFETY: a bad pointer is the point: the host must answer EFAULT.
            let r = unsafe { libc::ioctl(fd, IOMMU_IOAS_ALLOC as libc::c_ulong, 16usize) };
            assert!(r == -1 && errno() == libc::EFAULT);
            // SAFETY: closing descriptors the child owns.
            unsafe {
                assert_eq!(libc::close(access as i32), 0);
                assert_eq!(libc::close(fd), 0);
            }
        });
        child_exit(r.is_ok());
    }
    reap(c);
    // The child's mapping is the parent's too: one context.
    let mut unmap =
        IommuIoasUnmap { size: std::mem::size_of::<IommuIoasUnmap>() as u32, ioas_id: ioas, iova: 0, length: u64::MAX };
    ioctl(fd, IOMMU_IOAS_UNMAP, &mut unmap).expect("IOAS_UNMAP");
    assert_eq!(unmap.length, 4096, "the child's area");

    // The host exits while a client still holds the file: the client's calls fail with
    // ENODEV. (The orphan is a grandchild; it waits for F's exit through a pidfd.)
    // SAFETY: getpid has no preconditions.
    let f_pid = unsafe { libc::getpid() };
    // SAFETY: as above.
    let host = unsafe { libc::fork() };
    if host == 0 {
        // SAFETY: as above.
        let orphan = unsafe { libc::fork() };
        if orphan == 0 {
            // SAFETY: pidfd_open and poll on our own descriptor.
            unsafe {
                let pidfd = libc::syscall(libc::SYS_pidfd_open, f_pid, 0) as i32;
                let mut p = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
                libc::poll(&mut p, 1, 10_000);
            }
            let mut a = IommuIoasAlloc { size: std::mem::size_of::<IommuIoasAlloc>() as u32, ..Default::default() };
            let r = ioctl(fd, IOMMU_IOAS_ALLOC, &mut a);
            if r == Err(libc::ENODEV) {
                println!("XPROC ORPHAN OK");
            } else {
                println!("XPROC ORPHAN got {r:?}");
            }
            child_exit(true);
        }
        child_exit(true);
    }
    reap(host);
    // F exits now (ending the test binary); the orphan then finds its host gone and reports
    // on the inherited stdout, which the driver reads to the end.
    println!("XPROC F OK");
}

/// IOAS_MAP of one read-write page at `buf` (the kernel picks the IOVA): the IOVA.
fn map_page(fd: RawFd, ioas: u32, buf: *mut libc::c_void) -> Result<u64, i32> {
    let mut map = IommuIoasMap {
        size: std::mem::size_of::<IommuIoasMap>() as u32,
        flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: buf as u64,
        length: 4096,
        ..Default::default()
    };
    ioctl(fd, IOMMU_IOAS_MAP, &mut map)?;
    Ok(map.iova)
}

/// One fresh anonymous read-write page (`MAP_PRIVATE` or `MAP_SHARED`).
fn anon_page(share: i32) -> *mut libc::c_void {
    // SAFETY: a new mapping chosen by the kernel; nothing else refers to it.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, share | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(p, libc::MAP_FAILED);
    p
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ioctl<T: IntoBytes>(fd: RawFd, req: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a live, writable command struct of the layout `req` expects.
    let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, arg as *mut T) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn test_cmd<P: TestPayload>(fd: RawFd, op: u32, id: u32, p: &P) -> Result<IommuTestCmd, i32> {
    let mut cmd = IommuTestCmd::new(op, id, p);
    ioctl(fd, IOMMU_TEST_CMD, &mut cmd)?;
    Ok(cmd)
}

fn access_read(fd: RawFd, access_fd: u32, iova: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut out = vec![0u8; len];
    let rw = TestAccessRw { iova, length: len as u64, uptr: out.as_mut_ptr() as u64, ..Default::default() };
    test_cmd(fd, IOMMU_TEST_OP_ACCESS_RW, access_fd, &rw)?;
    Ok(out)
}

/// `VmPin` of a process in kB, as its `/proc/PID/status` reads here.
fn vm_pin_kb(who: &str) -> i64 {
    let s = std::fs::read_to_string(format!("/proc/{who}/status")).expect("read status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmPin line")
}

fn send_fd(sock: RawFd, data: &[u8], fd: RawFd) {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cbuf = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the control buffer has room for one int.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(sock, &msg, 0), data.len() as isize, "sendmsg: errno {}", errno());
    }
}

fn recv_fd(sock: RawFd, data: &mut [u8]) -> RawFd {
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut cbuf = [0u64; 4];
    // SAFETY: as in send_fd; the kernel fills the buffers.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        assert_eq!(n, data.len() as isize, "recvmsg: errno {}", errno());
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS, "no descriptor came");
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
    }
}

fn process_a() {
    // SAFETY: plain libc calls with valid arguments; the fds are ours.
    let fd = unsafe { libc::open(c"/dev/iommu".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open /dev/iommu: errno {}", errno());
    let mut alloc = IommuIoasAlloc { size: std::mem::size_of::<IommuIoasAlloc>() as u32, ..Default::default() };
    ioctl(fd, IOMMU_IOAS_ALLOC, &mut alloc).expect("IOAS_ALLOC");
    let ioas = alloc.out_ioas_id;
    // A domain, so that B's map pins its pages at once.
    test_cmd(fd, IOMMU_TEST_OP_MOCK_DOMAIN, ioas, &TestMockDomain::new_zeroed()).expect("MOCK_DOMAIN");
    let access = test_cmd(fd, IOMMU_TEST_OP_CREATE_ACCESS, ioas, &TestCreateAccess::default())
        .expect("CREATE_ACCESS")
        .payload::<TestCreateAccess>()
        .out_access_fd;

    let mut sv = [-1; 2];
    // SAFETY: sv is an int[2]; a's end is close-on-exec, b's is inherited by B.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) }, 0);
    // SAFETY: marks our own end close-on-exec.
    unsafe { libc::fcntl(sv[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    let exe = CString::new(std::env::current_exe().unwrap().into_os_string().into_encoded_bytes()).unwrap();
    let args: Vec<CString> = ["xproc", "--exact", "xproc_role", "--nocapture", "--test-threads=1"]
        .iter()
        .map(|s| CString::new(*s).unwrap())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != ROLE && k != SOCK)
        .map(|(k, v)| {
            let mut e = k.into_encoded_bytes();
            e.push(b'=');
            e.extend(v.into_encoded_bytes());
            CString::new(e).unwrap()
        })
        .collect();
    env.push(CString::new(format!("{ROLE}=B")).unwrap());
    env.push(CString::new(format!("{SOCK}={}", sv[1])).unwrap());
    let argv: Vec<*mut libc::c_char> =
        args.iter().map(|a| a.as_ptr() as *mut _).chain(std::iter::once(std::ptr::null_mut())).collect();
    let envp: Vec<*mut libc::c_char> =
        env.iter().map(|a| a.as_ptr() as *mut _).chain(std::iter::once(std::ptr::null_mut())).collect();
    let mut pid: libc::pid_t = 0;
    // SAFETY: exe, argv and envp are NUL-terminated and live for the call.
    let r = unsafe {
        libc::posix_spawn(&mut pid, exe.as_ptr(), std::ptr::null(), std::ptr::null(), argv.as_ptr(), envp.as_ptr())
    };
    assert_eq!(r, 0, "posix_spawn");
    // SAFETY: B has its copy now.
    unsafe { libc::close(sv[1]) };

    send_fd(sv[0], &ioas.to_ne_bytes(), fd);
    // SAFETY: sv[0] is ours; File takes it over.
    let mut sock = unsafe { std::fs::File::from_raw_fd(sv[0]) };
    let mut msg = [0u8; 16];
    sock.read_exact(&mut msg).expect("B's report");
    let iova = u64::from_ne_bytes(msg[..8].try_into().unwrap());
    let b_pin_self = i64::from_ne_bytes(msg[8..].try_into().unwrap());

    // B's data, through the IOMMU.
    let got = access_read(fd, access, iova, 16).expect("ACCESS_RW while B lives");
    assert_eq!(&got[..13], b"hello from B\0", "first read");
    // The pinned page is charged to B, and shows where programs look for it.
    assert_eq!(vm_pin_kb(&pid.to_string()), 4, "VmPin of B seen from A");
    assert_eq!(b_pin_self, 4, "VmPin of B seen by B itself");
    assert_eq!(vm_pin_kb("self"), 0, "VmPin of A");

    std::io::Write::write_all(&mut sock, b"g").unwrap();
    let mut status = 0;
    // SAFETY: waits for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "B failed: status {status:#x}");

    // B unmapped its buffer and exited: the pinned page still holds its last words.
    let got = access_read(fd, access, iova, 16).expect("ACCESS_RW after B exited");
    assert_eq!(&got[..12], b"goodbye, A!\0", "read after B exited");
    // SAFETY: closing our descriptors.
    unsafe {
        assert_eq!(libc::close(access as i32), 0);
        assert_eq!(libc::close(fd), 0);
    }
    println!("XPROC A OK");
}

fn process_b() {
    let sock: RawFd = std::env::var(SOCK).unwrap().parse().unwrap();
    let mut data = [0u8; 4];
    let fd = recv_fd(sock, &mut data);
    let ioas = u32::from_ne_bytes(data);
    // A fresh shared anonymous page.
    let buf = anon_page(libc::MAP_SHARED);
    // SAFETY: buf is our page.
    unsafe { std::ptr::copy_nonoverlapping(c"hello from B".as_ptr().cast::<u8>(), buf.cast::<u8>(), 13) };
    let iova = map_page(fd, ioas, buf).expect("IOAS_MAP from B");
    let pin = vm_pin_kb("self");
    // SAFETY: sock is the inherited socket.
    let mut s = unsafe { std::fs::File::from_raw_fd(sock) };
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&iova.to_ne_bytes());
    msg[8..].copy_from_slice(&pin.to_ne_bytes());
    std::io::Write::write_all(&mut s, &msg).unwrap();
    let mut go = [0u8; 1];
    s.read_exact(&mut go).unwrap();
    // SAFETY: our page; then gone.
    unsafe {
        std::ptr::copy_nonoverlapping(c"goodbye, A!".as_ptr().cast::<u8>(), buf.cast::<u8>(), 12);
        libc::munmap(buf, 4096);
    }
    // Exit without closing the iommufd (the kernel closes it).
    std::process::exit(0);
}

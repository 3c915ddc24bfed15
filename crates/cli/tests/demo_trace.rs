//! `uiommu demo` and `uiommu trace`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn uiommu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uiommu"))
}

#[test]
fn demo_tells_the_story() {
    let o = uiommu().arg("demo").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    println!("{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success());
    for want in [
        "IOMMU_IOAS_ALLOC -> IOAS",
        "IOMMU_IOAS_MAP -> IOVA 0x1000000..0x1010000",
        "reads the buffer at offset 0x2000: \"hello, iommu\"",
        "[#....#.....#....]  3 dirty: 0x1000000 0x1005000 0x100b000",
        "0 dirty now",
        "IOMMU_IOAS_UNMAP -> 64 KiB unmapped",
        "IO page fault",
        "never reached memory",
    ] {
        assert!(out.contains(want), "demo output lacks {want:?}");
    }
    assert!(out.lines().count() < 40, "the demo must fit on one screen");
    assert_eq!(uiommu().args(["demo", "extra"]).output().unwrap().status.code(), Some(2));
}

/// The shim built by this cargo invocation (as in the preload crate's tests), or built now.
fn preload_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let lib = dir.join("libuiommu_preload.so");
        if lib.exists() {
            return Some(lib);
        }
    }
    let tdir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preload-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-p", "uiommu-preload", "--target-dir"])
        .arg(&tdir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .ok()?;
    st.success().then(|| tdir.join("debug/libuiommu_preload.so"))
}

/// A C program that maps, unmaps, fails an unmap and destroys, with its own copies of the
/// (stable) uAPI structures.
const PROG: &str = r#"
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
struct destroy { uint32_t size, id; };
#define IOMMU_DESTROY 0x3b80
#define IOMMU_IOAS_ALLOC 0x3b81
#define IOMMU_IOAS_MAP 0x3b85
#define IOMMU_IOAS_UNMAP 0x3b86
int main(void) {
    int fd = open("/dev/iommu", O_RDWR);
    if (fd < 0) { perror("open /dev/iommu"); return 1; }
    struct ioas_alloc a = { sizeof(a) };
    if (ioctl(fd, IOMMU_IOAS_ALLOC, &a)) { perror("alloc"); return 1; }
    void *buf = mmap(0, 0x40000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct ioas_map m = { sizeof(m), 7, a.out_ioas_id, 0, (uint64_t)(uintptr_t)buf, 0x40000, 0x400000 };
    if (ioctl(fd, IOMMU_IOAS_MAP, &m)) { perror("map"); return 1; }
    /* In a forked child, like the kernel selftests. */
    pid_t pid = fork();
    if (pid == 0) {
        struct ioas_unmap u = { sizeof(u), a.out_ioas_id, 0x400000, 0x40000 };
        _exit(ioctl(fd, IOMMU_IOAS_UNMAP, &u) ? 1 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "child failed\n"); return 1; }
    struct ioas_unmap u2 = { sizeof(u2), a.out_ioas_id, 0x400000, 0x40000 };
    if (ioctl(fd, IOMMU_IOAS_UNMAP, &u2) == 0) { fprintf(stderr, "unmap twice?\n"); return 1; }
    struct destroy d = { sizeof(d), a.out_ioas_id };
    if (ioctl(fd, IOMMU_DESTROY, &d)) { perror("destroy"); return 1; }
    puts("prog done");
    return 0;
}
"#;

fn build_prog() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("trace_prog.c");
    let out = dir.join("trace_prog");
    std::fs::write(&src, PROG).unwrap();
    let st = Command::new("cc").args(["-O1", "-Wall", "-o"]).arg(&out).arg(&src).status().ok()?;
    st.success().then_some(out)
}

#[test]
fn trace_decodes_iommufd_ioctls() {
    if Path::new("/dev/iommu").exists() {
        eprintln!("SKIP: a real /dev/iommu is present (the test program would use the kernel's)");
        return;
    }
    let Some(prog) = build_prog() else {
        eprintln!("SKIP: no C compiler (cc)");
        return;
    };
    let lib = preload_lib().expect("libuiommu_preload.so");
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trace.log");
    std::fs::write(&log, "stale contents\n").unwrap();
    let o =
        uiommu().env("UIOMMU_PRELOAD", &lib).arg("trace").arg("-o").arg(&log).arg("--").arg(&prog).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    println!("{stdout}{stderr}--- {} ---\n{text}", log.display());
    assert!(o.status.success());
    assert!(stdout.contains("prog done"));
    assert!(!text.contains("stale"), "-o truncates the file");
    let lines: Vec<&str> = text.lines().collect();
    let find = |p: &str| lines.iter().copied().find(|l| l.contains(p)).unwrap_or_else(|| panic!("no line with {p:?}"));
    let alloc = find("IOMMU_IOAS_ALLOC(");
    assert!(alloc.contains("= 0 {out_ioas_id=1}") && alloc.ends_with('>'), "{alloc}");
    let map = find("IOMMU_IOAS_MAP(");
    assert!(
        map.starts_with("IOMMU_IOAS_MAP(ioas_id=1, flags=FIXED_IOVA|WRITEABLE|READABLE, user_va=0x")
            && map.contains("length=0x40000, iova=0x400000) = 0 <"),
        "{map}"
    );
    // The child's unmap carries its pid; the parent's failing one its errno.
    let child = find("IOMMU_IOAS_UNMAP(ioas_id=1, iova=0x400000, length=0x40000) = 0 {length=0x40000}");
    assert!(child.starts_with("[pid "), "{child}");
    find("IOMMU_IOAS_UNMAP(ioas_id=1, iova=0x400000, length=0x40000) = -1 ENOENT");
    find("IOMMU_DESTROY(id=1) = 0");
    // The summary counts the child's call too.
    let row = |name: &str| {
        lines.iter().copied().find(|l| l.ends_with(&format!("  {name}"))).unwrap_or_else(|| panic!("no {name} row"))
    };
    let unmap_row = row("IOMMU_IOAS_UNMAP");
    let cols: Vec<&str> = unmap_row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("2", "1"), "calls and errors: {unmap_row}");
    let total = row("total");
    assert!(total.split_whitespace().nth(1) == Some("5"), "{total}");

    // Without -o the lines go to stderr.
    let o = uiommu().env("UIOMMU_PRELOAD", &lib).args(["trace", "--"]).arg(&prog).output().unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("IOMMU_IOAS_MAP(ioas_id=1") && stderr.contains("uiommu trace: summary"), "{stderr}");
    // Usage errors.
    assert_eq!(uiommu().args(["trace", "-o"]).output().unwrap().status.code(), Some(2));
    assert_eq!(uiommu().args(["trace"]).env("UIOMMU_PRELOAD", &lib).output().unwrap().status.code(), Some(2));
}

//! Runs a small C program (tests/shim_prog.c) under `LD_PRELOAD=libuiommu_preload.so`.
//!
//! What is asserted does not depend on the engine's command implementations (open works,
//! the fd is a real descriptor, dup/dup2/dup3/F_DUPFD/close/close_range/fork/poll behave,
//! other files pass through, a NULL ioctl argument does not crash). The C program's
//! `ENGINE_CHECK`s become strict when [`ENGINE_READY`] is true.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The engine implements IOMMU_IOAS_ALLOC and the EFAULT dispatch rule, so the C program
/// requires them (false: it also accepts ENOTTY, for an engine without those commands).
const ENGINE_READY: bool = true;

/// The cdylib built alongside this test (same profile directory), building it if needed.
fn preload_lib() -> PathBuf {
    // This test is target/<profile>/deps/shim-HASH. The library compiled for it by the same
    // cargo invocation is target/<profile>/deps/libuiommu_preload.so (`cargo test` does not
    // copy it up to target/<profile>/, so that one may be stale).
    let exe = std::env::current_exe().expect("test exe path");
    let deps = exe.parent().expect("deps dir");
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let lib = dir.join("libuiommu_preload.so");
        if lib.exists() {
            return lib;
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for profile in ["debug", "release"] {
        let p = manifest.join("../../target").join(profile).join("libuiommu_preload.so");
        if p.exists() {
            return p;
        }
    }
    // Build into a separate target dir so as not to contend for the running build's lock.
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

fn have_cc() -> bool {
    Command::new("cc").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn c_program_under_preload() {
    if !have_cc() {
        eprintln!("SKIP: no C compiler (cc) found");
        return;
    }
    let lib = preload_lib();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shim_prog.c");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shim_prog");
    let st = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-DSTRICT_ENGINE={}", ENGINE_READY as i32))
        .status()
        .expect("run cc");
    assert!(st.success(), "compiling {} failed", src.display());

    // Without the shim there is no /dev/iommu on this machine (sanity: the program must
    // really be talking to the shim below).
    if !Path::new("/dev/iommu").exists() {
        let o = Command::new(&out).output().expect("run without preload");
        assert!(!o.status.success(), "program passed without the shim?");
    }

    let o = Command::new(&out).env("LD_PRELOAD", &lib).output().expect("run program");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(o.status.success(), "shim_prog failed: {:?}\n{stdout}\n{stderr}", o.status);
    assert!(stdout.contains("ALL OK"));
    assert!(!stderr.contains("uiommu: internal error"), "a panic was caught: {stderr}");
}

#[test]
fn shell_tools_run_under_preload() {
    // A dynamically linked program that does plenty of ordinary I/O must be unaffected.
    let lib = preload_lib();
    let o = Command::new("sh")
        .args(["-c", "echo hello > /dev/null && cat /proc/self/status | grep -c ^Pid && ls / > /dev/null"])
        .env("LD_PRELOAD", &lib)
        .output()
        .expect("run sh");
    assert!(o.status.success(), "{:?}", o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

//! The `uiommu` command line.

use std::process::Command;

fn uiommu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uiommu"))
}

/// Any existing file stands in for the library: these tests check the command, not the shim
/// (the loader only warns about a file it cannot preload).
fn with_fake_preload(c: &mut Command) -> &mut Command {
    let fake = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake_preload.so");
    std::fs::write(&fake, b"").unwrap();
    c.env("UIOMMU_PRELOAD", fake)
}

#[test]
fn help_and_unimplemented() {
    let o = uiommu().arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("uiommu run"));
    let o = uiommu().arg("help").output().unwrap();
    assert!(o.status.success());
    assert_eq!(uiommu().output().unwrap().status.code(), Some(2));
    assert_eq!(uiommu().arg("bogus").output().unwrap().status.code(), Some(2));
}

#[test]
fn run_prepends_preload_and_execs() {
    let o = with_fake_preload(&mut uiommu())
        .args(["run", "--", "/bin/sh", "-c", "echo \"$LD_PRELOAD\"; exit 7"])
        .env("LD_PRELOAD", "/other.so")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
    let fake = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake_preload.so");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{}:/other.so", std::fs::canonicalize(&fake).unwrap().display())
    );
    // Without "--" too.
    let o = with_fake_preload(&mut uiommu()).args(["run", "/bin/true"]).output().unwrap();
    assert!(o.status.success());
}

#[test]
fn run_missing_program_is_127() {
    let o = with_fake_preload(&mut uiommu()).args(["run", "--", "/nonexistent/program"]).output().unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot execute"));
    let o = uiommu().args(["run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_missing_library_is_127() {
    let o = uiommu().args(["run", "--", "/bin/true"]).env("UIOMMU_PRELOAD", "/nonexistent/lib.so").output().unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("UIOMMU_PRELOAD"));
}

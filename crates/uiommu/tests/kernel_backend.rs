//! The API test suite on the kernel backend (`/dev/iommu` + `ioctl(2)`).
//!
//! On a machine without a real `/dev/iommu` this test re-executes its own binary under
//! `uiommu run` (the cli and the preload shim from this build, or built on demand), so the
//! suite's ioctls go through libc to the shim and from there to the engine — the same path an
//! unmodified C program takes. With a real `/dev/iommu` it runs against the kernel directly
//! (which needs `CONFIG_IOMMUFD_TEST` for the mock devices; skipped otherwise). The child
//! also runs the `mini_vmm` example's story on the kernel backend.

mod common;
// The example, to run it on the kernel backend in the child.
#[allow(dead_code)]
#[path = "../examples/mini_vmm.rs"]
mod mini_vmm;

use std::path::{Path, PathBuf};
use std::process::Command;
use uiommu::{BackendKind, Device, Error, Ioas, Iommufd};

const CHILD_ENV: &str = "UIOMMU_API_SUITE_CHILD";
const TEST_NAME: &str = "api_suite_kernel_backend";

fn run_suite() {
    common::run_all(&|| {
        let fd = Iommufd::open().expect("open /dev/iommu");
        assert_eq!(fd.backend(), BackendKind::Kernel);
        fd
    });
}

/// `uiommu` and `libuiommu_preload.so` of this build, or freshly built ones.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    let profile = deps.parent()?;
    let cli = profile.join("uiommu");
    let lib =
        [deps.join("libuiommu_preload.so"), profile.join("libuiommu_preload.so")].into_iter().find(|p| p.is_file());
    if let (true, Some(lib)) = (cli.is_file(), lib) {
        return Some((cli, lib));
    }
    // Not built by this cargo invocation (e.g. `cargo test -p uiommu`): build them into a
    // separate target directory (the running cargo holds the lock of ours).
    let tdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uiommu-run-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building uiommu-cli and uiommu-preload into {}", tdir.display());
    let st = Command::new(cargo)
        .args(["build", "-p", "uiommu-cli", "-p", "uiommu-preload", "--target-dir"])
        .arg(&tdir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    let d = tdir.join("debug");
    Some((d.join("uiommu"), d.join("libuiommu_preload.so")))
}

#[test]
fn api_suite_kernel_backend() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The re-executed child: /dev/iommu is served by `uiommu run`.
        run_suite();
        mini_vmm::run(true).expect("the mini_vmm example on the kernel backend");
        return;
    }
    if Path::new("/dev/iommu").exists() {
        let fd = Iommufd::open().expect("open /dev/iommu");
        match Ioas::new(&fd).and_then(|ioas| Device::mock(&ioas)) {
            Err(Error::UnknownCommand) => {
                eprintln!("SKIP: /dev/iommu has no self-test ABI (kernel without CONFIG_IOMMUFD_TEST)");
                return;
            }
            Err(Error::NotPermitted) => {
                eprintln!("SKIP: not permitted to use /dev/iommu here");
                return;
            }
            _ => {}
        }
        run_suite();
        mini_vmm::run(true).expect("the mini_vmm example on the kernel backend");
        return;
    }
    let Some((cli, lib)) = tools() else {
        eprintln!("SKIP: no /dev/iommu, and `uiommu run` (uiommu-cli + uiommu-preload) could not be built");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&cli)
        .env("UIOMMU_PRELOAD", &lib)
        .env(CHILD_ENV, "1")
        .args(["run", "--"])
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .output()
        .expect("run uiommu");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {} run -- {} ---\n{stdout}\n{stderr}", cli.display(), exe.display());
    assert!(out.status.success(), "the API suite failed on the kernel backend under uiommu run");
    assert!(stdout.contains("1 passed"), "the child ran no test");
    assert!(stderr.contains("case drop_in_any_order ok"), "the child did not finish the suite");
    assert!(stdout.contains("iommufd: kernel backend") && stdout.contains("mini_vmm: ok"), "mini_vmm did not run");
}

//! `uiommu`: run programs against an emulated `/dev/iommu`.
//!
//! `uiommu run [--] PROGRAM [ARGS...]` puts `libuiommu_preload.so` first in `LD_PRELOAD` and
//! executes PROGRAM in place of itself, so the program's `/dev/iommu` is served by the uiommu
//! engine inside its own process.

mod bench;
mod demo;
mod trace;

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const PRELOAD_NAME: &str = "libuiommu_preload.so";

const USAGE: &str = "\
uiommu: a userspace emulation of Linux's iommufd (/dev/iommu)

Usage:
  uiommu run [--grant-cap CAP]... [--] PROGRAM [ARGS...]
                                      run PROGRAM with /dev/iommu served by uiommu;
                                      --grant-cap sys_resource|ipc_lock makes the emulated
                                      kernel treat PROGRAM as holding CAP (for sandboxes
                                      whose bounding set withholds it)
  uiommu demo                         a one-screen tour: IOAS, mapping, device DMA, dirty
                                      tracking, unmap and the IO page fault (in-process)
  uiommu bench [--iters N] [--rounds N]
                                      time cheap emulated ioctls against a kernel
                                      ioctl (ENOTTY), with and without the shim
  uiommu trace [-o FILE] [--grant-cap CAP]... [--] PROGRAM [ARGS...]
                                      like run, printing every iommufd ioctl (decoded
                                      fields, result, duration) to stderr or FILE, and a
                                      per-ioctl summary at exit
  uiommu help | --help | -h           show this text
  uiommu --version                    show the version

`run` finds libuiommu_preload.so in $UIOMMU_PRELOAD, else next to the uiommu executable,
else in ../lib relative to it, prepends it to LD_PRELOAD and executes PROGRAM (exit status
127 if PROGRAM or the library cannot be found, 126 if PROGRAM cannot be executed).
";

/// Where the preload library is: `$UIOMMU_PRELOAD`, then beside the executable, then
/// `../lib`.
fn find_preload() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("UIOMMU_PRELOAD").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(std::fs::canonicalize(&p).unwrap_or(p))
        } else {
            Err(format!("UIOMMU_PRELOAD={} does not name a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the uiommu executable: {e}"))?;
    let dir = exe.parent().ok_or("the uiommu executable has no directory")?;
    let candidates = [dir.join(PRELOAD_NAME), dir.join("../lib").join(PRELOAD_NAME)];
    for c in &candidates {
        if c.is_file() {
            return Ok(std::fs::canonicalize(c).unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "cannot find {PRELOAD_NAME} (looked in {} and {}; set UIOMMU_PRELOAD, or build it with \
         `cargo build -p uiommu-preload`)",
        candidates[0].display(),
        candidates[1].display()
    ))
}

/// `LD_PRELOAD` with `lib` first (entries may be separated by spaces or colons).
fn preload_value(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = OsString::from(lib);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(":");
        v.push(e);
    }
    v
}

/// Capability names `--grant-cap` accepts (those the emulated kernel checks).
const GRANTABLE: &[&str] = &["sys_resource", "ipc_lock"];

fn run(mut args: &[OsString]) -> ExitCode {
    let mut grants: Vec<String> = Vec::new();
    while let Some(a) = args.first().and_then(|a| a.to_str()) {
        let name = if a == "--grant-cap" {
            let Some(n) = args.get(1).and_then(|n| n.to_str()) else {
                eprintln!("uiommu run: --grant-cap needs a capability name");
                return ExitCode::from(2);
            };
            args = &args[2..];
            n.to_string()
        } else if let Some(n) = a.strip_prefix("--grant-cap=") {
            args = &args[1..];
            n.to_string()
        } else {
            break;
        };
        let n = name.to_ascii_lowercase();
        let n = n.strip_prefix("cap_").unwrap_or(&n).to_string();
        if !GRANTABLE.contains(&n.as_str()) {
            eprintln!("uiommu run: --grant-cap: unknown capability {name} (known: {})", GRANTABLE.join(", "));
            return ExitCode::from(2);
        }
        grants.push(n);
    }
    let args = match args.first() {
        Some(a) if a == "--" => &args[1..],
        _ => args,
    };
    let Some(program) = args.first() else {
        eprintln!("uiommu run: missing PROGRAM\n\n{USAGE}");
        return ExitCode::from(2);
    };
    let lib = match find_preload() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("uiommu run: {e}");
            return ExitCode::from(127);
        }
    };
    let preload = preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref());
    let mut cmd = Command::new(program);
    cmd.args(&args[1..]).env("LD_PRELOAD", preload);
    if !grants.is_empty() {
        cmd.env("UIOMMU_GRANT_CAPS", grants.join(","));
    }
    let err = cmd.exec();
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    eprintln!("uiommu run: cannot execute {}: {err}", Path::new(program).display());
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(cmd) = args.first().and_then(|a| a.to_str()) else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    match cmd {
        "run" => run(&args[1..]),
        "demo" => demo::demo(&args[1..]),
        "trace" => trace::trace(&args[1..], run),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "--version" | "-V" => {
            println!("uiommu {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        "bench" => bench::bench(&args[1..], find_preload()),
        "bench-child" => bench::child(&args[1..]),
        other => {
            eprintln!("uiommu: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_prepended() {
        let lib = Path::new("/x/libuiommu_preload.so");
        assert_eq!(preload_value(lib, None), OsString::from("/x/libuiommu_preload.so"));
        assert_eq!(preload_value(lib, Some(OsStr::new(""))), OsString::from("/x/libuiommu_preload.so"));
        assert_eq!(
            preload_value(lib, Some(OsStr::new("/a.so /b.so"))),
            OsString::from("/x/libuiommu_preload.so:/a.so /b.so")
        );
    }
}

//! `uiommu trace`: `uiommu run` with the shim's ioctl tracer on (`UIOMMU_TRACE`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// `uiommu trace [-o FILE] [run options] [--] PROGRAM [ARGS...]`: sets `UIOMMU_TRACE` (the
/// file, truncated first, or `2` for stderr) and continues as `run`.
pub fn trace(mut args: &[OsString], run: fn(&[OsString]) -> ExitCode) -> ExitCode {
    let mut out: Option<PathBuf> = None;
    while let Some(a) = args.first().and_then(|a| a.to_str()) {
        if a == "-o" || a == "--output" {
            let Some(f) = args.get(1) else {
                eprintln!("uiommu trace: {a} needs a file name");
                return ExitCode::from(2);
            };
            out = Some(PathBuf::from(f));
            args = &args[2..];
        } else if let Some(f) = a.strip_prefix("--output=").or_else(|| a.strip_prefix("-o").filter(|f| !f.is_empty())) {
            out = Some(PathBuf::from(f));
            args = &args[1..];
        } else {
            break;
        }
    }
    let target = match out {
        Some(path) => {
            // Each traced process appends to the file: start it empty, and name it absolutely
            // (the program may change directory).
            if let Err(e) = std::fs::File::create(&path) {
                eprintln!("uiommu trace: cannot create {}: {e}", path.display());
                return ExitCode::from(2);
            }
            let abs = std::fs::canonicalize(&path).unwrap_or(path);
            abs.into_os_string()
        }
        None => OsString::from("2"),
    };
    std::env::set_var("UIOMMU_TRACE", target);
    run(args)
}

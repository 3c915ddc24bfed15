//! Fuzz target: arbitrary bytes as a sequence of iommufd ioctls, file operations and
//! injected failures on a simulated machine (the interpreter is shared with the CI smoke
//! test `crates/core/tests/fuzz_smoke.rs`). Invariants are checked after every step; any
//! panic (including the engine's debug assertions) is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/core/tests/common/interp.rs"]
mod interp;

fuzz_target!(|data: &[u8]| {
    interp::run(data);
});

//! The `dispatch` fuzz target's interpreter (`common/interp.rs`, shared with
//! `fuzz/fuzz_targets/dispatch.rs`) over random inputs, for CI without cargo-fuzz: arbitrary
//! sequences of ioctls, file operations and injected failures on a simulated machine, with
//! the engine's invariants checked after every step and no pin or charge left after closing
//! everything.
//!
//! `UIOMMU_FUZZ_CASES=N` runs N random cases instead of the default; inputs saved under
//! `fuzz/regressions/dispatch/` (crashes found by cargo-fuzz, once fixed) are replayed too.

#[path = "common/interp.rs"]
mod interp;

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("UIOMMU_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_inputs_keep_invariants(data in proptest::collection::vec(any::<u8>(), 0..1536)) {
        interp::run(&data);
    }
}

#[test]
fn saved_regressions_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dispatch");
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                continue;
            }
            let data = std::fs::read(e.path()).unwrap();
            eprintln!("replaying {}", e.path().display());
            interp::run(&data);
            n += 1;
        }
    }
    eprintln!("{n} saved inputs replayed");
}

/// A hand-written input that walks the main paths (IOAS, mock domain, map, access pin,
/// HWPT, vIOMMU), so the interpreter itself is known to reach deep states.
#[test]
fn interpreter_reaches_deep_state() {
    let mut w = interp::World::new();
    let steps: &[&[u8]] = &[
        &[0, 0, 4],                       // IOAS_ALLOC -> 1
        &[0, 11, 2, 0, 1],                // MOCK_DOMAIN on 1
        &[0, 2, 7, 1, 3, 0, 9, 15, 1, 0], // IOAS_MAP 64 KiB of buffer 0, fixed at the aperture
    ];
    for s in steps {
        let mut r = interp::Reader::new(s);
        w.step(&mut r);
        w.check();
    }
    assert!(w.m.total_pins() > 0, "the interpreter mapped something into a domain");
    w.finish();
}

#!/usr/bin/env bash
# A 60-second fuzz smoke of the iommufd dispatcher (fuzz/fuzz_targets/dispatch.rs: command
# sequences over real buffers, invariants checked after every step).
# With cargo-fuzz and a nightly toolchain: libFuzzer for 60 s (no sanitizer: the engine is
# safe Rust; debug assertions on). Without: the same interpreter over random inputs
# (crates/core/tests/fuzz_smoke.rs) in release mode, sized to take about a minute.
# Longer campaigns: see the comment at the top of fuzz/fuzz_targets/dispatch.rs and the notes.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${UIOMMU_FUZZ_SECONDS:-60}
if cargo fuzz --help >/dev/null 2>&1 && cargo +nightly --version >/dev/null 2>&1; then
  cd fuzz
  mkdir -p corpus/dispatch
  cargo +nightly fuzz run -s none -O -a dispatch corpus/dispatch regressions/dispatch -- \
    -max_total_time="$secs" -max_len=2048 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
    grep -E "^stat::|Done|DONE|ERROR|crash|panicked" || true
  # libFuzzer exits non-zero on a crash; pipefail would hide it behind grep, so check again.
  ls artifacts/dispatch/crash-* >/dev/null 2>&1 && { echo "fuzz-smoke: crash artifacts found" >&2; exit 1; }
  echo "fuzz-smoke: OK (${secs}s, no crash)"
else
  echo "fuzz-smoke: cargo-fuzz/nightly not installed; running the interpreter over random inputs"
  UIOMMU_FUZZ_CASES=${UIOMMU_FUZZ_CASES:-600000} cargo test --release -q -p uiommu-core --test fuzz_smoke
fi

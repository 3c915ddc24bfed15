#!/usr/bin/env bash
# Runs the engine's tests under Miri (undefined-behaviour checker) when a nightly toolchain
# with the miri component is installed; otherwise says so and exits 0.
#   rustup component add miri rust-src --toolchain nightly
# Property tests run 2 cases each under Miri; tests that move megabytes are skipped there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "miri: SKIP (no nightly toolchain with the miri component; see scripts/miri.sh)"
  exit 0
fi
export PROPTEST_CASES=2 MIRIFLAGS="-Zmiri-disable-isolation"
cargo +nightly miri test -p uiommu-core --lib -- \
  --skip lifecycle_model --skip mock::pagetable::tests::model --skip mock::pagetable::tests::memory_per_leaf
cargo +nightly miri test -p uiommu-core --test engine --test hwpt_events

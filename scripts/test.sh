#!/usr/bin/env bash
# The README's second command: install what the tests need, then run every test.
# Needs root: the tests run real containers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# CI runs the slow variants too (the kill -9 loop's 20 rounds, ...).
if [ "${CI:-}" = "true" ]; then
    export CORRAL_SLOW_TESTS=1
    # The parser fuzzing properties (crates/corral/tests/it/fuzz.rs) run longer: about 30 s.
    export CORRAL_FUZZ_CASES="${CORRAL_FUZZ_CASES:-50000}"
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

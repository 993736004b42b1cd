#!/usr/bin/env bash
# The whole test suite, with everything it needs set up first: formatting
# and lints (clippy -D warnings), the build, the real services the tests use
# (scripts/setup.d/), then the tests, including the import check
# (tests/it/layers.rs) that keeps the floors of docs/architecture.md honest.
#
#   ./scripts/test.sh            on a laptop: Docker/OpenStack tests skip visibly when unavailable
#   CAPI_CI=1 ./scripts/test.sh  in CI: a missing Docker Engine is an error, not a skip
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> format (cargo fmt --check)"
cargo fmt --all -- --check

echo "==> lints (clippy, warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

echo "==> building"
cargo build --all-targets --locked

# Each provider that needs real infrastructure for its tests (test images
# for Docker, local OpenStack services) drops a setup script here.
for setup in scripts/setup.d/*.sh; do
  [ -e "$setup" ] || continue
  echo "==> setup: $setup"
  "$setup"
done

echo "==> tests"
cargo test --locked -- --test-threads "${CAPI_TEST_THREADS:-4}" "$@"

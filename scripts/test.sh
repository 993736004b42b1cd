#!/usr/bin/env bash
# The whole test suite, with everything it needs set up first.
#
#   ./scripts/test.sh            on a laptop: Docker/OpenStack tests skip visibly when unavailable
#   CAPI_CI=1 ./scripts/test.sh  in CI: a missing Docker Engine is an error, not a skip
set -euo pipefail
cd "$(dirname "$0")/.."

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

#!/usr/bin/env bash
# The main job: build capi, then plan and apply the bundled example on the
# embedded simulated infrastructure (no Docker, no cloud), then show the result.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# The dev profile (see Cargo.toml): the test command builds the
# same artifacts, so the second README command reuses what this one built.
cargo build --locked --bin capi
capi="$root/target/debug/capi"
work="${CAPI_DEMO_DIR:-$root/target/demo}"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
echo "==> capi plan -f examples/sim"
"$capi" plan -f "$root/examples/sim"
echo "==> capi apply -f examples/sim --auto-approve"
"$capi" apply -f "$root/examples/sim" --auto-approve
echo "==> capi show"
"$capi" show
echo "==> capi plan (again: nothing left to do)"
"$capi" plan -f "$root/examples/sim" --detailed-exitcode
echo "State: $work/capi.state.json, simulated infrastructure: $work/capi.state.sim/"

#!/usr/bin/env bash
# Fuzz the whole path of `capi validate` for a bounded time (default 300 s):
#
#   scripts/fuzz.sh [seconds]
#
# Uses cargo-fuzz (libFuzzer, nightly toolchain), installing cargo-fuzz from
# crates.io if it is missing. The target (fuzz/fuzz_targets/manifest.rs) runs
# capi::desired::check_bytes: reading, ClusterClass expansion with its Go
# templates, validation, the desired clusters and the report. The seed corpus
# is taken at run time from examples/ (the cluster templates among them, the
# ClusterClass one, cluster-template-sim-topology.yaml, included: the target
# sets their variables) and, when present, ../shared/fixtures/upstream (never
# copied into the repository); fuzz/manifest.dict lists YAML, Cluster API and
# Go-template tokens for the mutations. Crashers land in fuzz/artifacts/manifest/; turn each into a
# regression test in tests/it/hostile_manifests.rs. The last lines printed
# are libFuzzer's figures (executions, corpus size, crashes).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain (cargo-fuzz needs one); the random-input" >&2
  echo "tests still run: cargo test --test it hostile_manifests::random" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The fuzz build resolves its dependencies like the main crate's.
[ -e fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

corpus=fuzz/corpus/manifest
mkdir -p "$corpus"
seed() { [ -f "$1" ] && cp "$1" "$corpus/seed-$(echo "$1" | tr '/.' '__')"; }
while IFS= read -r -d '' f; do seed "$f"; done < <(find examples -name '*.yaml' -print0)
if [ -d ../shared/fixtures/upstream ]; then
  while IFS= read -r -d '' f; do seed "$f"; done \
    < <(find ../shared/fixtures/upstream -name '*.yaml' -size -256k -print0)
else
  echo "fuzz.sh: ../shared/fixtures/upstream is absent; seeding from examples/ only"
fi
[ -f "$corpus/seed-examples_templates_cluster-template-sim-topology_yaml" ] || {
  echo "fuzz.sh: the ClusterClass seed (examples/templates/cluster-template-sim-topology.yaml) is missing" >&2
  exit 2
}
echo "==> seed corpus: $(ls "$corpus" | wc -l) files (the ClusterClass example included)"

echo "==> fuzzing for ${seconds}s"
# -rss_limit_mb: an input that makes the reader allocate 2 GB is a finding
# (the limits in docs/reliability.md keep a legal one far below).
# -max_len: manifests up to 256 KiB.
cargo +nightly fuzz run manifest "$corpus" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=20 \
  -dict=fuzz/manifest.dict \
  -print_final_stats=1 2>&1 | tee fuzz/last-run.log | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::|==|SUMMARY|artifact)' || true

if ls fuzz/artifacts/manifest/* >/dev/null 2>&1; then
  echo "==> crashers:"; ls -l fuzz/artifacts/manifest/
  exit 1
fi
echo "==> no crash"

#!/usr/bin/env bash
# Time whole `capi` commands as a user runs them (process start to exit), on
# the simulator: apply from an empty state, then a no-op plan with and
# without refresh, for 3 control-plane + N workers (100 MachineDeployments).
# Reports wall time and peak RSS (GNU time's "Maximum resident set size") and
# the lower bound latency × critical path + ⌈n ÷ parallelism⌉ × latency.
#
#   scripts/bench-commands.sh [N ...]          default: 1000 10000
# Environment: CAPI (binary; default target/release/capi, else target/debug/capi),
#   LATENCY (default 20ms), PARALLELISM (default 50), ALG (default RSA-2048),
#   REPEATS (default 1), WORK (default target/bench-commands).
# Figures are printed, never asserted; see docs/performance.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
capi="${CAPI:-}"
if [ -z "$capi" ]; then
  if [ -x "$root/target/release/capi" ]; then capi="$root/target/release/capi"; else capi="$root/target/debug/capi"; fi
fi
latency="${LATENCY:-20ms}"
par="${PARALLELISM:-50}"
alg="${ALG:-RSA-2048}"
repeats="${REPEATS:-1}"
work="${WORK:-$root/target/bench-commands}"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

manifest() { # $1 = workers; 100 MachineDeployments (fewer when N < 100)
  local n=$1 mds=100 i
  [ "$n" -ge 100 ] || mds=1
  local per=$((n / mds))
  cat <<EOF
apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {name: bench}
spec:
  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: bench-cp}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: bench}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {name: bench}
spec: {backend: {inMemory: {}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {name: bench-cp}
spec:
  replicas: 3
  version: v1.31.2
  machineTemplate:
    spec:
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-m}
  kubeadmConfigSpec:
    clusterConfiguration: {encryptionAlgorithm: $alg}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {name: bench-m}
spec: {template: {spec: {backend: {inMemory: {}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {name: bench-w}
spec: {template: {spec: {}}}
EOF
  for ((i = 0; i < mds; i++)); do
    cat <<EOF
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {name: md-$i}
spec:
  clusterName: bench
  replicas: $per
  template:
    spec:
      clusterName: bench
      version: v1.31.2
      bootstrap: {configRef: {apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: bench-w}}
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-m}
EOF
  done
}

# run LABEL CMD...: time one command in the current directory, print one row.
run() {
  local label=$1; shift
  local t; t=$(mktemp)
  local rc=0
  /usr/bin/time -v -o "$t" "$@" >/dev/null 2>"$t.err" || rc=$?
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$t")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$t")
  printf '%-34s %10s  %6s MB  exit %s\n' "$label" "$wall" "$rss" "$rc"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then tail -5 "$t.err" >&2; fi
  rm -f "$t" "$t.err"
}

ms() { # "20ms" / "0" / "1s" -> milliseconds
  case "$1" in *ms) echo "${1%ms}" ;; *s) echo $(( ${1%s} * 1000 )) ;; *) echo "$1" ;; esac
}

echo "capi: $capi"
echo "latency $latency, parallelism $par, $alg, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${sizes[@]}"; do
  lat=$(ms "$latency")
  machines=$((n + 3))
  # The first control-plane machine, then the other machines share the permits.
  bound=$(( lat * (1 + ( (machines - 1 + par - 1) / par )) ))
  echo "== 3 + $n workers (bound at $latency: ${bound} ms)"
  for ((r = 0; r < repeats; r++)); do
    dir="$work/$n"
    rm -rf "$dir" && mkdir -p "$dir"
    manifest "$n" >"$dir/cluster.yaml"
    (
      cd "$dir"
      run "apply from empty" "$capi" apply -f cluster.yaml --auto-approve \
        --sim-latency "$latency" --parallelism "$par"
      run "no-op plan (refresh)" "$capi" plan -f cluster.yaml --detailed-exitcode
      run "no-op plan (--refresh=false)" "$capi" plan -f cluster.yaml --refresh=false --detailed-exitcode
    )
  done
done

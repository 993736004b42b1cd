#!/usr/bin/env bash
# The etcd state backend against the local file (figures in docs/state-backends.md):
#   1. apply 3 control-plane + 1,000 simulated workers (--sim-latency 20ms,
#      --parallelism 50) from an empty state, on the file and on etcd
#      (three-member loopback cluster), REPEATS times each, median reported;
#      and how many etcd transactions (revisions) an apply makes;
#   2. a no-op plan (--refresh=false) of 3 + 10,000 machines read from etcd
#      (the state built by an apply on the file with no latency, then
#      `capi state migrate`d to etcd), against the same plan from the file,
#      and from etcd once more with the snapshot deleted (every key read).
#
#   ./scripts/bench-etcd.sh            (REPEATS=3 WORKERS=1000 BIG=10000 by default)
#   CAPI=/path/to/capi ./scripts/bench-etcd.sh   (that binary instead of a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
WORKERS=${WORKERS:-1000}
BIG=${BIG:-10000}
ENDPOINTS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793

if [ -n "${CAPI:-}" ]; then B=$CAPI; else
  cargo build --release --locked -q
  B=$PWD/target/release/capi
fi
scripts/etcd-cluster.sh start
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

manifest() { # $1: MachineDeployments, $2: replicas each
  cat <<YAML
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
    clusterConfiguration: {encryptionAlgorithm: ECDSA-P256}
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
YAML
  for i in $(seq 0 $(( $1 - 1 ))); do
    cat <<YAML
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {name: md-$i}
spec:
  clusterName: bench
  replicas: $2
  template:
    spec:
      clusterName: bench
      version: v1.31.2
      bootstrap: {configRef: {apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: bench-w}}
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-m}
YAML
  done
}

revision() {
  curl -s -X POST "http://127.0.0.1:23791/v3/kv/range" -d '{"key":"AA==","limit":"1"}' \
    | grep -o '"revision":"[0-9]*"' | head -1 | grep -o '[0-9]*'
}

secs() { # run "$@", print wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$W/last.err" || { cat "$W/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l | xargs printf '%.2f'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# etcd keeps every revision until compacted: earlier runs (and tests) leave
# hundreds of MB that slow every member down. Start from a compacted,
# defragmented cluster.
fresh_etcd() {
  ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS compact "$(revision)" >/dev/null 2>&1 || true
  ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS defrag >/dev/null
}
fresh_etcd

manifest 10 $(( WORKERS / 10 )) > "$W/apply.yaml"
echo "== apply 3 + $WORKERS machines, --sim-latency 20ms, --parallelism 50 ($REPEATS runs each)"
: > "$W/file.t"; : > "$W/etcd.t"; : > "$W/txns"
for r in $(seq "$REPEATS"); do
  d="$W/file-$r"; mkdir -p "$d"
  (cd "$d" && secs "$B" apply --auto-approve --sim-latency 20ms --parallelism 50 -f "$W/apply.yaml") >> "$W/file.t"; echo >> "$W/file.t"
  d="$W/etcd-$r"; mkdir -p "$d"
  prefix="capi-bench/apply-$$-$r"
  before=$(revision)
  (cd "$d" && secs "$B" --state "etcd://$ENDPOINTS/$prefix" apply --auto-approve --sim-latency 20ms --parallelism 50 -f "$W/apply.yaml") >> "$W/etcd.t"; echo >> "$W/etcd.t"
  after=$(revision)
  echo $(( after - before )) >> "$W/txns"
  keys=$(ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS get --prefix "$prefix/" --keys-only | grep -c . || true)
  ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS del --prefix "$prefix/" >/dev/null
done
echo "file: $(tr '\n' ' ' < "$W/file.t")s -> median $(median < "$W/file.t") s"
echo "etcd: $(tr '\n' ' ' < "$W/etcd.t")s -> median $(median < "$W/etcd.t") s"
echo "etcd revisions (write transactions, lock included) per apply: $(tr '\n' ' ' < "$W/txns"); keys per state: $keys"

fresh_etcd
echo "== no-op plan, 3 + $BIG machines, --refresh=false"
manifest 100 $(( BIG / 100 )) > "$W/big.yaml"
d="$W/big"; mkdir -p "$d"; cd "$d"
secs "$B" apply --auto-approve --parallelism 200 -f "$W/big.yaml" >/dev/null
prefix="capi-bench/plan-$$"
t=$(secs "$B" state migrate --to "etcd://$ENDPOINTS/$prefix")
echo "migrate file -> etcd: $t s ($(stat -c %s capi.state.json) bytes of state)"
for src in file etcd; do
  : > "$W/plan.t"
  for r in $(seq 5); do
    if [ $src = file ]; then
      rm -f capi.state.json.migrated
      secs "$B" plan --refresh=false -f "$W/big.yaml" >> "$W/plan.t"
    else
      secs "$B" --state "etcd://$ENDPOINTS/$prefix" plan --refresh=false -f "$W/big.yaml" >> "$W/plan.t"
    fi
    echo >> "$W/plan.t"
  done
  echo "$src: $(tr '\n' ' ' < "$W/plan.t")s -> median $(median < "$W/plan.t") s"
done
# The same without the snapshot: every resource key read (what a load does
# after a write that did not finish, until the next write rebuilds it).
ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS del "$prefix/snap" >/dev/null
: > "$W/plan.t"
for r in $(seq 5); do
  secs "$B" --state "etcd://$ENDPOINTS/$prefix" plan --refresh=false -f "$W/big.yaml" >> "$W/plan.t"
  echo >> "$W/plan.t"
done
echo "etcd, keys read (no snapshot): $(tr '\n' ' ' < "$W/plan.t")s -> median $(median < "$W/plan.t") s"
ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS del --prefix "$prefix/" >/dev/null

#!/usr/bin/env bash
# Docker provider benchmark: wall time of `capi apply` (1 control plane + 3
# workers, then 1 + 20) on the local engine with the offline test images,
# against a plain shell script making the same containers with the docker
# CLI one after the other; and the time `capi plan` takes to refresh, and
# `capi drift`.
#
#   scripts/bench-docker.sh                # uses target/release/capi if built, else target/debug/capi
#   CAPI_BIN=/path/to/capi scripts/bench-docker.sh
#
# The baseline does, per machine, what capi's result needs at minimum:
# `docker volume create`, `docker run -d` (same image, labels, tmpfs, volume,
# network), one `docker exec` running the kubeadm command and writing the
# success sentinel; plus the network, the LB container, its configuration
# (`docker cp`) and a SIGHUP per control-plane machine. capi additionally
# writes every bootstrap file (certificates, kubeadm configuration) with
# one upload and one exec each, registers the token, and journals state.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CAPI_BIN:-}
if [ -z "$BIN" ]; then
  if [ -x target/release/capi ]; then BIN=$PWD/target/release/capi; else BIN=$PWD/target/debug/capi; fi
fi
[ -x "$BIN" ] || { echo "build capi first (cargo build --release)"; exit 1; }
scripts/setup.d/20-docker.sh >/dev/null
NODE=capi-test/node:v1 LB=capi-test/haproxy:lb
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

cleanup() { # $1 cluster, $2 network
  docker ps -aq --filter "label=io.x-k8s.kind.cluster=$1" | xargs -r docker rm -f -v >/dev/null
  docker volume ls -q --filter "label=io.x-k8s.kind.cluster=$1" | xargs -r docker volume rm -f >/dev/null
  docker network rm "$2" >/dev/null 2>&1 || true
}

baseline() { # $1 cluster, $2 workers
  local c=$1 n=$2 net="$1-net"
  docker network create "$net" >/dev/null
  docker run -d --name "$c-lb" --network "$net" -l "io.x-k8s.kind.cluster=$c" -l io.x-k8s.kind.role=external-load-balancer \
    -p 6443 -p 8404 "$LB" >/dev/null
  local i name role
  for i in $(seq 0 "$n"); do
    if [ "$i" = 0 ]; then name="$c-cp-0"; role=control-plane; else name="$c-md-$i"; role=worker; fi
    docker volume create --label "io.x-k8s.kind.cluster=$c" "$name-var" >/dev/null
    docker run -d --name "$name" --hostname "$name" --network "$net" -l "io.x-k8s.kind.cluster=$c" -l "io.x-k8s.kind.role=$role" \
      --tmpfs /run --tmpfs /tmp -v "$name-var:/var" --security-opt seccomp=unconfined -t "$NODE" >/dev/null
    if [ "$role" = control-plane ]; then
      docker exec "$name" sh -c 'mkdir -p /run/kubeadm /run/cluster-api && echo x > /run/kubeadm/kubeadm.yaml && kubeadm init --config /run/kubeadm/kubeadm.yaml && echo success > /run/cluster-api/bootstrap-success.complete' >/dev/null
      printf 'frontend control-plane\n  bind *:6443\n' > /tmp/bench-haproxy.cfg
      docker cp /tmp/bench-haproxy.cfg "$c-lb:/usr/local/etc/haproxy/haproxy.cfg"
      docker kill -s HUP "$c-lb" >/dev/null
    else
      docker exec "$name" sh -c 'mkdir -p /run/kubeadm /run/cluster-api && echo x > /run/kubeadm/kubeadm-join-config.yaml && kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml && echo success > /run/cluster-api/bootstrap-success.complete' >/dev/null
    fi
  done
}

CURRENT=""
trap '[ -n "$CURRENT" ] && cleanup $CURRENT' EXIT
echo "capi: $BIN"
echo "engine: $(docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})'), $(nproc) CPUs"
echo
echo "| machines | capi apply | shell script (docker CLI, sequential) | ratio capi/script | capi plan (refresh) | capi drift |"
echo "|---|---|---|---|---|---|"
for w in 3 20; do
  c="bench$w-$$"; net="$c-net"; CURRENT="$c $net"
  d=$(mktemp -d)
  cleanup "$c" "$net"
  t0=$(now)
  baseline "$c" "$w"
  t1=$(now); base=$(elapsed "$t0" "$t1")
  cleanup "$c" "$net"

  export CLUSTER_NAME=$c DOCKER_NETWORK=$net CAPI_DOCKER_PRIVILEGED=false DOCKER_NODE_IMAGE=$NODE \
    DOCKER_LB_IMAGE_REPOSITORY=capi-test DOCKER_LB_IMAGE_TAG=lb CONTROL_PLANE_MACHINE_COUNT=1 WORKER_MACHINE_COUNT=$w
  cp examples/docker/cluster.yaml "$d/c.yaml"
  t0=$(now)
  (cd "$d" && "$BIN" apply --auto-approve --no-color -f c.yaml >/dev/null 2>"$d/apply.err") || { cat "$d/apply.err"; cleanup "$c" "$net"; exit 1; }
  t1=$(now); capi=$(elapsed "$t0" "$t1")
  t0=$(now)
  (cd "$d" && "$BIN" plan --no-color -f c.yaml >/dev/null 2>"$d/plan.err")
  t1=$(now); plan=$(elapsed "$t0" "$t1")
  refresh=$(grep -o 'Refreshed [0-9]* docker resource(s) in [0-9.]*s' "$d/plan.err" | head -1 || true)
  t0=$(now)
  (cd "$d" && "$BIN" drift --no-color -f c.yaml >/dev/null 2>&1) || { echo "capi drift reported drift or failed" >&2; cleanup "$c" "$net"; exit 1; }
  t1=$(now); drift=$(elapsed "$t0" "$t1")
  (cd "$d" && "$BIN" destroy --auto-approve --no-color >/dev/null 2>&1) || true
  cleanup "$c" "$net"
  rm -rf "$d"
  ratio=$(awk -v a="$capi" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  echo "| 1 + $w | ${capi}s | ${base}s | ${ratio} | ${plan}s total; ${refresh:-refresh time not reported} | ${drift}s |"
done

#!/usr/bin/env bash
# A three-member etcd cluster on loopback for the etcd state backend's tests
# (tests/it/etcd.rs): installs Debian's etcd-server and etcd-client when
# missing, then starts the cluster with scripts/etcd-cluster.sh (idempotent:
# a healthy cluster is left alone; one that does not become healthy is
# recreated). Under CAPI_CI=1 any failure is fatal; otherwise it is reported
# and the etcd tests skip visibly.
set -uo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "setup etcd: $*" >&2
  if [ "${CAPI_CI:-}" = "1" ]; then exit 1; fi
  echo "setup etcd: the etcd tests will skip" >&2
  exit 0
}

install() {
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends etcd-server etcd-client >/dev/null 2>&1
}

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  echo "setup etcd: installing etcd-server and etcd-client"
  [ "$(id -u)" = 0 ] || fail "etcd is not installed and this is not root (apt-get install etcd-server etcd-client)"
  install || { timeout 300 apt-get update -q >/dev/null 2>&1 && install; } || fail "cannot install etcd-server/etcd-client"
fi

timeout 120 scripts/etcd-cluster.sh start || fail "the three-member cluster does not start (logs in ${CAPI_ETCD_DIR:-/tmp/capi-etcd}/m*.log)"
echo "setup etcd: cluster healthy at 127.0.0.1:23791,23792,23793"

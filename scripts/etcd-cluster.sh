#!/usr/bin/env bash
# A three-member etcd cluster on loopback for capi's etcd state-backend tests
# (tests/it/etcd.rs) and benchmarks (scripts/bench-etcd.sh).
#
#   scripts/etcd-cluster.sh start             start the members not running (idempotent); wait for health
#   scripts/etcd-cluster.sh stop              stop all members (SIGTERM), keep the data
#   scripts/etcd-cluster.sh reset             stop, remove the data, start a new cluster
#   scripts/etcd-cluster.sh status            exit 0 when every member is healthy
#   scripts/etcd-cluster.sh kill-member N     SIGKILL member N (1-3)
#   scripts/etcd-cluster.sh stop-member N     SIGTERM member N and wait for it to exit
#   scripts/etcd-cluster.sh restart-member N  start member N again (after kill/stop)
#   scripts/etcd-cluster.sh leader            print the number (1-3) of the current leader
#
# Members: mN, client http://127.0.0.1:2379N, peer http://127.0.0.1:2380N,
# data in $CAPI_ETCD_DIR/mN (default /tmp/capi-etcd), logs in mN.log, pid in mN.pid.
set -uo pipefail

DIR=${CAPI_ETCD_DIR:-/tmp/capi-etcd}
ENDPOINTS=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
CLUSTER=m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803
export ETCDCTL_API=3

ctl() { timeout 10 etcdctl --dial-timeout=1s --command-timeout=3s "$@"; }

pid_of() { # $1: member number; prints the pid when that member runs
  local f="$DIR/m$1.pid" p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -q etcd "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}

start_member() { # $1: member number; $2: new|existing
  local n=$1
  if pid_of "$n" >/dev/null; then return 0; fi
  mkdir -p "$DIR"
  local state=$2
  # A member whose data directory exists rejoins; a missing one joins new.
  [ -d "$DIR/m$n/member" ] && state=existing
  setsid etcd --name "m$n" --data-dir "$DIR/m$n" \
    --listen-client-urls "http://127.0.0.1:2379$n" --advertise-client-urls "http://127.0.0.1:2379$n" \
    --listen-peer-urls "http://127.0.0.1:2380$n" --initial-advertise-peer-urls "http://127.0.0.1:2380$n" \
    --initial-cluster "$CLUSTER" --initial-cluster-token capi-test --initial-cluster-state "$state" \
    --heartbeat-interval 100 --election-timeout 1000 \
    >>"$DIR/m$n.log" 2>&1 </dev/null &
  echo $! >"$DIR/m$n.pid"
}

healthy() { ctl --endpoints="${1:-$ENDPOINTS}" endpoint health >/dev/null 2>&1; }

wait_healthy() { # $1: seconds; $2: endpoints (default: all)
  for _ in $(seq $(( $1 * 2 ))); do healthy "${2:-}" && return 0; sleep 0.5; done
  return 1
}

stop_member() {
  local p
  p=$(pid_of "$1") || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

start_all() {
  local fresh=new
  for n in 1 2 3; do [ -d "$DIR/m$n/member" ] && fresh=existing; done
  for n in 1 2 3; do start_member "$n" "$fresh"; done
  wait_healthy 20
}

case "${1:-}" in
  start)
    healthy && exit 0
    start_all && exit 0
    echo "etcd-cluster: not healthy after start; recreating the data directories" >&2
    for n in 1 2 3; do stop_member "$n"; done
    rm -rf "$DIR"
    start_all || { echo "etcd-cluster: the cluster does not become healthy; logs in $DIR/m*.log" >&2; exit 1; }
    ;;
  stop) for n in 1 2 3; do stop_member "$n"; done ;;
  reset) for n in 1 2 3; do stop_member "$n"; done; rm -rf "$DIR"; start_all ;;
  status) healthy ;;
  kill-member) p=$(pid_of "$2") && kill -KILL "$p"; for _ in $(seq 50); do pid_of "$2" >/dev/null || break; sleep 0.1; done ;;
  stop-member) stop_member "$2" ;;
  restart-member) start_member "$2" existing; wait_healthy 20 "http://127.0.0.1:2379$2" ;;
  leader)
    for n in 1 2 3; do
      out=$(ctl --endpoints="http://127.0.0.1:2379$n" endpoint status -w json 2>/dev/null) || continue
      leader=$(echo "$out" | grep -o '"leader":[0-9]*' | cut -d: -f2)
      me=$(echo "$out" | grep -o '"member_id":[0-9]*' | head -1 | cut -d: -f2)
      if [ -n "$leader" ] && [ "$leader" = "$me" ]; then echo "$n"; exit 0; fi
    done
    exit 1 ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac

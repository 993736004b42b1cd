#!/usr/bin/env bash
# Test images for the Docker provider's tests (tests/it/docker.rs), built
# offline: no registry pull. Idempotent and quick when the images exist.
#
#   capi-test/node:v1   busybox-static rootfs + a fake kubeadm that records its
#                       calls in /var/log/kubeadm.log and leaves the files real
#                       kubeadm's success path leaves (admin.conf, kubelet.conf)
#   capi-test/haproxy:lb  stand-in for kindest/haproxy: `haproxy` is a shell
#                       script logging every (re)load (start, SIGHUP) and the
#                       configuration it sees to /var/log/haproxy-reloads.log
#
# Also installs Debian's haproxy (for `haproxy -c` on rendered configurations)
# when missing. Under CAPI_CI=1 any failure is fatal; otherwise it is reported
# and the Docker tests skip visibly.
set -uo pipefail

NODE_IMAGE=${CAPI_TEST_NODE_IMAGE:-capi-test/node:v1}
LB_IMAGE=${CAPI_TEST_LB_IMAGE:-capi-test/haproxy:lb}
CACHE=${CAPI_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capi-test}

fail() {
  echo "setup docker: $*" >&2
  if [ "${CAPI_CI:-}" = "1" ]; then exit 1; fi
  echo "setup docker: the Docker tests will skip" >&2
  exit 0
}

# In CI (CAPI_CI=1) on a machine without a running engine: install Debian's
# docker.io when missing and start dockerd (logs in /tmp/capi-dockerd.log).
if [ "${CAPI_CI:-}" = "1" ] && [ -z "${DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "setup docker: installing docker.io"
    (apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >/dev/null 2>&1) \
      || fail "cannot install docker.io"
  fi
  echo "setup docker: starting dockerd"
  nohup dockerd --data-root /tmp/capi-dockerd/data --exec-root /tmp/capi-dockerd/exec >/tmp/capi-dockerd.log 2>&1 &
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
command -v docker >/dev/null 2>&1 || fail "no docker CLI"
docker info >/dev/null 2>&1 || fail "no Docker Engine answers (DOCKER_HOST=${DOCKER_HOST:-default socket})"

if ! command -v haproxy >/dev/null 2>&1; then
  echo "setup docker: installing haproxy (for haproxy -c)"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy >/dev/null 2>&1; }) \
    || echo "setup docker: could not install haproxy; the configuration check will skip" >&2
fi

if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 && docker image inspect "$LB_IMAGE" >/dev/null 2>&1; then
  echo "setup docker: $NODE_IMAGE and $LB_IMAGE present"
  exit 0
fi

mkdir -p "$CACHE" || fail "cannot create $CACHE"
if ! ls "$CACHE"/busybox-static_*.deb >/dev/null 2>&1; then
  (cd "$CACHE" && apt-get download busybox-static >/dev/null 2>&1) \
    || (apt-get update >/dev/null 2>&1 && cd "$CACHE" && apt-get download busybox-static >/dev/null 2>&1) \
    || fail "cannot download Debian's busybox-static"
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
dpkg-deb -x "$(ls "$CACHE"/busybox-static_*.deb | head -1)" "$W/x" || fail "cannot unpack busybox-static"

rootfs() { # $1: directory
  local R=$1
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/sbin,etc/kubernetes,tmp,root,proc,sys,dev,run,mnt,var/lib,var/log}
  cp "$W/x/bin/busybox" "$R/bin/busybox"
  # relative links inside the rootfs only (never `busybox --install` on the host)
  (cd "$R/bin" && for a in $(./busybox --list); do [ -e "$a" ] || ln -s busybox "$a"; done)
  echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> "$R/etc/passwd"
  chmod 1777 "$R/tmp"
}

# --- node image
N="$W/node"; rootfs "$N"
cat > "$N/usr/bin/kubeadm" <<'KEOF'
#!/bin/sh
# fake kubeadm (capi tests): records its calls, leaves what real kubeadm's
# success path leaves.
mkdir -p /etc/kubernetes/pki /var/log
# Each line starts with the host's uptime (shared by all containers), so
# tests can order calls across machines.
now=$(cut -d' ' -f1 /proc/uptime)
case "${1:-} ${2:-}" in
  "token create") echo "$now kubeadm token create (token hidden) ${4:-} ${5:-}" >> /var/log/kubeadm.log; echo "(token)"; exit 0 ;;
esac
echo "$now kubeadm $*" >> /var/log/kubeadm.log
case "${1:-}" in
  init)  [ -f /run/kubeadm/kubeadm.yaml ] || { echo "missing /run/kubeadm/kubeadm.yaml" >&2; exit 1; }
         printf 'apiVersion: v1\nkind: Config\nclusters: []\n' > /etc/kubernetes/admin.conf
         cp /run/kubeadm/kubeadm.yaml /etc/kubernetes/kubeadm-init.yaml ;;
  join)  [ -f /run/kubeadm/kubeadm-join-config.yaml ] || { echo "missing /run/kubeadm/kubeadm-join-config.yaml" >&2; exit 1; }
         printf 'apiVersion: v1\nkind: Config\n' > /etc/kubernetes/kubelet.conf ;;
  reset) rm -rf /etc/kubernetes/* ;;
  version) echo 'kubeadm version: &version.Info{GitVersion:"v1.31.0"}' ;;
esac
echo "fake kubeadm $1 done"
KEOF
chmod 755 "$N/usr/bin/kubeadm"
tar --numeric-owner --owner=0 --group=0 -C "$N" -cf "$W/node.tar" . || fail "tar"
docker import --change 'CMD ["/bin/sh","-c","trap \"exit 0\" TERM INT; while true; do sleep 1 & wait $!; done"]' \
  "$W/node.tar" "$NODE_IMAGE" >/dev/null || fail "docker import $NODE_IMAGE"

# --- load balancer stand-in
L="$W/lb"; rootfs "$L"
mkdir -p "$L/usr/local/etc/haproxy"
cat > "$L/usr/local/sbin/haproxy" <<'HEOF'
#!/bin/sh
# stand-in for haproxy (capi tests): logs every load and the configuration
# it sees; SIGHUP reloads, as for the real one.
cfg=/usr/local/etc/haproxy/haproxy.cfg
while [ $# -gt 0 ]; do [ "$1" = "-f" ] && { cfg=$2; shift; }; shift; done
log=/var/log/haproxy-reloads.log
n=0
load() { n=$((n+1)); { echo "=== load $n $1"; cat "$cfg" 2>/dev/null; echo "=== end $n"; } >> "$log"; }
trap 'load SIGHUP' HUP
trap 'exit 0' TERM INT
load start
while true; do sleep 1 & wait $!; done
HEOF
chmod 755 "$L/usr/local/sbin/haproxy"
tar --numeric-owner --owner=0 --group=0 -C "$L" -cf "$W/lb.tar" . || fail "tar"
docker import --change 'CMD ["/usr/local/sbin/haproxy","-W","-db","-f","/usr/local/etc/haproxy/haproxy.cfg"]' \
  "$W/lb.tar" "$LB_IMAGE" >/dev/null || fail "docker import $LB_IMAGE"

docker run --rm "$NODE_IMAGE" sh -c 'kubeadm version >/dev/null && echo node-image-ok' || fail "$NODE_IMAGE does not run"
echo "setup docker: built $NODE_IMAGE and $LB_IMAGE"

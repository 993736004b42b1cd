#!/usr/bin/env bash
# Real OpenStack services on loopback for tests/it/openstack.rs (Keystone,
# Nova with the fake driver, Neutron, Glance, Placement, Octavia), from
# Debian's packages: scripts/openstack-dev-cloud/. Idempotent: installs what
# is missing, starts what is not running, waits until ready, then prepares
# the test fixtures (quotas, a key pair, an unschedulable flavor) and writes
# target/devcloud/clouds.yaml, where the tests find the cloud.
#
# Without CAPI_CI=1, a cloud that cannot be brought up is not an error: the
# OpenStack tests then skip visibly. CAPI_SKIP_OPENSTACK=1 skips on purpose.
set -euo pipefail
cd "$(dirname "$0")/../.."
DC=scripts/openstack-dev-cloud
D=${DEVCLOUD_DIR:-/var/lib/devcloud}
OUT=target/devcloud

unavailable() {
  rm -f "$OUT/clouds.yaml"
  if [ "${CAPI_CI:-0}" = 1 ]; then
    echo "ERROR: OpenStack dev cloud: $*" >&2
    exit 1
  fi
  echo "OpenStack dev cloud unavailable ($*): the OpenStack tests will be skipped" >&2
  exit 0
}

[ "${CAPI_SKIP_OPENSTACK:-0}" = 1 ] && unavailable "CAPI_SKIP_OPENSTACK=1"
[ "$(id -u)" = 0 ] || unavailable "installing and starting the services needs root"
command -v apt-get >/dev/null || unavailable "not a Debian system (no apt-get)"

up() {
  local port
  for port in 5000 8774 9696 9292 9876; do
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/" || return 1
  done
  [ -s "$D/clouds.yaml" ]
}

if ! up; then
  t0=$SECONDS
  echo "starting the OpenStack dev cloud (first time on a machine: ~2.5 to 8 minutes)"
  bash "$DC/setup.sh" || unavailable "setup.sh failed"
  bash "$DC/start.sh" || unavailable "start.sh failed (logs in $D/log)"
  up || unavailable "services do not answer after start.sh"
  echo "OpenStack dev cloud ready in $((SECONDS - t0))s"
fi

export OS_CLIENT_CONFIG_FILE="$D/clouds.yaml"
os() { openstack --os-cloud "$@"; }
# Room for parallel tests in the demo project.
os devcloud quota set --instances 200 --cores 400 --ram 1024000 --secgroups 200 \
  --secgroup-rules 4000 --networks 200 --subnets 200 --routers 100 --floating-ips 200 \
  --ports 2000 demo >/dev/null || unavailable "cannot set quotas"
# A flavor no host can satisfy: servers go to ERROR ("No valid host was found").
os devcloud flavor show capi-unschedulable >/dev/null 2>&1 ||
  os devcloud flavor create --ram 512 --disk 1 --vcpus 1 --public \
    --property resources:CUSTOM_CAPI_NOWHERE=1 capi-unschedulable >/dev/null
# A second flavor for flavor-change tests.
os devcloud flavor show m1.small >/dev/null || unavailable "flavor m1.small missing"
# The key pair the templates name (sshKeyName), owned by the demo user.
os devcloud-demo keypair show capi-test >/dev/null 2>&1 ||
  os devcloud-demo keypair create capi-test >/dev/null
mkdir -p "$OUT"
cp "$D/clouds.yaml" "$OUT/clouds.yaml"
chmod 600 "$OUT/clouds.yaml"
echo "OpenStack dev cloud: $OUT/clouds.yaml (clouds devcloud-demo, devcloud)"

#!/usr/bin/env bash
# Delete what capi's OpenStack tests created in the dev cloud's demo project
# (everything carrying a capi-lineage tag), e.g. after interrupted test runs.
set -uo pipefail
export OS_CLIENT_CONFIG_FILE=${OS_CLIENT_CONFIG_FILE:-/var/lib/devcloud/clouds.yaml}
os() { openstack --os-cloud devcloud-demo "$@"; }
ids() { os "$@" -f value -c ID -c Tags 2>/dev/null | awk '/capi-lineage:/ {print $1}'; }
for s in $(os server list --os-compute-api-version 2.90 --long -f value -c ID -c Tags | awk '/capi-lineage:/ {print $1}'); do os server delete --wait "$s"; done
for l in $(os loadbalancer list -f value -c id -c name | awk '/k8s-clusterapi-cluster-/ {print $1}'); do os loadbalancer delete --cascade --wait "$l"; done
for f in $(ids floating ip list --long); do os floating ip delete "$f"; done
for p in $(ids port list --long) $(os port list --long -f value -c ID -c Description | awk '/capi machine/ {print $1}'); do os port delete "$p"; done
for r in $(ids router list --long); do
  for sn in $(os router show "$r" -f json | python3 -c 'import json,sys; print(" ".join(i["subnet_id"] for i in json.load(sys.stdin).get("interfaces_info",[])))'); do
    os router remove subnet "$r" "$sn"
  done
  os router delete "$r"
done
for g in $(ids security group list --long); do os security group delete "$g"; done
for sn in $(ids subnet list --long); do os subnet delete "$sn"; done
for n in $(ids network list --long); do os network delete "$n"; done
echo "purged"

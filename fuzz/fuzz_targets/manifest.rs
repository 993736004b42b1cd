//! Fuzz target: the whole path of `capi validate`, from raw bytes to
//! rendered problems (`capi::desired::check_bytes`: UTF-8 decoding,
//! variable substitution, YAML with its limits, ClusterClass expansion with
//! its Go-template and JSON patches, normalisation, validation, the desired
//! clusters with their bootstrap data, report rendering). clusterctl's
//! variables of the example templates are set, as `capi generate` sets
//! them, so that the templates among the seeds (the ClusterClass one
//! included) get past substitution. Any panic, abort, timeout or runaway
//! allocation is a finding.

#![no_main]

use std::sync::OnceLock;

use capi::manifest::Variables;

fn variables() -> &'static Variables {
    static VARS: OnceLock<Variables> = OnceLock::new();
    VARS.get_or_init(|| {
        let mut v = Variables::new();
        for (k, val) in [
            ("CLUSTER_NAME", "c1"),
            ("NAMESPACE", "default"),
            ("KUBERNETES_VERSION", "v1.31.2"),
            ("CONTROL_PLANE_MACHINE_COUNT", "1"),
            ("WORKER_MACHINE_COUNT", "2"),
            ("OPENSTACK_CLOUD", "devcloud"),
            ("OPENSTACK_CLOUD_YAML_B64", "Y2xvdWRzOiB7fQ=="),
            ("OPENSTACK_CONTROL_PLANE_MACHINE_FLAVOR", "m1.small"),
            ("OPENSTACK_NODE_MACHINE_FLAVOR", "m1.small"),
            ("OPENSTACK_EXTERNAL_NETWORK_ID", "ext"),
            ("OPENSTACK_IMAGE_NAME", "tiny"),
        ] {
            v.set(k, val);
        }
        v
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = capi::desired::check_bytes(data, variables());
});

//! The simulated cluster network: a record with a deterministic /16 per
//! cluster (`100.<a>.<b>.0/16`, from a hash of the cluster key), from which
//! the load balancer's and the machines' addresses come.

use serde_json::json;

use super::store::{read_json, remove_record, write_json, SimNetwork};
use super::{h64, SimProvider};
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::NetworkSpec;

/// The first two variable octets of a cluster's /16.
pub(super) fn cidr_base(cluster: &str) -> (u8, u8) {
    let h = h64(&[cluster]);
    (64 + (h % 64) as u8, ((h >> 8) % 256) as u8)
}

fn observed(net: &SimNetwork) -> Observed {
    Observed::from([
        ("cidr".into(), json!(net.cidr)),
        ("name".into(), json!(net.name)),
    ])
}

impl SimProvider {
    /// Adopt this state's network record, or write one.
    pub(super) fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let cluster = input.address.cluster_key();
        let path = self.network_path(cluster);
        if let Some(existing) = read_json::<SimNetwork>(&path)? {
            self.check_owner(&existing.labels, input, "network")?;
            return Ok(observed(&existing));
        }
        if self.inject("network", cluster) {
            return Err(ProviderError::Failed(
                "simulated failure creating the network (CAPI_SIM_FAIL)".into(),
            ));
        }
        let (a, b) = cidr_base(cluster);
        let net = SimNetwork {
            cluster: cluster.into(),
            name: n.name.clone(),
            cidr: format!("100.{a}.{b}.0/16"),
            labels: Self::labels(input),
        };
        write_json(&path, &net)?;
        Ok(observed(&net))
    }

    /// Remove the network (this state's: see `owned_by`); the cluster's
    /// machine log goes with it when it holds no machine (a destroy killed
    /// before its log was compacted leaves one with only removals).
    pub(super) fn delete_network(&self, cluster: &str, lineage: &str) -> Result<(), ProviderError> {
        let path = self.network_path(cluster);
        // An unreadable record is removed, as before: whose it is cannot be told.
        if let Ok(Some(net)) = read_json::<SimNetwork>(&path) {
            if !Self::owned_by(&net.labels, lineage) {
                return Ok(());
            }
        }
        remove_record(&path)?;
        if self.machine_log_path(cluster).exists() {
            self.with_log(cluster, |l| l.compact())?;
        }
        Ok(())
    }
}

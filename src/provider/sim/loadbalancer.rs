//! The simulated API server endpoint: a record with the address `.2` of the
//! cluster's /16 and its members, the control-plane machines. Like CAPD's
//! haproxy, it is "reloaded" (a counter) at every change; a control-plane
//! machine being deleted is drained first (weight 0, unless it is the only
//! member).

use serde_json::json;

use super::network::cidr_base;
use super::store::{read_json, remove_record, write_json, SimLoadBalancer};
use super::SimProvider;
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::LoadBalancerSpec;

impl SimProvider {
    /// Adopt this state's load balancer record, or write one.
    pub(super) fn create_lb(
        &self,
        input: &OpInput<'_>,
        l: &LoadBalancerSpec,
    ) -> Result<Observed, ProviderError> {
        let cluster = input.address.cluster_key();
        let path = self.lb_path(cluster);
        let lb = match read_json::<SimLoadBalancer>(&path)? {
            Some(existing) => {
                self.check_owner(&existing.labels, input, "load balancer")?;
                existing
            }
            None => {
                if self.inject("loadbalancer", cluster) {
                    return Err(ProviderError::Failed(
                        "simulated failure creating the load balancer (CAPI_SIM_FAIL)".into(),
                    ));
                }
                let (a, b) = cidr_base(cluster);
                let lb = SimLoadBalancer {
                    cluster: cluster.into(),
                    ip: format!("100.{a}.{b}.2"),
                    port: l.port,
                    members: vec![],
                    reloads: 0,
                    labels: Self::labels(input),
                };
                write_json(&path, &lb)?;
                lb
            }
        };
        let endpoint = l
            .fixed_endpoint
            .clone()
            .unwrap_or_else(|| format!("{}:{}", lb.ip, lb.port));
        Ok(Observed::from([
            ("ip".into(), json!(lb.ip)),
            ("endpoint".into(), json!(endpoint)),
        ]))
    }

    /// Remove the load balancer, if this state's (see `owned_by`).
    pub(super) fn delete_lb(&self, cluster: &str, lineage: &str) -> Result<(), ProviderError> {
        let path = self.lb_path(cluster);
        // An unreadable record is removed, as before: whose it is cannot be told.
        match read_json::<SimLoadBalancer>(&path) {
            Ok(Some(lb)) if !Self::owned_by(&lb.labels, lineage) => Ok(()),
            _ => remove_record(&path).map(|_| ()),
        }
    }

    /// Change the members and count a reload. No load balancer: nothing to
    /// do.
    pub(super) async fn reconfigure_lb(
        &self,
        cluster: &str,
        change: impl FnOnce(&mut SimLoadBalancer),
    ) -> Result<(), ProviderError> {
        let _g = self.lb_lock.lock().await;
        let path = self.lb_path(cluster);
        let Some(mut lb) = read_json::<SimLoadBalancer>(&path)? else {
            return Ok(());
        };
        change(&mut lb);
        lb.reloads += 1;
        write_json(&path, &lb)
    }
}

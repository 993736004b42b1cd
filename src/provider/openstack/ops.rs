//! The client every OpenStack room uses: [`Cloud`], one credential's
//! [`OpenStackApi`] with the retry policy ([`Policy`], from
//! [`crate::provider::Overrides`]), and the composite operations built on
//! it: find exactly one object by reference, create-or-adopt by lineage,
//! delete what may be gone, wait for a load balancer or a deletion.
//!
//! Transient errors (5xx, 429, a 409 that is not quota, a connection that
//! failed) are retried with exponential backoff; permanent ones fail at once
//! with [`ApiError::explain`]'s message.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{ApiError, Kind, OpenStackApi, Query};
use super::{lineage_tag, sid};
use crate::infra::openstack::Ref;
use crate::provider::ProviderError;

/// How long a load balancer may take to become ACTIVE.
const LB_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::Failed(msg.into())
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Attempts for a transient API error (`CAPI_OPENSTACK_RETRIES`).
    pub(crate) attempts: u32,
    /// Between two looks at something that changes state.
    pub(crate) poll: Duration,
    /// How long a server may take to become ACTIVE, or anything to go away
    /// (`CAPI_OPENSTACK_SERVER_TIMEOUT`).
    pub(crate) server_timeout: Duration,
}

/// One credential's client with the retry policy.
#[derive(Clone)]
pub(crate) struct Cloud {
    api: Arc<dyn OpenStackApi>,
    policy: Policy,
}

impl Cloud {
    pub(crate) fn new(api: Arc<dyn OpenStackApi>, policy: Policy) -> Cloud {
        Cloud { api, policy }
    }

    /// The raw client, for the calls that must not be retried blindly
    /// (server creation) or whose errors are judged one by one.
    pub(crate) fn api(&self) -> &dyn OpenStackApi {
        self.api.as_ref()
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Retry transient errors with exponential backoff; permanent ones fail
    /// at once.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let attempts = self.policy.attempts;
        let mut delay = Duration::from_millis(500);
        let mut last = None;
        for i in 0..attempts.max(1) {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && i + 1 < attempts => {
                    tracing::debug!("{what}: transient error, retrying in {delay:?}: {e}");
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
                Err(e) => return Err(err(e.explain(what))),
            }
        }
        Err(err(last
            .map(|e| e.explain(what))
            .unwrap_or_else(|| what.to_string())))
    }

    /// One list call, retried.
    pub(crate) async fn list(
        &self,
        what: &str,
        kind: Kind,
        q: &Query,
    ) -> Result<Vec<Value>, ProviderError> {
        self.retry(what, || self.api.list(kind, q)).await
    }

    /// One get call, retried; `None` when it does not exist.
    pub(crate) async fn get(
        &self,
        what: &str,
        kind: Kind,
        id: &str,
    ) -> Result<Option<Value>, ProviderError> {
        self.retry(what, || self.api.get(kind, id)).await
    }

    /// Replace an object's tags, retried.
    pub(crate) async fn tag(
        &self,
        what: &str,
        kind: Kind,
        id: &str,
        tags: &[String],
    ) -> Result<(), ProviderError> {
        self.retry(what, || self.api.set_tags(kind, id, tags)).await
    }

    /// Find one object by reference (id or filter), as CAPO does: exactly one.
    pub(crate) async fn find_one(
        &self,
        kind: Kind,
        r: &Ref,
        extra: Query,
    ) -> Result<Value, ProviderError> {
        let q = Query {
            id: r.id.clone(),
            name: r.name.clone(),
            tags: r.tags.clone(),
            ..extra
        };
        let what = format!("looking up {} {}", kind.as_str(), r.describe());
        let found = self.list(&what, kind, &q).await?;
        match found.len() {
            1 => Ok(found.into_iter().next().unwrap()),
            0 => Err(err(format!(
                "no {} with {} exists in the project",
                kind.as_str(),
                r.describe()
            ))),
            n => Err(err(format!(
                "{n} {}s match {}; CAPO requires exactly one: use an id",
                kind.as_str(),
                r.describe()
            ))),
        }
    }

    /// Create a Neutron object unless this state already has it, then tag
    /// it; `true` when it was created. The lineage is also in the
    /// description, so an object created just before a crash (before its
    /// tags were set) is still recognised.
    pub(crate) async fn ensure(
        &self,
        kind: Kind,
        name: &str,
        lineage: &str,
        tags: &[String],
        mut body: Value,
    ) -> Result<(Value, bool), ProviderError> {
        let tag = lineage_tag(lineage);
        let q = Query {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let same = self
            .list(&format!("looking up {} {name}", kind.as_str()), kind, &q)
            .await?;
        let tagged = |v: &Value| {
            v["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag.as_str()))
        };
        let ours = |v: &Value| {
            tagged(v)
                || v["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(lineage))
        };
        let mut all = vec![tag.clone()];
        all.extend(tags.iter().cloned());
        let tagging = format!("tagging {} {name}", kind.as_str());
        if let Some(v) = same.into_iter().find(|v| ours(v)) {
            if !tagged(&v) {
                self.tag(&tagging, kind, &sid(&v), &all).await?;
            }
            return Ok((v, false));
        }
        let desc = body["description"]
            .as_str()
            .unwrap_or("Created by capi")
            .to_string();
        body["description"] = json!(format!("{desc} (capi lineage {lineage})"));
        let what = format!("creating {} {name}", kind.as_str());
        let v = self.retry(&what, || self.api.create(kind, &body)).await?;
        self.tag(&tagging, kind, &sid(&v), &all).await?;
        Ok((v, true))
    }

    /// Delete; what is already gone (or was never recorded) is fine.
    pub(crate) async fn delete_quietly(&self, kind: Kind, id: &str) -> Result<(), ProviderError> {
        if id.is_empty() {
            return Ok(());
        }
        self.retry(&format!("deleting {} {id}", kind.as_str()), || {
            self.api.delete(kind, id)
        })
        .await
        .map(|_| ())
    }

    /// Wait until an object is gone, up to the server timeout.
    pub(crate) async fn wait_gone(&self, kind: Kind, id: &str) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.policy.server_timeout;
        loop {
            if self.get("waiting for deletion", kind, id).await?.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "{} {id} still exists after {:?}",
                    kind.as_str(),
                    self.policy.server_timeout
                )));
            }
            tokio::time::sleep(self.policy.poll).await;
        }
    }

    /// Wait until a load balancer is ACTIVE; its state then.
    pub(crate) async fn wait_lb(&self, id: &str, what: &str) -> Result<Value, ProviderError> {
        let deadline = tokio::time::Instant::now() + LB_TIMEOUT;
        loop {
            let lb = self
                .get("reading the load balancer", Kind::LoadBalancer, id)
                .await?;
            let Some(lb) = lb else {
                return Err(err(format!("{what}: load balancer {id} disappeared")));
            };
            match lb["provisioning_status"].as_str().unwrap_or_default() {
                "ACTIVE" => return Ok(lb),
                "ERROR" => return Err(err(format!("{what}: load balancer {id} went to ERROR"))),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "{what}: load balancer {id} not ACTIVE after 600s"
                )));
            }
            tokio::time::sleep(self.policy.poll * 2).await;
        }
    }

    /// An Octavia change: wait for the load balancer to be ACTIVE, try, and
    /// on 409 (immutable while PENDING_*) wait and try again.
    pub(crate) async fn lb_op<T, F, Fut>(
        &self,
        lb: &str,
        what: &str,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let deadline = tokio::time::Instant::now() + LB_TIMEOUT;
        loop {
            self.wait_lb(lb, what).await?;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!("{what}: {e}; waiting for the load balancer");
                    tokio::time::sleep(self.policy.poll * 2).await;
                }
                Err(e) => return Err(err(e.explain(what))),
            }
        }
    }
}

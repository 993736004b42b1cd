//! The infrastructure step: the cluster's singletons (certificate
//! authorities, network, load balancer) are created, resumed, replaced,
//! updated in place or refused as immutable; then the version-skew rules are
//! checked against the control plane in state.

use crate::desired::DesiredCluster;
use crate::infra::{classify_infra_change, InfraChange};
use crate::resource::{Address, AttributeChange, Observation, ResourceKind, Spec};
use crate::state::{Resource, Status};

use super::super::{skew, Action, Change, ReasonCode};
use super::cluster::ClusterPlanner;
use super::report::{Decision, InfrastructureReport};
use super::{attribute_diff, provider_of, Builder, PlanError, ProtoStep};

impl ClusterPlanner<'_, '_> {
    pub(super) fn do_plan_infrastructure(&mut self) -> Result<InfrastructureReport, PlanError> {
        let dc = self.dc;
        let network = dc.address(ResourceKind::Network, None);
        let singletons = [
            (ResourceKind::Pki, Spec::Pki(dc.pki.clone()), vec![]),
            (
                ResourceKind::Network,
                Spec::Network(dc.network.clone()),
                vec![],
            ),
            (
                ResourceKind::Loadbalancer,
                Spec::Loadbalancer(dc.loadbalancer.clone()),
                vec![network],
            ),
        ];
        let mut resources = Vec::with_capacity(singletons.len());
        for (kind, spec, deps) in singletons {
            let singleton = Singleton {
                address: dc.address(kind, None),
                provider: provider_of(kind, dc.provider),
                kind,
                spec,
                deps,
            };
            let decision = singleton.plan(self.b, dc)?;
            resources.push((singleton.address, decision));
        }
        skew::check(self.b.state, dc)?;
        Ok(InfrastructureReport { resources })
    }
}

/// One singleton resource and what the manifests want it to be.
struct Singleton {
    address: Address,
    kind: ResourceKind,
    provider: crate::resource::ProviderKind,
    spec: Spec,
    deps: Vec<Address>,
}

impl Singleton {
    fn plan(&self, b: &mut Builder<'_>, dc: &DesiredCluster) -> Result<Decision, PlanError> {
        let Some(r) = b.state.get(&self.address) else {
            let reason = format!("{} does not exist yet", self.kind.as_str());
            return Ok(self.create(b, ReasonCode::New, reason));
        };
        Ok(match r.status {
            Status::Creating => self.create(b, ReasonCode::Interrupted, "a previous apply was interrupted while creating it: capi will adopt it if it exists, or create it".into()),
            Status::Deleting | Status::Failed => self.recreate_broken(b, r),
            Status::Ready | Status::Updating => return self.plan_existing(b, dc, r),
        })
    }

    /// A ready (or interrupted update of a) singleton: replaced on request,
    /// updated in place, refused as immutable, recreated when it is gone.
    fn plan_existing(
        &self,
        b: &mut Builder<'_>,
        dc: &DesiredCluster,
        r: &Resource,
    ) -> Result<Decision, PlanError> {
        let before = Some(r.attributes.clone());
        Ok(if b.opts.replace.contains(&self.address) {
            let reason = "replacement requested with --replace".into();
            self.replace(b, ReasonCode::Requested, reason, before)
        } else if r.attributes != self.spec && in_place_infra(&r.attributes, &self.spec) {
            let reason = "mutable infrastructure settings changed: updated in place".into();
            self.update(b, ReasonCode::InPlace, reason, before)
        } else if r.attributes != self.spec {
            return Err(self.immutable(dc, r));
        } else if matches!(b.observation(&self.address), Some(Observation::Missing)) {
            let reason = format!("the {} was deleted outside capi", self.kind.as_str());
            self.create(b, ReasonCode::Drifted, reason)
        } else if r.status == Status::Updating {
            let reason = "a previous apply was interrupted while updating it".into();
            self.update(b, ReasonCode::Interrupted, reason, before)
        } else {
            Decision::Keep
        })
    }

    /// A failed singleton, or one whose delete was interrupted: deleted and
    /// created again.
    fn recreate_broken(&self, b: &mut Builder<'_>, r: &Resource) -> Decision {
        let failed = r.status == Status::Failed;
        let why = if failed {
            format!(
                "it failed: {}",
                r.error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or("unknown error")
            )
        } else {
            "a previous apply was interrupted while deleting it".to_string()
        };
        let code = if failed {
            ReasonCode::Failed
        } else {
            ReasonCode::Interrupted
        };
        let reason = format!("{why}: it is deleted and created again");
        self.replace(b, code, reason, Some(r.attributes.clone()))
    }

    fn change(
        &self,
        action: Action,
        code: ReasonCode,
        reason: String,
        before: Option<Spec>,
    ) -> Change {
        Change {
            address: self.address.clone(),
            kind: self.kind,
            provider: self.provider,
            action,
            reason_code: code,
            reason,
            replacement: None,
            delete_first: false,
            attributes: attribute_diff(before.as_ref(), Some(&self.spec)),
            before,
            after: Some(self.spec.clone()),
            bootstrap_diff: None,
            part_of: None,
            group: None,
            wave: None,
        }
    }

    fn create_step(&self) -> ProtoStep {
        ProtoStep::create(
            self.address.clone(),
            self.provider,
            self.spec.clone(),
            self.deps.clone(),
        )
    }

    fn create(&self, b: &mut Builder<'_>, code: ReasonCode, reason: String) -> Decision {
        b.change(self.change(Action::Create, code, reason, None));
        b.step(self.create_step());
        Decision::Create(code)
    }

    fn update(
        &self,
        b: &mut Builder<'_>,
        code: ReasonCode,
        reason: String,
        before: Option<Spec>,
    ) -> Decision {
        b.change(self.change(Action::Update, code, reason, before));
        b.step(ProtoStep::update(
            self.address.clone(),
            self.provider,
            self.spec.clone(),
            self.deps.clone(),
        ));
        Decision::Update(code)
    }

    /// Delete, then create again (the create waits for the delete).
    fn replace(
        &self,
        b: &mut Builder<'_>,
        code: ReasonCode,
        reason: String,
        before: Option<Spec>,
    ) -> Decision {
        let mut c = self.change(Action::Replace, code, reason, before);
        c.replacement = Some(self.address.clone());
        c.delete_first = true;
        b.change(c);
        let d = b.step(ProtoStep::delete(self.address.clone(), self.provider));
        let mut s = self.create_step();
        s.after.push(d);
        b.step(s);
        Decision::Replace(code)
    }

    /// The error for a change the singleton cannot take.
    fn immutable(&self, dc: &DesiredCluster, r: &Resource) -> PlanError {
        let diff = attribute_diff(Some(&r.attributes), Some(&self.spec));
        let first = diff.first().cloned().unwrap_or(AttributeChange {
            path: "spec".into(),
            before: None,
            after: None,
        });
        let help = match self.kind {
            ResourceKind::Pki => "the cluster's certificate authorities cannot be regenerated in place; restore the previous value, or destroy and recreate the cluster".to_string(),
            // The provider's reason (e.g. CAPO's webhook rules), when it gives one.
            _ => match infra_immutable_reason(&r.attributes, &self.spec) {
                Some(why) => format!("{why}; restore the previous value, or destroy and recreate the cluster"),
                None => "the cluster's infrastructure is immutable (the control-plane endpoint would move); restore the previous value, or destroy and recreate the cluster".to_string(),
            },
        };
        PlanError::Immutable {
            address: self.address.clone(),
            field: first.path,
            before: first
                .before
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unset".into()),
            after: first
                .after
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unset".into()),
            help,
            file: dc.source.file.clone(),
            line: dc.source.line,
        }
    }
}

/// Why the provider refuses an infrastructure change, when it says.
fn infra_immutable_reason(before: &Spec, after: &Spec) -> Option<String> {
    let (b, a) = match (before, after) {
        (Spec::Network(b), Spec::Network(a)) => (&b.infra, &a.infra),
        (Spec::Loadbalancer(b), Spec::Loadbalancer(a)) => (&b.infra, &a.infra),
        _ => return None,
    };
    match classify_infra_change(b, a) {
        InfraChange::Immutable(field, why) if !why.is_empty() => Some(format!("{field}: {why}")),
        _ => None,
    }
}

/// Network and load balancer changes the provider can apply in place.
fn in_place_infra(before: &Spec, after: &Spec) -> bool {
    let (b, a) = match (before, after) {
        (Spec::Network(b), Spec::Network(a)) if b.name == a.name => (&b.infra, &a.infra),
        (Spec::Loadbalancer(b), Spec::Loadbalancer(a))
            if b.port == a.port && b.fixed_endpoint == a.fixed_endpoint =>
        {
            (&b.infra, &a.infra)
        }
        _ => return false,
    };
    matches!(classify_infra_change(b, a), InfraChange::InPlace)
}

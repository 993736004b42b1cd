//! The bootstrap-token step: the token is created once the first
//! control-plane machine is up (it is registered through it), and rotated
//! before machines join when it has expired, expires within the margin, or
//! a previous apply did not finish registering it.

use crate::resource::{AttributeChange, ResourceKind, Spec};
use crate::state::Status;
use crate::util::time::format_rfc3339;

use super::super::{Action, Change, ReasonCode};
use super::cluster::ClusterPlanner;
use super::report::{TokenDecision, TokenRotation};
use super::{attribute_diff, ProtoStep};

impl ClusterPlanner<'_, '_> {
    pub(super) fn do_plan_token(&mut self) -> TokenDecision {
        let dc = self.dc;
        let token_spec = Spec::Token(dc.token.clone());
        let Some(r) = self.b.state.get(&self.token_addr) else {
            if !self.joins_planned && self.init_step.is_none() {
                return TokenDecision::NotNeeded;
            }
            self.b.change(Change {
                address: self.token_addr.clone(),
                kind: ResourceKind::Token,
                provider: dc.provider,
                action: Action::Create,
                reason_code: ReasonCode::New,
                reason: "joining machines need a bootstrap token".into(),
                replacement: None,
                delete_first: false,
                before: None,
                after: Some(token_spec.clone()),
                attributes: attribute_diff(None, Some(&token_spec)),
                bootstrap_diff: None,
                part_of: None,
                group: None,
                wave: None,
            });
            let mut s = ProtoStep::create(self.token_addr.clone(), dc.provider, token_spec, vec![]);
            s.after.extend(self.init_step);
            self.b.step(s);
            return TokenDecision::Create;
        };
        let expires = r
            .observed
            .get("expires_unix")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let now = self.b.opts.now_unix;
        let interrupted = r.status.is_pending() || r.status == Status::Failed;
        if !self.joins_planned
            || (expires - now >= self.b.opts.token_margin_seconds && !interrupted)
        {
            return TokenDecision::Keep;
        }
        let (rotation, reason) = if interrupted {
            (
                TokenRotation::Interrupted,
                "a previous apply did not finish registering the token: a new one is made"
                    .to_string(),
            )
        } else if expires <= now {
            (
                TokenRotation::Expired,
                format!(
                    "the bootstrap token expired at {}: a new one is made before machines join",
                    format_rfc3339(expires)
                ),
            )
        } else {
            (
                TokenRotation::ExpiresSoon,
                format!(
                    "the bootstrap token expires at {}: a new one is made before machines join",
                    format_rfc3339(expires)
                ),
            )
        };
        self.b.change(Change {
            address: self.token_addr.clone(),
            kind: ResourceKind::Token,
            provider: dc.provider,
            action: Action::Update,
            reason_code: ReasonCode::TokenExpired,
            reason,
            replacement: None,
            delete_first: false,
            before: Some(r.attributes.clone()),
            after: Some(token_spec.clone()),
            attributes: vec![AttributeChange {
                path: "token".into(),
                before: Some(serde_json::json!("(sensitive)")),
                after: Some(serde_json::json!("(sensitive, new)")),
            }],
            bootstrap_diff: None,
            part_of: None,
            group: None,
            wave: None,
        });
        let mut s = ProtoStep::update(self.token_addr.clone(), dc.provider, token_spec, vec![]);
        s.after.extend(self.init_step);
        self.b.step(s);
        TokenDecision::Rotate(rotation)
    }
}

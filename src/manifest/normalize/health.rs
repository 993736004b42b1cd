//! The MachineHealthCheck body: selector, unhealthy conditions with their
//! timeouts (v1beta1 durations or v1beta2 seconds), the node startup
//! timeout and the remediation trigger.

use serde_json::Value;

use super::super::model::{Body, HealthCondition, MachineHealthCheck, TriggerIf};
use super::super::raw;
use super::DocCtx;
use crate::util::time::go_duration_seconds;

pub(super) fn parse_health_check(ctx: &mut DocCtx<'_>, root: &Value, name: &str) -> Option<Body> {
    let spec: raw::MachineHealthCheckSpec = ctx.typed(root, "/spec")?;
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let conv = |c: &raw::UnhealthyCondition| HealthCondition {
        kind: c.kind.clone(),
        status: c.status.clone(),
        timeout_seconds: c
            .timeout_seconds
            .or_else(|| {
                c.timeout
                    .as_deref()
                    .and_then(go_duration_seconds)
                    .map(|s| s as i64)
            })
            .unwrap_or(0),
    };
    let checks = spec.checks.unwrap_or_default();
    let node_conditions = checks
        .unhealthy_node_conditions
        .or(spec.unhealthy_conditions)
        .unwrap_or_default();
    let machine_conditions = checks
        .unhealthy_machine_conditions
        .or(spec.unhealthy_machine_conditions)
        .unwrap_or_default();
    let startup = checks
        .node_startup_timeout_seconds
        .or_else(|| {
            spec.node_startup_timeout
                .as_deref()
                .and_then(go_duration_seconds)
                .map(|s| s as i64)
        })
        .unwrap_or(600);
    let trigger = spec
        .remediation
        .and_then(|r| r.trigger_if)
        .unwrap_or_default();
    let trigger_if = if let Some(v) = trigger
        .unhealthy_less_than_or_equal_to
        .or(spec.max_unhealthy)
    {
        TriggerIf::AtMost(v)
    } else if let Some(r) = trigger.unhealthy_in_range.or(spec.unhealthy_range) {
        match parse_range(&r) {
            Some((a, b)) => TriggerIf::InRange(a, b),
            None => {
                ctx.error(
                    "/spec",
                    format!("MachineHealthCheck {name:?}: unhealthy range {r:?} is malformed"),
                    "write the range as \"[min-max]\", e.g. \"[1-3]\"",
                );
                TriggerIf::Always
            }
        }
    } else {
        TriggerIf::Always
    };
    Some(Body::MachineHealthCheck(MachineHealthCheck {
        cluster_name: spec.cluster_name,
        selector,
        node_startup_timeout_seconds: startup,
        unhealthy_node_conditions: node_conditions.iter().map(conv).collect(),
        unhealthy_machine_conditions: machine_conditions.iter().map(conv).collect(),
        trigger_if,
    }))
}

/// `"[min-max]"`.
pub(super) fn parse_range(r: &str) -> Option<(u32, u32)> {
    let inner = r.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (a, b) = inner.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

//! KubeadmControlPlane, KubeadmConfig and KubeadmConfigTemplate bodies, and
//! the normalisation of a kubeadm config spec (defaults removed, v1beta1
//! fields moved to their v1beta2 places) so equal configurations compare
//! equal.

use serde_json::Value;

use super::super::model::{ApiGen, Body, IntOrPercent, KubeadmControlPlane};
use super::super::raw;
use super::document::check_labels;
use super::{check_ref_style, parse_version, to_ref, DocCtx};
use crate::util::time::go_duration_seconds;

pub(super) fn parse_control_plane(
    ctx: &mut DocCtx<'_>,
    api_gen: ApiGen,
    root: &Value,
    name: &str,
) -> Option<Body> {
    let spec: raw::KcpSpec = ctx.typed(root, "/spec")?;
    let (infra, infra_path) = match (
        spec.machine_template
            .spec
            .as_ref()
            .and_then(|s| s.infrastructure_ref.clone()),
        spec.machine_template.infrastructure_ref.clone(),
    ) {
        (Some(r), _) => (Some(r), "/spec/machineTemplate/spec/infrastructureRef"),
        (None, Some(r)) => (Some(r), "/spec/machineTemplate/infrastructureRef"),
        (None, None) => (None, "/spec/machineTemplate"),
    };
    check_ref_style(ctx, &infra, infra_path, api_gen);
    if infra.is_none() {
        ctx.error(infra_path, format!("KubeadmControlPlane {name:?} has no machine template infrastructureRef"), "set spec.machineTemplate.spec.infrastructureRef (v1beta2) or spec.machineTemplate.infrastructureRef (v1beta1) to the machine template of the control plane");
    }
    let strategy = spec
        .rollout
        .as_ref()
        .and_then(|r| r.strategy.clone())
        .or(spec.rollout_strategy.clone());
    if let Some(t) = strategy.as_ref().and_then(|s| s.kind.as_deref()) {
        if t != "RollingUpdate" {
            ctx.error(
                "/spec",
                format!("KubeadmControlPlane {name:?}: rollout strategy {t:?} is not supported"),
                "KubeadmControlPlane only supports RollingUpdate",
            );
        }
    }
    if spec.version.is_empty() {
        ctx.error(
            "/spec",
            format!("KubeadmControlPlane {name:?} has no spec.version"),
            "set spec.version to the Kubernetes version, e.g. v1.31.2",
        );
    }
    let meta = spec.machine_template.metadata.clone().unwrap_or_default();
    check_labels(ctx, &meta, "/spec/machineTemplate/metadata");
    Some(Body::KubeadmControlPlane(KubeadmControlPlane {
        replicas: spec.replicas.unwrap_or(1),
        version: parse_version(&spec.version),
        infrastructure_ref: to_ref(infra, infra_path),
        kubeadm_config_spec: normalize_kubeadm(spec.kubeadm_config_spec),
        max_surge: Some(
            strategy
                .and_then(|s| s.rolling_update)
                .and_then(|r| r.max_surge)
                .unwrap_or(IntOrPercent::Int(1)),
        ),
        rollout_after: spec.rollout.and_then(|r| r.after).or(spec.rollout_after),
        machine_labels: meta.labels,
        machine_annotations: meta.annotations,
    }))
}

pub(super) fn parse_config(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Body> {
    let spec: raw::KubeadmConfigSpec = ctx.typed(root, "/spec")?;
    Some(Body::KubeadmConfig(normalize_kubeadm(spec)))
}

pub(super) fn parse_config_template(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Body> {
    let spec: raw::KubeadmConfigTemplateSpec = ctx.typed(root, "/spec")?;
    Some(Body::KubeadmConfigTemplate(normalize_kubeadm(
        spec.template.spec,
    )))
}

fn normalize_kubeadm(mut s: raw::KubeadmConfigSpec) -> raw::KubeadmConfigSpec {
    if s.format.as_deref() == Some("cloud-config") {
        s.format = None;
    }
    for f in &mut s.files {
        if f.permissions.as_deref() == Some("0644") {
            f.permissions = None;
        }
        if f.owner.as_deref() == Some("root:root") {
            f.owner = None;
        }
        if f.append == Some(false) {
            f.append = None;
        }
        if f.content_format.as_deref() == Some("Raw") {
            f.content_format = None;
        }
    }
    if let Some(cc) = &mut s.cluster_configuration {
        // v1beta1 → v1beta2: the control-plane health-check timeout moved.
        if let Some(t) = cc
            .api_server
            .as_mut()
            .and_then(|a| a.timeout_for_control_plane.take())
        {
            if let Some(secs) = go_duration_seconds(&t) {
                let init = s.init_configuration.get_or_insert_with(Default::default);
                let timeouts = init.timeouts.get_or_insert_with(Default::default);
                timeouts
                    .control_plane_component_health_check_seconds
                    .get_or_insert(secs as i64);
            }
        }
        if cc
            .api_server
            .as_ref()
            .is_some_and(|a| *a == raw::ApiServer::default())
        {
            cc.api_server = None;
        }
        if *cc == raw::ClusterConfiguration::default() {
            s.cluster_configuration = None;
        }
    }
    if let Some(j) = &mut s.join_configuration {
        if let Some(t) = j.discovery.as_mut().and_then(|d| d.timeout.take()) {
            if let Some(secs) = go_duration_seconds(&t) {
                j.timeouts
                    .get_or_insert_with(Default::default)
                    .discovery_seconds
                    .get_or_insert(secs as i64);
            }
        }
        if j.discovery
            .as_ref()
            .is_some_and(|d| *d == raw::Discovery::default())
        {
            j.discovery = None;
        }
    }
    if s.init_configuration
        .as_ref()
        .is_some_and(|i| *i == raw::InitConfiguration::default())
    {
        s.init_configuration = None;
    }
    if s.join_configuration
        .as_ref()
        .is_some_and(|j| *j == raw::JoinConfiguration::default())
    {
        s.join_configuration = None;
    }
    s
}

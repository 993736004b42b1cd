//! Machine-group bodies: MachineDeployment (rollout strategy, deletion
//! order), MachineSet, standalone Machine, and the machine template they
//! share.

use serde_json::Value;

use super::super::model::{
    ApiGen, Body, DeletionOrder, IntOrPercent, Machine, MachineDeployment, MachineSet,
    MachineTemplate, Strategy,
};
use super::super::raw;
use super::document::check_labels;
use super::{check_ref_style, parse_version, to_ref, DocCtx};

pub(super) fn parse_deployment(
    ctx: &mut DocCtx<'_>,
    api_gen: ApiGen,
    root: &Value,
    name: &str,
) -> Option<Body> {
    let spec: raw::MachineDeploymentSpec = ctx.typed(root, "/spec")?;
    // v1beta2's spec.rollout.strategy, else v1beta1's spec.strategy.
    let strategy_path = if spec.rollout.as_ref().is_some_and(|r| r.strategy.is_some()) {
        "/spec/rollout/strategy"
    } else {
        "/spec/strategy"
    };
    let strategy = spec
        .rollout
        .as_ref()
        .and_then(|r| r.strategy.clone())
        .or(spec.strategy.clone())
        .unwrap_or_default();
    let ru = strategy.rolling_update.clone().unwrap_or_default();
    let strategy_kind = match strategy.kind.as_deref() {
        None | Some("RollingUpdate") => Strategy::RollingUpdate {
            max_surge: ru.max_surge.unwrap_or(IntOrPercent::Int(1)),
            max_unavailable: ru.max_unavailable.unwrap_or(IntOrPercent::Int(0)),
        },
        Some("OnDelete") => Strategy::OnDelete,
        Some(other) => {
            ctx.error(
                &format!("{strategy_path}/type"),
                format!("MachineDeployment {name:?}: unknown rollout strategy {other:?}"),
                "use RollingUpdate or OnDelete",
            );
            Strategy::OnDelete
        }
    };
    let order_path = if spec.deletion.is_some() {
        "/spec/deletion/order"
    } else {
        "/spec/strategy/rollingUpdate/deletePolicy"
    };
    let order = deletion_order(
        ctx,
        spec.deletion.and_then(|d| d.order).or(ru.delete_policy),
        order_path,
    );
    Some(Body::MachineDeployment(MachineDeployment {
        cluster_name: spec.cluster_name,
        replicas: spec.replicas.unwrap_or(1),
        template: machine_template(ctx, spec.template, "/spec/template", api_gen),
        strategy: strategy_kind,
        deletion_order: order,
        rollout_after: spec.rollout.and_then(|r| r.after).or(spec.rollout_after),
        paused: spec.paused.unwrap_or(false),
    }))
}

pub(super) fn parse_set(ctx: &mut DocCtx<'_>, api_gen: ApiGen, root: &Value) -> Option<Body> {
    let spec: raw::MachineSetSpec = ctx.typed(root, "/spec")?;
    let order = deletion_order(
        ctx,
        spec.deletion.and_then(|d| d.order).or(spec.delete_policy),
        "/spec",
    );
    Some(Body::MachineSet(MachineSet {
        cluster_name: spec.cluster_name,
        replicas: spec.replicas.unwrap_or(1),
        template: machine_template(ctx, spec.template, "/spec/template", api_gen),
        deletion_order: order,
    }))
}

pub(super) fn parse_machine(ctx: &mut DocCtx<'_>, api_gen: ApiGen, root: &Value) -> Option<Body> {
    let spec: raw::MachineSpec = ctx.typed(root, "/spec")?;
    let meta: raw::RawMeta = ctx.typed(root, "/metadata").unwrap_or_default();
    let control_plane = meta.labels.contains_key("cluster.x-k8s.io/control-plane");
    let t = raw::MachineTemplateSpec {
        metadata: Some(meta),
        spec,
    };
    let mut template = machine_template(ctx, t, "", api_gen);
    // A Machine's own paths are under /spec, not /spec/template/spec.
    if let Some(r) = &mut template.bootstrap_ref {
        r.path = "/spec/bootstrap/configRef".into();
    }
    if let Some(r) = &mut template.infrastructure_ref {
        r.path = "/spec/infrastructureRef".into();
    }
    Some(Body::Machine(Machine {
        template,
        control_plane,
    }))
}

fn machine_template(
    ctx: &mut DocCtx<'_>,
    t: raw::MachineTemplateSpec,
    base: &str,
    api_gen: ApiGen,
) -> MachineTemplate {
    let spec = t.spec;
    check_ref_style(
        ctx,
        &spec.bootstrap.config_ref,
        &format!("{base}/spec/bootstrap/configRef"),
        api_gen,
    );
    check_ref_style(
        ctx,
        &spec.infrastructure_ref,
        &format!("{base}/spec/infrastructureRef"),
        api_gen,
    );
    let meta = t.metadata.unwrap_or_default();
    if !base.is_empty() {
        check_labels(ctx, &meta, &format!("{base}/metadata"));
    }
    MachineTemplate {
        cluster_name: spec.cluster_name,
        version: spec.version.as_deref().map(parse_version),
        bootstrap_ref: to_ref(
            spec.bootstrap.config_ref,
            &format!("{base}/spec/bootstrap/configRef"),
        ),
        data_secret_name: spec.bootstrap.data_secret_name,
        infrastructure_ref: to_ref(
            spec.infrastructure_ref,
            &format!("{base}/spec/infrastructureRef"),
        ),
        failure_domain: spec.failure_domain,
        labels: meta.labels,
        annotations: meta.annotations,
    }
}

fn deletion_order(ctx: &mut DocCtx<'_>, s: Option<String>, path: &str) -> DeletionOrder {
    match s.as_deref() {
        None | Some("Random") => DeletionOrder::Random,
        Some("Newest") => DeletionOrder::Newest,
        Some("Oldest") => DeletionOrder::Oldest,
        Some(other) => {
            ctx.error(
                path,
                format!("{}: unknown deletion order {other:?}", ctx.what),
                "use one of Random, Newest, Oldest",
            );
            DeletionOrder::Random
        }
    }
}

//! `capi graph`: the resource graph the manifests describe, against the
//! current state (machine names come from it), as DOT or indented text,
//! with the plan's ordering edges (dashed) next to the dependencies.

use std::collections::BTreeMap;

use crate::desired::graph::ResourceGraph;
use crate::plan::{self, Op};
use crate::resource::Address;

use super::super::args::GraphFormat;
use super::super::output::Printer;
use super::super::pipeline;
use super::super::settings::{GlobalSettings, ManifestSettings};
use super::super::{CliError, ExitStatus};

pub(crate) fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    format: GraphFormat,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let m = pipeline::load_manifests(ms, p)?;
    let desired = pipeline::build_desired(&m, ms)?;
    let state = g
        .store()?
        .load()?
        .unwrap_or_else(crate::state::State::empty);
    let opts = plan::PlanOptions {
        now_unix: g.now(),
        ..Default::default()
    };
    let pl = plan::plan(&desired, &state, &opts)?;
    // The graph after the plan: state minus deletes, plus creates.
    let mut nodes: BTreeMap<Address, Vec<Address>> = state
        .resources
        .iter()
        .map(|r| (r.address.clone(), r.dependencies.clone()))
        .collect();
    for s in &pl.steps {
        match s.op {
            Op::Delete => {
                nodes.remove(&s.address);
            }
            Op::Create | Op::Update => {
                nodes.insert(s.address.clone(), s.dependencies.clone());
            }
        }
    }
    let list: Vec<(Address, Vec<Address>)> = nodes.into_iter().collect();
    // The order the executor enforces between the plan's creates and
    // updates (its steps' `after`), beyond the dependencies.
    let by_id: BTreeMap<usize, &plan::Step> = pl.steps.iter().map(|s| (s.id, s)).collect();
    let order: Vec<(Address, Address)> = pl
        .steps
        .iter()
        .filter(|s| s.op != Op::Delete)
        .flat_map(|s| {
            s.after
                .iter()
                .filter_map(|a| by_id.get(a).copied())
                .filter(|first| first.op != Op::Delete)
                .map(|first| (first.address.clone(), s.address.clone()))
        })
        .collect();
    let graph = ResourceGraph::new(&list)
        .and_then(|g| g.with_order(&order))
        .map_err(|e| CliError::Message(e.to_string()))?;
    p.data(&match format {
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Text => graph.to_text(),
    });
    Ok(ExitStatus::Success)
}

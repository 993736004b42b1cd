//! `capi graph`: the resource graph the manifests describe, against the
//! current state (machine names come from it), as DOT or indented text.

use std::collections::BTreeMap;

use crate::desired::graph::ResourceGraph;
use crate::plan::{self, Op};
use crate::resource::Address;
use crate::state::StateStore;

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
    let state = StateStore::new(&g.state)
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
    let graph = ResourceGraph::new(&list).map_err(|e| CliError::Message(e.to_string()))?;
    p.data(&match format {
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Text => graph.to_text(),
    });
    Ok(ExitStatus::Success)
}

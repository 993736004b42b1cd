//! `capi graph`: the resource graph the manifests describe, against the
//! current state (machine names come from it), as DOT or indented text.

use std::collections::BTreeMap;

use crate::desired::graph::ResourceGraph;
use crate::plan::{self, Op};
use crate::resource::Address;
use crate::state::StateStore;

use super::super::args::{GlobalArgs, GraphFormat, ManifestArgs};
use super::super::output::Printer;
use super::super::CliError;
use super::*;

pub(crate) fn run(
    g: &GlobalArgs,
    margs: &ManifestArgs,
    format: GraphFormat,
    p: &Printer,
) -> Result<u8, CliError> {
    let m = load_manifests(margs, p)?;
    let desired = build_desired(&m, margs)?;
    let state = load_state(&StateStore::new(&g.state))?;
    let pl = plan::plan(&desired, &state, &plan_options(now()))?;
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
    Ok(0)
}

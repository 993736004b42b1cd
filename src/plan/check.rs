//! The plan checker: invariants verified on every plan before it is shown or
//! applied. A violation is a bug in the planner, never the user's fault.

use std::collections::{BTreeMap, BTreeSet};

use crate::resource::Address;
use crate::state::State;

use super::{Op, Plan};

pub(crate) fn check(plan: &Plan, state: &State) -> Result<(), String> {
    let mut seen: BTreeSet<(&Address, Op)> = BTreeSet::new();
    let mut write_id: BTreeMap<&Address, usize> = BTreeMap::new();
    let mut delete_id: BTreeMap<&Address, usize> = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if s.id != i {
            return Err(format!("step {} has id {}", i, s.id));
        }
        if !seen.insert((&s.address, s.op)) {
            return Err(format!("{} has two {:?} steps", s.address, s.op));
        }
        for &a in &s.after {
            if a >= i {
                return Err(format!(
                    "step {i} ({}) waits for a later step {a}",
                    s.address
                ));
            }
        }
        match s.op {
            Op::Create | Op::Update => {
                if s.spec.is_none() {
                    return Err(format!("{} {:?} without a spec", s.address, s.op));
                }
                write_id.insert(&s.address, i);
            }
            Op::Delete => {
                delete_id.insert(&s.address, i);
            }
        }
    }
    // Creates come after the creates of what they depend on.
    for s in &plan.steps {
        if s.op == Op::Delete {
            continue;
        }
        for d in &s.dependencies {
            if let Some(&j) = write_id.get(d) {
                if !s.after.contains(&j) {
                    return Err(format!(
                        "{} does not wait for {} it depends on",
                        s.address, d
                    ));
                }
            }
            if delete_id.contains_key(d) && !write_id.contains_key(d) {
                return Err(format!(
                    "{} depends on {}, which the plan deletes",
                    s.address, d
                ));
            }
        }
    }
    // Deletes come after the deletes of what depends on them (reverse order).
    for r in &state.resources {
        let Some(&mine) = delete_id.get(&r.address) else {
            continue;
        };
        for d in &r.dependencies {
            if let Some(&theirs) = delete_id.get(d) {
                if theirs < mine {
                    return Err(format!(
                        "{} is deleted before {}, which depends on it",
                        d, r.address
                    ));
                }
            }
        }
    }
    // Every step is explained by a change, and every change has a reason.
    let explained: BTreeSet<&Address> = plan
        .changes
        .iter()
        .flat_map(|c| std::iter::once(&c.address).chain(c.replacement.iter()))
        .collect();
    for s in &plan.steps {
        if !explained.contains(&s.address) {
            return Err(format!(
                "step for {} has no change explaining it",
                s.address
            ));
        }
    }
    let stepped: BTreeSet<&Address> = plan.steps.iter().map(|s| &s.address).collect();
    for c in &plan.changes {
        if c.reason.trim().is_empty() {
            return Err(format!("change of {} has no reason", c.address));
        }
        let has_step = stepped.contains(&c.address)
            || c.replacement.as_ref().is_some_and(|r| stepped.contains(r));
        if !has_step {
            return Err(format!("change of {} has no step", c.address));
        }
    }
    Ok(())
}

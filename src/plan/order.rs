//! Turning proto-steps into ordered steps: dependency edges from the resource
//! graph (creates after what they depend on, deletes before what they depend
//! on), a deterministic topological order, and `--target` filtering.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::resource::{Address, Owner, ProviderKind, ResourceKind, Spec, Target};
use crate::state::State;

use super::{Change, Op, PlanError, Step};

#[derive(Debug, Clone)]
pub(crate) struct ProtoStep {
    pub(crate) op: Op,
    pub(crate) address: Address,
    pub(crate) provider: ProviderKind,
    pub(crate) spec: Option<Spec>,
    /// Resource dependencies (recorded in state).
    pub(crate) deps: Vec<Address>,
    /// Extra ordering constraints (indices into the proto-step list).
    pub(crate) after: Vec<usize>,
    pub(crate) health_gate: bool,
}

impl ProtoStep {
    pub(crate) fn create(
        address: Address,
        provider: ProviderKind,
        spec: Spec,
        deps: Vec<Address>,
    ) -> Self {
        ProtoStep {
            op: Op::Create,
            address,
            provider,
            spec: Some(spec),
            deps,
            after: vec![],
            health_gate: false,
        }
    }
    pub(crate) fn update(
        address: Address,
        provider: ProviderKind,
        spec: Spec,
        deps: Vec<Address>,
    ) -> Self {
        ProtoStep {
            op: Op::Update,
            address,
            provider,
            spec: Some(spec),
            deps,
            after: vec![],
            health_gate: false,
        }
    }
    pub(crate) fn delete(address: Address, provider: ProviderKind) -> Self {
        ProtoStep {
            op: Op::Delete,
            address,
            provider,
            spec: None,
            deps: vec![],
            after: vec![],
            health_gate: false,
        }
    }
}

/// Order the proto-steps: add the dependency edges, keep what `--target`
/// asks for, sort topologically and renumber. Changes without a kept step
/// are dropped.
pub(crate) fn finalize(
    changes: Vec<Change>,
    mut protos: Vec<ProtoStep>,
    state: &State,
    targets: &[Target],
) -> Result<(Vec<Change>, Vec<Step>), PlanError> {
    add_dependency_edges(&mut protos, state);
    check_resource_targets(&protos, state, targets)?;
    let keep = targeted(&protos, state, targets);
    let order = topological_order(&protos, &keep)?;
    let steps = renumber(protos, &keep, &order);
    let kept_addresses: BTreeSet<&Address> = steps.iter().map(|s| &s.address).collect();
    let changes = changes
        .into_iter()
        .filter(|c| {
            kept_addresses.contains(&c.address)
                || c.replacement
                    .as_ref()
                    .is_some_and(|r| kept_addresses.contains(r))
        })
        .collect();
    Ok((changes, steps))
}

/// A `--target` address must name a resource in the state or one this plan
/// would write: a misspelt machine name would otherwise plan nothing and
/// say "No changes" (names of machines still to be created are chosen by
/// the plan, the same each time, and shown by `capi plan`).
fn check_resource_targets(
    protos: &[ProtoStep],
    state: &State,
    targets: &[Target],
) -> Result<(), PlanError> {
    for t in targets {
        let Target::Resource(a) = t else { continue };
        if state.get(a).is_some() || protos.iter().any(|p| &p.address == a) {
            continue;
        }
        let mut near: Vec<String> = protos
            .iter()
            .map(|p| &p.address)
            .chain(state.resources.iter().map(|r| &r.address))
            .filter(|x| x.cluster_key() == a.cluster_key() && x.kind() == a.kind())
            .map(|x| x.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let more = near.len().saturating_sub(5);
        near.truncate(5);
        let hint = match (near.is_empty(), more) {
            (true, _) => "see `capi state list` and `capi plan` for the addresses".to_string(),
            (false, 0) => format!("addresses of that kind: {}", near.join(", ")),
            (false, n) => format!(
                "addresses of that kind: {} and {n} more (`capi state list`, `capi plan`)",
                near.join(", ")
            ),
        };
        return Err(PlanError::BadAddress {
            flag: "target",
            address: a.to_string(),
            message: format!("no resource in the state or in this plan has that address; {hint}"),
        });
    }
    Ok(())
}

/// Creates and updates wait for the writes of what they depend on (and for
/// a delete of the same address); deletes wait for the deletes of what
/// depends on them in state.
fn add_dependency_edges(protos: &mut [ProtoStep], state: &State) {
    let mut writes: BTreeMap<&Address, usize> = BTreeMap::new();
    let mut deletes: BTreeMap<&Address, usize> = BTreeMap::new();
    for (i, p) in protos.iter().enumerate() {
        match p.op {
            Op::Delete => {
                deletes.insert(&p.address, i);
            }
            _ => {
                writes.insert(&p.address, i);
            }
        }
    }
    // Who depends on whom, in state.
    let mut dependents: BTreeMap<&Address, Vec<&Address>> = BTreeMap::new();
    for r in &state.resources {
        for d in &r.dependencies {
            dependents.entry(d).or_default().push(&r.address);
        }
    }
    let mut extra: Vec<Vec<usize>> = vec![Vec::new(); protos.len()];
    for (i, p) in protos.iter().enumerate() {
        match p.op {
            Op::Create | Op::Update => {
                for d in &p.deps {
                    if let Some(&j) = writes.get(d) {
                        if j != i {
                            extra[i].push(j);
                        }
                    }
                }
                if let Some(&j) = deletes.get(&p.address) {
                    extra[i].push(j);
                }
            }
            Op::Delete => {
                for x in dependents.get(&p.address).into_iter().flatten() {
                    if let Some(&j) = deletes.get(x) {
                        if j != i {
                            extra[i].push(j);
                        }
                    }
                }
            }
        }
    }
    for (i, e) in extra.into_iter().enumerate() {
        protos[i].after.extend(e);
    }
}

/// The group that owns a step's machine: from the spec it creates or
/// updates, or from the state for a delete.
fn owner_of<'a>(p: &'a ProtoStep, state: &'a State) -> Option<&'a Owner> {
    match &p.spec {
        Some(spec) => spec.as_machine().map(|m| &m.owner),
        None => state
            .get(&p.address)
            .and_then(|r| r.attributes.as_machine())
            .map(|m| &m.owner),
    }
}

/// Does a target name this step's resource itself (a machine's bootstrap
/// data follows its machine, below)?
fn names(t: &Target, p: &ProtoStep, state: &State) -> bool {
    match t {
        Target::Resource(a) => p.address == *a,
        Target::Cluster(key) => p.address.cluster_key() == key,
        Target::Group { kind, name } => {
            owner_of(p, state).is_some_and(|o| o.kind == *kind && o.name == *name)
        }
    }
}

/// `--target`: keep the targets and everything they wait for (all steps
/// without targets). A targeted machine brings its bootstrap data.
fn targeted(protos: &[ProtoStep], state: &State, targets: &[Target]) -> Vec<bool> {
    if targets.is_empty() {
        return vec![true; protos.len()];
    }
    let hit = |p: &ProtoStep| targets.iter().any(|t| names(t, p, state));
    let machines: BTreeSet<(&str, &str)> = protos
        .iter()
        .filter(|p| hit(p))
        .filter_map(|p| Some((p.address.cluster_key(), p.address.name()?)))
        .collect();
    let mut keep = vec![false; protos.len()];
    let mut stack: Vec<usize> = protos
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            // Bootstrap data names its machine; deleted, it is named after it.
            let machine = match p.spec.as_ref() {
                Some(spec) => spec.as_bootstrap().map(|b| b.machine.as_str()),
                None if p.address.kind() == ResourceKind::Bootstrap => p.address.name(),
                None => None,
            };
            hit(p) || machine.is_some_and(|n| machines.contains(&(p.address.cluster_key(), n)))
        })
        .map(|(i, _)| i)
        .collect();
    while let Some(i) = stack.pop() {
        if keep[i] {
            continue;
        }
        keep[i] = true;
        stack.extend(protos[i].after.iter().copied());
    }
    keep
}

/// Kahn's algorithm over the kept steps; ties broken by creation order of
/// the proto-steps.
fn topological_order(protos: &[ProtoStep], keep: &[bool]) -> Result<Vec<usize>, PlanError> {
    let n = protos.len();
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in protos.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let mut seen = BTreeSet::new();
        for &j in &p.after {
            if keep[j] && seen.insert(j) {
                indegree[i] += 1;
                out[j].push(i);
            }
        }
    }
    let mut heap: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| keep[i] && indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = heap.pop() {
        order.push(i);
        for &k in &out[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                heap.push(Reverse(k));
            }
        }
    }
    let kept_count = keep.iter().filter(|k| **k).count();
    if order.len() != kept_count {
        let stuck: Vec<String> = (0..n)
            .filter(|&i| keep[i] && indegree[i] > 0)
            .map(|i| format!("{} ({:?})", protos[i].address, protos[i].op))
            .take(8)
            .collect();
        return Err(PlanError::Cycle(stuck.join(", ")));
    }
    Ok(order)
}

/// The steps in `order`, numbered from 0, waiting for the kept steps they
/// waited for (sorted, without duplicates). The proto-steps are consumed:
/// their specs move into the steps (a copy of every spec was a third of a
/// 100,000-machine apply's peak memory).
fn renumber(protos: Vec<ProtoStep>, keep: &[bool], order: &[usize]) -> Vec<Step> {
    let mut new_id = vec![usize::MAX; protos.len()];
    for (pos, &i) in order.iter().enumerate() {
        new_id[i] = pos;
    }
    let mut protos: Vec<Option<ProtoStep>> = protos.into_iter().map(Some).collect();
    order
        .iter()
        .enumerate()
        .map(|(pos, &i)| {
            let p = protos[i].take().expect("each step is ordered once");
            let mut after: Vec<usize> = p
                .after
                .iter()
                .filter(|&&j| keep[j])
                .map(|&j| new_id[j])
                .collect();
            after.sort_unstable();
            after.dedup();
            Step {
                id: pos,
                op: p.op,
                address: p.address,
                provider: p.provider,
                spec: p.spec,
                dependencies: p.deps,
                after,
                health_gate: p.health_gate,
            }
        })
        .collect()
}

/// Order changes like their first step, so the plan reads in execution order.
pub(crate) fn sort_changes(changes: &mut [Change], steps: &[Step]) {
    let mut first: BTreeMap<&Address, usize> = BTreeMap::new();
    for s in steps {
        first.entry(&s.address).or_insert(s.id);
    }
    let pos = |c: &Change| -> (usize, String) {
        let own = first.get(&c.address).copied().unwrap_or(usize::MAX);
        let rep = c
            .replacement
            .as_ref()
            .and_then(|r| first.get(r).copied())
            .unwrap_or(usize::MAX);
        let anchor = c
            .part_of
            .as_ref()
            .and_then(|p| first.get(p).copied())
            .unwrap_or(usize::MAX);
        (own.min(rep).min(anchor), c.address.to_string())
    };
    let keys: Vec<(usize, String)> = changes.iter().map(pos).collect();
    // The order as a permutation (stable: equal keys keep their order),
    // applied in place by swaps: a 10,000-machine plan's changes are
    // ~50 MB, and a sorted copy of them was the peak of an apply's memory.
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    permute(changes, order);
}

/// Put `order[i]`'s element at `i`, for every `i`, by following each cycle
/// of the permutation with swaps.
fn permute<T>(items: &mut [T], mut order: Vec<usize>) {
    const DONE: usize = usize::MAX;
    for start in 0..items.len() {
        let mut slot = start;
        while order[slot] != DONE {
            let from = order[slot];
            order[slot] = DONE;
            if from == start {
                break;
            }
            // `slot` takes `from`'s element; what `slot` held (the cycle's
            // first element) moves on to `from`, which is filled next.
            items.swap(slot, from);
            slot = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::permute;

    /// Every permutation of four elements, and larger ones from a fixed
    /// generator, end up as indexing would put them.
    #[test]
    fn permute_puts_each_element_where_the_order_says() {
        let mut orders: Vec<Vec<usize>> = Vec::new();
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let o = vec![a, b, c, d];
                        let mut seen = o.clone();
                        seen.sort_unstable();
                        seen.dedup();
                        if seen.len() == 4 {
                            orders.push(o);
                        }
                    }
                }
            }
        }
        assert_eq!(orders.len(), 24);
        let mut x: u64 = 7;
        for n in [0, 1, 2, 17, 1000] {
            // Fisher-Yates with a linear congruential generator.
            let mut o: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                o.swap(i, (x >> 33) as usize % (i + 1));
            }
            orders.push(o);
        }
        for order in orders {
            let items: Vec<String> = (0..order.len()).map(|i| format!("item {i}")).collect();
            let expected: Vec<String> = order.iter().map(|&i| items[i].clone()).collect();
            let mut got = items;
            permute(&mut got, order.clone());
            assert_eq!(got, expected, "order {order:?}");
        }
    }
}

//! Replacement pairing: after a group's waves are materialised, each delete
//! of a replaced machine is paired with a create of the same rollout, in
//! order, and the pair is reviewed as one replacement (with the bootstrap
//! diff between the two). Creates without a partner are reviewed as new
//! machines.

use std::collections::BTreeMap;

use crate::resource::{Address, ProviderKind, ResourceKind, Spec};

use super::super::{Action, Change, ReasonCode};
use super::group::is_replacement;
use super::report::Replacement;
use super::waves::Created;
use super::{attribute_diff, Builder};

/// Where the group's steps and delete changes are, by address (the last
/// one of each address). Only the group's own: indexing every step of the
/// plan for each group made planning quadratic in groups × machines.
struct Index {
    steps: BTreeMap<Address, usize>,
    delete_changes: BTreeMap<Address, usize>,
}

impl Builder<'_> {
    /// Turn (delete old, create new) pairs into replacements and record
    /// creates. Returns the pairs.
    pub(super) fn pair_replacements(
        &mut self,
        replaced: &[(Address, ReasonCode)],
        created: &[Created],
        group: &str,
        (steps_from, changes_from): (usize, usize),
    ) -> Vec<Replacement> {
        let mut olds = replaced.iter();
        let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut pairs = Vec::new();
        if created.is_empty() {
            return pairs;
        }
        // Index the steps and delete changes this group produced (the tail of the lists).
        let index = Index {
            steps: (steps_from..self.steps.len())
                .map(|i| (self.steps[i].address.clone(), i))
                .collect(),
            delete_changes: (changes_from..self.changes.len())
                .filter(|&i| self.changes[i].action == Action::Delete)
                .map(|i| (self.changes[i].address.clone(), i))
                .collect(),
        };
        for new in created {
            let paired = if is_replacement(new.reason) {
                olds.next()
            } else {
                None
            };
            match paired {
                Some((old_addr, code)) => {
                    self.record_replacement(&index, &mut shown, old_addr, *code, new);
                    pairs.push(Replacement {
                        old: old_addr.name().unwrap_or_default().to_string(),
                        new: new.address.name().unwrap_or_default().to_string(),
                        reason: *code,
                    });
                }
                None => self.record_new_machine(&index, new, group),
            }
        }
        pairs
    }

    /// The delete change of the old machine becomes a replacement; the new
    /// machine's bootstrap data is reviewed with it.
    fn record_replacement(
        &mut self,
        index: &Index,
        shown: &mut BTreeMap<(String, String), String>,
        old_addr: &Address,
        code: ReasonCode,
        new: &Created,
    ) {
        let name = new.address.name().unwrap_or_default();
        let bs_addr = new.address.sibling(ResourceKind::Bootstrap, Some(name));
        let old_spec = self.state.get(old_addr).map(|r| r.attributes.clone());
        if let Some(c) = index
            .delete_changes
            .get(old_addr)
            .map(|&i| &mut self.changes[i])
        {
            c.action = Action::Replace;
            c.reason_code = code;
            c.replacement = Some(new.address.clone());
            // Every step of a wave waits for the whole wave before it: an
            // old machine deleted in an earlier wave than its partner is
            // created in is gone before the new one exists; in the same
            // wave (OnDelete's `--replace`, a remediation) both run at once,
            // and it may be: as Cluster API's controllers do there, the
            // plan says the old one goes first (capacity can drop).
            c.delete_first = matches!((c.wave, new.wave), (Some(d), Some(n)) if d <= n);
            c.after = Some(new.spec.clone());
            c.attributes = attribute_diff(old_spec.as_ref(), Some(&new.spec));
            c.wave = new.wave;
        }
        let bootstrap_diff = self.bootstrap_diff(shown, old_addr, new);
        if let Some(&i) = index.delete_changes.get(old_addr) {
            self.changes[i].bootstrap_diff = bootstrap_diff;
        }
        self.changes.push(Change {
            address: bs_addr.clone(),
            kind: ResourceKind::Bootstrap,
            provider: ProviderKind::Local,
            action: Action::Create,
            reason_code: code,
            reason: "bootstrap data of the replacement machine".into(),
            replacement: None,
            delete_first: false,
            before: None,
            after: self.step_spec(index, &bs_addr),
            attributes: vec![],
            bootstrap_diff: None,
            part_of: Some(old_addr.clone()),
            group: None,
            wave: None,
        });
    }

    /// The unified diff between the old and the new machine's bootstrap
    /// documents, shown once per pair of documents.
    fn bootstrap_diff(
        &self,
        shown: &mut BTreeMap<(String, String), String>,
        old_addr: &Address,
        new: &Created,
    ) -> Option<String> {
        let old_name = old_addr.name().unwrap_or_default();
        let name = new.address.name().unwrap_or_default();
        let old_bs = self
            .state
            .get(&old_addr.sibling(ResourceKind::Bootstrap, Some(old_name)));
        let ob = old_bs.and_then(|r| r.attributes.as_bootstrap())?;
        if ob.sha256 == new.sha {
            return None;
        }
        let key = (ob.sha256.to_string(), new.sha.clone());
        if let Some(first) = shown.get(&key) {
            return Some(format!("(same bootstrap change as {first})\n"));
        }
        let before = self
            .state
            .documents
            .get(ob.sha256.as_str())
            .cloned()
            .unwrap_or_default();
        let after = self.documents.get(&new.sha).cloned().unwrap_or_default();
        shown.insert(key, old_addr.to_string());
        Some(unified_diff(&before, &after, old_name, name))
    }

    /// A create without a partner: a new machine and its bootstrap data.
    fn record_new_machine(&mut self, index: &Index, new: &Created, group: &str) {
        let name = new.address.name().unwrap_or_default();
        let bs_addr = new.address.sibling(ResourceKind::Bootstrap, Some(name));
        let text = match new.reason {
            ReasonCode::ScaleUp => format!("{group} needs more replicas"),
            ReasonCode::Failed | ReasonCode::Drifted => "replaces an unhealthy machine".into(),
            ReasonCode::Outdated => "new machine of the rollout".into(),
            _ => "new machine".into(),
        };
        let code = if new.reason == ReasonCode::ScaleUp
            && self
                .state
                .cluster_resources(new.address.cluster_key())
                .next()
                .is_none()
        {
            ReasonCode::New
        } else {
            new.reason
        };
        self.changes.push(Change {
            address: new.address.clone(),
            kind: ResourceKind::Machine,
            provider: index
                .steps
                .get(&new.address)
                .map(|&i| self.steps[i].provider)
                .unwrap_or(ProviderKind::Sim),
            action: Action::Create,
            reason_code: code,
            reason: text,
            replacement: None,
            delete_first: false,
            before: None,
            after: Some(new.spec.clone()),
            // Every attribute of `after`: listed where they are shown
            // (`Change::attribute_changes`), not held.
            attributes: vec![],
            bootstrap_diff: None,
            part_of: None,
            group: Some(group.to_string()),
            wave: new.wave,
        });
        self.changes.push(Change {
            address: bs_addr.clone(),
            kind: ResourceKind::Bootstrap,
            provider: ProviderKind::Local,
            action: Action::Create,
            reason_code: code,
            reason: "bootstrap data of the new machine".into(),
            replacement: None,
            delete_first: false,
            before: None,
            after: self.step_spec(index, &bs_addr),
            attributes: vec![],
            bootstrap_diff: None,
            part_of: Some(new.address.clone()),
            group: None,
            wave: None,
        });
    }

    /// The spec of the (last) step of `address`.
    fn step_spec(&self, index: &Index, address: &Address) -> Option<Spec> {
        index
            .steps
            .get(address)
            .and_then(|&i| self.steps[i].spec.clone())
    }
}

fn unified_diff(before: &str, after: &str, from: &str, to: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("bootstrap/{from}"), &format!("bootstrap/{to}"))
        .to_string()
}

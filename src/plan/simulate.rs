//! The state a plan leaves behind if every step succeeds, computed without
//! providers (pure). `capi upgrade --dry-run` uses it to plan each step of a
//! chained upgrade against the state the previous step would leave; the
//! benchmark uses it to build large states.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Op, Plan};
use crate::resource::Spec;
use crate::state::{Resource, State, Status};

/// Apply `plan` to `state` as if every step succeeded at time `now`.
pub fn simulate(state: &State, plan: &Plan, now: i64) -> State {
    let mut st = state.clone();
    if st.lineage.is_empty() {
        st.lineage = "00000000-0000-4000-8000-000000000000".into();
    }
    for (k, v) in &plan.documents {
        st.documents.insert(k.clone(), v.clone());
    }
    for s in &plan.steps {
        match s.op {
            Op::Delete => {
                st.remove(&s.address);
            }
            Op::Create | Op::Update => {
                let spec = s.spec.clone().expect("create/update steps carry a spec");
                let mut observed = st
                    .get(&s.address)
                    .map(|r| r.observed.clone())
                    .unwrap_or_default();
                match &spec {
                    Spec::Token(t) => {
                        observed.insert("expires_unix".into(), json!(now + t.ttl_seconds as i64));
                    }
                    Spec::Loadbalancer(_) => {
                        observed.insert_if_absent("endpoint", || json!("(known after apply)"));
                    }
                    Spec::Machine(_) => {
                        observed.insert("ready".into(), json!(true));
                    }
                    _ => {}
                }
                let sequence = match st.get(&s.address) {
                    Some(r) => r.sequence,
                    None => st.take_sequence(),
                };
                st.upsert(Resource {
                    address: s.address.clone(),
                    kind: s.address.kind(),
                    provider: s.provider,
                    status: Status::Ready,
                    attributes: spec,
                    observed,
                    sensitive: BTreeMap::new(),
                    dependencies: s.dependencies.clone(),
                    sequence,
                    error: None,
                });
            }
        }
    }
    st.serial += 1;
    st.gc_documents();
    st
}

//! The resource graph `capi graph` draws: the concrete resources (petgraph),
//! their dependencies and the ordering edges the executor also enforces
//! (from the plan's steps: the first control-plane machine before the token,
//! one control-plane machine at a time, workers after the control plane's
//! rollout), its checks (a cycle or a missing dependency is an error naming
//! the resources) and its DOT and indented-text renderings.

use std::collections::BTreeMap;
use std::fmt::Write;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::resource::Address;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum GraphError {
    #[error("{from} depends on {to}, which does not exist")]
    MissingDependency { from: Address, to: Address },
    #[error("dependency cycle: {0}")]
    Cycle(String),
}

/// Why one resource comes before another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// The dependent uses the dependency (recorded in the state).
    Dependency,
    /// Only the order the executor runs them in.
    Order,
}

/// Resources and their direct dependencies (edge: dependency → dependent).
#[derive(Debug, Default)]
pub(crate) struct ResourceGraph {
    pub(crate) graph: DiGraph<Address, Edge>,
    index: BTreeMap<Address, NodeIndex>,
}

impl ResourceGraph {
    pub(crate) fn new(nodes: &[(Address, Vec<Address>)]) -> Result<ResourceGraph, GraphError> {
        let mut g = ResourceGraph::default();
        for (a, _) in nodes {
            let i = g.graph.add_node(a.clone());
            g.index.insert(a.clone(), i);
        }
        for (a, deps) in nodes {
            for d in deps {
                let Some(&from) = g.index.get(d) else {
                    return Err(GraphError::MissingDependency {
                        from: a.clone(),
                        to: d.clone(),
                    });
                };
                g.graph.add_edge(from, g.index[a], Edge::Dependency);
            }
        }
        if let Err(c) = toposort(&g.graph, None) {
            return Err(GraphError::Cycle(g.graph[c.node_id()].to_string()));
        }
        Ok(g)
    }

    /// Add the executor's ordering edges (`first` runs before `then`)
    /// between resources of the graph that no dependency links already.
    pub(crate) fn with_order(
        mut self,
        edges: &[(Address, Address)],
    ) -> Result<ResourceGraph, GraphError> {
        for (first, then) in edges {
            let (Some(&f), Some(&t)) = (self.index.get(first), self.index.get(then)) else {
                continue;
            };
            if f != t && self.graph.find_edge(f, t).is_none() {
                self.graph.add_edge(f, t, Edge::Order);
            }
        }
        if let Err(c) = toposort(&self.graph, None) {
            return Err(GraphError::Cycle(self.graph[c.node_id()].to_string()));
        }
        Ok(self)
    }

    /// Dependencies first, ties broken by address.
    pub(crate) fn order(&self) -> Vec<&Address> {
        let mut indegree: BTreeMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|n| {
                (
                    n,
                    self.graph.neighbors_directed(n, petgraph::Incoming).count(),
                )
            })
            .collect();
        let mut ready: std::collections::BTreeSet<(&Address, NodeIndex)> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| (&self.graph[*n], *n))
            .collect();
        let mut out = Vec::new();
        while let Some(first) = ready.iter().next().cloned() {
            ready.remove(&first);
            out.push(first.0);
            for m in self.graph.neighbors_directed(first.1, petgraph::Outgoing) {
                let d = indegree.get_mut(&m).unwrap();
                *d -= 1;
                if *d == 0 {
                    ready.insert((&self.graph[m], m));
                }
            }
        }
        out
    }

    pub(crate) fn to_dot(&self) -> String {
        let mut s =
            String::from("digraph capi {\n  rankdir = \"LR\";\n  node [shape = \"box\"];\n");
        for a in self.order() {
            let _ = writeln!(s, "  \"{a}\";");
        }
        let mut edges: Vec<(String, String, Edge)> = self
            .graph
            .edge_indices()
            .filter_map(|e| Some((self.graph.edge_endpoints(e)?, self.graph[e])))
            .map(|((f, t), k)| (self.graph[f].to_string(), self.graph[t].to_string(), k))
            .collect();
        edges.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (f, t, k) in edges {
            let style = match k {
                Edge::Dependency => "",
                Edge::Order => " [style = \"dashed\"]",
            };
            let _ = writeln!(s, "  \"{f}\" -> \"{t}\"{style};");
        }
        s.push_str("}\n");
        s
    }

    /// Each resource in dependency order with what it depends on.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        for a in self.order() {
            let i = self.index[a];
            let mut deps: Vec<String> = self
                .graph
                .edges_directed(i, petgraph::Incoming)
                .map(|e| {
                    let from = &self.graph[petgraph::visit::EdgeRef::source(&e)];
                    match e.weight() {
                        Edge::Dependency => from.to_string(),
                        Edge::Order => format!("{from} (runs after it)"),
                    }
                })
                .collect();
            deps.sort();
            let _ = writeln!(s, "{a}");
            for d in deps {
                let _ = writeln!(s, "  <- {d}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_and_missing() {
        let a = Address::parse("c/network").unwrap();
        let b = Address::parse("c/loadbalancer").unwrap();
        assert!(matches!(
            ResourceGraph::new(&[(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])]),
            Err(GraphError::Cycle(_))
        ));
        assert!(matches!(
            ResourceGraph::new(&[(a.clone(), vec![Address::parse("c/pki").unwrap()])]),
            Err(GraphError::MissingDependency { .. })
        ));
        let g = ResourceGraph::new(&[(b.clone(), vec![a.clone()]), (a.clone(), vec![])]).unwrap();
        assert_eq!(g.order(), vec![&a, &b]);
        assert!(g.to_dot().contains("\"c/network\" -> \"c/loadbalancer\""));
        let t = Address::parse("c/token").unwrap();
        let g = ResourceGraph::new(&[(a.clone(), vec![]), (t.clone(), vec![])])
            .unwrap()
            .with_order(&[(a.clone(), t.clone())])
            .unwrap();
        assert!(g
            .to_dot()
            .contains("\"c/network\" -> \"c/token\" [style = \"dashed\"]"));
        assert!(g.to_text().contains("<- c/network (runs after it)"));
    }
}

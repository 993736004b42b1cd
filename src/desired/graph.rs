//! The resource graph `capi graph` draws: the concrete resources (petgraph),
//! its checks (a cycle or a missing dependency is an error naming the
//! resources) and its DOT and indented-text renderings.

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

/// Resources and their direct dependencies (edge: dependency → dependent).
#[derive(Debug, Default)]
pub(crate) struct ResourceGraph {
    pub(crate) graph: DiGraph<Address, ()>,
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
                g.graph.add_edge(from, g.index[a], ());
            }
        }
        if let Err(c) = toposort(&g.graph, None) {
            return Err(GraphError::Cycle(g.graph[c.node_id()].to_string()));
        }
        Ok(g)
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
        let mut edges: Vec<(String, String)> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(f, t)| (self.graph[f].to_string(), self.graph[t].to_string()))
            .collect();
        edges.sort();
        for (f, t) in edges {
            let _ = writeln!(s, "  \"{f}\" -> \"{t}\";");
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
                .neighbors_directed(i, petgraph::Incoming)
                .map(|n| self.graph[n].to_string())
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
    }
}

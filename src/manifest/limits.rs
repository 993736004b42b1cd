//! The documented limits on manifest input (docs/reliability.md, "Limits"):
//! what a hostile or mistaken manifest can make capi read, build and plan.
//! Each limit, when crossed, is an error naming the file and line.

/// Machines one group (KubeadmControlPlane, MachineDeployment, MachineSet)
/// may ask for. The performance goals plan 100,000 workers, possibly as
/// one MachineDeployment, so that is the bound.
pub(crate) const MAX_REPLICAS_PER_GROUP: i64 = 100_000;

/// Machines all the manifests together may ask for (one state): the
/// 100,000-worker benchmark, its control plane and a second cluster fit.
pub(crate) const MAX_MACHINES_PER_STATE: i64 = 200_000;

/// All the manifest files of one run together (`-f` files, directories
/// and standard input), as read. What capi keeps grows with the text (kinds
/// it does not use, such as ConfigMaps, are reduced to their keys as they
/// are read; the kinds it models are kept whole), so this bounds the memory
/// a run may take (docs/reliability.md: 0.17 GB for 50 MB of small
/// ConfigMaps, 3.3 GB for 50 MB of small Secrets). Real manifests (a
/// ClusterClass with its templates, 100 clusters) are a few MB.
pub(crate) const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Nesting of mappings and sequences, in any style (block or flow), aliases
/// included. Real Cluster API objects nest about 10 levels.
pub(crate) const MAX_DEPTH: usize = 100;

/// Alias expansion is limited as Kubernetes' YAML decoder (go-yaml v3)
/// limits it: once a document has produced more than
/// [`ALIAS_MIN_NODES`] nodes and more than [`ALIAS_MIN_ALIASED`] of them
/// through aliases, the share of aliased nodes may not exceed 99%, falling
/// linearly to 10% between [`ALIAS_RATIO_LOW`] and [`ALIAS_RATIO_HIGH`]
/// nodes. The expanded size thus stays a small multiple of the text.
pub(crate) const ALIAS_MIN_NODES: u64 = 1_000;
pub(crate) const ALIAS_MIN_ALIASED: u64 = 100;
pub(crate) const ALIAS_RATIO_LOW: u64 = 400_000;
pub(crate) const ALIAS_RATIO_HIGH: u64 = 4_000_000;

/// Problems printed in full; the rest are counted.
pub(crate) const MAX_REPORTED_PROBLEMS: usize = 100;

/// Go templates in ClusterClass patches and naming templates
/// (`enabledIf`, `valueFrom.template`, `naming.template`) run within these
/// limits; crossing one is the template's error, reported at the template's
/// line in the ClusterClass file.
///
/// What one function call may build: a string's bytes, or a list's or
/// dict's strings and keys plus one per element. A count (`repeat`'s,
/// `indent`'s width) is bounded by the same figure, even for an empty string.
/// Functions whose result can outgrow their arguments (`repeat`, `indent`,
/// `nindent`, `replace`, `join`, `splitList`, `toYaml`, `toJson`) check
/// before they build; the others are at most a small multiple of their
/// arguments, which [`MAX_TEMPLATE_WORK`] bounds.
pub(crate) const MAX_TEMPLATE_VALUE: usize = 1 << 20;

/// Nesting of `{{if}}`/`{{range}}`/`{{with}}` blocks, of parentheses in a
/// pipeline, and of the lists and dicts a template builds.
pub(crate) const MAX_TEMPLATE_NESTING: usize = 100;

/// The text one execution of a template writes.
pub(crate) const MAX_TEMPLATE_OUTPUT: usize = 1 << 20;

/// The values one execution reads and builds, all together (every field or
/// variable read, literal and function result, measured as for
/// [`MAX_TEMPLATE_VALUE`]): bounds the time and memory of a template that
/// loops over large values.
pub(crate) const MAX_TEMPLATE_WORK: usize = 16 << 20;

/// `{{range}}` iterations of one execution, nested loops included.
pub(crate) const MAX_TEMPLATE_ITERATIONS: usize = 100_000;

/// The share of a document's nodes that may come from aliases, given how
/// many nodes it has produced.
pub(crate) fn allowed_alias_ratio(nodes: u64) -> f64 {
    if nodes <= ALIAS_RATIO_LOW {
        0.99
    } else if nodes >= ALIAS_RATIO_HIGH {
        0.10
    } else {
        let span = (ALIAS_RATIO_HIGH - ALIAS_RATIO_LOW) as f64;
        0.99 - 0.89 * ((nodes - ALIAS_RATIO_LOW) as f64 / span)
    }
}

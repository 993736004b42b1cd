//! One file per command. A command takes resolved settings (never raw
//! arguments or the environment), strings together the steps of
//! [`super::pipeline`] it needs, prints through the [`super::output::Printer`]
//! and returns an [`super::ExitStatus`].

pub(crate) mod apply;
pub(crate) mod completion;
pub(crate) mod describe;
pub(crate) mod destroy;
pub(crate) mod drift;
pub(crate) mod force_unlock;
pub(crate) mod generate;
pub(crate) mod graph;
pub(crate) mod import;
pub(crate) mod kubeconfig;
pub(crate) mod plan;
pub(crate) mod rekey;
pub(crate) mod show;
pub(crate) mod state;
pub(crate) mod state_edit;
pub(crate) mod upgrade;
pub(crate) mod upgrade_targets;
pub(crate) mod validate;

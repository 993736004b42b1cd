// CLI and plan errors carry source spans and help for miette; they are
// built on cold paths only, so their size is not worth boxing them.
#![allow(clippy::result_large_err)]
//! `capi`: Terraform's plan/apply workflow for Kubernetes Cluster API manifests.
//!
//! Data flows one way: [`manifest`] → [`topology`] (ClusterClass expansion)
//! → [`desired`] → [`plan`] → [`apply`] → [`provider`] and [`state`]. The
//! crate is a stack of floors (see docs/architecture.md): the pure ones
//! ([`resource`], [`infra`], [`manifest`], [`topology`], [`bootstrap`],
//! [`desired`], the state model, [`plan`]) never
//! import the I/O ones ([`provider`], [`apply`], the state store, [`cli`]);
//! tests/it/layers.rs checks it.

pub mod apply;
pub mod bootstrap;
pub mod cli;
pub mod desired;
pub(crate) mod infra;
pub mod manifest;
pub mod plan;
pub mod provider;
pub mod resource;
pub mod state;
pub mod topology;
pub mod util;

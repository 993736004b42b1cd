// CLI and plan errors carry source spans and help for miette; they are
// built on cold paths only, so their size is not worth boxing them.
#![allow(clippy::result_large_err)]
//! `capi`: Terraform's plan/apply workflow for Kubernetes Cluster API manifests.
//!
//! Data flows one way: [`manifest`] → [`graph`] → [`plan`] → [`apply`] →
//! [`state`]. Only `apply`, `provider`, `state` (store and lock) and `cli` do I/O.

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
pub mod util;

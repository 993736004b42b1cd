//! The integration-test binary: CLI snapshot tests, scenario folders, crash
//! and lock tests against real processes, and the real-provider tests.

// Tests say on stderr what they skip and why.
#![allow(clippy::print_stderr)]

mod common;

mod bootstrap;
mod ci;
mod cli;
mod crash;
mod docker;
mod encryption;
mod etcd;
mod etcd_tls;
mod executor;
mod hardening;
mod hostile_manifests;
mod kill_campaign;
mod layers;
mod lock;
pub mod manifests;
mod openstack;
mod proptests;
mod rollout;
mod safety;
mod scenarios;
pub mod schema;
mod state_edit;
mod terminal;
mod topology;

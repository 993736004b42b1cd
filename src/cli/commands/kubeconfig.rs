//! `capi kubeconfig CLUSTER`: an admin kubeconfig for a cluster, like
//! `clusterctl get kubeconfig`: a client certificate (CN kubernetes-admin,
//! O system:masters) signed by the cluster CA in the state; the server is the
//! control-plane endpoint. With `--json` it must go to a file (`-o`); the
//! event names the file and the server, never the key.

use std::path::Path;

use crate::apply::KubeconfigError;
use crate::resource::{Address, ClusterId, ResourceKind};
use crate::state::files;

use super::super::cluster_name;
use super::super::json::JsonEvent;
use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

pub(crate) fn run(
    g: &GlobalSettings,
    cluster: &str,
    namespace: Option<&str>,
    output: Option<&Path>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let state = g.store()?.load()?.ok_or_else(|| {
        CliError::Usage(format!(
            "no state at {}: apply a cluster first",
            g.state_arg.display()
        ))
    })?;
    let key = cluster_name::resolve(cluster, namespace, &state.cluster_keys())?;
    let cluster = key.as_str();
    let id = ClusterId::from_key(cluster);
    if state
        .get(&Address::new(&id, ResourceKind::Pki, None))
        .is_none()
    {
        return Err(CliError::Usage(format!(
            "no cluster {cluster:?} with certificates in the state; clusters: {}",
            state.cluster_keys().join(", ")
        )));
    }
    let kc = crate::apply::admin_kubeconfig(&state, &id, g.state_key.as_deref()).map_err(
        |e| match e {
            KubeconfigError::Secret(why) => CliError::Usage(format!(
                "cluster {cluster:?}: the admin kubeconfig is signed with the cluster CA key: {why}. Nothing was written"
            )),
            e => CliError::Usage(format!("cluster {cluster:?}: {e}; run `capi apply` first")),
        },
    )?;
    if p.json && output.is_none() {
        return Err(CliError::Usage(
            "the kubeconfig holds the cluster's admin key, and --json output never holds secrets: write it with -o FILE (the event then names the file)".into(),
        ));
    }
    match output {
        None => p.data(&kc),
        Some(path) => {
            if let Some(target) = files::symlink_target(path) {
                return Err(CliError::Usage(format!(
                    "{} is a symlink (to {}): refusing to write the admin kubeconfig, which holds the cluster's admin key, through it. Write to the target itself, or remove the link",
                    path.display(),
                    target.display()
                )));
            }
            let existed = path.exists();
            files::write_private_atomic(path, kc.as_bytes())
                .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
            if p.json {
                let server = kc
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("server: "))
                    .unwrap_or_default();
                p.emit(&JsonEvent::Kubeconfig {
                    cluster,
                    path: &path.display().to_string(),
                    server,
                });
                return Ok(ExitStatus::Success);
            }
            p.message(&format!(
                "{} the admin kubeconfig of {cluster} {} {} (mode 0600).",
                if existed { "Replaced" } else { "Wrote" },
                if existed { "in" } else { "to" },
                path.display()
            ));
        }
    }
    Ok(ExitStatus::Success)
}

//! `capi kubeconfig CLUSTER`: an admin kubeconfig for a cluster, like
//! `clusterctl get kubeconfig`: a client certificate (CN kubernetes-admin,
//! O system:masters) signed by the cluster CA in the state; the server is the
//! control-plane endpoint.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::resource::{Address, ClusterId, ResourceKind};
use crate::state::StateStore;

use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

pub(crate) fn run(
    g: &GlobalSettings,
    cluster: &str,
    output: Option<&Path>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let state = StateStore::new(&g.state).load()?.ok_or_else(|| {
        CliError::Usage(format!(
            "no state at {}: apply a cluster first",
            g.state.display()
        ))
    })?;
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
    let kc = crate::apply::admin_kubeconfig(&state, &id).map_err(|e| {
        CliError::Usage(format!("cluster {cluster:?}: {e}; run `capi apply` first"))
    })?;
    match output {
        None => p.data(&kc),
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
            f.write_all(kc.as_bytes())
                .map_err(|e| CliError::Message(e.to_string()))?;
            p.message(&format!(
                "Wrote the admin kubeconfig of {cluster} to {} (mode 0600).",
                path.display()
            ));
        }
    }
    Ok(ExitStatus::Success)
}

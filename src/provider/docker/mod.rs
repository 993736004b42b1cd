//! The Docker provider: clusters as containers on a Docker Engine, with
//! Cluster API Docker provider (CAPD) semantics, through `bollard`.

use super::ProviderError;

/// Settings from the environment and command line.
#[derive(Debug, Clone, Default)]
pub struct DockerSettings {
    /// `DOCKER_HOST`; `None` means the default socket.
    pub host: Option<String>,
}

pub async fn connect(
    _settings: &DockerSettings,
) -> Result<std::sync::Arc<dyn super::Provider>, ProviderError> {
    Err(ProviderError::Unavailable(
        "the Docker provider is not available in this build yet; rehearse with --provider sim"
            .into(),
    ))
}

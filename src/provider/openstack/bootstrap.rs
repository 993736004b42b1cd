//! How bootstrap data reaches an OpenStack machine: as CAPO does it, the
//! cloud-config (every reference resolved) is the server's `user_data`, and
//! cloud-init in the image runs it at first boot. capi hands it over and
//! cannot watch it run: a machine's bootstrap is recorded as
//! [`DELIVERED`], not succeeded. Since the data goes in once, with the
//! server create, bootstrap cannot run twice on one server.
//!
//! Bootstrap tokens are not registered by the provider (nothing in the cloud
//! reaches the cluster's API server for it): the token travels inside the
//! cloud-config.

use base64::Engine;

use crate::provider::{Observed, OpInput};

/// What a machine's `bootstrap` attribute says once its server is ACTIVE.
pub(super) const DELIVERED: &str = "delivered";

/// The server's `user_data`: the cloud-config, base64-encoded as Nova
/// takes it.
pub(super) fn user_data(input: &OpInput<'_>) -> String {
    base64::engine::general_purpose::STANDARD.encode(input.bootstrap.unwrap_or_default())
}

/// Registering a bootstrap token: nothing to do in the cloud.
pub(super) fn register_token() -> Observed {
    Observed::new()
}

//! Encryption at rest from the CLI's side: `capi state rekey` (every
//! sensitive value sealed again under a new key, or opened to plaintext),
//! and the sealing of plaintext values before a command writes the state
//! with a key given (said once, when it happens).

use crate::state::{State, StateKey, StateStore};

use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

/// Before a write with a key given: seal the state's plaintext sensitive
/// values (an older or unencrypted state), saying so. Whether any were.
pub(crate) fn seal_for_write(store: &StateStore, state: &mut State, p: &Printer) -> bool {
    let Some(key) = store.key() else {
        return false;
    };
    let n = state.seal_plaintext(key);
    if n > 0 {
        p.message(&format!(
            "Encrypting {n} plaintext sensitive value(s) of the state with the state key {} (AES-256-GCM): from now on, commands that need them need this key.",
            key.id()
        ));
    }
    n > 0
}

/// `capi state rekey`: open every sensitive value with the current key
/// (`--state-key-file`/`CAPI_STATE_KEY`; none for plaintext values) and seal
/// it with `new`, or leave it in plaintext (`None`: `--to-plaintext`).
pub(crate) fn run(
    g: &GlobalSettings,
    new: Option<StateKey>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let mut store = g.store()?;
    let _lock = store.lock("state rekey", g.lock_timeout)?;
    // With a key given, the load checks that it opens every value.
    let mut state = store.load()?.ok_or_else(|| {
        CliError::Usage(format!("there is no state at {}", g.state_arg.display()))
    })?;
    let before = state.sealed_key_ids();
    let n = state
        .rekey(g.state_key.as_deref(), new.as_ref())
        .map_err(|e| CliError::Usage(format!("{e}. Nothing was changed")))?;
    let from = match before.is_empty() {
        true => "plaintext".to_string(),
        false => format!("key {}", before.into_iter().collect::<Vec<_>>().join(", ")),
    };
    if n == 0 {
        p.message(
            "The state holds no sensitive values: nothing to re-encrypt; nothing was changed.",
        );
        return Ok(ExitStatus::Success);
    }
    state.serial += 1;
    store.save(&state)?;
    match &new {
        Some(k) => p.message(&format!(
            "Re-encrypted {n} sensitive value(s) of the state from {from} to the key {} (serial {}). Use the new key from now on; the old one no longer opens this state.{}",
            k.id(),
            state.serial,
            store.backup_note()
        )),
        None => p.warning(&format!(
            "DECRYPTED {n} sensitive value(s) of the state (from {from}): the state now holds the CA keys and tokens IN PLAINTEXT (serial {}). Anyone who can read it can read them; encrypt it again with `capi state rekey --new-key-file FILE`.{}",
            state.serial,
            store.backup_note()
        )),
    }
    Ok(ExitStatus::Success)
}

//! `capi force-unlock ID`.

use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

pub(crate) fn run(g: &GlobalSettings, id: &str, p: &Printer) -> Result<ExitStatus, CliError> {
    let info = g.store()?.force_unlock(id)?;
    p.message(&format!(
        "Removed the stale lock record {} (operation {:?} by {}, pid {}).",
        info.id, info.operation, info.who, info.pid
    ));
    Ok(ExitStatus::Success)
}

//! `capi force-unlock ID`.

use crate::state::StateLock;

use super::super::args::GlobalArgs;
use super::super::output::Printer;
use super::super::CliError;

pub(crate) fn run(g: &GlobalArgs, id: &str, p: &Printer) -> Result<u8, CliError> {
    let info = StateLock::force_unlock(&g.state, id)?;
    p.message(&format!(
        "Removed the stale lock record {} (operation {:?} by {}, pid {}).",
        info.id, info.operation, info.who, info.pid
    ));
    Ok(0)
}

//! `capi state list` and `capi state show ADDRESS` (text, `--json`, or
//! `-o json|yaml` for one resource).

use crate::resource::Address;

use super::super::args::OutputFormat;
use super::super::json::JsonEvent;
use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};
use super::show::public_resource;

pub(crate) fn list(g: &GlobalSettings, p: &Printer) -> Result<ExitStatus, CliError> {
    let state = g
        .store()?
        .load()?
        .unwrap_or_else(crate::state::State::empty);
    if p.json {
        p.emit(&JsonEvent::StateList {
            addresses: state.resources.iter().map(|r| r.address.as_str()).collect(),
        });
        return Ok(ExitStatus::Success);
    }
    let mut out = String::new();
    for r in &state.resources {
        out.push_str(r.address.as_str());
        out.push('\n');
    }
    p.data(&out);
    Ok(ExitStatus::Success)
}

pub(crate) fn show(
    g: &GlobalSettings,
    address: &str,
    output: OutputFormat,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let a = Address::parse(address).map_err(|e| CliError::Usage(e.to_string()))?;
    let state = g
        .store()?
        .load()?
        .unwrap_or_else(crate::state::State::empty);
    let Some(r) = state.get(&a) else {
        return Err(CliError::Usage(format!(
            "{address} is not in the state (see `capi state list`)"
        )));
    };
    let v = public_resource(r);
    if p.json {
        p.emit(&JsonEvent::StateResource {
            resource: Box::new(v),
        });
        return Ok(ExitStatus::Success);
    }
    p.document(output, &v);
    Ok(ExitStatus::Success)
}

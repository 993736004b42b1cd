//! Machine-readable output: one JSON object per line, each with a `type`.
//! Documented in docs/json-output.md.

use serde_json::{json, Value};

use crate::apply::ApplyReport;
use crate::manifest::{Problem, Severity};
use crate::plan::{Change, Plan};

pub(crate) fn version() -> Value {
    json!({"type": "version", "capi_version": env!("CARGO_PKG_VERSION"), "format_version": 1})
}

pub(crate) fn diagnostic(p: &Problem) -> Value {
    json!({
        "type": "diagnostic",
        "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "message": p.message,
        "help": p.help,
        "file": p.file,
        "line": p.pos.line,
        "column": p.pos.col,
    })
}

pub(crate) fn warning(message: &str) -> Value {
    json!({"type": "diagnostic", "severity": "warning", "message": message})
}

pub(crate) fn planned_change(c: &Change) -> Value {
    json!({
        "type": "planned_change",
        "address": c.address,
        "resource_type": c.kind,
        "provider": c.provider,
        "action": c.action,
        "actions": c.action.terraform_actions(),
        "reason_code": c.reason_code,
        "reason": c.reason,
        "replacement": c.replacement,
        "part_of": c.part_of,
        "group": c.group,
        "wave": c.wave,
        "before": c.before,
        "after": c.after,
        "attributes": c.attributes,
        "bootstrap_diff": c.bootstrap_diff,
    })
}

pub(crate) fn plan(p: &Plan) -> Value {
    json!({"type": "plan", "plan": p})
}

pub(crate) fn change_summary(p: &Plan, operation: &str) -> Value {
    json!({
        "type": "change_summary",
        "operation": operation,
        "add": p.summary.add,
        "change": p.summary.change,
        "replace": p.summary.replace,
        "remove": p.summary.destroy,
    })
}

pub(crate) fn apply_summary(r: &ApplyReport, operation: &str) -> Value {
    json!({
        "type": "apply_summary",
        "operation": operation,
        "add": r.added,
        "change": r.changed,
        "replace": r.replaced,
        "remove": r.destroyed,
        "failed": r.failures.iter().map(|(a, e)| json!({"address": a, "error": e.to_string()})).collect::<Vec<_>>(),
        "interrupted": r.interrupted,
        "elapsed_seconds": r.elapsed.as_secs_f64(),
    })
}

/// Emit a plan as events: version, diagnostics, planned changes, the plan, the summary.
pub(crate) fn emit_plan(printer: &super::output::Printer, p: &Plan, operation: &str) {
    printer.event(&version());
    emit_plan_body(printer, p, operation);
}

/// The plan events without the leading version line.
pub(crate) fn emit_plan_body(printer: &super::output::Printer, p: &Plan, operation: &str) {
    for w in &p.warnings {
        printer.event(&warning(w));
    }
    for d in &p.drift {
        printer.event(&json!({"type": "resource_drift", "address": d.address, "kind": d.kind, "detail": d.detail, "attributes": d.attributes}));
    }
    for c in &p.changes {
        printer.event(&planned_change(c));
    }
    printer.event(&plan(p));
    printer.event(&change_summary(p, operation));
}

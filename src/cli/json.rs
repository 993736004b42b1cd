//! Machine-readable output: one JSON object per line, each with a `type`.
//! Every line is a [`JsonEvent`]; its JSON Schema is generated from this
//! enum (`capi schema events`, checked in as docs/json-output.schema.json, a
//! test fails when it is stale). Documented in docs/json-output.md.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::apply::ApplyReport;
use crate::manifest::{Problem, Severity};
use crate::plan::{Action, AttributeChange, Change, Op, Plan, ReasonCode};
use crate::resource::{Address, DriftEntry, DriftKind, ProviderKind, ResourceKind, Spec};

use super::output::Printer;
use super::progress::verbs;

/// The version of this event format.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// One line of a `--json` stream.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum JsonEvent<'a> {
    /// First line of plan/apply/destroy/drift/upgrade.
    Version {
        capi_version: &'static str,
        format_version: u32,
    },
    /// A warning or an error.
    Diagnostic {
        severity: DiagnosticSeverity,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        help: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<u32>,
    },
    /// Refresh found a change made outside capi.
    ResourceDrift {
        address: &'a Address,
        kind: DriftKind,
        detail: &'a str,
        attributes: &'a [AttributeChange],
    },
    /// One resource change of the plan.
    PlannedChange(PlannedChange<'a>),
    /// The whole plan (see `capi schema plan`).
    Plan { plan: &'a Plan },
    /// After the plan.
    ChangeSummary {
        operation: &'a str,
        add: usize,
        change: usize,
        replace: usize,
        remove: usize,
    },
    /// An operation starts.
    ApplyStart { address: &'a Address, action: Op },
    /// Still in flight, every 10 seconds of its life.
    ApplyProgress {
        address: &'a Address,
        action: Op,
        elapsed_seconds: f64,
    },
    /// It finished.
    ApplyComplete {
        address: &'a Address,
        action: Op,
        elapsed_seconds: f64,
    },
    /// It failed (secrets redacted).
    ApplyErrored {
        address: &'a Address,
        action: Op,
        error: String,
        elapsed_seconds: f64,
    },
    /// It did not run because something it waits for failed.
    ApplySkipped {
        address: &'a Address,
        action: Op,
        because: &'a Address,
    },
    /// The first Ctrl-C.
    Interrupted {},
    /// Last line of apply/destroy/upgrade.
    ApplySummary {
        operation: &'a str,
        add: usize,
        change: usize,
        replace: usize,
        remove: usize,
        failed: Vec<FailedOperation<'a>>,
        interrupted: bool,
        elapsed_seconds: f64,
    },
    /// Last line of `capi drift`.
    DriftSummary {
        checked: usize,
        drifted: usize,
        elapsed_seconds: f64,
    },
    /// `capi show --json`.
    State {
        lineage: &'a str,
        serial: u64,
        capi_version: &'a str,
        /// Resources with sensitive values masked.
        resources: Vec<crate::state::Resource>,
    },
    /// `capi state list --json`.
    StateList { addresses: Vec<&'a str> },
    /// `capi state show ADDRESS --json`: one resource, sensitive values masked.
    StateResource {
        resource: Box<crate::state::Resource>,
    },
    /// `capi validate --json`.
    Valid {
        objects: usize,
        clusters: usize,
        machines: u32,
        warnings: usize,
    },
    /// `capi upgrade`: a step of a chained upgrade starts.
    UpgradeStep {
        cluster: &'a str,
        step: usize,
        of: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
    },
    /// `capi describe cluster NAME --json`: the tree's rows, each with its
    /// `name`, `depth` and non-empty cells (`replicas`, `available`, `ready`,
    /// `up_to_date`, `status`, `reason`, `message`).
    Describe {
        cluster: &'a str,
        rows: Vec<super::commands::describe::DescribeRow>,
    },
    /// `capi kubeconfig NAME -o FILE --json`: the file written (mode 0600).
    Kubeconfig {
        cluster: &'a str,
        path: &'a str,
        server: &'a str,
    },
    /// `capi generate cluster NAME --json`: the objects rendered
    /// (`Kind/namespace/name`, ClusterClass expansions included) and the
    /// manifest, left out when it holds a Secret.
    Generated {
        cluster: &'a str,
        template: &'a str,
        objects: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        manifest: Option<&'a str>,
    },
    /// `capi upgrade` without `--to`: where the cluster can go next.
    UpgradeTargets {
        cluster: &'a str,
        /// The lowest version its control plane runs.
        control_plane: String,
        /// The lowest version its workers run.
        #[serde(skip_serializing_if = "Option::is_none")]
        workers: Option<String>,
        targets: Vec<super::commands::upgrade_targets::Candidate>,
    },
    /// `capi import ADDRESS ID --json`: the object found and recorded as an
    /// interrupted create, which the next apply adopts.
    Imported {
        address: &'a Address,
        provider: ProviderKind,
        /// The object's id at the provider.
        id: &'a str,
        /// The object, as a person would name it.
        object: &'a str,
        /// The state's serial after the import.
        serial: u64,
    },
    /// A `--health-check` command ran between rollout waves.
    HealthCheck {
        cluster: &'a str,
        /// The machine the check ran after.
        after: &'a str,
        attempt: u32,
        passed: bool,
        output: &'a str,
    },
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DiagnosticSeverity {
    Error,
    Warning,
}

/// A failed operation in an [`JsonEvent::ApplySummary`].
#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailedOperation<'a> {
    address: &'a Address,
    error: String,
}

/// A [`JsonEvent::PlannedChange`]: Terraform's resource change, with capi's
/// reason and rollout position.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlannedChange<'a> {
    address: &'a Address,
    resource_type: ResourceKind,
    provider: ProviderKind,
    action: Action,
    /// Terraform's list, in the order they run: a replacement is `["create", "delete"]`, or `["delete", "create"]` when the old resource goes first or in the same rollout wave (`delete_first` in the plan).
    actions: &'static [&'static str],
    reason_code: ReasonCode,
    reason: &'a str,
    replacement: Option<&'a Address>,
    /// Bootstrap data: its machine.
    part_of: Option<&'a Address>,
    group: Option<&'a str>,
    wave: Option<u32>,
    before: Option<&'a Spec>,
    after: Option<&'a Spec>,
    attributes: std::borrow::Cow<'a, [AttributeChange]>,
    /// Unified diff of the cloud-config.
    bootstrap_diff: Option<&'a str>,
}

impl<'a> JsonEvent<'a> {
    pub(crate) fn version() -> JsonEvent<'static> {
        JsonEvent::Version {
            capi_version: env!("CARGO_PKG_VERSION"),
            format_version: FORMAT_VERSION,
        }
    }

    pub(crate) fn diagnostic(p: &Problem) -> JsonEvent<'static> {
        JsonEvent::Diagnostic {
            severity: match p.severity {
                Severity::Error => DiagnosticSeverity::Error,
                Severity::Warning => DiagnosticSeverity::Warning,
            },
            message: p.message.clone(),
            help: Some(p.help.clone()),
            file: Some(p.file.clone()),
            line: Some(p.pos.line),
            column: Some(p.pos.col),
        }
    }

    /// A diagnostic with a message only.
    pub(crate) fn message(severity: DiagnosticSeverity, message: String) -> JsonEvent<'static> {
        JsonEvent::Diagnostic {
            severity,
            message,
            help: None,
            file: None,
            line: None,
            column: None,
        }
    }

    pub(crate) fn drift(d: &'a DriftEntry) -> JsonEvent<'a> {
        JsonEvent::ResourceDrift {
            address: &d.address,
            kind: d.kind,
            detail: &d.detail,
            attributes: &d.attributes,
        }
    }

    pub(crate) fn planned_change(c: &'a Change) -> JsonEvent<'a> {
        JsonEvent::PlannedChange(PlannedChange {
            address: &c.address,
            resource_type: c.kind,
            provider: c.provider,
            action: c.action,
            actions: c.shown().terraform_actions(),
            reason_code: c.reason_code,
            reason: &c.reason,
            replacement: c.replacement.as_ref(),
            part_of: c.part_of.as_ref(),
            group: c.group.as_deref(),
            wave: c.wave,
            before: c.before.as_ref(),
            after: c.after.as_ref(),
            attributes: c.attribute_changes(),
            bootstrap_diff: c.bootstrap_diff.as_deref(),
        })
    }

    pub(crate) fn change_summary(p: &'a Plan, operation: &'a str) -> JsonEvent<'a> {
        JsonEvent::ChangeSummary {
            operation,
            add: p.summary.add,
            change: p.summary.change,
            replace: p.summary.replace,
            remove: p.summary.destroy,
        }
    }

    pub(crate) fn apply_summary(r: &'a ApplyReport, operation: &'a str) -> JsonEvent<'a> {
        JsonEvent::ApplySummary {
            operation,
            add: r.added,
            change: r.changed,
            replace: r.replaced,
            remove: r.destroyed,
            failed: r
                .failures
                .iter()
                .map(|(address, error)| FailedOperation {
                    address,
                    error: error.to_string(),
                })
                .collect(),
            interrupted: r.interrupted,
            elapsed_seconds: r.elapsed.as_secs_f64(),
        }
    }
}

/// Terraform's machine-readable UI puts `@level`, `@message` and
/// `@timestamp` on every line; capi's lines carry them too, before `type`.
impl JsonEvent<'_> {
    /// `info`, `warn` or `error`.
    pub(crate) fn level(&self) -> &'static str {
        match self {
            JsonEvent::Diagnostic {
                severity: DiagnosticSeverity::Error,
                ..
            }
            | JsonEvent::ApplyErrored { .. } => "error",
            JsonEvent::Diagnostic { .. } | JsonEvent::ResourceDrift { .. } => "warn",
            JsonEvent::ApplySummary { failed, .. } if !failed.is_empty() => "error",
            _ => "info",
        }
    }

    /// The line a person would read for this event.
    pub(crate) fn human(&self) -> String {
        match self {
            JsonEvent::Version { capi_version, .. } => format!("capi {capi_version}"),
            JsonEvent::Diagnostic { message, .. } => message.clone(),
            JsonEvent::ResourceDrift {
                address, detail, ..
            } => format!("{address}: drift: {detail}"),
            JsonEvent::PlannedChange(c) => {
                let verb = match c.action {
                    Action::Create => "create",
                    Action::Update => "update in-place",
                    Action::Replace => "replace",
                    Action::Delete => "destroy",
                };
                format!("{}: Plan to {verb}", c.address)
            }
            JsonEvent::Plan { plan } => format!("plan: {} steps", plan.steps.len()),
            JsonEvent::ChangeSummary {
                add,
                change,
                replace,
                remove,
                ..
            } => format!(
                "Plan: {add} to add, {change} to change, {replace} to replace, {remove} to destroy."
            ),
            JsonEvent::ApplyStart { address, action } => {
                format!("{address}: {}", verbs(*action).0)
            }
            JsonEvent::ApplyProgress {
                address,
                action,
                elapsed_seconds,
            } => format!(
                "{address}: {} [{:.0}s elapsed]",
                verbs(*action).1,
                elapsed_seconds
            ),
            JsonEvent::ApplyComplete {
                address,
                action,
                elapsed_seconds,
            } => format!(
                "{address}: {} after {:.0}s",
                verbs(*action).2,
                elapsed_seconds
            ),
            JsonEvent::ApplyErrored { address, error, .. } => format!("{address}: {error}"),
            JsonEvent::ApplySkipped {
                address, because, ..
            } => format!("{address}: skipped, it depends on {because}, which failed"),
            JsonEvent::Interrupted {} => "Interrupt received: finishing what is in flight".into(),
            JsonEvent::ApplySummary {
                add,
                change,
                replace,
                remove,
                failed,
                interrupted,
                operation,
                ..
            } => format!(
                "{} {}! Resources: {add} added, {change} changed, {replace} replaced, {remove} destroyed, {} failed.",
                if *operation == "destroy" { "Destroy" } else { "Apply" },
                if !failed.is_empty() {
                    "failed"
                } else if *interrupted {
                    "interrupted"
                } else {
                    "complete"
                },
                failed.len()
            ),
            JsonEvent::DriftSummary { checked, drifted, .. } => {
                format!("{drifted} of {checked} resources drifted")
            }
            JsonEvent::State { resources, serial, .. } => {
                format!("state serial {serial}: {} resources", resources.len())
            }
            JsonEvent::StateList { addresses } => format!("{} resources", addresses.len()),
            JsonEvent::StateResource { resource } => resource.address.to_string(),
            JsonEvent::Valid {
                objects, clusters, ..
            } => format!("valid: {objects} objects, {clusters} clusters"),
            JsonEvent::UpgradeStep {
                cluster, step, of, to, ..
            } => format!("{cluster}: upgrade step {step} of {of}, to {to}"),
            JsonEvent::Kubeconfig { cluster, path, .. } => {
                format!("wrote the admin kubeconfig of {cluster} to {path}")
            }
            JsonEvent::Generated {
                cluster, objects, ..
            } => format!("generated cluster {cluster}: {} objects", objects.len()),
            JsonEvent::Describe { cluster, rows } => {
                format!("cluster {cluster}: {} rows", rows.len())
            }
            JsonEvent::UpgradeTargets { cluster, targets, .. } => {
                format!("{cluster}: {} upgrade targets", targets.len())
            }
            JsonEvent::Imported {
                address, object, ..
            } => format!("imported {object} as {address}"),
            JsonEvent::HealthCheck {
                cluster,
                after,
                passed,
                ..
            } => format!(
                "{cluster}: health check after {after} {}",
                if *passed { "passed" } else { "failed" }
            ),
        }
    }

    /// The whole line: the envelope fields, then the event's own.
    pub(crate) fn line(&self, now: time::OffsetDateTime) -> Vec<u8> {
        let mut line = Vec::new();
        // Writing to a vector cannot fail.
        let _ = self.write_line(now, &mut line);
        line
    }

    /// Write the line to `w` as it is serialised: no copy of it is built
    /// (a plan's `plan` event is megabytes).
    pub(crate) fn write_line<W: std::io::Write + ?Sized>(
        &self,
        now: time::OffsetDateTime,
        w: &mut W,
    ) -> std::io::Result<()> {
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a UTC time formats as RFC 3339");
        // `{"@level":…,"@message":…,"@timestamp":…,` then the event's fields
        // without its opening `{`.
        w.write_all(b"{\"@level\":\"")?;
        w.write_all(self.level().as_bytes())?;
        w.write_all(b"\",\"@message\":")?;
        serde_json::to_writer(&mut *w, &self.human())?;
        w.write_all(b",\"@timestamp\":\"")?;
        w.write_all(stamp.as_bytes())?;
        w.write_all(b"\",")?;
        serde_json::to_writer(
            SkipFirst {
                inner: &mut *w,
                skip: true,
            },
            self,
        )?;
        w.write_all(b"\n")
    }
}

/// A writer that drops the first byte written to it (an object's `{`).
struct SkipFirst<W> {
    inner: W,
    skip: bool,
}

impl<W: std::io::Write> std::io::Write for SkipFirst<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.skip && !buf.is_empty() {
            debug_assert_eq!(buf[0], b'{', "an event serialises as an object");
            let n = self.inner.write(&buf[1..])?;
            self.skip = false;
            return Ok(n + 1);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The JSON Schema of a `--json` stream's lines.
pub(crate) fn events_schema() -> Value {
    let mut v =
        serde_json::to_value(schemars::schema_for!(JsonEvent<'static>)).expect("schema serialises");
    let envelope = serde_json::json!({
        "@level": {"enum": ["info", "warn", "error"], "type": "string"},
        "@message": {"description": "The event as a person would read it.", "type": "string"},
        "@timestamp": {"description": "RFC 3339, UTC.", "format": "date-time", "type": "string"},
    });
    for variant in v["oneOf"].as_array_mut().into_iter().flatten() {
        if let Some(props) = variant["properties"].as_object_mut() {
            for (k, schema) in envelope.as_object().expect("an object") {
                props.insert(k.clone(), schema.clone());
            }
        }
        if let Some(req) = variant["required"].as_array_mut() {
            for k in ["@level", "@message", "@timestamp"] {
                req.push(Value::String(k.into()));
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "title".into(),
            Value::String("capi --json event stream (one object per line)".into()),
        );
    }
    v
}

/// Emit a plan as events: version, diagnostics, drift, planned changes, the
/// plan, the summary.
pub(crate) fn emit_plan(printer: &Printer, p: &Plan, operation: &str) {
    printer.emit(&JsonEvent::version());
    emit_plan_body(printer, p, operation);
}

/// The plan events without the leading version line (thousands of lines
/// for a large plan: written as one stream).
pub(crate) fn emit_plan_body(printer: &Printer, p: &Plan, operation: &str) {
    printer.emit_all(|emit| plan_events(p, operation, emit));
}

/// [`emit_plan`] on a thread of its own while the caller goes on (an apply
/// or destroy that asks nothing starts while its plan is written); every
/// later line waits for these (see [`Printer::emit_all_behind`]).
pub(crate) fn emit_plan_behind(printer: &Printer, p: Plan, operation: &str) {
    let operation = operation.to_string();
    printer.emit_all_behind(move |emit| {
        emit(&JsonEvent::version());
        plan_events(&p, &operation, emit);
    });
}

fn plan_events(p: &Plan, operation: &str, emit: &mut dyn FnMut(&JsonEvent<'_>)) {
    for w in &p.warnings {
        emit(&JsonEvent::message(DiagnosticSeverity::Warning, w.clone()));
    }
    for d in &p.drift {
        emit(&JsonEvent::drift(d));
    }
    for c in &p.changes {
        emit(&JsonEvent::planned_change(c));
    }
    emit(&JsonEvent::Plan { plan: p });
    emit(&JsonEvent::change_summary(p, operation));
}

/// Counts by event type, for tests.
#[cfg(test)]
fn type_names() -> std::collections::BTreeMap<String, usize> {
    let schema = events_schema();
    let mut out = std::collections::BTreeMap::new();
    for v in schema["oneOf"].as_array().into_iter().flatten() {
        if let Some(t) = v.pointer("/properties/type/const").and_then(Value::as_str) {
            *out.entry(t.to_string()).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_in_the_schema_once() {
        let names = type_names();
        for t in [
            "version",
            "diagnostic",
            "resource_drift",
            "planned_change",
            "plan",
            "change_summary",
            "apply_start",
            "apply_progress",
            "apply_complete",
            "apply_errored",
            "apply_skipped",
            "interrupted",
            "apply_summary",
            "drift_summary",
            "state",
            "state_list",
            "state_resource",
            "valid",
            "upgrade_step",
            "health_check",
            "upgrade_targets",
            "describe",
            "kubeconfig",
            "generated",
            "imported",
        ] {
            assert_eq!(names.get(t), Some(&1), "{t} in {names:?}");
        }
        assert_eq!(names.len(), 25);
    }

    #[test]
    fn every_line_carries_level_message_and_timestamp() {
        let t = time::macros::datetime!(2026-12-06 14:30:05.25 UTC);
        let a = Address::parse("demo/machine/demo-md-0-a9ed1-0").unwrap();
        let e = JsonEvent::ApplyErrored {
            address: &a,
            action: Op::Create,
            error: "quota exceeded".into(),
            elapsed_seconds: 1.5,
        };
        let line = e.line(t);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["@level"], "error");
        assert_eq!(
            v["@message"],
            "demo/machine/demo-md-0-a9ed1-0: quota exceeded"
        );
        assert_eq!(v["@timestamp"], "2026-12-06T14:30:05.25Z");
        assert_eq!(v["type"], "apply_errored");
        assert_eq!(v["error"], "quota exceeded");
        let start = JsonEvent::ApplyStart {
            address: &a,
            action: Op::Create,
        };
        let v: Value = serde_json::from_slice(&start.line(t)).unwrap();
        assert_eq!(v["@level"], "info");
        assert_eq!(v["@message"], "demo/machine/demo-md-0-a9ed1-0: Creating...");
    }

    #[test]
    fn events_serialise_with_their_type_first_class() {
        let v = serde_json::to_value(JsonEvent::version()).unwrap();
        assert_eq!(v["type"], "version");
        assert_eq!(v["format_version"], FORMAT_VERSION);
        let i = serde_json::to_value(JsonEvent::Interrupted {}).unwrap();
        assert_eq!(i, serde_json::json!({"type": "interrupted"}));
    }
}

//! A Go `text/template` evaluator for the templates ClusterClasses carry
//! (`enabledIf`, `valueFrom.template`, `naming.template`), over JSON data.
//! `parse.rs` reads the template, `eval.rs` runs it, `funcs.rs` has Go's
//! builtin functions and the hermetic sprig functions upstream templates use.
//! No maintained Rust crate implements Go's syntax with sprig (gtmpl 0.7 has
//! no sprig functions and its own value type), so this is a small one.
//! `budget.rs` keeps a hostile template within documented limits.

mod budget;
mod eval;
mod funcs;
mod parse;

pub(crate) use parse::parse;

/// Why a template could not be parsed or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("template: {0}")]
    Parse(String),
    #[error("template: function {0:?} not defined (capi implements Go's builtins and sprig's hermetic functions that ClusterClasses use)")]
    UnknownFunction(String),
    #[error("template: {0} is not supported")]
    Unsupported(String),
    #[error("template: {0}")]
    Exec(String),
    /// A limit of docs/reliability.md was crossed; `help` names it and says
    /// how to stay within it.
    #[error("template: {message}")]
    Limit { message: String, help: &'static str },
}

impl TemplateError {
    /// How to fix it: the limit's own advice, or `otherwise`.
    pub(crate) fn help_or(&self, otherwise: &'static str) -> &'static str {
        match self {
            TemplateError::Limit { help, .. } => help,
            _ => otherwise,
        }
    }
}

/// Parse and run `src` with `data` as `.`.
pub(crate) fn render(src: &str, data: &serde_json::Value) -> Result<String, TemplateError> {
    let t = parse(src)?;
    eval::execute(&t, data, false)
}

/// Run with `missingkey=error` (naming templates).
pub(crate) fn render_strict(src: &str, data: &serde_json::Value) -> Result<String, TemplateError> {
    let t = parse(src)?;
    eval::execute(&t, data, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(src: &str, data: serde_json::Value) -> String {
        render(src, &data).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn fields_pipelines_and_trim() {
        let d = json!({"a": {"b": "x+y"}, "n": 3, "list": [1, 2]});
        assert_eq!(r("{{ .a.b }}", d.clone()), "x+y");
        assert_eq!(r("{{ .a.b | replace \"+\" \"_\" }}", d.clone()), "x_y");
        assert_eq!(r("a  {{- .n -}}  b", d.clone()), "a3b");
        assert_eq!(r("{{ .missing }}", d.clone()), "<no value>");
        assert_eq!(
            r(
                "{{ range $i, $v := .list }}{{ $i }}={{ $v }},{{ end }}",
                d.clone()
            ),
            "0=1,1=2,"
        );
        assert_eq!(r("{{ with .a }}{{ .b }}{{ end }}", d.clone()), "x+y");
        assert_eq!(r("{{/* comment */}}ok", d), "ok");
    }

    #[test]
    fn conditions() {
        let d = json!({"s": "", "t": "v", "b": true});
        assert_eq!(r("{{ ne .s \"\" }}", d.clone()), "false");
        assert_eq!(r("{{ ne .t \"\" }}", d.clone()), "true");
        assert_eq!(r("{{ .b }}", d.clone()), "true");
        assert_eq!(
            r(
                "{{ if eq .t \"x\" }}1{{ else if eq .t \"v\" }}2{{ else }}3{{ end }}",
                d.clone()
            ),
            "2"
        );
        assert_eq!(r("{{ if and .b (not .s) }}y{{ end }}", d.clone()), "y");
        assert_eq!(r("{{ or .s \"dflt\" }}", d), "dflt");
    }

    #[test]
    fn sprig_functions() {
        let d = json!({"v": "v1.24.3", "w": "v1.31.0", "o": {"k": "x", "a": [1]}, "s": ""});
        assert_eq!(
            r(
                "{{ if semverCompare \"< v1.25-0\" .v }}beta1{{ end }}",
                d.clone()
            ),
            "beta1"
        );
        assert_eq!(
            r(
                "{{ if semverCompare \"< v1.25-0\" .w }}beta1{{ end }}",
                d.clone()
            ),
            ""
        );
        assert_eq!(
            r("{{ semverCompare \">=1.30, <1.32\" .w }}", d.clone()),
            "true"
        );
        assert_eq!(r("{{ .s | default \"z\" }}", d.clone()), "z");
        assert_eq!(r("{{ quote .v }}", d.clone()), "\"v1.24.3\"");
        assert_eq!(r("{{ printf \"%s-%d\" .v 5 }}", d.clone()), "v1.24.3-5");
        assert_eq!(r("{{ .o | toYaml }}", d.clone()), "a:\n- 1\nk: x");
        assert_eq!(
            r("x:{{ .o | toYaml | nindent 2 }}", d.clone()),
            "x:\n  a:\n  - 1\n  k: x"
        );
        assert_eq!(r("{{ .o | toJson }}", d.clone()), "{\"a\":[1],\"k\":\"x\"}");
        assert_eq!(r("{{ upper \"a\" | trimPrefix \"A\" }}", d), "");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            render("{{ frobnicate .x }}", &json!({})),
            Err(TemplateError::UnknownFunction(f)) if f == "frobnicate"
        ));
        assert!(matches!(
            render("{{ if .x }}", &json!({})),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            render("{{ .a.b }}", &json!({})),
            Err(TemplateError::Exec(_))
        ));
        assert!(render_strict("{{ .cluster.nme }}", &json!({"cluster": {"name": "c"}})).is_err());
    }
}

//! Secret and ConfigMap bodies: `data` (base64 for Secrets) and
//! `stringData`, merged into plain maps.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::super::model::Body;
use super::super::yaml;
use super::DocCtx;

pub(super) fn parse_secret(ctx: &mut DocCtx<'_>, root: &Value, name: &str) -> Body {
    let mut data = BTreeMap::new();
    if let Some(Value::Object(m)) = root.get("data") {
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let cleaned: String = s.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
                Ok(bytes) => {
                    data.insert(k.clone(), bytes);
                }
                Err(e) => ctx.error(
                    &format!("/data/{}", yaml::escape_pointer(k)),
                    format!("Secret {name:?}: data key {k:?} is not valid base64 ({e})"),
                    "Secret `data` values must be base64; put plain text under `stringData` instead",
                ),
            }
        }
    }
    if let Some(Value::Object(m)) = root.get("stringData") {
        for (k, v) in m {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data.insert(k.clone(), s.into_bytes());
        }
    }
    Body::Secret(data)
}

pub(super) fn parse_config_map(root: &Value) -> Body {
    let mut data = BTreeMap::new();
    if let Some(Value::Object(m)) = root.get("data") {
        for (k, v) in m {
            data.insert(
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    Body::ConfigMap(data)
}

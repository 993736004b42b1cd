//! [`Observed`]: what a provider reported about one resource (ids,
//! addresses, status), as a resource in state holds it: a short list of
//! entries sorted by key, whose keys (a vocabulary of a few dozen words) are
//! stored once per thread and shared. A machine's half-dozen entries took a
//! `BTreeMap` node of ~640 bytes plus a string per key; 100,000 machines held
//! ~90 MB of them. It reads and writes (JSON, schema) exactly as a map.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Distinct keys remembered per thread (beyond that, keys are not shared).
const KEYS: usize = 256;

thread_local! {
    static KNOWN: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
}

/// `key`, shared with earlier equal keys.
fn key(text: &str) -> Arc<str> {
    KNOWN.with(|cell| {
        let mut known = cell.borrow_mut();
        if let Some(k) = known.get(text) {
            return Arc::clone(k);
        }
        let k: Arc<str> = Arc::from(text);
        if known.len() < KEYS {
            known.insert(Arc::clone(&k));
        }
        k
    })
}

/// Entries sorted by key, each key once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed(Vec<(Arc<str>, Value)>);

impl Observed {
    pub(crate) fn new() -> Observed {
        Observed::default()
    }

    /// Set `k` to `v` unless it is set.
    pub(crate) fn insert_if_absent(&mut self, k: &str, v: impl FnOnce() -> Value) {
        if let Err(i) = self.position(k) {
            self.0.insert(i, (key(k), v()));
        }
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.position(k).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, k: &str) -> Option<&mut Value> {
        self.position(k).ok().map(|i| &mut self.0[i].1)
    }

    /// Keep the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    pub(crate) fn contains_key(&self, k: &str) -> bool {
        self.position(k).is_ok()
    }

    /// Set `k` to `v`; the value it replaces, if any.
    pub(crate) fn insert(&mut self, k: String, v: Value) -> Option<Value> {
        self.set(&k, v)
    }

    fn set(&mut self, k: &str, v: Value) -> Option<Value> {
        match self.position(k) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (key(k), v));
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    #[cfg(test)]
    fn to_map(&self) -> BTreeMap<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn position(&self, k: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(e, _)| (**e).cmp(k))
    }
}

impl std::ops::Index<&str> for Observed {
    type Output = Value;
    /// Panics when `k` is not set, as a map's index does.
    fn index(&self, k: &str) -> &Value {
        self.get(k)
            .unwrap_or_else(|| panic!("no observed value {k:?}"))
    }
}

impl From<BTreeMap<String, Value>> for Observed {
    fn from(map: BTreeMap<String, Value>) -> Self {
        // A map iterates in key order: already sorted.
        Observed(map.into_iter().map(|(k, v)| (key(&k), v)).collect())
    }
}

impl<const N: usize> From<[(String, Value); N]> for Observed {
    fn from(entries: [(String, Value); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl FromIterator<(String, Value)> for Observed {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(entries: I) -> Self {
        let mut o = Observed::default();
        for (k, v) in entries {
            o.set(&k, v);
        }
        o
    }
}

impl Serialize for Observed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Observed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Observed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of observed values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Observed, A::Error> {
                let mut o = Observed(Vec::with_capacity(map.size_hint().unwrap_or(0).min(16)));
                while let Some(KeyText(k)) = map.next_key::<KeyText<'de>>()? {
                    let v: Value = map.next_value()?;
                    // capi writes keys sorted: append. A later duplicate
                    // wins, as in a map.
                    match o.0.last() {
                        Some((last, _)) if **last < *k => o.0.push((key(&k), v)),
                        None => o.0.push((key(&k), v)),
                        _ => {
                            o.set(&k, v);
                        }
                    }
                }
                Ok(o)
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A key, borrowed from the input when it can be (no copy to look it up).
struct KeyText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_as_a_map_in_any_order() {
        let text = r#"{"status":"running","ip":"10.0.0.2","ready":true,"ip":"10.0.0.3"}"#;
        let o: Observed = serde_json::from_str(text).unwrap();
        let as_map: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(o.to_map(), as_map, "sorted, the later duplicate wins");
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::to_value(&as_map).unwrap()
        );
        assert_eq!(Observed::from(as_map.clone()), o);
        assert_eq!(o.get("ip"), Some(&json!("10.0.0.3")));
        assert!(o.get("name").is_none() && !o.contains_key("name"));
    }

    #[test]
    fn keys_are_stored_once_and_inserts_keep_the_order() {
        let a: Observed = serde_json::from_str(r#"{"provider_id":"x"}"#).unwrap();
        let b: Observed = serde_json::from_str(r#"{"provider_id":"y"}"#).unwrap();
        assert!(Arc::ptr_eq(&a.0[0].0, &b.0[0].0));
        let mut c = b.clone();
        assert_eq!(c.insert("id".into(), json!(1)), None);
        assert_eq!(c.insert("zone".into(), json!("z")), None);
        assert_eq!(c.insert("id".into(), json!(2)), Some(json!(1)));
        let keys: Vec<&str> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["id", "provider_id", "zone"]);
    }
}

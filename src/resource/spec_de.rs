//! Reading a [`Spec`] from its JSON object without buffering it: the derived
//! reader of an internally tagged enum first copies the whole object into an
//! intermediate tree to find the `kind` tag, which was most of the cost of
//! loading a large state. capi writes `kind` first, so this reader takes the
//! first key, and when it is `kind`, reads the rest of the object straight
//! into that variant. Any other order (a hand-edited file) falls back to a
//! buffered read. The format is the one the derived `Serialize` writes.

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Spec;

const KINDS: &[&str] = &[
    "pki",
    "network",
    "loadbalancer",
    "token",
    "bootstrap",
    "machine",
];

/// Read the remaining entries of `map` as the variant named `kind`.
fn variant<'de, A: MapAccess<'de>>(kind: &str, map: A) -> Result<Spec, A::Error> {
    fn rest<'de, T: DeserializeOwned, A: MapAccess<'de>>(map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
    Ok(match kind {
        "pki" => Spec::Pki(rest(map)?),
        "network" => Spec::Network(rest(map)?),
        "loadbalancer" => Spec::Loadbalancer(rest(map)?),
        "token" => Spec::Token(rest(map)?),
        "bootstrap" => Spec::Bootstrap(rest(map)?),
        "machine" => Spec::Machine(rest(map)?),
        other => return Err(de::Error::unknown_variant(other, KINDS)),
    })
}

/// An object key, without allocating unless it is not `kind`.
enum Key {
    Kind,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(if v == "kind" {
                    Key::Kind
                } else {
                    Key::Other(v.to_string())
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The `kind` tag's value, as one of [`KINDS`].
struct Kind(&'static str);

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a resource kind")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                KINDS
                    .iter()
                    .find(|k| **k == v)
                    .map(|k| Kind(k))
                    .ok_or_else(|| E::unknown_variant(v, KINDS))
            }
        }
        d.deserialize_str(V)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = Spec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a resource specification (an object with a `kind`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spec, A::Error> {
        let first = match map.next_key::<Key>()? {
            None => return Err(de::Error::missing_field("kind")),
            Some(Key::Kind) => {
                let Kind(kind) = map.next_value()?;
                return variant(kind, map);
            }
            Some(Key::Other(first)) => first,
        };
        // `kind` later in the object: buffer it, then read the variant.
        let mut object = serde_json::Map::new();
        let value = map.next_value::<serde_json::Value>()?;
        object.insert(first, value);
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(k, v);
        }
        let Some(serde_json::Value::String(kind)) = object.remove("kind") else {
            return Err(de::Error::missing_field("kind"));
        };
        let entries = de::value::MapDeserializer::new(object.into_iter());
        variant(&kind, entries).map_err(|e: serde_json::Error| de::Error::custom(e))
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Spec, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_first_or_later_reads_the_same_and_unknown_kinds_fail() {
        let first = r#"{"kind":"token","ttlSeconds":86400}"#;
        let later = r#"{"ttlSeconds":86400,"kind":"token"}"#;
        let a: Result<Spec, _> = serde_json::from_str(first);
        let b: Result<Spec, _> = serde_json::from_str(later);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b);
                assert_eq!(
                    serde_json::from_str::<Spec>(&serde_json::to_string(&a).unwrap()).unwrap(),
                    a
                );
            }
            (a, b) => panic!("{a:?} {b:?}"),
        }
        assert!(serde_json::from_str::<Spec>(r#"{"kind":"dragon"}"#).is_err());
        assert!(serde_json::from_str::<Spec>(r#"{"ttlSeconds":1}"#).is_err());
        assert!(serde_json::from_str::<Spec>("{}").is_err());
    }
}

//! Encryption at rest of the state's sensitive values (CA keys, join
//! tokens): the state key, AES-256-GCM sealing of one value, and the
//! state-wide operations built on it (seal every plaintext value, open every
//! sealed one, check that a key opens them). Pure: no I/O, no environment.
//!
//! A sealed value is the text `capi-enc:v1:<key id>:<base64 of nonce ||
//! ciphertext || tag>`, with a random 96-bit nonce per value. The key id is
//! the first 8 bytes of the key's SHA-256, in hex. The associated data binds
//! the ciphertext to the resource address and the value's name, so a sealed
//! value copied to another resource or name does not open.

use std::collections::BTreeSet;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::model::{Resource, State};

/// The prefix of every sealed value (format version 1).
pub(crate) const SEALED_PREFIX: &str = "capi-enc:v1:";

/// How to give the key, for error messages.
pub(crate) const KEY_HELP: &str = "CAPI_STATE_KEY=<base64 of 32 bytes> or --state-key-file FILE (see docs/state-backends.md, \"Encryption\")";

/// What is wrong with a key as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error(
        "{0}: the state key is not base64 ({1}); make one with `head -c32 /dev/urandom | base64`"
    )]
    NotBase64(String, String),
    #[error("{0}: the state key is {1} bytes; AES-256 needs exactly 32 random bytes, given base64 (make one with `head -c32 /dev/urandom | base64`)")]
    WrongLength(String, usize),
}

/// Why a sensitive value could not be read (or sealed values not checked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SecretError {
    #[error("the sensitive value {name:?} of {address} is encrypted with the state key {key_id}, and no key was given: give it with {help}")]
    NoKey {
        address: String,
        name: String,
        key_id: String,
        help: &'static str,
    },
    #[error("the sensitive value {name:?} of {address} is encrypted with the state key {key_id}, but the key given has id {given}: wrong key; give the key {key_id} with {help}")]
    WrongKey {
        address: String,
        name: String,
        key_id: String,
        given: String,
        help: &'static str,
    },
    #[error("the sensitive value {name:?} of {address} does not decrypt with the state key {key_id} (wrong key, or the value was altered or copied from another resource); give the right key with {help}")]
    Undecryptable {
        address: String,
        name: String,
        key_id: String,
        help: &'static str,
    },
}

/// The key sensitive values are sealed with.
pub(crate) struct StateKey {
    key: RandomizedNonceKey,
    id: String,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateKey({})", self.id)
    }
}

impl StateKey {
    /// From its base64 text; `source` names where it came from, for errors.
    pub(crate) fn from_base64(text: &str, source: &str) -> Result<StateKey, KeyError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| KeyError::NotBase64(source.to_string(), e.to_string()))?;
        if bytes.len() != 32 {
            return Err(KeyError::WrongLength(source.to_string(), bytes.len()));
        }
        Ok(StateKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> StateKey {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        StateKey { key, id }
    }

    /// The key id: the first 8 bytes of the key's SHA-256, in hex.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Seal `plaintext`, the value `name` of the resource at `address`.
    pub(crate) fn seal(&self, address: &str, name: &str, plaintext: &str) -> String {
        let mut buf = plaintext.as_bytes().to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(associated_data(address, name)), &mut buf)
            .expect("AES-256-GCM sealing does not fail");
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        format!("{SEALED_PREFIX}{}:{}", self.id, B64.encode(out))
    }

    /// Open a sealed `value` (of `name` of `address`).
    pub(crate) fn open(
        &self,
        address: &str,
        name: &str,
        value: &str,
    ) -> Result<String, SecretError> {
        let (key_id, payload) = split_sealed(value).unwrap_or(("?", ""));
        if key_id != self.id {
            return Err(SecretError::WrongKey {
                address: address.to_string(),
                name: name.to_string(),
                key_id: key_id.to_string(),
                given: self.id.clone(),
                help: KEY_HELP,
            });
        }
        let bad = || SecretError::Undecryptable {
            address: address.to_string(),
            name: name.to_string(),
            key_id: key_id.to_string(),
            help: KEY_HELP,
        };
        let mut bytes = B64.decode(payload).map_err(|_| bad())?;
        if bytes.len() < NONCE_LEN {
            return Err(bad());
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| bad())?;
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated_data(address, name)),
                &mut sealed,
            )
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }
}

fn associated_data(address: &str, name: &str) -> Vec<u8> {
    format!("capi-state-secret:v1\0{address}\0{name}").into_bytes()
}

/// `(key id, payload)` of a sealed value; `None` for plaintext.
fn split_sealed(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(SEALED_PREFIX)?.split_once(':')
}

/// Whether a stored value is sealed.
pub(crate) fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

impl Resource {
    /// The sensitive value `name` in plaintext, opened with `key` if it is
    /// sealed: the one way sensitive values are read.
    pub(crate) fn secret(
        &self,
        name: &str,
        key: Option<&StateKey>,
    ) -> Result<Option<String>, SecretError> {
        let Some(value) = self.sensitive.get(name) else {
            return Ok(None);
        };
        if !is_sealed(value) {
            return Ok(Some(value.clone()));
        }
        let address = self.address.as_str();
        match key {
            Some(k) => k.open(address, name, value).map(Some),
            None => Err(SecretError::NoKey {
                address: address.to_string(),
                name: name.to_string(),
                key_id: split_sealed(value).map_or("?", |(id, _)| id).to_string(),
                help: KEY_HELP,
            }),
        }
    }

    /// Every sensitive value in plaintext.
    pub(crate) fn secrets(&self, key: Option<&StateKey>) -> Result<Vec<String>, SecretError> {
        self.sensitive
            .keys()
            .filter_map(|n| self.secret(n, key).transpose())
            .collect()
    }

    /// Set the sensitive values, sealed with `key` when there is one.
    pub(crate) fn set_sensitive(
        &mut self,
        values: impl IntoIterator<Item = (String, String)>,
        key: Option<&StateKey>,
    ) {
        let address = self.address.as_str().to_string();
        self.sensitive = values
            .into_iter()
            .map(|(n, v)| match key {
                Some(k) => {
                    let sealed = k.seal(&address, &n, &v);
                    (n, sealed)
                }
                None => (n, v),
            })
            .collect();
    }
}

impl State {
    /// The ids of the keys the state's sealed values were sealed with.
    pub(crate) fn sealed_key_ids(&self) -> BTreeSet<String> {
        self.resources
            .iter()
            .flat_map(|r| r.sensitive.values())
            .filter_map(|v| split_sealed(v).map(|(id, _)| id.to_string()))
            .collect()
    }

    /// Check that `key` opens every sealed value (or, without a key, that
    /// none is sealed).
    pub(crate) fn check_key(&self, key: Option<&StateKey>) -> Result<(), SecretError> {
        for r in &self.resources {
            r.secrets(key)?;
        }
        Ok(())
    }

    /// Seal every plaintext sensitive value with `key`; how many were sealed.
    pub(crate) fn seal_plaintext(&mut self, key: &StateKey) -> usize {
        let mut n = 0;
        for r in &mut self.resources {
            let address = r.address.as_str().to_string();
            for (name, v) in r.sensitive.iter_mut().filter(|(_, v)| !is_sealed(v)) {
                *v = key.seal(&address, name, v);
                n += 1;
            }
        }
        n
    }

    /// Every sensitive value opened with `old` and sealed again with `new`
    /// (`None`: left in plaintext); how many values there are.
    pub(crate) fn rekey(
        &mut self,
        old: Option<&StateKey>,
        new: Option<&StateKey>,
    ) -> Result<usize, SecretError> {
        let mut n = 0;
        for r in &mut self.resources {
            let mut values = Vec::new();
            for name in r.sensitive.keys() {
                let v = r.secret(name, old)?.expect("the name is present");
                values.push((name.clone(), v));
            }
            n += values.len();
            r.set_sensitive(values, new);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StateKey {
        StateKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn roundtrip_with_a_random_nonce_per_value() {
        let k = key(1);
        let a = k.seal("dev/pki", "ca.key", "-----BEGIN PRIVATE KEY-----");
        let b = k.seal("dev/pki", "ca.key", "-----BEGIN PRIVATE KEY-----");
        assert!(a.starts_with(&format!("capi-enc:v1:{}:", k.id())), "{a}");
        assert_ne!(a, b, "nonces differ");
        assert!(!a.contains("PRIVATE"));
        assert_eq!(
            k.open("dev/pki", "ca.key", &a).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(k.id().len(), 16);
    }

    #[test]
    fn wrong_key_is_refused_by_its_id() {
        let sealed = key(1).seal("dev/pki", "ca.key", "s");
        let e = key(2).open("dev/pki", "ca.key", &sealed).unwrap_err();
        assert!(matches!(e, SecretError::WrongKey { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(key(1).id()) && text.contains(key(2).id()),
            "{text}"
        );
        assert!(text.contains("CAPI_STATE_KEY"), "{text}");
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let k = key(1);
        let sealed = k.seal("dev/pki", "ca.key", "secret value");
        let (head, payload) = sealed.rsplit_once(':').unwrap();
        let mut bytes = B64.decode(payload).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{head}:{}", B64.encode(&bytes));
        let e = k.open("dev/pki", "ca.key", &tampered).unwrap_err();
        assert!(matches!(e, SecretError::Undecryptable { .. }), "{e}");
        for junk in [format!("{head}:!!"), format!("{head}:AAAA")] {
            assert!(k.open("dev/pki", "ca.key", &junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_value_moved_to_another_address_or_name_does_not_open() {
        let k = key(1);
        let sealed = k.seal("dev/pki", "ca.key", "secret");
        assert!(k.open("prod/pki", "ca.key", &sealed).is_err());
        assert!(k.open("dev/pki", "etcd.key", &sealed).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(StateKey::from_base64(&B64.encode([7u8; 32]), "CAPI_STATE_KEY").is_ok());
        let e = StateKey::from_base64(&B64.encode([7u8; 16]), "CAPI_STATE_KEY").unwrap_err();
        assert_eq!(e, KeyError::WrongLength("CAPI_STATE_KEY".into(), 16));
        assert!(e.to_string().contains("head -c32 /dev/urandom | base64"));
        assert!(StateKey::from_base64("not base64!", "f").is_err());
        assert_eq!(
            format!("{:?}", key(3)),
            format!("StateKey({})", key(3).id())
        );
    }

    fn state() -> State {
        use crate::resource::*;
        let mut s = State::new("lin".into());
        for (addr, name) in [("a/pki", "ca.key"), ("b/token", "token")] {
            s.upsert(Resource {
                address: Address::parse(addr).unwrap(),
                kind: ResourceKind::Pki,
                provider: ProviderKind::Local,
                status: crate::state::Status::Ready,
                attributes: Spec::Pki(PkiSpec {
                    encryption_algorithm: "RSA-2048".into(),
                    ca_validity_days: 1,
                    external_etcd: false,
                }),
                observed: Default::default(),
                sensitive: [(name.to_string(), format!("{addr} secret"))].into(),
                dependencies: vec![],
                sequence: 1,
                error: None,
            });
        }
        s
    }

    #[test]
    fn a_state_is_sealed_checked_rekeyed_and_opened() {
        let (k1, k2) = (key(1), key(2));
        let mut s = state();
        assert!(s.check_key(None).is_ok(), "plaintext needs no key");
        assert_eq!(s.seal_plaintext(&k1), 2);
        assert_eq!(s.seal_plaintext(&k1), 0, "sealed once");
        assert_eq!(s.sealed_key_ids(), [k1.id().to_string()].into());
        assert!(matches!(s.check_key(None), Err(SecretError::NoKey { .. })));
        assert!(matches!(
            s.check_key(Some(&k2)),
            Err(SecretError::WrongKey { .. })
        ));
        let pki = s.get("a/pki").unwrap();
        assert_eq!(
            pki.secret("ca.key", Some(&k1)).unwrap().as_deref(),
            Some("a/pki secret")
        );
        assert_eq!(pki.secret("absent", None).unwrap(), None);
        // A sealed value copied to another resource does not open there.
        let mut swapped = s.clone();
        let v = swapped.get("a/pki").unwrap().sensitive["ca.key"].clone();
        let t = swapped
            .resources
            .iter_mut()
            .find(|r| r.address.as_str() == "b/token")
            .unwrap();
        t.sensitive.insert("token".into(), v);
        assert!(matches!(
            swapped.check_key(Some(&k1)),
            Err(SecretError::Undecryptable { .. })
        ));
        assert_eq!(s.rekey(Some(&k1), Some(&k2)).unwrap(), 2);
        assert_eq!(s.sealed_key_ids(), [k2.id().to_string()].into());
        assert!(s.rekey(Some(&k1), None).is_err());
        assert_eq!(s.rekey(Some(&k2), None).unwrap(), 2);
        assert_eq!(s, state(), "back to the plaintext it started as");
    }
}

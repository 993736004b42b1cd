//! Cluster certificates as CABPK/KCP make them: three self-signed CAs (cluster,
//! etcd, front-proxy; subject CN=kubernetes, serial 0, not-before now−5min,
//! CA validity `caCertificateValidityPeriodDays`, default 3650 days, key usage
//! digital signature + key encipherment + cert sign, path length 0) and the
//! service-account key pair, all with the cluster's `encryptionAlgorithm`
//! (RSA-2048 by default). Also the admin kubeconfig of `clusterctl get
//! kubeconfig`. Keys are generated with maintained crates (RSA by `aws-lc-rs`,
//! about 10× faster than the `rsa` crate, which converts them to PKCS#1;
//! ECDSA by `rcgen`); no DER is written by hand.

use std::collections::BTreeMap;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("unsupported encryptionAlgorithm {0:?}; use RSA-2048, RSA-3072, RSA-4096, ECDSA-P256 or ECDSA-P384")]
    Algorithm(String),
    #[error("key generation failed: {0}")]
    Key(String),
    #[error("certificate generation failed: {0}")]
    Cert(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Rsa(usize),
    P256,
    P384,
}

impl Algorithm {
    pub(crate) fn parse(s: &str) -> Result<Algorithm, PkiError> {
        Ok(match s {
            "" | "RSA-2048" => Algorithm::Rsa(2048),
            "RSA-3072" => Algorithm::Rsa(3072),
            "RSA-4096" => Algorithm::Rsa(4096),
            "ECDSA-P256" => Algorithm::P256,
            "ECDSA-P384" => Algorithm::P384,
            other => return Err(PkiError::Algorithm(other.to_string())),
        })
    }
}

/// A generated key: rcgen signer, private key PEM (PKCS#1 for RSA, as CABPK),
/// public key PEM and SubjectPublicKeyInfo DER.
pub(crate) struct Key {
    pub(crate) signer: KeyPair,
    pub(crate) private_pem: String,
    pub(crate) public_pem: String,
    pub(crate) spki_der: Vec<u8>,
}

pub(crate) fn generate_key(alg: Algorithm) -> Result<Key, PkiError> {
    match alg {
        Algorithm::Rsa(bits) => {
            use aws_lc_rs::encoding::AsDer;
            let size = match bits {
                2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                other => return Err(PkiError::Algorithm(format!("RSA-{other}"))),
            };
            let e = |x: &dyn std::fmt::Display| PkiError::Key(x.to_string());
            let generated = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|x| e(&x))?;
            let pkcs8 = generated.as_der().map_err(|x| e(&x))?;
            let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8.as_ref()).map_err(|x| e(&x))?;
            rsa_key(key)
        }
        Algorithm::P256 | Algorithm::P384 => {
            let a = if alg == Algorithm::P256 {
                &rcgen::PKCS_ECDSA_P256_SHA256
            } else {
                &rcgen::PKCS_ECDSA_P384_SHA384
            };
            let kp = KeyPair::generate_for(a).map_err(|e| PkiError::Key(e.to_string()))?;
            use rcgen::PublicKeyData;
            let spki = kp.subject_public_key_info();
            let public_pem = pem_block("PUBLIC KEY", &spki);
            Ok(Key {
                private_pem: kp.serialize_pem(),
                public_pem,
                spki_der: spki,
                signer: kp,
            })
        }
    }
}

fn rsa_key(key: rsa::RsaPrivateKey) -> Result<Key, PkiError> {
    let e = |x: &dyn std::fmt::Display| PkiError::Key(x.to_string());
    let pkcs8 = key.to_pkcs8_der().map_err(|x| e(&x))?;
    let signer = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types_der(pkcs8.as_bytes()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|x| e(&x))?;
    let private_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|x| e(&x))?
        .to_string();
    let public = key.to_public_key();
    let spki_der = public
        .to_public_key_der()
        .map_err(|x| e(&x))?
        .as_bytes()
        .to_vec();
    let public_pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|x| e(&x))?;
    Ok(Key {
        signer,
        private_pem,
        public_pem,
        spki_der,
    })
}

fn rustls_pki_types_der(bytes: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'static> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(bytes.to_vec())
}

/// Load a private key PEM written by [`generate_key`] back into a signer.
pub(crate) fn load_key(pem: &str) -> Result<KeyPair, PkiError> {
    if pem.contains("RSA PRIVATE KEY") {
        let key =
            rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| PkiError::Key(e.to_string()))?;
        return Ok(rsa_key(key)?.signer);
    }
    KeyPair::from_pem(pem).map_err(|e| PkiError::Key(e.to_string()))
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `sha256:<hex>` of a SubjectPublicKeyInfo, as kubeadm's discovery hash.
pub(crate) fn spki_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

fn datetime(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ca_cert(key: &Key, now: i64, days: u32) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kubernetes");
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from_slice(&[0]));
    p.not_before = datetime(now - 300);
    p.not_after = datetime(now + days as i64 * 86_400);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let cert = p
        .self_signed(&key.signer)
        .map_err(|e| PkiError::Cert(e.to_string()))?;
    Ok(cert.pem())
}

/// A cluster's generated certificate material.
pub struct ClusterPki {
    /// Certificates and public keys, by reference name (`ca.crt`, `sa.pub`, ...).
    pub public: BTreeMap<String, String>,
    /// Private keys, by reference name (`ca.key`, ...).
    pub secret: BTreeMap<String, String>,
    /// The discovery hash of the cluster CA.
    pub ca_cert_hash: String,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// Generate the cluster CA, etcd CA (unless etcd is external), front-proxy CA
/// and service-account keys. The keys are generated in parallel threads: RSA
/// key generation dominates the cost.
pub fn generate(
    algorithm: &str,
    ca_validity_days: u32,
    external_etcd: bool,
    now: i64,
) -> Result<ClusterPki, PkiError> {
    let alg = Algorithm::parse(algorithm)?;
    let mut names = vec!["ca", "front-proxy-ca", "sa"];
    if !external_etcd {
        names.push("etcd/ca");
    }
    let keys: Vec<(String, Result<Key, PkiError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| (n.to_string(), s.spawn(move || generate_key(alg))))
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| {
                (
                    n,
                    h.join()
                        .unwrap_or_else(|_| Err(PkiError::Key("key thread panicked".into()))),
                )
            })
            .collect()
    });
    let mut public = BTreeMap::new();
    let mut secret = BTreeMap::new();
    let mut ca_hash = String::new();
    for (name, key) in keys {
        let key = key?;
        if name == "sa" {
            public.insert("sa.pub".to_string(), key.public_pem.clone());
            secret.insert("sa.key".to_string(), key.private_pem.clone());
            continue;
        }
        let cert = ca_cert(&key, now, ca_validity_days)?;
        if name == "ca" {
            ca_hash = spki_hash(&key.spki_der);
        }
        public.insert(format!("{name}.crt"), cert);
        secret.insert(format!("{name}.key"), key.private_pem.clone());
    }
    Ok(ClusterPki {
        public,
        secret,
        ca_cert_hash: ca_hash,
        not_before: now - 300,
        not_after: now + ca_validity_days as i64 * 86_400,
    })
}

/// An admin kubeconfig, as `clusterctl get kubeconfig` returns it: client
/// certificate CN=kubernetes-admin, O=system:masters, signed by the cluster CA,
/// valid one year from now (not-before = the CA's not-before).
#[allow(clippy::too_many_arguments)]
pub(crate) fn admin_kubeconfig(
    cluster_name: &str,
    server_host_port: &str,
    ca_crt_pem: &str,
    ca_key_pem: &str,
    algorithm: &str,
    ca_not_before: i64,
    now: i64,
) -> Result<String, PkiError> {
    let ca_key = load_key(ca_key_pem)?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_crt_pem, ca_key).map_err(|e| PkiError::Cert(e.to_string()))?;
    let client = generate_key(Algorithm::parse(algorithm)?)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kubernetes-admin");
    dn.push(DnType::OrganizationName, "system:masters");
    p.distinguished_name = dn;
    let serial: u64 = rand::random::<u64>() >> 1;
    p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    p.not_before = datetime(ca_not_before);
    p.not_after = datetime(now + 365 * 86_400);
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p
        .signed_by(&client.signer, &issuer)
        .map_err(|e| PkiError::Cert(e.to_string()))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = format!("{cluster_name}-admin");
    let context = format!("{user}@{cluster_name}");
    let server = if server_host_port.starts_with("https://") {
        server_host_port.to_string()
    } else {
        format!("https://{server_host_port}")
    };
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"certificate-authority-data": b64(ca_crt_pem), "server": server}}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [{"name": user, "user": {"client-certificate-data": b64(&cert.pem()), "client-key-data": b64(&client.private_pem)}}],
    });
    Ok(super::goyaml::to_string(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_pki_and_kubeconfig() {
        let now = 1_700_000_000;
        let p = generate("ECDSA-P256", 10, false, now).unwrap();
        for k in ["ca.crt", "etcd/ca.crt", "front-proxy-ca.crt", "sa.pub"] {
            assert!(p.public.contains_key(k), "{k}");
        }
        for k in ["ca.key", "etcd/ca.key", "front-proxy-ca.key", "sa.key"] {
            assert!(p.secret.contains_key(k), "{k}");
        }
        assert!(p.ca_cert_hash.starts_with("sha256:") && p.ca_cert_hash.len() == 71);
        let kc = admin_kubeconfig(
            "c1",
            "10.0.0.1:6443",
            &p.public["ca.crt"],
            &p.secret["ca.key"],
            "ECDSA-P256",
            p.not_before,
            now,
        )
        .unwrap();
        assert!(kc.contains("current-context: c1-admin@c1"));
        assert!(kc.contains("server: https://10.0.0.1:6443"));
    }

    #[test]
    fn rsa_keys_are_pkcs1_2048_bits_and_reload() {
        use rsa::traits::PublicKeyParts;
        let p = generate("RSA-2048", 10, true, 1_700_000_000).unwrap();
        let pem = &p.secret["ca.key"];
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem).unwrap();
        assert_eq!(key.size() * 8, 2048);
        assert!(p.public["sa.pub"].starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_ne!(p.secret["ca.key"], p.secret["sa.key"]);
        let kc = admin_kubeconfig(
            "c1",
            "10.0.0.1:6443",
            &p.public["ca.crt"],
            pem,
            "RSA-2048",
            p.not_before,
            1_700_000_000,
        )
        .unwrap();
        assert!(kc.contains("client-key-data: "));
    }

    #[test]
    fn external_etcd_has_no_etcd_ca() {
        let p = generate("ECDSA-P256", 10, true, 0).unwrap();
        assert!(!p.public.contains_key("etcd/ca.crt"));
    }

    #[test]
    fn bad_algorithm() {
        assert!(generate("DSA", 10, false, 0).is_err());
    }
}

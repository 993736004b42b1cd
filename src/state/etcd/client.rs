//! A small etcd v3 client in etcd's gRPC protocol, on `reqwest` over
//! HTTP/2 (messages by hand: see [`super::grpc`]; no protoc, no generated
//! code). Callers build requests and read answers in the shape of etcd's
//! JSON gateway (`call("/v3/kv/txn", json)`, keys and values base64), which
//! this client used before; [`super::grpc`] translates.
//!
//! Calls are blocking (the state store is used from plain threads and from
//! async commands alike): each runs on the client's own one-thread runtime
//! and the caller waits for its answer. Every request has a bounded timeout;
//! a connection error, a timeout or an "unavailable" answer (no leader, leader
//! changed) moves on to the next endpoint, round the list until the call's
//! deadline. The writes capi sends are safe to resend: puts of the same
//! values, compared against the same fencing revision.
//!
//! TLS as etcdctl takes it ([`TlsFiles`]: `ETCDCTL_CACERT`, `ETCDCTL_CERT`,
//! `ETCDCTL_KEY`): with any of them, the endpoints are spoken to over
//! `https://`, the server verified against the CA file (only), and the
//! client certificate presented.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::grpc;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EtcdError {
    #[error("no etcd endpoint answered within {waited:?} ({endpoints}): {last}")]
    Unreachable {
        endpoints: String,
        waited: Duration,
        last: String,
    },
    #[error("etcd refused the request: {0}")]
    Refused(String),
}

pub(crate) fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub(crate) fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// An integer field (the gateway writes 64-bit integers as strings and
/// leaves zeros out).
pub(crate) fn int(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key just after every key starting with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A user name and password for etcd's authentication (`ETCDCTL_USER`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, password hidden)", self.user)
    }
}

/// TLS files, as etcdctl takes them (paths to PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// `ETCDCTL_CACERT`: the CA(s) the server's certificate must chain to.
    pub(crate) ca: Option<std::path::PathBuf>,
    /// `ETCDCTL_CERT`: the client certificate.
    pub(crate) cert: Option<std::path::PathBuf>,
    /// `ETCDCTL_KEY`: its private key.
    pub(crate) key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    pub(crate) fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// How to reach etcd besides its endpoints: credentials and TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct EtcdAccess {
    pub(crate) auth: Option<Credentials>,
    pub(crate) tls: TlsFiles,
}

/// The HTTP/2 client, with the TLS files' CA and client identity.
fn http_client(tls: &TlsFiles) -> Result<reqwest::Client, String> {
    let read = |var: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{var}={}: cannot read it: {e}", p.display()))
    };
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(30))
        // HTTP/2 from the first byte: cleartext (h2c) or over TLS.
        .http2_prior_knowledge();
    if !tls.is_set() {
        // Cleartext HTTP/2 cannot go through an HTTP proxy.
        b = b.no_proxy();
    }
    if let Some(ca) = &tls.ca {
        let certs = reqwest::Certificate::from_pem_bundle(&read("ETCDCTL_CACERT", ca)?)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("ETCDCTL_CACERT={}: no PEM certificate in it", ca.display()))?;
        b = b.tls_certs_only(certs);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("ETCDCTL_CERT", cert)?;
            pem.push(b'\n');
            pem.extend(read("ETCDCTL_KEY", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "ETCDCTL_CERT={} with ETCDCTL_KEY={}: not a PEM certificate and private key ({e})",
                    cert.display(),
                    key.display()
                )
            })?;
            b = b.identity(id);
        }
        (Some(_), None) => return Err("ETCDCTL_CERT is set without ETCDCTL_KEY: give the client certificate's private key too".into()),
        (None, Some(_)) => return Err("ETCDCTL_KEY is set without ETCDCTL_CERT: give the client certificate too".into()),
        (None, None) => {}
    }
    b.build()
        .map_err(|e| format!("cannot start the etcd client: {e}"))
}

#[derive(Debug)]
pub(crate) struct EtcdClient {
    endpoints: Vec<String>,
    auth: Option<Credentials>,
    /// The token `auth` was exchanged for (sent as `Authorization`).
    token: std::sync::Mutex<Option<String>>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    http: reqwest::Client,
    rt: Option<tokio::runtime::Runtime>,
    /// One request's timeout, and a whole call's (all retries).
    request_timeout: Duration,
    call_timeout: Duration,
}

impl EtcdClient {
    pub(crate) fn new(endpoints: Vec<String>, access: EtcdAccess) -> Result<EtcdClient, String> {
        let EtcdAccess { auth, tls } = access;
        let endpoints = match tls.is_set() {
            false => endpoints,
            true => endpoints
                .into_iter()
                .map(|e| match e.strip_prefix("http://") {
                    Some(rest) => format!("https://{rest}"),
                    None => e,
                })
                .collect(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("capi-etcd")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the etcd client: {e}"))?;
        let http = http_client(&tls)?;
        Ok(EtcdClient {
            endpoints,
            auth,
            token: std::sync::Mutex::new(None),
            preferred: AtomicUsize::new(0),
            http,
            rt: Some(rt),
            request_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(6),
        })
    }

    pub(crate) fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.rt.as_ref().expect("runtime lives").spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the etcd client's runtime answers")
    }

    /// The authentication token, exchanged for the credentials on first use.
    fn token(&self) -> Result<Option<String>, EtcdError> {
        let Some(c) = &self.auth else {
            return Ok(None);
        };
        if let Some(t) = self.token.lock().unwrap().clone() {
            return Ok(Some(t));
        }
        let v = self
            .send(
                "/v3/auth/authenticate",
                &json!({"name": c.user, "password": c.password}),
                None,
            )
            .map_err(|e| match e {
                EtcdError::Refused(m) => {
                    EtcdError::Refused(format!("authentication as {:?} failed: {m}", c.user))
                }
                other => other,
            })?;
        let t = v
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        *self.token.lock().unwrap() = Some(t.clone());
        Ok(Some(t))
    }

    /// POST `body` to `path` (e.g. `/v3/kv/range`), failing over between
    /// endpoints until the call's deadline; authenticated when credentials
    /// were given (once more with a new token when etcd says the old one
    /// expired).
    pub(crate) fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let token = self.token()?;
        match self.send(path, &body, token.as_deref()) {
            Err(EtcdError::Refused(m)) if token.is_some() && m.contains("invalid auth token") => {
                *self.token.lock().unwrap() = None;
                let token = self.token()?;
                self.send(path, &body, token.as_deref())
            }
            other => other,
        }
    }

    fn send(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, EtcdError> {
        let method = grpc::method(path)
            .ok_or_else(|| EtcdError::Refused(format!("{path} is not a call capi makes")))?;
        let frame = grpc::request(path, body).map_err(EtcdError::Refused)?;
        let start = Instant::now();
        let n = self.endpoints.len();
        let mut i = self.preferred.load(Ordering::Relaxed);
        let mut last;
        let mut round = 0u32;
        loop {
            let endpoint = &self.endpoints[i % n];
            let req = self
                .request(endpoint, method, frame.clone(), token)
                .timeout(self.request_timeout);
            let reply = self.run(async move {
                let resp = req.send().await.map_err(describe)?;
                let status = resp.status();
                let (parts, body) = http::Response::<reqwest::Body>::from(resp).into_parts();
                let body = http_body_util::BodyExt::collect(body)
                    .await
                    .map_err(describe)?;
                // A gRPC status comes in the headers when the answer has no
                // message (etcd's cleartext server), else in the trailers
                // (its TLS server, and every success).
                let grpc_status =
                    grpc::status(&parts.headers).or_else(|| body.trailers().and_then(grpc::status));
                Ok::<_, String>(Reply {
                    status,
                    grpc_status,
                    bytes: body.to_bytes(),
                })
            });
            let outcome = reply.and_then(|r| r.grpc(path));
            match outcome {
                Ok(Answer::Value(v)) => {
                    self.preferred.store(i % n, Ordering::Relaxed);
                    return Ok(v);
                }
                // 14: unavailable (no leader, leader changed, stopping);
                // 4: deadline exceeded (no quorum).
                Ok(Answer::Error(code, msg)) if code != 14 && code != 4 => {
                    return Err(EtcdError::Refused(msg));
                }
                Ok(Answer::Error(_, msg)) => last = format!("{endpoint}: {msg}"),
                Err(e) => last = format!("{endpoint}: {e}"),
            }
            i += 1;
            if i % n == self.preferred.load(Ordering::Relaxed) % n {
                round += 1;
                std::thread::sleep(Duration::from_millis(100 * u64::from(round.min(5))));
            }
            if start.elapsed() >= self.call_timeout {
                return Err(EtcdError::Unreachable {
                    endpoints: self.endpoints(),
                    waited: start.elapsed(),
                    last,
                });
            }
        }
    }

    /// A gRPC call's request: `method` (`/<service>/<method>`) at
    /// `endpoint`, one frame, the token as etcd's metadata.
    fn request(
        &self,
        endpoint: &str,
        method: &str,
        frame: Vec<u8>,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(format!("{endpoint}{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame);
        if let Some(t) = token {
            req = req.header("token", t);
        }
        req
    }

    /// Wait until `key` is deleted (a watch from `from_revision`), at most
    /// `max`. True when a deletion was seen; false on timeout or error (the
    /// caller checks again either way). A watch that cannot start or ends
    /// early (etcd cancelled it: a compacted revision, say) still waits out
    /// `max`, so the caller's loop never spins.
    pub(crate) fn wait_deleted(&self, key: &[u8], from_revision: i64, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let i = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        let token = match self.token() {
            Ok(t) => t,
            Err(_) => {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return false;
            }
        };
        let req = self
            .request(
                &self.endpoints[i],
                "/etcdserverpb.Watch/Watch",
                grpc::watch_request(key, from_revision),
                token.as_deref(),
            )
            .timeout(deadline.saturating_duration_since(Instant::now()));
        self.run(async move {
            if let Ok(mut resp) = req.send().await {
                let mut buf = Vec::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.extend_from_slice(&chunk);
                    match grpc::watch_saw_delete(&mut buf) {
                        Ok(true) => return true,
                        Ok(false) => {}
                        Err(_) => break,
                    }
                }
            }
            tokio::time::sleep_until(deadline.into()).await;
            false
        })
    }
}

/// What one endpoint answered.
struct Reply {
    status: reqwest::StatusCode,
    /// `grpc-status` and `grpc-message`, when the headers carry them (every
    /// error of a unary call).
    grpc_status: Option<(i64, String)>,
    bytes: bytes::Bytes,
}

/// An answer, or etcd's error (a gRPC status code and its message).
enum Answer {
    Value(Value),
    Error(i64, String),
}

impl Reply {
    fn grpc(self, path: &str) -> Result<Answer, String> {
        if !self.status.is_success() {
            return Err(format!(
                "{}: not a gRPC answer (is it an etcd client URL?)",
                self.status
            ));
        }
        match self.grpc_status {
            Some((code, msg)) if code != 0 => Ok(Answer::Error(code, msg)),
            None if self.bytes.is_empty() => Ok(Answer::Error(
                2,
                "etcd answered with neither a message nor a gRPC status".into(),
            )),
            _ => grpc::answer(path, &self.bytes).map(Answer::Value),
        }
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    // The innermost cause says what happened (a TLS failure is a connect
    // error too).
    let mut why = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    let tls = [
        "certificate",
        "Certificate",
        "tls",
        "TLS",
        "handshake",
        "alert",
    ];
    if tls.iter().any(|w| why.contains(w)) {
        format!("TLS failed: {why}")
    } else if e.is_connect() && (why.contains("refused") || why.contains("unreachable")) {
        "connection refused or unreachable".into()
    } else if e.is_connect() {
        // A member that wants a client certificate may close the connection
        // instead of sending an alert (TLS 1.3 checks it after the client
        // has finished its handshake).
        format!("{why} (if the member wants TLS or a client certificate: ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY)")
    } else if why.is_empty() {
        e.to_string()
    } else {
        format!("{why} (is it an etcd client URL, with TLS when the member wants it: ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY?)")
    }
}

impl Drop for EtcdClient {
    fn drop(&mut self) {
        // Never blocks (the client may be dropped inside an async command).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_integers() {
        let v = json!({"a": "12", "b": 3});
        assert_eq!(int(&v, "a"), 12);
        assert_eq!(int(&v, "b"), 3);
        assert_eq!(int(&v, "c"), 0);
    }

    /// A CA and a client certificate it signed, as PEM files in `dir`.
    fn pki(dir: &std::path::Path) -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["capi".to_string()])
            .unwrap()
            .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
        let files = TlsFiles {
            ca: Some(dir.join("ca.pem")),
            cert: Some(dir.join("client.pem")),
            key: Some(dir.join("client-key.pem")),
        };
        std::fs::write(files.ca.as_ref().unwrap(), ca.pem()).unwrap();
        std::fs::write(files.cert.as_ref().unwrap(), cert.pem()).unwrap();
        std::fs::write(files.key.as_ref().unwrap(), key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn tls_files_configure_the_client_and_https_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let tls = pki(dir.path());
        assert!(http_client(&tls).is_ok());
        assert!(http_client(&TlsFiles {
            ca: tls.ca.clone(),
            ..TlsFiles::default()
        })
        .is_ok());
        let access = EtcdAccess {
            auth: None,
            tls: tls.clone(),
        };
        let c = EtcdClient::new(vec!["http://127.0.0.1:1".into()], access).unwrap();
        assert_eq!(c.endpoints(), "https://127.0.0.1:1");
        let c = EtcdClient::new(vec!["http://127.0.0.1:1".into()], EtcdAccess::default()).unwrap();
        assert_eq!(c.endpoints(), "http://127.0.0.1:1");

        let err = |t: TlsFiles| http_client(&t).unwrap_err();
        let e = err(TlsFiles {
            key: None,
            ..tls.clone()
        });
        assert!(e.contains("ETCDCTL_CERT is set without ETCDCTL_KEY"), "{e}");
        let e = err(TlsFiles {
            cert: None,
            ..tls.clone()
        });
        assert!(e.contains("without ETCDCTL_CERT"), "{e}");
        let e = err(TlsFiles {
            ca: Some(dir.path().join("absent.pem")),
            ..tls.clone()
        });
        assert!(
            e.contains("ETCDCTL_CACERT=") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
        let e = err(TlsFiles {
            ca: Some(dir.path().join("junk.pem")),
            ..tls.clone()
        });
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = err(TlsFiles {
            key: Some(dir.path().join("junk.pem")),
            ..tls
        });
        assert!(e.contains("not a PEM certificate and private key"), "{e}");
    }
}

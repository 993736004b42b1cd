//! etcd's gRPC protocol, for every call the backend makes (key-value,
//! leases, the lock's watch, authentication). It replaced etcd's JSON
//! gateway, which decodes JSON and calls the member's own gRPC server for
//! every request: that cost the three members on this project's 2-core
//! machine 45% more CPU per batch of puts (docs/state-backends.md), and
//! etcd refuses gateway requests from a client certificate when
//! authentication is on.
//!
//! The messages are written by hand with `prost`'s derive (the fields of
//! `etcdserverpb`'s `rpc.proto` and `mvccpb`'s `kv.proto` that capi uses,
//! with their upstream tag numbers): no protoc, no build script. Requests
//! arrive in the gateway's JSON shape (what the rest of the backend builds,
//! named by the gateway's paths) and answers leave in it: [`request`] and
//! [`answer`] translate.
//!
//! A unary gRPC call is an HTTP/2 POST to `/<service>/<method>` whose body
//! is one frame (a zero byte, the length as a big-endian u32, the message);
//! the answer is one frame too and the status (`grpc-status`,
//! `grpc-message`) comes in its trailers, or in its headers when there is no
//! message (etcd's cleartext server answers errors that way; its TLS server
//! sends an empty body and the status in the trailers).

use prost::Message;
use serde_json::{json, Map, Value};

use super::client::{b64, int, unb64};

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub(crate) revision: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub(crate) create_revision: i64,
    #[prost(int64, tag = "3")]
    pub(crate) mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub(crate) version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub(crate) lease: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) limit: i64,
    #[prost(int64, tag = "4")]
    pub(crate) revision: i64,
    #[prost(bool, tag = "8")]
    pub(crate) keys_only: bool,
    #[prost(bool, tag = "9")]
    pub(crate) count_only: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub(crate) more: bool,
    #[prost(int64, tag = "4")]
    pub(crate) count: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) lease: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub(crate) deleted: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RequestOp {
    #[prost(oneof = "Request", tags = "1, 2, 3, 4")]
    pub(crate) request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Request {
    #[prost(message, tag = "1")]
    Range(RangeRequest),
    #[prost(message, tag = "2")]
    Put(PutRequest),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ResponseOp {
    #[prost(oneof = "Response", tags = "1, 2, 3, 4")]
    pub(crate) response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Response {
    #[prost(message, tag = "1")]
    Range(RangeResponse),
    #[prost(message, tag = "2")]
    Put(PutResponse),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeResponse),
    #[prost(message, tag = "4")]
    Txn(TxnResponse),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Compare {
    /// EQUAL 0, GREATER 1, LESS 2, NOT_EQUAL 3.
    #[prost(int32, tag = "1")]
    pub(crate) result: i32,
    /// VERSION 0, CREATE 1, MOD 2, VALUE 3, LEASE 4.
    #[prost(int32, tag = "2")]
    pub(crate) target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) key: Vec<u8>,
    #[prost(oneof = "TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub(crate) target_union: Option<TargetUnion>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum TargetUnion {
    #[prost(int64, tag = "4")]
    Version(i64),
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    #[prost(bytes = "vec", tag = "7")]
    Value(Vec<u8>),
    #[prost(int64, tag = "8")]
    Lease(i64),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) failure: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub(crate) succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub(crate) responses: Vec<ResponseOp>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub(crate) ttl: i64,
    #[prost(int64, tag = "2")]
    pub(crate) id: i64,
}

/// `LeaseGrantResponse`, `LeaseKeepAliveResponse`, `LeaseTimeToLiveResponse`
/// and `LeaseRevokeResponse` share their first fields (the grant's `error`
/// is 4 where time-to-live has `grantedTTL`).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub(crate) id: i64,
    #[prost(int64, tag = "3")]
    pub(crate) ttl: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseGrantResponse {
    #[prost(int64, tag = "2")]
    pub(crate) id: i64,
    #[prost(int64, tag = "3")]
    pub(crate) ttl: i64,
    #[prost(string, tag = "4")]
    pub(crate) error: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseTimeToLiveResponse {
    #[prost(int64, tag = "2")]
    pub(crate) id: i64,
    #[prost(int64, tag = "3")]
    pub(crate) ttl: i64,
    #[prost(int64, tag = "4")]
    pub(crate) granted_ttl: i64,
}

/// `LeaseRevokeRequest`, `LeaseKeepAliveRequest`, `LeaseTimeToLiveRequest`
/// (without `keys`): the lease's ID in field 1.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseId {
    #[prost(int64, tag = "1")]
    pub(crate) id: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AuthenticateRequest {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) password: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AuthenticateResponse {
    #[prost(string, tag = "2")]
    pub(crate) token: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) start_revision: i64,
}

/// `WatchRequest` with its `create_request` (field 1 of the
/// `request_union`).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub(crate) create_request: Option<WatchCreateRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Event {
    /// PUT 0, DELETE 1.
    #[prost(int32, tag = "1")]
    pub(crate) kind: i32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WatchResponse {
    #[prost(bool, tag = "4")]
    pub(crate) canceled: bool,
    #[prost(message, repeated, tag = "11")]
    pub(crate) events: Vec<Event>,
}

/// The gRPC method of a gateway path, for the calls made in gRPC.
pub(crate) fn method(path: &str) -> Option<&'static str> {
    match path {
        "/v3/kv/range" => Some("/etcdserverpb.KV/Range"),
        "/v3/kv/txn" => Some("/etcdserverpb.KV/Txn"),
        "/v3/lease/grant" => Some("/etcdserverpb.Lease/LeaseGrant"),
        "/v3/lease/revoke" => Some("/etcdserverpb.Lease/LeaseRevoke"),
        // A stream: one request, then the end of the client's side; etcd
        // answers once and ends the call.
        "/v3/lease/keepalive" => Some("/etcdserverpb.Lease/LeaseKeepAlive"),
        "/v3/lease/timetolive" => Some("/etcdserverpb.Lease/LeaseTimeToLive"),
        "/v3/auth/authenticate" => Some("/etcdserverpb.Auth/Authenticate"),
        _ => None,
    }
}

/// The body of a `Watch` call that creates one watch of `key` from
/// `start_revision` (the client's side then ends; etcd keeps the watch).
pub(crate) fn watch_request(key: &[u8], start_revision: i64) -> Vec<u8> {
    frame(
        &WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: key.to_vec(),
                start_revision,
            }),
        }
        .encode_to_vec(),
    )
}

/// Take the complete frames off the front of `buf`: true when one of them
/// reports a deletion; `Err` when etcd cancelled the watch or a frame does
/// not decode.
pub(crate) fn watch_saw_delete(buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut deleted = false;
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        let w = WatchResponse::decode(&buf[5..5 + len])
            .map_err(|e| format!("not a watch answer ({e})"))?;
        buf.drain(..5 + len);
        deleted |= w.events.iter().any(|e| e.kind == 1);
        if w.canceled && !deleted {
            return Err("etcd cancelled the watch".into());
        }
    }
    Ok(deleted)
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    frame
}

/// The request body (one gRPC frame) for a gateway-shaped JSON request.
pub(crate) fn request(path: &str, body: &Value) -> Result<Vec<u8>, String> {
    let id = LeaseId {
        id: int(body, "ID"),
    };
    let msg = match path {
        "/v3/kv/range" => range_request(body).encode_to_vec(),
        "/v3/kv/txn" => txn_request(body)?.encode_to_vec(),
        "/v3/lease/grant" => LeaseGrantRequest {
            ttl: int(body, "TTL"),
            id: int(body, "ID"),
        }
        .encode_to_vec(),
        "/v3/lease/revoke" | "/v3/lease/keepalive" | "/v3/lease/timetolive" => id.encode_to_vec(),
        "/v3/auth/authenticate" => {
            let text = |f: &str| {
                body.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            AuthenticateRequest {
                name: text("name"),
                password: text("password"),
            }
            .encode_to_vec()
        }
        other => return Err(format!("{other} is not a gRPC call here")),
    };
    Ok(frame(&msg))
}

/// The answer to `path` in the gateway's JSON shape, from the body of a
/// successful gRPC answer.
pub(crate) fn answer(path: &str, body: &[u8]) -> Result<Value, String> {
    let msg = unframe(body)?;
    let decoded = |e: prost::DecodeError| format!("not an etcd answer ({e})");
    let mut m = Map::new();
    match path {
        "/v3/kv/range" => return Ok(range_json(RangeResponse::decode(msg).map_err(decoded)?)),
        "/v3/kv/txn" => return Ok(txn_json(TxnResponse::decode(msg).map_err(decoded)?)),
        "/v3/lease/grant" => {
            let r = LeaseGrantResponse::decode(msg).map_err(decoded)?;
            put_int(&mut m, "ID", r.id);
            put_int(&mut m, "TTL", r.ttl);
            if !r.error.is_empty() {
                m.insert("error".into(), Value::String(r.error));
            }
        }
        "/v3/lease/revoke" | "/v3/lease/keepalive" => {
            let r = LeaseResponse::decode(msg).map_err(decoded)?;
            m.insert("header".into(), header_json(r.header));
            put_int(&mut m, "ID", r.id);
            put_int(&mut m, "TTL", r.ttl);
        }
        "/v3/lease/timetolive" => {
            let r = LeaseTimeToLiveResponse::decode(msg).map_err(decoded)?;
            put_int(&mut m, "ID", r.id);
            put_int(&mut m, "TTL", r.ttl);
            put_int(&mut m, "grantedTTL", r.granted_ttl);
        }
        "/v3/auth/authenticate" => {
            let r = AuthenticateResponse::decode(msg).map_err(decoded)?;
            m.insert("token".into(), Value::String(r.token));
        }
        other => return Err(format!("{other} is not a gRPC call here")),
    }
    Ok(Value::Object(m))
}

/// The one message of a unary answer.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    if body.len() < 5 {
        return Err(format!(
            "the gRPC answer has {} bytes, not a whole frame",
            body.len()
        ));
    }
    if body[0] != 0 {
        return Err("the gRPC answer is compressed; capi asks for none".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.get(5..5 + len).ok_or_else(|| {
        format!(
            "the gRPC answer is cut short ({} of {len} bytes)",
            body.len() - 5
        )
    })
}

/// The gRPC status (code and message) in these headers or trailers.
pub(crate) fn status(h: &http::HeaderMap) -> Option<(i64, String)> {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let code = text("grpc-status")?;
    Some((
        code.trim().parse().unwrap_or(2),
        status_message(text("grpc-message").unwrap_or_default()),
    ))
}

/// `grpc-message` is percent-encoded.
fn status_message(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bytes_of(v: &Value, field: &str) -> Vec<u8> {
    v.get(field).map(unb64).unwrap_or_default()
}

fn range_request(v: &Value) -> RangeRequest {
    RangeRequest {
        key: bytes_of(v, "key"),
        range_end: bytes_of(v, "range_end"),
        limit: int(v, "limit"),
        revision: int(v, "revision"),
        keys_only: v.get("keys_only").and_then(Value::as_bool) == Some(true),
        count_only: v.get("count_only").and_then(Value::as_bool) == Some(true),
    }
}

fn ops(v: &Value, field: &str) -> Result<Vec<RequestOp>, String> {
    let Some(list) = v.get(field) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| format!("{field} is not a list"))?;
    list.iter().map(op).collect()
}

fn op(v: &Value) -> Result<RequestOp, String> {
    let request = if let Some(r) = v.get("request_range") {
        Request::Range(range_request(r))
    } else if let Some(p) = v.get("request_put") {
        Request::Put(PutRequest {
            key: bytes_of(p, "key"),
            value: bytes_of(p, "value"),
            lease: int(p, "lease"),
        })
    } else if let Some(d) = v.get("request_delete_range") {
        Request::DeleteRange(DeleteRangeRequest {
            key: bytes_of(d, "key"),
            range_end: bytes_of(d, "range_end"),
        })
    } else if let Some(t) = v.get("request_txn") {
        Request::Txn(txn_request(t)?)
    } else {
        return Err(format!("unknown transaction operation {v}"));
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

fn compare(v: &Value) -> Result<Compare, String> {
    let named = |field: &str, names: &[&str]| {
        let name = v.get(field).and_then(Value::as_str).unwrap_or(names[0]);
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| i as i32)
            .ok_or_else(|| format!("unknown compare {field} {name:?}"))
    };
    let target = named("target", &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])?;
    let target_union = Some(match target {
        0 => TargetUnion::Version(int(v, "version")),
        1 => TargetUnion::CreateRevision(int(v, "create_revision")),
        2 => TargetUnion::ModRevision(int(v, "mod_revision")),
        3 => TargetUnion::Value(bytes_of(v, "value")),
        _ => TargetUnion::Lease(int(v, "lease")),
    });
    Ok(Compare {
        result: named("result", &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])?,
        target,
        key: bytes_of(v, "key"),
        target_union,
    })
}

fn txn_request(v: &Value) -> Result<TxnRequest, String> {
    let compare = match v.get("compare") {
        None => Vec::new(),
        Some(c) => c
            .as_array()
            .ok_or("compare is not a list")?
            .iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
    };
    Ok(TxnRequest {
        compare,
        success: ops(v, "success")?,
        failure: ops(v, "failure")?,
    })
}

/// The gateway's conventions: 64-bit integers as strings, bytes in base64,
/// zeros and `false` left out.
fn put_int(m: &mut Map<String, Value>, field: &str, n: i64) {
    if n != 0 {
        m.insert(field.into(), Value::String(n.to_string()));
    }
}

fn header_json(h: Option<ResponseHeader>) -> Value {
    let mut m = Map::new();
    put_int(&mut m, "revision", h.map_or(0, |h| h.revision));
    Value::Object(m)
}

fn kv_json(kv: KeyValue) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), Value::String(b64(&kv.key)));
    put_int(&mut m, "create_revision", kv.create_revision);
    put_int(&mut m, "mod_revision", kv.mod_revision);
    put_int(&mut m, "version", kv.version);
    if !kv.value.is_empty() {
        m.insert("value".into(), Value::String(b64(&kv.value)));
    }
    put_int(&mut m, "lease", kv.lease);
    Value::Object(m)
}

fn range_json(r: RangeResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(r.header));
    if !r.kvs.is_empty() {
        let kvs = r.kvs.into_iter().map(kv_json).collect();
        m.insert("kvs".into(), Value::Array(kvs));
    }
    if r.more {
        m.insert("more".into(), Value::Bool(true));
    }
    put_int(&mut m, "count", r.count);
    Value::Object(m)
}

fn txn_json(t: TxnResponse) -> Value {
    let responses: Vec<Value> = t
        .responses
        .into_iter()
        .map(|r| match r.response {
            Some(Response::Range(x)) => json!({"response_range": range_json(x)}),
            Some(Response::Put(x)) => json!({"response_put": {"header": header_json(x.header)}}),
            Some(Response::DeleteRange(x)) => {
                let mut m = Map::new();
                m.insert("header".into(), header_json(x.header));
                put_int(&mut m, "deleted", x.deleted);
                json!({ "response_delete_range": m })
            }
            Some(Response::Txn(x)) => json!({"response_txn": txn_json(x)}),
            None => json!({}),
        })
        .collect();
    let mut m = Map::new();
    m.insert("header".into(), header_json(t.header));
    if t.succeeded {
        m.insert("succeeded".into(), Value::Bool(true));
    }
    if !responses.is_empty() {
        m.insert("responses".into(), Value::Array(responses));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_transaction_encodes_with_upstream_tags() {
        let body = json!({
            "compare": [{"key": b64(b"lock"), "target": "CREATE", "result": "EQUAL", "create_revision": "7"}],
            "success": [{"request_put": {"key": b64(b"k"), "value": b64(b"v"), "lease": "5"}},
                        {"request_txn": {"compare": [{"key": b64(b"s"), "target": "VALUE", "result": "LESS", "value": b64(b"9")}],
                                         "success": [{"request_delete_range": {"key": b64(b"a"), "range_end": b64(b"b")}}]}}],
            "failure": [{"request_range": {"key": b64(b"lock"), "limit": "1", "keys_only": true}}]
        });
        let frame = request("/v3/kv/txn", &body).unwrap();
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            frame.len() - 5
        );
        let t = TxnRequest::decode(&frame[5..]).unwrap();
        assert_eq!(
            t.compare[0],
            Compare {
                result: 0,
                target: 1,
                key: b"lock".to_vec(),
                target_union: Some(TargetUnion::CreateRevision(7)),
            }
        );
        // Hand-checked wire bytes of the first compare: field 2 (target)
        // varint 1, field 3 (key) "lock", field 5 (create_revision) 7.
        assert_eq!(
            t.compare[0].encode_to_vec(),
            [0x10, 1, 0x1a, 4, b'l', b'o', b'c', b'k', 0x28, 7]
        );
        let Some(Request::Put(p)) = &t.success[0].request else {
            panic!("{:?}", t.success[0])
        };
        assert_eq!(
            (p.key.as_slice(), p.value.as_slice(), p.lease),
            (&b"k"[..], &b"v"[..], 5)
        );
        let Some(Request::Txn(inner)) = &t.success[1].request else {
            panic!("{:?}", t.success[1])
        };
        assert_eq!(inner.compare[0].result, 2);
        assert_eq!(
            inner.compare[0].target_union,
            Some(TargetUnion::Value(b"9".to_vec()))
        );
        let Some(Request::Range(r)) = &t.failure[0].request else {
            panic!("{:?}", t.failure[0])
        };
        assert!(r.keys_only && r.limit == 1);
        assert!(request("/v3/kv/txn", &json!({"success": [{"request_nothing": {}}]})).is_err());
        assert!(request("/v3/kv/txn", &json!({"compare": [{"target": "SIZE"}]})).is_err());
    }

    #[test]
    fn answers_take_the_gateway_shape() {
        let t = TxnResponse {
            header: Some(ResponseHeader { revision: 42 }),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(Response::Range(RangeResponse {
                    header: None,
                    kvs: vec![KeyValue {
                        key: b"k".to_vec(),
                        mod_revision: 40,
                        value: b"v".to_vec(),
                        ..Default::default()
                    }],
                    more: true,
                    count: 3,
                })),
            }],
        };
        let mut body = vec![0];
        let msg = t.encode_to_vec();
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(&msg);
        let v = answer("/v3/kv/txn", &body).unwrap();
        assert_eq!(int(&v["header"], "revision"), 42);
        assert_eq!(v["succeeded"], json!(true));
        let r = &v["responses"][0]["response_range"];
        assert_eq!(r["more"], json!(true));
        assert_eq!(int(r, "count"), 3);
        assert_eq!(unb64(&r["kvs"][0]["key"]), b"k");
        assert_eq!(unb64(&r["kvs"][0]["value"]), b"v");
        assert_eq!(int(&r["kvs"][0], "mod_revision"), 40);
        assert_eq!(r["kvs"][0].get("lease"), None);
        // A frame cut short, and a compressed one, are errors.
        assert!(answer("/v3/kv/txn", &body[..body.len() - 1]).is_err());
        body[0] = 1;
        assert!(answer("/v3/kv/txn", &body).is_err());
    }

    #[test]
    fn lease_auth_and_watch_messages_use_upstream_tags() {
        let body = |path: &str, v: Value| request(path, &v).unwrap()[5..].to_vec();
        // LeaseGrantRequest: TTL is field 1.
        assert_eq!(body("/v3/lease/grant", json!({"TTL": "15"})), [0x08, 15]);
        // Revoke, keep-alive, time-to-live: the ID in field 1.
        for p in [
            "/v3/lease/revoke",
            "/v3/lease/keepalive",
            "/v3/lease/timetolive",
        ] {
            assert_eq!(body(p, json!({"ID": "300"})), [0x08, 0xac, 0x02], "{p}");
        }
        // AuthenticateRequest: name 1, password 2.
        assert_eq!(
            body(
                "/v3/auth/authenticate",
                json!({"name": "u", "password": "p"})
            ),
            [0x0a, 1, b'u', 0x12, 1, b'p']
        );
        // WatchRequest.create_request (1) { key 1, start_revision 3 }.
        assert_eq!(
            watch_request(b"k", 9)[5..],
            [0x0a, 5, 0x0a, 1, b'k', 0x18, 9]
        );

        let framed = |msg: Vec<u8>| frame(&msg);
        // LeaseKeepAliveResponse { header 1 { revision 3 }, ID 2, TTL 3 }.
        let v = answer(
            "/v3/lease/keepalive",
            &framed(vec![0x0a, 2, 0x18, 7, 0x10, 0xac, 0x02, 0x18, 14]),
        )
        .unwrap();
        assert_eq!((int(&v, "ID"), int(&v, "TTL")), (300, 14));
        // LeaseTimeToLiveResponse: grantedTTL is 4; an expired lease has TTL -1.
        let mut ttl = vec![0x10, 1, 0x18];
        ttl.extend_from_slice(&[0xff; 9]);
        ttl.extend_from_slice(&[0x01, 0x20, 15]);
        let v = answer("/v3/lease/timetolive", &framed(ttl)).unwrap();
        assert_eq!(
            (int(&v, "ID"), int(&v, "TTL"), int(&v, "grantedTTL")),
            (1, -1, 15)
        );
        // LeaseGrantResponse { ID 2, TTL 3, error 4 }.
        let v = answer("/v3/lease/grant", &framed(vec![0x10, 5, 0x18, 15])).unwrap();
        assert_eq!((int(&v, "ID"), int(&v, "TTL")), (5, 15));
        // AuthenticateResponse: token is 2.
        let v = answer("/v3/auth/authenticate", &framed(vec![0x12, 2, b't', b'k'])).unwrap();
        assert_eq!(v["token"], "tk");

        // Watch answers: created (no event), then a PUT, then a DELETE
        // (events are field 11, an event's type field 1), split anywhere.
        let created = framed(vec![0x18, 1]);
        let put = framed(vec![0x5a, 0]);
        let delete = framed(vec![0x5a, 2, 0x08, 1]);
        let mut stream: Vec<u8> = [created, put, delete].concat();
        let mut buf = Vec::new();
        let tail = stream.split_off(9);
        buf.extend_from_slice(&stream);
        assert_eq!(watch_saw_delete(&mut buf), Ok(false));
        buf.extend_from_slice(&tail[..tail.len() - 1]);
        assert_eq!(watch_saw_delete(&mut buf), Ok(false));
        buf.extend_from_slice(&tail[tail.len() - 1..]);
        assert_eq!(watch_saw_delete(&mut buf), Ok(true));
        assert!(buf.is_empty());
        let mut cancelled = framed(vec![0x20, 1]);
        assert!(watch_saw_delete(&mut cancelled).is_err());
    }

    #[test]
    fn statuses_are_read_and_their_messages_percent_decoded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", "3".parse().unwrap());
        h.insert(
            "grpc-message",
            "etcdserver: duplicate key given in txn request%0Ax%"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            status(&h),
            Some((
                3,
                "etcdserver: duplicate key given in txn request\nx%".into()
            ))
        );
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status(&h).map(|s| s.0), Some(2));
    }
}

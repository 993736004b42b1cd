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

mod messages;
#[cfg(test)]
mod tests;

use messages::*;

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

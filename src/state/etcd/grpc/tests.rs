//! The wire bytes of the messages and the translation to and from the
//! gateway's JSON shape.

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

//! An in-memory cloud implementing [`OpenStackApi`], for unit tests of the
//! provider's logic (tests.rs): objects kept as API-shaped JSON, list
//! filters applied as the services apply them, failures injected on demand.
//! Test-only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{ApiError, CallCounter, Kind, OpenStackApi, Query};

impl Query {
    /// Does an object match, as the services filter?
    fn matches(&self, v: &Value) -> bool {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let tags: Vec<&str> = v
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.tags.iter().all(|t| tags.contains(&t.as_str()))
            && self.id.as_deref().is_none_or(|x| s("id") == Some(x))
            && self.name.as_deref().is_none_or(|x| s("name") == Some(x))
            && self
                .network_id
                .as_deref()
                .is_none_or(|x| s("network_id") == Some(x))
            && self
                .device_id
                .as_deref()
                .is_none_or(|x| s("device_id") == Some(x))
            && self.external.is_none_or(|x| {
                v.get("router:external")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    == x
            })
    }
}

/// An in-memory cloud implementing [`OpenStackApi`], for unit tests of the
/// provider's logic. Servers become ACTIVE at once, except with a flavor
/// named `unschedulable` (ERROR, with a fault, like Nova's "No valid host").
#[derive(Default)]
pub(crate) struct MemoryApi {
    pub(crate) objects: Mutex<BTreeMap<Kind, Vec<Value>>>,
    pub(crate) members: Mutex<BTreeMap<String, Vec<Value>>>,
    pub(crate) flavors: Vec<Value>,
    pub(crate) images: Vec<Value>,
    pub(crate) keypairs: Vec<String>,
    /// Operations that fail once with this status (`"create server"` → 503).
    pub(crate) fail_once: Mutex<BTreeMap<String, u16>>,
    seq: Mutex<u64>,
    calls: CallCounter,
}

impl MemoryApi {
    /// A cloud with an external network `public`, flavors `m1.small` and
    /// `unschedulable`, image `tiny` and key pair `key`.
    pub(crate) fn seeded() -> MemoryApi {
        let m = MemoryApi {
            flavors: vec![
                json!({"id": "f-small", "name": "m1.small", "vcpus": 1, "ram": 512, "disk": 1}),
                json!({"id": "f-bad", "name": "unschedulable", "vcpus": 1, "ram": 512, "disk": 1}),
            ],
            images: vec![json!({"id": "i-tiny", "name": "tiny", "tags": [], "status": "active"})],
            keypairs: vec!["key".into()],
            ..Default::default()
        };
        m.objects.lock().unwrap().insert(
            Kind::Network,
            vec![json!({"id": "ext-net", "name": "public", "router:external": true, "tags": []})],
        );
        m
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut s = self.seq.lock().unwrap();
        *s += 1;
        format!("{prefix}-{:04}", *s)
    }

    fn injected(&self, op: &str, kind: Kind) -> Result<(), ApiError> {
        let key = format!("{op} {}", kind.as_str());
        if let Some(status) = self.fail_once.lock().unwrap().remove(&key) {
            return Err(ApiError::new(
                Some(status),
                format!("injected failure of {key}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn all(&self, kind: Kind) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(&kind)
            .cloned()
            .unwrap_or_default()
    }

    /// Remove an object behind the provider's back.
    pub(crate) fn remove(&self, kind: Kind, id: &str) {
        if let Some(v) = self.objects.lock().unwrap().get_mut(&kind) {
            v.retain(|o| o["id"] != id);
        }
    }
}

#[async_trait]
impl OpenStackApi for MemoryApi {
    async fn list(&self, kind: Kind, q: &Query) -> Result<Vec<Value>, ApiError> {
        self.calls.count("list", kind.as_str());
        self.injected("list", kind)?;
        let mut out: Vec<Value> = self
            .all(kind)
            .into_iter()
            .filter(|o| q.matches(o))
            .collect();
        if kind == Kind::SecurityGroup {
            let rules = self.all(Kind::SecurityGroupRule);
            for sg in &mut out {
                let id = sg["id"].clone();
                sg["security_group_rules"] = Value::Array(
                    rules
                        .iter()
                        .filter(|r| r["security_group_id"] == id)
                        .cloned()
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, ApiError> {
        self.calls.count("get", kind.as_str());
        self.injected("get", kind)?;
        Ok(self.all(kind).into_iter().find(|o| o["id"] == id))
    }

    async fn create(&self, kind: Kind, body: &Value) -> Result<Value, ApiError> {
        self.calls.count("create", kind.as_str());
        self.injected("create", kind)?;
        let mut o = body.clone();
        let id = self.next_id(kind.as_str().split(' ').next().unwrap_or("x"));
        o["id"] = json!(id);
        if o.get("tags").is_none() {
            o["tags"] = json!([]);
        }
        match kind {
            Kind::Port => {
                let n = *self.seq.lock().unwrap() % 250 + 2;
                let subnet = self
                    .all(Kind::Subnet)
                    .into_iter()
                    .find(|s| s["network_id"] == o["network_id"])
                    .ok_or_else(|| ApiError::new(Some(400), "network has no subnet"))?;
                let cidr = subnet["cidr"].as_str().unwrap_or("10.0.0.0/24");
                let base = cidr.rsplit_once('.').map(|x| x.0).unwrap_or("10.0.0");
                o["fixed_ips"] =
                    json!([{"subnet_id": subnet["id"], "ip_address": format!("{base}.{n}")}]);
                o["status"] = json!("DOWN");
                o["device_id"] = json!("");
            }
            Kind::FloatingIp => {
                let n = *self.seq.lock().unwrap() % 250 + 2;
                o["floating_ip_address"] = json!(format!("203.0.113.{n}"));
                if o.get("port_id").is_none() {
                    o["port_id"] = Value::Null;
                }
            }
            Kind::Server => {
                let flavor = o["flavorRef"].as_str().unwrap_or_default().to_string();
                if flavor == "f-bad" {
                    o["status"] = json!("ERROR");
                    o["fault"] = json!({"code": 500, "message": "No valid host was found. "});
                } else {
                    o["status"] = json!("ACTIVE");
                }
                let mut addresses = serde_json::Map::new();
                let mut objects = self.objects.lock().unwrap();
                if let Some(ports) = objects.get_mut(&Kind::Port) {
                    for nw in o["networks"].as_array().cloned().unwrap_or_default() {
                        if let Some(p) = ports.iter_mut().find(|p| p["id"] == nw["port"]) {
                            p["device_id"] = json!(id);
                            p["status"] = json!("ACTIVE");
                            addresses.insert(
                                "net".into(),
                                json!([{"addr": p["fixed_ips"][0]["ip_address"], "OS-EXT-IPS:type": "fixed"}]),
                            );
                        }
                    }
                }
                drop(objects);
                o["addresses"] = Value::Object(addresses);
            }
            Kind::LoadBalancer => {
                o["provisioning_status"] = json!("ACTIVE");
                o["operating_status"] = json!("ONLINE");
                o["vip_address"] = json!("10.6.0.250");
                o["vip_port_id"] = json!(format!("{id}-vip"));
                o["pools"] = json!([]);
                o["listeners"] = json!([]);
            }
            Kind::Router => {
                o["interfaces"] = json!([]);
            }
            _ => {}
        }
        self.objects
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .push(o.clone());
        Ok(o)
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, ApiError> {
        self.calls.count("delete", kind.as_str());
        self.injected("delete", kind)?;
        let mut objects = self.objects.lock().unwrap();
        if kind == Kind::Subnet {
            let in_use = objects
                .get(&Kind::Port)
                .into_iter()
                .flatten()
                .any(|p| p["fixed_ips"][0]["subnet_id"] == id)
                || objects.get(&Kind::Router).into_iter().flatten().any(|r| {
                    r["interfaces"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|s| s == id))
                });
            if in_use {
                return Err(ApiError::new(
                    Some(409),
                    "One or more ports have an IP allocation from this subnet.",
                ));
            }
        }
        if kind == Kind::Server {
            if let Some(ports) = objects.get_mut(&Kind::Port) {
                for p in ports.iter_mut().filter(|p| p["device_id"] == id) {
                    p["device_id"] = json!("");
                    p["status"] = json!("DOWN");
                }
            }
        }
        let list = objects.entry(kind).or_default();
        let before = list.len();
        list.retain(|o| o["id"] != id);
        Ok(list.len() != before)
    }

    async fn set_tags(&self, kind: Kind, id: &str, tags: &[String]) -> Result<(), ApiError> {
        self.calls.count("tag", kind.as_str());
        let mut objects = self.objects.lock().unwrap();
        let o = objects
            .entry(kind)
            .or_default()
            .iter_mut()
            .find(|o| o["id"] == id)
            .ok_or_else(|| ApiError::new(Some(404), "not found"))?;
        o["tags"] = json!(tags);
        Ok(())
    }

    async fn set_subnet_dns(&self, id: &str, dns: &[String]) -> Result<(), ApiError> {
        self.calls.count("update", "subnet");
        let mut objects = self.objects.lock().unwrap();
        let o = objects
            .entry(Kind::Subnet)
            .or_default()
            .iter_mut()
            .find(|o| o["id"] == id)
            .ok_or_else(|| ApiError::new(Some(404), "subnet not found"))?;
        o["dns_nameservers"] = json!(dns);
        Ok(())
    }

    async fn router_interface(
        &self,
        router: &str,
        subnet: &str,
        add: bool,
    ) -> Result<(), ApiError> {
        self.calls.count(
            if add {
                "add-interface"
            } else {
                "remove-interface"
            },
            "router",
        );
        let mut objects = self.objects.lock().unwrap();
        let r = objects
            .entry(Kind::Router)
            .or_default()
            .iter_mut()
            .find(|o| o["id"] == router)
            .ok_or_else(|| ApiError::new(Some(404), "router not found"))?;
        let mut ifs: Vec<Value> = r["interfaces"].as_array().cloned().unwrap_or_default();
        ifs.retain(|s| s != subnet);
        if add {
            ifs.push(json!(subnet));
        }
        r["interfaces"] = Value::Array(ifs);
        Ok(())
    }

    async fn associate_floating_ip(
        &self,
        fip: &str,
        port: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.calls.count("update", "floating IP");
        let mut objects = self.objects.lock().unwrap();
        let f = objects
            .entry(Kind::FloatingIp)
            .or_default()
            .iter_mut()
            .find(|o| o["id"] == fip)
            .ok_or_else(|| ApiError::new(Some(404), "floating IP not found"))?;
        f["port_id"] = port.map(|p| json!(p)).unwrap_or(Value::Null);
        Ok(f.clone())
    }

    async fn create_lb_child(&self, what: &str, body: &Value) -> Result<Value, ApiError> {
        self.calls.count("create", what);
        let id = self.next_id(what);
        let mut objects = self.objects.lock().unwrap();
        let lbs = objects.entry(Kind::LoadBalancer).or_default();
        let mut out = body.clone();
        out["id"] = json!(id);
        match what {
            "listener" => {
                let lb = lbs
                    .iter_mut()
                    .find(|l| l["id"] == body["loadbalancer_id"])
                    .ok_or_else(|| ApiError::new(Some(404), "no lb"))?;
                lb["listeners"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": id}));
            }
            "pool" => {
                let lb = lbs
                    .iter_mut()
                    .find(|l| {
                        l["listeners"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x["id"] == body["listener_id"]))
                    })
                    .ok_or_else(|| ApiError::new(Some(404), "no listener"))?;
                lb["pools"].as_array_mut().unwrap().push(json!({"id": id}));
                drop(objects);
                self.members.lock().unwrap().insert(
                    format!("pool:{id}"),
                    vec![json!({"id": id, "healthmonitor_id": null})],
                );
            }
            _ => {
                drop(objects);
                let mut m = self.members.lock().unwrap();
                if let Some(p) = m.get_mut(&format!(
                    "pool:{}",
                    body["pool_id"].as_str().unwrap_or_default()
                )) {
                    p[0]["healthmonitor_id"] = json!(id);
                }
            }
        }
        Ok(out)
    }

    async fn get_pool(&self, id: &str) -> Result<Option<Value>, ApiError> {
        self.calls.count("get", "pool");
        Ok(self
            .members
            .lock()
            .unwrap()
            .get(&format!("pool:{id}"))
            .map(|p| p[0].clone()))
    }

    async fn add_member(&self, pool: &str, body: &Value) -> Result<Value, ApiError> {
        self.calls.count("create", "member");
        let mut m = body.clone();
        m["id"] = json!(self.next_id("member"));
        self.members
            .lock()
            .unwrap()
            .entry(pool.to_string())
            .or_default()
            .push(m.clone());
        Ok(m)
    }

    async fn remove_member(&self, pool: &str, member: &str) -> Result<bool, ApiError> {
        self.calls.count("delete", "member");
        let mut all = self.members.lock().unwrap();
        let list = all.entry(pool.to_string()).or_default();
        let before = list.len();
        list.retain(|m| m["id"] != member);
        Ok(before != list.len())
    }

    async fn list_members(&self, pool: &str) -> Result<Vec<Value>, ApiError> {
        self.calls.count("list", "member");
        Ok(self
            .members
            .lock()
            .unwrap()
            .get(pool)
            .cloned()
            .unwrap_or_default())
    }

    async fn find_flavor(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        self.calls.count("list", "flavor");
        Ok(self
            .flavors
            .iter()
            .filter(|f| id.is_none_or(|i| f["id"] == i) && name.is_none_or(|n| f["name"] == n))
            .cloned()
            .collect())
    }

    async fn find_image(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        tags: &[String],
    ) -> Result<Vec<Value>, ApiError> {
        self.calls.count("list", "image");
        Ok(self
            .images
            .iter()
            .filter(|i| {
                id.is_none_or(|x| i["id"] == x)
                    && name.is_none_or(|n| i["name"] == n)
                    && tags.iter().all(|t| {
                        i["tags"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == t))
                    })
            })
            .cloned()
            .collect())
    }

    async fn get_keypair(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.calls.count("get", "keypair");
        Ok(self
            .keypairs
            .iter()
            .any(|k| k == name)
            .then(|| json!({"name": name})))
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.snapshot()
    }
}

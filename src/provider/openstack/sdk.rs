//! [`OpenStackApi`] on the real services, through `openstack_sdk` 0.22's
//! typed endpoints (no hand-written HTTP: the SDK authenticates, finds the
//! endpoints in the catalog and sends the requests). Lists, reads, deletes,
//! tags and the Octavia and Nova calls are here; creation requests, one per
//! kind, are in `sdk/create.rs`.

mod create;

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_trait::async_trait;
use openstack_sdk::api::compute::v2 as compute;
use openstack_sdk::api::image::v2 as image;
use openstack_sdk::api::load_balancer::v2 as lb;
use openstack_sdk::api::network::v2 as net;
use openstack_sdk::api::{ignore, paged, Pagination, QueryAsync, RestEndpoint};
use openstack_sdk::AsyncOpenStack;
use serde_json::Value;

use super::api::{ApiError, CallCounter, Kind, OpenStackApi, Query};

pub(crate) struct SdkApi {
    os: AsyncOpenStack,
    calls: CallCounter,
    /// Files (clouds.yaml, CA) that must outlive the session.
    _files: Option<tempfile::TempDir>,
}

type Res<T> = Result<T, ApiError>;

fn conv<E: std::error::Error + Send + Sync + 'static>(
    e: openstack_sdk::api::ApiError<E>,
) -> ApiError {
    use openstack_sdk::api::ApiError as A;
    let status = match &e {
        A::OpenStack { status, .. }
        | A::OpenStackService { status, .. }
        | A::OpenStackUnrecognized { status, .. } => Some(status.as_u16()),
        _ => None,
    };
    ApiError::new(status, e.to_string())
}

fn build_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Some(400), format!("invalid request: {e}"))
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn strs(v: &Value, k: &str) -> Vec<Cow<'static, str>> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(|s| Cow::Owned(s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn i(v: &Value, k: &str) -> Option<i32> {
    v.get(k).and_then(Value::as_i64).map(|x| x as i32)
}

fn tags_of(q: &Query) -> impl Iterator<Item = Cow<'static, str>> + '_ {
    q.tags.iter().map(|t| Cow::Owned(t.clone()))
}

impl SdkApi {
    /// Authenticate and discover the versioned endpoints (openstack_sdk does
    /// no version discovery by itself: an unversioned catalog URL would be
    /// used as is).
    pub(crate) async fn connect(
        profile: &openstack_sdk::config::CloudConfig,
        files: Option<tempfile::TempDir>,
    ) -> Result<SdkApi, String> {
        let os = AsyncOpenStack::builder(profile)
            .disable_auth_cache(true)
            .microversion_strategy(openstack_sdk::MicroVersionStrategy::Ceiling)
            .connect()
            .await
            .map_err(|e| format!("cannot authenticate to OpenStack: {e}"))?;
        use openstack_sdk::types::ServiceType;
        for st in [
            ServiceType::Network,
            ServiceType::Compute,
            ServiceType::Image,
            ServiceType::LoadBalancer,
        ] {
            os.discover_service_endpoint(&st)
                .await
                .map_err(|e| format!("OpenStack {st} endpoint discovery failed: {e}"))?;
        }
        Ok(SdkApi {
            os,
            calls: CallCounter::default(),
            _files: files,
        })
    }

    async fn one<E>(&self, op: &str, kind: &str, ep: E) -> Res<Value>
    where
        E: RestEndpoint + Sync + Send,
    {
        self.calls.count(op, kind);
        ep.query_async(&self.os).await.map_err(conv)
    }

    async fn many<E>(&self, kind: &str, ep: E) -> Res<Vec<Value>>
    where
        E: RestEndpoint + openstack_sdk::api::Pageable + Sync + Send,
    {
        self.calls.count("list", kind);
        paged(ep, Pagination::All)
            .query_async(&self.os)
            .await
            .map_err(conv)
    }

    async fn gone<E>(&self, op: &str, kind: &str, ep: E) -> Res<bool>
    where
        E: RestEndpoint + Sync + Send,
    {
        self.calls.count(op, kind);
        match ignore(ep).query_async(&self.os).await.map_err(conv) {
            Ok(()) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn opt<E>(&self, kind: &str, ep: E) -> Res<Option<Value>>
    where
        E: RestEndpoint + Sync + Send,
    {
        match self.one("get", kind, ep).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl OpenStackApi for SdkApi {
    async fn list(&self, kind: Kind, q: &Query) -> Res<Vec<Value>> {
        let k = kind.as_str();
        macro_rules! common {
            ($b:ident) => {{
                if !q.tags.is_empty() {
                    $b.tags(tags_of(q));
                }
                if let Some(x) = &q.id {
                    $b.id(x.clone());
                }
            }};
        }
        match kind {
            Kind::Network => {
                let mut b = net::network::list::Request::builder();
                common!(b);
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                if let Some(x) = q.external {
                    b.router_external(x);
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::Subnet => {
                let mut b = net::subnet::list::Request::builder();
                common!(b);
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                if let Some(x) = &q.network_id {
                    b.network_id(x.clone());
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::Router => {
                let mut b = net::router::list::Request::builder();
                common!(b);
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::SecurityGroup => {
                let mut b = net::security_group::list::Request::builder();
                common!(b);
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::SecurityGroupRule => {
                let b = net::security_group_rule::list::Request::builder();
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::Port => {
                let mut b = net::port::list::Request::builder();
                common!(b);
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                if let Some(x) = &q.network_id {
                    b.network_id(x.clone());
                }
                if let Some(x) = &q.device_id {
                    b.device_id(x.clone());
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::FloatingIp => {
                let mut b = net::floatingip::list::Request::builder();
                common!(b);
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::Server => {
                let mut b = compute::server::list_detailed_21::Request::builder();
                if !q.tags.is_empty() {
                    b.tags(q.tags.join(","));
                }
                if let Some(x) = &q.name {
                    // Nova matches names as regular expressions.
                    b.name(format!("^{}$", x.replace('.', "\\.")));
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
            Kind::LoadBalancer => {
                let mut b = lb::loadbalancer::list::Request::builder();
                if !q.tags.is_empty() {
                    b.tags(q.tags.join(","));
                }
                if let Some(x) = &q.id {
                    b.id(x.clone());
                }
                if let Some(x) = &q.name {
                    b.name(x.clone());
                }
                self.many(k, b.build().map_err(build_err)?).await
            }
        }
    }

    async fn get(&self, kind: Kind, id: &str) -> Res<Option<Value>> {
        let k = kind.as_str();
        let id = id.to_string();
        match kind {
            Kind::Network => {
                self.opt(
                    k,
                    net::network::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Subnet => {
                self.opt(
                    k,
                    net::subnet::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Router => {
                self.opt(
                    k,
                    net::router::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::SecurityGroup => {
                self.opt(
                    k,
                    net::security_group::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::SecurityGroupRule => {
                self.opt(
                    k,
                    net::security_group_rule::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Port => {
                self.opt(
                    k,
                    net::port::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::FloatingIp => {
                self.opt(
                    k,
                    net::floatingip::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Server => {
                self.opt(
                    k,
                    compute::server::get_20::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::LoadBalancer => {
                self.opt(
                    k,
                    lb::loadbalancer::get::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
        }
    }

    async fn create(&self, kind: Kind, body: &Value) -> Res<Value> {
        match kind {
            Kind::Network => self.create_network(body).await,
            Kind::Subnet => self.create_subnet(body).await,
            Kind::Router => self.create_router(body).await,
            Kind::SecurityGroup => self.create_security_group(body).await,
            Kind::SecurityGroupRule => self.create_security_group_rule(body).await,
            Kind::Port => self.create_port(body).await,
            Kind::FloatingIp => self.create_floating_ip(body).await,
            Kind::Server => self.create_server(body).await,
            Kind::LoadBalancer => self.create_load_balancer(body).await,
        }
    }

    async fn delete(&self, kind: Kind, id: &str) -> Res<bool> {
        let k = kind.as_str();
        let id = id.to_string();
        match kind {
            Kind::Network => {
                self.gone(
                    "delete",
                    k,
                    net::network::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Subnet => {
                self.gone(
                    "delete",
                    k,
                    net::subnet::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Router => {
                self.gone(
                    "delete",
                    k,
                    net::router::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::SecurityGroup => {
                self.gone(
                    "delete",
                    k,
                    net::security_group::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::SecurityGroupRule => {
                self.gone(
                    "delete",
                    k,
                    net::security_group_rule::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Port => {
                self.gone(
                    "delete",
                    k,
                    net::port::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::FloatingIp => {
                self.gone(
                    "delete",
                    k,
                    net::floatingip::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::Server => {
                self.gone(
                    "delete",
                    k,
                    compute::server::delete::Request::builder()
                        .id(id)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
            Kind::LoadBalancer => {
                self.gone(
                    "delete",
                    k,
                    lb::loadbalancer::delete::Request::builder()
                        .id(id)
                        .cascade(true)
                        .build()
                        .map_err(build_err)?,
                )
                .await
            }
        }
    }

    async fn set_tags(&self, kind: Kind, id: &str, tags: &[String]) -> Res<()> {
        let k = kind.as_str();
        let t: Vec<Cow<'static, str>> = tags.iter().map(|x| Cow::Owned(x.clone())).collect();
        let id = id.to_string();
        match kind {
            Kind::Network => {
                self.one(
                    "tag",
                    k,
                    net::network::tag::replace::Request::builder()
                        .network_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            Kind::Subnet => {
                self.one(
                    "tag",
                    k,
                    net::subnet::tag::replace::Request::builder()
                        .subnet_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            Kind::Router => {
                self.one(
                    "tag",
                    k,
                    net::router::tag::replace::Request::builder()
                        .router_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            Kind::SecurityGroup => {
                self.one(
                    "tag",
                    k,
                    net::security_group::tag::replace::Request::builder()
                        .security_group_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            Kind::Port => {
                self.one(
                    "tag",
                    k,
                    net::port::tag::replace::Request::builder()
                        .port_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            Kind::FloatingIp => {
                self.one(
                    "tag",
                    k,
                    net::floatingip::tag::replace::Request::builder()
                        .floatingip_id(id)
                        .tags(t)
                        .build()
                        .map_err(build_err)?,
                )
                .await?
            }
            _ => return Err(ApiError::new(None, format!("{k}s are tagged when created"))),
        };
        Ok(())
    }

    async fn set_subnet_dns(&self, id: &str, dns: &[String]) -> Res<()> {
        let mut n = net::subnet::set::SubnetBuilder::default();
        n.dns_nameservers(
            dns.iter()
                .map(|d| Cow::Owned(d.clone()))
                .collect::<Vec<_>>(),
        );
        let ep = net::subnet::set::Request::builder()
            .id(id.to_string())
            .subnet(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("update", "subnet", ep).await?;
        Ok(())
    }

    async fn router_interface(&self, router: &str, subnet: &str, add: bool) -> Res<()> {
        if add {
            let ep = net::router::add_router_interface::Request::builder()
                .id(router.to_string())
                .subnet_id(subnet.to_string())
                .build()
                .map_err(build_err)?;
            self.one("add-interface", "router", ep).await?;
        } else {
            let ep = net::router::remove_router_interface::Request::builder()
                .id(router.to_string())
                .subnet_id(subnet.to_string())
                .build()
                .map_err(build_err)?;
            self.one("remove-interface", "router", ep).await?;
        }
        Ok(())
    }

    async fn associate_floating_ip(&self, fip: &str, port: Option<&str>) -> Res<Value> {
        let mut f = net::floatingip::set::FloatingipBuilder::default();
        f.port_id(port.map(|p| Cow::Owned(p.to_string())));
        let ep = net::floatingip::set::Request::builder()
            .id(fip.to_string())
            .floatingip(f.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("update", "floating IP", ep).await
    }

    async fn create_lb_child(&self, what: &str, body: &Value) -> Res<Value> {
        match what {
            "listener" => {
                use lb::listener::create as c;
                let mut n = c::ListenerBuilder::default();
                n.loadbalancer_id(s(body, "loadbalancer_id").unwrap_or_default())
                    .protocol(c::ListenerProtocol::Tcp)
                    .protocol_port(i(body, "protocol_port").unwrap_or(6443));
                if let Some(x) = s(body, "name") {
                    n.name(x);
                }
                let ep = c::Request::builder()
                    .listener(n.build().map_err(build_err)?)
                    .build()
                    .map_err(build_err)?;
                self.one("create", what, ep).await
            }
            "pool" => {
                use lb::pool::create as c;
                let mut n = c::PoolBuilder::default();
                n.listener_id(s(body, "listener_id").unwrap_or_default())
                    .protocol(c::Protocol::Tcp)
                    .lb_algorithm(c::LbAlgorithm::RoundRobin);
                if let Some(x) = s(body, "name") {
                    n.name(x);
                }
                let ep = c::Request::builder()
                    .pool(n.build().map_err(build_err)?)
                    .build()
                    .map_err(build_err)?;
                self.one("create", what, ep).await
            }
            _ => {
                use lb::healthmonitor::create as c;
                let mut n = c::HealthmonitorBuilder::default();
                n.pool_id(s(body, "pool_id").unwrap_or_default())
                    ._type(c::Type::Tcp)
                    .delay(10)
                    .timeout(5)
                    .max_retries(5)
                    .max_retries_down(3);
                if let Some(x) = s(body, "name") {
                    n.name(x);
                }
                let ep = c::Request::builder()
                    .healthmonitor(n.build().map_err(build_err)?)
                    .build()
                    .map_err(build_err)?;
                self.one("create", "healthmonitor", ep).await
            }
        }
    }

    async fn get_pool(&self, id: &str) -> Res<Option<Value>> {
        let ep = lb::pool::get::Request::builder()
            .id(id.to_string())
            .build()
            .map_err(build_err)?;
        self.opt("pool", ep).await
    }

    async fn add_member(&self, pool: &str, body: &Value) -> Res<Value> {
        let mut m = lb::pool::member::create::MemberBuilder::default();
        m.address(s(body, "address").unwrap_or_default());
        m.protocol_port(i(body, "protocol_port").unwrap_or(6443));
        if let Some(x) = s(body, "name") {
            m.name(x);
        }
        if let Some(x) = s(body, "subnet_id") {
            m.subnet_id(x);
        }
        let ep = lb::pool::member::create::Request::builder()
            .pool_id(pool.to_string())
            .member(m.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", "member", ep).await
    }

    async fn remove_member(&self, pool: &str, member: &str) -> Res<bool> {
        let ep = lb::pool::member::delete::Request::builder()
            .pool_id(pool.to_string())
            .id(member.to_string())
            .build()
            .map_err(build_err)?;
        self.gone("delete", "member", ep).await
    }

    async fn list_members(&self, pool: &str) -> Res<Vec<Value>> {
        let ep = lb::pool::member::list::Request::builder()
            .pool_id(pool.to_string())
            .build()
            .map_err(build_err)?;
        self.many("member", ep).await
    }

    async fn find_flavor(&self, id: Option<&str>, name: Option<&str>) -> Res<Vec<Value>> {
        if let Some(id) = id {
            let ep = compute::flavor::get_20::Request::builder()
                .id(id.to_string())
                .build()
                .map_err(build_err)?;
            return Ok(self.opt("flavor", ep).await?.into_iter().collect());
        }
        let ep = compute::flavor::list_detailed_20::Request::builder()
            .build()
            .map_err(build_err)?;
        let all = self.many("flavor", ep).await?;
        Ok(all
            .into_iter()
            .filter(|f| name.is_none_or(|n| f["name"] == n))
            .collect())
    }

    async fn find_image(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        tags: &[String],
    ) -> Res<Vec<Value>> {
        if let Some(id) = id {
            let ep = image::image::get::Request::builder()
                .id(id.to_string())
                .build()
                .map_err(build_err)?;
            return Ok(self.opt("image", ep).await?.into_iter().collect());
        }
        let mut b = image::image::list::Request::builder();
        if let Some(n) = name {
            b.name(n.to_string());
        }
        if !tags.is_empty() {
            b.tag(tags.iter().map(|t| Cow::Owned(t.clone())));
        }
        self.many("image", b.build().map_err(build_err)?).await
    }

    async fn get_keypair(&self, name: &str) -> Res<Option<Value>> {
        let ep = compute::keypair::get_20::Request::builder()
            .id(name.to_string())
            .build()
            .map_err(build_err)?;
        self.opt("keypair", ep).await
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.snapshot()
    }
}

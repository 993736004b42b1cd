//! Creation requests: the API-shaped JSON bodies the rooms build, turned
//! into `openstack_sdk`'s typed create endpoints, one function per kind.
//! Only the fields the provider sets are carried over.

use std::borrow::Cow;

use openstack_sdk::api::compute::v2 as compute;
use openstack_sdk::api::load_balancer::v2 as lb;
use openstack_sdk::api::network::v2 as net;
use serde_json::Value;

use super::{build_err, i, s, strs, Res, SdkApi};
use crate::provider::openstack::api::Kind;

impl SdkApi {
    /// A network (`name`, `description`, `mtu`, `port_security_enabled`).
    pub(super) async fn create_network(&self, body: &Value) -> Res<Value> {
        let k = Kind::Network.as_str();
        let mut n = net::network::create::NetworkBuilder::default();
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        if let Some(x) = body.get("mtu").and_then(Value::as_u64) {
            n.mtu(x as u32);
        }
        if let Some(x) = body.get("port_security_enabled").and_then(Value::as_bool) {
            n.port_security_enabled(x);
        }
        let ep = net::network::create::Request::builder()
            .network(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// An IPv4 subnet (`network_id`, `cidr`, `name`, `description`, `dns_nameservers`,
    /// `allocation_pools`).
    pub(super) async fn create_subnet(&self, body: &Value) -> Res<Value> {
        let k = Kind::Subnet.as_str();
        let mut n = net::subnet::create::SubnetBuilder::default();
        n.network_id(s(body, "network_id").unwrap_or_default())
            .ip_version(4);
        n.cidr(s(body, "cidr").map(Cow::Owned));
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        let dns = strs(body, "dns_nameservers");
        if !dns.is_empty() {
            n.dns_nameservers(dns);
        }
        if let Some(pools) = body.get("allocation_pools").and_then(Value::as_array) {
            let mut out = Vec::new();
            for p in pools {
                out.push(
                    net::subnet::create::AllocationPoolsBuilder::default()
                        .start(s(p, "start").unwrap_or_default())
                        .end(s(p, "end").unwrap_or_default())
                        .build()
                        .map_err(build_err)?,
                );
            }
            n.allocation_pools(out);
        }
        let ep = net::subnet::create::Request::builder()
            .subnet(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A router (`name`, `description`, `external_gateway_info.network_id`).
    pub(super) async fn create_router(&self, body: &Value) -> Res<Value> {
        let k = Kind::Router.as_str();
        let mut n = net::router::create::RouterBuilder::default();
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        if let Some(ext) = body
            .pointer("/external_gateway_info/network_id")
            .and_then(Value::as_str)
        {
            n.external_gateway_info(Some(
                net::router::create::ExternalGatewayInfoBuilder::default()
                    .network_id(ext.to_string())
                    .build()
                    .map_err(build_err)?,
            ));
        }
        let ep = net::router::create::Request::builder()
            .router(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A security group (`name`, `description`).
    pub(super) async fn create_security_group(&self, body: &Value) -> Res<Value> {
        let k = Kind::SecurityGroup.as_str();
        let mut n = net::security_group::create::SecurityGroupBuilder::default();
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        let ep = net::security_group::create::Request::builder()
            .security_group(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A security group rule (`security_group_id`, `direction`, `ethertype`, `protocol`, port
    /// range, remote prefix or group, `description`).
    pub(super) async fn create_security_group_rule(&self, body: &Value) -> Res<Value> {
        let k = Kind::SecurityGroupRule.as_str();
        use net::security_group_rule::create::{Direction, Ethertype};
        let mut n = net::security_group_rule::create::SecurityGroupRuleBuilder::default();
        n.security_group_id(s(body, "security_group_id").unwrap_or_default());
        n.direction(if s(body, "direction").as_deref() == Some("egress") {
            Direction::Egress
        } else {
            Direction::Ingress
        });
        n.ethertype(if s(body, "ethertype").as_deref() == Some("IPv6") {
            Ethertype::Ipv6
        } else {
            Ethertype::Ipv4
        });
        if let Some(x) = s(body, "protocol") {
            n.protocol(x);
        }
        if let Some(x) = i(body, "port_range_min") {
            n.port_range_min(Some(x));
        }
        if let Some(x) = i(body, "port_range_max") {
            n.port_range_max(Some(x));
        }
        if let Some(x) = s(body, "remote_ip_prefix") {
            n.remote_ip_prefix(x);
        }
        if let Some(x) = s(body, "remote_group_id") {
            n.remote_group_id(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        let ep = net::security_group_rule::create::Request::builder()
            .security_group_rule(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A port (`network_id`, `name`, `description`, `security_groups`, `tags`, `fixed_ips`).
    pub(super) async fn create_port(&self, body: &Value) -> Res<Value> {
        let k = Kind::Port.as_str();
        let mut n = net::port::create::PortBuilder::default();
        n.network_id(s(body, "network_id").unwrap_or_default());
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        n.security_groups(strs(body, "security_groups"));
        let tags = strs(body, "tags");
        if !tags.is_empty() {
            n.tags(tags);
        }
        if let Some(ips) = body.get("fixed_ips").and_then(Value::as_array) {
            let mut out = Vec::new();
            for f in ips {
                let mut fb = net::port::create::FixedIpsBuilder::default();
                if let Some(x) = s(f, "subnet_id") {
                    fb.subnet_id(x);
                }
                if let Some(x) = s(f, "ip_address") {
                    fb.ip_address(x);
                }
                out.push(fb.build().map_err(build_err)?);
            }
            n.fixed_ips(out);
        }
        let ep = net::port::create::Request::builder()
            .port(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A floating IP (`floating_network_id`, `description`, `port_id`, `floating_ip_address`).
    pub(super) async fn create_floating_ip(&self, body: &Value) -> Res<Value> {
        let k = Kind::FloatingIp.as_str();
        let mut n = net::floatingip::create::FloatingipBuilder::default();
        n.floating_network_id(s(body, "floating_network_id").unwrap_or_default());
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        if let Some(x) = s(body, "port_id") {
            n.port_id(Some(Cow::Owned(x)));
        }
        if let Some(x) = s(body, "floating_ip_address") {
            n.floating_ip_address(Some(Cow::Owned(x)));
        }
        let ep = net::floatingip::create::Request::builder()
            .floatingip(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// A server (`name`, `flavorRef`, `imageRef`, `key_name`, `availability_zone`, `user_data`,
    /// `config_drive`, `tags`, `metadata`, `networks` of ports, `block_device_mapping_v2` for a
    /// root volume booted from the image).
    pub(super) async fn create_server(&self, body: &Value) -> Res<Value> {
        let k = Kind::Server.as_str();
        use compute::server::create_290 as c;
        let mut n = c::ServerBuilder::default();
        n.name(s(body, "name").unwrap_or_default());
        n.flavor_ref(s(body, "flavorRef").unwrap_or_default());
        if let Some(x) = s(body, "imageRef") {
            n.image_ref(x);
        }
        if let Some(x) = s(body, "key_name") {
            n.key_name(x);
        }
        if let Some(x) = s(body, "availability_zone") {
            n.availability_zone(x);
        }
        if let Some(x) = s(body, "user_data") {
            n.user_data(x);
        }
        if let Some(x) = body.get("config_drive").and_then(Value::as_bool) {
            n.config_drive(x);
        }
        let tags = strs(body, "tags");
        if !tags.is_empty() {
            n.tags(tags);
        }
        if let Some(m) = body.get("metadata").and_then(Value::as_object) {
            n.metadata(
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((Cow::Owned(k.clone()), Cow::Owned(v.as_str()?.to_string())))
                    })
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
        }
        let mut nets = Vec::new();
        for nw in body
            .get("networks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let mut nb = c::NetworksBuilder::default();
            if let Some(p) = s(&nw, "port") {
                nb.port(Some(Cow::Owned(p)));
            }
            nets.push(nb.build().map_err(build_err)?);
        }
        n.networks(c::ServerNetworks::F1(nets));
        if let Some(bdm) = body
            .get("block_device_mapping_v2")
            .and_then(Value::as_array)
        {
            let mut out = Vec::new();
            for d in bdm {
                let mut db = c::BlockDeviceMappingV2Builder::default();
                db.boot_index(Some(Cow::Owned("0".to_string())))
                    .source_type(c::SourceType::Image)
                    .destination_type(c::DestinationType::Volume)
                    .delete_on_termination(true);
                if let Some(x) = s(d, "uuid") {
                    db.uuid(x);
                }
                if let Some(x) = i(d, "volume_size") {
                    db.volume_size(x);
                }
                if let Some(x) = s(d, "volume_type") {
                    db.volume_type(Some(Cow::Owned(x)));
                }
                out.push(db.build().map_err(build_err)?);
            }
            n.block_device_mapping_v2(out);
        }
        let ep = c::Request::builder()
            .server(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }

    /// An Octavia load balancer (`name`, `description`, `vip_subnet_id`, `vip_network_id`,
    /// `provider`, `tags`).
    pub(super) async fn create_load_balancer(&self, body: &Value) -> Res<Value> {
        let k = Kind::LoadBalancer.as_str();
        use lb::loadbalancer::create as c;
        let mut n = c::LoadbalancerBuilder::default();
        if let Some(x) = s(body, "name") {
            n.name(x);
        }
        if let Some(x) = s(body, "description") {
            n.description(x);
        }
        if let Some(x) = s(body, "vip_subnet_id") {
            n.vip_subnet_id(x);
        }
        if let Some(x) = s(body, "vip_network_id") {
            n.vip_network_id(x);
        }
        if let Some(x) = s(body, "provider") {
            n.provider(x);
        }
        let tags = strs(body, "tags");
        if !tags.is_empty() {
            n.tags(tags);
        }
        let ep = c::Request::builder()
            .loadbalancer(n.build().map_err(build_err)?)
            .build()
            .map_err(build_err)?;
        self.one("create", k, ep).await
    }
}

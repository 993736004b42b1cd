//! Tests against real OpenStack services (see docs/providers/openstack.md).

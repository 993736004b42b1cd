//! Tests against a real Docker Engine (see docs/providers/docker.md).

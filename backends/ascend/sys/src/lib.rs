//! ACL bindings (being written).

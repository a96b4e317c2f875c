//! The `vendor_mgmt` schema and every query against it. Operator and gateway both use this
//! crate, so the schema and its queries live in exactly one place.

pub mod migrate;
pub mod providers;
pub mod sessions;
pub mod status;

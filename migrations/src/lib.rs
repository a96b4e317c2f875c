//! The `vendor_mgmt` schema and every query against it. Operator and gateway both use this
//! crate, so the schema and its queries live in exactly one place.

pub mod accounts;
pub mod error;
pub mod messaging;
pub mod migrate;
pub mod providers;
pub mod secret;
pub mod sessions;
pub mod status;

pub use error::DbError;
pub use migrate::migrate;
pub use secret::Secret;
pub use sqlx::PgPool;

//! The messaging core: submit, encoding and splitting, routing, receipts, correlation and
//! callbacks. Shared by the HTTP API and (later) the SMPP server.

pub mod callbacks;
pub mod customer;
pub mod encoding;
pub mod ids;
pub mod model;
pub mod outbox;
pub mod receipt;
pub mod receipts;
pub mod router;
pub mod store;
pub mod submit;

#[cfg(test)]
pub(crate) mod tests;

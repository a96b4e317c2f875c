//! The messaging core: submit, encoding and splitting, routing, receipts, correlation and
//! callbacks. Shared by the HTTP API and (later) the SMPP server.

pub mod encoding;

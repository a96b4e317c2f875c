//! Real-parts test harness: the environment `make env-up` started (apiserver, PostgreSQL,
//! Redis, SMSC simulator), private instances for tests that must stop or break a part,
//! and the polling and process helpers every end-to-end test shares.

pub mod accounts;
pub mod bench;
pub mod env;
pub mod esme;
pub mod http;
pub mod leak;
pub mod operator;
pub mod postgres;
pub mod process;
pub mod sink;
pub mod smsc;
pub mod wait;

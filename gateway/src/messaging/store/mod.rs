//! Messages, correlations and idempotency keys in Redis.
//!
//! Keys are laid out for Redis Cluster: everything of one message shares the hash tag of its
//! id, every correlation key has its own tag, and no command or script spans two tags. So a
//! move to a cluster needs no data migration.
//!
//! | Key | Type | What |
//! |---|---|---|
//! | `msg:{<id>}` | hash | the message: `vendor`, `vendor_id`, `parts`, `vids` (JSON), `submitted_at`, `status`, `done_at`, `error_code`, `client_ref`, `callback_url`, `p:<n>` (each part's status); for a customer's SMPP submit `account` (receipt asked for or not), `origin_account`, `origin_to`, `origin_from`, and `outboxed` once its receipt is in the account's outbox |
//! | `msg:{<id>}:h` | list | its history, one JSON entry each |
//! | `c:{<vendor_id>:<id key>}` | string | `<message id>:<part>` for a vendor message id (see `ids`) |
//! | `c:{<vendor_id>:<id key>}:p` | list | receipts that arrived before that mapping (parked) |
//! | `idem:{<api key name>:<Idempotency-Key>}` | string | JSON: body hash, state, the first answer |
//! | `ob:{<account id>}` | stream | a customer account's receipts waiting for its sessions (`outbox`) |
//!
//! Every key expires after the DLR TTL (`--dlr-ttl`, 72 h by default).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messaging::customer::{CustomerReceipt, Origin};
use crate::messaging::model::{HistoryEntry, MessageStatus, MessageView};

pub mod memory;
pub mod redis;

pub use self::redis::{Conn, RedisStore, connect};

/// The store the messaging core uses: Redis in production, `memory::MemoryStore` in fast
/// tests. Both keep the same semantics (see each method).
pub type Store = Arc<dyn MessageStore>;

#[async_trait::async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// False while the store is known to be unreachable: submits are refused before sending.
    fn healthy(&self) -> bool;
    /// How long messages and correlations are kept.
    fn ttl(&self) -> Duration;
    /// Writes the message, its history and the mappings (correlation key, part); returns the
    /// receipts (JSON) that were parked under those keys, handing them over atomically. A
    /// receipt parked under several keys comes back once per key (`receipts::apply_parked`
    /// applies it once).
    async fn create(
        &self,
        m: &NewMessage,
        history: &[HistoryEntry],
        mappings: &[(String, u32)],
    ) -> Result<Vec<String>, StoreError>;
    /// The first of `keys` that is mapped; when none is, parks `receipt_json` under every key
    /// and returns None.
    async fn correlate_or_park(
        &self,
        keys: &[String],
        receipt_json: &str,
    ) -> Result<Option<Correlated>, StoreError>;
    /// Takes one copy of `receipt_json` back out of `key`'s parking list. False when it is no
    /// longer there: a mapping written meanwhile took it (and applies it).
    async fn unpark(&self, key: &str, receipt_json: &str) -> Result<bool, StoreError>;
    /// Records one part's receipt and derives the message's status (`model::overall`); a part
    /// already final keeps its status. None when the message is not stored. The change carries
    /// `customer` when a final receipt finds the message final, with an origin, and not yet
    /// `mark_outboxed` (so a resent receipt whose first push failed pushes again).
    async fn apply_receipt(
        &self,
        id: &str,
        part: u32,
        status: MessageStatus,
        error_code: Option<&str>,
        entry: &HistoryEntry,
    ) -> Result<Option<StatusChange>, StoreError>;
    /// Notes that the message's customer receipt is in its outbox: later receipts for it
    /// carry no `customer`. Nothing happens when the message is not stored.
    async fn mark_outboxed(&self, id: &str) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<MessageView>, StoreError>;
    /// Claims an Idempotency-Key for a body hash, or says what it holds.
    async fn idem_begin(&self, owner: &str, key: &str, hash: &str)
    -> Result<IdemBegin, StoreError>;
    async fn idem_finish(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
        code: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Gives the key up when nothing was sent, so a retry may send.
    async fn idem_abort(&self, owner: &str, key: &str) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis is unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
}

/// A message as it is first written, once every part has its vendor message id.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub vendor: String,
    pub vendor_id: Uuid,
    pub parts: u32,
    pub vendor_message_ids: Vec<String>,
    pub submitted_at: DateTime<Utc>,
    pub status: MessageStatus,
    pub error_code: Option<String>,
    pub client_ref: Option<String>,
    pub callback_url: Option<String>,
    /// Set when a customer submitted it over SMPP: its receipt goes to that account's outbox.
    pub origin: Option<Origin>,
    /// The customer account that submitted it over SMPP (None for HTTP submits).
    pub account: Option<Uuid>,
}

/// A receipt's id found mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlated {
    pub id: String,
    pub part: u32,
    /// Which of the looked-up keys matched (0: the first, the exact one under `Auto`).
    pub key: usize,
}

/// A status change a receipt caused; the caller sends the callback.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub from: MessageStatus,
    pub to: MessageStatus,
    /// When the message has a callback_url: what its status callback says.
    pub callback: Option<Callback>,
    /// What the customer's receipt needs, when one is due (see `apply_receipt`).
    pub customer: Option<CustomerFinal>,
}

/// What a status callback needs, read in the step that applied the receipt (a second read
/// per callback cost a Redis round trip and the parse of the whole history).
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub url: String,
    pub client_ref: Option<String>,
    pub parts: u32,
    pub done_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
}

/// A final message a customer submitted over SMPP, as its receipt needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFinal {
    pub origin: Origin,
    pub submitted_at: DateTime<Utc>,
    pub done_at: DateTime<Utc>,
    pub error_code: Option<String>,
}

impl CustomerFinal {
    /// The receipt for message `id`, final with `status`.
    pub fn receipt(&self, id: &str, status: MessageStatus) -> CustomerReceipt {
        CustomerReceipt {
            message_id: id.to_string(),
            to: self.origin.to.clone(),
            from: self.origin.from.clone(),
            status,
            submitted_at: self.submitted_at,
            done_at: self.done_at,
            error_code: self.error_code.clone(),
        }
    }
}

/// An Idempotency-Key's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdemRecord {
    /// SHA-256 of the request body.
    pub hash: String,
    /// None while the first request is in flight.
    pub answer: Option<(u16, serde_json::Value)>,
}

/// What the store knows of an Idempotency-Key when a request arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemBegin {
    /// First use: the caller owns it and must `idem_finish` or `idem_abort`.
    Fresh,
    InFlight,
    Done(u16, serde_json::Value),
    /// Reused with a different body.
    Mismatch,
}

/// The correlation key of a vendor message id key (from `ids::submit_keys`/`receipt_keys`).
pub fn correlation_key(vendor: Uuid, id_key: &str) -> String {
    format!("c:{{{vendor}:{id_key}}}")
}

pub(crate) fn msg_key(id: &str) -> String {
    format!("msg:{{{id}}}")
}

pub(crate) fn history_key(id: &str) -> String {
    format!("msg:{{{id}}}:h")
}

pub(crate) fn idem_key(owner: &str, key: &str) -> String {
    format!("idem:{{{owner}:{key}}}")
}

/// A mapping's value (`<message id>:<part>`), found under looked-up key number `key`.
pub(crate) fn parse_mapping(v: &str, key: usize) -> Result<Correlated, StoreError> {
    let (id, part) = v
        .rsplit_once(':')
        .ok_or_else(|| StoreError::Corrupt(format!("mapping {v:?}")))?;
    let part = part
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("mapping {v:?}")))?;
    Ok(Correlated {
        id: id.to_string(),
        part,
        key,
    })
}

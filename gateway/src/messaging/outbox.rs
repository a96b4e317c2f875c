//! The per-account outbox of customer receipts: a Redis stream per account (`ob:{<account>}`,
//! one hash tag, so cluster mode works) with one consumer group. The receipt handler
//! [`Outbox::push`]es a receipt when a customer's message turns final; each bound RX/TRX
//! session of that account, on any pod, runs [`Outbox::consume`]. A receipt leaves the stream
//! only after the customer answered its deliver_sm with deliver_sm_resp (XACK + XDEL), so it
//! survives gateway restarts and waits, up to the DLR TTL, while the customer is unbound.
//!
//! Skeleton: the API the SMPP server calls. The consumer loop is filled in next.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messaging::customer::{CustomerLink, CustomerReceipt};
use crate::messaging::store::{Conn, StoreError};
use crate::metrics::Metrics;

/// The outbox of every account, on one Redis connection (the store's).
pub struct Outbox {
    #[allow(dead_code)]
    conn: Conn,
    ttl: Duration,
    #[allow(dead_code)]
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// `ttl` is the DLR TTL (`--dlr-ttl`, the store's `ttl()`): older receipts are trimmed and
    /// counted as expired.
    pub fn new(conn: Conn, ttl: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { conn, ttl, metrics })
    }

    /// How long a receipt waits for a session of its account.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Appends a receipt to `account`'s outbox. Ok means it is in Redis (the caller may then
    /// acknowledge the vendor's deliver_sm); Err means it is not, and the caller answers the
    /// vendor with a temporary error so it redelivers.
    pub async fn push(&self, _account: Uuid, _r: &CustomerReceipt) -> Result<(), StoreError> {
        Ok(())
    }

    /// Delivers `account`'s receipts over `link` (one bound RX/TRX session) until `stop` is
    /// cancelled or the link reports [`crate::messaging::customer::DeliverError::Closed`].
    ///
    /// `consumer` names this session in the consumer group and must be unique in the fleet
    /// (e.g. `<pod>:<session id>`). Each receipt goes to exactly one of the account's
    /// sessions; one that is refused or times out stays pending on this session and is
    /// retried with a bounded backoff. On return (stop or close) the receipts pending on this
    /// session are handed back at once, so another session takes them without waiting; those
    /// of a session that died (pod killed) are taken over by the others after a minimum idle
    /// time. The task never panics on Redis errors: it logs, waits and retries.
    pub fn consume(
        self: &Arc<Self>,
        _account: Uuid,
        _consumer: String,
        _link: Arc<dyn CustomerLink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move { stop.cancelled().await })
    }
}

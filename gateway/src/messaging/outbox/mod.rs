//! The per-account outbox of customer receipts: a Redis stream per account (`ob:{<account>}`,
//! one hash tag, so every command and script stays on one cluster slot) with one consumer
//! group. The receipt handler [`Outbox::push`]es a receipt when a customer's message turns
//! final; each bound RX/TRX session of that account, on any pod, runs [`Outbox::consume`].
//!
//! - A receipt leaves the stream only after the customer answered its deliver_sm with a
//!   positive deliver_sm_resp (XACK + XDEL): it survives gateway restarts and waits while the
//!   customer is unbound, up to the DLR TTL (older entries are trimmed and counted `expired`).
//! - Each receipt goes to one session at a time (the consumer group). One that is refused or
//!   times out is parked on the placeholder consumer [`PARKED`] and retried by any session of
//!   the account after a backoff that doubles per attempt, up to `retry_max`.
//! - A session that stops (unbind, shutdown) hands its pending receipts back at once (parked
//!   with a long idle time, so the next poll of any session takes them); those of a session
//!   that died (pod killed) are taken over once they have been idle for `claim_idle`.
//! - Sessions poll (`poll`); a push on the same pod wakes that account's local sessions at
//!   once. Blocking reads would hold the shared, multiplexed Redis connection.
//!
//! Delivery is at least once: a customer may see a receipt twice when its deliver_sm_resp
//! was lost, or when a session was taken for dead while it was still waiting for an answer
//! (`claim_idle` must exceed the sessions' response timeout).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messaging::customer::{CustomerLink, CustomerReceipt};
use crate::messaging::store::{self, Conn, StoreError};
use crate::metrics::Metrics;

mod consumer;
use consumer::Consumer;

/// The consumer group every session of an account reads in.
pub const GROUP: &str = "sessions";
/// The placeholder consumer of refused receipts waiting for their retry, and of those a
/// stopped session handed back. Session names never start with `~`.
pub const PARKED: &str = "~parked";
/// The stream field holding the receipt (JSON of `CustomerReceipt`).
const FIELD: &str = "r";

/// The stream of an account.
pub fn key(account: Uuid) -> String {
    format!("ob:{{{account}}}")
}

/// Timing of the outbox. `OutboxConfig::new(ttl)` has the production defaults.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// The DLR TTL: older receipts are dropped and counted as expired.
    pub ttl: Duration,
    /// A receipt pending this long on another session is taken over (that session is gone).
    pub claim_idle: Duration,
    /// How often an idle session looks for work.
    pub poll: Duration,
    /// Receipts read per round.
    pub batch: usize,
    /// Deliveries in flight per session.
    pub window: usize,
    /// Backoff of a refused receipt: `retry_first`, doubled per attempt, at most `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// How often a session trims expired receipts, reads the depth and forgets dead sessions.
    pub housekeeping: Duration,
    /// A session holding nothing and silent this long is gone: its name is removed from the
    /// group (killed pods' names would pile up).
    pub forget_after: Duration,
    /// How often pushes trim an account's stream and renew its TTL (set this much longer
    /// than `ttl`, so the stream outlives its newest receipt): not on every receipt.
    pub upkeep: Duration,
}

impl OutboxConfig {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            claim_idle: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            batch: 64,
            window: 16,
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            housekeeping: Duration::from_secs(10),
            forget_after: Duration::from_secs(300),
            upkeep: Duration::from_secs(1),
        }
    }
}

/// What happened to receipts, as the `event` label of `smpp_outbox_receipts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Written to the outbox.
    Pushed,
    /// Answered by the customer and removed.
    Delivered,
    /// A delivery attempt that was not the receipt's first (a retry or a takeover).
    Redelivered,
    /// A delivery attempt the customer refused or did not answer in time.
    Failed,
    /// Dropped after the TTL without being delivered.
    Expired,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Pushed => "pushed",
            Event::Delivered => "delivered",
            Event::Redelivered => "redelivered",
            Event::Failed => "failed",
            Event::Expired => "expired",
        }
    }
}

/// One entry of the pending list (XPENDING's extended form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub consumer: String,
    pub idle: Duration,
    pub deliveries: u64,
}

/// The wait before a receipt refused `deliveries` times is retried.
pub fn backoff(cfg: &OutboxConfig, deliveries: u64) -> Duration {
    let doublings = deliveries.saturating_sub(1).min(20) as u32;
    cfg.retry_first
        .saturating_mul(1u32 << doublings)
        .min(cfg.retry_max)
}

/// How long `p` must have been idle before session `me` may take it: its own at once (a
/// session holds nothing between rounds), a parked one after its backoff, another session's
/// after `claim_idle` (that session is taken for dead).
pub fn claim_after(cfg: &OutboxConfig, p: &Pending, me: &str) -> Duration {
    if p.consumer == me {
        Duration::ZERO
    } else if p.consumer == PARKED {
        backoff(cfg, p.deliveries)
    } else {
        cfg.claim_idle
    }
}

/// The stream id before which entries are older than `ttl` (ids are milliseconds).
pub fn min_id(now: SystemTime, ttl: Duration) -> String {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}-0", now.saturating_sub(ttl).as_millis())
}

/// Whether entry `id` is older than `ttl`. An id that does not parse is not expired.
pub fn expired(id: &str, now: SystemTime, ttl: Duration) -> bool {
    let Some(ms) = id.split('-').next().and_then(|m| m.parse::<u64>().ok()) else {
        return false;
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_millis(ms) + ttl < now
}

/// Where the receipt handler puts customer receipts: the [`Outbox`] in production,
/// [`MemoryQueue`] in the fast in-process tests (as `store::memory` is for the store).
#[async_trait::async_trait]
pub trait ReceiptQueue: Send + Sync + 'static {
    /// Ok: it is kept until a session of `account` acknowledges it, and its message is
    /// marked outboxed in the store (`MessageStore::mark_outboxed`; a failed mark is only
    /// logged). Err: it is not kept, and the message is not marked.
    async fn push(&self, account: Uuid, r: &CustomerReceipt) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl ReceiptQueue for Outbox {
    async fn push(&self, account: Uuid, r: &CustomerReceipt) -> Result<(), StoreError> {
        Outbox::push(self, account, r).await
    }
}

/// Receipts pushed, in memory; `set_down` makes pushes fail as an unreachable Redis does.
#[derive(Default)]
pub struct MemoryQueue {
    pushed: Mutex<Vec<(Uuid, CustomerReceipt)>>,
    down: std::sync::atomic::AtomicBool,
    /// The store whose messages a push marks (none: nothing is marked).
    store: Option<Arc<crate::messaging::store::memory::MemoryStore>>,
}

impl MemoryQueue {
    /// A queue whose pushes mark their messages in `store`, as the outbox does in Redis.
    pub fn marking(store: Arc<crate::messaging::store::memory::MemoryStore>) -> Self {
        Self {
            store: Some(store),
            ..Self::default()
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
    }

    /// Everything pushed so far, oldest first.
    pub fn pushed(&self) -> Vec<(Uuid, CustomerReceipt)> {
        self.pushed.lock().expect("queue").clone()
    }
}

#[async_trait::async_trait]
impl ReceiptQueue for MemoryQueue {
    async fn push(&self, account: Uuid, r: &CustomerReceipt) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Corrupt("the memory queue is set down".into()));
        }
        self.pushed
            .lock()
            .expect("queue")
            .push((account, r.clone()));
        if let Some(store) = &self.store {
            use crate::messaging::store::MessageStore;
            store.mark_outboxed(&r.message_id).await?;
        }
        Ok(())
    }
}

/// The outbox of every account, on one Redis connection (the store's).
pub struct Outbox {
    conn: Conn,
    cfg: OutboxConfig,
    metrics: Arc<Metrics>,
    /// Wakes this pod's sessions of an account when a receipt is pushed here; with the
    /// number of sessions using it.
    wakers: Mutex<HashMap<Uuid, (Arc<Notify>, usize)>>,
    /// When each account's stream was last trimmed and its TTL renewed by a push.
    upkept: Mutex<HashMap<Uuid, Instant>>,
}

/// Whether a push at `now` does the upkeep, the last one having been at `last`. Pure.
fn upkeep_due(every: Duration, last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.duration_since(at) >= every)
}

/// What a push does once its pipeline answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterPush {
    Done,
    /// Queued but not marked: only a resent vendor receipt could queue it twice.
    WarnUnmarked,
    /// Marked but not queued: take the mark back, or a resent receipt would not push.
    Unmark,
}

/// Pure: from whether the receipt was queued and whether the mark was written.
fn after_push(queued: bool, marked: bool) -> AfterPush {
    match (queued, marked) {
        (true, false) => AfterPush::WarnUnmarked,
        (false, true) => AfterPush::Unmark,
        _ => AfterPush::Done,
    }
}

/// Whether a push's XADD landed.
#[derive(Debug)]
enum Landed {
    Yes {
        trimmed: u64,
    },
    /// NOMKSTREAM found no stream.
    NoStream,
}

impl Outbox {
    /// `ttl` is the DLR TTL (`--dlr-ttl`, the store's `ttl()`); the rest is the default.
    pub fn new(conn: Conn, ttl: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_config(conn, OutboxConfig::new(ttl), metrics)
    }

    pub fn with_config(conn: Conn, cfg: OutboxConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            cfg,
            metrics,
            wakers: Mutex::new(HashMap::new()),
            upkept: Mutex::new(HashMap::new()),
        })
    }

    /// How long a receipt waits for a session of its account.
    pub fn ttl(&self) -> Duration {
        self.cfg.ttl
    }

    pub fn config(&self) -> &OutboxConfig {
        &self.cfg
    }

    fn count(&self, account: Uuid, e: Event, n: u64) {
        if n > 0 {
            self.metrics
                .outbox
                .with_label_values(&[&account.to_string(), e.as_str()])
                .inc_by(n);
        }
    }

    /// Appends a receipt to `account`'s outbox and marks its message `outboxed` (one
    /// pipeline). Ok means it is in Redis: the caller may acknowledge the vendor's
    /// deliver_sm. Err means it is not, nor is the message marked: the caller answers the
    /// vendor with a temporary error so it redelivers and the receipt is pushed again.
    ///
    /// A mark that fails after the receipt landed is logged and counted, not returned: the
    /// receipt is queued; only a resent vendor receipt would queue it twice.
    pub async fn push(&self, account: Uuid, r: &CustomerReceipt) -> Result<(), StoreError> {
        let upkeep = self.upkeep_due(account, Instant::now());
        let mut landed = self.push_once(account, r, upkeep).await;
        if matches!(landed, Ok(Landed::NoStream)) {
            // Gone since the last upkeep (expired, deleted): create it with its TTL.
            landed = self.push_once(account, r, true).await;
        }
        let trimmed = match landed {
            Ok(Landed::Yes { trimmed }) => trimmed,
            Ok(Landed::NoStream) => {
                return Err(StoreError::Corrupt(format!(
                    "the outbox {} vanished twice while a receipt was pushed",
                    key(account)
                )));
            }
            Err(e) => return Err(e),
        };
        if upkeep {
            self.upkept
                .lock()
                .expect("upkept")
                .insert(account, Instant::now());
        }
        self.count(account, Event::Pushed, 1);
        self.count(account, Event::Expired, trimmed);
        if let Some((n, _)) = self.wakers.lock().expect("wakers").get(&account) {
            n.notify_waiters();
        }
        Ok(())
    }

    /// Whether this push also trims what expired and renews the stream's TTL: once per
    /// `upkeep` per account, not per receipt.
    fn upkeep_due(&self, account: Uuid, now: Instant) -> bool {
        let last = self.upkept.lock().expect("upkept").get(&account).copied();
        upkeep_due(self.cfg.upkeep, last, now)
    }

    /// One try of a push: XADD (NOMKSTREAM without upkeep: only a push that sets the TTL
    /// creates the stream), the mark, and with `upkeep` XTRIM and EXPIRE.
    async fn push_once(
        &self,
        account: Uuid,
        r: &CustomerReceipt,
        upkeep: bool,
    ) -> Result<Landed, StoreError> {
        let key = key(account);
        let json = serde_json::to_string(r).expect("receipt");
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let xadd = pipe.cmd("XADD").arg(&key);
        if !upkeep {
            xadd.arg("NOMKSTREAM");
        }
        xadd.arg("*").arg(FIELD).arg(json);
        pipe.add_command(store::redis::mark_outboxed_cmd(&r.message_id));
        if upkeep {
            pipe.cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(min_id(SystemTime::now(), self.cfg.ttl))
                .cmd("EXPIRE")
                .arg(&key)
                .arg(self.cfg.ttl.as_secs().max(1) + self.cfg.upkeep.as_secs_f64().ceil() as u64);
        }
        let mut c = self.conn.clone();
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut c).await?;
        let mut replies = replies.into_iter();
        let added = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let marked = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let landed = match added {
            Ok(redis::Value::Nil) => Ok(Landed::NoStream),
            Ok(_) => Ok(Landed::Yes {
                trimmed: match replies.next() {
                    Some(Ok(v)) => redis::from_redis_value(v).unwrap_or(0),
                    _ => 0,
                },
            }),
            Err(e) => Err(StoreError::from(e)),
        };
        let queued = matches!(landed, Ok(Landed::Yes { .. }));
        match after_push(queued, marked.is_ok()) {
            AfterPush::Done => {}
            AfterPush::WarnUnmarked => {
                self.metrics
                    .redis_errors
                    .with_label_values(&["receipt"])
                    .inc();
                tracing::warn!(message = %r.message_id, error = ?marked.err(), "customer receipt queued, but the message could not be marked; a resent vendor receipt may queue it twice");
            }
            AfterPush::Unmark => {
                let undone: redis::RedisResult<i64> =
                    store::redis::unmark_outboxed_cmd(&r.message_id)
                        .query_async(&mut c)
                        .await;
                if let Err(e) = undone {
                    tracing::error!(message = %r.message_id, error = %e, "customer receipt not queued and its message stays marked: a resent vendor receipt will not queue it");
                }
            }
        }
        landed
    }

    /// Delivers `account`'s receipts over `link` (one bound RX/TRX session) until `stop` is
    /// cancelled or the link reports
    /// [`DeliverError::Closed`](crate::messaging::customer::DeliverError::Closed); up to
    /// `window` deliveries are in flight at once, so `link` must take concurrent calls.
    ///
    /// `consumer` names this session in the consumer group and must be unique in the fleet
    /// (e.g. `<pod>:<session id>`; not starting with `~`). Each receipt goes to one of the
    /// account's sessions; one that is refused or times out is retried (by any session)
    /// with a bounded backoff. On return (stop or close) the receipts pending on this
    /// session are handed back at once, so another session takes them without waiting.
    /// Redis errors never end the task: it logs, waits and tries again.
    pub fn consume(
        self: &Arc<Self>,
        account: Uuid,
        consumer: String,
        link: Arc<dyn CustomerLink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let c = Consumer {
            outbox: self.clone(),
            account,
            key: key(account),
            name: consumer,
            link,
            stop,
        };
        tokio::spawn(c.run())
    }

    fn waker(&self, account: Uuid) -> Arc<Notify> {
        let mut w = self.wakers.lock().expect("wakers");
        let e = w
            .entry(account)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        e.1 += 1;
        e.0.clone()
    }

    fn drop_waker(&self, account: Uuid) {
        let mut w = self.wakers.lock().expect("wakers");
        if let Some(e) = w.get_mut(&account) {
            e.1 -= 1;
            if e.1 == 0 {
                w.remove(&account);
            }
        }
    }

    /// Receipts in `account`'s outbox and those pending (read, not acknowledged), for tests
    /// and diagnostics.
    pub async fn depth(&self, account: Uuid) -> Result<(u64, u64), StoreError> {
        let mut c = self.conn.clone();
        let len: u64 = redis::cmd("XLEN")
            .arg(key(account))
            .query_async(&mut c)
            .await?;
        // The summary form: count, lowest id, highest id, per-consumer counts.
        let pending: redis::RedisResult<(u64, redis::Value, redis::Value, redis::Value)> =
            redis::cmd("XPENDING")
                .arg(key(account))
                .arg(GROUP)
                .query_async(&mut c)
                .await;
        let pending = match pending {
            Ok((n, ..)) => n,
            Err(e) if is_nogroup(&e) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok((len, pending))
    }
}

/// The stream or its group is missing (first bind, or the stream expired), alone or in a
/// pipeline.
fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
        || e.clone()
            .into_server_errors()
            .is_some_and(|es| es.iter().any(|(_, s)| s.code() == "NOGROUP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn cfg() -> OutboxConfig {
        OutboxConfig::new(Duration::from_secs(3600))
    }

    #[test]
    fn a_mark_without_its_receipt_is_taken_back() {
        assert_eq!(after_push(true, true), AfterPush::Done);
        assert_eq!(after_push(true, false), AfterPush::WarnUnmarked);
        assert_eq!(after_push(false, true), AfterPush::Unmark);
        assert_eq!(after_push(false, false), AfterPush::Done);
    }

    #[test]
    fn pushes_trim_and_renew_the_ttl_once_per_upkeep_interval_not_per_receipt() {
        let every = cfg().upkeep;
        let t0 = Instant::now();
        assert!(upkeep_due(every, None, t0), "an account's first push");
        assert!(!upkeep_due(every, Some(t0), t0 + every / 2));
        assert!(upkeep_due(every, Some(t0), t0 + every));
    }

    fn pending(consumer: &str, idle_ms: u64, deliveries: u64) -> Pending {
        Pending {
            id: "1-0".into(),
            consumer: consumer.into(),
            idle: Duration::from_millis(idle_ms),
            deliveries,
        }
    }

    #[test]
    fn backoff_doubles_per_attempt_and_is_bounded() {
        let c = cfg();
        let secs: Vec<u64> = [1, 2, 3, 4, 7, 100, u64::MAX]
            .iter()
            .map(|d| backoff(&c, *d).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 60, 60, 60]);
        assert_eq!(backoff(&c, 0), c.retry_first);
    }

    #[test]
    fn who_may_take_a_pending_receipt_and_when() {
        let c = cfg();
        // Its own: at once (nothing is in flight between rounds).
        assert_eq!(claim_after(&c, &pending("me", 0, 1), "me"), Duration::ZERO);
        // Parked after a refusal: after the backoff of its attempts.
        assert_eq!(
            claim_after(&c, &pending(PARKED, 0, 3), "me"),
            Duration::from_secs(4)
        );
        // Another session's: only once that session is taken for dead.
        assert_eq!(claim_after(&c, &pending("other", 0, 1), "me"), c.claim_idle);
    }

    #[test]
    fn entries_older_than_the_ttl_are_expired() {
        let ttl = Duration::from_secs(60);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(expired("939000-0", now, ttl));
        assert!(!expired("941000-5", now, ttl));
        assert!(!expired("not-an-id", now, ttl));
        assert_eq!(min_id(now, ttl), "940000-0");
        assert_eq!(min_id(UNIX_EPOCH, ttl), "0-0");
    }

    #[test]
    fn event_labels() {
        let all = [
            Event::Pushed,
            Event::Delivered,
            Event::Redelivered,
            Event::Failed,
            Event::Expired,
        ];
        let labels: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            labels,
            ["pushed", "delivered", "redelivered", "failed", "expired"]
        );
    }
}

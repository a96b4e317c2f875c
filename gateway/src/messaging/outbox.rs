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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messaging::customer::{CustomerLink, CustomerReceipt, DeliverError};
use crate::messaging::store::{Conn, StoreError};
use crate::metrics::Metrics;

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

// Moves every receipt pending on a stopping session to PARKED with a long idle time (JUSTID:
// its attempt count stays), so any session's next poll takes them, then removes the session's
// name. Atomic, so nothing is read by that name in between; nothing at all when the stream or
// the group is gone.
const HAND_BACK: &str = r"
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 100000, ARGV[2])
if not ok then return 0 end
local ids = {}
for _, e in ipairs(p) do ids[#ids + 1] = e[1] end
for i = 1, #ids, 500 do
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], '0'}
  for j = i, math.min(i + 499, #ids) do args[#args + 1] = ids[j] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[4]
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return #ids
";

// Forgets sessions that hold nothing and have not read for ARGV[2] ms (killed pods): their
// names would pile up in the group. Atomic: one that holds a receipt is never removed.
const FORGET_DEAD: &str = r"
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
";

/// Where the receipt handler puts customer receipts: the [`Outbox`] in production,
/// [`MemoryQueue`] in the fast in-process tests (as `store::memory` is for the store).
#[async_trait::async_trait]
pub trait ReceiptQueue: Send + Sync + 'static {
    /// Ok: it is kept until a session of `account` acknowledges it. Err: it is not kept (the
    /// caller gives the receipt back to the store: `MessageStore::unmark_outboxed`).
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
}

impl MemoryQueue {
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

    /// Appends a receipt to `account`'s outbox. Ok means it is in Redis: the caller may
    /// acknowledge the vendor's deliver_sm. Err means it is not: the caller gives it back to
    /// the store and answers the vendor with a temporary error, so it redelivers and the
    /// receipt is pushed again.
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
    /// creates the stream), and with `upkeep` XTRIM and EXPIRE, in one pipeline.
    async fn push_once(
        &self,
        account: Uuid,
        r: &CustomerReceipt,
        upkeep: bool,
    ) -> Result<Landed, StoreError> {
        let key = key(account);
        let json = serde_json::to_string(r).expect("receipt");
        let mut pipe = redis::pipe();
        let xadd = pipe.cmd("XADD").arg(&key);
        if !upkeep {
            xadd.arg("NOMKSTREAM");
        }
        xadd.arg("*").arg(FIELD).arg(json);
        if upkeep {
            pipe.cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(min_id(SystemTime::now(), self.cfg.ttl))
                .cmd("EXPIRE")
                .arg(&key)
                .arg(self.cfg.ttl.as_secs().max(1) + self.cfg.upkeep.as_secs_f64().ceil() as u64)
                .ignore();
        }
        let mut c = self.conn.clone();
        // One reply without upkeep, two with it (EXPIRE's is ignored).
        let replies: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let mut replies = replies.into_iter();
        Ok(match replies.next() {
            None | Some(redis::Value::Nil) => Landed::NoStream,
            Some(_) => Landed::Yes {
                trimmed: replies
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or(0),
            },
        })
    }

    /// Delivers `account`'s receipts over `link` (one bound RX/TRX session) until `stop` is
    /// cancelled or the link reports [`DeliverError::Closed`]; up to `window` deliveries are
    /// in flight at once, so `link` must take concurrent calls.
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

/// An entry read or claimed for delivery.
#[derive(Debug)]
struct Entry {
    id: String,
    /// None when the entry is gone (trimmed) or does not parse.
    receipt: Option<CustomerReceipt>,
    /// This attempt's number (1: first).
    attempt: u64,
}

/// What a delivery attempt ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered: remove it.
    Done,
    /// Gone or past the TTL: remove it, never deliver.
    Drop { expired: bool },
    /// Refused or unanswered: park it for a retry.
    Retry,
    /// The session closed: it stays with us until the hand-back.
    Closed,
}

/// The consumer loop's state between rounds.
struct Work {
    /// Ids in flight: this session must not claim them back.
    holding: HashSet<String>,
    /// Attempts that finished, not settled in Redis yet.
    done: Vec<(Entry, Outcome)>,
    /// Read, not started yet.
    fresh: Vec<Entry>,
    /// When new entries are next read (now after a push here or a full read).
    poll_at: Instant,
    /// When the pending list is next looked at (retries, hand-backs, dead sessions).
    pending_at: Instant,
    housekeeping: Instant,
    /// Failed rounds in a row.
    errors: u32,
}

impl Default for Work {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            holding: HashSet::new(),
            done: Vec::new(),
            fresh: Vec::new(),
            poll_at: now,
            pending_at: now,
            housekeeping: now,
            errors: 0,
        }
    }
}

impl Work {
    /// Takes a finished attempt; true when the session closed (its receipts stay pending on
    /// it for the hand-back).
    fn finished(&mut self, (e, o): (Entry, Outcome)) -> bool {
        self.holding.remove(&e.id);
        if o == Outcome::Closed {
            return true;
        }
        self.done.push((e, o));
        false
    }

    /// A round failed: wait longer before the next, up to 5 s.
    fn failed(&mut self, cfg: &OutboxConfig) {
        self.errors += 1;
        let at = Instant::now() + (cfg.poll * self.errors.min(10)).min(Duration::from_secs(5));
        self.poll_at = at;
        self.pending_at = at;
    }
}

/// What one round trip to Redis does: settle what finished, read new entries, look at the
/// pending list. One pipeline, in that order, so the pending list never shows a receipt
/// this session answered but has not settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    settle: bool,
    /// New entries to read (XREADGROUP COUNT).
    read: Option<usize>,
    pending: bool,
}

impl Round {
    fn is_empty(&self) -> bool {
        !self.settle && self.read.is_none() && !self.pending
    }
}

/// Deliveries in flight at or below which a session reads again: reading when a single slot
/// frees up would cost a round trip per receipt under load.
fn low_water(cfg: &OutboxConfig) -> usize {
    (cfg.window / 2).max(1)
}

/// The next round of a session with `inflight` deliveries out and `done` finished ones.
/// Pure: the consumer loop's policy.
fn plan_round(cfg: &OutboxConfig, now: Instant, w: &Work, inflight: usize) -> Round {
    let room = cfg.window.saturating_sub(inflight);
    let read = (room >= low_water(cfg) && now >= w.poll_at).then(|| room.min(cfg.batch));
    let pending = room > 0 && now >= w.pending_at;
    let done = w.done.len();
    // Settled together with the next read, or once enough are done, or when nothing else is
    // out: a round trip per batch, not per answer. Always with a pending look (see Round).
    let settle = done > 0 && (read.is_some() || pending || done >= low_water(cfg) || inflight == 0);
    Round {
        settle,
        read,
        pending,
    }
}

/// When the loop must wake on its own for the next round (None: only a delivery finishing,
/// a push or the stop wakes it).
fn next_due(cfg: &OutboxConfig, w: &Work, inflight: usize) -> Option<Instant> {
    let room = cfg.window.saturating_sub(inflight);
    let read = (room >= low_water(cfg)).then_some(w.poll_at);
    let pending = (room > 0).then_some(w.pending_at);
    read.into_iter().chain(pending).min()
}

/// The raw replies: XREADGROUP's (`None`: nothing new) and XCLAIM's entries.
type StreamReply = Option<Vec<(String, Vec<(String, Option<Vec<String>>)>)>>;
type Entries = Vec<(String, Option<Vec<String>>)>;

struct Consumer {
    outbox: Arc<Outbox>,
    account: Uuid,
    key: String,
    name: String,
    link: Arc<dyn CustomerLink>,
    stop: CancellationToken,
}

impl Consumer {
    fn cfg(&self) -> &OutboxConfig {
        &self.outbox.cfg
    }

    fn conn(&self) -> Conn {
        self.outbox.conn.clone()
    }

    async fn run(self) {
        let wake = self.outbox.waker(self.account);
        tracing::debug!(account = %self.account, consumer = %self.name, "outbox consumer started");
        let cfg = self.cfg().clone();
        let mut w = Work::default();
        // Deliveries in flight: a slow answer holds its own slot only, not the others'.
        let mut inflight = FuturesUnordered::new();
        while !self.stop.is_cancelled() {
            // Armed before reading, so a push meanwhile is not missed.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let round = plan_round(&cfg, Instant::now(), &w, inflight.len());
            if !round.is_empty()
                && let Err(e) = self.round(&mut w, round, inflight.len()).await
            {
                w.failed(&cfg);
                self.outbox
                    .metrics
                    .redis_errors
                    .with_label_values(&["outbox"])
                    .inc();
                if w.errors == 1 || w.errors.is_multiple_of(30) {
                    tracing::warn!(account = %self.account, consumer = %self.name, error = %e, failures = w.errors, "outbox: cannot read or settle the account's receipts in Redis; retrying");
                }
            }
            for e in w.fresh.drain(..) {
                w.holding.insert(e.id.clone());
                inflight.push(self.attempt(e));
            }
            let due = next_due(&cfg, &w, inflight.len());
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let mut closed = w.finished(done);
                    // Take whatever else is done already: settled together.
                    while let Some(Some(done)) = inflight.next().now_or_never() {
                        closed |= w.finished(done);
                    }
                    if closed {
                        break;
                    }
                }
                _ = &mut notified => w.poll_at = Instant::now(),
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            }
        }
        // Answered ones are removed (else the hand-back would send them again), then what is
        // left goes back.
        drop(inflight);
        if !w.done.is_empty() {
            let mut pipe = redis::pipe();
            let tally = settle_into(&mut pipe, &self.key, &w.done);
            let mut c = self.conn();
            match pipe.query_async::<()>(&mut c).await {
                Ok(()) => self.count(&tally),
                Err(e) => {
                    tracing::warn!(account = %self.account, consumer = %self.name, error = %e, "outbox: cannot remove answered receipts; they may be sent again")
                }
            }
        }
        self.outbox.drop_waker(self.account);
        self.hand_back().await;
    }

    /// One round trip (see [`Round`]); new receipts land in `w.fresh`, with those of the
    /// pending list this session may take (another round trip, only when there are some).
    async fn round(&self, w: &mut Work, r: Round, inflight: usize) -> Result<(), StoreError> {
        if r.pending && Instant::now() >= w.housekeeping {
            // Not a reason to stop delivering: logged, and tried again next time.
            if let Err(e) = self.housekeeping().await {
                self.outbox
                    .metrics
                    .redis_errors
                    .with_label_values(&["outbox"])
                    .inc();
                tracing::warn!(account = %self.account, consumer = %self.name, error = %e, "outbox: cannot trim the account's outbox or read its depth");
            }
            w.housekeeping = Instant::now() + self.cfg().housekeeping;
        }
        let done: &[(Entry, Outcome)] = if r.settle { &w.done } else { &[] };
        let (tally, reply) = match self.exchange(done, r).await {
            // The first session of the account, or the stream expired: make it and go on.
            Err(e) if is_nogroup(&e) => {
                self.ensure_group().await?;
                self.exchange(done, r).await?
            }
            other => other?,
        };
        self.count(&tally);
        if r.settle {
            w.done.clear();
        }
        w.errors = 0;
        let now = Instant::now();
        let (fresh, pending) = reply;
        if let Some(asked) = r.read {
            // A full read may have left more behind: read again as soon as there is room.
            w.poll_at = if fresh.len() >= asked {
                now
            } else {
                now + self.cfg().poll
            };
        }
        if r.pending {
            w.pending_at = now + self.cfg().poll;
        }
        let room = self.cfg().window.saturating_sub(inflight + fresh.len());
        let takeable: Vec<Pending> = pending
            .into_iter()
            .filter(|p| !w.holding.contains(&p.id))
            .filter(|p| p.idle >= claim_after(self.cfg(), p, &self.name))
            .take(room)
            .collect();
        w.fresh = fresh;
        if !takeable.is_empty() {
            let claimed = self.claim(&takeable).await?;
            w.fresh.extend(claimed);
        }
        Ok(())
    }

    /// The pipeline of a round: the settle, then XREADGROUP and XPENDING as asked.
    async fn exchange(
        &self,
        done: &[(Entry, Outcome)],
        r: Round,
    ) -> redis::RedisResult<(Tally, (Vec<Entry>, Vec<Pending>))> {
        let cfg = self.cfg();
        let mut pipe = redis::pipe();
        let tally = settle_into(&mut pipe, &self.key, done);
        if let Some(count) = r.read {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.name)
                .arg("COUNT")
                .arg(count.max(1))
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">");
        }
        if r.pending {
            let min_idle = cfg.retry_first.min(cfg.claim_idle);
            pipe.cmd("XPENDING")
                .arg(&self.key)
                .arg(GROUP)
                .arg("IDLE")
                .arg(min_idle.as_millis() as u64)
                .arg("-")
                .arg("+")
                .arg(cfg.batch);
        }
        let mut c = self.conn();
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let pending: Vec<(String, String, u64, u64)> = if r.pending {
            redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?
        } else {
            Vec::new()
        };
        let fresh: StreamReply = if r.read.is_some() {
            redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?
        } else {
            None
        };
        let pending = pending
            .into_iter()
            .map(|(id, consumer, idle, deliveries)| Pending {
                id,
                consumer,
                idle: Duration::from_millis(idle),
                deliveries,
            })
            .collect();
        Ok((tally, (self.entries(flatten(fresh), 1), pending)))
    }

    /// One delivery attempt.
    fn attempt(&self, e: Entry) -> futures::future::BoxFuture<'_, (Entry, Outcome)> {
        let ttl = self.cfg().ttl;
        Box::pin(async move {
            let outcome = match &e.receipt {
                None => Outcome::Drop { expired: false },
                Some(_) if expired(&e.id, SystemTime::now(), ttl) => {
                    Outcome::Drop { expired: true }
                }
                Some(r) => match self.link.deliver(r).await {
                    Ok(()) => Outcome::Done,
                    Err(DeliverError::Closed) => Outcome::Closed,
                    Err(err) => {
                        tracing::debug!(account = %self.account, consumer = %self.name, error = %err, "receipt not accepted; it is retried");
                        Outcome::Retry
                    }
                },
            };
            (e, outcome)
        })
    }

    /// Takes `ps` over (each only if still idle long enough: another session may have been
    /// quicker). XCLAIM counts the attempt.
    async fn claim(&self, ps: &[Pending]) -> Result<Vec<Entry>, StoreError> {
        let mut pipe = redis::pipe();
        for p in ps {
            pipe.cmd("XCLAIM")
                .arg(&self.key)
                .arg(GROUP)
                .arg(&self.name)
                .arg(claim_after(self.cfg(), p, &self.name).as_millis() as u64)
                .arg(&p.id);
        }
        let mut c = self.conn();
        let claimed: Vec<Entries> = pipe.query_async(&mut c).await?;
        let attempts: HashMap<&str, u64> = ps
            .iter()
            .map(|p| (p.id.as_str(), p.deliveries + 1))
            .collect();
        let mut out = Vec::new();
        for (id, fields) in claimed.into_iter().flatten() {
            let attempt = attempts.get(id.as_str()).copied().unwrap_or(2);
            out.extend(self.entries(vec![(id, fields)], attempt));
        }
        Ok(out)
    }

    fn entries(&self, raw: Entries, attempt: u64) -> Vec<Entry> {
        raw.into_iter()
            .map(|(id, fields)| {
                let receipt = fields.and_then(|f| parse_fields(&f));
                if receipt.is_none() {
                    tracing::warn!(account = %self.account, entry = %id, "outbox entry is gone or unreadable; dropping it");
                }
                Entry {
                    id,
                    receipt,
                    attempt,
                }
            })
            .collect()
    }

    fn count(&self, t: &Tally) {
        let o = &self.outbox;
        o.count(self.account, Event::Delivered, t.delivered);
        o.count(self.account, Event::Expired, t.expired);
        o.count(self.account, Event::Failed, t.failed);
        o.count(self.account, Event::Redelivered, t.again);
    }

    /// Creates the group (from the stream's start, so nothing pushed before is skipped) and
    /// the stream when missing; a stream made here expires like a pushed one.
    async fn ensure_group(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        let _: i64 = redis::cmd("EXPIRE")
            .arg(&self.key)
            .arg(self.cfg().ttl.as_secs().max(1))
            .arg("NX")
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Trims what expired, reads the depth and forgets dead sessions' names.
    async fn housekeeping(&self) -> Result<(), StoreError> {
        let cfg = self.cfg();
        let mut pipe = redis::pipe();
        pipe.cmd("XTRIM")
            .arg(&self.key)
            .arg("MINID")
            .arg(min_id(SystemTime::now(), cfg.ttl))
            .cmd("XLEN")
            .arg(&self.key)
            .add_command(eval(
                FORGET_DEAD,
                &self.key,
                &[GROUP, &cfg.forget_after.as_millis().to_string(), PARKED],
            ))
            .ignore();
        let mut c = self.conn();
        let (trimmed, depth): (u64, i64) = pipe.query_async(&mut c).await?;
        self.outbox.count(self.account, Event::Expired, trimmed);
        self.outbox
            .metrics
            .outbox_depth
            .with_label_values(&[&self.account.to_string()])
            .set(depth);
        Ok(())
    }

    /// Gives this session's pending receipts back (see HAND_BACK). On failure they are taken
    /// over after `claim_idle`, as a dead session's are.
    async fn hand_back(&self) {
        // Idle long enough for any threshold (a year), so the next poll takes them.
        let idle = Duration::from_secs(365 * 86_400).as_millis().to_string();
        let mut c = self.conn();
        let r: redis::RedisResult<u64> =
            eval(HAND_BACK, &self.key, &[GROUP, &self.name, PARKED, &idle])
                .query_async(&mut c)
                .await;
        match r {
            Ok(n) => {
                tracing::debug!(account = %self.account, consumer = %self.name, handed_back = n, "outbox consumer stopped")
            }
            Err(e) => {
                tracing::warn!(account = %self.account, consumer = %self.name, error = %e, "outbox: cannot hand this session's receipts back; other sessions take them over after the claim idle time")
            }
        }
    }
}

/// What a settle counts, once it is in Redis.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    delivered: u64,
    expired: u64,
    failed: u64,
    again: u64,
}

/// Adds to `pipe` what settles `results` (answered and dropped ones: XACK + XDEL; refused
/// ones: parked for their retry) and says what it counts.
fn settle_into(pipe: &mut redis::Pipeline, key: &str, results: &[(Entry, Outcome)]) -> Tally {
    let (mut done, mut retry) = (Vec::new(), Vec::new());
    let mut t = Tally::default();
    for (e, o) in results {
        if e.attempt > 1 && matches!(o, Outcome::Done | Outcome::Retry) {
            t.again += 1;
        }
        match o {
            Outcome::Done => {
                t.delivered += 1;
                done.push(e.id.as_str());
            }
            Outcome::Drop { expired: x } => {
                t.expired += u64::from(*x);
                done.push(e.id.as_str());
            }
            Outcome::Retry => {
                t.failed += 1;
                retry.push(e.id.as_str());
            }
            Outcome::Closed => {}
        }
    }
    if !done.is_empty() {
        pipe.cmd("XACK")
            .arg(key)
            .arg(GROUP)
            .arg(&done)
            .ignore()
            .cmd("XDEL")
            .arg(key)
            .arg(&done)
            .ignore();
    }
    if !retry.is_empty() {
        // JUSTID: parking is not an attempt. The idle time restarts: the backoff counts
        // from now.
        pipe.cmd("XCLAIM")
            .arg(key)
            .arg(GROUP)
            .arg(PARKED)
            .arg(0)
            .arg(&retry)
            .arg("JUSTID")
            .ignore();
    }
    t
}

fn flatten(r: StreamReply) -> Entries {
    r.into_iter().flatten().flat_map(|(_, es)| es).collect()
}

fn parse_fields(f: &[String]) -> Option<CustomerReceipt> {
    f.chunks_exact(2)
        .find(|kv| kv[0] == FIELD)
        .and_then(|kv| serde_json::from_str(&kv[1]).ok())
}

/// The stream or its group is missing (first bind, or the stream expired), alone or in a
/// pipeline.
fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
        || e.clone()
            .into_server_errors()
            .is_some_and(|es| es.iter().any(|(_, s)| s.code() == "NOGROUP"))
}

/// EVAL (see `store::redis`: survives a script cache flush) on one key.
fn eval(script: &str, key: &str, args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key).arg(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutboxConfig {
        OutboxConfig::new(Duration::from_secs(3600))
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

    fn entry(id: &str) -> (Entry, Outcome) {
        let e = Entry {
            id: id.into(),
            receipt: None,
            attempt: 1,
        };
        (e, Outcome::Done)
    }

    fn work_due(now: Instant) -> Work {
        Work {
            poll_at: now,
            pending_at: now + Duration::from_secs(1),
            ..Work::default()
        }
    }

    #[test]
    fn a_session_reads_again_only_once_half_its_window_is_free() {
        let c = cfg(); // window 16
        let now = Instant::now();
        let w = work_due(now);
        assert_eq!(plan_round(&c, now, &w, 0).read, Some(16));
        assert_eq!(plan_round(&c, now, &w, 8).read, Some(8));
        // One slot free: no round trip for it alone.
        assert_eq!(
            plan_round(&c, now, &w, 15),
            Round {
                settle: false,
                read: None,
                pending: false
            }
        );
        assert_eq!(next_due(&c, &w, 15), Some(w.pending_at));
        // Full: only a finished delivery (or a push, or the stop) wakes it.
        assert_eq!(next_due(&c, &w, 16), None);
        // Not due yet.
        let later = Work {
            poll_at: now + Duration::from_millis(500),
            ..work_due(now)
        };
        assert_eq!(plan_round(&c, now, &later, 0).read, None);
        assert_eq!(next_due(&c, &later, 0), Some(later.poll_at));
    }

    #[test]
    fn answers_are_settled_in_batches_and_always_before_a_pending_look() {
        let c = cfg();
        let now = Instant::now();
        let mut w = Work {
            poll_at: now + Duration::from_secs(1),
            ..work_due(now)
        };
        w.done.push(entry("1-0"));
        // Others still out, no read due: wait for more answers.
        assert!(!plan_round(&c, now, &w, 10).settle);
        // Nothing else out: settle now.
        assert!(plan_round(&c, now, &w, 0).settle);
        // Enough answers for a batch.
        w.done.extend((2..=8).map(|i| entry(&format!("{i}-0"))));
        assert!(plan_round(&c, now, &w, 10).settle);
        // A pending look never sees an answered, unsettled receipt as takeable.
        let mut w = Work {
            poll_at: now + Duration::from_secs(1),
            pending_at: now,
            ..Work::default()
        };
        w.done.push(entry("1-0"));
        let r = plan_round(&c, now, &w, 10);
        assert!(r.pending && r.settle);
    }

    #[test]
    fn a_failed_round_backs_off_reads_and_pending_looks_alike() {
        let c = cfg();
        let mut w = Work::default();
        w.failed(&c);
        w.failed(&c);
        let now = Instant::now();
        assert!(w.poll_at > now && w.pending_at == w.poll_at);
        assert!(plan_round(&c, now, &w, 0).is_empty());
        assert_eq!(next_due(&c, &w, 0), Some(w.poll_at));
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
    fn an_entry_is_read_back_from_its_field() {
        let r = CustomerReceipt {
            message_id: "m".into(),
            to: "1".into(),
            from: "2".into(),
            status: crate::messaging::model::MessageStatus::Delivered,
            submitted_at: chrono::Utc::now(),
            done_at: chrono::Utc::now(),
            error_code: None,
        };
        let f = vec![FIELD.to_string(), serde_json::to_string(&r).unwrap()];
        assert_eq!(parse_fields(&f), Some(r));
        assert_eq!(parse_fields(&["x".into(), "{}".into()]), None);
        assert_eq!(parse_fields(&[FIELD.into(), "not json".into()]), None);
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

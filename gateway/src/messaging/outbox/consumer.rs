//! The consumer loop of one customer session: reads its account's receipts, delivers them
//! over the session, settles the answers, and hands back what it holds when it stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Event, FIELD, GROUP, Outbox, OutboxConfig, PARKED, Pending, claim_after, expired, is_nogroup,
    min_id,
};
use crate::messaging::customer::{CustomerLink, CustomerReceipt, DeliverError};
use crate::messaging::store::{Conn, StoreError};

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

pub(super) struct Consumer {
    pub(super) outbox: Arc<Outbox>,
    pub(super) account: Uuid,
    pub(super) key: String,
    pub(super) name: String,
    pub(super) link: Arc<dyn CustomerLink>,
    pub(super) stop: CancellationToken,
}

impl Consumer {
    fn cfg(&self) -> &OutboxConfig {
        &self.outbox.cfg
    }

    fn conn(&self) -> Conn {
        self.outbox.conn.clone()
    }

    pub(super) async fn run(self) {
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

/// EVAL (see `store::redis`: survives a script cache flush) on one key.
fn eval(script: &str, key: &str, args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key).arg(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::outbox::tests::cfg;

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
}

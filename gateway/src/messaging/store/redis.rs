//! The Redis implementation of `MessageStore` (layout: see the module above).

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{
    Callback, Correlated, CustomerFinal, IdemBegin, IdemRecord, MessageStore, NewMessage,
    StatusChange, StoreError, history_key, idem_key, msg_key, parse_mapping,
};
use crate::messaging::customer::Origin;
use crate::messaging::model::{HistoryEntry, MessageStatus, MessageView};

/// A single Redis server or a cluster, behind one connection type. Both reconnect on their
/// own, so a Redis restart needs no gateway restart.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `redis://` (single server, connected lazily: the gateway starts while Redis is down) or
/// `redis+cluster://host:port,host:port` (seed nodes of a cluster).
pub async fn connect(url: &str) -> Result<Conn, StoreError> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = rest
            .split(',')
            .map(|n| format!("redis://{}", n.trim()))
            .collect();
        let client = redis::cluster::ClusterClient::new(nodes)?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let client = redis::Client::open(url)?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
        client, cfg,
    )?))
}

// Returns the mapping, or parks the receipt under the key when there is none yet. Atomic, so
// the writer of a mapping needs no script: it SETs the mapping, then LPOPs the parking list.
// A receipt either ran this before that SET (it is parked, and the LPOP takes it) or after
// (it sees the mapping and never parks): none is missed, and none is parked after the LPOP.
const GET_OR_PARK: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return false
";

/// Applies one part's receipt: records it in the history, sets the part's status (a part
/// that is already final keeps it: vendors resend; an unknown part changes nothing), and
/// derives the message's status with the rule of `model::overall`. Returns {old status, new
/// status, callback_url, customer, callback}, or nil when the message is not (yet) stored.
/// `customer` is {origin_account, origin_to, origin_from, submitted_at, done_at, error_code}
/// when the receipt is final, the message is final after it, has an origin and is not
/// `outboxed`; else empty. `callback` is {client_ref, parts, done_at, error_code}, what a
/// status callback says.
///
/// Every field it may need comes in one HMGET (each redis.call costs about a microsecond on
/// the hottest path of the store): a one-part receipt is 4 calls, not 11.
pub const APPLY_RECEIPT: &str = r"
local f = redis.call('HMGET', KEYS[1], 'status', 'callback_url', 'p:' .. ARGV[1], 'parts',
  'outboxed', 'origin_account', 'origin_to', 'origin_from', 'submitted_at', 'done_at',
  'error_code', 'client_ref')
local cur = f[1]
if not cur then return false end
local cb = f[2] or ''
local final = ARGV[3] == '1'
local done, err = f[10], f[11]
local function customer(status)
  if not final or status == 'submitted' or f[5] or not f[6] then return {} end
  return {f[6], f[7], f[8], f[9], done, err}
end
local function callback() return {f[12], f[4], done, err} end
redis.call('RPUSH', KEYS[2], ARGV[6])
if not final or f[3] ~= 'submitted' then return {cur, cur, cb, customer(cur), callback()} end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2])
if cur ~= 'submitted' then return {cur, cur, cb, customer(cur), callback()} end
local new = ARGV[2]
local n = tonumber(f[4])
if new == 'delivered' and n > 1 then
  local names = {}
  for i = 0, n - 1 do names[i + 1] = 'p:' .. i end
  local parts = redis.call('HMGET', KEYS[1], unpack(names))
  for i = 1, n do
    if parts[i] ~= 'delivered' then new = 'submitted' break end
  end
end
if new ~= 'submitted' then
  done = ARGV[5]
  if ARGV[4] ~= '' then
    err = ARGV[4]
    redis.call('HSET', KEYS[1], 'status', new, 'done_at', done, 'error_code', err)
  else
    redis.call('HSET', KEYS[1], 'status', new, 'done_at', done)
  end
end
return {cur, new, cb, customer(new), callback()}
";

/// The first looked-up key that is mapped, with its number.
fn first_mapped(found: Vec<Option<String>>) -> Option<(usize, String)> {
    found
        .into_iter()
        .enumerate()
        .find_map(|(i, v)| v.map(|v| (i, v)))
}

/// Marks a stored message `outboxed` (never creates one: it would have no TTL).
const MARK_OUTBOXED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'outboxed', '1') end
return 1
";

/// Marks message `id` `outboxed`. The outbox sends it in the pipeline of the push itself,
/// so a customer receipt costs one round trip, not two.
pub(crate) fn mark_outboxed_cmd(id: &str) -> Cmd {
    eval(MARK_OUTBOXED, &[&msg_key(id)], &[])
}

/// Takes the mark back, for a push that did not land after all.
pub(crate) fn unmark_outboxed_cmd(id: &str) -> Cmd {
    let mut c = redis::cmd("HDEL");
    c.arg(msg_key(id)).arg("outboxed");
    c
}

/// The Redis store. Cheap to clone; every call pipelines what it can.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    ttl: Duration,
    apply: std::sync::Arc<Script>,
    /// False since the last operation failed, until one succeeds (a background ping keeps
    /// trying): the submit path refuses before sending instead of sending untracked.
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RedisStore {
    pub fn new(conn: Conn, ttl: Duration) -> Self {
        Self {
            conn,
            ttl,
            apply: Script::new(APPLY_RECEIPT).into(),
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    fn track<T>(&self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        self.healthy
            .store(r.is_ok(), std::sync::atomic::Ordering::Relaxed);
        Ok(r?)
    }

    /// Pings every `every` so the health flag recovers without traffic.
    pub fn watch_health(&self, every: Duration) {
        let s = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = s.ping().await;
            }
        });
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = self.track(redis::cmd("PING").query_async(&mut c).await)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl MessageStore for RedisStore {
    fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Writes the message, its history so far and the mappings of its vendor ids (part by
    /// part), in one pipeline. Returns the receipts that were parked under those mappings.
    async fn create(
        &self,
        m: &NewMessage,
        history: &[HistoryEntry],
        mappings: &[(String, u32)],
    ) -> Result<Vec<String>, StoreError> {
        let ttl = self.ttl_secs();
        let key = msg_key(&m.id);
        let hkey = history_key(&m.id);
        let vids = serde_json::to_string(&m.vendor_message_ids).expect("vids");
        let mut fields: Vec<(String, String)> = vec![
            ("vendor".into(), m.vendor.clone()),
            ("vendor_id".into(), m.vendor_id.to_string()),
            ("parts".into(), m.parts.to_string()),
            ("vids".into(), vids),
            ("submitted_at".into(), m.submitted_at.to_rfc3339()),
            ("status".into(), m.status.as_str().into()),
        ];
        if m.status.is_final() {
            fields.push(("done_at".into(), Utc::now().to_rfc3339()));
        }
        for (k, v) in [
            ("error_code", &m.error_code),
            ("client_ref", &m.client_ref),
            ("callback_url", &m.callback_url),
        ] {
            if let Some(v) = v {
                fields.push((k.into(), v.clone()));
            }
        }
        if let Some(a) = &m.account {
            fields.push(("account".into(), a.to_string()));
        }
        if let Some(o) = &m.origin {
            fields.push(("origin_account".into(), o.account.to_string()));
            fields.push(("origin_to".into(), o.to.clone()));
            fields.push(("origin_from".into(), o.from.clone()));
        }
        for p in 0..m.parts {
            fields.push((format!("p:{p}"), m.status.as_str().into()));
        }
        let mut pipe = redis::pipe();
        pipe.hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, ttl as i64)
            .ignore();
        let entries: Vec<String> = history
            .iter()
            .map(|h| serde_json::to_string(h).expect("history"))
            .collect();
        if !entries.is_empty() {
            pipe.rpush(&hkey, entries).ignore();
        }
        pipe.expire(&hkey, ttl as i64).ignore();
        // Plain commands (no script): see GET_OR_PARK for why SET-then-LPOP cannot miss one.
        for (ck, part) in mappings {
            pipe.set_ex(ck, format!("{}:{part}", m.id), ttl)
                .ignore()
                .lpop(format!("{ck}:p"), std::num::NonZeroUsize::new(10_000));
        }
        let mut c = self.conn.clone();
        let parked: Vec<Option<Vec<String>>> = self.track(pipe.query_async(&mut c).await)?;
        Ok(parked.into_iter().flatten().flatten().collect())
    }

    /// Looks a receipt's id keys up; when none is mapped yet, parks the receipt under each.
    /// Returns (message id, part) when found.
    async fn correlate_or_park(
        &self,
        keys: &[String],
        receipt_json: &str,
    ) -> Result<Option<Correlated>, StoreError> {
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.get(k);
        }
        let found: Vec<Option<String>> = self.track(pipe.query_async(&mut c).await)?;
        if let Some((i, v)) = first_mapped(found) {
            return parse_mapping(&v, i).map(Some);
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.add_command(eval(
                GET_OR_PARK,
                &[k, &format!("{k}:p")],
                &[receipt_json, &self.ttl_secs().to_string()],
            ));
        }
        let raced: Vec<Option<String>> = self.track(pipe.query_async(&mut c).await)?;
        match first_mapped(raced) {
            Some((i, v)) => {
                // Mapped meanwhile: take the receipt back from the other keys' parking.
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.lrem(format!("{k}:p"), 0, receipt_json).ignore();
                }
                let _: () = self.track(pipe.query_async(&mut c).await)?;
                parse_mapping(&v, i).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn unpark(&self, key: &str, receipt_json: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let taken: i64 = self.track(
            redis::cmd("LREM")
                .arg(format!("{key}:p"))
                .arg(1)
                .arg(receipt_json)
                .query_async(&mut c)
                .await,
        )?;
        Ok(taken > 0)
    }

    /// Applies one part's receipt; returns the status change, if any (None also when the
    /// message is not stored: the caller answers with a temporary error).
    async fn apply_receipt(
        &self,
        id: &str,
        part: u32,
        status: MessageStatus,
        error_code: Option<&str>,
        entry: &HistoryEntry,
    ) -> Result<Option<StatusChange>, StoreError> {
        let mut c = self.conn.clone();
        type Applied = (
            String,
            String,
            String,
            Vec<Option<String>>,
            Vec<Option<String>>,
        );
        let r: Option<Applied> = self.track(
            self.apply
                .key(msg_key(id))
                .key(history_key(id))
                .arg(part)
                .arg(status.as_str())
                .arg(if status.is_final() { "1" } else { "0" })
                .arg(error_code.unwrap_or(""))
                .arg(Utc::now().to_rfc3339())
                .arg(serde_json::to_string(entry).expect("history"))
                .invoke_async(&mut c)
                .await,
        )?;
        let Some((from, to, cb, customer, callback)) = r else {
            return Ok(None);
        };
        let parse = |s: &str| {
            MessageStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("status {s:?}")))
        };
        Ok(Some(StatusChange {
            from: parse(&from)?,
            to: parse(&to)?,
            callback: (!cb.is_empty()).then(|| callback_fields(cb, callback)),
            customer: customer_final(id, customer)?,
        }))
    }

    async fn mark_outboxed(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self.track(mark_outboxed_cmd(id).query_async(&mut c).await)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<MessageView>, StoreError> {
        let mut c = self.conn.clone();
        let (fields, history): (std::collections::HashMap<String, String>, Vec<String>) = self
            .track(
                redis::pipe()
                    .hgetall(msg_key(id))
                    .lrange(history_key(id), 0, -1)
                    .query_async(&mut c)
                    .await,
            )?;
        if fields.is_empty() {
            return Ok(None);
        }
        view(id, &fields, &history).map(Some)
    }

    /// Claims an Idempotency-Key for a request body, or reports what it holds.
    async fn idem_begin(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
    ) -> Result<IdemBegin, StoreError> {
        let rec = IdemRecord {
            hash: hash.to_string(),
            answer: None,
        };
        let mut c = self.conn.clone();
        let k = idem_key(owner, key);
        let set: Option<String> = self.track(
            redis::cmd("SET")
                .arg(&k)
                .arg(serde_json::to_string(&rec).expect("idem"))
                .arg("NX")
                .arg("EX")
                .arg(self.ttl_secs())
                .query_async(&mut c)
                .await,
        )?;
        if set.is_some() {
            return Ok(IdemBegin::Fresh);
        }
        let cur: Option<String> =
            self.track(redis::cmd("GET").arg(&k).query_async(&mut c).await)?;
        let Some(cur) = cur else {
            // Expired between the two commands: try once more.
            return self.idem_begin(owner, key, hash).await;
        };
        let cur: IdemRecord =
            serde_json::from_str(&cur).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(if cur.hash != hash {
            IdemBegin::Mismatch
        } else {
            match cur.answer {
                None => IdemBegin::InFlight,
                Some((code, body)) => IdemBegin::Done(code, body),
            }
        })
    }

    async fn idem_finish(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
        code: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let rec = IdemRecord {
            hash: hash.to_string(),
            answer: Some((code, body.clone())),
        };
        let mut c = self.conn.clone();
        let _: () = self.track(
            redis::cmd("SET")
                .arg(idem_key(owner, key))
                .arg(serde_json::to_string(&rec).expect("idem"))
                .arg("EX")
                .arg(self.ttl_secs())
                .query_async(&mut c)
                .await,
        )?;
        Ok(())
    }

    /// Gives the key up when nothing was sent, so a retry may send.
    async fn idem_abort(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = self.track(
            redis::cmd("DEL")
                .arg(idem_key(owner, key))
                .query_async(&mut c)
                .await,
        )?;
        Ok(())
    }
}

/// EVAL (not EVALSHA) inside pipelines: it survives a Redis restart that emptied the script
/// cache, and Redis caches the compiled script anyway.
fn eval(script: &str, keys: &[&str], args: &[&str]) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(keys.len()).arg(keys).arg(args);
    c
}

/// The `callback` part of APPLY_RECEIPT's answer, for the message's callback_url `url`.
fn callback_fields(url: String, f: Vec<Option<String>>) -> Callback {
    let mut f = f.into_iter();
    let mut next = || f.next().flatten();
    Callback {
        url,
        client_ref: next(),
        parts: next().and_then(|p| p.parse().ok()).unwrap_or(0),
        done_at: next()
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|d| d.with_timezone(&Utc)),
        error_code: next(),
    }
}

/// The `customer` part of APPLY_RECEIPT's answer (empty: none due).
fn customer_final(id: &str, f: Vec<Option<String>>) -> Result<Option<CustomerFinal>, StoreError> {
    if f.is_empty() {
        return Ok(None);
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("message {id}: {what}"));
    let time = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
    };
    let [account, to, from, submitted_at, done_at, error_code] =
        <[Option<String>; 6]>::try_from(f).map_err(|_| corrupt("origin fields"))?;
    Ok(Some(CustomerFinal {
        origin: Origin {
            account: account
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| corrupt("origin_account"))?,
            to: to.unwrap_or_default(),
            from: from.unwrap_or_default(),
        },
        submitted_at: time(&submitted_at).ok_or_else(|| corrupt("submitted_at"))?,
        done_at: time(&done_at).unwrap_or_else(Utc::now),
        error_code,
    }))
}

fn view(
    id: &str,
    f: &std::collections::HashMap<String, String>,
    history: &[String],
) -> Result<MessageView, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("message {id}: {what}"));
    let time = |k: &str| -> Option<DateTime<Utc>> {
        f.get(k)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
    };
    Ok(MessageView {
        id: id.to_string(),
        status: f
            .get("status")
            .and_then(|s| MessageStatus::parse(s))
            .ok_or_else(|| corrupt("status"))?,
        vendor: f.get("vendor").cloned().unwrap_or_default(),
        parts: f.get("parts").and_then(|s| s.parse().ok()).unwrap_or(0),
        vendor_message_ids: f
            .get("vids")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        submitted_at: time("submitted_at").ok_or_else(|| corrupt("submitted_at"))?,
        done_at: time("done_at"),
        error_code: f.get("error_code").cloned(),
        client_ref: f.get("client_ref").cloned(),
        history: history
            .iter()
            .filter_map(|h| serde_json::from_str(h).ok())
            .collect(),
        account: f.get("account").and_then(|a| a.parse().ok()),
    })
}

//! The gateway side of vendor_sessions and gateway_pods: pod heartbeats, bind-slot claims,
//! per-slot state reports and releases.
//!
//! The primary key (vendor_id, slot) with slots 0..max_binds is what keeps the fleet within a
//! vendor's bind budget: a pod binds only on a slot it holds, and a slot changes hands only
//! when its holder's heartbeat is older than the TTL (the holder died or hung). Every
//! comparison uses the database clock, so pod clocks never matter.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::DbError;
use sqlx::PgPool;
use uuid::Uuid;

/// The state of one bind slot, as gateways write it to vendor_sessions.state (TEXT, the
/// `as_str()` spelling) and the operator reads it back (it counts `Bound`). Serializes as the
/// same lower-case word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Claimed by a pod, not yet connecting.
    Claimed,
    /// Connecting, handshaking or waiting for bind_resp.
    Connecting,
    /// Bound: the slot carries traffic.
    Bound,
    /// The last attempt failed (or the session ended); waiting to retry.
    Backoff,
    /// Unbinding before the slot is released.
    Unbinding,
}

impl SlotState {
    pub const ALL: &'static [SlotState] = &[
        SlotState::Claimed,
        SlotState::Connecting,
        SlotState::Bound,
        SlotState::Backoff,
        SlotState::Unbinding,
    ];

    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Claimed => "claimed",
            SlotState::Connecting => "connecting",
            SlotState::Bound => "bound",
            SlotState::Backoff => "backoff",
            SlotState::Unbinding => "unbinding",
        }
    }

    /// Exact column value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for SlotState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A vendor_sessions.state this version does not know (written by hand, or by a newer
/// gateway). Reading such a row fails with this as the column decode error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown slot state {0:?} in vendor_mgmt.vendor_sessions (expected claimed, connecting, bound, backoff or unbinding)"
)]
pub struct UnknownSlotState(pub String);

impl TryFrom<String> for SlotState {
    type Error = UnknownSlotState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SlotState::parse(&s).ok_or(UnknownSlotState(s))
    }
}

/// A slot whose holder misses heartbeats this long is taken over. The gateways use it for
/// claims and live pods, and it is the operator's default for ignoring stale sessions.
pub const SLOT_TTL: Duration = Duration::from_secs(15);

fn interval(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// Records that `pod` is alive (insert or refresh its gateway_pods row), and the address where
/// the other pods reach its HTTP API (`--advertise-addr`; None: it takes no forwarded
/// requests). The address is rewritten on every beat, so a restarted pod that changed it, or
/// dropped it, is current within one heartbeat.
pub async fn heartbeat_pod(
    pool: &PgPool,
    pod: &str,
    advertise_addr: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO vendor_mgmt.gateway_pods (pod, advertise_addr) VALUES ($1, $2) \
         ON CONFLICT (pod) DO UPDATE SET heartbeat = now(), \
             advertise_addr = EXCLUDED.advertise_addr",
    )
    .bind(pod)
    .bind(advertise_addr)
    .execute(pool)
    .await?;
    Ok(())
}

/// A live pod holding bound sessions of a vendor: where to forward a submit for it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct BoundPod {
    pub vendor_id: Uuid,
    pub pod: String,
    /// The pod's `--advertise-addr`; None when it advertises none (it cannot be forwarded to).
    pub advertise_addr: Option<String>,
    /// How many of the vendor's slots the pod holds in state `bound` (at least 1).
    pub binds: i64,
}

/// Per vendor, the live pods with at least one bound slot: the slot's heartbeat and the pod's
/// are both within `ttl`. Ordered by vendor, then pod. One statement for the whole fleet, so a
/// forwarding table refresh costs one query however many vendors there are.
pub async fn bound_pods(pool: &PgPool, ttl: Duration) -> Result<Vec<BoundPod>, DbError> {
    bound_pods_except(pool, ttl, None).await
}

/// `bound_pods` without `me` and without pods that advertise no address: the pods `me` can
/// forward to. A pod alone in its fleet reads no rows (its once-a-second refresh of all its
/// own bound slots was most of its idle CPU at 1,000 binds).
pub async fn forward_targets(
    pool: &PgPool,
    me: &str,
    ttl: Duration,
) -> Result<Vec<BoundPod>, DbError> {
    bound_pods_except(pool, ttl, Some(me)).await
}

async fn bound_pods_except(
    pool: &PgPool,
    ttl: Duration,
    me: Option<&str>,
) -> Result<Vec<BoundPod>, DbError> {
    Ok(sqlx::query_as(
        "SELECT s.vendor_id, s.pod, p.advertise_addr, count(*) AS binds \
         FROM vendor_mgmt.vendor_sessions s \
         JOIN vendor_mgmt.gateway_pods p ON p.pod = s.pod \
         WHERE s.state = $2 \
           AND s.heartbeat > now() - make_interval(secs => $1) \
           AND p.heartbeat > now() - make_interval(secs => $1) \
           AND ($3::text IS NULL OR (s.pod <> $3 AND p.advertise_addr IS NOT NULL)) \
         GROUP BY s.vendor_id, s.pod, p.advertise_addr \
         ORDER BY s.vendor_id, s.pod",
    )
    .bind(interval(ttl))
    .bind(SlotState::Bound.as_str())
    .bind(me)
    .fetch_all(pool)
    .await?)
}

/// Pods whose heartbeat is within `ttl` (at least 1: the caller is alive).
pub async fn live_pods(pool: &PgPool, ttl: Duration) -> Result<u32, DbError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vendor_mgmt.gateway_pods \
         WHERE heartbeat > now() - make_interval(secs => $1)",
    )
    .bind(interval(ttl))
    .fetch_one(pool)
    .await?;
    Ok((n.max(1)) as u32)
}

/// Refreshes the heartbeat of every slot `pod` holds and returns them, so the pod learns about
/// slots it lost (taken over after it missed heartbeats) and stops binding on them.
pub async fn heartbeat_slots(pool: &PgPool, pod: &str) -> Result<Vec<(Uuid, i32)>, DbError> {
    Ok(sqlx::query_as(
        "UPDATE vendor_mgmt.vendor_sessions SET heartbeat = now() WHERE pod = $1 \
         RETURNING vendor_id, slot",
    )
    .bind(pod)
    .fetch_all(pool)
    .await?)
}

/// Slots of `vendor_id` held by a live pod other than `pod`.
pub async fn slots_held_by_others(
    pool: &PgPool,
    vendor_id: Uuid,
    pod: &str,
    ttl: Duration,
) -> Result<Vec<i32>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT slot FROM vendor_mgmt.vendor_sessions WHERE vendor_id = $1 AND pod <> $2 \
         AND heartbeat > now() - make_interval(secs => $3) ORDER BY slot",
    )
    .bind(vendor_id)
    .bind(pod)
    .bind(interval(ttl))
    .fetch_all(pool)
    .await?)
}

/// Claims all of `slots` for `pod`, or none: each slot is taken when free, already ours, or
/// held by a pod whose heartbeat is older than `ttl`. A TX+RX pair claims its two slots
/// together this way. Returns whether the claim succeeded.
pub async fn claim(
    pool: &PgPool,
    vendor_id: Uuid,
    slots: &[i32],
    pod: &str,
    config_version: i64,
    ttl: Duration,
) -> Result<bool, DbError> {
    let mut tx = pool.begin().await?;
    for slot in slots {
        let got: Option<i32> = sqlx::query_scalar(
            "INSERT INTO vendor_mgmt.vendor_sessions \
                 (vendor_id, slot, pod, state, since, last_error, heartbeat, config_version) \
             VALUES ($1, $2, $3, 'claimed', now(), NULL, now(), $4) \
             ON CONFLICT (vendor_id, slot) DO UPDATE SET pod = EXCLUDED.pod, state = 'claimed', \
                 since = now(), last_error = NULL, heartbeat = now(), \
                 config_version = EXCLUDED.config_version \
             WHERE vendor_mgmt.vendor_sessions.pod = EXCLUDED.pod \
                OR vendor_mgmt.vendor_sessions.heartbeat < now() - make_interval(secs => $5) \
             RETURNING slot",
        )
        .bind(vendor_id)
        .bind(slot)
        .bind(pod)
        .bind(config_version)
        .bind(interval(ttl))
        .fetch_optional(&mut *tx)
        .await?;
        if got.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// `slots_held_by_others` for many vendors in one statement: per vendor of `vendors` (in that
/// order, repeats allowed), its slots held by a live pod other than `pod`, ascending.
pub async fn slots_held_by_others_many(
    pool: &PgPool,
    vendors: &[Uuid],
    pod: &str,
    ttl: Duration,
) -> Result<Vec<Vec<i32>>, DbError> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT vendor_id, slot FROM vendor_mgmt.vendor_sessions WHERE vendor_id = ANY($1) \
         AND pod <> $2 AND heartbeat > now() - make_interval(secs => $3) ORDER BY vendor_id, slot",
    )
    .bind(vendors)
    .bind(pod)
    .bind(interval(ttl))
    .fetch_all(pool)
    .await?;
    let mut by_vendor: HashMap<Uuid, Vec<i32>> = HashMap::new();
    for (v, slot) in rows {
        by_vendor.entry(v).or_default().push(slot);
    }
    Ok(vendors
        .iter()
        .map(|v| by_vendor.get(v).cloned().unwrap_or_default())
        .collect())
}

/// One unit of a vendor's bind budget to claim: its slots (two for a TX+RX pair), all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitClaim {
    pub vendor_id: Uuid,
    pub slots: Vec<i32>,
    pub config_version: i64,
}

/// `claim` for many units in one transaction of (usually) one statement: per unit, in order,
/// whether all its slots are now `pod`'s. A unit with a slot held by a live other pod gets
/// none; a unit only partly won in a race with another claimer is rolled back, as `claim`
/// would. Claims of the same slot twice in one call are served in order (the second sees the
/// first's row).
pub async fn claim_many(
    pool: &PgPool,
    claims: &[UnitClaim],
    pod: &str,
    ttl: Duration,
) -> Result<Vec<bool>, DbError> {
    let mut result = vec![false; claims.len()];
    let mut refused = vec![false; claims.len()];
    let mut deadlocks = 0;
    'attempt: loop {
        let mut tx = pool.begin().await?;
        let mut won: Vec<usize> = Vec::new();
        for round in rounds(claims, &refused) {
            let got = match claim_round(&mut tx, claims, &round, pod, ttl).await {
                // Rows are locked in (vendor, slot) order, but a batch of several rounds
                // can still cross another claimer's locks: PostgreSQL aborts one; retry it.
                Err(e) if is_deadlock(&e) && deadlocks < 3 => {
                    deadlocks += 1;
                    let _ = tx.rollback().await;
                    continue 'attempt;
                }
                r => r?,
            };
            let partial: Vec<usize> = round
                .iter()
                .copied()
                .filter(|&i| (1..claims[i].slots.len()).contains(&got[&i]))
                .collect();
            if !partial.is_empty() {
                // Lost a race for part of a pair: none of this attempt stands; retry without it.
                tx.rollback().await?;
                for i in partial {
                    refused[i] = true;
                }
                continue 'attempt;
            }
            won.extend(round.iter().filter(|&&i| got[&i] == claims[i].slots.len()));
        }
        tx.commit().await?;
        for i in won {
            result[i] = true;
        }
        return Ok(result);
    }
}

fn is_deadlock(e: &DbError) -> bool {
    matches!(e, DbError::Query(sqlx::Error::Database(d)) if d.code().as_deref() == Some("40P01"))
}

/// Claims not `refused`, split in rounds within which no (vendor, slot) repeats (one INSERT …
/// ON CONFLICT cannot touch a row twice). Pure.
fn rounds(claims: &[UnitClaim], refused: &[bool]) -> Vec<Vec<usize>> {
    let mut seen: Vec<HashSet<(Uuid, i32)>> = Vec::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, c) in claims.iter().enumerate().filter(|(i, _)| !refused[*i]) {
        let keys: Vec<(Uuid, i32)> = c.slots.iter().map(|s| (c.vendor_id, *s)).collect();
        match seen
            .iter()
            .position(|round| keys.iter().all(|k| !round.contains(k)))
        {
            Some(r) => {
                seen[r].extend(keys);
                rounds[r].push(i);
            }
            None => {
                seen.push(keys.into_iter().collect());
                rounds.push(vec![i]);
            }
        }
    }
    rounds
}

/// One statement for the claims `round` (indexes into `claims`): how many slots each got.
async fn claim_round(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    claims: &[UnitClaim],
    round: &[usize],
    pod: &str,
    ttl: Duration,
) -> Result<HashMap<usize, usize>, DbError> {
    // Rows in (vendor, slot) order, the order every claimer locks them in (`claim` too), so
    // two claimers never wait for each other's rows crosswise.
    let mut rows: Vec<(Uuid, i32, i32, i64)> = round
        .iter()
        .flat_map(|&i| {
            let c = &claims[i];
            c.slots
                .iter()
                .map(move |s| (c.vendor_id, *s, i as i32, c.config_version))
        })
        .collect();
    rows.sort_unstable();
    let (mut vendors, mut slots, mut units, mut versions) = (vec![], vec![], vec![], vec![]);
    for (v, s, u, c) in rows {
        vendors.push(v);
        slots.push(s);
        units.push(u);
        versions.push(c);
    }
    // Units with a slot held by a live other pod are left out whole; the ON CONFLICT condition
    // (the same as `claim`'s) still decides each slot, so a concurrent claimer is never robbed.
    let got: Vec<(i32,)> = sqlx::query_as(
        "WITH want AS ( \
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::int8[]) \
                 AS w(vendor_id, slot, unit, config_version)), \
         blocked AS ( \
             SELECT DISTINCT w.unit FROM want w JOIN vendor_mgmt.vendor_sessions s \
                 ON s.vendor_id = w.vendor_id AND s.slot = w.slot \
             WHERE s.pod <> $5 AND s.heartbeat >= now() - make_interval(secs => $6)), \
         claimed AS ( \
             INSERT INTO vendor_mgmt.vendor_sessions \
                 (vendor_id, slot, pod, state, since, last_error, heartbeat, config_version) \
             SELECT w.vendor_id, w.slot, $5, 'claimed', now(), NULL, now(), w.config_version \
             FROM want w WHERE w.unit NOT IN (SELECT unit FROM blocked) \
             ORDER BY w.vendor_id, w.slot \
             ON CONFLICT (vendor_id, slot) DO UPDATE SET pod = EXCLUDED.pod, state = 'claimed', \
                 since = now(), last_error = NULL, heartbeat = now(), \
                 config_version = EXCLUDED.config_version \
             WHERE vendor_mgmt.vendor_sessions.pod = EXCLUDED.pod \
                OR vendor_mgmt.vendor_sessions.heartbeat < now() - make_interval(secs => $6) \
             RETURNING vendor_id, slot) \
         SELECT w.unit FROM claimed c JOIN want w ON w.vendor_id = c.vendor_id AND w.slot = c.slot",
    )
    .bind(&vendors)
    .bind(&slots)
    .bind(&units)
    .bind(&versions)
    .bind(pod)
    .bind(interval(ttl))
    .fetch_all(&mut **tx)
    .await?;
    let mut count: HashMap<usize, usize> = round.iter().map(|&i| (i, 0)).collect();
    for (unit,) in got {
        *count.entry(unit as usize).or_default() += 1;
    }
    Ok(count)
}

/// Reports one slot's state. `since` moves only when the state changes; `last_error` is
/// replaced (None clears it). Returns false when `pod` no longer holds the slot.
pub async fn report(
    pool: &PgPool,
    vendor_id: Uuid,
    slot: i32,
    pod: &str,
    state: SlotState,
    last_error: Option<&str>,
    config_version: i64,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE vendor_mgmt.vendor_sessions SET \
             since = CASE WHEN state IS DISTINCT FROM $4 THEN now() ELSE since END, \
             state = $4, last_error = $5, heartbeat = now(), config_version = $6 \
         WHERE vendor_id = $1 AND slot = $2 AND pod = $3",
    )
    .bind(vendor_id)
    .bind(slot)
    .bind(pod)
    .bind(state.as_str())
    .bind(last_error)
    .bind(config_version)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// One slot's state, for [`report_many`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotReport {
    pub vendor_id: Uuid,
    pub slot: i32,
    pub state: SlotState,
    pub last_error: Option<String>,
    pub config_version: i64,
}

/// [`report`] for many slots of `pod` in one statement (a pod with 1,000 vendors reports
/// their states at start without queueing 1,000 queries). Slots no longer held are skipped.
pub async fn report_many(pool: &PgPool, pod: &str, reports: &[SlotReport]) -> Result<(), DbError> {
    let ids: Vec<Uuid> = reports.iter().map(|r| r.vendor_id).collect();
    let slots: Vec<i32> = reports.iter().map(|r| r.slot).collect();
    let states: Vec<&str> = reports.iter().map(|r| r.state.as_str()).collect();
    let errors: Vec<Option<&str>> = reports.iter().map(|r| r.last_error.as_deref()).collect();
    let versions: Vec<i64> = reports.iter().map(|r| r.config_version).collect();
    sqlx::query(
        "UPDATE vendor_mgmt.vendor_sessions AS s SET \
             since = CASE WHEN s.state IS DISTINCT FROM u.state THEN now() ELSE s.since END, \
             state = u.state, last_error = u.last_error, heartbeat = now(), \
             config_version = u.version \
         FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::bigint[]) \
             AS u(vendor_id, slot, state, last_error, version) \
         WHERE s.vendor_id = u.vendor_id AND s.slot = u.slot AND s.pod = $1",
    )
    .bind(pod)
    .bind(&ids)
    .bind(&slots)
    .bind(&states)
    .bind(&errors)
    .bind(&versions)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives `slots` back (after the binds on them are closed).
pub async fn release(
    pool: &PgPool,
    vendor_id: Uuid,
    slots: &[i32],
    pod: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM vendor_mgmt.vendor_sessions \
         WHERE vendor_id = $1 AND slot = ANY($2) AND pod = $3",
    )
    .bind(vendor_id)
    .bind(slots)
    .bind(pod)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes `pod` and every slot it holds (graceful shutdown, after unbinding).
pub async fn remove_pod(pool: &PgPool, pod: &str) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM vendor_mgmt.vendor_sessions WHERE pod = $1")
        .bind(pod)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM vendor_mgmt.gateway_pods WHERE pod = $1")
        .bind(pod)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One slot as stored, for tests and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Slot {
    pub slot: i32,
    pub pod: String,
    #[sqlx(try_from = "String")]
    pub state: SlotState,
    pub last_error: Option<String>,
    pub config_version: Option<i64>,
}

/// Every slot row of `vendor_id`, ordered by slot.
pub async fn slots(pool: &PgPool, vendor_id: Uuid) -> Result<Vec<Slot>, DbError> {
    Ok(sqlx::query_as(
        "SELECT slot, pod, state, last_error, config_version FROM vendor_mgmt.vendor_sessions \
         WHERE vendor_id = $1 ORDER BY slot",
    )
    .bind(vendor_id)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_asked_twice_in_a_batch_goes_to_a_later_round_and_refused_ones_to_none() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let c = |v, slots: &[i32]| UnitClaim {
            vendor_id: v,
            slots: slots.to_vec(),
            config_version: 1,
        };
        let claims = [
            c(a, &[0, 1]),
            c(b, &[0]),
            c(a, &[1]),
            c(a, &[2]),
            c(a, &[1]),
        ];
        assert_eq!(
            rounds(&claims, &[false; 5]),
            vec![vec![0, 1, 3], vec![2], vec![4]]
        );
        assert_eq!(
            rounds(&claims, &[true, false, false, false, true]),
            vec![vec![1, 2, 3]]
        );
    }

    #[test]
    fn slot_state_round_trips_and_serializes_as_the_column_value() {
        for s in SlotState::ALL {
            assert_eq!(SlotState::parse(s.as_str()), Some(*s));
            assert_eq!(SlotState::try_from(s.as_str().to_string()), Ok(*s));
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(
            SlotState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            ["claimed", "connecting", "bound", "backoff", "unbinding"]
        );
    }

    #[test]
    fn unknown_slot_state_is_an_error_not_a_panic() {
        assert_eq!(SlotState::parse("Bound"), None);
        let e = SlotState::try_from("draining".to_string()).unwrap_err();
        assert!(
            e.to_string().contains("unknown slot state \"draining\""),
            "{e}"
        );
    }
}

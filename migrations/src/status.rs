//! Read-only aggregation of vendor_sessions for the operator's status: which sessions are
//! alive (heartbeat within a TTL), how many are bound, and the newest error a gateway saw.

use crate::DbError;
use crate::sessions::SlotState;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One bind slot as a gateway pod last reported it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub slot: i32,
    pub pod: String,
    /// An unknown value in the column fails the read ([`crate::sessions::UnknownSlotState`]).
    #[sqlx(try_from = "String")]
    pub state: SlotState,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    pub heartbeat: DateTime<Utc>,
}

/// The live sessions of one vendor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VendorSessions {
    /// Sessions whose heartbeat is within the TTL, ordered by slot.
    pub sessions: Vec<SessionRow>,
    /// How many of them are bound.
    pub bound: u32,
    /// The most recent error among live sessions (by `since`), if any.
    pub last_error: Option<String>,
}

/// NOTIFY channel of migration 0003: a slot of a vendor changed state, error or pod (not on
/// heartbeats). Payload: the vendor_id.
pub const SESSIONS_CHANNEL: &str = "vendor_mgmt_vendor_sessions";

/// Drops sessions with a heartbeat older than `ttl` (their pod is gone or stuck) and sums
/// up the rest. `now` is the database clock, so gateway and operator clocks never matter.
pub fn aggregate(rows: Vec<SessionRow>, now: DateTime<Utc>, ttl: Duration) -> VendorSessions {
    let mut sessions: Vec<SessionRow> = rows
        .into_iter()
        .filter(|s| now - s.heartbeat <= ttl)
        .collect();
    sessions.sort_by_key(|s| s.slot);
    let bound = sessions
        .iter()
        .filter(|s| s.state == SlotState::Bound)
        .count() as u32;
    let last_error = sessions
        .iter()
        .filter(|s| s.last_error.as_deref().is_some_and(|e| !e.is_empty()))
        .max_by_key(|s| s.since)
        .and_then(|s| s.last_error.clone());
    VendorSessions {
        sessions,
        bound,
        last_error,
    }
}

#[derive(sqlx::FromRow)]
struct RawSession {
    #[sqlx(flatten)]
    session: SessionRow,
    db_now: DateTime<Utc>,
}

/// Live sessions of `vendor_id`, judged against the database clock. One statement: this
/// runs for every vendor on every status refresh.
pub async fn vendor_sessions(
    pool: &PgPool,
    vendor_id: Uuid,
    ttl: Duration,
) -> Result<VendorSessions, DbError> {
    let rows: Vec<RawSession> = sqlx::query_as(
        "SELECT slot, pod, state, since, last_error, heartbeat, now() AS db_now \
         FROM vendor_mgmt.vendor_sessions WHERE vendor_id = $1",
    )
    .bind(vendor_id)
    .fetch_all(pool)
    .await?;
    // No rows: nothing to judge, the clock does not matter.
    let now = rows.first().map(|r| r.db_now).unwrap_or_else(Utc::now);
    Ok(aggregate(
        rows.into_iter().map(|r| r.session).collect(),
        now,
        ttl,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn row(slot: i32, state: &str, since: i64, hb: i64, err: Option<&str>) -> SessionRow {
        SessionRow {
            slot,
            pod: format!("gw-{slot}"),
            state: SlotState::parse(state).unwrap(),
            since: t(since),
            last_error: err.map(String::from),
            heartbeat: t(hb),
        }
    }

    #[test]
    fn stale_heartbeats_are_ignored() {
        let rows = vec![
            row(1, "bound", 0, 100, None),
            row(0, "bound", 0, 50, Some("old")), // 60 s stale with a 30 s TTL
        ];
        let agg = aggregate(rows, t(110), Duration::seconds(30));
        assert_eq!(agg.bound, 1);
        assert_eq!(agg.sessions.len(), 1);
        assert_eq!(agg.sessions[0].slot, 1);
        assert_eq!(agg.last_error, None);
    }

    #[test]
    fn newest_error_wins_and_only_bound_count() {
        let rows = vec![
            row(0, "backoff", 10, 100, Some("tls: unknown CA")),
            row(
                1,
                "connecting",
                20,
                100,
                Some("peer closed after TLS handshake"),
            ),
            row(2, "bound", 5, 100, Some("")),
        ];
        let agg = aggregate(rows, t(100), Duration::seconds(30));
        assert_eq!(agg.bound, 1);
        assert_eq!(
            agg.last_error.as_deref(),
            Some("peer closed after TLS handshake")
        );
        assert_eq!(
            agg.sessions.iter().map(|s| s.slot).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(
            aggregate(vec![], t(0), Duration::seconds(30)),
            VendorSessions::default()
        );
    }
}

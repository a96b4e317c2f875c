//! Pure computation of a resource's status from what one reconcile observed. Conditions
//! keep their lastTransitionTime while their status stays the same, so an unchanged world
//! produces an identical status and no write.
//!
//! The condition builders, Synced, CredentialsResolved and the transition stamping are shared
//! by SmppVendor (here) and SmppAccount (account_status.rs); Bound and the vendor's Ready are
//! the vendor's own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use smpp_crds::{SessionStatus, SmppVendorStatus, condition, reason};
use smpp_db::DbError;
use smpp_db::status::VendorSessions;
use uuid::Uuid;

/// Outcome of resolving the referenced Secrets.
#[derive(Clone, Debug, PartialEq)]
pub enum CredState {
    Resolved,
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Outcome of writing the row.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncState {
    /// The row matches the spec.
    Synced {
        /// The row's key (instance_name, system_id).
        name: String,
        id: Uuid,
    },
    /// Not written because the Secrets could not be resolved; the last good row stays.
    WaitingForCredentials,
    /// PostgreSQL unreachable.
    DatabaseUnavailable(String),
    /// PostgreSQL answered with an error.
    DatabaseError(String),
    /// An older resource of the same kind owns the row with this key.
    Conflict { name: String, owner: String },
}

impl SyncState {
    /// A failed write, as DatabaseUnavailable or DatabaseError.
    pub fn from_db_error(e: &DbError) -> Self {
        if e.is_unavailable() {
            SyncState::DatabaseUnavailable(e.to_string())
        } else {
            SyncState::DatabaseError(e.to_string())
        }
    }
}

/// What the Synced condition names for a kind of resource: its table, the spec field that
/// keys the row, and how to resolve a conflict.
pub struct RowKind {
    pub kind: &'static str,
    pub table: &'static str,
    pub key_field: &'static str,
    pub conflict_fix: &'static str,
}

/// SmppVendor rows.
pub const VENDOR_ROWS: RowKind = RowKind {
    kind: "SmppVendor",
    table: "vendor_mgmt.service_providers",
    key_field: "instanceName",
    conflict_fix: "re-create this one with another spec.instanceName",
};

/// Everything one reconcile learned.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub generation: i64,
    pub creds: CredState,
    pub sync: SyncState,
    /// The owned row's id, when known (also while waiting for credentials).
    pub vendor_id: Option<Uuid>,
    /// None when vendor_sessions could not be read (or there is no owned row).
    pub sessions: Option<VendorSessions>,
    pub desired: i32,
    pub suspended: bool,
}

/// A condition with `ok` as True / False / Unknown (None); stamped later by [`stamp`].
pub fn cond(
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: match ok {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
        .into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: Time(Default::default()),
    }
}

/// Synced: whether the row matches the spec, and what to do when it cannot.
pub fn synced_condition(sync: &SyncState, generation: i64, rows: &RowKind) -> Condition {
    let RowKind {
        kind,
        table,
        key_field,
        conflict_fix,
    } = rows;
    let (ok, reason, msg) = match sync {
        SyncState::Synced { name, id } => (
            true,
            reason::SYNCED,
            format!("row {name:?} (id {id}) in {table} matches the spec"),
        ),
        SyncState::WaitingForCredentials => (
            false,
            reason::PENDING,
            "row not written: the referenced Secrets could not be resolved (see CredentialsResolved); the last written row stays in effect".into(),
        ),
        SyncState::DatabaseUnavailable(e) => (
            false,
            reason::DATABASE_UNAVAILABLE,
            format!("cannot reach PostgreSQL, retrying with backoff; check that it is running and the operator's DATABASE_URL: {e}"),
        ),
        SyncState::DatabaseError(e) => (
            false,
            reason::DATABASE_ERROR,
            format!("writing the row failed; check the operator log and the vendor_mgmt schema: {e}"),
        ),
        SyncState::Conflict { name, owner } => (
            false,
            reason::CONFLICT,
            format!("{key_field} {name:?} is already managed by the older {kind} {owner}; this resource does not touch that row. Delete one of them, or {conflict_fix}"),
        ),
    };
    cond(condition::SYNCED, Some(ok), reason, msg, generation)
}

/// CredentialsResolved: `resolved` says what was read when it worked.
pub fn creds_condition(creds: &CredState, generation: i64, resolved: &str) -> Condition {
    match creds {
        CredState::Resolved => cond(
            condition::CREDENTIALS_RESOLVED,
            Some(true),
            reason::RESOLVED,
            resolved.into(),
            generation,
        ),
        CredState::Failed { reason, message } => cond(
            condition::CREDENTIALS_RESOLVED,
            Some(false),
            reason,
            message.clone(),
            generation,
        ),
    }
}

fn bound_condition(o: &Observation, last_error: Option<&str>) -> Condition {
    let g = o.generation;
    if o.suspended {
        return cond(
            condition::BOUND,
            Some(false),
            reason::SUSPENDED,
            "spec.suspend is true: the row is kept and every gateway unbinds".into(),
            g,
        );
    }
    if matches!(o.sync, SyncState::Conflict { .. }) {
        return cond(
            condition::BOUND,
            Some(false),
            reason::CONFLICT,
            "no row of its own (see Synced)".into(),
            g,
        );
    }
    let Some(s) = &o.sessions else {
        let why = if o.vendor_id.is_none() {
            "no row written yet"
        } else {
            "cannot read vendor_sessions"
        };
        return cond(
            condition::BOUND,
            None,
            reason::PENDING,
            format!("bind state unknown: {why}"),
            g,
        );
    };
    let (bound, desired) = (s.bound as i32, o.desired);
    let err = last_error;
    if bound >= desired {
        return cond(
            condition::BOUND,
            Some(true),
            reason::BOUND,
            format!("{bound}/{desired} binds up"),
            g,
        );
    }
    let (reason, msg) = match (bound, err) {
        (0, Some(e)) => (
            reason::BIND_FAILED,
            format!("0/{desired} binds up; last gateway error: {e}"),
        ),
        (0, None) if s.sessions.is_empty() => (
            reason::NOT_BOUND,
            format!(
                "0/{desired} binds up and no gateway reports a session; are smpp-gateway pods running against the same database?"
            ),
        ),
        (0, None) => (
            reason::CONNECTING,
            format!(
                "0/{desired} binds up; gateways are connecting ({})",
                states(s)
            ),
        ),
        (_, Some(e)) => (
            reason::PARTIALLY_BOUND,
            format!("{bound}/{desired} binds up; last gateway error: {e}"),
        ),
        (_, None) => (
            reason::PARTIALLY_BOUND,
            format!(
                "{bound}/{desired} binds up; the other slots are not claimed (fewer gateway pods than maxBinds, or they are still connecting)"
            ),
        ),
    };
    cond(condition::BOUND, Some(false), reason, msg, g)
}

/// "gw-0 connecting, gw-1 claimed".
fn states(s: &VendorSessions) -> String {
    let parts: Vec<String> = s
        .sessions
        .iter()
        .map(|r| format!("{} {}", r.pod, r.state))
        .collect();
    parts.join(", ")
}

/// The error to show. A gateway clears a slot's error when it claims the slot again to
/// retry, so between attempts the live rows say nothing; while the vendor is still short of
/// binds and gateways are retrying, the last error seen stays the answer to "why".
fn effective_last_error(o: &Observation, previous: Option<&SmppVendorStatus>) -> Option<String> {
    let s = o.sessions.as_ref()?;
    if s.last_error.is_some() {
        return s.last_error.clone();
    }
    let retrying = !s.sessions.is_empty() && (s.bound as i32) < o.desired;
    let same_row =
        previous.and_then(|p| p.vendor_id.clone()) == o.vendor_id.map(|id| id.to_string());
    if retrying && same_row {
        previous.and_then(|p| p.last_error.clone())
    } else {
        None
    }
}

/// Ready is True only when the other three are; otherwise it carries the first blocker.
fn ready_condition(o: &Observation, others: &[Condition; 3]) -> Condition {
    let [synced, creds, bound] = others;
    // Conflict and credentials come first: they need a person; Synced next; then binding.
    let blocker = if synced.reason == reason::CONFLICT {
        Some(synced)
    } else if creds.status != "True" {
        Some(creds)
    } else if synced.status != "True" {
        Some(synced)
    } else if bound.status != "True" {
        Some(bound)
    } else {
        None
    };
    match blocker {
        None => cond(
            condition::READY,
            Some(true),
            reason::READY,
            format!("synced and {}", bound.message),
            o.generation,
        ),
        Some(c) => {
            let ok = if c.status == "Unknown" {
                None
            } else {
                Some(false)
            };
            cond(
                condition::READY,
                ok,
                &c.reason,
                format!("{}: {}", c.type_, c.message),
                o.generation,
            )
        }
    }
}

/// Keeps the previous lastTransitionTime when the status did not change.
pub fn stamp(mut c: Condition, previous: &[Condition], now: &Time) -> Condition {
    c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
        Some(p) if p.status == c.status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    c
}

/// The status to write for `o`, given the current one.
pub fn build_status(
    o: &Observation,
    previous: Option<&SmppVendorStatus>,
    now: Time,
) -> SmppVendorStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let last_error = match &o.sessions {
        Some(_) => effective_last_error(o, previous),
        // vendor_sessions unreadable: keep what was last seen.
        None => previous
            .filter(|_| o.vendor_id.is_some())
            .and_then(|p| p.last_error.clone()),
    };
    let three = [
        synced_condition(&o.sync, o.generation, &VENDOR_ROWS),
        creds_condition(
            &o.creds,
            o.generation,
            "password (and TLS material, if referenced) read from the Secrets",
        ),
        bound_condition(o, last_error.as_deref()),
    ];
    let ready = ready_condition(o, &three);
    let [synced, creds, bound] = three;
    let conditions = [synced, creds, bound, ready]
        .into_iter()
        .map(|c| stamp(c, prev_conditions, &now))
        .collect();

    let (bound_sessions, sessions) = match (&o.sessions, previous) {
        (Some(s), _) => (
            s.bound as i32,
            s.sessions
                .iter()
                .map(|r| SessionStatus {
                    pod: r.pod.clone(),
                    state: r.state.to_string(),
                    since: Some(r.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    last_error: r.last_error.clone().filter(|e| !e.is_empty()),
                })
                .collect(),
        ),
        // vendor_sessions unreadable: keep what was last seen rather than claim 0.
        (None, Some(p)) if o.vendor_id.is_some() => (p.bound_sessions, p.sessions.clone()),
        (None, _) => (0, Vec::new()),
    };
    SmppVendorStatus {
        observed_generation: Some(o.generation),
        vendor_id: o.vendor_id.map(|id| id.to_string()),
        bound_sessions,
        desired_sessions: o.desired,
        bound: Some(format!("{bound_sessions}/{}", o.desired)),
        last_error,
        sessions,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use smpp_db::sessions::SlotState;
    use smpp_db::status::SessionRow;

    fn now() -> Time {
        Time(Default::default())
    }

    fn later() -> Time {
        Time("2030-01-01T00:00:00Z".parse().unwrap())
    }

    fn sessions(bound: u32, states: &[(&str, Option<&str>)]) -> VendorSessions {
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        VendorSessions {
            bound,
            last_error: states.iter().rev().find_map(|(_, e)| e.map(String::from)),
            sessions: states
                .iter()
                .enumerate()
                .map(|(i, (s, e))| SessionRow {
                    slot: i as i32,
                    pod: format!("gw-{i}"),
                    state: SlotState::parse(s).unwrap(),
                    since: t,
                    last_error: e.map(String::from),
                    heartbeat: t,
                })
                .collect(),
        }
    }

    fn obs() -> Observation {
        let id = Uuid::nil();
        Observation {
            generation: 3,
            creds: CredState::Resolved,
            sync: SyncState::Synced {
                name: "ns.v".into(),
                id,
            },
            vendor_id: Some(id),
            sessions: Some(sessions(2, &[("bound", None), ("bound", None)])),
            desired: 2,
            suspended: false,
        }
    }

    fn get<'a>(s: &'a SmppVendorStatus, t: &str) -> &'a Condition {
        s.condition(t).unwrap()
    }

    #[test]
    fn all_good_is_ready_2_of_2() {
        let s = build_status(&obs(), None, now());
        assert_eq!(s.bound.as_deref(), Some("2/2"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.sessions.len(), 2);
        assert_eq!(s.sessions[0].since.as_deref(), Some("2023-11-14T22:13:20Z"));
        for t in ["Synced", "CredentialsResolved", "Bound", "Ready"] {
            assert_eq!(get(&s, t).status, "True", "{t}");
            assert_eq!(get(&s, t).observed_generation, Some(3));
        }
        assert_eq!(get(&s, "Ready").reason, "Ready");
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = build_status(&obs(), None, now());
        let again = build_status(&obs(), Some(&first), later());
        assert_eq!(first, again, "an unchanged world gives an identical status");
        let mut o = obs();
        o.sessions = Some(sessions(
            1,
            &[
                ("bound", None),
                ("backoff", Some("bind_resp: ESME_RBINDFAIL")),
            ],
        ));
        let changed = build_status(&o, Some(&first), later());
        assert_eq!(get(&changed, "Bound").last_transition_time, later());
        assert_eq!(get(&changed, "Synced").last_transition_time, now());
    }

    #[test]
    fn partial_and_failed_binds_carry_the_gateway_error() {
        let mut o = obs();
        o.sessions = Some(sessions(
            1,
            &[("bound", None), ("backoff", Some("tls: unknown CA"))],
        ));
        let s = build_status(&o, None, now());
        assert_eq!(s.bound.as_deref(), Some("1/2"));
        assert_eq!(get(&s, "Bound").reason, "PartiallyBound");
        assert_eq!(s.last_error.as_deref(), Some("tls: unknown CA"));
        assert_eq!(get(&s, "Ready").reason, "PartiallyBound");
        assert!(get(&s, "Ready").message.contains("tls: unknown CA"));

        o.sessions = Some(sessions(
            0,
            &[("backoff", Some("peer closed after TLS handshake"))],
        ));
        let s = build_status(&o, None, now());
        assert_eq!(get(&s, "Bound").reason, "BindFailed");
        o.sessions = Some(VendorSessions::default());
        let s = build_status(&o, None, now());
        assert_eq!(get(&s, "Bound").reason, "NotBound");
        assert!(get(&s, "Bound").message.contains("smpp-gateway pods"));
    }

    #[test]
    fn last_error_stays_while_gateways_retry() {
        let mut o = obs();
        o.desired = 1;
        o.sessions = Some(sessions(
            0,
            &[("backoff", Some("bind_resp: ESME_RINVPASWD"))],
        ));
        let failed = build_status(&o, None, now());
        // The gateway claims the slot again to retry: the row's error is cleared.
        o.sessions = Some(sessions(0, &[("connecting", None)]));
        let retrying = build_status(&o, Some(&failed), later());
        assert_eq!(
            retrying.last_error.as_deref(),
            Some("bind_resp: ESME_RINVPASWD")
        );
        assert_eq!(get(&retrying, "Bound").reason, "BindFailed");
        assert_eq!(
            get(&retrying, "Bound").last_transition_time,
            now(),
            "no flapping"
        );
        // Bound at last: the old error is gone.
        o.sessions = Some(sessions(1, &[("bound", None)]));
        let ok = build_status(&o, Some(&retrying), later());
        assert_eq!(ok.last_error, None);
        assert_eq!(get(&ok, "Ready").status, "True");
        // No gateway at all: not "retrying", so not carried.
        o.sessions = Some(VendorSessions::default());
        let gone = build_status(&o, Some(&retrying), later());
        assert_eq!(gone.last_error, None);
        assert_eq!(get(&gone, "Bound").reason, "NotBound");
    }

    #[test]
    fn connecting_without_an_error_says_so() {
        let mut o = obs();
        o.sessions = Some(sessions(0, &[("claimed", None), ("connecting", None)]));
        let s = build_status(&o, None, now());
        assert_eq!(get(&s, "Bound").reason, "Connecting");
        assert!(
            get(&s, "Bound")
                .message
                .contains("gw-0 claimed, gw-1 connecting")
        );
    }

    #[test]
    fn suspended_wants_zero_binds() {
        let mut o = obs();
        o.suspended = true;
        o.desired = 0;
        o.sessions = Some(VendorSessions::default());
        let s = build_status(&o, None, now());
        assert_eq!(s.bound.as_deref(), Some("0/0"));
        assert_eq!(get(&s, "Ready").reason, "Suspended");
        assert_eq!(get(&s, "Ready").status, "False");
    }

    #[test]
    fn conflict_wins_over_everything_and_shows_no_sessions() {
        let mut o = obs();
        o.sync = SyncState::Conflict {
            name: "X".into(),
            owner: "ns/older".into(),
        };
        o.vendor_id = None;
        o.sessions = None;
        let s = build_status(&o, None, now());
        assert_eq!(get(&s, "Ready").reason, "Conflict");
        assert_eq!(get(&s, "Synced").reason, "Conflict");
        assert!(get(&s, "Synced").message.contains("ns/older"));
        assert_eq!(s.vendor_id, None);
        assert_eq!(s.bound.as_deref(), Some("0/2"));
    }

    #[test]
    fn missing_secret_blocks_ready_with_its_reason() {
        let mut o = obs();
        o.creds = CredState::Failed {
            reason: "SecretNotFound",
            message: "Secret ns/x not found".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        o.vendor_id = None;
        o.sessions = None;
        let s = build_status(&o, None, now());
        assert_eq!(get(&s, "CredentialsResolved").reason, "SecretNotFound");
        assert_eq!(get(&s, "Synced").status, "False");
        assert_eq!(get(&s, "Ready").reason, "SecretNotFound");
        assert_eq!(get(&s, "Bound").status, "Unknown");
    }

    #[test]
    fn database_down_keeps_last_seen_sessions() {
        let first = build_status(&obs(), None, now());
        let mut o = obs();
        o.sync = SyncState::DatabaseUnavailable("connection refused".into());
        o.sessions = None;
        let s = build_status(&o, Some(&first), later());
        assert_eq!(get(&s, "Synced").reason, "DatabaseUnavailable");
        assert!(get(&s, "Synced").message.contains("DATABASE_URL"));
        assert_eq!(get(&s, "Ready").reason, "DatabaseUnavailable");
        assert_eq!(s.bound_sessions, 2);
        assert_eq!(get(&s, "Bound").status, "Unknown");
    }
}

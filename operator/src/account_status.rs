//! Pure computation of an SmppAccount's status from what one reconcile observed: Synced and
//! CredentialsResolved as for vendors (status.rs), Ready from those two and spec.suspend, and
//! the customer's live binds (BOUND). Whether a customer is bound right now does not make an
//! account more or less Ready: an account is ready when customers can bind to it.

use crate::status::{
    CredState, RowKind, SyncState, cond, creds_condition, stamp, synced_condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use smpp_crds::account::CustomerSessionStatus;
use smpp_crds::{SmppAccountStatus, condition, reason};
use smpp_db::accounts::CustomerBind;
use uuid::Uuid;

/// SmppAccount rows.
pub const ACCOUNT_ROWS: RowKind = RowKind {
    kind: "SmppAccount",
    table: "vendor_mgmt.customer_accounts",
    key_field: "systemId",
    conflict_fix: "give this one another spec.systemId",
};

/// What CredentialsResolved says when the password was read.
const RESOLVED: &str = "password read from the Secret; only its argon2id hash is stored";

/// Everything one reconcile of an account learned.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountObservation {
    pub generation: i64,
    pub system_id: String,
    pub creds: CredState,
    pub sync: SyncState,
    /// The owned row's id, when known (also while waiting for credentials).
    pub account_id: Option<Uuid>,
    /// The live binds; None when account_sessions could not be read (or there is no row).
    pub binds: Option<Vec<CustomerBind>>,
    pub max_binds: i32,
    pub suspended: bool,
}

/// Ready is True when the row is in sync, the password resolved and the account not
/// suspended; otherwise it carries the first blocker.
fn ready_condition(o: &AccountObservation, synced: &Condition, creds: &Condition) -> Condition {
    let g = o.generation;
    // Conflict and credentials first: they need a person; the database next.
    let blocker = if synced.reason == reason::CONFLICT {
        Some(synced)
    } else if creds.status != "True" {
        Some(creds)
    } else if synced.status != "True" {
        Some(synced)
    } else {
        None
    };
    match blocker {
        Some(c) => cond(
            condition::READY,
            Some(false),
            &c.reason,
            format!("{}: {}", c.type_, c.message),
            g,
        ),
        None if o.suspended => cond(
            condition::READY,
            Some(false),
            reason::SUSPENDED,
            "spec.suspend is true: the gateways refuse binds and close the customer's sessions; the account is kept".into(),
            g,
        ),
        None => cond(
            condition::READY,
            Some(true),
            reason::READY,
            format!(
                "customers can bind as {:?} (row in sync, password resolved)",
                o.system_id
            ),
            g,
        ),
    }
}

fn session_status(b: &CustomerBind) -> CustomerSessionStatus {
    CustomerSessionStatus {
        pod: b.pod.clone(),
        bind_type: b.bind_type.clone(),
        remote_addr: b.remote_addr.clone(),
        since: Some(b.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }
}

/// The status to write for `o`, given the current one.
pub fn build_account_status(
    o: &AccountObservation,
    previous: Option<&SmppAccountStatus>,
    now: Time,
) -> SmppAccountStatus {
    let g = o.generation;
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let synced = synced_condition(&o.sync, g, &ACCOUNT_ROWS);
    let creds = creds_condition(&o.creds, g, RESOLVED);
    let ready = ready_condition(o, &synced, &creds);
    let conditions = [synced, creds, ready]
        .into_iter()
        .map(|c| stamp(c, prev_conditions, &now))
        .collect();
    let (bound_sessions, sessions) = match (&o.binds, previous) {
        (Some(b), _) => (b.len() as i32, b.iter().map(session_status).collect()),
        // account_sessions unreadable: keep what was last seen rather than claim 0.
        (None, Some(p)) if o.account_id.is_some() => (p.bound_sessions, p.sessions.clone()),
        (None, _) => (0, Vec::new()),
    };
    SmppAccountStatus {
        observed_generation: Some(g),
        account_id: o.account_id.map(|id| id.to_string()),
        bound_sessions,
        bound: Some(format!("{bound_sessions}/{}", o.max_binds)),
        sessions,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::transition_events;
    use crate::events::EventType;
    use chrono::{TimeZone, Utc};

    fn now() -> Time {
        Time(Default::default())
    }

    fn later() -> Time {
        Time("2030-01-01T00:00:00Z".parse().unwrap())
    }

    fn bind(slot: i32, pod: &str, bind_type: &str) -> CustomerBind {
        CustomerBind {
            slot,
            pod: pod.into(),
            bind_type: bind_type.into(),
            remote_addr: format!("203.0.113.7:{}", 40000 + slot),
            since: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        }
    }

    fn obs() -> AccountObservation {
        let id = Uuid::nil();
        AccountObservation {
            generation: 4,
            system_id: "acme".into(),
            creds: CredState::Resolved,
            sync: SyncState::Synced {
                name: "acme".into(),
                id,
            },
            account_id: Some(id),
            binds: Some(vec![]),
            max_binds: 2,
            suspended: false,
        }
    }

    fn get<'a>(s: &'a SmppAccountStatus, t: &str) -> &'a Condition {
        s.condition(t).unwrap()
    }

    fn reasons(s: &SmppAccountStatus) -> Vec<(&str, &str, &str)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    #[test]
    fn synced_and_resolved_is_ready_with_nobody_bound() {
        let s = build_account_status(&obs(), None, now());
        assert_eq!(
            reasons(&s),
            [
                ("Synced", "True", "Synced"),
                ("CredentialsResolved", "True", "Resolved"),
                ("Ready", "True", "Ready"),
            ]
        );
        assert_eq!(s.bound.as_deref(), Some("0/2"));
        assert_eq!(s.bound_sessions, 0);
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            s.account_id.as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
        assert!(
            get(&s, "Synced")
                .message
                .contains("vendor_mgmt.customer_accounts")
        );
        assert!(get(&s, "CredentialsResolved").message.contains("argon2id"));
    }

    #[test]
    fn live_binds_fill_bound_and_sessions() {
        let mut o = obs();
        o.binds = Some(vec![bind(0, "gw-0", "TRX"), bind(1, "gw-1", "RX")]);
        let s = build_account_status(&o, None, now());
        assert_eq!(s.bound.as_deref(), Some("2/2"));
        assert_eq!(s.bound_sessions, 2);
        assert_eq!(
            s.sessions[1],
            CustomerSessionStatus {
                pod: "gw-1".into(),
                bind_type: "RX".into(),
                remote_addr: "203.0.113.7:40001".into(),
                since: Some("2023-11-14T22:13:20Z".into()),
            }
        );
        assert_eq!(get(&s, "Ready").status, "True", "binds do not change Ready");
    }

    #[test]
    fn an_unchanged_world_gives_an_identical_status() {
        let first = build_account_status(&obs(), None, now());
        let again = build_account_status(&obs(), Some(&first), later());
        assert_eq!(first, again);
        // A bind changes BOUND only; the conditions keep their transition time.
        let mut o = obs();
        o.binds = Some(vec![bind(0, "gw-0", "TX")]);
        let bound = build_account_status(&o, Some(&first), later());
        assert_eq!(bound.bound.as_deref(), Some("1/2"));
        assert_eq!(bound.conditions, first.conditions);
    }

    #[test]
    fn each_credentials_problem_is_the_ready_reason() {
        for r in ["SecretNotFound", "SecretKeyMissing", "PasswordTooLong"] {
            let mut o = obs();
            o.creds = CredState::Failed {
                reason: r,
                message: format!("Secret ns/acme-smpp: {r}"),
            };
            o.sync = SyncState::WaitingForCredentials;
            let s = build_account_status(&o, None, now());
            assert_eq!(
                reasons(&s),
                [
                    ("Synced", "False", "Pending"),
                    ("CredentialsResolved", "False", r),
                    ("Ready", "False", r),
                ]
            );
            assert!(
                get(&s, "Ready")
                    .message
                    .starts_with("CredentialsResolved: ")
            );
        }
    }

    #[test]
    fn conflict_names_the_owner_and_shows_no_row_or_binds() {
        let mut o = obs();
        o.sync = SyncState::Conflict {
            name: "acme".into(),
            owner: "ns/older".into(),
        };
        o.account_id = None;
        o.binds = None;
        let prev = build_account_status(&obs(), None, now());
        let s = build_account_status(&o, Some(&prev), later());
        assert_eq!(get(&s, "Ready").reason, "Conflict");
        let msg = &get(&s, "Synced").message;
        assert!(
            msg.contains("systemId \"acme\"")
                && msg.contains("older SmppAccount ns/older")
                && msg.contains("another spec.systemId"),
            "{msg}"
        );
        assert_eq!(
            (s.account_id.as_deref(), s.bound.as_deref()),
            (None, Some("0/2"))
        );
        assert!(s.sessions.is_empty());
    }

    #[test]
    fn suspended_is_not_ready_but_a_blocker_comes_first() {
        let mut o = obs();
        o.suspended = true;
        let s = build_account_status(&o, None, now());
        assert_eq!(
            (
                get(&s, "Ready").status.as_str(),
                get(&s, "Ready").reason.as_str()
            ),
            ("False", "Suspended")
        );
        assert_eq!(get(&s, "Synced").status, "True");
        o.sync = SyncState::DatabaseError("relation does not exist".into());
        let s = build_account_status(&o, None, now());
        assert_eq!(get(&s, "Ready").reason, "DatabaseError");
    }

    #[test]
    fn database_down_keeps_the_last_seen_binds() {
        let mut o = obs();
        o.binds = Some(vec![bind(0, "gw-0", "TRX")]);
        let first = build_account_status(&o, None, now());
        o.sync = SyncState::DatabaseUnavailable("connection refused".into());
        o.binds = None;
        let s = build_account_status(&o, Some(&first), later());
        assert_eq!(get(&s, "Ready").reason, "DatabaseUnavailable");
        assert!(get(&s, "Synced").message.contains("DATABASE_URL"));
        assert_eq!((s.bound_sessions, s.sessions.len()), (1, 1));
        assert_eq!(get(&s, "Ready").last_transition_time, later());
    }

    #[test]
    fn events_warn_on_leaving_ready_and_are_normal_on_return() {
        let kinds = |p: Option<&SmppAccountStatus>, n: &SmppAccountStatus| {
            let mut evs = Vec::new();
            transition_events(p.map(|p| p.conditions.as_slice()), &n.conditions, &mut evs);
            evs.into_iter()
                .map(|e| (e.type_, e.reason))
                .collect::<Vec<_>>()
        };
        let ok = build_account_status(&obs(), None, now());
        assert_eq!(kinds(None, &ok), [(EventType::Normal, "Ready".to_string())]);
        assert!(kinds(Some(&ok), &ok).is_empty(), "no repeats");

        let mut o = obs();
        o.creds = CredState::Failed {
            reason: "PasswordTooLong",
            message: "too long".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        let long = build_account_status(&o, Some(&ok), later());
        // One Warning with the reason, not a second one for Ready or the Pending Synced.
        assert_eq!(
            kinds(Some(&ok), &long),
            [(EventType::Warning, "PasswordTooLong".to_string())]
        );
        assert_eq!(
            kinds(Some(&long), &ok),
            [(EventType::Normal, "Ready".to_string())]
        );

        let mut o = obs();
        o.suspended = true;
        let suspended = build_account_status(&o, Some(&ok), later());
        assert_eq!(
            kinds(Some(&ok), &suspended),
            [(EventType::Normal, "Suspended".to_string())],
            "a suspension was asked for"
        );

        let mut o = obs();
        o.sync = SyncState::DatabaseUnavailable("refused".into());
        let down = build_account_status(&o, Some(&ok), later());
        assert_eq!(
            kinds(Some(&ok), &down),
            [(EventType::Warning, "DatabaseUnavailable".to_string())]
        );
    }
}

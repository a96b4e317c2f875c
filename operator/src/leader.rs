//! Leader election on a coordination.k8s.io Lease, so only one operator replica reconciles
//! and writes status. It does not depend on PostgreSQL: while the database is down the
//! leader keeps reporting DatabaseUnavailable.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// A holder that has not renewed for this long is presumed dead.
    pub duration: Duration,
    /// How often the holder renews (and others check).
    pub renew_every: Duration,
}

/// Whether `identity` may take (or keep) a lease held by `holder`, last renewed at `renewed`.
pub fn may_hold(
    holder: Option<&str>,
    identity: &str,
    renewed: Option<Timestamp>,
    duration: Duration,
    now: Timestamp,
) -> bool {
    match (holder, renewed) {
        (None, _) | (Some(""), _) => true,
        (Some(h), _) if h == identity => true,
        (Some(_), None) => true,
        (Some(_), Some(r)) => {
            let d = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
            r.checked_add(d).map(|expiry| expiry < now).unwrap_or(false)
        }
    }
}

/// One acquire-or-renew round. Ok(true) while this replica holds the lease. Writes use the
/// Lease's resourceVersion, so two replicas racing for an expired lease cannot both win.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_secs = cfg.duration.as_secs() as i32;
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            conflict_is_false(api.create(&PostParams::default(), &lease).await)
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone();
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(cfg.duration);
            if !may_hold(holder.as_deref(), &cfg.identity, renewed, duration, now) {
                return Ok(false);
            }
            if holder.as_deref() != Some(cfg.identity.as_str()) {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.lease_duration_seconds = Some(duration_secs);
            spec.renew_time = Some(MicroTime(now));
            conflict_is_false(api.replace(&cfg.name, &PostParams::default(), &lease).await)
        }
    }
}

fn conflict_is_false(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a leader whose last successful renewal started `since_renewal` ago may lead until
/// its next decision. That decision comes at the latest one renew interval (the sleep) plus one
/// bounded round (at most another renew interval) later, and the lease must still be ours for
/// the others then. Pure.
pub fn keeps_leading(since_renewal: Duration, renew_every: Duration, duration: Duration) -> bool {
    since_renewal + renew_every * 2 < duration
}

/// Why a round of the election did not answer.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer from the apiserver within {0:?}")]
    Timeout(Duration),
}

/// Runs the election forever, publishing whether this replica leads. A leader that cannot
/// renew (errors, or requests that hang) steps down before the lease could expire for the
/// others, so two replicas never both believe they lead.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        // The others count from the renewTime written, taken before the request: count from
        // there too, so a slow answer does not push the step-down past the expiry.
        let started = std::time::Instant::now();
        let round = tokio::time::timeout(cfg.renew_every, try_acquire(&api, &cfg))
            .await
            .map_err(|_| RoundError::Timeout(cfg.renew_every))
            .and_then(|r| r.map_err(RoundError::from));
        let leading = match round {
            Ok(true) => {
                last_renewed = Some(started);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "renewing the leader Lease failed");
                let keep = last_renewed
                    .is_some_and(|t| keeps_leading(t.elapsed(), cfg.renew_every, cfg.duration));
                if !keep && last_renewed.is_some() {
                    tracing::warn!(lease = %cfg.name, "cannot renew the leader Lease: stepping down before it expires");
                }
                keep
            }
        };
        if !leading {
            last_renewed = None;
        }
        tx.send_if_modified(|l| {
            let changed = *l != leading;
            *l = leading;
            changed
        });
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Gives the lease up (on shutdown) so a standby takes over at once instead of after expiry.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn a_leader_that_cannot_renew_steps_down_two_intervals_before_expiry() {
        let (every, lease) = (Duration::from_secs(3), Duration::from_secs(15));
        assert!(keeps_leading(Duration::ZERO, every, lease));
        assert!(keeps_leading(Duration::from_millis(8_999), every, lease));
        // From 9 s on, the next decision could come at 15 s: step down now.
        assert!(!keeps_leading(Duration::from_secs(9), every, lease));
        // A lease too short for two intervals: step down at the first failure.
        assert!(!keeps_leading(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        ));
    }

    #[test]
    fn holder_rules() {
        let d = Duration::from_secs(15);
        assert!(may_hold(None, "me", None, d, t(0)));
        assert!(may_hold(Some("me"), "me", Some(t(0)), d, t(1)));
        assert!(
            !may_hold(Some("other"), "me", Some(t(0)), d, t(10)),
            "fresh lease is kept"
        );
        assert!(
            may_hold(Some("other"), "me", Some(t(0)), d, t(16)),
            "expired lease is taken"
        );
        assert!(
            may_hold(Some(""), "me", Some(t(0)), d, t(1)),
            "released lease is free"
        );
    }
}

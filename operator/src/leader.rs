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

/// Runs the election forever, publishing whether this replica leads. A leader that cannot
/// renew steps down once the lease would have expired, before anyone else may take over.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        let leading = match try_acquire(&api, &cfg).await {
            Ok(true) => {
                last_renewed = Some(std::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "renewing the leader Lease failed");
                // Step down a renew interval before the lease expires for the others.
                last_renewed.is_some_and(|t| t.elapsed() + cfg.renew_every < cfg.duration)
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

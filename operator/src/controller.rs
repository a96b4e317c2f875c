//! The SmppVendor controller: a short reconcile that dispatches to [`VendorReconciler`]
//! (apply / cleanup behind a finalizer), a Secret watch so rotations arrive within seconds,
//! and a periodic requeue that refreshes BOUND and reverts hand edits of owned rows.

use crate::credentials::{CredentialError, SecretSource};
use crate::events::{Event, EventType, Publisher};
use crate::metrics::Metrics;
use crate::row::desired_config;
use crate::status::{CredState, Observation, SyncState, build_status};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use smpp_crds::{DeletionPolicy, FINALIZER, SmppVendor, condition, reason};
use smpp_db::providers::{self, Owner, OwnerRef, ServiceProvider, UpsertOutcome};
use smpp_db::{DbError, PgPool};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Field manager for status writes.
pub const MANAGER: &str = "smpp-operator";

/// Errors that make a reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Credentials(CredentialError),
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Label for smpp_operator_reconcile_errors_total.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Db(e) if e.is_unavailable() => reason::DATABASE_UNAVAILABLE,
            Error::Db(_) => reason::DATABASE_ERROR,
            Error::Kube(_) => "KubeApi",
            Error::Credentials(_) => "SecretRead",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_reason(),
                _ => "Finalizer",
            },
        }
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Requeue interval of a healthy vendor: status refresh and drift repair.
    pub resync: Duration,
    /// Sessions whose heartbeat is older than this are ignored.
    pub session_ttl: chrono::Duration,
}

pub struct Context {
    pub client: Client,
    pub secrets: SecretSource,
    pub pool: PgPool,
    pub events: Publisher,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    schema_ready: AtomicBool,
    /// Consecutive failures per resource uid, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        pool: PgPool,
        events: Publisher,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Context {
            secrets: SecretSource::new(client.clone()),
            client,
            pool,
            events,
            metrics,
            settings,
            schema_ready: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Migrates once per process (again after a failure); sqlx serialises replicas.
    pub async fn ensure_schema(&self) -> Result<(), DbError> {
        if !self.schema_ready.load(Ordering::Acquire) {
            smpp_db::migrate(&self.pool).await?;
            self.schema_ready.store(true, Ordering::Release);
            tracing::info!("vendor_mgmt schema is up to date");
        }
        Ok(())
    }

    fn record_failure(&self, uid: &str) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(uid.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn reset_failures(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    async fn publish(&self, v: &SmppVendor, ev: Event) {
        let reference = v.object_ref(&());
        if let Err(e) = self.events.publish(&ev, &reference).await {
            tracing::warn!(vendor = %v.name_any(), reason = %ev.reason, error = %e, "publishing an Event failed");
        }
    }
}

/// Retry delay after `failures` consecutive failures: 0.5 s doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(30_000))
}

/// Whether `me` wins a claim on a row owned by `other`: the older resource (earlier
/// creationTimestamp, then smaller uid) wins. None for `other` means its owner is gone.
pub fn claim_wins(me: (&Option<Time>, &str), other: Option<(&Option<Time>, &str)>) -> bool {
    match other {
        None => true,
        Some(other) => {
            let key = |(t, uid): (&Option<Time>, &str)| (t.as_ref().map(|t| t.0), uid.to_string());
            key(me) < key(other)
        }
    }
}

/// What the controller does for an SmppVendor.
pub trait VendorReconciler {
    /// Writes the row from spec + Secrets and refreshes status.
    fn reconcile(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
    /// Deletes or orphans the row per deletionPolicy (finalizer).
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
}

fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        action: action.into(),
        note,
    }
}

fn warning(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        action: action.into(),
        note,
    }
}

fn owner_of(v: &SmppVendor) -> Owner {
    Owner {
        namespace: v.namespace().unwrap_or_default(),
        name: v.name_any(),
        uid: v.uid().unwrap_or_default(),
        generation: v.metadata.generation.unwrap_or(0),
    }
}

fn synced(instance_name: &str, row: &ServiceProvider) -> SyncState {
    SyncState::Synced {
        instance_name: instance_name.into(),
        vendor_id: row.id,
    }
}

/// Writes the row, adopting an unowned one and resolving ownership conflicts. Events to
/// publish are pushed to `events`.
async fn write_row(
    v: &SmppVendor,
    ctx: &Context,
    config: &providers::ProviderConfig,
    events: &mut Vec<Event>,
) -> Result<SyncState, DbError> {
    ctx.ensure_schema().await?;
    let owner = owner_of(v);
    let name = v.instance_name();
    // Adoption or takeover changes ownership; then the next round writes the config.
    for _ in 0..3 {
        match providers::upsert_owned(&ctx.pool, &name, &owner, config).await? {
            UpsertOutcome::Created(row) => {
                tracing::info!(instance = %name, id = %row.id, "row created");
                events.push(normal(
                    "Created",
                    "CreateRow",
                    format!(
                        "created row {name:?} (id {}) in vendor_mgmt.service_providers",
                        row.id
                    ),
                ));
                return Ok(synced(&name, &row));
            }
            UpsertOutcome::Updated {
                row,
                changed,
                drift,
            } => {
                let fields = changed.join(", ");
                tracing::info!(instance = %name, id = %row.id, columns = %fields, drift, "row updated");
                if drift {
                    ctx.metrics.drift_reverted.inc();
                    events.push(warning("DriftReverted", "RevertRow", format!("row {name:?} was edited outside the operator (columns: {fields}); reverted to the spec. Change the SmppVendor instead of the row")));
                } else if !changed.is_empty() {
                    events.push(normal(
                        "Updated",
                        "UpdateRow",
                        format!("updated row {name:?}: {fields}"),
                    ));
                }
                return Ok(synced(&name, &row));
            }
            UpsertOutcome::Unchanged(row) => return Ok(synced(&name, &row)),
            UpsertOutcome::Unowned(row) => {
                if providers::adopt(&ctx.pool, &name, &owner).await?.is_some() {
                    events.push(normal("Adopted", "AdoptRow", format!("took over row {name:?} (id {}), which was managed by hand; it now follows this resource", row.id)));
                }
            }
            UpsertOutcome::OwnedByOther { owner: other, .. } => {
                if !may_take_over(v, &other, ctx).await {
                    return Ok(SyncState::Conflict {
                        instance_name: name,
                        owner: format!("{}/{}", other.namespace, other.name),
                    });
                }
                if providers::transfer(&ctx.pool, &name, &other.uid, &owner)
                    .await?
                    .is_some()
                {
                    events.push(normal("TookOver", "AdoptRow", format!("row {name:?} was owned by {}/{} (uid {}), which is gone or newer; this older resource now owns it", other.namespace, other.name, other.uid)));
                }
            }
        }
    }
    Ok(SyncState::DatabaseError(format!(
        "ownership of row {name:?} kept changing; will retry"
    )))
}

/// Asks the apiserver (not the cache, which may still be filling) about the row's owner.
async fn may_take_over(v: &SmppVendor, other: &OwnerRef, ctx: &Context) -> bool {
    let api: Api<SmppVendor> = Api::namespaced(ctx.client.clone(), &other.namespace);
    match api.get_opt(&other.name).await {
        Ok(Some(o)) if o.uid().as_deref() == Some(other.uid.as_str()) => {
            // A deleting owner releases the row in its cleanup; wait for that.
            !o.is_deleting()
                && claim_wins(
                    (
                        &v.metadata.creation_timestamp,
                        v.uid().as_deref().unwrap_or_default(),
                    ),
                    Some((&o.metadata.creation_timestamp, other.uid.as_str())),
                )
        }
        Ok(_) => true, // owner gone (or re-created with another uid): the claim is stale
        Err(e) => {
            tracing::warn!(error = %e, owner = %format!("{}/{}", other.namespace, other.name), "cannot look up the row's owner; not taking over");
            false
        }
    }
}

impl VendorReconciler for SmppVendor {
    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let mut events = Vec::new();
        let previous = self.status.as_ref();
        let (creds, sync, db_error) = match ctx.secrets.resolve(self).await {
            Err(e) if e.is_transient() => return Err(Error::Credentials(e)),
            Err(e) => (
                CredState::Failed {
                    reason: e.reason(),
                    message: e.to_string(),
                },
                SyncState::WaitingForCredentials,
                None,
            ),
            Ok(c) => match write_row(self, ctx, &desired_config(&self.spec, &c), &mut events).await
            {
                Ok(sync) => (CredState::Resolved, sync, None),
                Err(e) => {
                    let sync = if e.is_unavailable() {
                        SyncState::DatabaseUnavailable(e.to_string())
                    } else {
                        SyncState::DatabaseError(e.to_string())
                    };
                    (CredState::Resolved, sync, Some(e))
                }
            },
        };
        let previous_id = previous
            .and_then(|s| s.vendor_id.as_deref())
            .and_then(|s| Uuid::parse_str(s).ok());
        let vendor_id = match &sync {
            SyncState::Synced { vendor_id, .. } => Some(*vendor_id),
            SyncState::Conflict { .. } => None,
            SyncState::DatabaseUnavailable(_) | SyncState::DatabaseError(_) => previous_id,
            SyncState::WaitingForCredentials => owned_row_id(self, ctx).await.or(previous_id),
        };
        let sessions = match (vendor_id, db_error.is_some()) {
            (Some(id), false) => {
                smpp_db::status::vendor_sessions(&ctx.pool, id, ctx.settings.session_ttl)
                    .await
                    // e.g. a state this version does not know (UnknownSlotState): Bound is Unknown.
                    .inspect_err(|e| tracing::warn!(vendor = %self.name_any(), error = %e, "cannot read vendor_sessions"))
                    .ok()
            }
            _ => None,
        };
        let observation = Observation {
            generation: self.metadata.generation.unwrap_or(0),
            creds,
            sync,
            vendor_id,
            sessions,
            desired: self.desired_sessions(),
            suspended: self.spec.suspend,
        };
        let now = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_default());
        let status = build_status(&observation, previous, now);
        transition_events(previous, &status, &mut events);
        if previous != Some(&status) {
            let api: Api<SmppVendor> =
                Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
            let patch = serde_json::json!({
                "apiVersion": "smpp.io/v1alpha1", "kind": "SmppVendor", "status": status,
            });
            api.patch_status(
                &self.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        }
        for ev in events {
            ctx.publish(self, ev).await;
        }
        if let Some(e) = db_error {
            return Err(Error::Db(e));
        }
        Ok(Action::requeue(ctx.settings.resync))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        ctx.ensure_schema().await?;
        let name = self.instance_name();
        let uid = self.uid().unwrap_or_default();
        match self.spec.deletion_policy {
            DeletionPolicy::Delete => {
                if providers::delete_owned(&ctx.pool, &name, &uid).await? {
                    ctx.publish(
                        self,
                        normal(
                            "Deleted",
                            "DeleteRow",
                            format!(
                                "deleted row {name:?} (deletionPolicy Delete); gateways unbind"
                            ),
                        ),
                    )
                    .await;
                }
            }
            DeletionPolicy::Orphan => {
                if providers::orphan(&ctx.pool, &name, &uid).await? {
                    ctx.publish(self, normal("Orphaned", "OrphanRow", format!("kept row {name:?} and cleared its owner (deletionPolicy Orphan); it is managed by hand again"))).await;
                }
            }
        }
        Ok(Action::await_change())
    }
}

/// Id of the row this resource owns, if any (best effort: used for status only).
async fn owned_row_id(v: &SmppVendor, ctx: &Context) -> Option<Uuid> {
    let row = providers::get_by_instance_name(&ctx.pool, &v.instance_name())
        .await
        .ok()??;
    (row.owner_uid == v.uid()).then_some(row.id)
}

/// Events for condition changes: conflict and credential problems (Warning), and Ready
/// leaving (Warning) or coming back (Normal).
fn transition_events(
    previous: Option<&smpp_crds::SmppVendorStatus>,
    now: &smpp_crds::SmppVendorStatus,
    events: &mut Vec<Event>,
) {
    let reason_of = |s: Option<&smpp_crds::SmppVendorStatus>, t: &str| {
        s.and_then(|s| s.condition(t))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    for t in [condition::SYNCED, condition::CREDENTIALS_RESOLVED] {
        let (Some(c), before) = (now.condition(t), reason_of(previous, t)) else {
            continue;
        };
        // Synced=False/Pending only echoes the credentials problem, which has its own Event.
        let echo = c.reason == reason::PENDING;
        if c.status == "False" && !echo && before != Some((c.status.clone(), c.reason.clone())) {
            events.push(warning(&c.reason, "Reconcile", c.message.clone()));
        }
    }
    // Ready leaving or coming back; one Event per reason (a missing Secret has its own already).
    let ready_before = previous.and_then(|s| s.condition(condition::READY));
    if let Some(ready) = now.condition(condition::READY)
        && let Some(ev) = crate::events::ready_transition(ready_before, ready)
        && !events.iter().any(|e| e.reason == ev.reason)
    {
        events.push(ev);
    }
}

async fn reconcile(v: Arc<SmppVendor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = v.namespace().unwrap_or_default();
    let uid = v.uid().unwrap_or_default();
    let action = if v.is_deleting() { "cleanup" } else { "apply" };
    let api: Api<SmppVendor> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, v, |event| async {
        match event {
            Finalizer::Apply(v) => v.reconcile(&ctx).await,
            Finalizer::Cleanup(v) => v.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe(
        action,
        start.elapsed(),
        result.as_ref().err().map(Error::metric_reason),
    );
    if result.is_ok() {
        ctx.reset_failures(&uid);
    }
    result
}

fn error_policy(v: Arc<SmppVendor>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&v.uid().unwrap_or_default());
    let delay = backoff(n);
    tracing::warn!(
        vendor = %format!("{}/{}", v.namespace().unwrap_or_default(), v.name_any()),
        error = %error, attempt = n, retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// The vendors in the Secret's namespace that reference it.
fn vendors_using(
    store: &Store<SmppVendor>,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<SmppVendor>> {
    store
        .state()
        .iter()
        .filter(|v| v.namespace() == namespace && v.secret_names().contains(&name))
        .map(|v| ObjectRef::from_obj(&**v))
        .collect()
}

/// Runs the controller until the future is dropped (leadership lost) or a signal arrives.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (vendors, secrets): (Api<SmppVendor>, Api<PartialObjectMeta<Secret>>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(vendors, watcher::Config::default().any_semantic());
    let store = controller.store();
    // Secrets are watched as metadata only (no values stream through the operator). The
    // reflector updates the index before the event triggers the reconcile, so the reconcile
    // sees the new resourceVersion and re-reads the rotated Secret.
    let (index, writer) = reflector::store::<PartialObjectMeta<Secret>>();
    ctx.secrets.set_index(namespace.as_deref(), index);
    let secret_events = reflector::reflector(writer, watcher(secrets, watcher::Config::default()))
        .touched_objects();
    controller
        .reconcile_on(crate::session_events::triggers(ctx.pool.clone()))
        .watches_stream(secret_events, move |s| {
            vendors_using(&store, s.namespace(), &s.name_any())
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(vendor = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(_, _)) => {} // logged by error_policy
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    #[test]
    fn older_resource_wins_the_claim() {
        let older = t("2026-01-01T00:00:00Z");
        let newer = t("2026-01-02T00:00:00Z");
        assert!(claim_wins((&older, "b"), Some((&newer, "a"))));
        assert!(!claim_wins((&newer, "a"), Some((&older, "b"))));
        // Same second: the uid decides, the same way for both sides.
        assert!(claim_wins((&older, "a"), Some((&older, "b"))));
        assert!(!claim_wins((&older, "b"), Some((&older, "a"))));
        assert!(
            claim_wins((&newer, "z"), None),
            "a vanished owner never blocks"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }

    #[test]
    fn events_only_on_transitions_to_false() {
        use crate::status::*;
        let id = Uuid::nil();
        let mut o = Observation {
            generation: 1,
            creds: CredState::Resolved,
            sync: SyncState::Synced {
                instance_name: "x".into(),
                vendor_id: id,
            },
            vendor_id: Some(id),
            sessions: None,
            desired: 1,
            suspended: false,
        };
        let now = Time(Default::default());
        let ok = build_status(&o, None, now.clone());
        o.sync = SyncState::Conflict {
            instance_name: "x".into(),
            owner: "ns/a".into(),
        };
        let conflict = build_status(&o, Some(&ok), now.clone());
        let mut evs = Vec::new();
        transition_events(Some(&ok), &conflict, &mut evs);
        assert_eq!(
            evs.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            vec!["Conflict"]
        );
        evs.clear();
        transition_events(Some(&conflict), &conflict, &mut evs);
        assert!(evs.is_empty(), "no repeat while the state persists");

        // A missing Secret gives one Event (its reason), not a second one for Synced.
        o.creds = CredState::Failed {
            reason: "SecretNotFound",
            message: "Secret ns/x not found".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        let missing = build_status(&o, Some(&ok), now);
        transition_events(Some(&ok), &missing, &mut evs);
        assert_eq!(
            evs.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            vec!["SecretNotFound"]
        );
    }

    #[test]
    fn leaving_ready_warns_once_and_coming_back_is_normal() {
        use crate::status::*;
        use smpp_db::status::VendorSessions;
        let id = Uuid::nil();
        let mut o = Observation {
            generation: 1,
            creds: CredState::Resolved,
            sync: SyncState::Synced {
                instance_name: "x".into(),
                vendor_id: id,
            },
            vendor_id: Some(id),
            sessions: Some(VendorSessions {
                bound: 1,
                ..Default::default()
            }),
            desired: 1,
            suspended: false,
        };
        let now = Time(Default::default());
        let ok = build_status(&o, None, now.clone());
        let kinds = |evs: &[Event]| {
            evs.iter()
                .map(|e| (e.type_, e.reason.clone()))
                .collect::<Vec<_>>()
        };
        let mut evs = Vec::new();
        transition_events(None, &ok, &mut evs);
        assert_eq!(kinds(&evs), [(EventType::Normal, "Ready".to_string())]);

        // The Secret goes away: one Warning SecretNotFound, not a second one for Ready.
        o.creds = CredState::Failed {
            reason: "SecretNotFound",
            message: "Secret ns/x not found".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        let missing = build_status(&o, Some(&ok), now.clone());
        evs.clear();
        transition_events(Some(&ok), &missing, &mut evs);
        assert_eq!(
            kinds(&evs),
            [(EventType::Warning, "SecretNotFound".to_string())]
        );

        // Back: Normal Ready, naming what it was.
        evs.clear();
        transition_events(Some(&missing), &ok, &mut evs);
        assert_eq!(kinds(&evs), [(EventType::Normal, "Ready".to_string())]);
        assert!(
            evs[0].note.contains("was SecretNotFound"),
            "{}",
            evs[0].note
        );
    }

    #[test]
    fn secret_mapper_finds_referencing_vendors() {
        let (reader, mut writer) = kube::runtime::reflector::store::<SmppVendor>();
        let a = smpp_crds::fixtures::vendor("ns", "a");
        let b = smpp_crds::fixtures::vendor("other", "a");
        writer.apply_watcher_event(&watcher::Event::Apply(a));
        writer.apply_watcher_event(&watcher::Event::Apply(b));
        let hits = vendors_using(&reader, Some("ns".into()), "a-smpp");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].namespace.as_deref(), Some("ns"));
        assert!(vendors_using(&reader, Some("ns".into()), "unrelated").is_empty());
    }
}

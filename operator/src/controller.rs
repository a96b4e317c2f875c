//! What the two controllers share: SmppVendor (vendor.rs) and SmppAccount (account.rs) each
//! run a short reconcile behind the row-cleanup finalizer, with one context, one
//! metadata-only Secret watch per scope feeding both (rotations arrive within seconds), a
//! NOTIFY trigger from the gateways' session tables (BOUND follows at once), and a periodic
//! requeue that refreshes BOUND and reverts hand edits of owned rows.

use crate::credentials::{CredentialError, SecretSource};
use crate::events::{Event, EventType, Publisher};
use crate::metrics::Metrics;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use smpp_crds::{FINALIZER, SmppAccount, SmppVendor, condition, reason};
use smpp_db::providers::{Owner, OwnerRef};
use smpp_db::{DbError, PgPool};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Requeue interval of a healthy resource: status refresh and drift repair.
    pub resync: Duration,
    /// Sessions whose heartbeat is older than this are ignored.
    pub session_ttl: chrono::Duration,
    /// Reconciles in flight at once per kind. Unbounded, 1,000 new resources start 1,000
    /// reconciles that each open an apiserver connection and wait on the 8 pooled database
    /// connections, timing out there.
    pub concurrency: u16,
}

pub struct Context {
    pub client: Client,
    /// Which account password hash was last checked against which Secret version.
    pub account_hashes: crate::account::VerifiedHashes,
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
            account_hashes: Default::default(),
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

    pub(crate) fn record_failure(&self, uid: &str) -> u32 {
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

    /// Publishes `ev` about `obj`; a failure is logged, not fatal (Events are best effort).
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, ev: Event) {
        let reference = obj.object_ref(&());
        if let Err(e) = self.events.publish(&ev, &reference).await {
            tracing::warn!(resource = %key(obj), reason = %ev.reason, error = %e, "publishing an Event failed");
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

/// What a controller does for its kind of resource.
pub trait Reconciler:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// For logs: "vendor", "account".
    const KIND: &'static str;
    /// The Secrets it reads, for the Secret watch mapper.
    fn secret_names(&self) -> Vec<&str>;
    /// Writes the row from spec + Secrets and refreshes status.
    fn reconcile(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
    /// Releases the row (finalizer).
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// "<namespace>/<name>", for logs.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

pub fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        action: action.into(),
        note,
    }
}

pub fn warning(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        action: action.into(),
        note,
    }
}

/// The row owner `obj` writes as.
pub fn owner_of<K: Resource>(obj: &K) -> Owner {
    Owner {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        generation: obj.meta().generation.unwrap_or(0),
    }
}

/// Whether `obj` may take a row over from `other`, another resource of its kind. Asks the
/// apiserver (not the cache, which may still be filling) about `other`.
pub async fn may_take_over<K: Reconciler>(obj: &K, other: &OwnerRef, ctx: &Context) -> bool {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &other.namespace);
    match api.get_opt(&other.name).await {
        Ok(Some(o)) if o.uid().as_deref() == Some(other.uid.as_str()) => {
            // A deleting owner releases the row in its cleanup; wait for that.
            o.meta().deletion_timestamp.is_none()
                && claim_wins(
                    (
                        &obj.meta().creation_timestamp,
                        obj.uid().as_deref().unwrap_or_default(),
                    ),
                    Some((&o.meta().creation_timestamp, other.uid.as_str())),
                )
        }
        Ok(_) => true, // owner gone (or re-created with another uid): the claim is stale
        Err(e) => {
            tracing::warn!(error = %e, owner = %format!("{}/{}", other.namespace, other.name), "cannot look up the row's owner; not taking over");
            false
        }
    }
}

/// Now, to the second (what a condition's lastTransitionTime holds).
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_default())
}

/// Writes `status` to `obj`'s status subresource (server-side apply, this field manager).
pub async fn patch_status<K: Reconciler, S: Serialize>(
    ctx: &Context,
    obj: &K,
    status: &S,
) -> Result<(), kube::Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Events for condition changes: conflict and credential problems (Warning), and Ready
/// leaving (Warning) or coming back (Normal).
pub fn transition_events(
    previous: Option<&[Condition]>,
    now: &[Condition],
    events: &mut Vec<Event>,
) {
    let find = |cs: Option<&[Condition]>, t: &str| -> Option<Condition> {
        cs.and_then(|cs| cs.iter().find(|c| c.type_ == t)).cloned()
    };
    for t in [condition::SYNCED, condition::CREDENTIALS_RESOLVED] {
        let (Some(c), before) = (find(Some(now), t), find(previous, t)) else {
            continue;
        };
        // Synced=False/Pending only echoes the credentials problem, which has its own Event.
        let echo = c.reason == reason::PENDING;
        let before = before.map(|b| (b.status, b.reason));
        if c.status == "False" && !echo && before != Some((c.status.clone(), c.reason.clone())) {
            events.push(warning(&c.reason, "Reconcile", c.message.clone()));
        }
    }
    // Ready leaving or coming back; one Event per reason (a missing Secret has its own already).
    let ready_before = find(previous, condition::READY);
    if let Some(ready) = find(Some(now), condition::READY)
        && let Some(ev) = crate::events::ready_transition(ready_before.as_ref(), &ready)
        && !events.iter().any(|e| e.reason == ev.reason)
    {
        events.push(ev);
    }
}

async fn run_reconcile<K: Reconciler>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let uid = obj.uid().unwrap_or_default();
    let action = if obj.meta().deletion_timestamp.is_some() {
        "cleanup"
    } else {
        "apply"
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => o.reconcile(&ctx).await,
            Finalizer::Cleanup(o) => o.cleanup(&ctx).await,
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

fn error_policy<K: Reconciler>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&obj.uid().unwrap_or_default());
    let delay = backoff(n);
    tracing::warn!(
        kind = K::KIND, resource = %key(&*obj),
        error = %error, attempt = n, retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// The resources in the Secret's namespace that reference it.
fn using_secret<K: Reconciler>(
    store: &Store<K>,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == namespace && o.secret_names().contains(&name))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

type SecretMeta = PartialObjectMeta<Secret>;

/// Passes each change of the Secret watch to every controller, in order. The reflector has
/// updated the index before the change comes out of `events`, so each controller's reconcile
/// sees the new resourceVersion and re-reads a rotated Secret. A controller that stopped
/// (its receiver dropped) is skipped.
async fn fan_out(
    events: impl Stream<Item = Result<SecretMeta, watcher::Error>>,
    txs: &mut [mpsc::Sender<SecretMeta>],
) {
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        match ev {
            Ok(s) => {
                for tx in txs.iter_mut() {
                    let _ = tx.send(s.clone()).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Secret watch"),
        }
    }
}

/// One controller for `K`: its own watch, the shared Secret changes and the NOTIFY triggers.
async fn control<K: Reconciler>(
    ctx: Arc<Context>,
    api: Api<K>,
    secrets: impl Stream<Item = SecretMeta> + Send + 'static,
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
) {
    let (store, writer) = reflector::store::<K>();
    let objects = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(prune)
        .reflect(writer)
        .applied_objects();
    let mapper_store = store.clone();
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    Controller::for_stream(objects, store)
        .with_config(config)
        .reconcile_on(triggers)
        .watches_stream(secrets.map(Ok::<_, watcher::Error>), move |s| {
            using_secret(&mapper_store, s.namespace(), &s.name_any())
        })
        .shutdown_on_signal()
        .run(run_reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(kind = K::KIND, resource = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(_, _)) => {} // logged by error_policy
                Err(e) => tracing::warn!(kind = K::KIND, error = %e, "controller"),
            }
        })
        .await;
}

/// The kubectl annotation holding the last applied object, as applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconcile reads before an object enters a cache: managedFields (often the
/// largest part of an object) and kubectl's copy of the applied object, which for a Secret
/// applied with kubectl holds its values.
pub(crate) fn prune<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.annotations_mut().remove(LAST_APPLIED);
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers on `namespace` (None: all) until the future is dropped (leadership
/// lost) or a signal arrives.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    // Secrets are watched as metadata only (`Api<PartialObjectMeta<_>>`: the apiserver sends
    // no values), once for both controllers. Metadata still holds kubectl's last-applied
    // annotation, which for a Secret applied with kubectl carries its values: pruned.
    let (index, writer) = reflector::store::<SecretMeta>();
    ctx.secrets.set_index(namespace.as_deref(), index);
    let secret_events = watcher(
        scoped::<SecretMeta>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(prune)
    .reflect(writer)
    .touched_objects();
    let (vendor_tx, vendor_secrets) = mpsc::channel(256);
    let (account_tx, account_secrets) = mpsc::channel(256);
    let mut txs = [vendor_tx, account_tx];
    let vendors = control::<SmppVendor>(
        ctx.clone(),
        scoped(&client, &namespace),
        vendor_secrets,
        crate::session_events::vendor_triggers(ctx.pool.clone()),
    );
    let accounts = control::<SmppAccount>(
        ctx.clone(),
        scoped(&client, &namespace),
        account_secrets,
        crate::session_events::account_triggers(ctx.pool.clone()),
    );
    tokio::select! {
        _ = futures::future::join(vendors, accounts) => {}
        _ = fan_out(secret_events, &mut txs) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// transition_events between two vendor statuses.
    fn transitions(
        previous: Option<&smpp_crds::SmppVendorStatus>,
        now: &smpp_crds::SmppVendorStatus,
        events: &mut Vec<Event>,
    ) {
        transition_events(
            previous.map(|p| p.conditions.as_slice()),
            &now.conditions,
            events,
        )
    }

    fn t(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    #[test]
    fn prune_drops_managed_fields_and_the_applied_copy_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut s = Secret::default();
        s.metadata.name = Some("pw".into());
        s.metadata.resource_version = Some("7".into());
        s.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        s.metadata.annotations = Some(
            [
                (
                    LAST_APPLIED.to_string(),
                    r#"{"data":{"password":"c2VjcmV0"}}"#.to_string(),
                ),
                ("team".to_string(), "sms".to_string()),
            ]
            .into(),
        );
        s.data = Some(
            [(
                "password".to_string(),
                k8s_openapi::ByteString(b"secret".to_vec()),
            )]
            .into(),
        );
        prune(&mut s);
        assert!(s.metadata.managed_fields.unwrap_or_default().is_empty());
        let annotations = s.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations.get("team").map(String::as_str), Some("sms"));
        // What reconciles read stays.
        assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        assert!(s.data.is_some_and(|d| d.contains_key("password")));
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
                name: "x".into(),
                id,
            },
            vendor_id: Some(id),
            sessions: None,
            desired: 1,
            suspended: false,
        };
        let now = Time(Default::default());
        let ok = build_status(&o, None, now.clone());
        o.sync = SyncState::Conflict {
            name: "x".into(),
            owner: "ns/a".into(),
        };
        let conflict = build_status(&o, Some(&ok), now.clone());
        let mut evs = Vec::new();
        transitions(Some(&ok), &conflict, &mut evs);
        assert_eq!(
            evs.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            vec!["Conflict"]
        );
        evs.clear();
        transitions(Some(&conflict), &conflict, &mut evs);
        assert!(evs.is_empty(), "no repeat while the state persists");

        // A missing Secret gives one Event (its reason), not a second one for Synced.
        o.creds = CredState::Failed {
            reason: "SecretNotFound",
            message: "Secret ns/x not found".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        let missing = build_status(&o, Some(&ok), now);
        transitions(Some(&ok), &missing, &mut evs);
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
                name: "x".into(),
                id,
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
        transitions(None, &ok, &mut evs);
        assert_eq!(kinds(&evs), [(EventType::Normal, "Ready".to_string())]);

        // The Secret goes away: one Warning SecretNotFound, not a second one for Ready.
        o.creds = CredState::Failed {
            reason: "SecretNotFound",
            message: "Secret ns/x not found".into(),
        };
        o.sync = SyncState::WaitingForCredentials;
        let missing = build_status(&o, Some(&ok), now.clone());
        evs.clear();
        transitions(Some(&ok), &missing, &mut evs);
        assert_eq!(
            kinds(&evs),
            [(EventType::Warning, "SecretNotFound".to_string())]
        );

        // Back: Normal Ready, naming what it was.
        evs.clear();
        transitions(Some(&missing), &ok, &mut evs);
        assert_eq!(kinds(&evs), [(EventType::Normal, "Ready".to_string())]);
        assert!(
            evs[0].note.contains("was SecretNotFound"),
            "{}",
            evs[0].note
        );
    }

    #[test]
    fn secret_mapper_finds_referencing_vendors_and_accounts() {
        let (reader, mut writer) = kube::runtime::reflector::store::<SmppVendor>();
        let a = smpp_crds::fixtures::vendor("ns", "a");
        let b = smpp_crds::fixtures::vendor("other", "a");
        writer.apply_watcher_event(&watcher::Event::Apply(a));
        writer.apply_watcher_event(&watcher::Event::Apply(b));
        let hits = using_secret(&reader, Some("ns".into()), "a-smpp");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].namespace.as_deref(), Some("ns"));
        assert!(using_secret(&reader, Some("ns".into()), "unrelated").is_empty());

        let (reader, mut writer) = kube::runtime::reflector::store::<SmppAccount>();
        for a in [
            smpp_crds::fixtures::account("ns", "acme"),
            smpp_crds::fixtures::account("ns", "other"),
            smpp_crds::fixtures::account("elsewhere", "acme"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(a));
        }
        let hits = using_secret(&reader, Some("ns".into()), "acme-smpp");
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].name.as_str(), hits[0].namespace.as_deref()),
            ("acme", Some("ns"))
        );
    }

    #[tokio::test]
    async fn every_controller_hears_of_each_secret_change() {
        let (mut txs, mut rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel(4)).unzip();
        let meta = |rv: &str| SecretMeta {
            metadata: kube::api::ObjectMeta {
                name: Some("pw".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let version = |s: Option<SecretMeta>| s.and_then(|s| s.resource_version());
        fan_out(futures::stream::iter([Ok(meta("7"))]), &mut txs).await;
        for rx in &mut rxs {
            assert_eq!(version(rx.next().await).as_deref(), Some("7"));
        }
        // A stopped controller (its receiver dropped) does not hold up the other one.
        drop(rxs.pop());
        fan_out(futures::stream::iter([Ok(meta("8"))]), &mut txs).await;
        assert_eq!(version(rxs[0].next().await).as_deref(), Some("8"));
    }
}

//! Keeps the running vendors in step with vendor_mgmt.service_providers: a full read at start,
//! LISTEN for the trigger's notifications (each names one row), a full resync after every
//! reconnect and periodically so a missed notification never matters. While PostgreSQL is
//! down the last configuration keeps running; the listener retries with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use smpp_db::PgPool;
use smpp_db::providers::{self, CHANNEL};
use sqlx::postgres::{PgListener, PgNotification};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fleet::backoff::Backoff;
use crate::fleet::config::{self, VendorEntry};
use crate::fleet::manager::Manager;
use crate::fleet::reload;
use crate::metrics::Metrics;

pub const RESYNC_EVERY: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
struct Notice {
    id: Uuid,
}

/// The configuration the gateway runs, and how it changes.
pub struct Store {
    current: HashMap<Uuid, VendorEntry>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self {
            current: HashMap::new(),
        }
    }

    /// Replaces the whole set; returns the actions.
    pub fn replace_all(&mut self, rows: &[providers::ServiceProvider]) -> Vec<reload::Action> {
        let new: HashMap<Uuid, VendorEntry> =
            rows.iter().map(|r| (r.id, config::parse(r))).collect();
        let actions = reload::diff(&self.current, &new);
        self.current = new;
        actions
    }

    /// Replaces the rows `ids` with `rows` (an id without a row was deleted); returns the
    /// actions.
    pub fn replace_some(
        &mut self,
        ids: &[Uuid],
        rows: &[providers::ServiceProvider],
    ) -> Vec<reload::Action> {
        // Only the named rows change, so only they are diffed: a copy of the whole set per
        // notification batch was O(vendors) in time and in (transient) memory.
        let new: HashMap<Uuid, VendorEntry> =
            rows.iter().map(|r| (r.id, config::parse(r))).collect();
        let old: HashMap<Uuid, VendorEntry> = ids
            .iter()
            .chain(new.keys())
            .filter_map(|id| self.current.remove_entry(id))
            .collect();
        let actions = reload::diff(&old, &new);
        self.current.extend(new);
        actions
    }
}

pub async fn run(
    pool: PgPool,
    mut manager: Manager,
    metrics: Arc<Metrics>,
    schema_ready: CancellationToken,
    stop: CancellationToken,
) -> Manager {
    let mut store = Store::new();
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut failures = 0u32;
    let mut migrated = false;
    loop {
        if stop.is_cancelled() {
            return manager;
        }
        match listen(
            &pool,
            &mut store,
            &mut manager,
            &metrics,
            &stop,
            &mut migrated,
            &schema_ready,
        )
        .await
        {
            Ok(()) => return manager,
            Err(e) => {
                metrics.db_up.set(0);
                metrics.db_errors.with_label_values(&["listen"]).inc();
                let delay = backoff.next_delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?delay, "PostgreSQL config listener down; keeping the last configuration and serving");
                tokio::select! {
                    _ = stop.cancelled() => return manager,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn resync(
    pool: &PgPool,
    store: &mut Store,
    manager: &mut Manager,
    metrics: &Metrics,
) -> Result<(), smpp_db::DbError> {
    let rows = providers::list_all(pool).await?;
    metrics.config_resyncs.inc();
    let actions = store.replace_all(&rows);
    if !actions.is_empty() {
        tracing::info!(
            changes = actions.len(),
            vendors = rows.len(),
            "resync found changes"
        );
    }
    manager.apply(actions);
    Ok(())
}

/// The most notifications read as one batch (one query for their rows).
const MAX_BATCH: usize = 10_000;

/// Appends the notifications that have already arrived to `batch`, without waiting: a bulk
/// change (one INSERT … SELECT of 1,000 rows) arrives as a burst, and its rows are then read in
/// one query. sqlx's `next_buffered` alone sees only what a query on the listener's connection
/// left behind, so 1,000 rows were 1,000 batches of one (0.68 s to bind them all, against
/// 0.18 s at a cold start); one poll of `try_recv` (cancel-safe) takes what is in the read
/// buffer or on the socket.
pub(crate) fn take_arrived(
    listener: &mut PgListener,
    batch: &mut Vec<PgNotification>,
) -> anyhow::Result<()> {
    while batch.len() < MAX_BATCH {
        if let Some(n) = listener.next_buffered() {
            batch.push(n);
            continue;
        }
        match listener.try_recv().now_or_never() {
            Some(Ok(Some(n))) => batch.push(n),
            // The resync after reconnecting reads every row anyway.
            Some(Ok(None)) => anyhow::bail!("listener connection lost"),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(())
}

/// One listener connection's life: Ok when stopping, Err when the connection is lost.
async fn listen(
    pool: &PgPool,
    store: &mut Store,
    manager: &mut Manager,
    metrics: &Metrics,
    stop: &CancellationToken,
    migrated: &mut bool,
    schema_ready: &CancellationToken,
) -> anyhow::Result<()> {
    // The listener's own connection (TCP and a SCRAM handshake) opens while the migrations
    // run: at start the two are the longest steps before the first read.
    let connect = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let mut listener = if *migrated {
        connect.await?
    } else {
        let (schema, listener) = tokio::join!(smpp_db::migrate(pool), connect);
        schema?;
        *migrated = true;
        listener?
    };
    // LISTEN first, then read: a change between the two is seen either way.
    resync(pool, store, manager, metrics).await?;
    // What waits for the schema (heartbeat, account watcher, SMPP server) starts once the
    // vendors are read: at start their connections and queries would otherwise compete with
    // the first read and the slot claims for the pool and the CPU.
    schema_ready.cancel();
    metrics.db_up.set(1);
    tracing::info!(channel = CHANNEL, "listening for vendor changes");
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => resync(pool, store, manager, metrics).await?,
            n = listener.try_recv() => {
                // None: the connection dropped; notifications may have been missed.
                let Some(n) = n? else { anyhow::bail!("listener connection lost") };
                let mut batch = vec![n];
                take_arrived(&mut listener, &mut batch)?;
                metrics.config_notifications.inc_by(batch.len() as u64);
                let ids: Result<Vec<Uuid>, _> =
                    batch.iter().map(|n| serde_json::from_str::<Notice>(n.payload()).map(|x| x.id)).collect();
                match ids {
                    Ok(mut ids) => {
                        ids.sort_unstable();
                        ids.dedup();
                        let rows = providers::get_many(pool, &ids).await?;
                        manager.apply(store.replace_some(&ids, &rows));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unexpected notification payload; resyncing");
                        resync(pool, store, manager, metrics).await?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::config::tests::row;
    use crate::fleet::reload::Action;

    #[test]
    fn a_burst_of_notifications_is_one_diff() {
        let mut store = Store::new();
        let (a, b, c) = (row("a"), row("b"), row("c"));
        assert_eq!(store.replace_all(&[a.clone(), b.clone()]).len(), 2);
        // One batch: b deleted (no row), c inserted, a unchanged.
        let actions = store.replace_some(&[a.id, b.id, c.id], &[a.clone(), c.clone()]);
        let mut expected = vec![
            Action::Remove(b.id),
            Action::Add(crate::fleet::config::parse(&c)),
        ];
        expected.sort_by_key(|x| match x {
            Action::Remove(id) => *id,
            Action::Add(e) | Action::Rebind(e) | Action::UpdateInPlace(e) => e.id,
        });
        assert_eq!(actions, expected);
        assert!(
            store
                .replace_some(&[a.id], std::slice::from_ref(&a))
                .is_empty()
        );
    }
}

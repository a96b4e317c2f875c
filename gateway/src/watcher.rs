//! Keeps the running vendors in step with vendor_mgmt.service_providers: a full read at start,
//! LISTEN for the trigger's notifications (each names one row), a full resync after every
//! reconnect and periodically so a missed notification never matters. While PostgreSQL is
//! down the last configuration keeps running; the listener retries with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use smpp_db::PgPool;
use smpp_db::providers::{self, CHANNEL};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::config::{self, VendorEntry};
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::reload;

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

    /// Replaces one row (None: deleted); returns the actions.
    pub fn replace_one(
        &mut self,
        id: Uuid,
        row: Option<&providers::ServiceProvider>,
    ) -> Vec<reload::Action> {
        let mut new = self.current.clone();
        match row {
            Some(r) => new.insert(id, config::parse(r)),
            None => new.remove(&id),
        };
        let actions = reload::diff(&self.current, &new);
        self.current = new;
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
    if !*migrated {
        smpp_db::migrate(pool).await?;
        *migrated = true;
        schema_ready.cancel();
    }
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // LISTEN first, then read: a change between the two is seen either way.
    resync(pool, store, manager, metrics).await?;
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
                metrics.config_notifications.inc();
                match serde_json::from_str::<Notice>(n.payload()) {
                    Ok(notice) => {
                        let row = providers::get(pool, notice.id).await?;
                        manager.apply(store.replace_one(notice.id, row.as_ref()));
                    }
                    Err(e) => {
                        tracing::warn!(payload = n.payload(), error = %e, "unexpected notification; resyncing");
                        resync(pool, store, manager, metrics).await?;
                    }
                }
            }
        }
    }
}

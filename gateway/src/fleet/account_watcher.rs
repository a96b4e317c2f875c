//! Keeps the [`AccountRegistry`] in step with vendor_mgmt.customer_accounts, the way
//! `watcher` does for vendors: a full read at start, LISTEN for the trigger's notifications
//! (each names one row), a full resync after every reconnect and every [`RESYNC_EVERY`]. While
//! PostgreSQL is down the last accounts stay in force. It also LISTENs for account_sessions
//! changes (a bind or close anywhere in the fleet), which the SMPP server uses to recount an
//! account's rate share.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use smpp_db::PgPool;
use smpp_db::accounts::{self, CHANNEL, SESSIONS_CHANNEL};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fleet::accounts::AccountRegistry;
use crate::fleet::backoff::Backoff;
use crate::metrics::Metrics;

pub use crate::fleet::watcher::RESYNC_EVERY;

/// What the SMPP server learns from the watcher.
pub trait AccountEvents: Send + Sync + 'static {
    /// These rows changed (inserted, updated, deleted); the registry holds the new state.
    fn accounts_changed(&self, ids: &[Uuid]);
    /// Binds of these accounts changed somewhere in the fleet (or a resync ran).
    fn binds_changed(&self, ids: &[Uuid]);
}

#[derive(serde::Deserialize)]
struct Notice {
    id: Uuid,
}

/// Ids whose row is new, gone or has another config_version between two reads. Pure.
pub fn changed(before: &HashMap<Uuid, i64>, after: &HashMap<Uuid, i64>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = before
        .iter()
        .filter(|(id, v)| after.get(id) != Some(v))
        .map(|(id, _)| *id)
        .chain(after.keys().filter(|id| !before.contains_key(id)).copied())
        .collect();
    ids.sort_unstable();
    ids
}

pub async fn run(
    pool: PgPool,
    registry: Arc<AccountRegistry>,
    events: Arc<dyn AccountEvents>,
    metrics: Arc<Metrics>,
    schema_ready: CancellationToken,
    stop: CancellationToken,
) {
    // The vendor watcher applies the migrations; the table exists once it says so.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = schema_ready.cancelled() => {}
    }
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut versions: HashMap<Uuid, i64> = HashMap::new();
    let mut failures = 0u32;
    loop {
        match listen(&pool, &registry, &*events, &mut versions, &stop).await {
            Ok(()) => return,
            Err(e) => {
                metrics
                    .db_errors
                    .with_label_values(&["accounts_listen"])
                    .inc();
                let delay = backoff.next_delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?delay, "customer account listener down; keeping the last accounts");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn resync(
    pool: &PgPool,
    registry: &AccountRegistry,
    events: &dyn AccountEvents,
    versions: &mut HashMap<Uuid, i64>,
) -> Result<(), smpp_db::DbError> {
    let rows = accounts::list_all(pool).await?;
    let now: HashMap<Uuid, i64> = rows.iter().map(|r| (r.id, r.config_version)).collect();
    let ids = changed(versions, &now);
    registry.replace_all(&rows);
    *versions = now;
    if !ids.is_empty() {
        events.accounts_changed(&ids);
    }
    // Pods that died without closing stop counting once their heartbeat is stale, with no
    // notification: recount every account bound here.
    let all: Vec<Uuid> = versions.keys().copied().collect();
    events.binds_changed(&all);
    Ok(())
}

async fn listen(
    pool: &PgPool,
    registry: &AccountRegistry,
    events: &dyn AccountEvents,
    versions: &mut HashMap<Uuid, i64>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL, SESSIONS_CHANNEL]).await?;
    // LISTEN first, then read: a change between the two is seen either way.
    resync(pool, registry, events, versions).await?;
    tracing::info!(
        accounts = registry.len(),
        "listening for customer account changes"
    );
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => resync(pool, registry, events, versions).await?,
            n = listener.try_recv() => {
                let Some(n) = n? else { anyhow::bail!("listener connection lost") };
                let mut batch = vec![n];
                crate::fleet::watcher::take_arrived(&mut listener, &mut batch)?;
                let (mut rows, mut binds) = (Vec::new(), Vec::new());
                let mut unreadable = false;
                for n in &batch {
                    if n.channel() == SESSIONS_CHANNEL {
                        match n.payload().trim().parse::<Uuid>() {
                            Ok(id) => binds.push(id),
                            Err(_) => unreadable = true,
                        }
                    } else {
                        match serde_json::from_str::<Notice>(n.payload()) {
                            Ok(x) => rows.push(x.id),
                            Err(_) => unreadable = true,
                        }
                    }
                }
                if unreadable {
                    tracing::warn!("unexpected account notification payload; resyncing");
                    resync(pool, registry, events, versions).await?;
                    continue;
                }
                rows.sort_unstable();
                rows.dedup();
                for id in &rows {
                    match accounts::get(pool, *id).await? {
                        Some(row) => {
                            versions.insert(row.id, row.config_version);
                            registry.upsert(&row);
                        }
                        None => {
                            versions.remove(id);
                            registry.remove(*id);
                        }
                    }
                }
                if !rows.is_empty() {
                    events.accounts_changed(&rows);
                }
                binds.sort_unstable();
                binds.dedup();
                if !binds.is_empty() {
                    events.binds_changed(&binds);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_rows_are_new_gone_or_of_another_version() {
        let (a, b, c, d) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        let before: HashMap<Uuid, i64> = [(a, 1), (b, 1), (c, 1)].into_iter().collect();
        let after: HashMap<Uuid, i64> = [(a, 1), (b, 2), (d, 1)].into_iter().collect();
        assert_eq!(changed(&before, &after), vec![b, c, d]);
        assert!(changed(&after, &after).is_empty());
    }
}

//! Writes slot states to vendor_sessions from one task, so binding never waits for
//! PostgreSQL. Only the newest state of each slot matters: states queued while a write is in
//! flight are coalesced and written in one statement. Releases go through the same queue, so a
//! slot's stale state can never land after its release (or on the next claim of the slot).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use smpp_db::PgPool;
use smpp_db::sessions::{self as db, SlotReport};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::metrics::Metrics;

enum Msg {
    State(SlotReport),
    Release {
        vendor: Uuid,
        slot: i32,
        done: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Reporter {
    /// Starts the writer task for `pod`.
    pub fn start(pool: PgPool, pod: String, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, pod, metrics, rx));
        Self { tx }
    }

    /// Queues a state; returns at once.
    pub fn state(&self, r: SlotReport) {
        let _ = self.tx.send(Msg::State(r));
    }

    /// Releases the slot after every state queued before it, and waits until it is done (or
    /// failed: the slot then frees itself after the TTL).
    pub async fn release(&self, vendor: Uuid, slot: i32) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Release { vendor, slot, done }).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    pool: PgPool,
    pod: String,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut pending: HashMap<(Uuid, i32), SlotReport> = HashMap::new();
    loop {
        // Wait for work only when nothing is pending; otherwise take what is queued and write.
        if pending.is_empty() {
            match rx.recv().await {
                Some(m) => handle(m, &mut pending, &pool, &pod, &metrics).await,
                None => return,
            }
        }
        while let Ok(m) = rx.try_recv() {
            handle(m, &mut pending, &pool, &pod, &metrics).await;
        }
        if pending.is_empty() {
            continue;
        }
        let batch: Vec<SlotReport> = pending.values().cloned().collect();
        match db::report_many(&pool, &pod, &batch).await {
            Ok(()) => {
                // Keep entries that changed while the write was in flight (none can: this task
                // is the only writer of `pending`), so everything written is done.
                pending.clear();
            }
            Err(e) => {
                metrics.db_errors.with_label_values(&["report"]).inc();
                tracing::warn!(error = %e, slots = batch.len(), "cannot write session states to PostgreSQL; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn handle(
    m: Msg,
    pending: &mut HashMap<(Uuid, i32), SlotReport>,
    pool: &PgPool,
    pod: &str,
    metrics: &Metrics,
) {
    match m {
        Msg::State(r) => {
            pending.insert((r.vendor_id, r.slot), r);
        }
        Msg::Release { vendor, slot, done } => {
            pending.remove(&(vendor, slot));
            if let Err(e) = db::release(pool, vendor, &[slot], pod).await {
                metrics.db_errors.with_label_values(&["release"]).inc();
                tracing::warn!(%vendor, slot, error = %e, "cannot release bind slot; it frees itself after the TTL");
            }
            let _ = done.send(());
        }
    }
}

//! Which other pods of the fleet hold a bound session of which vendor, and at what address
//! they take forwarded submits. Read from vendor_sessions and gateway_pods once a second: a
//! snapshot, so the submit path never queries PostgreSQL. Only the rows this pod can forward
//! to are read (not its own), so a pod alone reads none.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use smpp_db::sessions::{self as db, BoundPod, SLOT_TTL};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Peers {
    by_vendor: RwLock<HashMap<Uuid, Vec<BoundPod>>>,
}

impl Peers {
    /// Other pods with a bound session of `vendor` and an advertised address.
    pub fn elsewhere(&self, vendor: Uuid, me: &str) -> Vec<(String, String)> {
        self.by_vendor
            .read()
            .expect("peers")
            .get(&vendor)
            .map(|pods| {
                pods.iter()
                    .filter(|p| p.pod != me)
                    .filter_map(|p| Some((p.pod.clone(), p.advertise_addr.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Vendors bound on some other pod that advertises an address (this pod can forward).
    pub fn forwardable(&self, me: &str) -> usize {
        self.by_vendor
            .read()
            .expect("peers")
            .values()
            .filter(|pods| {
                pods.iter()
                    .any(|p| p.pod != me && p.advertise_addr.is_some())
            })
            .count()
    }

    pub fn set(&self, rows: Vec<BoundPod>) {
        let mut map: HashMap<Uuid, Vec<BoundPod>> = HashMap::new();
        for r in rows {
            map.entry(r.vendor_id).or_default().push(r);
        }
        *self.by_vendor.write().expect("peers") = map;
    }

    /// Refreshes the snapshot every `every` until `stop`.
    pub fn start(
        pool: PgPool,
        me: String,
        metrics: Arc<Metrics>,
        every: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let peers = Arc::new(Self::default());
        let p = peers.clone();
        tokio::spawn(async move {
            // The first read at once: a pod joining a running fleet can forward (and is ready)
            // before it holds a bind of its own.
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match db::forward_targets(&pool, &me, SLOT_TTL).await {
                    Ok(rows) => p.set(rows),
                    Err(e) => {
                        metrics.db_errors.with_label_values(&["bound_pods"]).inc();
                        tracing::debug!(error = %e, "cannot read which pods hold which vendor");
                    }
                }
            }
        });
        peers
    }
}

//! The supervisor of one vendor: budget units, fair share, in-place changes and rebinds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::worker::SlotWorker;
use super::{Change, Ctx};
use crate::fleet::budget;
use crate::fleet::config::{VendorConfig, VendorEntry};
use crate::fleet::reload::{RebindStrategy, rebind_strategy};
use crate::fleet::state::VendorState;

/// The safety-net look at the budget of a vendor at its fair share (see `next_check`).
const AT_SHARE_CHECK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connecting,
    Bound,
    Failed,
}

struct Worker {
    stop: CancellationToken,
    keep_slot: Arc<AtomicBool>,
    phase: watch::Receiver<Phase>,
    join: JoinHandle<()>,
}

struct Unit {
    cfg: watch::Sender<Arc<VendorConfig>>,
    workers: Vec<Worker>,
}

pub(super) struct Supervisor {
    ctx: Arc<Ctx>,
    v: Arc<VendorState>,
    cfg: Option<Arc<VendorConfig>>,
    units: BTreeMap<u32, Unit>,
    live: watch::Receiver<u32>,
    /// Signalled when a worker ends (its slot lost, or stopped): the budget is looked at then,
    /// so an idle vendor at its share needs no frequent timer.
    ended: Arc<Notify>,
}

impl Supervisor {
    /// Registers the vendor and takes its first configuration.
    pub(super) fn new(ctx: Arc<Ctx>, first: VendorEntry) -> Self {
        let v = ctx.registry.insert(first.id, &first.name);
        let live = ctx.fleet.live_pods();
        let mut s = Self {
            ctx,
            v,
            cfg: None,
            units: BTreeMap::new(),
            live,
            ended: Arc::new(Notify::new()),
        };
        s.set_entry(&first);
        s
    }

    /// Every step that talks to PostgreSQL or waits for workers is boxed: this task lives as
    /// long as the vendor, and an inline step (sqlx futures are large) would make every idle
    /// vendor's task as large as its largest step (~18 KiB).
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Change>,
        stop: CancellationToken,
    ) {
        Box::pin(self.rebalance()).await;
        let check = tokio::time::sleep(self.next_check());
        tokio::pin!(check);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                m = rx.recv() => match m {
                    None => break,
                    Some(Change::InPlace(e)) => Box::pin(self.in_place(*e)).await,
                    Some(Change::Rebind(e)) => Box::pin(self.rebind(*e)).await,
                },
                () = &mut check => {
                    Box::pin(self.rebalance()).await;
                    check.as_mut().reset(tokio::time::Instant::now() + self.next_check());
                }
                Ok(()) = self.live.changed() => Box::pin(self.rebalance()).await,
                () = self.ended.notified() => {
                    Box::pin(self.rebalance()).await;
                    check.as_mut().reset(tokio::time::Instant::now() + self.next_check());
                }
            }
        }
        let units: Vec<u32> = self.units.keys().copied().collect();
        Box::pin(self.stop_units(&units, true)).await;
        self.ctx.sessions.remove_config(self.v.id);
        self.ctx.metrics.forget_vendor(&self.v.name);
        self.ctx.registry.remove(&self.v);
    }

    /// How soon to look at the budget again: often while below the fair share (a slot may
    /// free up or go stale), rarely once there (joins, config changes and a worker's end wake
    /// us anyway: at 1,000 idle vendors every 15 s was ~67 wake-ups a second). Jittered so a
    /// thousand vendors do not wake together.
    fn next_check(&self) -> Duration {
        let below = self.cfg.as_ref().is_some_and(|c| {
            let share = budget::fair_share(c.units(), *self.live.borrow());
            (self.units.len() as u32) < share
                || self
                    .units
                    .values()
                    .any(|u| u.workers.iter().all(|w| w.join.is_finished()))
        });
        let base = if below {
            budget::HEARTBEAT_EVERY
        } else {
            AT_SHARE_CHECK
        };
        base + Duration::from_millis(rand::random::<u64>() % 1000)
    }

    fn set_entry(&mut self, e: &VendorEntry) {
        let mut info = self.v.info.lock().expect("info");
        info.config_version = e.version;
        match &e.config {
            Ok(c) => {
                info.bind_mode = c.conn.mode.as_str().to_string();
                info.tls = c.conn.tls.is_some();
                info.config_error = None;
                let cfg = Arc::new(c.clone());
                self.ctx.sessions.set_config(&cfg);
                self.cfg = Some(cfg);
            }
            Err(msg) => {
                let f = crate::smpp::diagnostics::config_error(msg.clone());
                tracing::error!(vendor = %e.name, error = %f, "vendor row is invalid; not binding it");
                info.config_error = Some(f.to_string());
                info.desired = 0;
                self.ctx.sessions.remove_config(e.id);
                self.cfg = None;
            }
        }
        self.ctx
            .metrics
            .vendor_config_invalid
            .with_label_values(&[&e.name])
            .set(i64::from(e.config.is_err()));
    }

    async fn in_place(&mut self, e: VendorEntry) {
        self.set_entry(&e);
        if let Some(cfg) = &self.cfg {
            tracing::info!(vendor = %e.name, version = e.version, "applying window/TPS/enquire change in place");
            for u in self.units.values() {
                u.cfg.send_replace(cfg.clone());
            }
        }
        self.rebalance().await;
    }

    async fn rebind(&mut self, e: VendorEntry) {
        let old_bpu = self.cfg.as_ref().map(|c| c.conn.mode.binds_per_unit());
        self.set_entry(&e);
        let held: Vec<u32> = self.units.keys().copied().collect();
        let Some(cfg) = self.cfg.clone() else {
            self.stop_units(&held, true).await;
            return;
        };
        tracing::info!(vendor = %e.name, version = e.version, "connection settings changed; rebinding");
        let bpu = cfg.conn.mode.binds_per_unit();
        if old_bpu != Some(bpu) {
            // Slots map to binds differently (pair ↔ single): start over.
            self.stop_units(&held, true).await;
            self.rebalance().await;
            return;
        }
        for u in held {
            if u >= cfg.units() {
                self.stop_units(&[u], true).await;
                continue;
            }
            let others = self.others_units(bpu).await;
            let in_use = others
                .as_ref()
                .map(|o| (o.len() + self.units.len()) as u32)
                .unwrap_or(u32::MAX);
            let spare = match (rebind_strategy(&cfg, in_use), &others) {
                (RebindStrategy::MakeBeforeBreak, Some(o)) => {
                    let mine: Vec<u32> = self.units.keys().copied().collect();
                    budget::units_to_claim(cfg.units(), mine.len() as u32 + 1, &mine, o)
                        .first()
                        .copied()
                }
                _ => None,
            };
            match spare {
                Some(n) if self.claim(n, &cfg).await => {
                    // Make before break: the new bind first (bounded wait), then the old one goes.
                    self.spawn_unit(n, cfg.clone());
                    self.wait_settled(n, self.ctx.timeouts.bind + self.ctx.connect_timeout)
                        .await;
                    self.stop_units(&[u], true).await;
                }
                _ => {
                    // Break before make, keeping the slot so no other pod takes it meanwhile.
                    // One unit at a time (bounded wait), so the vendor's other binds keep
                    // serving while this one is replaced.
                    self.stop_units(&[u], false).await;
                    self.spawn_unit(u, cfg.clone());
                    if self.units.len() > 1 {
                        self.wait_settled(u, self.ctx.timeouts.bind + self.ctx.connect_timeout)
                            .await;
                    }
                }
            }
        }
        self.rebalance().await;
    }

    async fn others_units(&self, bpu: u32) -> Option<Vec<u32>> {
        match self.ctx.claims.held_by_others(self.v.id).await {
            Ok(slots) => {
                let mut u: Vec<u32> = slots.iter().map(|s| budget::slot_unit(*s, bpu)).collect();
                u.dedup();
                Some(u)
            }
            Err(e) => {
                self.ctx
                    .metrics
                    .db_errors
                    .with_label_values(&["slots"])
                    .inc();
                tracing::warn!(vendor = %self.v.name, error = %e, "cannot read bind slots; not claiming now");
                None
            }
        }
    }

    async fn claim(&self, unit: u32, cfg: &VendorConfig) -> bool {
        let slots = budget::unit_slots(unit, cfg.conn.mode.binds_per_unit());
        match self.ctx.claims.claim(self.v.id, slots, cfg.version).await {
            Ok(got) => got,
            Err(e) => {
                self.ctx
                    .metrics
                    .db_errors
                    .with_label_values(&["claim"])
                    .inc();
                tracing::warn!(vendor = %self.v.name, error = %e, "claiming a bind slot failed");
                false
            }
        }
    }

    /// Brings the units this pod holds to its fair share of the vendor's budget.
    async fn rebalance(&mut self) {
        // Units whose workers all ended lost their slots to another pod.
        self.units
            .retain(|_, u| u.workers.iter().any(|w| !w.join.is_finished()));
        let Some(cfg) = self.cfg.clone() else { return };
        let bpu = cfg.conn.mode.binds_per_unit();
        let share = budget::fair_share(cfg.units(), *self.live.borrow());
        self.v.info.lock().expect("info").desired = share * bpu;
        let mine: Vec<u32> = self.units.keys().copied().collect();
        let release = budget::units_to_release(cfg.units(), share, &mine);
        if !release.is_empty() {
            tracing::info!(vendor = %self.v.name, ?release, share, "giving bind slots back for a fair share");
            self.stop_units(&release, true).await;
        }
        if (self.units.len() as u32) >= share {
            return;
        }
        let Some(others) = self.others_units(bpu).await else {
            return;
        };
        let mine: Vec<u32> = self.units.keys().copied().collect();
        for u in budget::units_to_claim(cfg.units(), share, &mine, &others) {
            if self.claim(u, &cfg).await {
                self.spawn_unit(u, cfg.clone());
            }
        }
    }

    fn spawn_unit(&mut self, unit: u32, cfg: Arc<VendorConfig>) {
        let mode = cfg.conn.mode;
        let (tx, _) = watch::channel(cfg);
        let workers = budget::unit_slots(unit, mode.binds_per_unit())
            .into_iter()
            .map(|slot| {
                let stop = CancellationToken::new();
                let keep_slot = Arc::new(AtomicBool::new(false));
                let (phase_tx, phase) = watch::channel(Phase::Connecting);
                let lost = self.ctx.fleet.hold(self.v.id, slot);
                let w = SlotWorker {
                    ctx: self.ctx.clone(),
                    v: self.v.clone(),
                    slot,
                    kind: mode.kind_for_slot(slot as u32),
                    cfg: tx.subscribe(),
                    stop: stop.clone(),
                    lost,
                    keep_slot: keep_slot.clone(),
                    phase: phase_tx,
                };
                Worker {
                    stop,
                    keep_slot,
                    phase,
                    join: {
                        let ended = self.ended.clone();
                        tokio::spawn(async move {
                            w.run().await;
                            ended.notify_one();
                        })
                    },
                }
            })
            .collect();
        self.units.insert(unit, Unit { cfg: tx, workers });
    }

    async fn wait_settled(&mut self, unit: u32, limit: Duration) {
        let Some(u) = self.units.get_mut(&unit) else {
            return;
        };
        let waits = u
            .workers
            .iter_mut()
            .map(|w| async { w.phase.wait_for(|p| *p != Phase::Connecting).await.is_ok() });
        let _ = tokio::time::timeout(limit, futures::future::join_all(waits)).await;
    }

    /// Stops the units' workers (graceful unbind) and waits for them; `release` gives the
    /// slots back, otherwise they stay ours for the replacement bind.
    async fn stop_units(&mut self, units: &[u32], release: bool) {
        let mut joins = Vec::new();
        for u in units {
            if let Some(unit) = self.units.remove(u) {
                for w in unit.workers {
                    w.keep_slot.store(!release, Ordering::Relaxed);
                    w.stop.cancel();
                    joins.push(w.join);
                }
            }
        }
        let t = &self.ctx.timeouts;
        let limit = t.unbind * 2 + Duration::from_secs(2);
        if tokio::time::timeout(limit, futures::future::join_all(joins))
            .await
            .is_err()
        {
            tracing::warn!(vendor = %self.v.name, "a session did not stop in time");
        }
    }
}

//! Runs the vendors: one supervisor task per vendor, one worker task per bind slot.
//!
//! - The supervisor holds the vendor's configuration, claims budget units (fair share of the
//!   fleet), gives back units beyond the share, applies in-place changes and rebinds.
//! - A worker owns one slot: connect, bind, run the session, report state to vendor_sessions
//!   and the registry, retry with backoff; on stop it unbinds gracefully and releases the slot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use smpp_db::sessions::{self as db, SlotReport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::budget::{self, Fleet, SLOT_TTL};
use crate::config::{VendorConfig, VendorEntry};
use crate::diagnostics::BindFailure;
use crate::dial;
use crate::metrics::Metrics;
use crate::pdu::BindKind;
use crate::reload::{Action, RebindStrategy, rebind_strategy};
use crate::reporter::Reporter;
use crate::session::{self, Observer, Timeouts, Tunables};
use crate::state::{Registry, VendorState};

/// What every vendor task shares.
pub struct Ctx {
    pub fleet: Arc<Fleet>,
    pub reporter: Reporter,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub timeouts: Timeouts,
    pub connect_timeout: Duration,
}

enum Change {
    InPlace(VendorEntry),
    Rebind(VendorEntry),
}

struct VendorTask {
    tx: mpsc::UnboundedSender<Change>,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

pub struct Manager {
    ctx: Arc<Ctx>,
    vendors: HashMap<Uuid, VendorTask>,
    /// Vendors being unbound after a Remove; a re-Add waits for them (same slots, same pod).
    stopping: HashMap<Uuid, JoinHandle<()>>,
}

impl Manager {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            vendors: HashMap::new(),
            stopping: HashMap::new(),
        }
    }

    pub fn apply(&mut self, actions: Vec<Action>) {
        self.stopping.retain(|_, j| !j.is_finished());
        for action in actions {
            match action {
                Action::Add(e) => {
                    if let Some(t) = self.vendors.get(&e.id) {
                        let _ = t.tx.send(Change::Rebind(e));
                    } else {
                        self.spawn(e);
                    }
                }
                Action::Rebind(e) => self.send(e, Change::Rebind),
                Action::UpdateInPlace(e) => self.send(e, Change::InPlace),
                Action::Remove(id) => {
                    if let Some(t) = self.vendors.remove(&id) {
                        t.stop.cancel();
                        self.stopping.insert(id, t.join);
                    }
                }
            }
        }
    }

    fn send(&mut self, e: VendorEntry, f: fn(VendorEntry) -> Change) {
        match self.vendors.get(&e.id) {
            Some(t) => {
                let _ = t.tx.send(f(e));
            }
            None => self.spawn(e),
        }
    }

    fn spawn(&mut self, e: VendorEntry) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let id = e.id;
        let previous = self.stopping.remove(&id);
        let ctx = self.ctx.clone();
        let task_stop = stop.clone();
        let join = tokio::spawn(async move {
            // The same vendor re-added while its old binds are still unbinding: let them
            // finish and release their slots first, so the budget is never exceeded.
            if let Some(prev) = previous {
                let _ = prev.await;
            }
            Supervisor::new(ctx, &e).run(e, rx, task_stop).await;
        });
        self.vendors.insert(id, VendorTask { tx, stop, join });
    }

    /// Unbinds everything (each vendor in parallel) and waits, bounded by `limit`.
    pub async fn shutdown(mut self, limit: Duration) {
        for t in self.vendors.values() {
            t.stop.cancel();
        }
        let mut joins: Vec<JoinHandle<()>> = self.vendors.drain().map(|(_, t)| t.join).collect();
        joins.extend(self.stopping.drain().map(|(_, j)| j));
        let all = futures::future::join_all(joins);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(?limit, "some sessions did not unbind in time");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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

struct Supervisor {
    ctx: Arc<Ctx>,
    v: Arc<VendorState>,
    cfg: Option<Arc<VendorConfig>>,
    units: BTreeMap<u32, Unit>,
    live: watch::Receiver<u32>,
}

impl Supervisor {
    fn new(ctx: Arc<Ctx>, e: &VendorEntry) -> Self {
        let v = ctx.registry.insert(e.id, &e.name);
        let live = ctx.fleet.live_pods();
        Self {
            ctx,
            v,
            cfg: None,
            units: BTreeMap::new(),
            live,
        }
    }

    async fn run(
        mut self,
        first: VendorEntry,
        mut rx: mpsc::UnboundedReceiver<Change>,
        stop: CancellationToken,
    ) {
        self.set_entry(&first);
        self.rebalance().await;
        let check = tokio::time::sleep(self.next_check());
        tokio::pin!(check);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                m = rx.recv() => match m {
                    None => break,
                    Some(Change::InPlace(e)) => self.in_place(e).await,
                    Some(Change::Rebind(e)) => self.rebind(e).await,
                },
                () = &mut check => {
                    self.rebalance().await;
                    check.as_mut().reset(tokio::time::Instant::now() + self.next_check());
                }
                Ok(()) = self.live.changed() => self.rebalance().await,
            }
        }
        let units: Vec<u32> = self.units.keys().copied().collect();
        self.stop_units(&units, true).await;
        self.ctx.metrics.forget_vendor(&self.v.name);
        self.ctx.registry.remove(&self.v);
    }

    /// How soon to look at the budget again: often while below the fair share (a slot may
    /// free up or go stale), rarely once there (joins and config changes wake us anyway).
    /// Jittered so a thousand vendors do not wake together.
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
            budget::SLOT_TTL
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
                self.cfg = Some(Arc::new(c.clone()));
            }
            Err(msg) => {
                let f = crate::diagnostics::config_error(msg.clone());
                tracing::error!(vendor = %e.name, error = %f, "vendor row is invalid; not binding it");
                info.config_error = Some(f.to_string());
                info.desired = 0;
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
        match db::slots_held_by_others(
            &self.ctx.fleet.pool,
            self.v.id,
            &self.ctx.fleet.pod,
            SLOT_TTL,
        )
        .await
        {
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
        match db::claim(
            &self.ctx.fleet.pool,
            self.v.id,
            &slots,
            &self.ctx.fleet.pod,
            cfg.version,
            SLOT_TTL,
        )
        .await
        {
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
                    join: tokio::spawn(w.run()),
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

struct SlotWorker {
    ctx: Arc<Ctx>,
    v: Arc<VendorState>,
    slot: i32,
    kind: BindKind,
    cfg: watch::Receiver<Arc<VendorConfig>>,
    stop: CancellationToken,
    lost: CancellationToken,
    keep_slot: Arc<AtomicBool>,
    phase: watch::Sender<Phase>,
}

/// Why a worker loop ended.
enum Exit {
    Stopped,
    Lost,
}

impl SlotWorker {
    fn tunables(&self, c: &VendorConfig) -> Tunables {
        Tunables {
            window: c.window,
            tps: if self.kind.can_submit() {
                c.tps_per_bind()
            } else {
                None
            },
            enquire_interval: c.enquire_interval,
        }
    }

    /// Records the slot's state in the registry and queues it for vendor_sessions.
    fn report(&self, state: &'static str, err: Option<&BindFailure>) {
        let text = err.map(|f| f.to_string());
        self.v.set_slot(self.slot, state, text.clone());
        self.ctx.reporter.state(SlotReport {
            vendor_id: self.v.id,
            slot: self.slot,
            state: state.to_string(),
            last_error: text,
            config_version: self.cfg.borrow().version,
        });
    }

    fn bound_gauge(&self) {
        self.ctx
            .metrics
            .sessions_bound
            .with_label_values(&[&self.v.name])
            .set(i64::from(self.v.bound()));
    }

    async fn run(mut self) {
        let exit = self.serve().await;
        self.v.remove_slot(self.slot);
        self.bound_gauge();
        self.ctx.fleet.forget(self.v.id, self.slot);
        if matches!(exit, Exit::Stopped) && !self.keep_slot.load(Ordering::Relaxed) {
            self.ctx.reporter.release(self.v.id, self.slot).await;
        }
    }

    async fn serve(&mut self) -> Exit {
        let name = self.v.name.clone();
        let mut attempt: u32 = 0;
        let mut was_bound = false;
        loop {
            let cfg = self.cfg.borrow_and_update().clone();
            self.report("connecting", None);
            self.ctx
                .metrics
                .bind_attempts
                .with_label_values(&[&name])
                .inc();
            let dialed = tokio::select! {
                _ = self.stop.cancelled() => return Exit::Stopped,
                _ = self.lost.cancelled() => return Exit::Lost,
                r = dial::dial(&cfg.conn, self.kind, self.ctx.connect_timeout, self.ctx.timeouts.bind, &name, &self.v.tracer) => r,
            };
            let failure = match dialed {
                Err(f) => f,
                Ok(conn) => {
                    attempt = 0;
                    if was_bound {
                        self.ctx
                            .metrics
                            .reconnects
                            .with_label_values(&[&name])
                            .inc();
                    }
                    was_bound = true;
                    let observer = Arc::new(SlotObserver {
                        metrics: self.ctx.metrics.clone(),
                        v: self.v.clone(),
                    });
                    let (handle, mut join) = session::spawn(
                        conn,
                        self.tunables(&cfg),
                        self.ctx.timeouts,
                        name.as_str().into(),
                        self.v.tracer.clone(),
                        observer,
                    );
                    tracing::info!(vendor = %name, slot = self.slot, kind = self.kind.as_str(), version = cfg.version, "bound");
                    self.phase.send_replace(Phase::Bound);
                    self.report("bound", None);
                    self.bound_gauge();
                    let ended = loop {
                        tokio::select! {
                            r = &mut join => break r,
                            _ = self.stop.cancelled() => {
                                self.report("unbinding", None);
                                handle.close();
                                let _ = join.await;
                                tracing::info!(vendor = %name, slot = self.slot, "unbound");
                                return Exit::Stopped;
                            }
                            _ = self.lost.cancelled() => {
                                handle.close();
                                let _ = join.await;
                                return Exit::Lost;
                            }
                            Ok(()) = self.cfg.changed() => {
                                let c = self.cfg.borrow_and_update().clone();
                                handle.update(self.tunables(&c));
                            }
                        }
                    };
                    self.v.set_slot(self.slot, "backoff", None);
                    self.bound_gauge();
                    match ended {
                        Ok(Err(f)) => f,
                        Ok(Ok(())) => crate::diagnostics::connection_lost("session ended"),
                        Err(e) => crate::diagnostics::connection_lost(&format!(
                            "session task failed: {e}"
                        )),
                    }
                }
            };
            self.ctx
                .metrics
                .bind_failures
                .with_label_values(&[&name, &failure.reason])
                .inc();
            tracing::warn!(vendor = %name, slot = self.slot, stage = failure.stage.as_str(), reason = %failure.reason, error = %failure, "bind failed or session ended");
            self.phase.send_replace(Phase::Failed);
            self.report("backoff", Some(&failure));
            let delay = cfg.reconnect.next_delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = self.stop.cancelled() => return Exit::Stopped,
                _ = self.lost.cancelled() => return Exit::Lost,
                _ = tokio::time::sleep(delay) => {}
                // A config change (e.g. the fixed password) retries at once.
                Ok(()) = self.cfg.changed() => {}
            }
        }
    }
}

struct SlotObserver {
    metrics: Arc<Metrics>,
    v: Arc<VendorState>,
}

fn command_name(id: CommandId) -> &'static str {
    match id {
        CommandId::SubmitSm => "submit_sm",
        CommandId::SubmitSmResp => "submit_sm_resp",
        CommandId::DeliverSm => "deliver_sm",
        CommandId::DeliverSmResp => "deliver_sm_resp",
        CommandId::EnquireLink => "enquire_link",
        CommandId::EnquireLinkResp => "enquire_link_resp",
        CommandId::Unbind => "unbind",
        CommandId::UnbindResp => "unbind_resp",
        CommandId::GenericNack => "generic_nack",
        CommandId::BindTransceiver | CommandId::BindTransmitter | CommandId::BindReceiver => "bind",
        CommandId::BindTransceiverResp
        | CommandId::BindTransmitterResp
        | CommandId::BindReceiverResp => "bind_resp",
        _ => "other",
    }
}

impl Observer for SlotObserver {
    fn pdu_in(&self, id: CommandId) {
        self.metrics
            .pdus
            .with_label_values(&[&self.v.name, "in", command_name(id)])
            .inc();
    }

    fn pdu_out(&self, id: CommandId) {
        self.metrics
            .pdus
            .with_label_values(&[&self.v.name, "out", command_name(id)])
            .inc();
    }

    fn enquire_link_rtt(&self, rtt: Duration) {
        self.metrics
            .enquire_link_rtt
            .with_label_values(&[&self.v.name])
            .observe(rtt.as_secs_f64());
    }

    fn deliver_sm(&self, cmd: &Command) -> CommandStatus {
        if let Some(Pdu::DeliverSm(d)) = cmd.pdu() {
            // esm_class message type bits 2..5: 0x04 = MC delivery receipt.
            if u8::from(d.esm_class) & 0x3C == 0x04 {
                self.v.dlrs_received.fetch_add(1, Ordering::Relaxed);
            }
        }
        CommandStatus::EsmeRok
    }
}

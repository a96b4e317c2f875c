//! The worker of one bind slot: connect, bind, run the session, report, retry with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusmpp::{Command, CommandId};
use smpp_db::sessions::{SlotReport, SlotState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::supervisor::Phase;
use crate::fleet::config::VendorConfig;
use crate::fleet::sessions::Inbound;
use crate::fleet::state::VendorState;
use crate::metrics::Metrics;
use crate::smpp::diagnostics::BindFailure;
use crate::smpp::dial;
use crate::smpp::pdu::BindKind;
use crate::smpp::session::{self, DeliverReply, Observer, Tunables};

pub(super) struct SlotWorker {
    pub(super) ctx: Arc<Ctx>,
    pub(super) v: Arc<VendorState>,
    pub(super) slot: i32,
    pub(super) kind: BindKind,
    pub(super) cfg: watch::Receiver<Arc<VendorConfig>>,
    pub(super) stop: CancellationToken,
    pub(super) lost: CancellationToken,
    pub(super) keep_slot: Arc<AtomicBool>,
    pub(super) phase: watch::Sender<Phase>,
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
    fn report(&self, state: SlotState, err: Option<&BindFailure>) {
        let text = err.map(|f| f.to_string());
        self.v.set_slot(self.slot, state, text.clone());
        self.ctx.reporter.state(SlotReport {
            vendor_id: self.v.id,
            slot: self.slot,
            state,
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

    pub(super) async fn run(mut self) {
        let exit = self.serve().await;
        self.v.remove_slot(self.slot);
        self.bound_gauge();
        self.ctx.fleet.forget(self.v.id, self.slot);
        if matches!(exit, Exit::Stopped) && !self.keep_slot.load(Ordering::Relaxed) {
            Box::pin(self.ctx.reporter.release(self.v.id, self.slot)).await;
        }
    }

    async fn serve(&mut self) -> Exit {
        let name = self.v.name.clone();
        let mut attempt: u32 = 0;
        let mut was_bound = false;
        loop {
            let cfg = self.cfg.borrow_and_update().clone();
            self.report(SlotState::Connecting, None);
            self.ctx
                .metrics
                .bind_attempts
                .with_label_values(&[&name])
                .inc();
            let dialed = tokio::select! {
                _ = self.stop.cancelled() => return Exit::Stopped,
                _ = self.lost.cancelled() => return Exit::Lost,
                // Boxed: the TLS handshake's state is large and only lives while dialing.
                r = Box::pin(async {
                    let _turn = self.ctx.dials.enter(&cfg.conn.host, cfg.conn.port).await;
                    dial::dial(&cfg.conn, self.kind, self.ctx.connect_timeout, self.ctx.timeouts.bind, &name, &self.v.tracer).await
                }) => r,
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
                        inbound: self.ctx.inbound.clone(),
                        cfg: self.cfg.clone(),
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
                    self.report(SlotState::Bound, None);
                    self.bound_gauge();
                    if self.kind.can_submit() {
                        self.ctx.sessions.add(&cfg, self.slot, handle.clone());
                    }
                    let ended = loop {
                        tokio::select! {
                            r = &mut join => break r,
                            _ = self.stop.cancelled() => {
                                self.ctx.sessions.remove(self.v.id, self.slot);
                                self.report(SlotState::Unbinding, None);
                                handle.close();
                                let _ = join.await;
                                tracing::info!(vendor = %name, slot = self.slot, "unbound");
                                return Exit::Stopped;
                            }
                            _ = self.lost.cancelled() => {
                                self.ctx.sessions.remove(self.v.id, self.slot);
                                handle.close();
                                let _ = join.await;
                                return Exit::Lost;
                            }
                            Ok(()) = self.cfg.changed() => {
                                let c = self.cfg.borrow_and_update().clone();
                                handle.update(self.tunables(&c));
                                if self.kind.can_submit() {
                                    self.ctx.sessions.add(&c, self.slot, handle.clone());
                                }
                            }
                        }
                    };
                    self.ctx.sessions.remove(self.v.id, self.slot);
                    self.v.set_slot(self.slot, SlotState::Backoff, None);
                    self.bound_gauge();
                    match ended {
                        Ok(Err(f)) => f,
                        Ok(Ok(())) => crate::smpp::diagnostics::connection_lost("session ended"),
                        Err(e) => crate::smpp::diagnostics::connection_lost(&format!(
                            "session task failed: {e}"
                        )),
                    }
                }
            };
            self.ctx
                .metrics
                .bind_failures
                .with_label_values(&[name.as_str(), &failure.reason.as_str()])
                .inc();
            tracing::warn!(vendor = %name, slot = self.slot, stage = failure.stage.as_str(), reason = %failure.reason, error = %failure, "bind failed or session ended");
            self.phase.send_replace(Phase::Failed);
            self.report(SlotState::Backoff, Some(&failure));
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
    inbound: Arc<dyn Inbound>,
    cfg: watch::Receiver<Arc<VendorConfig>>,
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

    fn deliver_sm(&self, cmd: Command, reply: DeliverReply) {
        let cfg = self.cfg.borrow().clone();
        self.inbound.deliver_sm(&cfg, cmd, reply);
    }
}

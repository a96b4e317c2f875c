//! Runs the vendors: one supervisor task per vendor, one worker task per bind slot.
//!
//! - The supervisor holds the vendor's configuration, claims budget units (fair share of the
//!   fleet), gives back units beyond the share, applies in-place changes and rebinds.
//! - A worker owns one slot: connect, bind, run the session, report state to vendor_sessions
//!   and the registry, retry with backoff; on stop it unbinds gracefully and releases the slot.

mod supervisor;
mod worker;

#[cfg(test)]
mod idle_size_tests;

use supervisor::Supervisor;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fleet::budget::Fleet;
use crate::fleet::claims::Claims;
use crate::fleet::config::VendorEntry;
use crate::fleet::dial_gate::DialGate;
use crate::fleet::reload::Action;
use crate::fleet::reporter::Reporter;
use crate::fleet::sessions::{Inbound, SessionIndex};
use crate::fleet::state::Registry;
use crate::metrics::Metrics;
use crate::smpp::session::Timeouts;

/// What every vendor task shares.
pub struct Ctx {
    pub fleet: Arc<Fleet>,
    /// Slot questions to PostgreSQL, batched across vendors.
    pub claims: Arc<Claims>,
    /// Turns to dial, per vendor address.
    pub dials: DialGate,
    pub reporter: Reporter,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub timeouts: Timeouts,
    pub connect_timeout: Duration,
    /// This pod's submit-capable sessions, for the messaging layer.
    pub sessions: Arc<SessionIndex>,
    /// Where every deliver_sm goes (receipts, MO).
    pub inbound: Arc<dyn Inbound>,
}

/// Boxed entries: an unbounded channel allocates its first block of 32 slots at once, and
/// 32 inline entries are ~14 KiB per vendor.
enum Change {
    InPlace(Box<VendorEntry>),
    Rebind(Box<VendorEntry>),
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
                        let _ = t.tx.send(Change::Rebind(Box::new(e)));
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

    fn send(&mut self, e: VendorEntry, f: fn(Box<VendorEntry>) -> Change) {
        match self.vendors.get(&e.id) {
            Some(t) => {
                let _ = t.tx.send(f(Box::new(e)));
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
        // Boxed: the task holds the entry only until the supervisor has read it.
        let e = Box::new(e);
        let join = tokio::spawn(async move {
            // The same vendor re-added while its old binds are still unbinding: let them
            // finish and release their slots first, so the budget is never exceeded.
            if let Some(prev) = previous {
                let _ = prev.await;
            }
            Supervisor::new(ctx, *e).run(rx, task_stop).await;
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

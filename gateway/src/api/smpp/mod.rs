//! The customer-facing SMPP server: customers (ESMEs) bind to us as to any SMSC and submit
//! through the same messaging core as the HTTP API; their receipts come back as deliver_sm.
//! docs/customers.md is the customer's view of it.
//!
//! Shaped like tokio's mini-redis: the listener accepts ([`listener`]), each connection is a
//! session task ([`session`]) with the frame handling on the shared codec and writer, and one
//! stop token (a child of which every session watches) ends it all: stop accepting, unbind
//! every customer (they reconnect to another pod), give their bind slots back, stop their
//! outbox consumers so pending receipts go to other sessions.
//!
//! - [`auth`]: who may bind. [`status`]: every command_status we answer.
//! - [`limits`]: the server's bounds, the fleet-wide rate per account. [`slots`]: the
//!   fleet-wide bind limit. [`bound`]: this pod's bound sessions by account.
//! - [`requests`]: submit_sm / submit_multi → messages; query_sm from the store.
//! - [`tls`]: the certificate, reloaded when its files change.

pub mod auth;
pub mod bound;
pub mod limits;
pub mod link;
pub mod listener;
pub mod requests;
pub mod session;
pub mod slots;
pub mod status;
pub mod tls;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::messages::MessagesApi;
use crate::fleet::account_watcher::AccountEvents;
use crate::fleet::accounts::{AccountRegistry, CustomerAccount};
use crate::messaging::customer::CustomerLink;
use crate::messaging::outbox::Outbox;
use crate::metrics::Metrics;
use crate::smpp::connection::Transport;

use bound::{BoundSessions, Kick};
use limits::{Rates, Settings};
use slots::BindSlots;

/// Connections over `--smpp-max-connections` that are answered at once (their bind gets
/// ESME_RBINDFAIL) rather than just closed.
const REFUSALS: usize = 32;

/// What the server is built from.
pub struct Deps {
    pub settings: Settings,
    pub accounts: Arc<AccountRegistry>,
    pub slots: Arc<dyn BindSlots>,
    /// The messaging core (None without Redis: binds work, submits get ESME_RSYSERR).
    pub messages: Option<Arc<MessagesApi>>,
    /// Where RX/TRX sessions get their receipts (None without Redis).
    pub receipts: Option<Arc<dyn ReceiptFeed>>,
    pub metrics: Arc<Metrics>,
    pub pod: String,
}

/// Where a bound RX/TRX session gets its account's receipts from.
pub trait ReceiptFeed: Send + Sync + 'static {
    /// Delivers `account`'s receipts over `link` until `stop` (see `Outbox::consume`).
    fn consume(
        &self,
        account: Uuid,
        consumer: String,
        link: Arc<dyn CustomerLink>,
        stop: CancellationToken,
    ) -> JoinHandle<()>;
}

/// The outbox as the sessions' receipt feed.
pub struct OutboxFeed(pub Arc<Outbox>);

impl ReceiptFeed for OutboxFeed {
    fn consume(
        &self,
        account: Uuid,
        consumer: String,
        link: Arc<dyn CustomerLink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        self.0.consume(account, consumer, link, stop)
    }
}

/// Everything the sessions share.
pub struct Ctx {
    pub settings: Settings,
    pub accounts: Arc<AccountRegistry>,
    pub auth: auth::Auth,
    pub bound: Arc<BoundSessions>,
    pub rates: Rates,
    pub slots: Arc<dyn BindSlots>,
    pub messages: Option<Arc<MessagesApi>>,
    pub receipts: Option<Arc<dyn ReceiptFeed>>,
    pub metrics: Arc<Metrics>,
    pub pod: String,
    /// Names this process's consumers apart from an earlier run with the same pod name.
    boot: u32,
    consumers: AtomicU64,
    stop: CancellationToken,
    tracker: TaskTracker,
    connections: Arc<Semaphore>,
    /// Connections over the limit being told so.
    refusals: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--smpp-system-id {0:?}: {1}")]
    SystemId(String, crate::smpp::pdu::PduError),
}

impl Ctx {
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub fn connections(&self) -> Arc<Semaphore> {
        self.connections.clone()
    }

    pub fn refusals(&self) -> Arc<Semaphore> {
        self.refusals.clone()
    }

    /// A name for one session's outbox consumer, unique in the fleet.
    pub fn consumer_name(&self) -> String {
        let n = self.consumers.fetch_add(1, Ordering::Relaxed);
        format!("{}:{:08x}:{n}", self.pod, self.boot)
    }

    /// Recounts the account's binds here and in the fleet for its rate share, and shows the
    /// share (smpp_customer_rate_share).
    pub fn refresh_share(self: &Arc<Self>, account: &CustomerAccount) {
        let (id, label) = (account.id, account.system_id.clone());
        let me = self.clone();
        self.tracker.spawn(async move {
            let gone = |me: &Ctx| {
                me.rates.forget(id);
                let _ = me.metrics.customer_rate_share.remove_label_values(&[&label]);
            };
            if me.bound.count(id) == 0 {
                return gone(&me);
            }
            match me.slots.live_binds(id).await {
                Ok(fleet) => {
                    // Counted again after the query: the last session may have closed meanwhile.
                    let here = me.bound.count(id);
                    if here == 0 {
                        return gone(&me);
                    }
                    me.rates.set_binds(id, here, fleet);
                    let max = me.accounts.get(id).and_then(|a| a.max_messages_per_second);
                    match limits::pod_share(max, here, fleet) {
                        Some(share) => me
                            .metrics
                            .customer_rate_share
                            .with_label_values(&[&label])
                            .set(share),
                        None => {
                            let _ = me.metrics.customer_rate_share.remove_label_values(&[&label]);
                        }
                    }
                }
                Err(e) => {
                    me.metrics.db_errors.with_label_values(&["live_binds"]).inc();
                    tracing::debug!(error = %e, "cannot count an account's binds; keeping the last share");
                }
            }
        });
    }

    /// Gives a bind slot back; retried in the background while PostgreSQL is unreachable
    /// (the row would otherwise hold the slot for as long as this pod lives).
    pub fn release_slot(self: &Arc<Self>, account: Uuid, slot: i32) {
        let me = self.clone();
        self.tracker.spawn(async move {
            let mut delay = Duration::from_millis(200);
            for _ in 0..20 {
                match me.slots.release(account, slot).await {
                    Ok(()) => return,
                    Err(e) => {
                        me.metrics.db_errors.with_label_values(&["release_slot"]).inc();
                        tracing::warn!(error = %e, slot, "cannot give a customer bind slot back; retrying");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }
}

impl Ctx {
    /// A suspended or deleted account, or one whose CIDRs no longer include a session's
    /// source, unbinds those sessions here.
    pub fn accounts_changed(&self, ids: &[Uuid]) {
        for id in ids {
            let n = match self.accounts.get(*id) {
                None => self.bound.kick(*id, Kick::Deleted, |_| false),
                Some(a) if a.suspended => self.bound.kick(*id, Kick::Suspended, |_| false),
                Some(a) => self
                    .bound
                    .kick(*id, Kick::SourceNotAllowed, |ip| a.allows_source(ip)),
            };
            if n > 0 {
                tracing::info!(account = %id, sessions = n, "account changed: unbinding its sessions that may no longer bind");
            }
        }
        self.auth.retain(&self.accounts);
    }
}

/// The server: its listeners and sessions.
#[derive(Clone)]
pub struct Server {
    ctx: Arc<Ctx>,
}

impl Server {
    pub fn new(d: Deps) -> Result<Self, ServerError> {
        crate::smpp::pdu::bind_resp(
            crate::smpp::pdu::BindKind::Transceiver,
            1,
            &d.settings.system_id,
            crate::smpp::pdu::CustomerVersion::V34,
        )
        .map_err(|e| ServerError::SystemId(d.settings.system_id.clone(), e))?;
        let ctx = Ctx {
            auth: auth::Auth::new(d.settings.failed_binds_per_minute),
            connections: Arc::new(Semaphore::new(d.settings.max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSALS)),
            settings: d.settings,
            accounts: d.accounts,
            bound: Arc::default(),
            rates: Rates::default(),
            slots: d.slots,
            messages: d.messages,
            receipts: d.receipts,
            metrics: d.metrics,
            pod: d.pod,
            boot: rand::random(),
            consumers: AtomicU64::new(0),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        Ok(Self { ctx: Arc::new(ctx) })
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Accepts on `listener` (TLS with `tls`) until [`Server::shutdown`].
    pub fn serve(&self, listener: TcpListener, tls: Option<Arc<tls::ReloadingTls>>) {
        let ctx = self.ctx.clone();
        self.ctx.tracker.spawn(listener::serve(ctx, listener, tls));
    }

    /// One session over an already open stream (in-process tests, and anything that accepts
    /// on its own).
    pub fn session(&self, io: Transport, peer: SocketAddr) -> tokio::task::JoinHandle<()> {
        self.ctx
            .tracker
            .spawn(session::run(self.ctx.clone(), io, peer))
    }

    /// Stops accepting and unbinds every customer; waits (at most `limit`) for the sessions
    /// to close, their slots to be released and their consumers to stop.
    pub async fn shutdown(&self, limit: Duration) {
        self.ctx.stop.cancel();
        self.ctx.tracker.close();
        if tokio::time::timeout(limit, self.ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = self.ctx.bound.total(),
                "customer sessions still open at the shutdown deadline"
            );
        }
    }
}

impl Server {
    /// Recounts the shares of those of `ids` bound here. An account gone from the registry
    /// has its sessions unbound, and their close recounts it.
    fn refresh_shares(&self, ids: &[Uuid]) {
        for id in ids {
            if self.ctx.bound.count(*id) > 0
                && let Some(a) = self.ctx.accounts.get(*id)
            {
                self.ctx.refresh_share(&a);
            }
        }
    }
}

impl AccountEvents for Server {
    /// Also recounts the shares: maxMessagesPerSecond may have changed.
    fn accounts_changed(&self, ids: &[Uuid]) {
        self.ctx.accounts_changed(ids);
        self.refresh_shares(ids);
    }

    /// Another pod's bind or close (or a periodic resync): recount the shares of accounts
    /// bound here.
    fn binds_changed(&self, ids: &[Uuid]) {
        self.refresh_shares(ids);
    }
}

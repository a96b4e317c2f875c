//! One SMPP bind on rusmpp's codec: bind, then a reader/control task and a writer task.
//!
//! - The control task owns the read half and the map of in-flight requests keyed by sequence
//!   number (no lock per PDU). It answers the peer's enquire_link, deliver_sm and unbind, sends
//!   our enquire_link at the configured interval and ends the session if no answer comes.
//! - The writer task owns the write half: it takes every PDU that is queued, encodes them into
//!   one buffer and flushes once per batch.
//! - The window is a semaphore (resizable in place), the TPS limit a token bucket whose rate can
//!   change in place.
//! - Cancelling the session unbinds gracefully: wait (bounded) for in-flight responses, send
//!   unbind, wait (bounded) for unbind_resp.

mod bind;
mod bucket;
mod control;
mod window;
mod writer;

use control::Control;
use writer::writer;

pub use bind::bind;
pub use bucket::{BucketState, TokenBucket, take_token, take_tokens};
pub use window::Window;
pub use writer::{Queue, write_batches};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusmpp::{Command, CommandId, CommandStatus};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::smpp::connection::Transport;
use crate::smpp::diagnostics::BindFailure;
use crate::smpp::pdu::{self, PduError, Submit};
use crate::smpp::trace::Tracer;

/// A framed SMPP connection (vendor or customer side).
pub type Conn = Framed<Transport, crate::smpp::codec::Codec>;

/// What the rest of the gateway learns from a session. Metrics and DLR handling plug in here.
pub trait Observer: Send + Sync + 'static {
    fn pdu_in(&self, _id: CommandId) {}
    fn pdu_out(&self, _id: CommandId) {}
    fn enquire_link_rtt(&self, _rtt: Duration) {}
    /// A deliver_sm (MO or DLR) arrived. Answer it through `reply`, now or later (once the
    /// receipt is stored): the session's reader never waits for it.
    fn deliver_sm(&self, _cmd: Command, reply: DeliverReply) {
        reply.answer(CommandStatus::EsmeRok);
    }
}

/// The pending deliver_sm_resp of one deliver_sm. Dropped unanswered, it answers
/// ESME_RX_T_APPN (temporary), so a receipt is never acknowledged without being handled and
/// the vendor delivers it again.
pub struct DeliverReply {
    seq: u32,
    out: Option<Out>,
}

/// The writer's queue. Boxed PDUs: a channel allocates its first block of 32 slots at once,
/// and 32 inline Commands are ~9 KiB per idle session.
pub(super) type Out = mpsc::UnboundedSender<Box<Command>>;

impl DeliverReply {
    pub(super) fn new(seq: u32, out: Out) -> Self {
        Self {
            seq,
            out: Some(out),
        }
    }

    pub fn answer(mut self, status: CommandStatus) {
        if let Some(out) = self.out.take() {
            let _ = out.send(Box::new(pdu::deliver_sm_resp(self.seq, status)));
        }
    }
}

impl Drop for DeliverReply {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            let _ = out.send(Box::new(pdu::deliver_sm_resp(
                self.seq,
                CommandStatus::EsmeRxTAppn,
            )));
        }
    }
}

/// The observer that observes nothing (probe).
pub struct NoObserver;
impl Observer for NoObserver {}

/// Settings that change in place, without a rebind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tunables {
    pub window: usize,
    /// Messages per second for this bind; None = unlimited.
    pub tps: Option<f64>,
    pub enquire_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub bind: Duration,
    pub enquire_response: Duration,
    pub unbind: Duration,
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            bind: Duration::from_secs(10),
            enquire_response: Duration::from_secs(10),
            unbind: Duration::from_secs(2),
            response: Duration::from_secs(30),
        }
    }
}

/// The answer to a submit_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub status: u32,
    pub message_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the session is closed")]
    Closed,
    #[error("no submit_sm_resp within {0:?}")]
    Timeout(Duration),
    #[error("no window slot or TPS token within {0:?}; nothing was sent")]
    Busy(Duration),
    #[error("the submit_sm_resp could not be decoded: {0}")]
    Malformed(String),
    #[error(transparent)]
    Pdu(#[from] PduError),
}

/// Boxed for the same reason as [`Out`]: the request channel's first block.
enum Request {
    Submit {
        msg: Box<Submit>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<SubmitOutcome, SubmitError>>,
    },
}

struct Pending {
    reply: oneshot::Sender<Result<SubmitOutcome, SubmitError>>,
    sent: Instant,
    _permit: OwnedSemaphorePermit,
}

/// Handle to a running session. Dropping it does not end the session; `close` does.
#[derive(Clone)]
pub struct SessionHandle {
    requests: mpsc::Sender<Request>,
    window: Arc<Window>,
    bucket: Arc<TokenBucket>,
    tunables: watch::Sender<Tunables>,
    cancel: CancellationToken,
}

impl SessionHandle {
    /// Applies window, TPS and enquire interval in place.
    pub fn update(&self, t: Tunables) {
        self.window.resize(t.window);
        self.bucket.set_rate(t.tps);
        self.tunables.send_replace(t);
    }

    /// Starts the graceful unbind; await the session's join handle to see it finish.
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// Waits for the TPS bucket and a window slot, sends, and waits for submit_sm_resp, all
    /// within `limit`. `Busy` means nothing was sent.
    pub async fn submit(&self, msg: Submit, limit: Duration) -> Result<SubmitOutcome, SubmitError> {
        let deadline = tokio::time::Instant::now() + limit;
        let queued = async {
            self.bucket.acquire().await;
            self.window.acquire().await
        };
        let permit = match tokio::time::timeout_at(deadline, queued).await {
            Err(_) => return Err(SubmitError::Busy(limit)),
            Ok(p) => p.ok_or(SubmitError::Closed)?,
        };
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Submit {
                msg: Box::new(msg),
                permit,
                reply,
            })
            .await
            .map_err(|_| SubmitError::Closed)?;
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(SubmitError::Timeout(limit)),
            Ok(Err(_)) => Err(SubmitError::Closed),
            Ok(Ok(r)) => r,
        }
    }
}

/// Runs a bound connection until it ends. The returned `Err` says why the session ended
/// when it was not us who ended it.
pub fn spawn(
    conn: Conn,
    tunables: Tunables,
    timeouts: Timeouts,
    vendor: Arc<str>,
    tracer: Arc<Tracer>,
    observer: Arc<dyn Observer>,
) -> (
    SessionHandle,
    tokio::task::JoinHandle<Result<(), BindFailure>>,
) {
    let (requests, req_rx) = mpsc::channel(1024);
    let (tun_tx, tun_rx) = watch::channel(tunables);
    let window = Arc::new(Window::new(tunables.window));
    let bucket = Arc::new(TokenBucket::new(tunables.tps));
    let cancel = CancellationToken::new();
    let handle = SessionHandle {
        requests,
        window: window.clone(),
        bucket,
        tunables: tun_tx,
        cancel: cancel.clone(),
    };
    let (sink, stream) = conn.split();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(writer(
        sink,
        out_rx,
        vendor.clone(),
        tracer.clone(),
        observer.clone(),
    ));
    let ctl = Control {
        out: out_tx,
        inflight: HashMap::new(),
        order: Default::default(),
        seq: 1,
        vendor,
        tracer,
        observer,
        timeouts,
        enquire: None,
        last_enquire: Instant::now(),
    };
    let join = tokio::spawn(async move {
        let r = ctl.run(stream, req_rx, tun_rx, cancel, window).await;
        // The writer ends when the control task drops its sender; wait so the unbind is flushed.
        let _ = writer.await;
        r
    });
    (handle, join)
}

#[cfg(test)]
mod control_tests;

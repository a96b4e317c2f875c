//! One customer connection: Open → Bound (TX, RX or TRX) → Unbinding, and closed.
//!
//! The session task reads; a writer task (the vendor side's `write_batches`, on a bounded
//! queue) writes. Requests that take time (submit_sm, submit_multi, query_sm) run as tasks of
//! their own, at most `window` at once, and answer through the queue in whatever order they
//! finish; bind and unbind run inline. Only PDUs valid in the session's state are served
//! ([`admit`]); the others get the answer the spec gives them. A PDU that does not decode is
//! answered and the session goes on; a command_length it cannot frame, an idle customer, or a
//! customer that stops reading (its queue full) ends this session only.
//!
//! An RX or TRX session is also the account's `CustomerLink` (`link::Link`): the outbox
//! consumer started at bind sends receipts through it as deliver_sm and waits for
//! deliver_sm_resp.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use futures::StreamExt;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use smpp_db::accounts::CustomerBindType;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::api::smpp::Ctx;
use crate::api::smpp::bound::{Kick, KickSignal, Registration};
use crate::api::smpp::link::{Link, next_seq};
use crate::api::smpp::status::BindRefusal;
use crate::fleet::accounts::CustomerAccount;
use crate::smpp::codec::{Codec, CodecError, Frame, Malformed};
use crate::smpp::connection::Transport;
use crate::smpp::pdu::{self, BindKind, CustomerVersion};
use crate::smpp::session::write_batches;

mod admit;
mod transmit;

pub use admit::{Admit, StateKind, admit};

type Stream = futures::stream::SplitStream<Framed<Transport, Codec>>;

/// Why a session ended: the `reason` label of smpp_customer_sessions_closed_total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The customer closed the connection.
    PeerClosed,
    /// The customer unbound.
    PeerUnbound,
    /// No PDU for the idle time (or no bind in that time).
    Idle,
    Kicked(Kick),
    /// A command_length the stream cannot be framed past.
    BadLength,
    /// The customer does not read what we send (its queue is full).
    NotReading,
    Io,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::PeerUnbound => "peer_unbound",
            End::Idle => "idle",
            End::Kicked(k) => k.as_str(),
            End::BadLength => "bad_command_length",
            End::NotReading => "not_reading",
            End::Io => "io_error",
        }
    }
}

enum Step {
    Continue,
    End(End),
}

/// A bound session's account and resources.
struct Bound {
    account: Arc<CustomerAccount>,
    kind: CustomerBindType,
    slot: i32,
    registration: Option<Registration>,
    link: Option<Arc<Link>>,
    consumer: Option<(CancellationToken, JoinHandle<()>)>,
}

enum State {
    Open,
    Bound(Box<Bound>),
    Unbinding(Box<Bound>),
}

struct Session {
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    out: mpsc::Sender<Box<Command>>,
    state: State,
    inflight: Arc<Semaphore>,
    kick: KickSignal,
    /// Fired by the heartbeat when the bind slot is no longer this pod's (see `slots`).
    slot_lost: CancellationToken,
    /// Set by anyone who finds the writer queue full: the customer does not read.
    not_reading: CancellationToken,
    seq: Arc<AtomicU32>,
}

/// Queues `cmd`; a full queue means the customer does not read: its session ends.
fn send(out: &mpsc::Sender<Box<Command>>, not_reading: &CancellationToken, cmd: Command) {
    if let Err(mpsc::error::TrySendError::Full(_)) = out.try_send(Box::new(cmd)) {
        not_reading.cancel();
    }
}

/// Serves one connection until it ends; its bind slot and outbox consumer go with it.
pub async fn run(ctx: Arc<Ctx>, io: Transport, peer: SocketAddr) {
    ctx.metrics.customer_connections.inc();
    let (sink, stream) =
        crate::smpp::codec::framed(io, Codec::with_max(ctx.settings.max_pdu)).split();
    let (out, rx) = mpsc::channel(ctx.settings.queue_len());
    let mut writer = tokio::spawn(write_batches(sink, rx, |_| {}));
    let kick = KickSignal::child_of(ctx.stop_token());
    let mut s = Session {
        inflight: Arc::new(Semaphore::new(ctx.settings.window)),
        ctx: ctx.clone(),
        peer,
        out,
        state: State::Open,
        kick,
        slot_lost: CancellationToken::new(),
        not_reading: CancellationToken::new(),
        seq: Arc::new(AtomicU32::new(0)),
    };
    let end = s.serve(stream).await;
    s.finish(end).await;
    drop(s);
    // Late answers of requests still in flight go out if they come soon; a customer that
    // broke the protocol or stopped reading is cut off at once.
    let graceful = matches!(end, End::PeerUnbound | End::Kicked(_) | End::Idle);
    let grace = if graceful {
        ctx.settings.unbind_timeout
    } else {
        Duration::ZERO
    };
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    ctx.metrics.customer_connections.dec();
    ctx.metrics
        .customer_sessions_closed
        .with_label_values(&[end.as_str()])
        .inc();
}

/// A connection over the server's limit: its bind (within `limit`) gets ESME_RBINDFAIL, so
/// the customer learns why, and the connection closes.
pub async fn refuse(io: Transport, limit: Duration) {
    let mut framed = Framed::new(io, Codec::new());
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(Ok(cmd)))) = tokio::time::timeout_at(deadline, framed.next()).await {
        let id = cmd.id();
        if matches!(
            id,
            CommandId::BindTransmitter | CommandId::BindReceiver | CommandId::BindTransceiver
        ) {
            let resp = pdu::error_resp(
                u32::from(id),
                cmd.sequence_number(),
                CommandStatus::EsmeRbindfail,
            );
            let _ = futures::SinkExt::send(&mut framed, resp).await;
            return;
        }
    }
}

impl Session {
    fn kind(&self) -> StateKind {
        match &self.state {
            State::Open => StateKind::Open,
            State::Unbinding(_) => StateKind::Unbinding,
            State::Bound(b) => match b.kind {
                CustomerBindType::Transmitter => StateKind::Tx,
                CustomerBindType::Receiver => StateKind::Rx,
                CustomerBindType::Transceiver => StateKind::Trx,
            },
        }
    }

    fn bound(&self) -> Option<&Bound> {
        match &self.state {
            State::Bound(b) | State::Unbinding(b) => Some(b),
            State::Open => None,
        }
    }

    /// The account as it is now (its row may have changed since the bind).
    fn account(&self) -> Option<Arc<CustomerAccount>> {
        let b = self.bound()?;
        Some(
            self.ctx
                .accounts
                .get(b.account.id)
                .unwrap_or_else(|| b.account.clone()),
        )
    }

    fn send(&self, cmd: Command) {
        send(&self.out, &self.not_reading, cmd);
    }

    fn refuse(&self, request: u32, seq: u32, status: CommandStatus) {
        self.send(pdu::error_resp(request, seq, status));
    }

    async fn serve(&mut self, mut stream: Stream) -> End {
        let idle = self.ctx.settings.idle_timeout;
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        loop {
            let step = tokio::select! {
                biased;
                _ = self.not_reading.cancelled() => return End::NotReading,
                _ = self.kick.kicked() => {
                    let why = self.kick.reason().unwrap_or(Kick::Shutdown);
                    return self.unbind(&mut stream, End::Kicked(why)).await;
                }
                _ = self.slot_lost.cancelled() => {
                    return self.unbind(&mut stream, End::Kicked(Kick::SlotTakenOver)).await;
                }
                () = &mut timer => return self.unbind(&mut stream, End::Idle).await,
                frame = stream.next() => self.frame(frame).await,
            };
            match step {
                Step::Continue => timer.as_mut().reset(tokio::time::Instant::now() + idle),
                Step::End(e) => return e,
            }
        }
    }

    async fn frame(&mut self, frame: Option<Result<Frame, CodecError>>) -> Step {
        let cmd = match frame {
            None => return Step::End(End::PeerClosed),
            Some(Err(CodecError::Io(_))) => return Step::End(End::Io),
            Some(Err(e @ CodecError::Length { .. })) => {
                tracing::info!(peer = %self.peer, error = %e, "customer session closed: a PDU that cannot be framed");
                return Step::End(End::BadLength);
            }
            Some(Ok(Err(m))) => {
                self.malformed(m);
                return Step::Continue;
            }
            Some(Ok(Ok(c))) => c,
        };
        let seq = cmd.sequence_number();
        let id = u32::from(cmd.id());
        match admit(self.kind(), cmd.id()) {
            Admit::Ignore => Step::Continue,
            Admit::Nack(s) => {
                self.send(pdu::generic_nack(seq, s));
                Step::Continue
            }
            Admit::Refuse(s) => {
                if s == CommandStatus::EsmeRalybnd {
                    self.count_bind_failure(BindRefusal::AlreadyBound);
                }
                self.refuse(id, seq, s);
                Step::Continue
            }
            Admit::Handle => self.handle(cmd).await,
        }
    }

    /// A PDU whose header was read but whose body does not decode: answered, session kept.
    fn malformed(&self, m: Malformed) {
        tracing::debug!(peer = %self.peer, command_id = format_args!("0x{:08X}", m.command_id), error = %m.error, "undecodable PDU from a customer");
        if !m.is_request() {
            return;
        }
        let is_bind = [
            CommandId::BindTransmitter,
            CommandId::BindReceiver,
            CommandId::BindTransceiver,
        ]
        .iter()
        .any(|c| u32::from(*c) == m.command_id);
        if is_bind && self.kind() == StateKind::Open {
            // Usually a password or system_id longer than SMPP allows: a failed bind.
            self.ctx.auth.record_failure(self.peer.ip());
            self.count_bind_failure(BindRefusal::Malformed);
            self.refuse(
                m.command_id,
                m.sequence_number,
                BindRefusal::Malformed.status(),
            );
            return;
        }
        self.send(pdu::generic_nack(
            m.sequence_number,
            CommandStatus::EsmeRinvcmdlen,
        ));
    }

    async fn handle(&mut self, cmd: Command) -> Step {
        let seq = cmd.sequence_number();
        match cmd.pdu() {
            Some(Pdu::EnquireLink) => self.send(pdu::enquire_link_resp(seq)),
            Some(Pdu::Unbind) => return Step::End(self.peer_unbind(seq).await),
            Some(Pdu::UnbindResp) => return Step::End(End::PeerUnbound),
            Some(Pdu::SubmitSm(sm)) => self.submit_sm(seq, sm),
            Some(Pdu::SubmitMulti(sm)) => self.submit_multi(seq, sm),
            Some(Pdu::QuerySm(q)) => self.query_sm(seq, q.message_id.to_string()),
            Some(Pdu::CancelSm(_)) => {
                // The vendors we send to are not asked to cancel: see docs/customers.md. The
                // same answer for any id, the account's own or not, so nothing leaks; no lookup.
                self.refuse(u32::from(cmd.id()), seq, CommandStatus::EsmeRcancelfail);
            }
            Some(Pdu::DeliverSmResp(_)) | Some(Pdu::GenericNack) => {
                if let Some(link) = self.bound().and_then(|b| b.link.as_ref()) {
                    link.complete(seq, cmd.status());
                }
            }
            Some(Pdu::BindTransmitter(b)) => {
                let (id, pw, v) = (
                    b.system_id.to_string(),
                    b.password.to_string(),
                    b.interface_version,
                );
                self.bind(seq, BindKind::Transmitter, &id, &pw, v).await;
            }
            Some(Pdu::BindReceiver(b)) => {
                let (id, pw, v) = (
                    b.system_id.to_string(),
                    b.password.to_string(),
                    b.interface_version,
                );
                self.bind(seq, BindKind::Receiver, &id, &pw, v).await;
            }
            Some(Pdu::BindTransceiver(b)) => {
                let (id, pw, v) = (
                    b.system_id.to_string(),
                    b.password.to_string(),
                    b.interface_version,
                );
                self.bind(seq, BindKind::Transceiver, &id, &pw, v).await;
            }
            _ => {}
        }
        Step::Continue
    }

    fn count_bind_failure(&self, why: BindRefusal) {
        self.ctx
            .metrics
            .customer_bind_failures
            .with_label_values(&[why.as_str()])
            .inc();
    }

    async fn bind(
        &mut self,
        seq: u32,
        kind: BindKind,
        system_id: &str,
        password: &str,
        version: rusmpp::values::InterfaceVersion,
    ) {
        let request = match kind {
            BindKind::Transmitter => CommandId::BindTransmitter,
            BindKind::Receiver => CommandId::BindReceiver,
            BindKind::Transceiver => CommandId::BindTransceiver,
        };
        let version = CustomerVersion::of(version);
        let bind_type = match kind {
            BindKind::Transmitter => CustomerBindType::Transmitter,
            BindKind::Receiver => CustomerBindType::Receiver,
            BindKind::Transceiver => CustomerBindType::Transceiver,
        };
        match self.try_bind(system_id, password, bind_type).await {
            Err(why) => {
                self.count_bind_failure(why);
                tracing::info!(peer = %self.peer, system_id, bind_type = bind_type.as_str(), reason = why.as_str(), "customer bind refused");
                self.refuse(u32::from(request), seq, why.status());
            }
            Ok(mut b) => {
                let resp = pdu::bind_resp(kind, seq, &self.ctx.settings.system_id, version)
                    .expect("the system_id was checked at start");
                self.send(resp);
                let a = b.account.clone();
                self.ctx
                    .metrics
                    .customer_binds
                    .with_label_values(&[&a.system_id, bind_type.as_str()])
                    .inc();
                tracing::info!(peer = %self.peer, system_id = %a.system_id, bind_type = bind_type.as_str(), version = version.as_str(), slot = b.slot, "customer bound");
                if bind_type.receives() {
                    self.start_receipts(&mut b, version);
                }
                self.ctx.refresh_share(&a);
                self.state = State::Bound(Box::new(b));
            }
        }
    }

    async fn try_bind(
        &self,
        system_id: &str,
        password: &str,
        kind: CustomerBindType,
    ) -> Result<Bound, BindRefusal> {
        if self.ctx.stop_token().is_cancelled() {
            return Err(BindRefusal::ShuttingDown);
        }
        let account = self
            .ctx
            .auth
            .check(
                &self.ctx.accounts,
                self.peer.ip(),
                system_id,
                password.as_bytes(),
            )
            .await?;
        let remote = self.peer.to_string();
        let slot = match self
            .ctx
            .slots
            .claim(
                account.id,
                account.max_binds,
                kind,
                &remote,
                &self.slot_lost,
            )
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return Err(BindRefusal::BindLimit),
            Err(e) => {
                tracing::warn!(system_id, error = %e, "cannot claim a bind slot in PostgreSQL; bind refused with ESME_RSYSERR");
                return Err(BindRefusal::SystemError);
            }
        };
        let registration =
            self.ctx
                .bound
                .register(account.id, kind, self.peer.ip(), self.kick.clone());
        Ok(Bound {
            account,
            kind,
            slot,
            registration: Some(registration),
            link: None,
            consumer: None,
        })
    }

    /// Makes this session a carrier of the account's receipts and starts its consumer.
    fn start_receipts(&self, b: &mut Bound, version: CustomerVersion) {
        let link = Arc::new(Link::new(
            self.out.clone(),
            self.seq.clone(),
            self.ctx.settings.window,
            self.ctx.settings.response_timeout,
            version,
            self.ctx.metrics.clone(),
        ));
        if let Some(feed) = &self.ctx.receipts {
            let stop = CancellationToken::new();
            let handle = feed.consume(
                b.account.id,
                self.ctx.consumer_name(),
                link.clone(),
                stop.clone(),
            );
            b.consumer = Some((stop, handle));
        }
        b.link = Some(link);
    }

    /// Stops the receipts (their pending ones go back to the outbox for another session).
    async fn stop_receipts(&mut self) {
        let Some(b) = (match &mut self.state {
            State::Bound(b) | State::Unbinding(b) => Some(b),
            State::Open => None,
        }) else {
            return;
        };
        if let Some((stop, handle)) = b.consumer.take() {
            stop.cancel();
            if tokio::time::timeout(self.ctx.settings.unbind_timeout, handle)
                .await
                .is_err()
            {
                tracing::warn!(account = %b.account.system_id, "outbox consumer did not stop in time");
            }
        }
        if let Some(link) = &b.link {
            link.close();
        }
    }

    /// Waits (bounded) until no request of this session is in flight.
    async fn drain(&self) {
        let all = self.ctx.settings.window as u32;
        let _ = tokio::time::timeout(
            self.ctx.settings.unbind_timeout,
            self.inflight.acquire_many(all),
        )
        .await;
    }

    async fn peer_unbind(&mut self, seq: u32) -> End {
        self.stop_receipts().await;
        self.drain().await;
        self.send(pdu::unbind_resp(seq));
        End::PeerUnbound
    }

    /// Our unbind: requests in flight first, then unbind and its unbind_resp (bounded).
    async fn unbind(&mut self, stream: &mut Stream, end: End) -> End {
        let State::Bound(b) = std::mem::replace(&mut self.state, State::Open) else {
            return end;
        };
        self.state = State::Unbinding(b);
        self.stop_receipts().await;
        self.drain().await;
        self.send(pdu::unbind(next_seq(&self.seq)));
        let deadline = tokio::time::Instant::now() + self.ctx.settings.unbind_timeout;
        while let Ok(frame) = tokio::time::timeout_at(deadline, stream.next()).await {
            if let Step::End(_) = self.frame(frame).await {
                break;
            }
        }
        end
    }

    /// Gives back what the bind took: slot, registration, metrics.
    async fn finish(&mut self, end: End) {
        self.stop_receipts().await;
        let (State::Bound(mut b) | State::Unbinding(mut b)) =
            std::mem::replace(&mut self.state, State::Open)
        else {
            return;
        };
        let a = b.account.clone();
        self.ctx
            .metrics
            .customer_binds
            .with_label_values(&[&a.system_id, b.kind.as_str()])
            .dec();
        drop(b.registration.take());
        self.ctx.refresh_share(&a);
        self.ctx.release_slot(a.id, b.slot);
        tracing::info!(peer = %self.peer, system_id = %a.system_id, bind_type = b.kind.as_str(), reason = end.as_str(), "customer session closed");
    }
}

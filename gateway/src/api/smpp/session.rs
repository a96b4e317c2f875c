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

use chrono::Utc;
use futures::StreamExt;
use rusmpp::pdus::{SubmitMulti, SubmitSm};
use rusmpp::values::DestAddress;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use smpp_db::accounts::CustomerBindType;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::api::smpp::Ctx;
use crate::api::smpp::bound::{Kick, KickSignal, Registration};
use crate::api::smpp::link::{Link, next_seq};
use crate::api::smpp::requests::{self, Content, Prepared};
use crate::api::smpp::status::{self, BindRefusal};
use crate::fleet::accounts::CustomerAccount;
use crate::smpp::codec::{Codec, CodecError, Frame, Malformed};
use crate::smpp::connection::Transport;
use crate::smpp::pdu::{self, BindKind, CustomerVersion};
use crate::smpp::session::write_batches;

type Stream = futures::stream::SplitStream<Framed<Transport, Codec>>;

/// The state as far as which PDUs are valid goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Open,
    Tx,
    Rx,
    Trx,
    /// We sent unbind and wait for unbind_resp.
    Unbinding,
}

/// What to do with a PDU in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Handle,
    /// Answer with the request's own response and this status.
    Refuse(CommandStatus),
    /// Answer generic_nack with this status.
    Nack(CommandStatus),
    /// A response nobody waits for: nothing to answer.
    Ignore,
}

/// Which PDUs a state serves. Pure: the whole state machine's table.
pub fn admit(state: StateKind, id: CommandId) -> Admit {
    use CommandId as C;
    use StateKind as S;
    let bound = matches!(state, S::Tx | S::Rx | S::Trx);
    let transmits = matches!(state, S::Tx | S::Trx);
    let receives = matches!(state, S::Rx | S::Trx | S::Unbinding);
    match id {
        C::EnquireLink => Admit::Handle,
        C::BindTransmitter | C::BindReceiver | C::BindTransceiver => match state {
            S::Open => Admit::Handle,
            S::Unbinding => Admit::Refuse(CommandStatus::EsmeRinvbndsts),
            _ => Admit::Refuse(CommandStatus::EsmeRalybnd),
        },
        C::Unbind if bound || state == S::Unbinding => Admit::Handle,
        C::Unbind => Admit::Refuse(CommandStatus::EsmeRinvbndsts),
        C::SubmitSm | C::SubmitMulti | C::QuerySm | C::CancelSm if transmits => Admit::Handle,
        C::SubmitSm | C::SubmitMulti | C::QuerySm | C::CancelSm => {
            Admit::Refuse(CommandStatus::EsmeRinvbndsts)
        }
        C::DeliverSmResp | C::GenericNack if receives => Admit::Handle,
        C::UnbindResp if state == S::Unbinding => Admit::Handle,
        // Requests an SMSC serves that we do not (replace_sm, data_sm, broadcasts), and
        // those only an SMSC sends (deliver_sm, outbind, alert_notification) or unknown ids.
        id if u32::from(id) & 0x8000_0000 == 0 => Admit::Nack(CommandStatus::EsmeRinvcmdid),
        _ => Admit::Ignore,
    }
}

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

    fn count_submit(&self, account: &CustomerAccount, s: CommandStatus) {
        count_submit(&self.ctx, account, s);
    }

    fn submit_sm(&self, seq: u32, sm: &SubmitSm) {
        let request = u32::from(CommandId::SubmitSm);
        let Some(account) = self.account() else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            self.count_submit(&account, CommandStatus::EsmeRmsgqful);
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let content = Content::of_submit_sm(sm);
        let dest = sm.destination_addr.to_string();
        let p = match self.ctx.prepare(&account, &content, &dest) {
            Ok(p) => p,
            Err(s) => {
                self.count_submit(&account, s);
                return self.refuse(request, seq, s);
            }
        };
        let (ctx, out, nr) = (self.ctx.clone(), self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let cmd = match ctx.submit(&account, &p).await {
                Ok(id) => {
                    count_submit(&ctx, &account, CommandStatus::EsmeRok);
                    pdu::submit_sm_resp(seq, &id).unwrap_or_else(|_| {
                        pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr)
                    })
                }
                Err(s) => {
                    count_submit(&ctx, &account, s);
                    pdu::error_resp(request, seq, s)
                }
            };
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }

    fn submit_multi(&self, seq: u32, sm: &SubmitMulti) {
        let request = u32::from(CommandId::SubmitMulti);
        let Some(account) = self.account() else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            self.count_submit(&account, CommandStatus::EsmeRmsgqful);
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let content = Content::of_submit_multi(sm);
        // Each destination is a message of its own; those refused before sending are
        // unsuccess_smes at once.
        let mut unsuccess: Vec<(usize, String, CommandStatus)> = Vec::new();
        let mut ready: Vec<(usize, String, Prepared)> = Vec::new();
        for (i, d) in sm.dest_address().iter().enumerate() {
            let dest = match d {
                DestAddress::SmeAddress(a) => a.destination_addr.to_string(),
                DestAddress::DistributionListName(l) => {
                    // No distribution lists here.
                    unsuccess.push((i, l.dl_name.to_string(), CommandStatus::EsmeRinvdstadr));
                    continue;
                }
            };
            match self.ctx.prepare(&account, &content, &dest) {
                Ok(p) => ready.push((i, dest, p)),
                Err(s) => {
                    self.count_submit(&account, s);
                    unsuccess.push((i, dest, s));
                }
            }
        }
        let (ctx, out, nr) = (self.ctx.clone(), self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let sends = ready.iter().map(|(i, dest, p)| {
                let (ctx, account) = (&ctx, &account);
                async move { (*i, dest.clone(), ctx.submit(account, p).await) }
            });
            let mut first: Option<(usize, String)> = None;
            for (i, dest, r) in futures::future::join_all(sends).await {
                match r {
                    Ok(id) => {
                        count_submit(&ctx, &account, CommandStatus::EsmeRok);
                        if first.as_ref().is_none_or(|(j, _)| i < *j) {
                            first = Some((i, id));
                        }
                    }
                    Err(s) => {
                        count_submit(&ctx, &account, s);
                        unsuccess.push((i, dest, s));
                    }
                }
            }
            unsuccess.sort_by_key(|(i, _, _)| *i);
            let list: Vec<(String, CommandStatus)> =
                unsuccess.into_iter().map(|(_, d, s)| (d, s)).collect();
            // The message id is the first accepted destination's; none accepted: the first
            // refusal's status for the whole request.
            let (status, id) = match &first {
                Some((_, id)) => (CommandStatus::EsmeRok, id.as_str()),
                None => (
                    list.first()
                        .map_or(CommandStatus::EsmeRinvnumdests, |(_, s)| *s),
                    "",
                ),
            };
            let cmd = pdu::submit_multi_resp(seq, status, id, &list)
                .unwrap_or_else(|_| pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr));
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }

    fn query_sm(&self, seq: u32, message_id: String) {
        let request = u32::from(CommandId::QuerySm);
        let Some(account) = self.bound().map(|b| b.account.id) else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let Some(api) = self.ctx.messages.clone() else {
            return self.refuse(request, seq, CommandStatus::EsmeRsyserr);
        };
        let (out, nr) = (self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let cmd = match api.messenger.store.get(&message_id).await {
                // Another account's message (or an HTTP one) is answered as an unknown id.
                Ok(Some(m)) if requests::visible_to(&m, account) => {
                    let (state, date, err) = requests::query_answer(&m);
                    pdu::query_sm_resp(seq, &message_id, &date, state, err).unwrap_or_else(|_| {
                        pdu::error_resp(request, seq, CommandStatus::EsmeRqueryfail)
                    })
                }
                Ok(_) => pdu::error_resp(request, seq, CommandStatus::EsmeRqueryfail),
                Err(_) => pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr),
            };
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }
}

fn count_submit(ctx: &Ctx, account: &CustomerAccount, s: CommandStatus) {
    ctx.metrics
        .customer_submits
        .with_label_values(&[&account.system_id, status::outcome_label(s)])
        .inc();
    if s == CommandStatus::EsmeRthrottled {
        ctx.metrics
            .customer_throttled
            .with_label_values(&[&account.system_id])
            .inc();
    }
}

/// The answer to a prepared submit's message: our message id, or the status that refuses it.
pub(crate) type SubmitResult = Result<String, CommandStatus>;

impl Ctx {
    /// A destination's message, with the account's rate taken.
    fn prepare(
        &self,
        account: &CustomerAccount,
        content: &Content,
        dest: &str,
    ) -> Result<Prepared, CommandStatus> {
        let max_parts = self
            .messages
            .as_ref()
            .map_or(10, |m| m.messenger.limits.max_parts);
        let p = requests::prepare(account, content, dest, max_parts, Utc::now())?;
        if !self
            .rates
            .take(account.id, account.max_messages_per_second, p.parts)
        {
            return Err(CommandStatus::EsmeRthrottled);
        }
        Ok(p)
    }

    /// Sends a prepared message through the messaging core (here, or forwarded to the pod
    /// holding the vendor).
    async fn submit(&self, account: &CustomerAccount, p: &Prepared) -> SubmitResult {
        let Some(api) = &self.messages else {
            return Err(CommandStatus::EsmeRsyserr);
        };
        let hop = api.keys.hop_header().unwrap_or_default();
        match api
            .dispatch(&p.req, &p.extra, &account.route, &hop, false)
            .await
        {
            Ok(a) => Ok(a.id),
            Err(e) => {
                tracing::debug!(account = %account.system_id, error = %e, "customer submit not accepted");
                Err(status::submit_status(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandId as C;
    use StateKind as S;

    #[test]
    fn each_state_serves_only_its_pdus() {
        let refuse = Admit::Refuse(CommandStatus::EsmeRinvbndsts);
        // Open: bind and enquire_link only.
        assert_eq!(admit(S::Open, C::BindTransceiver), Admit::Handle);
        assert_eq!(admit(S::Open, C::EnquireLink), Admit::Handle);
        for id in [
            C::SubmitSm,
            C::SubmitMulti,
            C::QuerySm,
            C::CancelSm,
            C::Unbind,
        ] {
            assert_eq!(admit(S::Open, id), refuse, "{id:?} before a bind");
        }
        // A second bind.
        for s in [S::Tx, S::Rx, S::Trx] {
            assert_eq!(
                admit(s, C::BindTransmitter),
                Admit::Refuse(CommandStatus::EsmeRalybnd)
            );
            assert_eq!(admit(s, C::Unbind), Admit::Handle);
            assert_eq!(admit(s, C::EnquireLink), Admit::Handle);
        }
        // A receiver submits nothing; a transmitter gets no deliver_sm to answer.
        assert_eq!(admit(S::Rx, C::SubmitSm), refuse);
        assert_eq!(admit(S::Rx, C::DeliverSmResp), Admit::Handle);
        assert_eq!(admit(S::Tx, C::SubmitSm), Admit::Handle);
        assert_eq!(admit(S::Tx, C::DeliverSmResp), Admit::Ignore);
        assert_eq!(admit(S::Trx, C::QuerySm), Admit::Handle);
        // Unbinding: only the unbind exchange and late answers.
        assert_eq!(admit(S::Unbinding, C::UnbindResp), Admit::Handle);
        assert_eq!(admit(S::Unbinding, C::SubmitSm), refuse);
        assert_eq!(admit(S::Trx, C::UnbindResp), Admit::Ignore);
        // What an SMSC does not take from an ESME, and ids nobody knows.
        let nack = Admit::Nack(CommandStatus::EsmeRinvcmdid);
        assert_eq!(admit(S::Trx, C::DeliverSm), nack);
        assert_eq!(admit(S::Trx, C::DataSm), nack);
        assert_eq!(admit(S::Open, C::Other(0x0000_0099)), nack);
        assert_eq!(admit(S::Trx, C::Other(0x8000_0099)), Admit::Ignore);
        assert_eq!(admit(S::Trx, C::SubmitSmResp), Admit::Ignore);
    }
}

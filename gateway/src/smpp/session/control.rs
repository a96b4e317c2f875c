//! The control task: owns the read half and the in-flight map; answers the peer, keeps the
//! enquire_link schedule, expires requests, and unbinds gracefully.

use super::{
    Conn, DeliverReply, Observer, Out, Pending, Request, SubmitError, SubmitOutcome, Timeouts,
    Tunables, Window,
};
use crate::smpp::codec::{CodecError, Frame};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::smpp::diagnostics::{self, BindFailure, Stage};
use crate::smpp::pdu::{self};
use crate::smpp::trace::{Direction, Tracer};

pub(super) struct Control {
    pub(super) out: Out,
    pub(super) inflight: HashMap<u32, Pending>,
    /// (sent, seq) of the requests in flight in send order, answered ones dropped lazily: the
    /// oldest is at the front, so finding the next expiry is not a scan of the window per PDU.
    pub(super) order: VecDeque<(Instant, u32)>,
    pub(super) seq: u32,
    pub(super) vendor: Arc<str>,
    pub(super) tracer: Arc<Tracer>,
    pub(super) observer: Arc<dyn Observer>,
    pub(super) timeouts: Timeouts,
    /// Our outstanding enquire_link: sequence number and when it was sent.
    pub(super) enquire: Option<(u32, Instant)>,
    /// When we last sent an enquire_link (start of the session before the first).
    pub(super) last_enquire: Instant,
}

/// Requests taken from the queue per turn of the control loop at most.
const DRAIN: usize = 64;

enum Step {
    Continue,
    End(Result<(), BindFailure>),
}

impl Control {
    fn next_seq(&mut self) -> u32 {
        // Sequence numbers are 1..=0x7FFFFFFF; 1 was the bind.
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        self.seq
    }

    fn send(&self, cmd: Command) -> bool {
        self.out.send(Box::new(cmd)).is_ok()
    }

    pub(super) async fn run(
        mut self,
        mut stream: futures::stream::SplitStream<Conn>,
        mut req_rx: mpsc::Receiver<Request>,
        mut tun_rx: watch::Receiver<Tunables>,
        cancel: CancellationToken,
        window: Arc<Window>,
    ) -> Result<(), BindFailure> {
        let mut interval = tun_rx.borrow().enquire_interval;
        let timer = tokio::time::sleep(interval);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    window.close();
                    // Boxed: its state would otherwise be part of every idle session's task.
                    return Box::pin(self.unbind(&mut stream)).await;
                }
                frame = stream.next() => match self.incoming(frame) {
                    Step::Continue => {}
                    Step::End(r) => {
                        window.close();
                        self.fail_all();
                        return r;
                    }
                },
                Some(req) = req_rx.recv() => {
                    self.request(req);
                    // What else is queued goes now, into the same write batch, without a
                    // round of the select per request.
                    for _ in 1..DRAIN {
                        match req_rx.try_recv() {
                            Ok(req) => self.request(req),
                            Err(_) => break,
                        }
                    }
                }
                Ok(()) = tun_rx.changed() => {
                    interval = tun_rx.borrow().enquire_interval;
                }
                () = &mut timer => {
                    if let Some(r) = self.tick(interval) {
                        window.close();
                        self.fail_all();
                        return r;
                    }
                }
            }
            // One timer serves both our enquire_link schedule and the wait for its answer.
            let due = tokio::time::Instant::from_std(self.next_due(interval));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
        }
    }

    /// When the timer must fire next: the answer deadline of the outstanding enquire_link,
    /// else the next one's send time; or, when sooner, the expiry of the oldest request in
    /// flight, so an unanswered request gives its window slot back on time (not only at the
    /// next enquire_link, which may be many response timeouts away).
    fn next_due(&mut self, interval: Duration) -> Instant {
        let enquire = match self.enquire {
            Some((_, sent)) => sent + self.timeouts.enquire_response,
            None => self.last_enquire + interval,
        };
        let limit = self.timeouts.response;
        self.oldest_in_flight()
            .map_or(enquire, |sent| (sent + limit).min(enquire))
    }

    /// When the oldest request still in flight was sent; drops answered ones from the front.
    fn oldest_in_flight(&mut self) -> Option<Instant> {
        while let Some(&(sent, seq)) = self.order.front() {
            if self.inflight.get(&seq).is_some_and(|p| p.sent == sent) {
                return Some(sent);
            }
            self.order.pop_front();
        }
        None
    }

    /// Sends an enquire_link, or ends the session when the last one went unanswered. Also
    /// expires in-flight requests that waited longer than the response timeout.
    fn tick(&mut self, interval: Duration) -> Option<Result<(), BindFailure>> {
        if let Some((_, sent)) = self.enquire
            && sent.elapsed() >= self.timeouts.enquire_response
        {
            return Some(Err(diagnostics::enquire_link_timeout(
                self.timeouts.enquire_response.as_secs(),
            )));
        }
        let limit = self.timeouts.response;
        while let Some(sent) = self.oldest_in_flight()
            && sent.elapsed() >= limit
        {
            let (_, seq) = self.order.pop_front().expect("oldest_in_flight saw it");
            if let Some(p) = self.inflight.remove(&seq) {
                let _ = p.reply.send(Err(SubmitError::Timeout(limit)));
            }
        }
        // Idle (this runs at least every enquire interval): the room a burst took goes back.
        if self.inflight.is_empty() && self.order.capacity() > 64 {
            self.order = VecDeque::new();
        }
        if self.enquire.is_none() && self.last_enquire.elapsed() >= interval {
            let seq = self.next_seq();
            self.last_enquire = Instant::now();
            self.enquire = Some((seq, self.last_enquire));
            if !self.send(pdu::enquire_link(seq)) {
                return Some(Err(diagnostics::connection_lost("writer closed")));
            }
        }
        None
    }

    fn request(&mut self, req: Request) {
        match req {
            Request::Submit { msg, permit, reply } => {
                let seq = self.next_seq();
                match pdu::submit_sm(&msg, seq) {
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                    Ok(cmd) => {
                        let sent = Instant::now();
                        self.inflight.insert(
                            seq,
                            Pending {
                                reply,
                                sent,
                                _permit: permit,
                            },
                        );
                        self.order.push_back((sent, seq));
                        self.send(cmd);
                    }
                }
            }
        }
    }

    fn incoming(&mut self, frame: Option<Result<Frame, CodecError>>) -> Step {
        let cmd = match frame {
            None => return Step::End(Err(diagnostics::connection_lost("closed by the peer"))),
            Some(Err(CodecError::Io(e))) => {
                return Step::End(Err(diagnostics::connection_lost(&e.to_string())));
            }
            Some(Err(e)) => {
                return Step::End(Err(diagnostics::protocol_error(
                    Stage::Session,
                    format!("undecodable PDU: {e}"),
                )));
            }
            Some(Ok(Err(m))) => {
                self.malformed(m);
                return Step::Continue;
            }
            Some(Ok(Ok(c))) => c,
        };
        self.tracer.pdu(&self.vendor, Direction::In, &cmd);
        self.observer.pdu_in(cmd.id());
        let seq = cmd.sequence_number();
        match cmd.id() {
            CommandId::EnquireLink => {
                self.send(pdu::enquire_link_resp(seq));
            }
            CommandId::EnquireLinkResp => {
                if let Some((s, sent)) = self.enquire
                    && s == seq
                {
                    self.observer.enquire_link_rtt(sent.elapsed());
                    self.enquire = None;
                }
            }
            CommandId::DeliverSm => {
                self.observer
                    .deliver_sm(cmd, DeliverReply::new(seq, self.out.clone()));
            }
            CommandId::Unbind => {
                self.send(pdu::unbind_resp(seq));
                return Step::End(Err(diagnostics::peer_unbound()));
            }
            CommandId::SubmitSmResp | CommandId::GenericNack => {
                if let Some(p) = self.inflight.remove(&seq) {
                    let message_id = match cmd.pdu() {
                        Some(Pdu::SubmitSmResp(r)) => r.message_id().to_string(),
                        _ => String::new(),
                    };
                    let _ = p.reply.send(Ok(SubmitOutcome {
                        status: u32::from(cmd.status()),
                        message_id,
                    }));
                }
            }
            id if is_response(id) => {}
            _ => {
                // A request we do not serve (e.g. data_sm, alert_notification): say so.
                self.send(pdu::generic_nack(seq, CommandStatus::EsmeRinvcmdid));
            }
        }
        Step::Continue
    }

    /// A PDU whose body could not be decoded: answer it so the peer does not wait, and keep
    /// the session. A deliver_sm gets ESME_RINVTLVSTREAM (permanent: resending the same
    /// bytes cannot help); other requests get generic_nack; a response fails its request.
    fn malformed(&mut self, m: crate::smpp::codec::Malformed) {
        tracing::warn!(vendor = %self.vendor, command_id = format_args!("0x{:08X}", m.command_id), seq = m.sequence_number, error = %m.error, "undecodable PDU from the vendor; answered, session kept");
        let seq = m.sequence_number;
        if m.command_id == u32::from(CommandId::DeliverSm) {
            self.send(pdu::deliver_sm_resp(seq, CommandStatus::EsmeRinvtlvstream));
        } else if m.is_request() {
            self.send(pdu::generic_nack(seq, CommandStatus::EsmeRinvcmdlen));
        } else if let Some(p) = self.inflight.remove(&seq) {
            let _ = p.reply.send(Err(SubmitError::Malformed(m.error)));
        }
    }

    fn fail_all(&mut self) {
        self.order.clear();
        for (_, p) in self.inflight.drain() {
            let _ = p.reply.send(Err(SubmitError::Closed));
        }
    }

    /// Graceful unbind: in-flight responses first (bounded), then unbind/unbind_resp (bounded).
    async fn unbind(
        mut self,
        stream: &mut futures::stream::SplitStream<Conn>,
    ) -> Result<(), BindFailure> {
        let deadline = tokio::time::Instant::now() + self.timeouts.unbind;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(frame) => {
                    if let Step::End(_) = self.incoming(frame) {
                        self.fail_all();
                        return Ok(());
                    }
                }
                Err(_) => break,
            }
        }
        self.fail_all();
        let seq = self.next_seq();
        self.send(pdu::unbind(seq));
        let unbind_deadline = tokio::time::Instant::now() + self.timeouts.unbind;
        while let Ok(Some(Ok(Ok(cmd)))) =
            tokio::time::timeout_at(unbind_deadline, stream.next()).await
        {
            self.tracer.pdu(&self.vendor, Direction::In, &cmd);
            if cmd.id() == CommandId::UnbindResp {
                break;
            }
        }
        Ok(())
    }
}

fn is_response(id: CommandId) -> bool {
    u32::from(id) & 0x8000_0000 != 0
}

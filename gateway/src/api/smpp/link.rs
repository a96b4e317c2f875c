//! An RX/TRX customer session as the outbox sees it ([`CustomerLink`]): a receipt goes out as
//! deliver_sm on the session's writer queue, within the session's window, and its
//! deliver_sm_resp (or generic_nack, or the response timeout) is the answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusmpp::{Command, CommandStatus, Pdu};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::messaging::customer::{CustomerLink, CustomerReceipt, DeliverError};
use crate::metrics::Metrics;
use crate::smpp::pdu::CustomerVersion;
use crate::smpp::session::Window;

/// How a deliver_sm to a customer ended: the `outcome` label of
/// `smpp_customer_deliver_sm_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Timeout,
    Closed,
}

impl Outcome {
    pub fn of(r: &Result<(), DeliverError>) -> Self {
        match r {
            Ok(()) => Outcome::Ok,
            Err(DeliverError::Refused(_)) => Outcome::Refused,
            Err(DeliverError::Timeout(_)) => Outcome::Timeout,
            Err(DeliverError::Closed) => Outcome::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
        }
    }
}

/// An RX/TRX session as the outbox sees it: deliver_sm out, deliver_sm_resp back.
pub struct Link {
    out: mpsc::Sender<Box<Command>>,
    seq: Arc<AtomicU32>,
    pending: Mutex<HashMap<u32, oneshot::Sender<CommandStatus>>>,
    window: Window,
    closed: CancellationToken,
    timeout: Duration,
    version: CustomerVersion,
    metrics: Arc<Metrics>,
}

/// The next of our sequence numbers: 1..=0x7FFFFFFF.
pub(super) fn next_seq(seq: &AtomicU32) -> u32 {
    let n = seq.fetch_add(1, Ordering::Relaxed);
    (n % 0x7FFF_FFFF) + 1
}

impl Link {
    pub(super) fn new(
        out: mpsc::Sender<Box<Command>>,
        seq: Arc<AtomicU32>,
        window: usize,
        timeout: Duration,
        version: CustomerVersion,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            out,
            seq,
            pending: Mutex::default(),
            window: Window::new(window),
            closed: CancellationToken::new(),
            timeout,
            version,
            metrics,
        }
    }

    /// A deliver_sm_resp (or generic_nack) for `seq`; false when nobody waits for it.
    pub(super) fn complete(&self, seq: u32, status: CommandStatus) -> bool {
        let waiter = self.pending.lock().expect("pending").remove(&seq);
        waiter.is_some_and(|w| w.send(status).is_ok())
    }

    pub(super) fn close(&self) {
        self.closed.cancel();
        self.window.close();
        self.pending.lock().expect("pending").clear();
    }

    fn count(&self, outcome: Outcome) {
        self.metrics
            .customer_deliveries
            .with_label_values(&[outcome.as_str()])
            .inc();
    }
}

#[async_trait::async_trait]
impl CustomerLink for Link {
    async fn deliver(&self, receipt: &CustomerReceipt) -> Result<(), DeliverError> {
        let _slot = tokio::select! {
            _ = self.closed.cancelled() => return Err(DeliverError::Closed),
            p = self.window.acquire() => p.ok_or(DeliverError::Closed)?,
        };
        let seq = next_seq(&self.seq);
        let mut cmd = receipt.deliver_sm(seq).map_err(|e| {
            tracing::warn!(message = %receipt.message_id, error = %e, "a receipt cannot be put in a deliver_sm");
            DeliverError::Refused(u32::from(CommandStatus::EsmeRsyserr))
        })?;
        if !self.version.has_tlvs()
            && let Some(Pdu::DeliverSm(d)) = cmd.pdu()
        {
            // SMPP 3.3 has no TLVs: the receipt text alone.
            let mut d = d.clone();
            d.clear_tlvs();
            cmd.set_pdu(d);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(seq, tx);
        let sent = tokio::select! {
            _ = self.closed.cancelled() => false,
            r = self.out.send(Box::new(cmd)) => r.is_ok(),
        };
        if !sent {
            self.pending.lock().expect("pending").remove(&seq);
            self.count(Outcome::Closed);
            return Err(DeliverError::Closed);
        }
        let r = match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => {
                self.pending.lock().expect("pending").remove(&seq);
                Err(DeliverError::Timeout(self.timeout))
            }
            Ok(Err(_)) => Err(DeliverError::Closed),
            Ok(Ok(CommandStatus::EsmeRok)) => Ok(()),
            Ok(Ok(s)) => Err(DeliverError::Refused(u32::from(s))),
        };
        self.count(Outcome::of(&r));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_stay_in_range_and_wrap_to_one() {
        let seq = AtomicU32::new(0x7FFF_FFFE);
        assert_eq!(next_seq(&seq), 0x7FFF_FFFF);
        assert_eq!(next_seq(&seq), 1);
    }

    #[test]
    fn outcome_labels() {
        let all = [
            (Ok(()), "ok"),
            (Err(DeliverError::Refused(0x58)), "refused"),
            (
                Err(DeliverError::Timeout(Duration::from_secs(1))),
                "timeout",
            ),
            (Err(DeliverError::Closed), "closed"),
        ];
        for (r, label) in all {
            assert_eq!(Outcome::of(&r).as_str(), label);
        }
    }
}

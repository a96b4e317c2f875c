//! The pipelined ESME of the benchmarks and the receipt tally its loads wait on.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::raw;
/// Receipts that the binds of one load wait for together: a customer's receipts may come back
/// on any of its sessions, so no one bind knows when it has all of its own. Against the sink
/// each bind gets a tally of its own (they come back on the connection that submitted).
pub struct ReceiptTally {
    /// Receipts still expected: the submits, less those refused (they get none).
    target: AtomicU64,
    got: AtomicU64,
    /// ns since `epoch` of the last receipt, +1 (0: none yet).
    last: AtomicU64,
    epoch: Instant,
    done: tokio_util::sync::CancellationToken,
}

impl ReceiptTally {
    /// Expects one receipt for each of `submits`.
    pub fn new(submits: u64) -> Arc<Self> {
        let t = Arc::new(ReceiptTally {
            target: AtomicU64::new(submits),
            got: AtomicU64::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
            done: tokio_util::sync::CancellationToken::new(),
        });
        t.check();
        t
    }

    /// Receipts answered so far, on every bind sharing the tally.
    pub fn got(&self) -> u64 {
        self.got.load(Ordering::Relaxed)
    }

    /// Receipts expected now (the submits less those that will not have one).
    pub fn expected(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    /// When the last of them was read.
    pub fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + std::time::Duration::from_nanos(ns - 1)),
        }
    }

    fn received(&self, k: u64) {
        let ns = self.epoch.elapsed().as_nanos() as u64 + 1;
        self.last.fetch_max(ns, Ordering::Relaxed);
        self.got.fetch_add(k, Ordering::Relaxed);
        self.check();
    }

    /// `k` receipts will not come: submits refused, or receipts lost on the way (e.g. the
    /// gateway answered the sink's deliver_sm with an error, and the sink does not resend).
    pub fn expect_fewer(&self, k: u64) {
        self.target.fetch_sub(k, Ordering::Relaxed);
        self.check();
    }

    fn check(&self) {
        if self.is_done() {
            self.done.cancel();
        }
    }

    fn is_done(&self) -> bool {
        self.got.load(Ordering::Relaxed) >= self.target.load(Ordering::Relaxed)
    }
}

/// One load on a [`PipelinedSession`].
#[derive(Clone)]
pub struct Pipeline {
    /// submit_sm in flight at most.
    pub window: usize,
    /// submit_sm to send; the load ends when all are answered (and the receipts are in).
    pub n: u64,
    /// Paced: this many submit_sm per second from the first one; None: as fast as the window
    /// allows.
    pub rate: Option<f64>,
    /// Keep each submit's time to its submit_sm_resp; paced, from its scheduled send time, so
    /// a stall delays the clock of what queues behind it (no coordinated omission).
    pub latencies: bool,
    /// Wait until this tally has all its receipts (every deliver_sm is answered either way).
    pub receipts: Option<Arc<ReceiptTally>>,
    /// Give up then.
    pub deadline: Instant,
}

impl Pipeline {
    /// Unpaced, no latencies, no receipts awaited.
    pub fn new(window: usize, n: u64, deadline: Instant) -> Self {
        Pipeline {
            window,
            n,
            rate: None,
            latencies: false,
            receipts: None,
            deadline,
        }
    }

    /// When submit number `i` is due, the first being at `t0`.
    fn due(&self, t0: Instant, i: u64) -> Instant {
        match self.rate {
            Some(r) if r > 0.0 => t0 + std::time::Duration::from_secs_f64(i as f64 / r),
            _ => t0,
        }
    }
}

/// What one load on a pipelined session saw.
#[derive(Debug, Clone, Default)]
pub struct PipelinedRun {
    /// submit_sm answered (any status).
    pub submits: u64,
    /// … of them with a non-zero command_status, and the first such status.
    pub refused: u64,
    pub first_refusal: Option<u32>,
    /// deliver_sm read (and answered) on this bind.
    pub receipts: u64,
    /// From the first submit_sm written to the last submit_sm_resp read.
    pub submit_secs: f64,
    /// From the first submit_sm written to the last receipt read on this bind.
    pub receipt_secs: f64,
    /// When the first submit_sm was written and the last submit_sm_resp read.
    pub started: Option<Instant>,
    pub last_resp: Option<Instant>,
    /// ms per answered submit, when asked for.
    pub latencies_ms: Vec<f64>,
}

/// A pipelined ESME: binds to 127.0.0.1:`port`, keeps `window` submit_sm in flight until `n`
/// are answered, answers every receipt, waits for `n` receipts when `receipts` is set, and
/// unbinds. Gives up at `deadline`.
pub async fn pipelined_client(
    port: u16,
    window: usize,
    n: u64,
    receipts: bool,
    deadline: Instant,
) -> anyhow::Result<PipelinedRun> {
    let mut s = PipelinedSession::bind(port, "bench", "pw", deadline).await?;
    let run = s
        .run(&Pipeline {
            receipts: receipts.then(|| ReceiptTally::new(n)),
            ..Pipeline::new(window, n, deadline)
        })
        .await?;
    s.unbind(deadline).await?;
    Ok(run)
}

/// The pipelined ESME of the benchmarks (raw SMPP 3.4, TRX, TCP_NODELAY, everything queued
/// written at once), against the sink or against our own SMPP server. One bind carries any
/// number of loads, as a customer keeps its binds.
pub struct PipelinedSession {
    s: tokio::net::TcpStream,
    /// Read and not yet framed.
    r: Vec<u8>,
    chunk: Vec<u8>,
    seq: u32,
}

impl PipelinedSession {
    /// Connects and binds as TRX; an error when the bind is refused.
    pub async fn bind(
        port: u16,
        system_id: &str,
        password: &str,
        deadline: Instant,
    ) -> anyhow::Result<Self> {
        use anyhow::{Context as _, bail};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        s.set_nodelay(true)?;
        let mut w = Vec::new();
        raw::bind_transceiver(&mut w, 1, system_id, password);
        s.write_all(&w).await?;
        let mut me = PipelinedSession {
            s,
            r: Vec::with_capacity(64 * 1024),
            chunk: vec![0u8; 64 * 1024],
            seq: 2,
        };
        let until = tokio::time::Instant::from_std(deadline);
        loop {
            while let Some(f) = me.frame()? {
                if f.0 == raw::BIND_TRANSCEIVER | raw::RESP {
                    if f.1 != 0 {
                        bail!("bind as {system_id:?} refused: status {:#x}", f.1);
                    }
                    return Ok(me);
                }
            }
            let k = tokio::time::timeout_at(until, me.s.read(&mut me.chunk))
                .await
                .context("deadline: no bind_resp")??;
            if k == 0 {
                bail!("the peer closed the connection before bind_resp");
            }
            me.r.extend_from_slice(&me.chunk[..k]);
        }
    }

    /// (command_id, command_status) of the next whole PDU read, consumed.
    fn frame(&mut self) -> anyhow::Result<Option<(u32, u32)>> {
        let Some(f) = raw::frame(&self.r).map_err(|l| anyhow::anyhow!("bad PDU length {l}"))?
        else {
            return Ok(None);
        };
        let (id, status, len) = (f.id, f.status, f.len);
        self.r.drain(..len);
        Ok(Some((id, status)))
    }

    /// Runs one load to its end.
    pub async fn run(&mut self, p: &Pipeline) -> anyhow::Result<PipelinedRun> {
        use anyhow::{Context as _, bail};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = &mut self.s;
        let mut w = Vec::with_capacity(64 * 1024);
        let until = tokio::time::Instant::from_std(p.deadline);
        let (n, window) = (p.n, p.window as u64);
        let (mut sent, mut acked, mut got) = (0u64, 0u64, 0u64);
        let mut out = PipelinedRun::default();
        let t0 = Instant::now();
        let (mut t_sub, mut t_rec) = (t0, t0);
        // seq → when the submit was due (paced) or written.
        let mut inflight: HashMap<u32, Instant> = HashMap::new();
        let tally = p.receipts.clone();
        // What the bind left unread (a held receipt right after bind_resp) is handled first.
        let mut first = true;
        loop {
            let now = Instant::now();
            while sent < n && sent - acked < window && p.due(t0, sent) <= now {
                if p.latencies {
                    let at = if p.rate.is_some() {
                        p.due(t0, sent)
                    } else {
                        now
                    };
                    inflight.insert(self.seq, at);
                }
                raw::submit_sm(&mut w, self.seq, b"4912345", b"4915112345678", b"bench");
                self.seq = self.seq.wrapping_add(1).max(2);
                sent += 1;
            }
            if !w.is_empty() {
                s.write_all(&w).await?;
                w.clear();
            }
            let receipts_in = tally.as_ref().is_none_or(|t| t.is_done());
            if acked >= n && receipts_in {
                break;
            }
            // Paced with room in the window: wake for the next submit too.
            let next = (sent < n && sent - acked < window)
                .then(|| tokio::time::Instant::from_std(p.due(t0, sent)));
            if !std::mem::take(&mut first) {
                let k = tokio::select! {
                    k = tokio::time::timeout_at(until, s.read(&mut self.chunk)) => k.with_context(|| {
                        format!(
                            "deadline: {acked} of {n} answered, {got} receipts on this bind{}",
                            tally.as_ref().map(|t| format!(", {} in all", t.got())).unwrap_or_default()
                        )
                    })??,
                    _ = tokio::time::sleep_until(next.unwrap_or(until)), if next.is_some() => continue,
                    // Another bind read the last receipt: all answered here, nothing more to wait for.
                    _ = async { tally.as_ref().expect("guarded").done.cancelled().await },
                        if acked >= n && tally.is_some() => continue,
                };
                if k == 0 {
                    bail!(
                        "the peer closed the connection ({acked} of {n} answered, {got} receipts)"
                    );
                }
                self.r.extend_from_slice(&self.chunk[..k]);
            }
            let mut at = 0;
            let (mut receipts, mut refused) = (0u64, 0u64);
            while let Some(raw::Frame {
                id,
                status,
                seq: sq,
                len,
                ..
            }) =
                raw::frame(&self.r[at..]).map_err(|l| anyhow::anyhow!("bad PDU length {l}"))?
            {
                at += len;
                match id {
                    x if x == raw::SUBMIT_SM | raw::RESP => {
                        acked += 1;
                        t_sub = Instant::now();
                        if status != 0 {
                            refused += 1;
                            out.first_refusal.get_or_insert(status);
                        }
                        if let Some(at) = inflight.remove(&sq) {
                            out.latencies_ms
                                .push(t_sub.saturating_duration_since(at).as_secs_f64() * 1000.0);
                        }
                    }
                    raw::DELIVER_SM => {
                        receipts += 1;
                        t_rec = Instant::now();
                        raw::pdu(&mut w, raw::DELIVER_SM | raw::RESP, 0, sq, |b| {
                            raw::cstr(b, b"")
                        });
                    }
                    raw::ENQUIRE_LINK => raw::pdu(&mut w, id | raw::RESP, 0, sq, |_| {}),
                    _ => {}
                }
            }
            self.r.drain(..at);
            got += receipts;
            out.refused += refused;
            if let Some(t) = &tally {
                // Counted once answered: the deliver_sm_resp are on the wire first.
                if receipts > 0 {
                    s.write_all(&w).await?;
                    w.clear();
                    t.received(receipts);
                }
                if refused > 0 {
                    t.expect_fewer(refused);
                }
            }
        }
        out.submits = acked;
        out.receipts = got;
        out.submit_secs = t_sub.saturating_duration_since(t0).as_secs_f64();
        out.receipt_secs = t_rec.saturating_duration_since(t0).as_secs_f64();
        out.started = Some(t0);
        out.last_resp = (acked > 0).then_some(t_sub);
        Ok(out)
    }

    /// Unbinds and waits for unbind_resp (or the peer's close). A deliver_sm still arriving
    /// meanwhile is left unanswered: the peer takes it back, nothing is counted twice.
    pub async fn unbind(mut self, deadline: Instant) -> anyhow::Result<()> {
        use anyhow::Context as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut w = Vec::new();
        raw::pdu(&mut w, raw::UNBIND, 0, self.seq, |_| {});
        self.s.write_all(&w).await?;
        let until = tokio::time::Instant::from_std(deadline);
        loop {
            while let Some((id, _)) = self.frame()? {
                if id == raw::UNBIND | raw::RESP {
                    return Ok(());
                }
            }
            let k = tokio::time::timeout_at(until, self.s.read(&mut self.chunk))
                .await
                .context("deadline: no unbind_resp")??;
            if k == 0 {
                return Ok(());
            }
            self.r.extend_from_slice(&self.chunk[..k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ReceiptConfig, ReceiptSink};

    #[tokio::test]
    async fn sessions_carry_several_loads_and_share_a_tally() {
        let sink = ReceiptSink::start(ReceiptConfig {
            receipt_delay: Some(std::time::Duration::from_millis(1)),
        })
        .await
        .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut a = PipelinedSession::bind(sink.port(), "a", "pw", deadline)
            .await
            .unwrap();
        let mut b = PipelinedSession::bind(sink.port(), "b", "pw", deadline)
            .await
            .unwrap();
        // Two binds, one tally: done only when both have their receipts.
        let tally = ReceiptTally::new(200);
        let load = Pipeline {
            receipts: Some(tally.clone()),
            ..Pipeline::new(10, 100, deadline)
        };
        let (ra, rb) = tokio::join!(a.run(&load), b.run(&load));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!((ra.submits, rb.submits, ra.refused), (100, 100, 0));
        assert_eq!((tally.got(), tally.expected()), (200, 200));
        assert!(tally.last().is_some());
        // The same bind again, paced (200/s): one latency per submit, and it takes ~the pace.
        let paced = Pipeline {
            rate: Some(200.0),
            latencies: true,
            ..Pipeline::new(10, 20, deadline)
        };
        let t = Instant::now();
        let r = a.run(&paced).await.unwrap();
        assert_eq!(r.latencies_ms.len(), 20);
        assert!(
            t.elapsed() >= std::time::Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        a.unbind(deadline).await.unwrap();
        b.unbind(deadline).await.unwrap();
        let c = sink
            .wait_for(std::time::Duration::from_secs(5), |c| c.open_binds == 0)
            .await
            .expect("both unbound");
        assert_eq!((c.binds, c.submits), (2, 220));
        sink.stop();
    }

    #[test]
    fn a_tally_is_done_when_refusals_lower_its_target() {
        let t = ReceiptTally::new(3);
        t.received(2);
        assert!(!t.is_done());
        t.expect_fewer(1);
        assert!(t.is_done() && t.done.is_cancelled());
        assert!(ReceiptTally::new(0).is_done());
    }
}

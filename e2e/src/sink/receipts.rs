//! The messaging sink: pipelined submit_sm → submit_sm_resp, then a delivery receipt.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::raw;
use super::{SinkError, lock};

/// How the messaging sink answers.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptConfig {
    /// A DELIVRD receipt (deliver_sm) is sent this long after each submit_sm_resp when the
    /// submit asked for one (registered_delivery); None: never.
    pub receipt_delay: Option<std::time::Duration>,
}

/// A minimal SMPP 3.4 SMSC for the message benchmarks, written for throughput rather than on
/// smpp34 (whose session writes one PDU per syscall with Nagle on and spawns a task per
/// submit): any bind is accepted; every submit_sm is answered with a decimal message id; a
/// receipt follows after the configured delay, carrying the id in its text and in
/// receipted_message_id; enquire_link and unbind are answered. Each connection has one
/// reader and one writer; the writer sends everything queued since its last write in one
/// syscall (TCP_NODELAY on), so a window of answers costs one write, not one per PDU.
///
/// It counts what the benchmarks need: submits, receipts sent, deliver_sm_resp OK and not
/// OK (a gateway answers a receipt only once it has stored it, so "receipts acknowledged" is
/// "receipts stored"), and the time of the last of each.
pub struct ReceiptSink {
    port: u16,
    state: Arc<RState>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RState {
    binds: AtomicU64,
    open: AtomicU64,
    submits: AtomicU64,
    receipts_sent: AtomicU64,
    receipts_ok: AtomicU64,
    receipts_failed: AtomicU64,
    next_id: AtomicU64,
    /// ns since `epoch` of the last submit / OK deliver_sm_resp, +1 (0: none yet).
    last_submit: AtomicU64,
    last_receipt_ok: AtomicU64,
    epoch: Mutex<Option<Instant>>,
    conns: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The messaging sink's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiptCounts {
    pub binds: u64,
    pub open_binds: u64,
    pub submits: u64,
    pub receipts_sent: u64,
    /// deliver_sm_resp with status 0.
    pub receipts_ok: u64,
    /// deliver_sm_resp with an error status (not resent: the benchmark reports them).
    pub receipts_failed: u64,
    pub last_submit: Option<Instant>,
    pub last_receipt_ok: Option<Instant>,
}

impl RState {
    fn epoch(&self) -> Instant {
        *lock(&self.epoch).get_or_insert_with(Instant::now)
    }
    fn stamp(&self, at: &AtomicU64, epoch: Instant) {
        let ns = epoch.elapsed().as_nanos() as u64 + 1;
        at.fetch_max(ns, Ordering::Relaxed);
    }
    fn counts(&self) -> ReceiptCounts {
        let e = self.epoch();
        ReceiptCounts {
            binds: self.binds.load(Ordering::Relaxed),
            open_binds: self.open.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            receipts_sent: self.receipts_sent.load(Ordering::Relaxed),
            receipts_ok: self.receipts_ok.load(Ordering::Relaxed),
            receipts_failed: self.receipts_failed.load(Ordering::Relaxed),
            last_submit: self.when(&self.last_submit, e),
            last_receipt_ok: self.when(&self.last_receipt_ok, e),
        }
    }
    fn when(&self, at: &AtomicU64, epoch: Instant) -> Option<Instant> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(epoch + std::time::Duration::from_nanos(ns - 1)),
        }
    }
}

impl ReceiptSink {
    /// Listens on a free loopback port (the OS picks it: no probe race).
    pub async fn start(cfg: ReceiptConfig) -> Result<Self, SinkError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(SinkError::NoPort)?;
        let port = listener.local_addr().map_err(SinkError::NoPort)?.port();
        let state = Arc::new(RState::default());
        state.epoch();
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let h = tokio::spawn(serve_conn(stream, st.clone(), cfg));
                let mut conns = lock(&st.conns);
                conns.retain(|c| !c.is_finished());
                conns.push(h);
            }
        });
        Ok(ReceiptSink {
            port,
            state,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> ReceiptCounts {
        self.state.counts()
    }

    /// The counters, for a task of its own.
    pub fn counter(&self) -> impl Fn() -> ReceiptCounts + Send + Sync + 'static {
        let s = self.state.clone();
        move || s.counts()
    }

    /// Polls (every 5 ms) until `pred` holds on the counters, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        pred: impl Fn(&ReceiptCounts) -> bool,
    ) -> Option<ReceiptCounts> {
        let end = Instant::now() + timeout;
        loop {
            let c = self.counts();
            if pred(&c) {
                return Some(c);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting and closes every connection.
    pub fn stop(self) {
        self.accept.abort();
        for c in lock(&self.state.conns).drain(..) {
            c.abort();
        }
    }
}

impl Drop for RState {
    fn drop(&mut self) {
        for c in lock(&self.conns).drain(..) {
            c.abort();
        }
    }
}

/// What a connection's writer sends next, shared with its reader and receipt timer.
struct Outbox {
    buf: Mutex<Vec<u8>>,
    ready: tokio::sync::Notify,
    closing: std::sync::atomic::AtomicBool,
}

struct Due {
    at: tokio::time::Instant,
    id: u64,
    /// The submit's destination and source: the receipt comes from the handset.
    from: Vec<u8>,
    to: Vec<u8>,
}

async fn serve_conn(stream: tokio::net::TcpStream, st: Arc<RState>, cfg: ReceiptConfig) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let out = Arc::new(Outbox {
        buf: Mutex::new(Vec::with_capacity(64 * 1024)),
        ready: tokio::sync::Notify::new(),
        closing: std::sync::atomic::AtomicBool::new(false),
    });
    let seq = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let writer = {
        let out = out.clone();
        tokio::spawn(async move {
            let mut spare = Vec::with_capacity(64 * 1024);
            loop {
                std::mem::swap(&mut *lock(&out.buf), &mut spare);
                if spare.is_empty() {
                    if out.closing.load(Ordering::Relaxed) {
                        break;
                    }
                    out.ready.notified().await;
                    continue;
                }
                if wr.write_all(&spare).await.is_err() {
                    break;
                }
                spare.clear();
            }
            let _ = wr.shutdown().await;
        })
    };
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Due>();
    let timer = {
        let (out, st, seq) = (out.clone(), st.clone(), seq.clone());
        tokio::spawn(async move {
            let mut next = due_rx.recv().await;
            while let Some(d) = next.take() {
                tokio::time::sleep_until(d.at).await;
                let now = tokio::time::Instant::now();
                let mut sent = 0;
                {
                    let mut buf = lock(&out.buf);
                    let mut d = Some(d);
                    while let Some(r) = d.take() {
                        let s = seq.fetch_add(1, Ordering::Relaxed);
                        raw::receipt(&mut buf, s, &r.id.to_string(), &r.from, &r.to);
                        sent += 1;
                        match due_rx.try_recv() {
                            Ok(n) if n.at <= now => d = Some(n),
                            Ok(n) => next = Some(n),
                            Err(_) => {}
                        }
                    }
                }
                st.receipts_sent.fetch_add(sent, Ordering::Relaxed);
                out.ready.notify_one();
                if next.is_none() {
                    next = due_rx.recv().await;
                }
            }
        })
    };
    let epoch = st.epoch();
    let mut bound = false;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut submits = 0u64;
        let (mut ok, mut failed) = (0u64, 0u64);
        {
            let mut o = lock(&out.buf);
            loop {
                let raw::Frame {
                    id,
                    status,
                    seq: s,
                    body,
                    len,
                } = match raw::frame(&buf[at..]) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => break 'read,
                };
                at += len;
                match id {
                    raw::BIND_TRANSCEIVER | raw::BIND_TRANSMITTER | raw::BIND_RECEIVER => {
                        raw::pdu(&mut o, id | raw::RESP, 0, s, |b| {
                            raw::cstr(b, b"smppsink");
                            b.extend_from_slice(&[0x02, 0x10, 0, 1, 0x34]);
                        });
                        if !bound {
                            bound = true;
                            st.binds.fetch_add(1, Ordering::Relaxed);
                            st.open.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    raw::SUBMIT_SM => {
                        let msg_id = st.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                        let id_text = msg_id.to_string();
                        raw::pdu(&mut o, raw::SUBMIT_SM | raw::RESP, 0, s, |b| {
                            raw::cstr(b, id_text.as_bytes())
                        });
                        submits += 1;
                        if let (Some(delay), Some((src, dst, rd))) =
                            (cfg.receipt_delay, raw::submit_fields(body))
                            && rd & 0x03 != 0
                        {
                            let _ = due_tx.send(Due {
                                at: tokio::time::Instant::now() + delay,
                                id: msg_id,
                                from: dst.to_vec(),
                                to: src.to_vec(),
                            });
                        }
                    }
                    x if x == raw::DELIVER_SM | raw::RESP => {
                        if status == 0 {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    raw::ENQUIRE_LINK => raw::pdu(&mut o, id | raw::RESP, 0, s, |_| {}),
                    raw::UNBIND => {
                        raw::pdu(&mut o, id | raw::RESP, 0, s, |_| {});
                        out.closing.store(true, Ordering::Relaxed);
                        break;
                    }
                    x if x & raw::RESP != 0 => {}
                    _ => raw::pdu(&mut o, raw::GENERIC_NACK, raw::ESME_RINVCMDID, s, |_| {}),
                }
            }
        }
        out.ready.notify_one();
        buf.drain(..at);
        if submits > 0 {
            st.submits.fetch_add(submits, Ordering::Relaxed);
            st.stamp(&st.last_submit, epoch);
        }
        if ok > 0 {
            st.receipts_ok.fetch_add(ok, Ordering::Relaxed);
            st.stamp(&st.last_receipt_ok, epoch);
        }
        if failed > 0 {
            st.receipts_failed.fetch_add(failed, Ordering::Relaxed);
        }
        if out.closing.load(Ordering::Relaxed) {
            break;
        }
    }
    if bound {
        st.open.fetch_sub(1, Ordering::Relaxed);
    }
    timer.abort();
    out.closing.store(true, Ordering::Relaxed);
    out.ready.notify_one();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::pipelined_client;

    #[tokio::test]
    async fn receipt_sink_answers_pipelined_submits_with_receipts() {
        let sink = ReceiptSink::start(ReceiptConfig {
            receipt_delay: Some(std::time::Duration::from_millis(2)),
        })
        .await
        .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let run = pipelined_client(sink.port(), 10, 500, true, deadline)
            .await
            .unwrap();
        assert_eq!((run.submits, run.receipts), (500, 500));
        let c = sink
            .wait_for(std::time::Duration::from_secs(5), |c| c.receipts_ok == 500)
            .await
            .expect("every receipt acknowledged");
        assert_eq!((c.submits, c.receipts_sent, c.binds), (500, 500, 1));
        assert!(c.last_receipt_ok.is_some() && c.last_submit.is_some());
        sink.stop();
    }

    #[test]
    fn submit_fields_are_read_back() {
        let mut b = Vec::new();
        raw::submit_sm(&mut b, 7, b"4912345", b"4915112345678", b"hi");
        let f = raw::frame(&b).unwrap().unwrap();
        assert_eq!((f.id, f.seq, f.len), (raw::SUBMIT_SM, 7, b.len()));
        assert_eq!(
            raw::submit_fields(f.body),
            Some((&b"4912345"[..], &b"4915112345678"[..], 1))
        );
    }
}

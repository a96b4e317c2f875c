//! A compiled SMPP 3.4 sink for benchmarks, on the `smpp34` crate's server: it accepts binds
//! (any credentials, or only the configured ones), answers every submit_sm with a message id,
//! and records each bind it establishes: which credentials, on which of its ports, and when.
//!
//! The node simulator is too slow to take 1,000 binds at once; this one is not. It runs
//! in-process (the benchmark driver polls its counters directly) or as `smpp-bench sink`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use smpp34::{
    SmppConnectionInformation, SmppError, SmppServer, SmppServerListener, bind_receiver,
    bind_receiver_resp, bind_transceiver, bind_transceiver_resp, bind_transmitter,
    bind_transmitter_resp, submit_sm, submit_sm_resp,
};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink: no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
    #[error(
        "sink: cannot listen on 127.0.0.1:{port}: {reason} (port taken between probe and bind? retry)"
    )]
    Listen { port: u16, reason: String },
}

/// Which binds the sink accepts.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    /// Any system_id and password.
    #[default]
    Any,
    /// Only these system_id → password pairs; others get ESME_RINVPASWD / ESME_RINVSYSID.
    Only(HashMap<String, String>),
}

impl Credentials {
    /// Pure policy: the bind_resp status for these credentials.
    pub fn check(&self, system_id: &str, password: &str) -> Result<(), SmppError> {
        match self {
            Credentials::Any => Ok(()),
            Credentials::Only(map) => match map.get(system_id) {
                None => Err(SmppError::ESME_RINVSYSID),
                Some(p) if p != password => Err(SmppError::ESME_RINVPASWD),
                Some(_) => Ok(()),
            },
        }
    }
}

/// One bind the sink established (bind_resp OK sent, session running).
#[derive(Debug, Clone)]
pub struct BindRecord {
    pub system_id: String,
    pub password: String,
    /// The sink port the ESME connected to.
    pub port: u16,
    pub at: Instant,
    /// Still bound (no unbind, no disconnect since).
    pub open: bool,
}

/// Counters and the bind log, shared by every listener of one sink.
#[derive(Default)]
struct State {
    credentials: Credentials,
    /// session_id → the bind request's credentials, until the session is established.
    pending: Mutex<HashMap<String, (String, String, u16)>>,
    /// session_id → index into `binds`.
    sessions: Mutex<HashMap<String, usize>>,
    binds: Mutex<Vec<BindRecord>>,
    /// Woken on every established bind, so waiters need not poll.
    bound: tokio::sync::Notify,
    bind_requests: AtomicU64,
    bind_rejected: AtomicU64,
    submits: AtomicU64,
    message_ids: AtomicU64,
}

impl State {
    fn on_bind(
        &self,
        session: &str,
        system_id: &str,
        password: &str,
        c: &SmppConnectionInformation,
    ) -> Result<(), SmppError> {
        self.bind_requests.fetch_add(1, Ordering::Relaxed);
        let verdict = self.credentials.check(system_id, password);
        if verdict.is_ok() {
            let port = c.server_address.port();
            lock(&self.pending).insert(
                session.to_string(),
                (system_id.to_string(), password.to_string(), port),
            );
        } else {
            self.bind_rejected.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn on_bound(&self, session: &str) {
        let Some((system_id, password, port)) = lock(&self.pending).remove(session) else {
            return;
        };
        let mut binds = lock(&self.binds);
        binds.push(BindRecord {
            system_id,
            password,
            port,
            at: Instant::now(),
            open: true,
        });
        lock(&self.sessions).insert(session.to_string(), binds.len() - 1);
        drop(binds);
        self.bound.notify_waiters();
    }

    fn on_unbound(&self, session: &str) {
        lock(&self.pending).remove(session);
        if let Some(i) = lock(&self.sessions).remove(session) {
            lock(&self.binds)[i].open = false;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Listener(Arc<State>);

#[async_trait]
impl SmppServerListener for Listener {
    async fn on_bind_transmitter(
        &self,
        b: bind_transmitter,
        c: &SmppConnectionInformation,
        s: &String,
    ) -> bind_transmitter_resp {
        match self.0.on_bind(s, &b.system_id, &b.password, c) {
            Ok(()) => b.accept("smppsink".into(), Some(0x34)),
            Err(e) => b.reject(e),
        }
    }
    async fn on_bind_receiver(
        &self,
        b: bind_receiver,
        c: &SmppConnectionInformation,
        s: &String,
    ) -> bind_receiver_resp {
        match self.0.on_bind(s, &b.system_id, &b.password, c) {
            Ok(()) => b.accept("smppsink".into(), Some(0x34)),
            Err(e) => b.reject(e),
        }
    }
    async fn on_bind_transceiver(
        &self,
        b: bind_transceiver,
        c: &SmppConnectionInformation,
        s: &String,
    ) -> bind_transceiver_resp {
        match self.0.on_bind(s, &b.system_id, &b.password, c) {
            Ok(()) => b.accept("smppsink".into(), Some(0x34)),
            Err(e) => b.reject(e),
        }
    }
    async fn on_submit_sm(
        &self,
        sm: submit_sm,
        _c: &SmppConnectionInformation,
        _s: &String,
    ) -> submit_sm_resp {
        self.0.submits.fetch_add(1, Ordering::Relaxed);
        let id = self.0.message_ids.fetch_add(1, Ordering::Relaxed);
        sm.accept(format!("{id:x}"))
    }
    async fn on_esme_bound(&self, _esme: smpp34::server::ESME, s: &String) {
        self.0.on_bound(s);
    }
    async fn on_esme_unbound(&self, s: &String) {
        self.0.on_unbound(s);
        // smpp34 1.5.1 queues unbind_resp to the session's writer task, leaves its read loop,
        // calls this hook and then aborts the writer: the unbind_resp is usually lost, and
        // an ESME waiting for it (Kannel waits 30 s on shutdown) stalls. Holding the hook a
        // moment lets the writer put the queued unbind_resp on the wire first.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkCounts {
    pub bind_requests: u64,
    pub bind_rejected: u64,
    /// Binds established since start.
    pub binds: u64,
    /// Binds established and still open.
    pub open_binds: u64,
    pub submits: u64,
}

/// A running sink: one or more loopback ports sharing one set of counters.
pub struct Sink {
    servers: Vec<SmppServer>,
    ports: Vec<u16>,
    state: Arc<State>,
}

impl Sink {
    /// Starts `listeners` listeners on free loopback ports.
    pub async fn start(credentials: Credentials, listeners: usize) -> Result<Self, SinkError> {
        let state = Arc::new(State {
            credentials,
            ..State::default()
        });
        let mut sink = Sink {
            servers: Vec::new(),
            ports: Vec::new(),
            state,
        };
        for _ in 0..listeners.max(1) {
            let port = free_port().map_err(SinkError::NoPort)?;
            sink.listen(port).await?;
        }
        Ok(sink)
    }

    /// Adds a listener on `port` (0 is not allowed by smpp34: give a real port).
    pub async fn listen(&mut self, port: u16) -> Result<(), SinkError> {
        let handler = Arc::new(Listener(self.state.clone()));
        // Timers (ms): session init 5 s, enquire_link 30 s, inactivity 1 h (idle binds are
        // what the benchmarks hold), response 30 s; read buffer 64 KiB.
        let mut server = SmppServer::new_with_default_timers(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            handler,
            5_000,
            30_000,
            3_600_000,
            30_000,
            64 * 1024,
        );
        server.start().await;
        if !server.is_alive() {
            return Err(SinkError::Listen {
                port,
                reason: "smpp34 server did not start".into(),
            });
        }
        self.servers.push(server);
        self.ports.push(port);
        Ok(())
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn counts(&self) -> SinkCounts {
        let binds = lock(&self.state.binds);
        SinkCounts {
            bind_requests: self.state.bind_requests.load(Ordering::Relaxed),
            bind_rejected: self.state.bind_rejected.load(Ordering::Relaxed),
            binds: binds.len() as u64,
            open_binds: binds.iter().filter(|b| b.open).count() as u64,
            submits: self.state.submits.load(Ordering::Relaxed),
        }
    }

    /// When the first bind matching `pred` was established, if one was.
    pub fn first_bind(&self, pred: impl Fn(&BindRecord) -> bool) -> Option<Instant> {
        lock(&self.state.binds)
            .iter()
            .filter(|b| pred(b))
            .map(|b| b.at)
            .min()
    }

    /// Waits until `pred` holds on the sink (re-checked after every established bind), up to
    /// `timeout`; returns its value. The clock of a bind is the sink's own `BindRecord::at`.
    pub async fn wait_for<T>(
        &self,
        timeout: std::time::Duration,
        pred: impl Fn(&Sink) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woken = self.state.bound.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(v) = pred(self) {
                return Some(v);
            }
            // Unbinds do not notify: re-check at least every 50 ms.
            let tick =
                (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            if tokio::time::timeout_at(tick, woken).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return pred(self);
            }
        }
    }

    /// Number of distinct system_ids with an open bind.
    pub fn open_system_ids(&self) -> usize {
        let binds = lock(&self.state.binds);
        let mut ids: Vec<&str> = binds
            .iter()
            .filter(|b| b.open)
            .map(|b| b.system_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Open binds of one system_id.
    pub fn open_binds(&self, system_id: &str) -> usize {
        lock(&self.state.binds)
            .iter()
            .filter(|b| b.open && b.system_id == system_id)
            .count()
    }

    /// Stops accepting. Sessions already open end when their peer goes or the process exits.
    pub async fn stop(mut self) {
        for s in &mut self.servers {
            s.stop().await;
        }
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------------------------------------
// The messaging sink: pipelined submit_sm → submit_sm_resp, then a delivery receipt.
// ---------------------------------------------------------------------------------------------

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

/// Raw SMPP 3.4 PDUs: just what the messaging sink and its benchmark client use.
pub mod raw {
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const RESP: u32 = 0x8000_0000;
    pub const ESME_RINVCMDID: u32 = 0x0000_0003;

    /// Appends one PDU: header, then whatever `body` writes; patches command_length.
    pub fn pdu(out: &mut Vec<u8>, id: u32, status: u32, seq: u32, body: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&status.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        body(out);
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A C-Octet String.
    pub fn cstr(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s);
        out.push(0);
    }

    /// One PDU framed off the front of a buffer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Frame<'a> {
        pub id: u32,
        pub status: u32,
        pub seq: u32,
        pub body: &'a [u8],
        /// command_length: how much of the buffer it takes.
        pub len: usize,
    }

    /// The first whole PDU in `buf`; None while incomplete; Err(length) on a nonsense length.
    pub fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, u32> {
        if buf.len() < 16 {
            return Ok(None);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let len = word(0);
        if !(16..=65_536).contains(&len) {
            return Err(len);
        }
        let len = len as usize;
        if buf.len() < len {
            return Ok(None);
        }
        Ok(Some(Frame {
            id: word(4),
            status: word(8),
            seq: word(12),
            body: &buf[16..len],
            len,
        }))
    }

    /// Splits a C-Octet String off the front of `b`.
    pub fn take_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let nul = b.iter().position(|&c| c == 0)?;
        Some((&b[..nul], &b[nul + 1..]))
    }

    /// source_addr, destination_addr and registered_delivery of a submit_sm body.
    pub fn submit_fields(b: &[u8]) -> Option<(&[u8], &[u8], u8)> {
        let (_service_type, b) = take_cstr(b)?;
        let (src, b) = take_cstr(b.get(2..)?)?;
        let (dst, b) = take_cstr(b.get(2..)?)?;
        // esm_class, protocol_id, priority_flag, then two times.
        let (_sched, b) = take_cstr(b.get(3..)?)?;
        let (_validity, b) = take_cstr(b)?;
        Some((src, dst, *b.first()?))
    }

    /// A bind_transceiver (TRX, SMPP 3.4).
    pub fn bind_transceiver(out: &mut Vec<u8>, seq: u32, system_id: &str, password: &str) {
        pdu(out, BIND_TRANSCEIVER, 0, seq, |o| {
            cstr(o, system_id.as_bytes());
            cstr(o, password.as_bytes());
            cstr(o, b"");
            o.extend_from_slice(&[0x34, 0, 0]);
            cstr(o, b"");
        });
    }

    /// A submit_sm asking for a receipt.
    pub fn submit_sm(out: &mut Vec<u8>, seq: u32, src: &[u8], dst: &[u8], text: &[u8]) {
        pdu(out, SUBMIT_SM, 0, seq, |o| {
            cstr(o, b"");
            o.extend_from_slice(&[1, 1]);
            cstr(o, src);
            o.extend_from_slice(&[1, 1]);
            cstr(o, dst);
            o.extend_from_slice(&[0, 0, 0]);
            cstr(o, b"");
            cstr(o, b"");
            o.extend_from_slice(&[1, 0, 0, 0, text.len() as u8]);
            o.extend_from_slice(text);
        });
    }

    /// A DELIVRD receipt for `id`, from the handset `src` to the sender `dst`.
    pub fn receipt(out: &mut Vec<u8>, seq: u32, id: &str, src: &[u8], dst: &[u8]) {
        pdu(out, DELIVER_SM, 0, seq, |o| {
            cstr(o, b"");
            o.extend_from_slice(&[1, 1]);
            cstr(o, src);
            o.extend_from_slice(&[1, 1]);
            cstr(o, dst);
            // esm_class: SMSC delivery receipt; protocol_id, priority_flag.
            o.extend_from_slice(&[0x04, 0, 0]);
            cstr(o, b"");
            cstr(o, b"");
            let text = format!(
                "id:{id} sub:001 dlvrd:001 submit date:2501011200 done date:2501011200 stat:DELIVRD err:000 text:"
            );
            // registered_delivery, replace_if_present, data_coding, sm_default_msg_id, length.
            o.extend_from_slice(&[0, 0, 0, 0, text.len() as u8]);
            o.extend_from_slice(text.as_bytes());
            // receipted_message_id and message_state (DELIVERED).
            o.extend_from_slice(&0x001Eu16.to_be_bytes());
            o.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
            cstr(o, id.as_bytes());
            o.extend_from_slice(&0x0427u16.to_be_bytes());
            o.extend_from_slice(&1u16.to_be_bytes());
            o.push(2);
        });
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

    #[test]
    fn any_accepts_everything() {
        assert!(Credentials::Any.check("x", "y").is_ok());
    }

    #[test]
    fn only_names_the_wrong_part() {
        let c = Credentials::Only(HashMap::from([("esme".to_string(), "pw".to_string())]));
        assert!(c.check("esme", "pw").is_ok());
        assert!(matches!(
            c.check("esme", "nope"),
            Err(SmppError::ESME_RINVPASWD)
        ));
        assert!(matches!(
            c.check("other", "pw"),
            Err(SmppError::ESME_RINVSYSID)
        ));
    }

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

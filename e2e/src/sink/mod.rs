//! A compiled SMPP 3.4 sink for benchmarks, on the `smpp34` crate's server: it accepts binds
//! (any credentials, or only the configured ones), answers every submit_sm with a message id,
//! and records each bind it establishes: which credentials, on which of its ports, and when.
//!
//! The node simulator is too slow to take 1,000 binds at once; this one is not. It runs
//! in-process (the benchmark driver polls its counters directly) or as `smpp-bench sink`.
//!
//! Beside it: `receipts`, the messaging sink of the message benchmarks (raw SMPP, pipelined,
//! a receipt per submit); `raw`, the PDUs that sink and its client use; `pipelined`, the
//! benchmarks' pipelined ESME and the receipt tally its loads wait on.

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

mod pipelined;
pub mod raw;
mod receipts;

pub use pipelined::*;
pub use receipts::*;

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
}

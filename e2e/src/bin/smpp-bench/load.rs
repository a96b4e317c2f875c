//! The HTTP load generator of the message benchmarks, and the dlr-url counter Kannel calls.
//!
//! A compiled, minimal HTTP/1.1 client in this process rather than wrk: keep-alive
//! connections, each with one request in flight (as wrk does); a bound on the number of
//! requests as well as on the time (wrk only stops on time); an open-loop paced mode, so a
//! latency "at half of saturation" is measured at a rate and from each request's scheduled
//! send time (no coordinated omission; wrk cannot pace, wrk2 is not in Debian); and every
//! answer is judged (a 201 for one message, each entry of a batch answer), so failures are
//! counted, not mistaken for throughput. The same code drives the gateway and Kannel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Builds request `i` (the whole HTTP/1.1 request, bytes on the wire).
pub type MakeRequest = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;
/// Judges one answer: (messages accepted, messages refused).
pub type Judge = Arc<dyn Fn(u16, &[u8]) -> (u64, u64) + Send + Sync>;

/// One load: `total` requests over `conns` keep-alive connections to 127.0.0.1:`port`.
#[derive(Clone)]
pub struct Load {
    pub port: u16,
    pub conns: usize,
    pub total: u64,
    /// Requests per second, paced from the start; None: as fast as answers come (closed loop).
    pub rate: Option<f64>,
    /// Hard limit: requests not started by then are not sent.
    pub limit: Duration,
    pub make: MakeRequest,
    pub judge: Judge,
    /// Keep each request's latency.
    pub latencies: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub requests: u64,
    pub accepted: u64,
    pub refused: u64,
    /// From the start to the last answer read.
    pub secs: f64,
    /// Milliseconds, from the scheduled (paced) or actual (closed loop) send to the answer.
    pub latencies_ms: Vec<f64>,
    /// The first refused answer, for the report.
    pub first_refusal: Option<String>,
    /// The body of the last accepted answer (to GET its message afterwards).
    pub last_accepted: Option<Vec<u8>>,
    pub started: Option<Instant>,
}

impl Outcome {
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.secs.max(1e-9)
    }
}

#[derive(Default)]
struct ConnOut {
    requests: u64,
    accepted: u64,
    refused: u64,
    last: Option<Instant>,
    latencies_ms: Vec<f64>,
    first_refusal: Option<String>,
    last_accepted: Option<(Instant, Vec<u8>)>,
}

/// Runs the load; Err only when no connection could be made or every connection failed.
pub async fn run(load: Load) -> Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + load.limit;
    let mut tasks = Vec::new();
    for _ in 0..load.conns.max(1) {
        let (load, next) = (load.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            conn_loop(&load, &next, start, end).await
        }));
    }
    let mut out = Outcome {
        started: Some(start),
        ..Outcome::default()
    };
    let mut errors = Vec::new();
    let mut last = start;
    let mut last_body: Option<(Instant, Vec<u8>)> = None;
    for t in tasks {
        match t.await.context("load connection task")? {
            Ok(c) => {
                out.requests += c.requests;
                out.accepted += c.accepted;
                out.refused += c.refused;
                out.latencies_ms.extend(c.latencies_ms);
                if out.first_refusal.is_none() {
                    out.first_refusal = c.first_refusal;
                }
                if let Some(l) = c.last {
                    last = last.max(l);
                }
                if let Some((at, b)) = c.last_accepted
                    && last_body.as_ref().is_none_or(|(a, _)| at > *a)
                {
                    last_body = Some((at, b));
                }
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if out.requests == 0 && !errors.is_empty() {
        bail!("every load connection failed: {}", errors[0]);
    }
    if let Some(e) = errors.first() {
        out.first_refusal.get_or_insert_with(|| e.clone());
    }
    out.secs = last.saturating_duration_since(start).as_secs_f64();
    out.last_accepted = last_body.map(|(_, b)| b);
    Ok(out)
}

async fn connect(port: u16) -> Result<TcpStream> {
    let s = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .context("connect timed out")??;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn conn_loop(load: &Load, next: &AtomicU64, start: Instant, end: Instant) -> Result<ConnOut> {
    let mut out = ConnOut::default();
    let mut stream = connect(load.port).await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let until = tokio::time::Instant::from_std(end);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= load.total || Instant::now() >= end {
            break;
        }
        let sent_at = match load.rate {
            Some(r) => {
                let at = start + Duration::from_secs_f64(i as f64 / r);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                at
            }
            None => Instant::now(),
        };
        let req = (load.make)(i);
        stream.write_all(&req).await?;
        let (status, body, close) =
            match tokio::time::timeout_at(until, read_response(&mut stream, &mut buf)).await {
                Ok(r) => r?,
                Err(_) => break,
            };
        let now = Instant::now();
        out.requests += 1;
        out.last = Some(now);
        if load.latencies {
            out.latencies_ms
                .push(now.saturating_duration_since(sent_at).as_secs_f64() * 1000.0);
        }
        let (ok, bad) = (load.judge)(status, &body);
        out.accepted += ok;
        out.refused += bad;
        if bad > 0 && out.first_refusal.is_none() {
            out.first_refusal = Some(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        if ok > 0 {
            out.last_accepted = Some((now, body));
        }
        if close {
            stream = connect(load.port).await?;
            buf.clear();
        }
    }
    Ok(out)
}

/// Reads one response: (status, body, the server closes the connection after it).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, Vec<u8>, bool)> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(h) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..h]).context("response head is not UTF-8")?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("no status in the response")?;
            let mut len = None;
            let mut close = head.starts_with("HTTP/1.0");
            for line in head.lines().skip(1) {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked answers are not supported by this load generator");
                }
            }
            let len = len.unwrap_or(0);
            let total = h + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("the server closed the connection mid-answer");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[h + 4..total].to_vec();
            buf.drain(..total);
            return Ok((status, body, close));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection before answering");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A POST with a JSON body.
pub fn post(path: &str, bearer: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A GET.
pub fn get(path_and_query: &str) -> Vec<u8> {
    format!("GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut o = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A tiny keep-alive HTTP server that answers 200 to anything and counts requests whose
/// target contains `marker` (Kannel's dlr-url calls with type=1, delivered).
pub struct Counter {
    pub port: u16,
    state: Arc<CounterState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct CounterState {
    hits: AtomicU64,
    /// ns since `epoch` + 1 of the last hit.
    last: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    conns: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Counter {
    pub async fn start(marker: &'static str) -> Result<Self> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let state = Arc::new(CounterState::default());
        state.epoch.get_or_init(Instant::now);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let st2 = st.clone();
                let h = tokio::spawn(async move {
                    let _ = serve_counter(s, &st2, marker).await;
                });
                let mut c = st.conns.lock().unwrap_or_else(|p| p.into_inner());
                c.retain(|h| !h.is_finished());
                c.push(h);
            }
        });
        Ok(Counter { port, state, task })
    }

    /// (hits, time of the last hit).
    pub fn hits(&self) -> (u64, Option<Instant>) {
        let e = *self.state.epoch.get().expect("set at start");
        let last = match self.state.last.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(e + Duration::from_nanos(ns - 1)),
        };
        (self.state.hits.load(Ordering::Relaxed), last)
    }

    pub fn stop(self) {
        self.task.abort();
        for c in self
            .state
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }
}

async fn serve_counter(mut s: TcpStream, st: &CounterState, marker: &str) -> Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let epoch = *st.epoch.get().expect("set at start");
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut answers = 0;
        while let Some(h) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).to_string();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() < h + 4 + len {
                break;
            }
            buf.drain(..h + 4 + len);
            if head.lines().next().is_some_and(|l| l.contains(marker)) {
                st.hits.fetch_add(1, Ordering::Relaxed);
                let ns = epoch.elapsed().as_nanos() as u64 + 1;
                st.last.fetch_max(ns, Ordering::Relaxed);
            }
            answers += 1;
        }
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut w = Vec::with_capacity(one.len() * answers);
        for _ in 0..answers {
            w.extend_from_slice(one);
        }
        if !w.is_empty() {
            s.write_all(&w).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_keeps_unreserved() {
        assert_eq!(
            urlencode("http://a/b?x=1&t=%d"),
            "http%3A%2F%2Fa%2Fb%3Fx%3D1%26t%3D%25d"
        );
    }

    #[tokio::test]
    async fn counter_counts_keep_alive_requests_and_load_reads_them() {
        let c = Counter::start("type=1").await.unwrap();
        let out = run(Load {
            port: c.port,
            conns: 2,
            total: 20,
            rate: None,
            limit: Duration::from_secs(5),
            make: Arc::new(|i| get(&format!("/dlr?type={}", 1 + i % 2))),
            judge: Arc::new(|s, _| if s == 200 { (1, 0) } else { (0, 1) }),
            latencies: true,
        })
        .await
        .unwrap();
        assert_eq!((out.requests, out.accepted, out.refused), (20, 20, 0));
        assert_eq!(out.latencies_ms.len(), 20);
        assert_eq!(c.hits().0, 10);
        c.stop();
    }
}

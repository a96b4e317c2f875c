//! HTTP callbacks: message status changes (to the message's `callback_url`) and mobile-originated
//! messages (to `--mo-url`), signed with HMAC-SHA256, retried with capped exponential backoff a
//! bounded number of times and counted in `smpp_callbacks_total{kind,outcome}`.
//!
//! Memory is bounded: [`Callbacks::post`] never blocks and puts the callback on a queue of fixed
//! size; at most `concurrency` callbacks are in flight (a callback waiting between attempts keeps
//! its slot). When the queue is full the callback is dropped, counted as `dropped` and logged
//! (host only). No secret configured: callbacks are sent unsigned, without [`SIGNATURE_HEADER`].
//!
//! Log lines name the URL's host and the HTTP status, never the body, the full URL (it may carry
//! a token in its query) or the secret. The wire format is described in `docs/callbacks.md`.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signature: `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Smpp-Signature";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a [`SIGNATURE_HEADER`] value against `body`: the timestamp must be within
/// `tolerance_secs` of `now` (either side) and one of its `v1` signatures must match, compared
/// in constant time. Unknown fields are ignored; anything malformed is `false`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t: Option<i64> = None;
    let mut sigs: Vec<&str> = Vec::new();
    for field in header.split(',') {
        match field.trim().split_once('=') {
            Some(("t", v)) => match v.parse::<i64>() {
                Ok(v) if t.is_none() => t = Some(v),
                _ => return false,
            },
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance_secs.max(0) as u64 {
        return false;
    }
    let mut ok = false;
    for sig in sigs {
        let Ok(raw) = hex::decode(sig) else { continue };
        // `verify_slice` compares in constant time.
        ok |= mac(secret, t, body).verify_slice(&raw).is_ok();
    }
    ok
}

/// What a callback reports; the `kind` label of `smpp_callbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message's status changed; sent to its `callback_url`.
    Status,
    /// A mobile-originated message; sent to `--mo-url`.
    Mo,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Mo => "mo",
        }
    }
}

/// The `outcome` label of `smpp_callbacks_total`. `Retried` is counted once per failed attempt
/// that is followed by another; `Delivered`, `Failed` and `Dropped` once per callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retried,
    Failed,
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// How often and how patiently a callback is attempted.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (0 is taken as 1).
    pub max_attempts: u32,
    /// Ceiling of the first delay; it doubles for each further retry.
    pub initial: Duration,
    /// Cap of the delay ceiling.
    pub max: Duration,
    /// Timeout of one attempt (connect, send and response headers).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0 = after the first attempt), given a uniform draw
    /// `unit` in [0, 1): between half and all of `min(max, initial · 2^retry)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let ceil = self.initial.saturating_mul(factor).min(self.max);
        ceil.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Connect error, timeout, other transport error, 5xx or 429.
    Transient,
    /// Any other status (4xx, or a 1xx/3xx left after the client's redirect policy), or a
    /// request that cannot be built.
    Permanent,
}

fn classify_status(status: reqwest::StatusCode) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Attempt::Transient
    } else {
        Attempt::Permanent
    }
}

struct Job {
    kind: Kind,
    url: reqwest::Url,
    body: bytes::Bytes,
}

struct Inner {
    client: reqwest::Client,
    secret: Option<Arc<[u8]>>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Inner {
    fn count(&self, kind: Kind, outcome: Outcome) {
        self.metrics
            .callbacks
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .inc();
    }

    async fn attempt(&self, job: &Job) -> (Attempt, Option<u16>) {
        let mut req = self
            .client
            .post(job.url.clone())
            .timeout(self.policy.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(job.body.clone());
        if let Some(secret) = &self.secret {
            // Signed afresh for each attempt, so that a late retry is not refused as stale.
            let now = chrono::Utc::now().timestamp();
            req = req.header(SIGNATURE_HEADER, sign(secret, now, &job.body));
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                (classify_status(status), Some(status.as_u16()))
            }
            Err(e) if e.is_builder() => (Attempt::Permanent, None),
            Err(_) => (Attempt::Transient, None),
        }
    }

    async fn deliver(&self, job: Job) {
        let host = job.url.host_str().unwrap_or("").to_owned();
        let kind = job.kind.as_str();
        let attempts = self.policy.max_attempts.max(1);
        for n in 1..=attempts {
            let (result, status) = self.attempt(&job).await;
            match result {
                Attempt::Delivered => {
                    self.count(job.kind, Outcome::Delivered);
                    tracing::debug!(kind, host, status, attempt = n, "callback delivered");
                    return;
                }
                Attempt::Permanent => {
                    self.count(job.kind, Outcome::Failed);
                    tracing::warn!(
                        kind,
                        host,
                        status,
                        attempt = n,
                        "callback refused, not retried"
                    );
                    return;
                }
                Attempt::Transient if n == attempts => {
                    self.count(job.kind, Outcome::Failed);
                    tracing::warn!(
                        kind,
                        host,
                        status,
                        attempts,
                        "callback failed, attempts exhausted"
                    );
                    return;
                }
                Attempt::Transient => {
                    self.count(job.kind, Outcome::Retried);
                    let delay = self.policy.delay(n - 1, rand::random::<f64>());
                    tracing::debug!(
                        kind,
                        host,
                        status,
                        attempt = n,
                        delay_ms = delay.as_millis() as u64,
                        "callback attempt failed, will retry"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Handle to the callback sender; cheap to clone. The sender stops once every handle is dropped
/// and the callbacks already taken have finished.
#[derive(Clone)]
pub struct Callbacks {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Callbacks {
    /// Starts the sender on the current tokio runtime (must be called inside one). `secret`
    /// `None` sends callbacks unsigned. `queue` and `concurrency` are taken as at least 1.
    pub fn start(
        client: reqwest::Client,
        secret: Option<Arc<[u8]>>,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
        queue: usize,
        concurrency: usize,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let inner = Arc::new(Inner {
            client,
            secret,
            policy,
            metrics: metrics.clone(),
        });
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        tokio::spawn(async move {
            loop {
                // Take a slot before a job, so that waiting jobs stay in the bounded queue.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(job) = rx.recv().await else { return };
                let inner = inner.clone();
                tokio::spawn(async move {
                    inner.deliver(job).await;
                    drop(slot);
                });
            }
        });
        Self { tx, metrics }
    }

    /// Queues a callback of `body` (serialised as JSON) to `url`. Never blocks: a full queue
    /// drops the callback (`dropped`); a URL that does not parse as http(s) is `failed` at once.
    pub fn post(&self, kind: Kind, url: String, body: serde_json::Value) {
        let count = |outcome: Outcome| {
            self.metrics
                .callbacks
                .with_label_values(&[kind.as_str(), outcome.as_str()])
                .inc();
        };
        let url = match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                count(Outcome::Failed);
                tracing::warn!(
                    kind = kind.as_str(),
                    "callback URL is not an http(s) URL, not sent"
                );
                return;
            }
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => {
                count(Outcome::Failed);
                tracing::warn!(
                    kind = kind.as_str(),
                    host = url.host_str().unwrap_or(""),
                    "callback body cannot be serialised, not sent"
                );
                return;
            }
        };
        if let Err(e) = self.tx.try_send(Job { kind, url, body }) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            count(Outcome::Dropped);
            tracing::warn!(
                kind = kind.as_str(),
                host = job.url.host_str().unwrap_or(""),
                "callback queue full, callback dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use warp::Filter;

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn sign_verify_round_trip() {
        let body = br#"{"id":"m1","status":"delivered"}"#;
        let h = sign(SECRET, 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify(SECRET, &h, body, 1_700_000_000, 300));
        assert!(verify(SECRET, &h, body, 1_700_000_299, 300));
        assert!(verify(SECRET, &h, body, 1_699_999_701, 300));
    }

    #[test]
    fn known_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
        //   b"1700000000.{\"id\":\"m1\",\"status\":\"delivered\"}", hashlib.sha256).hexdigest())'
        let body = br#"{"id":"m1","status":"delivered"}"#;
        assert_eq!(
            sign(SECRET, 1_700_000_000, body),
            "t=1700000000,v1=06be301d39e4219dc4d5a408405623e1f9c288b023e4d42588aa88b0a36eecff"
        );
    }

    #[test]
    fn tampering_and_staleness_fail() {
        let body = br#"{"id":"m1","status":"delivered"}"#;
        let h = sign(SECRET, 1_700_000_000, body);
        let now = 1_700_000_000;
        assert!(!verify(
            SECRET,
            &h,
            br#"{"id":"m2","status":"delivered"}"#,
            now,
            300
        ));
        assert!(!verify(b"other", &h, body, now, 300));
        assert!(!verify(SECRET, &h, body, now + 301, 300));
        assert!(!verify(SECRET, &h, body, now - 301, 300));
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = h.replace("t=1700000000", "t=1700000100");
        assert!(!verify(SECRET, &moved, body, now + 100, 300));
        for bad in [
            "",
            "v1=00",
            "t=1700000000",
            "t=x,v1=00",
            "t=1700000000,v1=zz",
            "t=1700000000,t=1700000000,v1=00",
        ] {
            assert!(!verify(SECRET, bad, body, now, 300), "{bad:?}");
        }
        // Extra fields and a second (rotated) signature are accepted.
        let rotated = format!("t=1700000000,v1=00ff,{}", &h["t=1700000000,".len()..]);
        assert!(verify(SECRET, &rotated, body, now, 300));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, 0.999_999).as_millis(), 999);
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(5, 0.0), Duration::from_secs(16));
        assert_eq!(p.delay(6, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(400, 1.0), Duration::from_secs(60));
        for r in 0..10 {
            let d = p.delay(r, rand::random::<f64>());
            assert!(d <= p.max && d >= p.delay(r, 0.0));
        }
    }

    #[test]
    fn status_classes() {
        use reqwest::StatusCode as S;
        assert_eq!(classify_status(S::OK), Attempt::Delivered);
        assert_eq!(classify_status(S::NO_CONTENT), Attempt::Delivered);
        assert_eq!(
            classify_status(S::INTERNAL_SERVER_ERROR),
            Attempt::Transient
        );
        assert_eq!(classify_status(S::SERVICE_UNAVAILABLE), Attempt::Transient);
        assert_eq!(classify_status(S::TOO_MANY_REQUESTS), Attempt::Transient);
        assert_eq!(classify_status(S::BAD_REQUEST), Attempt::Permanent);
        assert_eq!(classify_status(S::NOT_FOUND), Attempt::Permanent);
        assert_eq!(classify_status(S::FOUND), Attempt::Permanent);
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            timeout: Duration::from_secs(5),
        }
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn counted(m: &Metrics, kind: Kind, outcome: Outcome) -> u64 {
        m.callbacks
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .get()
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    type Seen = Arc<Mutex<Vec<(Option<String>, bytes::Bytes)>>>;

    /// An HTTP server on 127.0.0.1 answering the n-th request (from 0) with `status(n)`,
    /// recording the signature header and the body of each.
    async fn server(status: fn(usize) -> u16) -> (String, Arc<AtomicUsize>, Seen) {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Seen = Arc::default();
        let (h, s) = (hits.clone(), seen.clone());
        let route = warp::post()
            .and(warp::path("cb"))
            .and(warp::header::optional::<String>(SIGNATURE_HEADER))
            .and(warp::body::bytes())
            .map(move |sig: Option<String>, body: bytes::Bytes| {
                s.lock().unwrap().push((sig, body));
                let n = h.fetch_add(1, Ordering::SeqCst);
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status(n)).unwrap())
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (format!("http://{addr}/cb"), hits, seen)
    }

    #[tokio::test]
    async fn retried_after_500_then_delivered_signed() {
        let (url, hits, seen) = server(|n| if n == 0 { 500 } else { 200 }).await;
        let metrics = Arc::new(Metrics::new());
        let cb = Callbacks::start(
            client(),
            Some(Arc::from(SECRET)),
            fast(),
            metrics.clone(),
            16,
            4,
        );
        let body = serde_json::json!({"id": "m1", "status": "delivered", "parts": 1});
        cb.post(Kind::Status, url, body.clone());
        until("delivered", || {
            counted(&metrics, Kind::Status, Outcome::Delivered) == 1
        })
        .await;
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(counted(&metrics, Kind::Status, Outcome::Retried), 1);
        assert_eq!(counted(&metrics, Kind::Status, Outcome::Failed), 0);
        let seen = seen.lock().unwrap();
        let now = chrono::Utc::now().timestamp();
        for (sig, raw) in seen.iter() {
            let sig = sig.as_deref().expect("signed");
            assert!(verify(SECRET, sig, raw, now, 60), "{sig}");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(raw).unwrap(),
                body
            );
        }
        assert!(
            metrics
                .render()
                .contains(r#"smpp_callbacks_total{kind="status",outcome="delivered"} 1"#)
        );
    }

    #[tokio::test]
    async fn client_error_is_not_retried_and_unsigned_without_secret() {
        let (url, hits, seen) = server(|_| 400).await;
        let metrics = Arc::new(Metrics::new());
        let cb = Callbacks::start(client(), None, fast(), metrics.clone(), 16, 4);
        cb.post(Kind::Mo, url, serde_json::json!({"from": "1", "to": "2"}));
        until("failed", || {
            counted(&metrics, Kind::Mo, Outcome::Failed) == 1
        })
        .await;
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(counted(&metrics, Kind::Mo, Outcome::Retried), 0);
        assert_eq!(counted(&metrics, Kind::Mo, Outcome::Delivered), 0);
        assert_eq!(seen.lock().unwrap()[0].0, None);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let (url, hits, _) = server(|_| 503).await;
        let metrics = Arc::new(Metrics::new());
        let cb = Callbacks::start(client(), None, fast(), metrics.clone(), 16, 4);
        cb.post(Kind::Status, url, serde_json::json!({}));
        until("failed", || {
            counted(&metrics, Kind::Status, Outcome::Failed) == 1
        })
        .await;
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        assert_eq!(counted(&metrics, Kind::Status, Outcome::Retried), 3);
    }

    #[tokio::test]
    async fn full_queue_drops() {
        // A peer that accepts connections and never answers: callbacks stay in flight.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let metrics = Arc::new(Metrics::new());
        let policy = RetryPolicy {
            timeout: Duration::from_secs(30),
            ..fast()
        };
        let cb = Callbacks::start(client(), None, policy, metrics.clone(), 1, 1);
        for _ in 0..10 {
            cb.post(Kind::Mo, format!("http://{addr}/mo"), serde_json::json!({}));
        }
        // At most one in flight and one queued; the first always finds the queue empty.
        let dropped = counted(&metrics, Kind::Mo, Outcome::Dropped);
        assert!((8..=9).contains(&dropped), "dropped {dropped}");
    }

    #[tokio::test]
    async fn bad_url_fails_at_once() {
        let metrics = Arc::new(Metrics::new());
        let cb = Callbacks::start(client(), None, fast(), metrics.clone(), 1, 1);
        cb.post(Kind::Status, "not a url".into(), serde_json::json!({}));
        cb.post(
            Kind::Status,
            "ftp://example.com/x".into(),
            serde_json::json!({}),
        );
        assert_eq!(counted(&metrics, Kind::Status, Outcome::Failed), 2);
    }
}

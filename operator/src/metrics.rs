//! Prometheus metrics and the /health, /ready, /metrics listener.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use warp::Filter;
use warp::http::StatusCode;

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    pub drift_reverted: IntCounter,
    pub leader: IntGauge,
    /// Set once the schema is migrated and the SmppVendor API answers.
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "smpp_operator_reconciles_total",
                "Reconciles by result (ok, error)",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "smpp_operator_reconcile_errors_total",
                "Failed reconciles by reason",
            ),
            &["reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "smpp_operator_reconcile_duration_seconds",
                "Reconcile duration",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["action"],
        )?;
        let drift_reverted = IntCounter::new(
            "smpp_operator_drift_reverted_total",
            "Hand edits of operator-owned rows that were reverted",
        )?;
        let leader = IntGauge::new(
            "smpp_operator_leader",
            "1 while this replica holds the Lease",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(drift_reverted.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            reconciles,
            errors,
            duration,
            drift_reverted,
            leader,
            ready: AtomicBool::new(false),
        })
    }

    pub fn observe(&self, action: &str, took: Duration, error_reason: Option<&str>) {
        self.duration
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
        match error_reason {
            None => self.reconciles.with_label_values(&["ok"]).inc(),
            Some(r) => {
                self.reconciles.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[r]).inc();
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Serves /health (always 200 while the process runs), /ready (200 once initialised) and
/// /metrics.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listening (/health, /ready, /metrics)");
    let health = warp::path!("health").map(|| "ok".to_string());
    let m = metrics.clone();
    let ready = warp::path!("ready").map(move || {
        if m.ready.load(Ordering::Relaxed) {
            warp::reply::with_status("ready".to_string(), StatusCode::OK)
        } else {
            warp::reply::with_status(
                "not ready: schema or SmppVendor API not reachable yet".to_string(),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    });
    let m = metrics.clone();
    let metrics_route = warp::path!("metrics").map(move || {
        warp::reply::with_header(m.render(), "content-type", "text/plain; version=0.0.4")
    });
    let routes = warp::get().and(health.or(ready).or(metrics_route));
    warp::serve(routes).incoming(listener).run().await;
    Ok(())
}

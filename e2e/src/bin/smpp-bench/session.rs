//! The SMPP session layer alone (the gateway's `smpp::session`, driven from inside this
//! process: no HTTP, no Redis, no database) against the raw exchange with the same sink,
//! window and binds (the pipelined ESME of the ceiling): what our session costs over the wire.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rusmpp::{Command, CommandStatus};
use smpp_e2e::bench::Section;
use smpp_e2e::sink::{ReceiptConfig, ReceiptSink};
use smpp_gateway::smpp::connection::{Target, connect};
use smpp_gateway::smpp::pdu::{BindKind, BindParams, Submit, Version};
use smpp_gateway::smpp::session::{self, DeliverReply, Observer, Timeouts, Tunables};
use smpp_gateway::smpp::trace::Tracer;

use crate::messages::{RECEIPT_DELAY, SHAPES, ceiling_run, shape};

pub struct SessionPlan {
    pub runs: usize,
    pub n: u64,
}

impl SessionPlan {
    pub fn new(quick: bool) -> Self {
        if quick {
            SessionPlan { runs: 1, n: 5_000 }
        } else {
            SessionPlan {
                runs: 5,
                n: 200_000,
            }
        }
    }
}

pub const RAW: &str = "raw exchange: submits/s";
pub const OURS: &str = "session layer: submits/s";
pub const RATIO: &str = "session layer / raw exchange (goal ≥ 50 %)";

/// Row names of one shape.
pub fn metric(b: u32, w: u32, what: &str) -> String {
    format!("{}: {what}", shape(b, w))
}

pub async fn suite(plan: &SessionPlan) -> Section {
    let mut s = Section::new(
        "SMPP session layer alone vs the raw exchange",
        format!(
            "The gateway's vendor session (`smpp_gateway::smpp::session`: bind, then its control and writer \
             tasks, window, in-flight map, deliver_sm answered through the observer) driven from inside this \
             process: `binds` sessions to the messaging sink, `window` submitter tasks per session each \
             awaiting `SessionHandle::submit` in a loop (the call the message path makes), no HTTP, no Redis, \
             no database. The raw exchange is the pipelined ESME of the ceiling (`pipelined_client`) on a sink \
             of its own, same window and binds, measured in the same run just before. {} messages per run and \
             side, registered_delivery set (the sink sends a receipt {} ms after each submit_sm_resp; both \
             sides answer them). Rates are messages over the time from the first submit_sm to the last \
             submit_sm_resp; the ratio is taken per run.",
            plan.n,
            RECEIPT_DELAY.as_millis()
        ),
    );
    for run in 0..plan.runs {
        for (b, w) in SHAPES {
            let raw = match ceiling_run(b, w, plan.n).await {
                Ok((sub, _)) => sub,
                Err(e) => {
                    s.not_measured = Some(format!("run {}, raw {}: {e:#}", run + 1, shape(b, w)));
                    return s;
                }
            };
            let ours = match session_run(b, w, plan.n).await {
                Ok(r) => r,
                Err(e) => {
                    s.not_measured =
                        Some(format!("run {}, session {}: {e:#}", run + 1, shape(b, w)));
                    return s;
                }
            };
            s.row(&metric(b, w, RAW), "msg/s", None).per_run.push(raw);
            s.row(&metric(b, w, OURS), "msg/s", None)
                .per_run
                .push(ours.submits_per_s);
            s.row(&metric(b, w, "session layer: receipts/s"), "msg/s", None)
                .per_run
                .push(ours.receipts_per_s);
            s.row(&metric(b, w, RATIO), "%", None)
                .per_run
                .push(ours.submits_per_s / raw * 100.0);
        }
    }
    s
}

/// Counts the receipts the sessions take (answered OK at once, as with no store).
#[derive(Default)]
struct Receipts {
    n: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Observer for Receipts {
    fn deliver_sm(&self, _cmd: Command, reply: DeliverReply) {
        reply.answer(CommandStatus::EsmeRok);
        self.n.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().expect("receipts") = Some(Instant::now());
    }
}

pub struct SessionRun {
    pub submits_per_s: f64,
    pub receipts_per_s: f64,
}

fn message() -> Submit {
    Submit {
        source_addr: "4930123456".into(),
        destination_addr: "4915112345678".into(),
        short_message: b"bench".to_vec(),
        registered_delivery: true,
        ..Submit::default()
    }
}

/// `binds` sessions × `window` submitters against a sink of their own, `n` messages in all.
pub async fn session_run(binds: u32, window: u32, n: u64) -> Result<SessionRun> {
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let result = drive(&sink, binds, window, n).await;
    sink.stop();
    result
}

async fn drive(sink: &ReceiptSink, binds: u32, window: u32, n: u64) -> Result<SessionRun> {
    let tracer = Arc::new(Tracer::default());
    let receipts = Arc::new(Receipts::default());
    let limit = Duration::from_secs(30);
    let mut sessions = Vec::new();
    for b in 0..binds {
        let target = Target {
            host: "127.0.0.1".into(),
            port: sink.port(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
        };
        let (transport, _) = connect(&target)
            .await
            .map_err(|e| anyhow!("connecting to the sink: {e}"))?;
        let params = BindParams {
            kind: BindKind::Transceiver,
            system_id: format!("session{b}"),
            password: "pw".into(),
            system_type: String::new(),
            version: Version::V34,
            address_range: String::new(),
        };
        let conn = session::bind(transport, &params, false, limit, ("bench", &tracer))
            .await
            .map_err(|f| anyhow!("bind to the sink: {f}"))?;
        sessions.push(session::spawn(
            conn,
            Tunables {
                window: window as usize,
                tps: None,
                enquire_interval: Duration::from_secs(30),
            },
            Timeouts::default(),
            "bench".into(),
            tracer.clone(),
            receipts.clone(),
        ));
    }
    let left = Arc::new(AtomicI64::new(n as i64));
    let t0 = Instant::now();
    let mut submitters = Vec::new();
    for (handle, _) in &sessions {
        for _ in 0..window {
            let (h, left) = (handle.clone(), left.clone());
            submitters.push(tokio::spawn(async move {
                let mut last = None;
                while left.fetch_sub(1, Ordering::Relaxed) > 0 {
                    let r = h.submit(message(), limit).await?;
                    if r.status != 0 {
                        bail!("the sink refused a submit_sm: status {:#x}", r.status);
                    }
                    last = Some(Instant::now());
                }
                Ok::<_, anyhow::Error>(last)
            }));
        }
    }
    let mut last_resp = t0;
    for t in submitters {
        if let Some(at) = t.await?? {
            last_resp = last_resp.max(at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while receipts.n.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} receipts within 60 s",
                receipts.n.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_receipt = receipts
        .last
        .lock()
        .expect("receipts")
        .context("no receipt time")?;
    for (handle, join) in sessions {
        handle.close();
        let _ = join.await;
    }
    let secs = |at: Instant| at.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    Ok(SessionRun {
        submits_per_s: n as f64 / secs(last_resp),
        receipts_per_s: n as f64 / secs(last_receipt),
    })
}

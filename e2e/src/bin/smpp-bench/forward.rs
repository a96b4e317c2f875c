//! Requests landing on a pod without a bind: three gateway processes on one database and one
//! Redis, one vendor with a single bind (so one pod holds it), the same paced load sent to
//! the pod holding the bind and to one without; the second forwards each submit one hop
//! (`api::forward`). What a forward adds is the difference of the two latencies.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::bench::{Below, Section, percentile};
use smpp_e2e::env::Env;
use smpp_e2e::sink::{ReceiptConfig, ReceiptSink};

use crate::common::{Db, Proc};
use crate::load::{self, Load};
use crate::messages::{
    RECEIPT_DELAY, closed, flush_bench_redis, judge_single, single_request, start_messaging_gateway,
};

/// Gateway processes of the fleet.
pub const PODS: usize = 3;

pub struct ForwardPlan {
    pub runs: usize,
    /// Paced requests per second, well below what one bind × window 10 takes.
    pub rate: f64,
    pub n: u64,
}

impl ForwardPlan {
    pub fn new(quick: bool) -> Self {
        if quick {
            ForwardPlan {
                runs: 1,
                rate: 200.0,
                n: 200,
            }
        } else {
            ForwardPlan {
                runs: 5,
                rate: 500.0,
                n: 2_500,
            }
        }
    }
}

pub const ADDED_P50: &str = "added by the forward, p50";

pub async fn suite(env: &Env, plan: &ForwardPlan) -> Section {
    let mut s = Section::new(
        format!("Gateway: requests landing on a pod without a bind ({PODS} gateway processes)"),
        format!(
            "{PODS} gateways (messaging on: the environment's Redis, each advertising 127.0.0.1 and its HTTP \
             port) on one database; one vendor on the messaging sink with max_binds 1 and window 10, so one pod \
             holds the bind. Per run the same load, POST /api/v1/messages paced at {} msg/s for {} requests over \
             32 keep-alive connections, is sent to the pod holding the bind (direct) and then to a pod without \
             one, which forwards each submit to the holder over HTTP (one hop). Latency is from each request's \
             scheduled send time to its 201 (after submit_sm_resp). The added figure is forwarded minus direct, \
             per run.",
            plan.rate, plan.n
        ),
    );
    for run in 0..plan.runs {
        match forward_run(env, run, plan).await {
            Ok(r) => {
                s.row("direct (the pod holding the bind), p50", "ms", None)
                    .per_run
                    .push(r.direct.0);
                s.row("forwarded (a pod without a bind), p50", "ms", None)
                    .per_run
                    .push(r.forwarded.0);
                s.row(ADDED_P50, "ms", Some(Below(1.0)))
                    .per_run
                    .push(r.forwarded.0 - r.direct.0);
                s.row("direct, p99", "ms", None).per_run.push(r.direct.1);
                s.row("forwarded, p99", "ms", None)
                    .per_run
                    .push(r.forwarded.1);
                s.row("added by the forward, p99", "ms", None)
                    .per_run
                    .push(r.forwarded.1 - r.direct.1);
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    s
}

/// (p50, p99) in ms of each path.
struct ForwardRun {
    direct: (f64, f64),
    forwarded: (f64, f64),
}

async fn forward_run(env: &Env, run: usize, plan: &ForwardPlan) -> Result<ForwardRun> {
    flush_bench_redis(env).await?;
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let db = Db::fresh(env, "fwd").await?;
    let result = async {
        let mut pods: Vec<(String, Proc)> = Vec::new();
        for i in 0..PODS {
            let name = format!("bench-fwd-{run}-{i}");
            let gw = start_messaging_gateway(&db, env, &name, &[("POD_IP", "127.0.0.1")]).await?;
            pods.push((name, gw));
        }
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, \
             system_type, is_active, max_binds, window_size) \
             VALUES ('bench-fwd', '127.0.0.1', {}, 'bench', 'pw', '', true, 1, 10)",
            sink.port()
        ))
        .await?;
        let holder = bound_pod(&db, Duration::from_secs(30)).await?;
        let direct = pods
            .iter()
            .find(|(n, _)| *n == holder)
            .with_context(|| format!("the bound pod {holder:?} is none of ours"))?
            .1
            .http;
        let other = pods
            .iter()
            .find(|(n, _)| *n != holder)
            .context("no pod without the bind")?
            .1
            .http;
        // The other pods learn where the bind is from their forwarding table (refreshed every
        // second): until then they answer 503.
        until_accepted(other, Duration::from_secs(20)).await?;
        let warm = Load {
            rate: Some(plan.rate),
            ..closed(other, 32, (plan.n / 5).max(50), single_request(), judge_single())
        };
        load::run(warm.clone()).await?;
        load::run(Load { port: direct, ..warm }).await?;
        let direct = latencies(direct, plan).await.context("direct load")?;
        let forwarded = latencies(other, plan).await.context("forwarded load")?;
        for (_, gw) in pods {
            gw.stop(Duration::from_secs(10)).await;
        }
        Ok(ForwardRun { direct, forwarded })
    }
    .await;
    sink.stop();
    db.drop_db().await;
    result
}

/// The pod whose slot of the vendor is bound.
async fn bound_pod(db: &Db, limit: Duration) -> Result<String> {
    let end = Instant::now() + limit;
    loop {
        let pod: Option<String> = sqlx::query_scalar(
            "SELECT pod FROM vendor_mgmt.vendor_sessions WHERE state = 'bound' LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await?;
        if let Some(p) = pod {
            return Ok(p);
        }
        if Instant::now() > end {
            bail!("no pod bound the vendor within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends single messages to `port` until one is accepted.
async fn until_accepted(port: u16, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        let out = load::run(closed(port, 1, 1, single_request(), judge_single())).await?;
        if out.accepted == 1 {
            return Ok(());
        }
        if Instant::now() > end {
            bail!(
                "the pod on port {port} did not forward within {limit:?}: {}",
                out.first_refusal.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (p50, p99) of the paced load on `port`; every request must be accepted.
async fn latencies(port: u16, plan: &ForwardPlan) -> Result<(f64, f64)> {
    let out = load::run(Load {
        rate: Some(plan.rate),
        latencies: true,
        ..closed(port, 32, plan.n, single_request(), judge_single())
    })
    .await?;
    if out.refused > 0 {
        bail!(
            "{} of {} refused; first: {}",
            out.refused,
            out.requests,
            out.first_refusal.unwrap_or_default()
        );
    }
    Ok((
        percentile(&out.latencies_ms, 50.0).unwrap_or(f64::NAN),
        percentile(&out.latencies_ms, 99.0).unwrap_or(f64::NAN),
    ))
}

//! The message path, measured in one run: the sink alone (the ceiling), ours (HTTP → SMPP →
//! receipt stored in Redis, single and batch endpoints) and Kannel (HTTP sendsms → SMPP →
//! receipt → dlr-url), all against the same messaging sink (`smpp_e2e::sink::ReceiptSink`)
//! and driven by the same HTTP load generator (`load`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::bench::{Below, Better, Comparison, Section, percentile};
use smpp_e2e::env::Env;
use smpp_e2e::sink::{ReceiptConfig, ReceiptCounts, ReceiptSink, pipelined_client};

use crate::common::{Db, Proc, cpu_ns, log_dir, peak_rss_mib, rss_mib, sibling_bin};
use crate::load::{self, Counter, Load};

mod kannel;
pub use kannel::{KannelBest, kannel};

/// (binds, window): the vendor-realistic case and a wide one.
pub const SHAPES: [(u32, u32); 2] = [(1, 10), (4, 100)];

/// How long the sink waits before each receipt.
pub const RECEIPT_DELAY: Duration = Duration::from_millis(5);

/// The bench's own Redis database index on the environment's Redis, flushed before each run.
const REDIS_DB: u32 = 12;

/// The RSS figure is taken at this rate (or the gateway's maximum when lower).
const RSS_RATE: f64 = 10_000.0;

pub struct MsgPlan {
    pub fast_runs: usize,
    pub slow_runs: usize,
    pub ceiling_n: u64,
    pub single_n: u64,
    pub batch_n: u64,
    /// Length of the paced phases (latency at half of saturation, RSS at 10k/s).
    pub paced: Duration,
    pub kannel_n: u64,
    /// (binds, max-pending-submits) tried for Kannel.
    pub kannel_settings: Vec<(u32, u32)>,
}

impl MsgPlan {
    pub fn new(quick: bool) -> Self {
        if quick {
            MsgPlan {
                fast_runs: 1,
                slow_runs: 1,
                ceiling_n: 20_000,
                single_n: 3_000,
                batch_n: 3_000,
                paced: Duration::from_secs(1),
                kannel_n: 2_000,
                kannel_settings: vec![(1, 10), (1, 500)],
            }
        } else {
            MsgPlan {
                fast_runs: 5,
                slow_runs: 3,
                ceiling_n: 300_000,
                single_n: 40_000,
                batch_n: 40_000,
                paced: Duration::from_secs(3),
                kannel_n: 15_000,
                // max-pending-submits 10/100/500 on one bind, and instances 2 and 4 (binds
                // of one smsc-id) at 100 and 500.
                kannel_settings: vec![
                    (1, 10),
                    (1, 100),
                    (1, 500),
                    (2, 100),
                    (2, 500),
                    (4, 100),
                    (4, 500),
                ],
            }
        }
    }
}

/// Requests the HTTP load keeps in flight at a vendor shape (one per connection): twice the
/// vendor's window so it stays full, within 32..=256. The customers suite offers the same.
pub fn http_in_flight(binds: u32, window: u32) -> u32 {
    (2 * binds * window).clamp(32, 256)
}

pub fn shape(b: u32, w: u32) -> String {
    format!("{b} bind{} × window {w}", if b == 1 { "" } else { "s" })
}

// ---------------------------------------------------------------------------------------------
// The ceiling: the sink alone, driven by a pipelined in-process client.
// ---------------------------------------------------------------------------------------------

pub async fn ceiling(plan: &MsgPlan) -> Section {
    let mut s = Section::new(
        "Messages: the sink alone (the ceiling)",
        format!(
            "The messaging sink (e2e/src/sink/receipts.rs `ReceiptSink`: raw SMPP 3.4, one reader and one writer per \
             connection, every write carries all that is queued, TCP_NODELAY) driven by a pipelined in-process \
             ESME (`pipelined_client`) that keeps `window` submit_sm in flight per bind and answers every \
             receipt. {} messages per run, split over the binds; each receipt {} ms after its submit_sm_resp. \
             Rates are messages over the time from the first submit_sm to the last submit_sm_resp / receipt. \
             No HTTP, no Redis: what the sink can take, so the figures below are not the sink's.",
            plan.ceiling_n,
            RECEIPT_DELAY.as_millis()
        ),
    );
    for run in 0..plan.fast_runs {
        for (b, w) in SHAPES {
            match ceiling_run(b, w, plan.ceiling_n).await {
                Ok((sub, rec)) => {
                    s.row(&format!("{}: submits/s", shape(b, w)), "msg/s", None)
                        .per_run
                        .push(sub);
                    s.row(&format!("{}: receipts/s", shape(b, w)), "msg/s", None)
                        .per_run
                        .push(rec);
                }
                Err(e) => {
                    s.not_measured = Some(format!("run {}, {}: {e:#}", run + 1, shape(b, w)));
                    return s;
                }
            }
        }
    }
    s
}

/// (submits/s, receipts/s) of the sink alone with `binds` pipelined clients × `window`.
pub async fn ceiling_run(binds: u32, window: u32, n: u64) -> Result<(f64, f64)> {
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let per = n / u64::from(binds);
    let mut tasks = Vec::new();
    for _ in 0..binds {
        let port = sink.port();
        tasks.push(tokio::spawn(pipelined_client(
            port,
            window as usize,
            per,
            true,
            deadline,
        )));
    }
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await??);
    }
    sink.stop();
    let total = (per * u64::from(binds)) as f64;
    let sub = runs.iter().map(|r| r.submit_secs).fold(0.0, f64::max);
    let rec = runs.iter().map(|r| r.receipt_secs).fold(0.0, f64::max);
    Ok((total / sub.max(1e-9), total / rec.max(1e-9)))
}

// ---------------------------------------------------------------------------------------------
// One phase of load and what the sink saw of it.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Phase {
    http_per_s: f64,
    submits_per_s: f64,
    receipts_per_s: f64,
    accepted: u64,
    refused: u64,
    receipts_failed: u64,
    first_refusal: Option<String>,
    latencies_ms: Vec<f64>,
    last_accepted: Option<Vec<u8>>,
    /// Peak VmRSS (MiB) of the sampled pids during the load.
    rss_mib: f64,
}

impl Phase {
    /// The slowest of the three stages: what the pipeline sustains end to end.
    fn end_to_end(&self) -> f64 {
        self.http_per_s
            .min(self.submits_per_s)
            .min(self.receipts_per_s)
    }
}

/// Where a phase's receipts are counted: at the sink (deliver_sm_resp OK, i.e. stored, for
/// ours) or at the dlr-url counter (Kannel).
enum Receipts<'a> {
    Acked,
    Counter(&'a Counter),
}

fn receipts_now(sink: &ReceiptCounts, r: &Receipts) -> (u64, Option<Instant>) {
    match r {
        Receipts::Acked => (sink.receipts_ok, sink.last_receipt_ok),
        Receipts::Counter(c) => c.hits(),
    }
}

/// Runs `load`, then waits (up to `settle`) until the sink has every accepted message and its
/// receipt; rates are over the time from the load's start to the last of each.
async fn phase(
    sink: &ReceiptSink,
    receipts: Receipts<'_>,
    load: Load,
    rss_of: &[u32],
    settle: Duration,
) -> Result<Phase> {
    let before = sink.counts();
    let (r0, _) = receipts_now(&before, &receipts);
    let sampler = {
        let pids = rss_of.to_vec();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let h = tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let now: f64 = pids.iter().filter_map(|p| rss_mib(*p).ok()).sum();
                peak = peak.max(now);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        });
        (stop, h)
    };
    let out = load::run(load).await;
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss = sampler.1.await.unwrap_or(0.0);
    let out = out?;
    let start = out.started.context("load never started")?;
    let want = out.accepted;
    let end = Instant::now() + settle;
    let after = loop {
        let c = sink.counts();
        let (r, _) = receipts_now(&c, &receipts);
        let done = c.submits - before.submits >= want
            && r - r0 + (c.receipts_failed - before.receipts_failed) >= want;
        if done {
            break c;
        }
        if Instant::now() > end {
            bail!(
                "after {settle:?}: {} of {want} accepted messages at the sink, {} receipts counted \
                 ({} refused by the receiver)",
                c.submits - before.submits,
                r - r0,
                c.receipts_failed - before.receipts_failed
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (r1, last_r) = receipts_now(&after, &receipts);
    let secs = |t: Option<Instant>| {
        t.map(|t| t.saturating_duration_since(start).as_secs_f64())
            .unwrap_or(f64::NAN)
            .max(1e-9)
    };
    Ok(Phase {
        http_per_s: out.accepted_per_sec(),
        submits_per_s: (after.submits - before.submits) as f64 / secs(after.last_submit),
        receipts_per_s: (r1 - r0) as f64 / secs(last_r),
        accepted: out.accepted,
        refused: out.refused,
        receipts_failed: after.receipts_failed - before.receipts_failed,
        first_refusal: out.first_refusal,
        latencies_ms: out.latencies_ms,
        last_accepted: out.last_accepted,
        rss_mib: rss,
    })
}

// ---------------------------------------------------------------------------------------------
// Ours.
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "bench-token-not-a-secret";
const MESSAGE: &str = r#"{"to":"+4915112345678","from":"4912345","text":"bench message"}"#;

pub fn single_request() -> load::MakeRequest {
    let req = load::post("/api/v1/messages", TOKEN, MESSAGE.as_bytes());
    Arc::new(move |_| req.clone())
}

/// The path of our callback_url on the counter (only these requests are counted).
const CALLBACK_PATH: &str = "/ours-dlr";

/// A single message whose receipt the gateway posts to the counter on `port`: the HTTP
/// customer's way of getting it back, as Kannel's dlr-url is.
fn single_request_with_callback(port: u16) -> load::MakeRequest {
    let mut body: serde_json::Value = serde_json::from_str(MESSAGE).expect("MESSAGE is JSON");
    body["callback_url"] = format!("http://127.0.0.1:{port}{CALLBACK_PATH}").into();
    let req = load::post("/api/v1/messages", TOKEN, body.to_string().as_bytes());
    Arc::new(move |_| req.clone())
}

fn batch_request(size: usize) -> load::MakeRequest {
    let body = format!(r#"{{"messages":[{}]}}"#, vec![MESSAGE; size].join(","));
    let req = load::post("/api/v1/messages/batch", TOKEN, body.as_bytes());
    Arc::new(move |_| req.clone())
}

pub fn judge_single() -> load::Judge {
    Arc::new(|status, _| if status == 201 { (1, 0) } else { (0, 1) })
}

fn judge_batch(size: u64) -> load::Judge {
    Arc::new(move |status, body| {
        if status != 200 {
            return (0, size);
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return (0, size);
        };
        let results = v["results"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let ok = results.iter().filter(|r| r.get("error").is_none()).count() as u64;
        (ok, size - ok)
    })
}

pub fn closed(
    port: u16,
    conns: usize,
    total: u64,
    make: load::MakeRequest,
    judge: load::Judge,
) -> Load {
    Load {
        port,
        conns,
        total,
        rate: None,
        limit: Duration::from_secs(120),
        make,
        judge,
        latencies: false,
    }
}

/// The gateway on `db` with messaging on: Redis (the bench's own database index), an API key;
/// `extra` env pairs on top.
pub async fn start_messaging_gateway(
    db: &Db,
    env: &Env,
    pod: &str,
    extra: &[(&str, &str)],
) -> Result<Proc> {
    let dir = log_dir();
    let keys = dir.join("bench-api-keys");
    std::fs::write(&keys, format!("bench:{TOKEN}\n"))?;
    let http = smpp_e2e::sink::free_port()?;
    let mut cmd = Command::new(sibling_bin("smpp-gateway")?);
    cmd.env("DATABASE_URL", &db.url)
        .env("POD_NAME", pod)
        .env("HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("REDIS_URL", bench_redis_url(env))
        .env("API_KEYS_FILE", &keys)
        .env("DLR_TTL", "600s")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied());
    let mut p = Proc::spawn(pod, cmd, http)?;
    p.wait_http("/health", Duration::from_secs(20)).await?;
    Ok(p)
}

/// The environment's Redis URL with the bench's own database index.
fn bench_redis_url(env: &Env) -> String {
    let u = env.redis_url.trim_end_matches('/');
    match u.rsplit_once('/') {
        Some((base, db)) if !base.ends_with('/') && db.chars().all(|c| c.is_ascii_digit()) => {
            format!("{base}/{REDIS_DB}")
        }
        _ => format!("{u}/{REDIS_DB}"),
    }
}

/// (commands run, Redis CPU in µs) so far: calls summed over INFO commandstats (commands
/// inside Lua scripts count too) and used_cpu_user + used_cpu_sys. Server-wide: other
/// clients of the environment's Redis add a little noise.
async fn redis_command_totals(env: &Env) -> Result<(u64, u64)> {
    let client = redis::Client::open(bench_redis_url(env))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await?;
    Ok((parse_commandstats(&stats), parse_cpu_us(&cpu)))
}

/// Sums `calls=` over the cmdstat_ lines of INFO commandstats (INFO itself left out).
fn parse_commandstats(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// used_cpu_user + used_cpu_sys of INFO cpu, in µs.
fn parse_cpu_us(text: &str) -> u64 {
    let secs: f64 = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            matches!(k, "used_cpu_user" | "used_cpu_sys").then(|| v.parse::<f64>().ok())?
        })
        .sum();
    (secs * 1e6) as u64
}

pub async fn flush_bench_redis(env: &Env) -> Result<()> {
    let client = redis::Client::open(bench_redis_url(env))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB")
        .arg("ASYNC")
        .query_async::<()>(&mut c)
        .await
        .context("FLUSHDB on the bench's Redis database")?;
    Ok(())
}

/// What one run of ours measured at one shape.
struct OursRun {
    single: Phase,
    /// Single messages whose receipts also go to a callback_url.
    callback: Phase,
    batch100: Phase,
    batch1000: Phase,
    half_rate: f64,
    p50: f64,
    p99: f64,
    rss: f64,
    rss_rate: f64,
    peak_rss: f64,
    last_status: String,
    /// Redis commands and µs of Redis time per message, over the single-message phase.
    redis_cmds: f64,
    redis_us: f64,
    /// µs of CPU per message over the same phase: the gateway (all threads), and this
    /// process (the HTTP load generator and the sink).
    gateway_us: f64,
    driver_us: f64,
}

async fn ours_run(
    env: &Env,
    plan: &MsgPlan,
    run: usize,
    binds: u32,
    window: u32,
) -> Result<OursRun> {
    flush_bench_redis(env).await?;
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let db = Db::fresh(env, "msgs").await?;
    let result = async {
        let gw = start_messaging_gateway(&db, env, &format!("bench-msgs-{binds}x{window}-{run}"), &[]).await?;
        // The sink writes decimal ids, and says so: under Auto a receipt that beats its own
        // mapping (this sink answers at once) waits out the exact-match grace (docs/receipts.md).
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, system_type, \
             is_active, max_binds, window_size, message_id_submit_format, message_id_receipt_format) \
             VALUES ('bench-msgs', '127.0.0.1', {}, 'bench', 'pw', '', true, {binds}, {window}, 'Decimal', 'Decimal')",
            sink.port()
        ))
        .await?;
        sink.wait_for(Duration::from_secs(20), |c| c.open_binds >= u64::from(binds))
            .await
            .with_context(|| format!("{binds} binds did not reach the sink within 20 s"))?;
        let mut gw = gw;
        gw.wait_http("/ready", Duration::from_secs(20)).await?;
        let port = gw.http;
        let pid = gw.pid();
        let conns = http_in_flight(binds, window) as usize;
        let settle = Duration::from_secs(60);
        // Warm-up: connections, Redis scripts, allocator.
        phase(&sink, Receipts::Acked, closed(port, conns, 2_000.min(plan.single_n), single_request(), judge_single()), &[], settle).await?;
        // RSS while sending at ~10k/s (paced), before any saturating load grows the heap.
        let n = (RSS_RATE * plan.paced.as_secs_f64()) as u64;
        let rss_phase = phase(
            &sink,
            Receipts::Acked,
            Load { rate: Some(RSS_RATE), ..closed(port, conns, n, single_request(), judge_single()) },
            &[pid],
            settle,
        )
        .await?;
        // Single messages at saturation.
        let (c0, u0) = redis_command_totals(env).await?;
        let (g0, d0) = (cpu_ns(pid)?, cpu_ns(std::process::id())?);
        let single = phase(&sink, Receipts::Acked, closed(port, conns, plan.single_n, single_request(), judge_single()), &[], settle).await?;
        let (g1, d1) = (cpu_ns(pid)?, cpu_ns(std::process::id())?);
        let (c1, u1) = redis_command_totals(env).await?;
        let msgs = single.accepted.max(1) as f64;
        let last_status = match single.last_accepted.as_deref().and_then(message_id) {
            Some(id) => get_status(port, &id).await.unwrap_or_else(|e| format!("GET failed: {e:#}")),
            None => "no accepted message".into(),
        };
        // Single messages at saturation, each receipt also posted to a callback_url.
        let counter = Counter::start(CALLBACK_PATH).await?;
        let callback = phase(
            &sink,
            Receipts::Counter(&counter),
            closed(port, conns, plan.single_n, single_request_with_callback(counter.port), judge_single()),
            &[],
            settle,
        )
        .await;
        counter.stop();
        let callback = callback?;
        // Latency at half of saturation (paced: latency from each request's scheduled time).
        let half_rate = single.end_to_end() / 2.0;
        let n = (half_rate * plan.paced.as_secs_f64()).max(200.0) as u64;
        let lat = phase(
            &sink,
            Receipts::Acked,
            Load { rate: Some(half_rate), latencies: true, ..closed(port, conns, n, single_request(), judge_single()) },
            &[],
            settle,
        )
        .await?;
        // Batches.
        let bconns = (2 * binds * window).div_ceil(64).max(2) as usize;
        let b100 = phase(&sink, Receipts::Acked, closed(port, bconns, plan.batch_n / 100, batch_request(100), judge_batch(100)), &[], settle).await?;
        let b1000 = phase(&sink, Receipts::Acked, closed(port, bconns, (plan.batch_n / 1000).max(2), batch_request(1000), judge_batch(1000)), &[], settle).await?;
        let peak_rss = peak_rss_mib(pid)?;
        gw.stop(Duration::from_secs(10)).await;
        Ok(OursRun {
            half_rate,
            p50: percentile(&lat.latencies_ms, 50.0).unwrap_or(f64::NAN),
            p99: percentile(&lat.latencies_ms, 99.0).unwrap_or(f64::NAN),
            rss: rss_phase.rss_mib,
            rss_rate: rss_phase.http_per_s,
            peak_rss,
            last_status,
            redis_cmds: c1.saturating_sub(c0) as f64 / msgs,
            redis_us: u1.saturating_sub(u0) as f64 / msgs,
            gateway_us: g1.saturating_sub(g0) as f64 / 1000.0 / msgs,
            driver_us: d1.saturating_sub(d0) as f64 / 1000.0 / msgs,
            single: merge_refusals(single, &[&rss_phase, &lat]),
            callback,
            batch100: b100,
            batch1000: b1000,
        })
    }
    .await;
    sink.stop();
    db.drop_db().await;
    result
}

/// Folds the refusals of the paced phases into the single-message phase (they are reported
/// together).
fn merge_refusals(mut p: Phase, others: &[&Phase]) -> Phase {
    for o in others {
        p.refused += o.refused;
        p.receipts_failed += o.receipts_failed;
        if p.first_refusal.is_none() {
            p.first_refusal = o.first_refusal.clone();
        }
    }
    p
}

fn message_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["id"].as_str().map(String::from)
}

async fn get_status(port: u16, id: &str) -> Result<String> {
    let url = smpp_e2e::http::local(port, &format!("/api/v1/messages/{id}"));
    let auth = format!("Bearer {TOKEN}");
    let a = smpp_e2e::http::get(&url, &[("Authorization", &auth)]).await?;
    Ok(format!("HTTP {}, status {}", a.status, a.json["status"]))
}

/// The name of the phase whose receipts go to a callback_url, in its rows.
const CALLBACK_PHASE: &str = "single, receipts posted to a callback_url";

/// The three rates of a phase, as rows named after it; `receipts` names the third.
fn phase_rows(s: &mut Section, name: &str, p: &Phase, receipts: &str) {
    s.row(&format!("{name}: HTTP accepted"), "msg/s", None)
        .per_run
        .push(p.http_per_s);
    s.row(&format!("{name}: submits at the sink"), "msg/s", None)
        .per_run
        .push(p.submits_per_s);
    s.row(&format!("{name}: {receipts}"), "msg/s", None)
        .per_run
        .push(p.receipts_per_s);
}

fn refusal_note(notes: &mut Vec<String>, run: usize, name: &str, p: &Phase) {
    if p.refused > 0 || p.receipts_failed > 0 {
        notes.push(format!(
            "Run {}, {name}: {} refused answers, {} receipts answered with an error; first: {}",
            run + 1,
            p.refused,
            p.receipts_failed,
            p.first_refusal.as_deref().unwrap_or("—")
        ));
    }
}

/// Medians of ours at one shape, for the comparisons.
#[derive(Default, Clone)]
pub struct OursFigures {
    pub single: Option<f64>,
    /// Single messages with each receipt posted to a callback_url.
    pub callback: Option<f64>,
    pub batch100: Option<f64>,
    pub batch1000: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub rss: Option<f64>,
}

pub async fn ours(env: &Env, plan: &MsgPlan, binds: u32, window: u32) -> (Section, OursFigures) {
    let mut s = Section::new(
        format!("Messages: ours, {}", shape(binds, window)),
        format!(
            "One gateway process (release build, default settings; Redis of `make env-up`, database index \
             {REDIS_DB}, flushed before each run) with one vendor row (max_binds {binds}, window_size {window}) on \
             the messaging sink, which sends each receipt {} ms after its submit_sm_resp. Load: this process's \
             HTTP/1.1 keep-alive generator (see e2e/src/bin/smpp-bench/load.rs for why not wrk), one request in \
             flight per connection. Per run, in order: a warm-up; RSS (peak VmRSS, sampled every 100 ms) while \
             single messages are paced at {RSS_RATE} msgs/s for {}s (or the gateway's maximum, shown as the rate \
             reached); {} single messages at saturation ({} connections); as many again with a `callback_url` on a \
             counter in this process, so each receipt is also posted back (the HTTP customer's way of getting \
             it, as Kannel's dlr-url is), timed to the last callback counted; latency of single messages paced at half \
             of that saturation rate, from each request's scheduled send to its 201 (which the gateway sends once \
             submit_sm_resp is in and the message is written to Redis); {} messages in batches of 100 and of 1000 \
             ({} connections). Rates: messages over the time from the load's start to the last HTTP answer \
             (accepted), the last submit_sm at the sink (submits), the last deliver_sm_resp OK at the sink \
             (receipts stored: the gateway answers a receipt only once Redis has it). Each phase waits for all its \
             receipts before the next starts.",
            RECEIPT_DELAY.as_millis(),
            plan.paced.as_secs(),
            plan.single_n,
            http_in_flight(binds, window),
            plan.batch_n,
            (2 * binds * window).div_ceil(64).max(2),
        ),
    );
    let mut notes = Vec::new();
    for run in 0..plan.fast_runs {
        match ours_run(env, plan, run, binds, window).await {
            Ok(r) => {
                for (name, p) in [
                    ("single", &r.single),
                    ("batch of 100", &r.batch100),
                    ("batch of 1000", &r.batch1000),
                ] {
                    phase_rows(&mut s, name, p, "receipts stored");
                    refusal_note(&mut notes, run, name, p);
                }
                phase_rows(
                    &mut s,
                    CALLBACK_PHASE,
                    &r.callback,
                    "receipts at the callback_url",
                );
                refusal_note(&mut notes, run, CALLBACK_PHASE, &r.callback);
                s.row("latency p50 at half of saturation", "ms", None)
                    .per_run
                    .push(r.p50);
                s.row("latency p99 at half of saturation", "ms", Some(Below(2.0)))
                    .per_run
                    .push(r.p99);
                s.row("half of saturation (the paced rate)", "msg/s", None)
                    .per_run
                    .push(r.half_rate);
                s.row("RSS while paced at ~10k msgs/s", "MiB", Some(Below(128.0)))
                    .per_run
                    .push(r.rss);
                s.row("rate reached while paced at 10k msgs/s", "msg/s", None)
                    .per_run
                    .push(r.rss_rate);
                s.row("peak RSS over the run (VmHWM)", "MiB", None)
                    .per_run
                    .push(r.peak_rss);
                s.row(
                    "Redis commands per message (single; with those inside Lua scripts)",
                    "",
                    None,
                )
                .per_run
                .push(r.redis_cmds);
                s.row(
                    "Redis CPU per message (single; INFO cpu, server-wide)",
                    "µs",
                    None,
                )
                .per_run
                .push(r.redis_us);
                s.row("gateway CPU per message (single; all threads)", "µs", None)
                    .per_run
                    .push(r.gateway_us);
                s.row(
                    "load generator + sink CPU per message (single; this process)",
                    "µs",
                    None,
                )
                .per_run
                .push(r.driver_us);
                // Two cores: 2 s of CPU per second shared by the three.
                let cpu = r.redis_us + r.gateway_us + r.driver_us;
                s.row(
                    "machine ceiling at this CPU per message (2 cores ÷ Redis + gateway + driver)",
                    "msg/s",
                    None,
                )
                .per_run
                .push(2e6 / cpu.max(1.0));
                if !r.last_status.contains("\"delivered\"") {
                    notes.push(format!(
                        "Run {}: GET of the last accepted single message: {} (expected delivered)",
                        run + 1,
                        r.last_status
                    ));
                }
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    if notes.is_empty() && !s.rows.is_empty() {
        s.notes.push("Every answer was accepted, every receipt stored, and the last single message of each run read back as delivered (GET /api/v1/messages/{id}).".into());
    }
    s.notes.extend(notes);
    let f = OursFigures {
        single: s.median_of("single: receipts stored"),
        callback: s.median_of(&format!("{CALLBACK_PHASE}: receipts at the callback_url")),
        batch100: s.median_of("batch of 100: receipts stored"),
        batch1000: s.median_of("batch of 1000: receipts stored"),
        p50: s.median_of("latency p50 at half of saturation"),
        p99: s.median_of("latency p99 at half of saturation"),
        rss: s.median_of("RSS while paced at ~10k msgs/s"),
    };
    (s, f)
}

/// The comparisons of the message path: ours at each shape against Kannel at its best.
pub fn comparisons(ours: &[((u32, u32), OursFigures)], k: &KannelBest) -> Vec<Comparison> {
    let kset = k
        .setting
        .map(|(b, w)| format!("Kannel at its best tried, {b}×{w}"))
        .unwrap_or_else(|| "Kannel".into());
    let mut v = Vec::new();
    for ((b, w), f) in ours {
        let mk = |what: String, unit, ours, kannel, better| Comparison {
            what,
            unit,
            ours,
            kannel,
            better,
        };
        v.push(mk(
            format!(
                "HTTP → SMPP → receipt, single messages/s (ours {}; {kset}; goal ≥ 10×)",
                shape(*b, *w)
            ),
            "msg/s",
            f.single,
            k.receipts,
            Better::Higher,
        ));
        v.push(mk(
            format!(
                "… each receipt posted to a callback_url, as Kannel's go to its dlr-url (ours {}; {kset})",
                shape(*b, *w)
            ),
            "msg/s",
            f.callback,
            k.receipts,
            Better::Higher,
        ));
        v.push(mk(
            format!("… batches of 100 (ours {}; Kannel has no batch endpoint: its single rate; goal ≥ 25×)", shape(*b, *w)),
            "msg/s",
            f.batch100,
            k.receipts,
            Better::Higher,
        ));
        v.push(mk(
            format!("… batches of 1000 (ours {}; goal ≥ 25×)", shape(*b, *w)),
            "msg/s",
            f.batch1000,
            k.receipts,
            Better::Higher,
        ));
        v.push(mk(
            format!(
                "HTTP latency p50 at half of saturation (ours {})",
                shape(*b, *w)
            ),
            "ms",
            f.p50,
            k.p50,
            Better::Lower,
        ));
        v.push(mk(
            format!("HTTP latency p99 at half of saturation (ours {}: to 201 after submit_sm_resp; Kannel: to 202, before SMPP)", shape(*b, *w)),
            "ms",
            f.p99,
            k.p99,
            Better::Lower,
        ));
        v.push(mk(
            format!("RSS under load (ours {} paced at ~10k msgs/s; Kannel bearerbox + smsbox saturated)", shape(*b, *w)),
            "MiB",
            f.rss,
            k.rss,
            Better::Lower,
        ));
    }
    v
}

/// Kannel's receipts/s per setting tried, for the log.
pub fn summary(k: &KannelBest) -> String {
    let parts: Vec<String> = k
        .by_setting
        .iter()
        .map(|((b, w), r)| {
            format!(
                "{b}×{w}: {}",
                r.map(|r| format!("{r:.0}/s")).unwrap_or("—".into())
            )
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_summed_without_info() {
        let t = "# Commandstats\r\ncmdstat_set:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0\r\n\
                 cmdstat_eval:calls=2,usec=20,usec_per_call=10.00\r\ncmdstat_info:calls=5,usec=500\r\n";
        assert_eq!(parse_commandstats(t), 5);
        let cpu = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\nused_cpu_sys_children:9.0\r\n";
        assert_eq!(parse_cpu_us(cpu), 3_500_000);
    }

    #[test]
    fn batch_answers_are_counted_per_entry() {
        let j = judge_batch(3);
        let body = br#"{"results":[{"id":"a"},{"success":false,"error":{"code":"x"}},{"id":"b"}]}"#;
        assert_eq!(j(200, body), (2, 1));
        assert_eq!(j(503, b"{}"), (0, 3));
    }
}

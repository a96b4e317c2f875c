//! Customers over SMPP: our SMPP server in, the messaging sink out, the receipts back to the
//! customer's sessions (issue 10). Each run also measures the raw exchange (the sink alone
//! with the same pipelined client at the same shape) so the ratio is of one moment of a noisy
//! machine; the Kannel figure is the messages suite's, when it ran in the same invocation.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::accounts::{customer_config, write_account};
use smpp_e2e::bench::{Better, Comparison, Section, percentile};
use smpp_e2e::env::Env;
use smpp_e2e::sink::{Pipeline, PipelinedSession, ReceiptConfig, ReceiptSink, ReceiptTally};

use crate::common::{Db, peak_rss_mib};
use crate::messages::{
    KannelBest, OursFigures, RECEIPT_DELAY, SHAPES, ceiling_run, flush_bench_redis, http_in_flight,
    shape, start_messaging_gateway,
};

const SYSTEM_ID: &str = "benchcust";
/// SMPP passwords have at most 8 characters.
const PASSWORD: &str = "Bc7pW2xq";

/// Counts and lengths, full or quick (the smoke run of `make test`).
pub struct CustPlan {
    pub runs: usize,
    /// Submits at saturation, over all binds.
    pub n: u64,
    pub warmup: u64,
    /// Length of the paced latency phase.
    pub paced: Duration,
    /// Submits of the raw exchange (it is much faster: more, for a measurable time).
    pub ceiling_n: u64,
    /// Bounds every phase's wait.
    pub limit: Duration,
}

impl CustPlan {
    pub fn new(quick: bool) -> Self {
        if quick {
            CustPlan {
                runs: 1,
                n: 1_000,
                warmup: 100,
                paced: Duration::from_millis(500),
                ceiling_n: 4_000,
                limit: Duration::from_secs(60),
            }
        } else {
            CustPlan {
                runs: 5,
                n: 40_000,
                warmup: 2_000,
                paced: Duration::from_secs(3),
                ceiling_n: 200_000,
                limit: Duration::from_secs(120),
            }
        }
    }
}

/// One load through the gateway's SMPP server, as the customer and the sink saw it.
#[derive(Debug, Default)]
struct Phase {
    accepted: u64,
    refused: u64,
    first_refusal: Option<u32>,
    /// Receipts the gateway answered the sink with an error (not resent, so not coming back).
    receipts_refused: u64,
    /// Receipts read beyond one per accepted submit (the outbox delivers at least once).
    extra_receipts: u64,
    accepted_per_s: f64,
    sink_submits_per_s: f64,
    receipts_per_s: f64,
    latencies_ms: Vec<f64>,
}

impl Phase {
    /// The slowest stage: what the path sustains end to end.
    fn end_to_end(&self) -> f64 {
        self.accepted_per_s
            .min(self.sink_submits_per_s)
            .min(self.receipts_per_s)
    }
}

/// Rate of `count` over `from` → `to` (NaN without an end).
fn rate(count: u64, from: Instant, to: Option<Instant>) -> f64 {
    match to {
        Some(t) => count as f64 / t.saturating_duration_since(from).as_secs_f64().max(1e-9),
        None => f64::NAN,
    }
}

/// `total` submits split over the customer's `sessions`, `window` in flight on each (paced
/// at `pace` msgs/s in all when set); ends once every submit is answered and every accepted
/// one's receipt has come back on one of the sessions.
async fn phase(
    sink: &ReceiptSink,
    sessions: &mut Vec<PipelinedSession>,
    window: u32,
    total: u64,
    pace: Option<f64>,
    limit: Duration,
) -> Result<Phase> {
    let binds = sessions.len() as u64;
    let per = total / binds;
    let tally = ReceiptTally::new(per * binds);
    let before = sink.counts();
    let load = Pipeline {
        rate: pace.map(|r| r / binds as f64),
        latencies: pace.is_some(),
        receipts: Some(tally.clone()),
        ..Pipeline::new(window as usize, per, Instant::now() + limit)
    };
    let mut tasks = Vec::new();
    for mut s in sessions.drain(..) {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let r = s.run(&load).await;
            (s, r)
        }));
    }
    // The sink does not resend a receipt the gateway answered with an error: the customer
    // will not get those (they are reported, as in the messages suite).
    let lost = {
        let (sink_counts, tally) = (sink.counter(), tally.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let failed = sink_counts().receipts_failed - before.receipts_failed;
                if failed > seen {
                    tally.expect_fewer(failed - seen);
                    seen = failed;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut runs = Vec::new();
    for t in tasks {
        let (s, r) = t.await?;
        sessions.push(s);
        let r = r.with_context(|| {
            let c = sink.counts();
            format!(
                "a customer session (at the sink: {} receipts sent, {} answered OK, {} with an error)",
                c.receipts_sent - before.receipts_sent,
                c.receipts_ok - before.receipts_ok,
                c.receipts_failed - before.receipts_failed
            )
        });
        runs.push(r);
    }
    lost.abort();
    let runs = runs.into_iter().collect::<Result<Vec<_>>>()?;
    let start = runs
        .iter()
        .filter_map(|r| r.started)
        .min()
        .context("no submit was sent")?;
    let last_resp = runs.iter().filter_map(|r| r.last_resp).max();
    let refused: u64 = runs.iter().map(|r| r.refused).sum();
    let accepted = runs.iter().map(|r| r.submits).sum::<u64>() - refused;
    // Every accepted submit reached the sink before its submit_sm_resp (we answer after the
    // vendor does): the sink's counters are complete now.
    let after = sink.counts();
    let at_sink = after.submits - before.submits;
    if at_sink < accepted {
        bail!("{accepted} submits accepted but only {at_sink} reached the sink");
    }
    Ok(Phase {
        accepted,
        refused,
        first_refusal: runs.iter().find_map(|r| r.first_refusal),
        receipts_refused: after.receipts_failed - before.receipts_failed,
        extra_receipts: tally.got().saturating_sub(tally.expected()),
        accepted_per_s: rate(accepted, start, last_resp),
        sink_submits_per_s: rate(at_sink, start, after.last_submit),
        receipts_per_s: rate(tally.got(), start, tally.last()),
        latencies_ms: runs.into_iter().flat_map(|r| r.latencies_ms).collect(),
    })
}

/// The customer's `binds` sessions, held for the whole run as a customer holds its binds.
/// The first is retried until the account row has reached the gateway (the listener may
/// accept before the first load of the accounts).
async fn bind_customer(smpp: u16, binds: u32, within: Duration) -> Result<Vec<PipelinedSession>> {
    let deadline = Instant::now() + within;
    let bind = || PipelinedSession::bind(smpp, SYSTEM_ID, PASSWORD, deadline);
    let first = smpp_e2e::wait::until("the customer's first bind", within, || async {
        Ok(Some(bind().await?))
    })
    .await?;
    let mut v = vec![first];
    for _ in 1..binds {
        v.push(bind().await?);
    }
    Ok(v)
}

struct Run {
    sat: Phase,
    half_rate: f64,
    p50: f64,
    p99: f64,
    ceiling_receipts: f64,
    peak_rss: f64,
    refusals: Vec<String>,
}

/// The submits each customer session keeps in flight at a vendor shape: as many in all as the
/// HTTP load keeps requests in flight at that shape, so the two front doors get the same
/// offered load. (At the vendor's own window, 10 in flight, a customer is bound by its
/// latency: the gateway's storing before and after the vendor leaves the vendor's window part
/// empty.)
fn customer_window(binds: u32, window: u32) -> u32 {
    http_in_flight(binds, window) / binds
}

async fn one_run(env: &Env, plan: &CustPlan, run: usize, (b, w): (u32, u32)) -> Result<Run> {
    let cw = customer_window(b, w);
    // The raw exchange first, on the same machine a moment before, at the customer's shape.
    let (_, ceiling_receipts) = ceiling_run(b, cw, plan.ceiling_n)
        .await
        .context("the raw exchange (sink alone)")?;
    flush_bench_redis(env).await?;
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let db = Db::fresh(env, "cust").await?;
    let result = async {
        // The sink writes decimal ids, and says so: under Auto a receipt that beats its own
        // mapping (this sink answers at once) waits out the exact-match grace (docs/receipts.md).
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, \
             system_type, is_active, max_binds, window_size, message_id_submit_format, \
             message_id_receipt_format) VALUES ('bench-cust', '127.0.0.1', {}, 'bench', 'pw', '', true, \
             {b}, {w}, 'Decimal', 'Decimal')",
            sink.port()
        ))
        .await?;
        // maxBinds above what the run holds (the probe holds one for a moment); no rate limit.
        write_account(
            &db.pool,
            &customer_config(SYSTEM_ID, PASSWORD, |c| c.max_binds = (2 * b).max(4) as i32),
        )
        .await?;
        let smpp = smpp_e2e::sink::free_port()?;
        let addr = format!("127.0.0.1:{smpp}");
        let mut gw = start_messaging_gateway(
            &db,
            env,
            &format!("bench-cust-{b}x{w}-{run}"),
            &[("SMPP_ADDR", &addr), ("SMPP_FAILED_BINDS_PER_MINUTE", "100000")],
        )
        .await?;
        sink.wait_for(Duration::from_secs(20), |c| c.open_binds >= u64::from(b))
            .await
            .with_context(|| format!("{b} vendor binds did not reach the sink within 20 s"))?;
        gw.wait_http("/ready", Duration::from_secs(20)).await?;
        let mut sessions = bind_customer(smpp, b, Duration::from_secs(20)).await?;
        let warm = phase(&sink, &mut sessions, cw, plan.warmup, None, plan.limit).await?;
        let sat = phase(&sink, &mut sessions, cw, plan.n, None, plan.limit).await?;
        let half_rate = sat.end_to_end() / 2.0;
        let n = (half_rate * plan.paced.as_secs_f64()).max(200.0) as u64;
        let lat = phase(&sink, &mut sessions, cw, n, Some(half_rate), plan.limit).await?;
        for s in sessions {
            s.unbind(Instant::now() + Duration::from_secs(10)).await?;
        }
        let peak_rss = peak_rss_mib(gw.pid())?;
        gw.stop(Duration::from_secs(10)).await;
        let refusals = [("warm-up", &warm), ("saturation", &sat), ("paced", &lat)]
            .into_iter()
            .filter(|(_, p)| p.refused > 0 || p.receipts_refused > 0 || p.extra_receipts > 0)
            .map(|(name, p)| {
                format!(
                    "{name}: {} of {} submits refused (first command_status {:#x}); {} of the sink's \
                     receipts answered with an error (the sink does not resend them, so the customer \
                     does not get them); {} receipts more than one per message came back",
                    p.refused,
                    p.refused + p.accepted,
                    p.first_refusal.unwrap_or(0),
                    p.receipts_refused,
                    p.extra_receipts
                )
            })
            .collect();
        Ok(Run {
            p50: percentile(&lat.latencies_ms, 50.0).unwrap_or(f64::NAN),
            p99: percentile(&lat.latencies_ms, 99.0).unwrap_or(f64::NAN),
            half_rate,
            sat,
            ceiling_receipts,
            peak_rss,
            refusals,
        })
    }
    .await;
    sink.stop();
    db.drop_db().await;
    result
}

const ACCEPTED: &str = "submits accepted (submit_sm_resp OK at the customer)";
const AT_SINK: &str = "submits at the sink (the vendor)";
const RECEIPTS: &str = "receipts back to the customer (deliver_sm read and answered)";
const RAW: &str = "raw exchange, same shape (sink alone): receipts";
const SHARE: &str = "receipts back ÷ raw exchange (same run)";
const P50: &str = "latency p50 submit_sm → submit_sm_resp at half of saturation";
const P99: &str = "latency p99 submit_sm → submit_sm_resp at half of saturation";

fn method(plan: &CustPlan, (b, w): (u32, u32)) -> String {
    let cw = customer_window(b, w);
    format!(
        "SMPP in → SMPP out → receipt back. One gateway process (release build, default settings, \
         `--smpp-addr` on 127.0.0.1; Redis of `make env-up`, the messages suite's database index, flushed \
         before each run) with one customer account row (forwardReceipts on, no rate limit, the default \
         route) and one vendor row (max_binds {b}, window_size {w}, message ids declared Decimal, as the \
         sink writes them) on the messaging sink, which sends each \
         receipt {} ms after its submit_sm_resp. The customer is {b} TRX session{} of the pipelined ESME of \
         e2e/src/sink/pipelined.rs (`PipelinedSession`, the client of the raw exchange too), bound for the whole run, \
         each keeping {cw} submit_sm in flight ({} in all: as many as the HTTP load of the messages suite \
         keeps requests in flight at this shape) and answering every deliver_sm at once; a receipt may come \
         back on any of the customer's sessions. Per run: the raw exchange ({} messages: the same client against the sink alone, same \
         sessions and window), then a warm-up of {} messages, {} messages at saturation, and latency of \
         submits paced at half of the end-to-end saturation rate for {} ms (from each submit's scheduled \
         time to its submit_sm_resp, which the gateway sends once the vendor has answered and the message \
         is stored). Rates are messages over the time from the first submit_sm to the last submit_sm_resp \
         OK (accepted), the last submit_sm at the sink, the last receipt read by the customer. Each phase \
         ends only when every accepted message's receipt is back at the customer.",
        RECEIPT_DELAY.as_millis(),
        if b == 1 { "" } else { "s" },
        cw * b,
        plan.ceiling_n,
        plan.warmup,
        plan.n,
        plan.paced.as_millis(),
    )
}

async fn section(env: &Env, plan: &CustPlan, sh: (u32, u32)) -> Section {
    let mut s = Section::new(
        format!("Customers over SMPP: {}", shape(sh.0, sh.1)),
        method(plan, sh),
    );
    let mut notes = Vec::new();
    for run in 0..plan.runs {
        match one_run(env, plan, run, sh).await {
            Ok(r) => {
                let mut put = |m: &str, unit, v| s.row(m, unit, None).per_run.push(v);
                put(ACCEPTED, "msg/s", r.sat.accepted_per_s);
                put(AT_SINK, "msg/s", r.sat.sink_submits_per_s);
                put(RECEIPTS, "msg/s", r.sat.receipts_per_s);
                put(RAW, "msg/s", r.ceiling_receipts);
                put(
                    SHARE,
                    "%",
                    100.0 * r.sat.receipts_per_s / r.ceiling_receipts,
                );
                put(P50, "ms", r.p50);
                put(P99, "ms", r.p99);
                put("half of saturation (the paced rate)", "msg/s", r.half_rate);
                put(
                    "peak RSS of the gateway over the run (VmHWM)",
                    "MiB",
                    r.peak_rss,
                );
                notes.extend(
                    r.refusals
                        .into_iter()
                        .map(|n| format!("Run {}, {n}", run + 1)),
                );
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    if notes.is_empty() && !s.rows.is_empty() {
        s.notes.push(
            "Every submit was accepted, the gateway answered every receipt of the sink OK, and every \
             receipt came back to the customer and was answered."
                .into(),
        );
    }
    s.notes.extend(notes);
    s
}

/// Ours over SMPP against Kannel's best HTTP figure and our HTTP path at the same shape, both
/// from the messages suite of this invocation (None / empty when it did not run).
fn comparisons(ours: &[((u32, u32), Option<f64>)], kannel: Option<&KannelBest>) -> Vec<Comparison> {
    let kset = kannel
        .and_then(|k| k.setting)
        .map(|(b, w)| format!("Kannel's best HTTP figure, sendsms → dlr-url at {b}×{w}"))
        .unwrap_or_else(|| {
            "Kannel's HTTP figure comes from the messages suite: run it too (`--only messages,customers`)"
                .into()
        });
    ours.iter()
        .map(|((b, w), rec)| Comparison {
            what: format!(
                "SMPP in → SMPP out → receipt back to the customer, msgs/s (ours {}; {kset})",
                shape(*b, *w)
            ),
            unit: "msg/s",
            ours: *rec,
            kannel: kannel.and_then(|k| k.receipts),
            better: Better::Higher,
        })
        .collect()
}

/// Our SMPP path against our HTTP path at the same shape, for the section's notes: against
/// the like-for-like figure (each receipt posted back to the HTTP customer's callback_url) and
/// the one where receipts are only stored.
fn against_http(smpp: Option<f64>, http: Option<&OursFigures>) -> Option<String> {
    let s = smpp?;
    let h = http?;
    let ratio = |x: Option<f64>| {
        x.filter(|x| *x > 0.0)
            .map(|x| format!("{x:.0} msg/s ({:.2}×)", s / x))
            .unwrap_or_else(|| "not measured".into())
    };
    (h.callback.is_some() || h.single.is_some()).then(|| {
        format!(
            "Same invocation, over SMPP with receipts back to the customer: {s:.0} msg/s. Our HTTP path \
             at this shape (messages suite, single messages), with each receipt posted back to the \
             customer's callback_url (like for like): {}; with receipts only stored, nobody told: {}.",
            ratio(h.callback),
            ratio(h.single),
        )
    })
}

/// The suite: each shape of the message suites; ratios against the messages suite's figures
/// when it ran before in this invocation.
pub async fn suite(
    env: &Env,
    quick: bool,
    kannel: Option<&KannelBest>,
    http: &[((u32, u32), OursFigures)],
) -> (Vec<Section>, Vec<Comparison>) {
    let plan = CustPlan::new(quick);
    let mut sections = Vec::new();
    let mut ours = Vec::new();
    for sh in SHAPES {
        crate::log(&format!(
            "customers: SMPP in → out → receipts back at {}, {} runs",
            shape(sh.0, sh.1),
            plan.runs
        ));
        let mut s = section(env, &plan, sh).await;
        let rec = s.median_of(RECEIPTS);
        let h = http.iter().find(|(x, _)| *x == sh).map(|(_, f)| f);
        s.notes.extend(against_http(rec, h));
        sections.push(s);
        ours.push((sh, rec));
    }
    (sections, comparisons(&ours, kannel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kannel_ratio_needs_the_messages_suite() {
        let ours = [((1, 10), Some(5000.0))];
        let alone = comparisons(&ours, None);
        assert_eq!(alone[0].kannel, None);
        assert!(alone[0].what.contains("--only messages,customers"));
        let k = KannelBest {
            setting: Some((1, 500)),
            receipts: Some(1000.0),
            ..Default::default()
        };
        let both = comparisons(&ours, Some(&k));
        assert_eq!(both[0].ratio(), Some(5.0));
        assert!(both[0].what.contains("1×500"), "{}", both[0].what);
    }

    #[test]
    fn http_note_only_with_both_figures() {
        let http = OursFigures {
            single: Some(1000.0),
            callback: Some(1500.0),
            ..Default::default()
        };
        assert!(against_http(Some(3000.0), None).is_none());
        assert!(against_http(None, Some(&http)).is_none());
        assert!(against_http(Some(3000.0), Some(&OursFigures::default())).is_none());
        let n = against_http(Some(3000.0), Some(&http)).unwrap();
        assert!(n.contains("1500 msg/s (2.00×)"), "{n}");
        assert!(n.contains("1000 msg/s (3.00×)"), "{n}");
        let only_stored = OursFigures {
            callback: None,
            ..http
        };
        let n = against_http(Some(3000.0), Some(&only_stored)).unwrap();
        assert!(
            n.contains("callback_url (like for like): not measured"),
            "{n}"
        );
    }

    #[test]
    fn rates_are_over_first_to_last() {
        let t = Instant::now();
        let r = rate(1000, t, Some(t + Duration::from_millis(500)));
        assert!((r - 2000.0).abs() < 1e-6);
        assert!(rate(1, t, None).is_nan());
        let p = Phase {
            accepted_per_s: 300.0,
            sink_submits_per_s: 200.0,
            receipts_per_s: 250.0,
            ..Default::default()
        };
        assert_eq!(p.end_to_end(), 200.0);
    }
}

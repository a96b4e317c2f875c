//! Gateway benchmarks against the compiled sink: row change → new bind, N vendors bound in one
//! process (time, RSS, idle CPU) and cold start with N rows (the figure Kannel is compared on).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::bench::{Below, Section, percentile};
use smpp_e2e::env::Env;
use smpp_e2e::sink::{Credentials, Sink};

use crate::common::{Db, cpu_percent, ms, peak_rss_mib, rss_mib, start_gateway};

/// Row change → new bind established at the sink.
pub async fn row_change(env: &Env, runs: usize, changes: usize) -> Section {
    let mut s = Section::new(
        "Gateway: row change → new bind",
        format!(
            "One vendor row, bound to the sink. {changes} changes per run, alternating an `UPDATE` of `password` \
             and of `port` (the sink listens on two ports) in `vendor_mgmt.service_providers`. Timed from just \
             before the `UPDATE` is sent to the moment the sink has sent bind_resp for a bind with the new \
             password/port (the sink's own clock; no polling). The next change starts once the old bind is \
             gone. p50/p99 (nearest rank: below 100 changes, p99 is the slowest one) per run over its {changes} \
             changes; the table shows the median of the runs."
        ),
    );
    for run in 0..runs {
        match row_change_run(env, run, changes).await {
            Ok(samples) => {
                s.row("p50", "ms", None)
                    .per_run
                    .push(percentile(&samples, 50.0).unwrap_or(f64::NAN));
                s.row("p99", "ms", Some(Below(500.0)))
                    .per_run
                    .push(percentile(&samples, 99.0).unwrap_or(f64::NAN));
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    s
}

async fn row_change_run(env: &Env, run: usize, changes: usize) -> Result<Vec<f64>> {
    let sink = Sink::start(Credentials::Any, 2).await?;
    let db = Db::fresh(env, "rowchange").await?;
    let result = async {
        let gw = start_gateway(&db, &format!("bench-rowchange-{run}")).await?;
        let sid = format!("rc{run}");
        let (mut port, mut pw) = (sink.ports()[0], "pw000".to_string());
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, system_type, is_active) \
             VALUES ('bench-rowchange', '127.0.0.1', {port}, '{sid}', '{pw}', '', true)"
        ))
        .await?;
        sink.wait_for(Duration::from_secs(20), |k| k.first_bind(|b| b.system_id == sid && b.password == pw))
            .await
            .context("the first bind never reached the sink within 20 s")?;
        let mut samples = Vec::with_capacity(changes);
        for i in 1..=changes {
            let set = if i % 2 == 1 {
                pw = format!("pw{i:03}");
                format!("password = '{pw}'")
            } else {
                port = if port == sink.ports()[0] { sink.ports()[1] } else { sink.ports()[0] };
                format!("port = {port}")
            };
            let t0 = Instant::now();
            db.exec(&format!("UPDATE vendor_mgmt.service_providers SET {set} WHERE instance_name = 'bench-rowchange'")).await?;
            let at = sink
                .wait_for(Duration::from_secs(10), |k| {
                    k.first_bind(|b| b.system_id == sid && b.password == pw && b.port == port && b.at >= t0)
                })
                .await
                .with_context(|| format!("change {i} ({set}) was not bound at the sink within 10 s"))?;
            samples.push(ms(t0, at));
            // Steady state before the next change: only the new bind open.
            sink.wait_for(Duration::from_secs(10), |k| (k.open_binds(&sid) == 1).then_some(()))
                .await
                .with_context(|| format!("after change {i} the old bind did not go away within 10 s"))?;
        }
        gw.stop(Duration::from_secs(10)).await;
        Ok(samples)
    }
    .await;
    sink.stop().await;
    db.drop_db().await;
    result
}

/// What one N-vendor run measured.
pub struct Fleet {
    pub all_bound_ms: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub idle_cpu_pct: f64,
}

/// N vendors × 1 bind inserted at once into a running gateway.
pub async fn many_vendors(env: &Env, runs: usize, n: usize, idle: Duration) -> Section {
    let mut s = Section::new(
        format!("Gateway: {n} vendors × 1 bind in one process"),
        format!(
            "A running gateway with an empty table; one `INSERT … SELECT generate_series(1,{n})` adds {n} rows \
             (each its own system_id, 1 bind, same sink). Timed from just before the INSERT to the sink's \
             bind_resp for the last of the {n} vendors. RSS (VmRSS) is read once all are bound; idle CPU is \
             the gateway's CPU time (all threads, schedstat) over {}s right after, in % of one core.",
            idle.as_secs()
        ),
    );
    for run in 0..runs {
        match many_vendors_run(env, run, n, idle).await {
            Ok(f) => {
                s.row("all bound", "s", Some(Below(30.0)))
                    .per_run
                    .push(f.all_bound_ms / 1000.0);
                s.row("RSS once bound", "MiB", Some(Below(256.0)))
                    .per_run
                    .push(f.rss_mib);
                s.row("peak RSS (VmHWM)", "MiB", None)
                    .per_run
                    .push(f.peak_rss_mib);
                s.row(
                    &format!("idle CPU over {}s", idle.as_secs()),
                    "% of a core",
                    Some(Below(2.0)),
                )
                .per_run
                .push(f.idle_cpu_pct);
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    s
}

async fn many_vendors_run(env: &Env, run: usize, n: usize, idle: Duration) -> Result<Fleet> {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let db = Db::fresh(env, "fleet").await?;
    let result = async {
        let gw = start_gateway(&db, &format!("bench-fleet-{n}-{run}")).await?;
        let prefix = format!("f{run}v");
        let t0 = Instant::now();
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, system_type, is_active) \
             SELECT 'bench-' || g, '127.0.0.1', {}, '{prefix}' || g, 'pw', '', true FROM generate_series(1, {n}) g",
            sink.port()
        ))
        .await?;
        let all = sink
            .wait_for(Duration::from_secs(120), |k| last_first_bind(k, &prefix, n))
            .await
            .with_context(|| format!("only {} of {n} vendors bound within 120 s", sink.open_system_ids()))?;
        let rss = rss_mib(gw.pid())?;
        let idle_cpu = cpu_percent(gw.pid(), idle).await?;
        let peak = peak_rss_mib(gw.pid())?;
        let still = sink.open_system_ids();
        if still < n {
            bail!("{} of {n} binds dropped during the idle window", n - still);
        }
        gw.stop(Duration::from_secs(20)).await;
        Ok(Fleet { all_bound_ms: ms(t0, all), rss_mib: rss, peak_rss_mib: peak, idle_cpu_pct: idle_cpu })
    }
    .await;
    sink.stop().await;
    db.drop_db().await;
    result
}

/// When every one of the `n` system_ids `<prefix>1..n` had its first bind; None until all have.
fn last_first_bind(k: &Sink, prefix: &str, n: usize) -> Option<Instant> {
    if k.open_system_ids() < n {
        return None;
    }
    let mut last = None;
    for i in 1..=n {
        let sid = format!("{prefix}{i}");
        let at = k.first_bind(|b| b.system_id == sid)?;
        last = Some(last.map_or(at, |l: Instant| l.max(at)));
    }
    last
}

/// What one cold-start run measured (ours or Kannel's): start → all bound, then the process
/// holding the N binds.
pub struct ColdStart {
    pub all_bound_ms: f64,
    pub rss_mib: f64,
    pub idle_cpu_pct: Option<f64>,
}

/// Records one cold-start run in `s` (rows shared by our section and Kannel's).
pub fn record_cold(
    s: &mut Section,
    run: usize,
    r: Result<ColdStart>,
    idle: Option<Duration>,
) -> bool {
    match r {
        Ok(c) => {
            s.row(COLD_TIME, "ms", None).per_run.push(c.all_bound_ms);
            s.row(COLD_RSS, "MiB", None).per_run.push(c.rss_mib);
            if let (Some(cpu), Some(w)) = (c.idle_cpu_pct, idle) {
                s.row(&cold_cpu(w), "% of a core", None).per_run.push(cpu);
            }
            true
        }
        Err(e) => {
            s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
            false
        }
    }
}

pub const COLD_TIME: &str = "all bound after start";
pub const COLD_RSS: &str = "RSS once all bound";
pub fn cold_cpu(idle: Duration) -> String {
    format!("idle CPU over {}s once bound", idle.as_secs())
}

/// RSS now and, if asked, CPU over the idle window: the process holding its binds.
pub async fn holding(pid: u32, idle: Option<Duration>) -> Result<(f64, Option<f64>)> {
    let rss = rss_mib(pid)?;
    let cpu = match idle {
        Some(w) => Some(cpu_percent(pid, w).await?),
        None => None,
    };
    Ok((rss, cpu))
}

/// Cold start: N rows already in the table, timed from spawning the gateway to all bound.
pub async fn cold_start(env: &Env, runs: usize, n: usize, idle: Option<Duration>) -> Section {
    let mut s = Section::new(
        format!("Gateway: cold start with {n} vendors"),
        format!(
            "{n} rows already in the table (1 bind each); timed from spawning the gateway process to the sink's \
             bind_resp for the last of the {n}. RSS is read then{}. Compared with Kannel starting with {n} SMSC groups.",
            idle.map(|w| format!(", idle CPU over the next {}s", w.as_secs()))
                .unwrap_or_default()
        ),
    );
    for run in 0..runs {
        if !record_cold(&mut s, run, cold_start_run(env, run, n, idle).await, idle) {
            break;
        }
    }
    s
}

async fn cold_start_run(
    env: &Env,
    run: usize,
    n: usize,
    idle: Option<Duration>,
) -> Result<ColdStart> {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let db = Db::fresh(env, "cold").await?;
    let result = async {
        let prefix = format!("c{run}v");
        db.exec(&format!(
            "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, system_type, is_active) \
             SELECT 'bench-' || g, '127.0.0.1', {}, '{prefix}' || g, 'pw', '', true FROM generate_series(1, {n}) g",
            sink.port()
        ))
        .await?;
        let t0 = Instant::now();
        let gw = start_gateway(&db, &format!("bench-cold-{run}")).await?;
        let all = sink
            .wait_for(Duration::from_secs(90), |k| last_first_bind(k, &prefix, n))
            .await
            .with_context(|| format!("only {} of {n} vendors bound within 90 s", sink.open_system_ids()))?;
        let (rss_mib, idle_cpu_pct) = holding(gw.pid(), idle).await?;
        gw.stop(Duration::from_secs(20)).await;
        Ok(ColdStart { all_bound_ms: ms(t0, all), rss_mib, idle_cpu_pct })
    }
    .await;
    sink.stop().await;
    db.drop_db().await;
    result
}

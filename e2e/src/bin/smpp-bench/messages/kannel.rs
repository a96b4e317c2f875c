//! Kannel on the message path: bearerbox + smsbox against the messaging sink, tried at each
//! SMSC setting, driven by the same HTTP load generator as ours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use smpp_e2e::bench::{Section, percentile};
use smpp_e2e::process::ChildGuard;
use smpp_e2e::sink::{ReceiptConfig, ReceiptSink};

use super::{MsgPlan, Phase, RECEIPT_DELAY, Receipts, closed, phase};
use crate::common::log_dir;
use crate::load::{self, Counter, Load};

const BEARERBOX: &str = "/usr/sbin/bearerbox";
const SMSBOX: &str = "/usr/sbin/smsbox";

/// kannel.conf of the message benchmark: bearerbox with `binds` SMPP transceivers (one
/// smsc-id, so Kannel spreads the load over them and finds a receipt whichever bind it comes
/// on), each with `window` max-pending-submits and no throughput limit; smsbox with a
/// sendsms user. Logs at warning level; no store file (messages in memory, Kannel's fastest).
pub fn messages_conf(
    dir: &Path,
    ports: KannelPorts,
    sink_port: u16,
    binds: u32,
    window: u32,
) -> String {
    let mut c = format!(
        "group = core\nadmin-port = {admin}\nadmin-password = bench\nsmsbox-port = {smsbox}\n\
         admin-allow-ip = \"127.0.0.1\"\nbox-allow-ip = \"127.0.0.1\"\nlog-file = \"{dir}/bearerbox.log\"\n\
         log-level = 2\ndlr-storage = internal\n\n\
         group = smsbox\nbearerbox-host = 127.0.0.1\nbearerbox-port = {smsbox}\nsendsms-port = {http}\n\
         log-file = \"{dir}/smsbox.log\"\nlog-level = 2\n\n\
         group = sendsms-user\nusername = bench\npassword = bench\nmax-messages = 1\n",
        admin = ports.admin,
        smsbox = ports.smsbox,
        http = ports.http,
        dir = dir.display()
    );
    for _ in 0..binds {
        let _ = write!(
            c,
            "\ngroup = smsc\nsmsc = smpp\nsmsc-id = bench\nhost = 127.0.0.1\nport = {sink_port}\nreceive-port = 0\n\
             transceiver-mode = true\nsmsc-username = \"kannel\"\nsmsc-password = \"pw\"\nsystem-type = \"\"\n\
             interface-version = 34\nmax-pending-submits = {window}\nthroughput = 0\nreconnect-delay = 1\n\
             enquire-link-interval = 30\n"
        );
    }
    c
}

#[derive(Clone, Copy)]
pub struct KannelPorts {
    pub admin: u16,
    pub smsbox: u16,
    pub http: u16,
}

/// bearerbox and smsbox on one conf; both killed on drop.
struct Kannel {
    dir: PathBuf,
    http: u16,
    bearerbox: Option<ChildGuard>,
    smsbox: Option<ChildGuard>,
}

impl Kannel {
    async fn start(sink: &ReceiptSink, binds: u32, window: u32) -> Result<Self> {
        for b in [BEARERBOX, SMSBOX] {
            if !Path::new(b).exists() {
                bail!("{b} is missing (make bench installs the Debian package `kannel`)");
            }
        }
        let dir = log_dir().join(format!("kannel-msgs-{binds}x{window}"));
        std::fs::create_dir_all(&dir)?;
        let free = smpp_e2e::sink::free_port;
        let ports = KannelPorts {
            admin: free()?,
            smsbox: free()?,
            http: free()?,
        };
        let conf = dir.join("kannel.conf");
        std::fs::write(
            &conf,
            messages_conf(&dir, ports, sink.port(), binds, window),
        )?;
        let spawn = |bin: &str, name: &str| -> Result<ChildGuard> {
            let out = std::fs::File::create(dir.join(format!("{name}.stdout")))?;
            let mut cmd = Command::new(bin);
            cmd.arg(&conf)
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            ChildGuard::spawn(name, cmd)
        };
        let before = sink.counts().open_binds;
        let mut k = Kannel {
            dir: dir.clone(),
            http: ports.http,
            bearerbox: Some(spawn(BEARERBOX, "bearerbox")?),
            smsbox: None,
        };
        let want = before + u64::from(binds);
        let end = Instant::now() + Duration::from_secs(30);
        while sink.counts().open_binds < want {
            if k.bearerbox.as_mut().is_none_or(|c| c.has_exited()) {
                bail!("bearerbox exited (see {})", dir.display());
            }
            if Instant::now() > end {
                bail!(
                    "Kannel did not bind {binds} times within 30 s (see {})",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        k.smsbox = Some(spawn(SMSBOX, "smsbox")?);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if k.smsbox.as_mut().is_none_or(|c| c.has_exited()) {
                bail!("smsbox exited (see {})", dir.display());
            }
            if smpp_e2e::http::get(&smpp_e2e::http::local(ports.http, "/"), &[])
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "smsbox did not answer HTTP within 30 s (see {})",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(k)
    }

    fn pids(&self) -> Vec<u32> {
        [&self.bearerbox, &self.smsbox]
            .into_iter()
            .flatten()
            .map(|c| c.id())
            .collect()
    }

    /// SIGTERM smsbox then bearerbox, each up to 15 s, then kill what is left.
    async fn stop(mut self) {
        for c in [self.smsbox.take(), self.bearerbox.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            c.signal(libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while !c.has_exited() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.kill();
        }
        let _ = &self.dir;
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        for c in [self.smsbox.take(), self.bearerbox.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            c.kill();
        }
    }
}

fn kannel_request(dlr_port: u16) -> load::MakeRequest {
    let dlr = load::urlencode(&format!("http://127.0.0.1:{dlr_port}/dlr?type=%d"));
    let req = load::get(&format!(
        "/cgi-bin/sendsms?username=bench&password=bench&to=4915112345678&from=4912345&text=bench+message\
         &dlr-mask=1&dlr-url={dlr}"
    ));
    Arc::new(move |_| req.clone())
}

fn judge_kannel() -> load::Judge {
    Arc::new(|status, _| {
        if status == 202 || status == 200 {
            (1, 0)
        } else {
            (0, 1)
        }
    })
}

struct KannelRun {
    sat: Phase,
    p50: f64,
    p99: f64,
    half_rate: f64,
}

async fn kannel_run(plan: &MsgPlan, binds: u32, window: u32) -> Result<KannelRun> {
    let sink = ReceiptSink::start(ReceiptConfig {
        receipt_delay: Some(RECEIPT_DELAY),
    })
    .await?;
    let counter = Counter::start("type=1").await?;
    let result = async {
        let k = Kannel::start(&sink, binds, window).await?;
        let port = k.http;
        let conns = 32;
        let settle = Duration::from_secs(120);
        let rc = || Receipts::Counter(&counter);
        let make = kannel_request(counter.port);
        phase(
            &sink,
            rc(),
            closed(
                port,
                conns,
                500.min(plan.kannel_n),
                make.clone(),
                judge_kannel(),
            ),
            &[],
            settle,
        )
        .await?;
        let sat = phase(
            &sink,
            rc(),
            closed(port, conns, plan.kannel_n, make.clone(), judge_kannel()),
            &k.pids(),
            settle,
        )
        .await?;
        let half_rate = sat.end_to_end() / 2.0;
        let n = (half_rate * plan.paced.as_secs_f64()).max(200.0) as u64;
        let lat = phase(
            &sink,
            rc(),
            Load {
                rate: Some(half_rate),
                latencies: true,
                ..closed(port, conns, n, make, judge_kannel())
            },
            &[],
            settle,
        )
        .await?;
        k.stop().await;
        Ok(KannelRun {
            p50: percentile(&lat.latencies_ms, 50.0).unwrap_or(f64::NAN),
            p99: percentile(&lat.latencies_ms, 99.0).unwrap_or(f64::NAN),
            half_rate,
            sat,
        })
    }
    .await;
    counter.stop();
    sink.stop();
    result
}

/// Kannel's medians at its best setting (by receipts/s at the dlr-url).
#[derive(Default, Clone)]
pub struct KannelBest {
    pub setting: Option<(u32, u32)>,
    pub receipts: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub rss: Option<f64>,
    /// Receipts/s per setting tried.
    pub by_setting: Vec<((u32, u32), Option<f64>)>,
}

pub async fn kannel(plan: &MsgPlan) -> (Vec<Section>, KannelBest) {
    let mut sections = Vec::new();
    let mut best = KannelBest::default();
    for &(binds, window) in &plan.kannel_settings {
        let mut s = Section::new(
            format!(
                "Messages: Kannel, {} SMPP bind{} × max-pending-submits {window}",
                binds,
                if binds == 1 { "" } else { "s" }
            ),
            format!(
                "Kannel {} (bearerbox + smsbox; the config is written to target/bench-logs/kannel-msgs-{binds}x{window}/\
                 kannel.conf by `messages_conf`: throughput = 0, max-pending-submits = {window}, {binds} transceiver \
                 group(s) with one smsc-id, internal DLR storage, no store file, log level 2) on the same messaging \
                 sink (receipt {} ms after submit_sm_resp). The same load generator sends GET /cgi-bin/sendsms with \
                 dlr-mask=1 and a dlr-url on a counter in this process. Per run: a warm-up, {} messages at saturation \
                 (32 connections), then latency paced at half of the end-to-end rate (HTTP answer only: smsbox \
                 answers 202 once bearerbox has queued the message, before any SMPP). Rates are over the time from \
                 the load's start to the last HTTP answer / submit_sm at the sink / dlr-url call (delivered). RSS is \
                 bearerbox + smsbox, peak while saturated.",
                crate::kannel::version(),
                RECEIPT_DELAY.as_millis(),
                plan.kannel_n
            ),
        );
        for run in 0..plan.slow_runs {
            match kannel_run(plan, binds, window).await {
                Ok(r) => {
                    s.row("HTTP accepted", "msg/s", None)
                        .per_run
                        .push(r.sat.http_per_s);
                    s.row("submits at the sink", "msg/s", None)
                        .per_run
                        .push(r.sat.submits_per_s);
                    s.row("receipts at the dlr-url", "msg/s", None)
                        .per_run
                        .push(r.sat.receipts_per_s);
                    s.row("HTTP latency p50 at half of saturation", "ms", None)
                        .per_run
                        .push(r.p50);
                    s.row("HTTP latency p99 at half of saturation", "ms", None)
                        .per_run
                        .push(r.p99);
                    s.row("half of saturation (the paced rate)", "msg/s", None)
                        .per_run
                        .push(r.half_rate);
                    s.row("RSS (bearerbox + smsbox) while saturated", "MiB", None)
                        .per_run
                        .push(r.sat.rss_mib);
                    if r.sat.refused > 0 {
                        s.notes.push(format!(
                            "Run {}: {} refused answers; first: {}",
                            run + 1,
                            r.sat.refused,
                            r.sat.first_refusal.as_deref().unwrap_or("—")
                        ));
                    }
                }
                Err(e) => {
                    s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                    break;
                }
            }
        }
        let rec = s.median_of("receipts at the dlr-url");
        best.by_setting.push(((binds, window), rec));
        if let Some(r) = rec
            && best.receipts.is_none_or(|b| r > b)
        {
            best = KannelBest {
                setting: Some((binds, window)),
                receipts: Some(r),
                p50: s.median_of("HTTP latency p50 at half of saturation"),
                p99: s.median_of("HTTP latency p99 at half of saturation"),
                rss: s.median_of("RSS (bearerbox + smsbox) while saturated"),
                by_setting: std::mem::take(&mut best.by_setting),
            };
        }
        sections.push(s);
    }
    (sections, best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_has_one_smsc_group_per_bind_with_the_window() {
        let p = KannelPorts {
            admin: 1,
            smsbox: 2,
            http: 3,
        };
        let c = messages_conf(Path::new("/tmp/k"), p, 2775, 4, 100);
        assert_eq!(c.matches("group = smsc\n").count(), 4);
        assert_eq!(
            c.matches("max-pending-submits = 100\nthroughput = 0")
                .count(),
            4
        );
        assert!(c.contains("sendsms-port = 3"));
        assert!(c.contains("group = sendsms-user"));
    }
}

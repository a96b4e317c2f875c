//! The peer: Kannel's bearerbox (Debian package `kannel`) binding to the same sink. Kannel has
//! no hot reload of an SMSC, so a config change is "edit kannel.conf, restart bearerbox".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::bench::Section;
use smpp_e2e::process::ChildGuard;
use smpp_e2e::sink::{Credentials, Sink, free_port};

use crate::common::{log_dir, ms};
use crate::gateway::{ColdStart, holding, record_cold};

pub const BEARERBOX: &str = "/usr/sbin/bearerbox";

/// One `group = smsc` of kannel.conf.
pub struct Smsc {
    pub id: String,
    pub system_id: String,
    pub password: String,
    pub port: u16,
}

/// kannel.conf text: a core group on the given ports and one SMPP transceiver per `smscs`.
pub fn conf(admin_port: u16, smsbox_port: u16, log: &Path, smscs: &[Smsc]) -> String {
    let mut c = format!(
        "group = core\nadmin-port = {admin_port}\nadmin-password = bench\nsmsbox-port = {smsbox_port}\n\
         admin-allow-ip = \"127.0.0.1\"\nbox-allow-ip = \"127.0.0.1\"\nlog-file = \"{}\"\nlog-level = 1\n\n\
         # bearerbox refuses an smsbox-port without this group; no smsbox is started.\n\
         group = smsbox\nbearerbox-host = 127.0.0.1\n",
        log.display()
    );
    for s in smscs {
        let _ = write!(
            c,
            "\ngroup = smsc\nsmsc = smpp\nsmsc-id = {}\nhost = 127.0.0.1\nport = {}\nreceive-port = 0\n\
             transceiver-mode = true\nsmsc-username = \"{}\"\nsmsc-password = \"{}\"\nsystem-type = \"VMA\"\ninterface-version = 34\n\
             reconnect-delay = 1\nenquire-link-interval = 30\n",
            s.id, s.port, s.system_id, s.password
        );
    }
    c
}

/// A bearerbox on a conf file of its own.
struct Bearerbox {
    dir: PathBuf,
    admin: u16,
    smsbox: u16,
    child: Option<ChildGuard>,
}

impl Bearerbox {
    fn new(tag: &str) -> Result<Self> {
        if !Path::new(BEARERBOX).exists() {
            bail!("{BEARERBOX} is missing (make bench installs the Debian package `kannel`)");
        }
        let dir = log_dir().join(format!("kannel-{tag}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Bearerbox {
            dir,
            admin: free_port()?,
            smsbox: free_port()?,
            child: None,
        })
    }

    fn write_conf(&self, smscs: &[Smsc]) -> Result<PathBuf> {
        let path = self.dir.join("kannel.conf");
        std::fs::write(
            &path,
            conf(
                self.admin,
                self.smsbox,
                &self.dir.join("bearerbox.log"),
                smscs,
            ),
        )?;
        Ok(path)
    }

    fn start(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))?;
        let mut cmd = Command::new(BEARERBOX);
        cmd.arg(self.dir.join("kannel.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        self.child = Some(ChildGuard::spawn("bearerbox", cmd)?);
        Ok(())
    }

    /// Waits until `pred` holds at the sink; fails at once when bearerbox exits (bad config).
    async fn wait_bound<T>(
        &mut self,
        sink: &Sink,
        timeout: Duration,
        pred: impl Fn(&Sink) -> Option<T>,
    ) -> Result<T> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = sink.wait_for(Duration::from_millis(200), &pred).await {
                return Ok(v);
            }
            if self.child.as_mut().is_none_or(|c| c.has_exited()) {
                bail!("bearerbox exited (last log line: {})", self.last_log_line());
            }
            if Instant::now() > end {
                bail!(
                    "not bound within {timeout:?} (last bearerbox log line: {})",
                    self.last_log_line()
                );
            }
        }
    }

    fn last_log_line(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("bearerbox.log")).unwrap_or_default();
        let line = text
            .lines()
            .rev()
            .find(|l| !l.contains("PANIC: /"))
            .unwrap_or("(empty log)");
        format!("{line} — see {}", self.dir.display())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM and wait for the exit (bearerbox unbinds its SMSCs first), at most `grace`.
    async fn stop(&mut self, grace: Duration) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        c.signal(libc::SIGTERM);
        let end = Instant::now() + grace;
        while !c.has_exited() {
            if Instant::now() > end {
                c.kill();
                bail!("bearerbox ignored SIGTERM for {grace:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Bearerbox {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

/// Installed Kannel version (dpkg), e.g. "1.4.5-12".
pub fn version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "kannel"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_else(|| "not installed".into())
}

/// Edit kannel.conf (new password) + restart bearerbox → SMSC bound with the new password.
pub async fn restart(runs: usize) -> Section {
    let mut s = Section::new(
        "Kannel: config change by restart → bound",
        "One SMPP transceiver SMSC group bound to the sink. Per run: rewrite kannel.conf with a new \
         smsc-password, then SIGTERM bearerbox, wait for it to exit, start it again. Timed from the SIGTERM \
         to the sink's bind_resp for a bind with the new password. `stop` and `start → bound` split that time.",
    );
    match restart_runs(runs).await {
        Ok(v) => {
            for (total, stop, start) in v {
                s.row("restart → bound", "ms", None).per_run.push(total);
                s.row("stop (SIGTERM → exit)", "ms", None)
                    .per_run
                    .push(stop);
                s.row("start → bound", "ms", None).per_run.push(start);
            }
        }
        Err(e) => s.not_measured = Some(format!("{e:#}")),
    }
    s
}

async fn restart_runs(runs: usize) -> Result<Vec<(f64, f64, f64)>> {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let mut bb = Bearerbox::new("restart")?;
    let result = async {
        let smsc = |pw: &str| {
            vec![Smsc {
                id: "bench".into(),
                system_id: "kannel".into(),
                password: pw.into(),
                port: sink.port(),
            }]
        };
        bb.write_conf(&smsc("kpw0"))?;
        bb.start()?;
        bb.wait_bound(&sink, Duration::from_secs(30), |k| {
            k.first_bind(|b| b.password == "kpw0")
        })
        .await
        .context("first start of bearerbox")?;
        let mut out = Vec::new();
        for run in 1..=runs {
            let pw = format!("kpw{run}");
            bb.write_conf(&smsc(&pw))?;
            let t0 = Instant::now();
            bb.stop(Duration::from_secs(30)).await?;
            let stopped = Instant::now();
            bb.start()?;
            let at = bb
                .wait_bound(&sink, Duration::from_secs(30), |k| {
                    k.first_bind(|b| b.password == pw)
                })
                .await
                .with_context(|| format!("run {run}: restarted bearerbox"))?;
            out.push((ms(t0, at), ms(t0, stopped), ms(stopped, at)));
        }
        bb.stop(Duration::from_secs(30)).await?;
        Ok(out)
    }
    .await;
    drop(bb);
    sink.stop().await;
    result
}

/// bearerbox started with N SMSC groups → all N bound.
pub async fn cold_start(runs: usize, n: usize, idle: Option<Duration>) -> Section {
    let mut s = Section::new(
        format!("Kannel: cold start with {n} SMSC groups"),
        format!(
            "kannel.conf with {n} SMPP transceiver groups (one system_id each) on the sink; timed from spawning \
             bearerbox to the sink's bind_resp for the last of the {n}. RSS of bearerbox is read then{}.",
            idle.map(|w| format!(", idle CPU over the next {}s", w.as_secs()))
                .unwrap_or_default()
        ),
    );
    for run in 0..runs {
        if !record_cold(&mut s, run, cold_start_run(run, n, idle).await, idle) {
            break;
        }
    }
    s
}

async fn cold_start_run(run: usize, n: usize, idle: Option<Duration>) -> Result<ColdStart> {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let mut bb = Bearerbox::new(&format!("cold{n}"))?;
    let result = async {
        let smscs: Vec<Smsc> = (1..=n)
            .map(|i| Smsc {
                id: format!("s{i}"),
                system_id: format!("k{run}v{i}"),
                password: "pw".into(),
                port: sink.port(),
            })
            .collect();
        bb.write_conf(&smscs)?;
        let t0 = Instant::now();
        bb.start()?;
        let prefix = format!("k{run}v");
        let at = bb
            .wait_bound(&sink, Duration::from_secs(90), |k| {
                if k.open_system_ids() < n {
                    return None;
                }
                (1..=n)
                    .map(|i| k.first_bind(|b| b.system_id == format!("{prefix}{i}")))
                    .try_fold(t0, |m, a| a.map(|a| m.max(a)))
            })
            .await
            .with_context(|| format!("{} of {n} Kannel SMSCs bound", sink.open_system_ids()))?;
        let (rss_mib, idle_cpu_pct) =
            holding(bb.pid().context("bearerbox is not running")?, idle).await?;
        bb.stop(Duration::from_secs(60)).await?;
        Ok(ColdStart {
            all_bound_ms: ms(t0, at),
            rss_mib,
            idle_cpu_pct,
        })
    }
    .await;
    drop(bb);
    sink.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_has_core_and_one_group_per_smsc() {
        let smscs = [
            Smsc {
                id: "a".into(),
                system_id: "u1".into(),
                password: "p1".into(),
                port: 2775,
            },
            Smsc {
                id: "b".into(),
                system_id: "u2".into(),
                password: "p2".into(),
                port: 2776,
            },
        ];
        let c = conf(1, 2, Path::new("/tmp/bb.log"), &smscs);
        assert_eq!(c.matches("group = core").count(), 1);
        assert_eq!(c.matches("group = smsc").count(), 2);
        assert!(c.contains("smsc-username = \"u2\"\nsmsc-password = \"p2\""));
        assert!(c.contains("port = 2776\nreceive-port = 0\ntransceiver-mode = true"));
    }
}

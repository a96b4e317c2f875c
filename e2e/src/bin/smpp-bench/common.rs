//! What every benchmark needs: a fresh database, the gateway and operator processes, /proc
//! figures (RSS, CPU).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use smpp_e2e::env::Env;
use smpp_e2e::process::{ChildGuard, repo_root};
use smpp_e2e::sink::free_port;
use sqlx::{Executor, PgPool};

/// Where the benchmark logs go (target/bench-logs).
pub fn log_dir() -> PathBuf {
    let d = repo_root().join("target/bench-logs");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// A database of its own on the environment's PostgreSQL, migrated, dropped on `drop_db`.
pub struct Db {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin: PgPool,
}

impl Db {
    pub async fn fresh(env: &Env, tag: &str) -> Result<Self> {
        let db = env.fresh_db(&format!("bench_{tag}")).await?;
        smpp_db::migrate::migrate(&db.pool)
            .await
            .context("applying migrations to the bench database")?;
        Ok(Db {
            name: db.name,
            url: db.url,
            pool: db.pool,
            admin: env
                .pg_pool()
                .await
                .context("connecting to the environment's PostgreSQL")?,
        })
    }

    pub async fn exec(&self, sql: &str) -> Result<u64> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Drops the database (after its clients are gone).
    pub async fn drop_db(self) {
        self.pool.close().await;
        let _ = self
            .admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await;
    }
}

/// A benchmarked process (gateway or operator) with its HTTP port and log.
pub struct Proc {
    pub guard: ChildGuard,
    pub http: u16,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, http: u16) -> Result<Self> {
        let log = log_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let guard = ChildGuard::spawn(name, cmd)?;
        Ok(Proc { guard, http, log })
    }

    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Waits until GET `path` answers 200; fails early when the process exits.
    pub async fn wait_http(&mut self, path: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.guard.has_exited() {
                bail!(
                    "{} exited during start-up (log: {})",
                    self.guard.name(),
                    self.log.display()
                );
            }
            if smpp_e2e::http::get(&smpp_e2e::http::local(self.http, path), &[])
                .await
                .is_ok_and(|a| a.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > end {
                bail!(
                    "{} did not answer {path} within {timeout:?} (log: {})",
                    self.guard.name(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then up to `grace` for a clean exit; the guard kills whatever is left.
    pub async fn stop(mut self, grace: Duration) {
        self.guard.signal(libc::SIGTERM);
        let end = Instant::now() + grace;
        while !self.guard.has_exited() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.guard.kill();
    }
}

/// A workspace binary next to this one (target/release when `make bench` built it).
pub fn sibling_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("smpp-bench has no parent dir")?
        .join(name);
    if !p.exists() {
        bail!(
            "{} is not built (make bench runs `cargo build --release --bins` first)",
            p.display()
        );
    }
    Ok(p)
}

/// The smpp-gateway process on `db`, named `pod`.
pub async fn start_gateway(db: &Db, pod: &str) -> Result<Proc> {
    let http = free_port()?;
    let mut cmd = Command::new(sibling_bin("smpp-gateway")?);
    cmd.env("DATABASE_URL", &db.url)
        .env("POD_NAME", pod)
        .env("HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "warn");
    let mut p = Proc::spawn(pod, cmd, http)?;
    p.wait_http("/health", Duration::from_secs(20)).await?;
    Ok(p)
}

/// Resident set size of `pid` in MiB (VmRSS).
pub fn rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmRSS:").map(|k| k / 1024.0)
}

/// Peak resident set size of `pid` in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmHWM:").map(|k| k / 1024.0)
}

fn status_kib(pid: u32, field: &str) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The value in kB of `field` in a /proc/<pid>/status text.
pub fn parse_status_kib(text: &str, field: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time of all of `pid`'s threads in ns, from the scheduler's own accounting
/// (/proc/<pid>/task/*/schedstat). utime/stime in /proc/<pid>/stat are sampled at the 100 Hz
/// tick and miss the short wake-ups an idle process with 1,000 binds is made of.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may exit between the listing and the read; it is not idle work then.
        if let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) {
            total += parse_schedstat_ns(&text).context("unparsable schedstat")?;
        }
    }
    Ok(total)
}

/// Time on CPU (ns), the first field of a schedstat line.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU use of `pid` over `window`, in percent of one core.
pub async fn cpu_percent(pid: u32, window: Duration) -> Result<f64> {
    let t0 = Instant::now();
    let a = cpu_ns(pid)?;
    tokio::time::sleep(window).await;
    let b = cpu_ns(pid)?;
    Ok(b.saturating_sub(a) as f64 / 1e9 / t0.elapsed().as_secs_f64() * 100.0)
}

/// Milliseconds between two instants (0 when `b` is before `a`).
pub fn ms(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

/// Output of a command, or an error naming it with its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_first_field_is_ns_on_cpu() {
        assert_eq!(
            parse_schedstat_ns("260340358 220227021 866\n"),
            Some(260_340_358)
        );
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let s = "Name:\tsmpp-gateway\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(s, "VmRSS:"), Some(10240.0));
        assert_eq!(parse_status_kib(s, "VmSwap:"), None);
    }
}

//! Shared by the gateway end-to-end tests: a fresh database per test on the environment's
//! PostgreSQL, the real smpp-gateway binary under a ChildGuard, and small HTTP/SQL helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use smpp_e2e::env::Env;
use smpp_e2e::process::{ChildGuard, repo_root, workspace_bin};
use smpp_e2e::wait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Result<T = ()> = anyhow::Result<T>;

/// A database of its own on the environment's PostgreSQL, so tests never see each other.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A database on a private PostgreSQL (tests that stop the server).
    pub async fn on(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self {
            url: url.to_string(),
            pool,
        })
    }

    pub async fn new() -> Result<Self> {
        let db = Env::load()?.fresh_db("gwtest").await?;
        Ok(Self {
            url: db.url,
            pool: db.pool,
        })
    }

    /// Waits until a gateway has created the schema (it migrates at start).
    pub async fn wait_schema(&self) -> Result<()> {
        wait::until("vendor_mgmt schema", Duration::from_secs(20), || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='vendor_mgmt' AND table_name='gateway_pods'",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok((n == 1).then_some(()))
        })
        .await
    }

    /// The old way: an INSERT with only the legacy columns (plus the optional new ones given).
    pub async fn insert_legacy(
        &self,
        name: &str,
        port: u16,
        user: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> Result<String> {
        let mut cols =
            String::from("instance_name, host, port, username, password, system_type, is_active");
        let mut vals = format!("'{name}', '127.0.0.1', {port}, '{user}', '{password}', '', true");
        for (c, v) in extra {
            cols.push_str(&format!(", {c}"));
            vals.push_str(&format!(", {v}"));
        }
        let sql = format!(
            "INSERT INTO vendor_mgmt.service_providers ({cols}) VALUES ({vals}) RETURNING id::text"
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?)
    }

    /// `UPDATE vendor_mgmt.service_providers SET <set> WHERE id = <id>`: the hand edit most
    /// gateway tests make to a vendor row.
    pub async fn update(&self, id: &str, set: &str) -> Result<()> {
        self.exec(&format!(
            "UPDATE vendor_mgmt.service_providers SET {set} WHERE id='{id}'"
        ))
        .await
    }

    pub async fn exec(&self, sql: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// (slot, pod, state, last_error) of a vendor's slots.
    pub async fn slots(
        &self,
        vendor_id: &str,
    ) -> Result<Vec<(i32, String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT slot, pod, state, last_error FROM vendor_mgmt.vendor_sessions WHERE vendor_id::text = $1 ORDER BY slot",
        )
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

pub fn free_port() -> u16 {
    smpp_e2e::sink::free_port().expect("a free port on 127.0.0.1")
}

/// A running smpp-gateway process.
pub struct Gateway {
    pub guard: ChildGuard,
    pub http: u16,
    pub pod: String,
    pub log: PathBuf,
}

impl Gateway {
    pub async fn start(db: &TestDb, pod: &str) -> Result<Self> {
        Self::start_with(db, pod, &[]).await
    }

    /// Starts the gateway as pod `<pod>-<random>`, so concurrent runs of the same test never
    /// share a pod name or a log file.
    pub async fn start_with(db: &TestDb, pod: &str, env: &[(&str, &str)]) -> Result<Self> {
        let pod = &format!("{pod}-{:06x}", rand::random::<u32>() & 0xFF_FFFF);
        let http = free_port();
        let dir = repo_root().join("target/gateway-tests");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{pod}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(workspace_bin("smpp-gateway"));
        cmd.env("DATABASE_URL", &db.url)
            .env("POD_NAME", pod)
            .env("HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("RUST_LOG", "info")
            .env("BIND_TIMEOUT_SECONDS", "3")
            .env("CONNECT_TIMEOUT_SECONDS", "3")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let guard = ChildGuard::spawn(pod, cmd)?;
        let gw = Self {
            guard,
            http,
            pod: pod.into(),
            log,
        };
        wait::until("gateway /health", Duration::from_secs(20), || async {
            Ok(get(gw.http, "/health")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|_| ()))
        })
        .await?;
        Ok(gw)
    }

    pub async fn vendors(&self) -> Result<Value> {
        let (status, body) = get(self.http, "/api/v1/vendors").await?;
        anyhow::ensure!(status == 200, "GET /api/v1/vendors: {status}");
        Ok(serde_json::from_str(&body)?)
    }

    /// The vendor named `name` in /api/v1/vendors, if listed.
    pub async fn vendor(&self, name: &str) -> Result<Option<Value>> {
        let v = self.vendors().await?;
        Ok(v["vendors"]
            .as_object()
            .and_then(|m| m.values().find(|x| x["vendor_name"] == name).cloned()))
    }

    pub async fn bound(&self, name: &str) -> Result<u64> {
        Ok(self
            .vendor(name)
            .await?
            .map(|v| v["sessions_bound"].as_u64().unwrap_or(0))
            .unwrap_or(0))
    }

    /// Waits until the vendor's last_error starts with `reason` and returns it.
    pub async fn wait_error(&self, name: &str, reason: &str, timeout: Duration) -> Result<String> {
        wait::until(&format!("{name} last_error {reason}"), timeout, || async {
            let v = self.vendor(name).await?;
            let err = v
                .as_ref()
                .and_then(|v| v["last_error"].as_str().map(String::from));
            match err {
                Some(e) if e.starts_with(&format!("{reason}:")) => Ok(Some(e)),
                other => Err(anyhow::anyhow!("last_error is {other:?}")),
            }
        })
        .await
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(get(self.http, "/metrics").await?.1)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if any of `secrets` appears in this gateway's log.
    pub fn assert_no_secret_in_log(&self, secrets: &[&str]) {
        let text = self.log_text();
        assert!(
            !text.is_empty(),
            "the gateway log {} is empty",
            self.log.display()
        );
        for s in secrets {
            if let Some(line) = text.lines().find(|l| l.contains(s)) {
                panic!(
                    "secret found in the gateway log {}: {line}",
                    self.log.display()
                );
            }
        }
    }
}

/// Sum of a Prometheus counter/gauge over the series whose labels contain all `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Minimal HTTP/1.1 client (no extra dependency): returns status and body.
pub async fn request(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).unwrap_or("0").parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

pub async fn get(port: u16, path: &str) -> Result<(u16, String)> {
    request(port, "GET", path).await
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

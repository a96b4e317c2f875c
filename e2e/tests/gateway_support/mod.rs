//! Shared by the gateway end-to-end tests: a fresh database per test on the environment's
//! PostgreSQL, the real smpp-gateway binary under a ChildGuard, and small HTTP/SQL helpers
//! (the HTTP ones on smpp_e2e::http, with the gateway's port and bearer tokens filled in).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use smpp_e2e::env::Env;
use smpp_e2e::http;
pub use smpp_e2e::http::Answer;
use smpp_e2e::process::{ChildGuard, repo_root, workspace_bin};
use smpp_e2e::wait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
        // Every migration, not a table of an early one: a test that writes a newer column
        // would otherwise race the later migrations (ci saw "column message_id_submit_format
        // does not exist" with gateway_pods already there).
        let newest = *smpp_db::migrate::known_versions()
            .last()
            .expect("migrations");
        wait::until(
            "vendor_mgmt schema, every migration",
            Duration::from_secs(20),
            || async {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM _sqlx_migrations WHERE version = $1 AND success",
                )
                .bind(newest)
                .fetch_one(&self.pool)
                .await?;
                Ok((n == 1).then_some(()))
            },
        )
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

    /// SIGTERM, as Kubernetes stops a pod, and waits until the process has exited.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<()> {
        self.guard.signal(15);
        wait::until(
            &format!("{} exits after SIGTERM", self.pod),
            timeout,
            || {
                let exited = self.guard.has_exited();
                async move { Ok(exited.then_some(())) }
            },
        )
        .await
    }

    /// Stops the process (SIGSTOP) until the returned guard is dropped (SIGCONT), so a failing
    /// step never leaves it stopped.
    pub fn freeze(&self) -> impl Drop + '_ {
        struct Cont<'a>(&'a Gateway);
        impl Drop for Cont<'_> {
            fn drop(&mut self) {
                self.0.guard.signal(libc::SIGCONT);
            }
        }
        self.guard.signal(libc::SIGSTOP);
        Cont(self)
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(get(self.http, "/metrics").await?.1)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if any of `secrets` appears in this gateway's log, and if the log is missing or
    /// empty (a check of nothing would pass).
    pub fn assert_no_secret_in_log(&self, secrets: &[&str]) {
        let text = smpp_e2e::leak::read_log(&self.log);
        smpp_e2e::leak::assert_no_secret(
            &format!("the gateway log {}", self.log.display()),
            &text,
            secrets,
        );
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

/// `method` on the gateway at 127.0.0.1:`port`: status and body.
pub async fn request(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let a = http::request(method, &http::local(port, path), &[], b"").await?;
    Ok((a.status, a.body))
}

pub async fn get(port: u16, path: &str) -> Result<(u16, String)> {
    request(port, "GET", path).await
}

// ---------------------------------------------------------------------------------------------
// Messaging: API keys, callback secret, JSON requests with a bearer key, message status.

/// What a messaging gateway needs besides the database: Redis (the environment's), an API keys
/// file and a callback secret file, both written for this test under target/gateway-tests/.
pub struct Messaging {
    /// The bearer token of key [`Messaging::key_name`].
    pub token: String,
    pub key_name: String,
    pub keys_file: PathBuf,
    /// The HMAC key callbacks are signed with (the content of `secret_file`).
    pub secret: String,
    pub secret_file: PathBuf,
    pub redis_url: String,
}

/// Writes an API keys file (`<key_name>:<random token>`) and a callback secret file, and
/// returns them with the environment's REDIS_URL. Tokens and secrets are random and
/// distinctive, so a test can search the logs for them.
pub fn messaging_env() -> Result<Messaging> {
    let dir = repo_root().join("target/gateway-tests");
    std::fs::create_dir_all(&dir)?;
    let tag = format!("{:016x}", rand::random::<u64>());
    let key_name = format!("tester{}", &tag[..6]);
    let token = format!("tok{:032x}", rand::random::<u128>());
    let secret = format!("cbsecret{:032x}", rand::random::<u128>());
    let keys_file = dir.join(format!("api-keys-{tag}"));
    let secret_file = dir.join(format!("callback-secret-{tag}"));
    std::fs::write(&keys_file, format!("# test keys\n{key_name}:{token}\n"))?;
    std::fs::write(&secret_file, &secret)?;
    Ok(Messaging {
        token,
        key_name,
        keys_file,
        secret,
        secret_file,
        redis_url: Env::load()?.redis_url,
    })
}

impl Messaging {
    /// REDIS_URL, API_KEYS_FILE and CALLBACK_SECRET_FILE for [`Gateway::start_with`]; append
    /// test-specific pairs with [`Messaging::env_with`].
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("REDIS_URL", self.redis_url.as_str()),
            (
                "API_KEYS_FILE",
                self.keys_file.to_str().expect("utf-8 path"),
            ),
            (
                "CALLBACK_SECRET_FILE",
                self.secret_file.to_str().expect("utf-8 path"),
            ),
        ]
    }

    pub fn env_with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = self.env();
        v.extend_from_slice(extra);
        v
    }

    /// `Authorization` header pair for [`send`].
    pub fn auth(&self) -> (String, String) {
        ("Authorization".into(), format!("Bearer {}", self.token))
    }
}

/// `method` on the gateway at 127.0.0.1:`port` with headers and a body.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer> {
    Ok(http::request(method, &http::local(port, path), headers, body).await?)
}

/// POST a JSON body with an optional bearer token and extra headers.
pub async fn post_json(
    port: u16,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Answer> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    h.extend_from_slice(headers);
    Ok(http::post_json(&http::local(port, path), &h, body).await?)
}

/// GET with an optional bearer token.
pub async fn get_auth(port: u16, path: &str, token: Option<&str>) -> Result<Answer> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    send(port, "GET", path, &h, b"").await
}

/// The body of a submit: `{"to","from","text"}` plus `vendor` when given.
pub fn message(to: &str, text: &str, vendor: Option<&str>) -> Value {
    let mut m = serde_json::json!({"to": to, "from": "ACME", "text": text});
    if let Some(v) = vendor {
        m["vendor"] = Value::from(v);
    }
    m
}

impl Gateway {
    /// POST /api/v1/messages with `token`.
    pub async fn submit(&self, token: &str, body: &Value) -> Result<Answer> {
        post_json(self.http, "/api/v1/messages", Some(token), &[], body).await
    }

    /// POST /api/v1/messages with an Idempotency-Key.
    pub async fn submit_idem(&self, token: &str, key: &str, body: &Value) -> Result<Answer> {
        post_json(
            self.http,
            "/api/v1/messages",
            Some(token),
            &[("Idempotency-Key", key)],
            body,
        )
        .await
    }

    /// POST /api/v1/messages/batch with `{"messages": messages}`.
    pub async fn batch(&self, token: &str, messages: &[Value]) -> Result<Answer> {
        post_json(
            self.http,
            "/api/v1/messages/batch",
            Some(token),
            &[],
            &serde_json::json!({ "messages": messages }),
        )
        .await
    }

    /// GET /api/v1/messages/{id}.
    pub async fn message(&self, token: &str, id: &str) -> Result<Answer> {
        get_auth(self.http, &format!("/api/v1/messages/{id}"), Some(token)).await
    }

    /// Waits until GET /api/v1/messages/{id} shows `status`, and returns the message.
    pub async fn wait_status(
        &self,
        token: &str,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Value> {
        wait::until(&format!("message {id} {status}"), timeout, || async {
            let a = self.message(token, id).await?;
            anyhow::ensure!(a.status == 200, "GET {id}: {} {}", a.status, a.body);
            if a.json["status"] == status {
                Ok(Some(a.json))
            } else {
                Err(anyhow::anyhow!("status {} ({})", a.json["status"], a.body))
            }
        })
        .await
    }

    /// Waits until /ready counts at least `n` vendors this gateway reaches through other pods
    /// (its forwarding snapshot lists their binds).
    pub async fn wait_forwardable(&self, n: u64, timeout: Duration) -> Result<()> {
        wait::until(&format!("{n} vendors via other pods"), timeout, || async {
            let (_, body) = get(self.http, "/ready").await?;
            let v: Value = serde_json::from_str(&body)?;
            Ok((v["vendors_via_other_pods"].as_u64().unwrap_or(0) >= n).then_some(()))
        })
        .await
    }

    /// Waits until the vendor `name` has at least `n` bound sessions on this gateway.
    pub async fn wait_bound(&self, name: &str, n: u64, timeout: Duration) -> Result<()> {
        wait::until(&format!("{name}: {n} sessions bound"), timeout, || async {
            let b = self.bound(name).await?;
            Ok((b >= n).then_some(()))
        })
        .await
    }
}

/// The `event` fields of a message's history, in order.
pub fn history_events(msg: &Value) -> Vec<String> {
    msg["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["event"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Customers of the SMPP server: accounts as the operator writes them, gateways that listen.

// Not every test file that includes this module uses it.
#[allow(unused_imports)]
pub use smpp_e2e::accounts::customer_config;

/// Writes the account row as the SmppAccount operator would, and returns its id.
pub async fn customer_account(
    db: &TestDb,
    c: &smpp_db::accounts::AccountConfig,
) -> Result<uuid::Uuid> {
    Ok(smpp_e2e::accounts::write_account(&db.pool, c).await?)
}

/// A messaging gateway with a plain SMPP listener for customers (and a TLS one when started
/// with [`SmppGateway::start_tls`]).
pub struct SmppGateway {
    pub gw: Gateway,
    /// Its SMPP port on 127.0.0.1.
    pub smpp: u16,
    /// Its SMPP-over-TLS port on 127.0.0.1, if any.
    pub tls: Option<u16>,
}

impl SmppGateway {
    /// Starts one on `db` (POD_IP 127.0.0.1, so submits can be forwarded to it), with `extra`
    /// env pairs, and waits for its schema.
    pub async fn start(
        db: &TestDb,
        m: &Messaging,
        pod: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let smpp = free_port();
        let addr = format!("127.0.0.1:{smpp}");
        let mut env = m.env_with(&[("SMPP_ADDR", &addr), ("POD_IP", "127.0.0.1")]);
        env.extend_from_slice(extra);
        let gw = Gateway::start_with(db, pod, &env).await?;
        db.wait_schema().await?;
        Ok(Self {
            gw,
            smpp,
            tls: None,
        })
    }

    /// Like [`SmppGateway::start`], with a TLS listener serving the PEM `cert` and `key` files
    /// (which the gateway reloads when they change).
    pub async fn start_tls(
        db: &TestDb,
        m: &Messaging,
        pod: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self> {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (cert, key) = (
            cert.to_str().expect("utf-8 path"),
            key.to_str().expect("utf-8 path"),
        );
        let tls = [
            ("SMPP_TLS_ADDR", addr.as_str()),
            ("SMPP_TLS_CERT_FILE", cert),
            ("SMPP_TLS_KEY_FILE", key),
        ];
        let mut g = Self::start(db, m, pod, &tls).await?;
        g.tls = Some(port);
        Ok(g)
    }
}

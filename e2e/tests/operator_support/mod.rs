//! The operator tests' harness: per test a namespace, a database of its own and an
//! smpp-operator watching only that namespace (smpp_e2e::operator starts it), with the
//! kubectl, row and Event waits the tests share.

#![allow(dead_code)]

use serde_json::Value;
use smpp_e2e::env::Env;
use smpp_e2e::operator::{OperatorCmd, apply, namespace_with_crd, run};
use smpp_e2e::process::{ChildGuard, repo_root};
use smpp_e2e::wait::until;
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);

/// A namespace, a database and an operator for one test.
pub struct Harness {
    pub env: Env,
    pub ns: String,
    pub pool: PgPool,
    pub operator: Option<ChildGuard>,
    /// How the operator runs (the admin's kubeconfig unless it runs as the service account).
    pub op: OperatorCmd,
}

impl Harness {
    /// Namespace `op-<tag>-<random>`, a fresh database in the environment's PostgreSQL, and
    /// a running operator.
    pub async fn start(tag: &str) -> Self {
        let (env, suffix, db_url, pool) = Self::fresh_db(tag).await;
        Self::start_with(env, tag, &suffix, db_url, pool).await
    }

    /// A fresh database in the environment's PostgreSQL.
    pub async fn fresh_db(tag: &str) -> (Env, String, String, PgPool) {
        let env = Env::load().expect("environment (make env-up)");
        let suffix = format!("{:08x}", rand::random::<u32>());
        let db = env
            .fresh_db(&format!("op_{}_{suffix}", tag.replace('-', "_")))
            .await
            .expect("a database of the test's own");
        let (db_url, pool) = (db.url, db.pool);
        (env, suffix, db_url, pool)
    }

    pub async fn start_with(
        env: Env,
        tag: &str,
        suffix: &str,
        db_url: String,
        pool: PgPool,
    ) -> Self {
        Self::start_as(env, tag, suffix, db_url, pool, false).await
    }

    /// With `service_account`, the operator runs as system:serviceaccount:smpp-system:
    /// smpp-operator (the admin kubeconfig impersonating it) under crds/rbac.yaml, with its
    /// Lease in smpp-system: the RBAC manifest must be enough.
    pub async fn start_as(
        env: Env,
        tag: &str,
        suffix: &str,
        db_url: String,
        pool: PgPool,
        service_account: bool,
    ) -> Self {
        let ns = format!("op-{tag}-{suffix}");
        namespace_with_crd(&env, &ns).await.unwrap();
        let mut op = OperatorCmd::new(&env, &db_url, &ns).unwrap();
        if service_account {
            op.kubeconfig = impersonating_kubeconfig(&env, &ns);
            op.lease_namespace = "smpp-system".into();
        }
        let mut h = Harness {
            env,
            ns,
            pool,
            operator: None,
            op,
        };
        h.spawn_operator();
        h.wait_ready().await;
        h
    }

    pub fn spawn_operator(&mut self) {
        self.operator = Some(self.op.spawn().unwrap());
    }

    /// Replaces the operator with one that resyncs only every `secs`, so whatever happens
    /// sooner was driven by a watch.
    pub async fn restart_with_resync(&mut self, secs: u64) {
        // SIGTERM releases the Lease, so the new process leads at once.
        self.operator.as_ref().unwrap().signal(15);
        until("old operator exits", T, || {
            let exited = self.operator.as_mut().unwrap().has_exited();
            async move { Ok(exited.then_some(())) }
        })
        .await
        .unwrap();
        self.op.resync_seconds = secs;
        self.op.http_port = smpp_e2e::sink::free_port().unwrap();
        self.spawn_operator();
        self.wait_ready().await;
    }

    /// Another operator replica on the same namespace, database and Lease.
    pub async fn replica(&self, tag: &str) -> Harness {
        self.replica_as(tag, self.op.kubeconfig.clone()).await
    }

    /// [`Harness::replica`] with its own kubeconfig (another identity).
    pub async fn replica_as(&self, tag: &str, kubeconfig: PathBuf) -> Harness {
        let mut r = Harness {
            env: self.env.clone(),
            ns: self.ns.clone(),
            pool: self.pool.clone(),
            operator: None,
            op: OperatorCmd {
                log: self.op.log.with_extension(format!("{tag}.log")),
                http_port: smpp_e2e::sink::free_port().unwrap(),
                kubeconfig,
                ..self.op.clone()
            },
        };
        r.spawn_operator();
        r.wait_ready().await;
        r
    }

    pub async fn wait_ready(&self) {
        let url = smpp_e2e::http::local(self.op.http_port, "/ready");
        until("operator /ready", T, || async {
            let a = smpp_e2e::http::get(&url, &[]).await?;
            anyhow::ensure!(a.status == 200, "HTTP {}: {}", a.status, a.body);
            Ok(Some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()));
    }

    pub fn log_text(&self) -> String {
        self.op.log_text()
    }

    pub fn operator_pid(&self) -> u32 {
        self.operator.as_ref().unwrap().id()
    }

    pub fn assert_operator_alive(&mut self) {
        let exited = self.operator.as_mut().unwrap().has_exited();
        assert!(!exited, "operator exited\n--- log ---\n{}", self.log_text());
    }

    pub async fn metrics(&self) -> String {
        let url = smpp_e2e::http::local(self.op.http_port, "/metrics");
        let a = smpp_e2e::http::get(&url, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.status, 200, "GET {url}: {}", a.body);
        a.body
    }

    /// Whether this replica leads: the value of its `smpp_operator_leader` sample (not a
    /// substring of the page, which the HELP line "1 while this replica holds the Lease"
    /// would match).
    pub async fn leads(&self) -> bool {
        leader_gauge(&self.metrics().await) == Some(1)
    }

    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(run(self.env.kubectl().arg("-n").arg(&self.ns).args(args))?)
    }

    pub fn apply(&self, yaml: &str) -> (bool, String) {
        apply(&self.env, &self.ns, yaml).expect("kubectl apply")
    }

    pub fn apply_ok(&self, yaml: &str) {
        let (ok, out) = self.apply(yaml);
        assert!(ok, "kubectl apply failed: {out}");
    }

    pub fn secret(&self, name: &str, password: &str) {
        self.apply_ok(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{password: {password:?}}}\n"
        ));
    }

    /// A Secret with `type` and `data` (key → text), as JSON so PEM needs no YAML quoting.
    pub fn secret_data(&self, name: &str, type_: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name}, "stringData": data,
        });
        self.apply_ok(&doc.to_string());
    }

    pub fn vendor_json(&self, name: &str) -> anyhow::Result<Value> {
        self.resource_json("smppvendor", name)
    }

    pub fn account_json(&self, name: &str) -> anyhow::Result<Value> {
        self.resource_json("smppaccount", name)
    }

    /// `kubectl get <kind> <name> -o json`.
    pub fn resource_json(&self, kind: &str, name: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(
            &self.kubectl(&["get", kind, name, "-o", "json"])?,
        )?)
    }

    /// Waits until condition `type_` of SmppVendor `name` has `status` (and `reason`, if
    /// given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Value {
        self.wait_condition_of("smppvendor", name, type_, status, reason)
            .await
    }

    /// [`Harness::wait_condition`] of an SmppAccount.
    pub async fn wait_account_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Value {
        self.wait_condition_of("smppaccount", name, type_, status, reason)
            .await
    }

    /// Waits until condition `type_` of `kind`/`name` has `status` (and `reason`, if given).
    pub async fn wait_condition_of(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Value {
        let what = format!("{kind} {name} {type_}={status} {reason:?}");
        until(&what, T, || async {
            let v = self.resource_json(kind, name)?;
            let c = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned());
            match c {
                Some(c) if c["status"] == status && reason.is_none_or(|r| c["reason"] == r) => {
                    Ok(Some(c))
                }
                other => Err(anyhow::anyhow!("condition now: {other:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    pub async fn row(&self, instance_name: &str) -> Option<smpp_db::providers::ServiceProvider> {
        smpp_db::providers::get_by_instance_name(&self.pool, instance_name)
            .await
            .unwrap()
    }

    pub async fn wait_row<F: Fn(&smpp_db::providers::ServiceProvider) -> bool>(
        &self,
        instance_name: &str,
        what: &str,
        pred: F,
    ) -> smpp_db::providers::ServiceProvider {
        until(what, T, || async {
            let row = smpp_db::providers::get_by_instance_name(&self.pool, instance_name).await?;
            Ok(row.filter(|r| pred(r)))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    pub fn events(&self) -> String {
        self.kubectl(&["get", "events", "-o", "yaml"]).unwrap()
    }

    pub async fn wait_event(&self, reason: &str) -> String {
        self.wait_event_with(reason, "").await
    }

    /// Waits for an Event with `reason` whose message contains `needle`; returns the message.
    pub async fn wait_event_with(&self, reason: &str, needle: &str) -> String {
        self.wait_event_where(reason, needle, false).await
    }

    /// Waits for a Warning Event with `reason`; returns its message.
    pub async fn wait_warning(&self, reason: &str) -> String {
        self.wait_event_where(reason, "", true).await
    }

    async fn wait_event_where(&self, reason: &str, needle: &str, warning: bool) -> String {
        until(&format!("Event {reason} ({needle:?})"), T, || async {
            let ev: Value = serde_json::from_str(&self.kubectl(&["get", "events", "-o", "json"])?)?;
            let notes = ev["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["reason"] == reason && (!warning || e["type"] == "Warning"));
            let mut notes = notes.map(|e| {
                e["note"]
                    .as_str()
                    .or(e["message"].as_str())
                    .unwrap_or("")
                    .to_string()
            });
            Ok(notes.find(|n| n.contains(needle)))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- events ---\n{}", self.events()))
    }

    /// No password anywhere a person or a log shipper can read: operator log, every
    /// SmppVendor (spec + status) and every Event of the namespace. Each source must be read
    /// and non-empty: a failed `kubectl` or a missing log fails the check.
    pub fn assert_no_secret_leaks(&self, secrets: &[&str]) {
        self.assert_no_secret_leaks_in(&["smppvendors"], secrets);
    }

    /// [`Harness::assert_no_secret_leaks`] over the resources of each of `kinds` (plural
    /// names, e.g. "smppaccounts").
    pub fn assert_no_secret_leaks_in(&self, kinds: &[&str], secrets: &[&str]) {
        let read = |args: &[&str]| {
            self.kubectl(args)
                .unwrap_or_else(|e| panic!("leak check: kubectl {}: {e:#}", args.join(" ")))
        };
        self.op.assert_no_secret_in_log(secrets);
        for kind in kinds {
            let objects = read(&["get", kind, "-o", "yaml"]);
            let count = read(&["get", kind, "-o", "name"]).lines().count();
            // `kubectl describe` of no objects prints nothing (the notice goes to stderr); of
            // some, it must print something.
            let describe = (count > 0).then(|| read(&["describe", kind]));
            smpp_e2e::leak::assert_no_secret(kind, &objects, secrets);
            if let Some(text) = describe {
                smpp_e2e::leak::assert_no_secret(
                    &format!("kubectl describe {kind}"),
                    &text,
                    secrets,
                );
            }
        }
        let events = read(&["get", "events", "-o", "yaml"]);
        smpp_e2e::leak::assert_no_secret("Events", &events, secrets);
    }
}

/// The `smpp_operator_leader` sample of a metrics page.
pub fn leader_gauge(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("smpp_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

/// Applies crds/rbac.yaml and writes a kubeconfig whose user impersonates its ServiceAccount.
fn impersonating_kubeconfig(env: &Env, ns: &str) -> PathBuf {
    apply_operator_rbac(env);
    kubeconfig_as(env, ns, "system:serviceaccount:smpp-system:smpp-operator")
}

/// crds/rbac.yaml (ServiceAccount smpp-system/smpp-operator, the ClusterRole
/// `smpp-system-smpp-operator` and their bindings), applied as the admin.
pub fn apply_operator_rbac(env: &Env) {
    if let Err(e) = run(env.kubectl().args(["create", "namespace", "smpp-system"])) {
        assert!(e.to_string().contains("AlreadyExists"), "{e}");
    }
    let rbac = repo_root().join("crds/rbac.yaml");
    run(env.kubectl().arg("apply").arg("-f").arg(&rbac)).expect("applying crds/rbac.yaml");
}

/// A kubeconfig (target/e2e-logs/kubeconfig-<ns>) whose user is the admin impersonating
/// `user`: the apiserver authorises its requests as `user`, through RBAC.
pub fn kubeconfig_as(env: &Env, ns: &str, user: &str) -> PathBuf {
    let copy = repo_root().join(format!("target/e2e-logs/kubeconfig-{ns}"));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let raw = run(env
        .kubectl()
        .args(["config", "view", "--raw", "--minify", "-o", "json"]))
    .unwrap();
    let mut config: Value = serde_json::from_str(&raw).unwrap();
    config["users"][0]["user"]["as"] = user.into();
    std::fs::write(&copy, serde_json::to_string(&config).unwrap()).unwrap();
    let kc = |args: &[&str]| {
        run(Command::new(env.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&copy)
            .args(args))
    };
    // kubectl itself, with this kubeconfig, now acts as the service account.
    let who = kc(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])
    .unwrap();
    assert_eq!(who, user);
    copy
}

/// An examples/ file moved into the test namespace `ns` (its Namespace document dropped: the
/// harness created the namespace).
pub fn example(ns: &str, file: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
    text.split("\n---\n")
        .filter(|doc| !doc.contains("kind: Namespace"))
        .collect::<Vec<_>>()
        .join("\n---\n")
        .replace("namespace: messaging", &format!("namespace: {ns}"))
}

/// An SmppAccount named `name` binding as `system_id` (Secret `<name>-smpp`), with
/// `extra_spec` lines appended to its spec.
pub fn account_yaml(name: &str, system_id: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppAccount
metadata: {{name: {name}}}
spec:
  systemId: {system_id}
  passwordSecretRef: {{name: {name}-smpp}}
{extra_spec}"
    )
}

/// An SmppVendor named `name` (Secret `<name>-smpp`), with `extra_spec` lines appended to
/// its spec.
pub fn vendor_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: {name}}}
spec:
  host: {name}.example.net
  port: 2775
  bind:
    systemId: sys-{name}
    passwordSecretRef: {{name: {name}-smpp}}
{extra_spec}"
    )
}

/// A plain TCP relay on 127.0.0.1 in front of `upstream` that counts the bytes it passes from
/// upstream to its clients. TLS runs end to end through it, so a client pointed at it talks to
/// the real server and the count is exactly what that server sent the client.
pub struct CountingRelay {
    pub port: u16,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    pub async fn start(upstream: std::net::SocketAddr) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let received = std::sync::Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(Self {
            port,
            received,
            task,
        })
    }

    /// Bytes passed from upstream to the clients so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The admin kubeconfig as JSON.
fn admin_kubeconfig(env: &Env) -> Value {
    let raw = run(env
        .kubectl()
        .args(["config", "view", "--raw", "--minify", "-o", "json"]))
    .unwrap();
    serde_json::from_str(&raw).unwrap()
}

/// Where the environment's apiserver listens (from its kubeconfig).
pub fn apiserver_addr(env: &Env) -> std::net::SocketAddr {
    let config = admin_kubeconfig(env);
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap_or_default();
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("apiserver address {server:?}: {e}"))
}

/// A copy of the admin kubeconfig (target/e2e-logs/kubeconfig-<ns>) whose server is
/// `https://127.0.0.1:<port>` (the apiserver's certificate names 127.0.0.1).
pub fn kubeconfig_via(env: &Env, ns: &str, port: u16) -> PathBuf {
    let mut config = admin_kubeconfig(env);
    config["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    let copy = repo_root().join(format!("target/e2e-logs/kubeconfig-{ns}"));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::write(&copy, serde_json::to_string(&config).unwrap()).unwrap();
    copy
}

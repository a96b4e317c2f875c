//! Operator benchmarks on the environment's real apiserver, kubectl and PostgreSQL: kubectl
//! apply → row committed, Secret rotation → row updated, apply → BOUND (with a gateway and the
//! sink), and N SmppVendors at once → all Synced.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use serde_json::{Value, json};
use smpp_e2e::bench::{Below, Section, percentile};
use smpp_e2e::env::Env;
use smpp_e2e::sink::{Credentials, Sink, free_port};
use sqlx::postgres::PgListener;

use crate::common::{
    Db, Proc, cpu_ns, ms, peak_rss_mib, rss_mib, run_cmd, sibling_bin, start_gateway,
};

const CHANNEL: &str = "vendor_mgmt_service_providers";

fn vendor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smpp.io", "v1alpha1", "SmppVendor"),
        "smppvendors",
    )
}

/// The SmppVendor + Secret manifest (JSON, which kubectl takes as YAML).
fn vendor_doc(ns: &str, name: &str, port: u16, system_id: &str) -> Value {
    json!({
        "apiVersion": "smpp.io/v1alpha1", "kind": "SmppVendor",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "host": "127.0.0.1", "port": port,
            "bind": {"mode": "Transceiver", "systemId": system_id,
                     "passwordSecretRef": {"name": format!("{name}-pw"), "key": "password"}}
        }
    })
}

fn secret_doc(ns: &str, name: &str, password: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-pw"), "namespace": ns},
        "type": "Opaque", "stringData": {"password": password}
    })
}

/// `kubectl apply -f -` of `docs`; returns when kubectl exits.
fn kubectl_apply(env: &Env, docs: &[Value]) -> Result<()> {
    let mut child = env
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning kubectl")?;
    {
        let mut stdin = child.stdin.take().context("kubectl stdin")?;
        for d in docs {
            writeln!(stdin, "---\n{d}")?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A namespace, a database and an operator watching only that namespace (own Lease).
struct OpEnv {
    ns: String,
    db: Db,
    op: Proc,
}

/// The operator's surroundings before it runs: the CRD, a database and a namespace.
struct Scope {
    ns: String,
    db: Db,
}

impl Scope {
    async fn new(env: &Env, tag: &str) -> Result<Self> {
        smpp_e2e::operator::install_crd(env).await?;
        let db = Db::fresh(env, tag).await?;
        let ns = format!("bench-{tag}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        run_cmd(env.kubectl().args(["create", "namespace", &ns]))?;
        Ok(Scope { ns, db })
    }

    /// Starts the operator on this scope, returning once it is ready.
    async fn start_operator(self, env: &Env) -> Result<OpEnv> {
        let Scope { ns, db } = self;
        let http = free_port()?;
        let mut cmd = Command::new(sibling_bin("smpp-operator")?);
        cmd.env("KUBECONFIG", &env.kubeconfig)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .args(["--watch-namespace", &ns, "--lease-namespace", &ns])
            .args(["--pod-name", &format!("bench-operator-{ns}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")]);
        let mut op = Proc::spawn(&format!("operator-{ns}"), cmd, http)?;
        op.wait_http("/ready", Duration::from_secs(60)).await?;
        Ok(OpEnv { ns, db, op })
    }
}

impl OpEnv {
    async fn start(env: &Env, tag: &str) -> Result<Self> {
        Scope::new(env, tag).await?.start_operator(env).await
    }

    /// Deletes the namespace's SmppVendors while the operator still runs (it owns their
    /// finalizers and rows), then stops it and removes the Secrets, the namespace and the database.
    async fn stop(self, env: &Env) {
        let _ = run_cmd(env.kubectl().args([
            "delete",
            "smppvendors",
            "--all",
            "-n",
            &self.ns,
            "--timeout=120s",
        ]));
        self.op.stop(Duration::from_secs(10)).await;
        let _ = run_cmd(env.kubectl().args([
            "delete",
            "secrets",
            "--all",
            "-n",
            &self.ns,
            "--wait=false",
        ]));
        let _ = delete_namespace(env, &self.ns).await;
        self.db.drop_db().await;
    }
}

/// Deletes a namespace whose contents are already gone. The test control plane runs no
/// namespace controller, so the namespace would stay Terminating for ever; finalizing it is
/// that controller's last step, done here.
async fn delete_namespace(env: &Env, ns: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(env.kube_client().await?);
    api.delete(ns, &DeleteParams::default()).await?;
    let mut obj = api.get(ns).await?;
    if let Some(spec) = obj.spec.as_mut() {
        spec.finalizers = Some(Vec::new());
    }
    api.replace_subresource("finalize", ns, &PostParams::default(), &obj)
        .await?;
    Ok(())
}

/// (port, password) of the row `instance_name`.
async fn row(db: &Db, instance: &str) -> Result<Option<(i32, String)>> {
    Ok(sqlx::query_as(
        "SELECT port, password FROM vendor_mgmt.service_providers WHERE instance_name = $1",
    )
    .bind(instance)
    .fetch_optional(&db.pool)
    .await?)
}

/// Waits for a NOTIFY after which `check` holds on the row; returns the NOTIFY's arrival.
async fn wait_row(
    listener: &mut PgListener,
    db: &Db,
    instance: &str,
    timeout: Duration,
    check: impl Fn(&(i32, String)) -> bool,
) -> Result<Instant> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(end, listener.recv())
            .await
            .context("no matching row change in time")??;
        let at = Instant::now();
        let _ = n;
        if row(db, instance).await?.as_ref().is_some_and(&check) {
            return Ok(at);
        }
    }
}

/// kubectl apply → row committed, and Secret rotation → row updated.
pub async fn apply_and_rotate(env: &Env, runs: usize, applies: usize) -> Section {
    let mut s = Section::new(
        "Operator: kubectl apply → row, Secret rotation → row",
        format!(
            "The operator (default settings) watches a namespace of its own. Per run, {applies} \
             `kubectl apply` of the SmppVendor with a new `spec.port`, each followed by a `kubectl apply` of its \
             Secret with a new password. Timed from spawning kubectl to the NOTIFY (sent by the table's trigger \
             on commit) after which the row holds the new port / password, received over LISTEN. kubectl's \
             own run time (process start, discovery, the PATCH) is inside the figure and shown on its own."
        ),
    );
    for run in 0..runs {
        match apply_run(env, applies).await {
            Ok((apply, rotate, kubectl)) => {
                s.row("apply → row committed, p50", "ms", Some(Below(200.0)))
                    .per_run
                    .push(p(&apply, 50.0));
                s.row("apply → row committed, p99", "ms", Some(Below(1000.0)))
                    .per_run
                    .push(p(&apply, 99.0));
                s.row("Secret rotation → row updated, p50", "ms", None)
                    .per_run
                    .push(p(&rotate, 50.0));
                s.row(
                    "Secret rotation → row updated, p99",
                    "ms",
                    Some(Below(2000.0)),
                )
                .per_run
                .push(p(&rotate, 99.0));
                s.row("kubectl apply alone (spawn → exit), p50", "ms", None)
                    .per_run
                    .push(p(&kubectl, 50.0));
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    s
}

fn p(v: &[f64], q: f64) -> f64 {
    percentile(v, q).unwrap_or(f64::NAN)
}

async fn apply_run(env: &Env, applies: usize) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let oe = OpEnv::start(env, "apply").await?;
    let result = async {
        let (ns, name) = (oe.ns.clone(), "bench-apply".to_string());
        let instance = format!("{ns}.{name}");
        let mut listener = PgListener::connect(&oe.db.url).await?;
        listener.listen(CHANNEL).await?;
        kubectl_apply(
            env,
            &[
                secret_doc(&ns, &name, "pw000000"),
                vendor_doc(&ns, &name, 10000, "bench"),
            ],
        )?;
        wait_row(
            &mut listener,
            &oe.db,
            &instance,
            Duration::from_secs(30),
            |r| r.0 == 10000,
        )
        .await
        .context("the first apply never produced a row within 30 s")?;
        let (mut apply, mut rotate, mut kubectl) = (Vec::new(), Vec::new(), Vec::new());
        for i in 1..=applies {
            let port = 10000 + i as u16;
            let t0 = Instant::now();
            kubectl_apply(env, &[vendor_doc(&ns, &name, port, "bench")])?;
            kubectl.push(ms(t0, Instant::now()));
            let at = wait_row(
                &mut listener,
                &oe.db,
                &instance,
                Duration::from_secs(10),
                |r| r.0 == i32::from(port),
            )
            .await
            .with_context(|| format!("apply {i}: port {port} not in the row within 10 s"))?;
            apply.push(ms(t0, at));

            let pw = format!("rot{i:05}");
            let t0 = Instant::now();
            kubectl_apply(env, &[secret_doc(&ns, &name, &pw)])?;
            let at = wait_row(
                &mut listener,
                &oe.db,
                &instance,
                Duration::from_secs(10),
                |r| r.1 == pw,
            )
            .await
            .with_context(|| format!("rotation {i}: new password not in the row within 10 s"))?;
            rotate.push(ms(t0, at));
        }
        Ok((apply, rotate, kubectl))
    }
    .await;
    oe.stop(env).await;
    result
}

/// kubectl apply → `BOUND 1/1` in the resource's status, with a gateway and the sink.
pub async fn apply_to_bound(env: &Env, runs: usize) -> Section {
    let mut s = Section::new(
        "Operator + gateway: kubectl apply → BOUND 1/1",
        "Operator and one gateway on the same database, the vendor pointing at the sink. Per run a new \
         SmppVendor + Secret is applied with kubectl; timed from spawning kubectl to the first read (kube API, \
         every 50 ms, what `kubectl get smppvendors` prints) of `status.bound = 1/1`. Default operator and \
         gateway settings.",
    );
    match apply_to_bound_runs(env, runs).await {
        Ok(v) => {
            for (bound, sink) in v {
                s.row("apply → BOUND 1/1 shown", "ms", Some(Below(3000.0)))
                    .per_run
                    .push(bound);
                s.row("apply → bind at the sink", "ms", None)
                    .per_run
                    .push(sink);
            }
        }
        Err(e) => s.not_measured = Some(format!("{e:#}")),
    }
    s
}

async fn apply_to_bound_runs(env: &Env, runs: usize) -> Result<Vec<(f64, f64)>> {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let oe = OpEnv::start(env, "bound").await?;
    let result = async {
        let gw = start_gateway(&oe.db, "bench-bound-gw").await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(env.kube_client().await?, &oe.ns, &vendor_resource());
        let mut out = Vec::new();
        for run in 1..=runs {
            let name = format!("bound{run}");
            let sid = format!("bnd{run}");
            let t0 = Instant::now();
            kubectl_apply(
                env,
                &[
                    secret_doc(&oe.ns, &name, "pw000000"),
                    vendor_doc(&oe.ns, &name, sink.port(), &sid),
                ],
            )?;
            let end = Instant::now() + Duration::from_secs(30);
            let bound_at = loop {
                let v = api.get(&name).await?;
                if v.data["status"]["bound"] == "1/1" {
                    break Instant::now();
                }
                if Instant::now() > end {
                    bail!(
                        "{name}: status.bound is {} after 30 s",
                        v.data["status"]["bound"]
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let at_sink = sink
                .first_bind(|b| b.system_id == sid)
                .context("BOUND shown but the sink saw no bind")?;
            let shown = run_cmd(env.kubectl().args([
                "get",
                "smppvendor",
                &name,
                "-n",
                &oe.ns,
                "--no-headers",
            ]))?;
            if !shown.contains("1/1") {
                bail!("kubectl get does not show 1/1: {shown}");
            }
            out.push((ms(t0, bound_at), ms(t0, at_sink)));
        }
        gw.stop(Duration::from_secs(10)).await;
        Ok(out)
    }
    .await;
    oe.stop(env).await;
    sink.stop().await;
    result
}

/// N SmppVendors (and their Secrets) created at once → all Synced.
pub async fn many(env: &Env, runs: usize, n: usize) -> Section {
    let mut s = Section::new(
        format!("Operator: {n} SmppVendors at once → all Synced"),
        format!(
            "{n} Secrets and {n} SmppVendors (one Secret each), in two ways per run. **While running**: the operator \
             is up and the 2×{n} objects are created through the API, 32 requests in flight; timed from the first \
             create (so it includes the apiserver's own time to store them, shown on its own below). **Started \
             on a backlog**: the 2×{n} objects exist first; timed from spawning the operator, so it is the \
             operator's own work: its start, the initial lists, and per vendor a Secret read, a row upsert, a \
             status patch and an Event. Either way the end is the moment a watch on the SmppVendors has seen \
             Synced=True on all {n}. Operator RSS (VmRSS) is read then; peak is VmHWM. On a backlog the operator is \
             the apiserver's only client, so their CPU times over that span (all threads, schedstat) say which \
             of the two sets the pace."
        ),
    );
    for run in 0..runs {
        let measured = async {
            let live = many_run(env, n, Mode::WhileRunning).await?;
            let backlog = many_run(env, n, Mode::Backlog).await?;
            anyhow::Ok((live, backlog))
        };
        match measured.await {
            Ok((live, backlog)) => {
                s.row("while running: all Synced", "s", Some(Below(60.0)))
                    .per_run
                    .push(live.synced / 1000.0);
                s.row(
                    &format!("while running: creating the {} objects", 2 * n),
                    "s",
                    None,
                )
                .per_run
                .push(live.created / 1000.0);
                s.row("while running: operator RSS", "MiB", Some(Below(40.0)))
                    .per_run
                    .push(live.rss);
                s.row("while running: operator peak RSS (VmHWM)", "MiB", None)
                    .per_run
                    .push(live.peak);
                s.row(
                    "started on a backlog: operator start → all Synced",
                    "s",
                    Some(Below(3.0)),
                )
                .per_run
                .push(backlog.synced / 1000.0);
                s.row(
                    &format!(
                        "started on a backlog: creating the {} objects first (no operator)",
                        2 * n
                    ),
                    "s",
                    None,
                )
                .per_run
                .push(backlog.created / 1000.0);
                if let Some((op, api)) = backlog.cpu {
                    s.row(
                        "started on a backlog: operator CPU time until all Synced",
                        "s",
                        None,
                    )
                    .per_run
                    .push(op);
                    s.row(
                        "started on a backlog: kube-apiserver CPU time over the same span",
                        "s",
                        None,
                    )
                    .per_run
                    .push(api);
                }
                s.row(
                    "started on a backlog: operator RSS",
                    "MiB",
                    Some(Below(40.0)),
                )
                .per_run
                .push(backlog.rss);
                s.row(
                    "started on a backlog: operator peak RSS (VmHWM)",
                    "MiB",
                    None,
                )
                .per_run
                .push(backlog.peak);
            }
            Err(e) => {
                s.not_measured = Some(format!("run {} failed: {e:#}", run + 1));
                break;
            }
        }
    }
    s
}

fn synced(v: &DynamicObject) -> bool {
    v.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Synced" && c["status"] == "True")
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The operator runs while the objects are created; timed from the first create.
    WhileRunning,
    /// The objects exist first; timed from spawning the operator.
    Backlog,
}

struct ManyRun {
    /// ms from the start (first create, or operator spawn) to all Synced.
    synced: f64,
    /// ms the creates took.
    created: f64,
    rss: f64,
    peak: f64,
    /// CPU seconds of the operator and of the apiserver from the start to all Synced
    /// (backlog only: there the operator is the apiserver's only client).
    cpu: Option<(f64, f64)>,
}

/// The control plane's kube-apiserver process, for its CPU time.
fn apiserver_pid() -> Result<u32> {
    let out = run_cmd(Command::new("pgrep").args(["-x", "kube-apiserver"]))?;
    out.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("no kube-apiserver process")
}

/// Creates `n` Secrets and `n` SmppVendors in `ns`, 32 requests in flight.
async fn create_vendors(env: &Env, ns: &str, n: usize) -> Result<()> {
    let client = env.kube_client().await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vendor_resource());
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Secret")),
    );
    let ns = Arc::new(ns.to_string());
    futures::stream::iter(1..=n)
        .map(|i| {
            let (api, secrets, ns) = (api.clone(), secrets.clone(), ns.clone());
            async move {
                let name = format!("v{i:04}");
                let sec: DynamicObject =
                    serde_json::from_value(secret_doc(&ns, &name, "pw000000"))?;
                secrets.create(&PostParams::default(), &sec).await?;
                let v: DynamicObject =
                    serde_json::from_value(vendor_doc(&ns, &name, 10000, &format!("m{i}")))?;
                api.create(&PostParams::default(), &v).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .context("creating the SmppVendors")?;
    Ok(())
}

/// Waits (bounded) until a watch on `api` has seen Synced=True on `n` SmppVendors at once.
async fn all_synced(api: &Api<DynamicObject>, n: usize) -> Result<Instant> {
    use kube::runtime::{WatchStreamExt, watcher};
    let mut seen = std::collections::HashSet::new();
    let events = watcher(api.clone(), watcher::Config::default()).applied_objects();
    let mut events = std::pin::pin!(events);
    let wait = async {
        while let Some(v) = events.try_next().await? {
            let name = v.metadata.name.clone().unwrap_or_default();
            if synced(&v) {
                seen.insert(name);
            } else {
                seen.remove(&name);
            }
            if seen.len() == n {
                return Ok(Instant::now());
            }
        }
        bail!("the SmppVendor watch ended")
    };
    match tokio::time::timeout(Duration::from_secs(180), wait).await {
        Ok(r) => r,
        Err(_) => bail!("only {} of {n} Synced after 180 s", seen.len()),
    }
}

async fn many_run(env: &Env, n: usize, mode: Mode) -> Result<ManyRun> {
    let scope = Scope::new(env, "many").await?;
    let ns = scope.ns.clone();
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.kube_client().await?, &ns, &vendor_resource());
    let mut api_cpu0 = None;
    let (oe, t0, created) = match mode {
        Mode::WhileRunning => {
            let oe = scope.start_operator(env).await?;
            let t0 = Instant::now();
            let created = create_vendors(env, &ns, n)
                .await
                .map(|()| ms(t0, Instant::now()));
            (oe, t0, created)
        }
        Mode::Backlog => {
            let t = Instant::now();
            let created = create_vendors(env, &ns, n)
                .await
                .map(|()| ms(t, Instant::now()));
            api_cpu0 = apiserver_pid().and_then(|p| Ok((p, cpu_ns(p)?))).ok();
            let t0 = Instant::now();
            (scope.start_operator(env).await?, t0, created)
        }
    };
    let result = async {
        let created = created?;
        let synced_at = all_synced(&api, n).await?;
        let rss = rss_mib(oe.op.pid())?;
        let peak = peak_rss_mib(oe.op.pid())?;
        let secs = |ns: u64| ns as f64 / 1e9;
        let cpu = match api_cpu0 {
            Some((pid, before)) => Some((
                secs(cpu_ns(oe.op.pid())?),
                secs(cpu_ns(pid)?.saturating_sub(before)),
            )),
            None => None,
        };
        // Clean-up goes through the operator (finalizers); bounded.
        let _ = api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end && !api.list(&ListParams::default()).await?.items.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(ManyRun {
            synced: ms(t0, synced_at),
            created,
            rss,
            peak,
            cpu,
        })
    }
    .await;
    oe.stop(env).await;
    result
}

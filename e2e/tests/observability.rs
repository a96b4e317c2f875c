//! Dashboards and alerts, tested for real:
//! - deploy/prometheus/alerts.yaml passes `promtool check rules`, and `promtool test rules`
//!   with deploy/prometheus/alerts_test.yaml, which has a firing and a quiet case for EVERY
//!   alert; every alert names a runbook entry that exists in docs/troubleshooting.md.
//! - deploy/grafana/smpp-gateway.json is well formed (a Prometheus datasource variable, every
//!   panel on it).
//! - A real Prometheus (Debian's, from e2e/scripts/prereqs.sh) on 127.0.0.1 scrapes real
//!   gateways and a real operator, loads the rule file, and every dashboard query (variables
//!   substituted) returns at least one series, every metric named by a query or an alert has
//!   series, and every rule evaluates without error. The gateways and the operator are driven
//!   into the states the error panels and alerts are about: a vendor with a wrong password, a
//!   vendor whose bind-slot claims PostgreSQL refuses, a gateway whose Redis is gone, a forwarded
//!   submit, a status callback, a reconcile that PostgreSQL refuses; the alerts for those show
//!   up pending in Prometheus.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test observability

mod gateway_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gateway_support::{Gateway, Result, TestDb, free_port, get, message, messaging_env, post_json};
use serde_json::{Value, json};
use smpp_e2e::env::Env;
use smpp_e2e::operator::{self, OperatorCmd};
use smpp_e2e::process::{ChildGuard, repo_root};
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
use smpp_e2e::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = "deploy/grafana/smpp-gateway.json";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yaml";
const RUNBOOK: &str = "docs/troubleshooting.md";
/// Where the Helm chart takes the rule file from (a copy made by `make crds`): the same.
const CHART_ALERTS: &str = "charts/smpp-gateway/files/alerts.yaml";
/// And the dashboard of its `dashboards.enabled` ConfigMap (also a `make crds` copy).
const CHART_DASHBOARD: &str = "charts/smpp-gateway/files/dashboard.json";

const SYSTEM_ID: &str = "obstester";
const PASSWORD: &str = "Ob5ervPw";
const WRONG: &str = "wrongPw9";
/// Bounds a hang, not a latency.
const SETTLE: Duration = Duration::from_secs(30);
/// Prometheus is killed after this even if the test process dies without dropping its guard.
const PROMETHEUS_LIFETIME_SECONDS: u32 = 300;

fn path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Runs promtool; its output, failing with it when promtool fails.
fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run promtool ({e}); install Debian's prometheus: make prereqs")
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// The files: alert rules, their unit tests, the dashboard.

struct Alert {
    name: String,
    expr: String,
    runbook: String,
}

fn alerts() -> Vec<Alert> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yaml is YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            out.push(Alert {
                expr: r["expr"].as_str().expect("expr").to_string(),
                runbook: r["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no runbook_url annotation"))
                    .to_string(),
                name,
            });
        }
    }
    assert!(!out.is_empty(), "no alerts in {ALERTS}");
    out
}

/// (panel title, expr) of every query of every panel.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// Every non-row panel, also those nested in collapsed rows.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Grafana's variables replaced the way a user's "All" selection does, in namespace `ns`.
fn substitute(expr: &str, ns: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$namespace", ns)
        .replace("$vendor", ".*")
}

/// The metric names (smpp_*) a PromQL expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("smpp_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if word_start {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// GitHub's anchor of a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() -> Result {
    let check = promtool(&["check", "rules", ALERTS])?;
    assert!(check.contains("SUCCESS"), "{check}");
    let test = promtool(&["test", "rules", ALERT_TESTS])?;
    assert!(test.contains("SUCCESS"), "{test}");
    Ok(())
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test_case() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read(ALERT_TESTS)).expect("alerts_test.yaml is YAML");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in doc["tests"].as_sequence().expect("tests") {
        for c in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = c["alertname"].as_str().expect("alertname").to_string();
            let n = c["exp_alerts"].as_sequence().map(Vec::len).unwrap_or(0);
            if n > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for a in alerts() {
        assert!(
            firing.contains(&a.name),
            "{ALERT_TESTS}: no case where {} fires",
            a.name
        );
        assert!(
            quiet.contains(&a.name),
            "{ALERT_TESTS}: no case where {} stays quiet",
            a.name
        );
    }
}

#[test]
fn every_alert_names_a_runbook_entry_that_exists() {
    let doc = read(RUNBOOK);
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect();
    for a in alerts() {
        let (file, anchor) = a
            .runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{}: runbook_url {:?} has no #anchor", a.name, a.runbook));
        assert_eq!(file, RUNBOOK, "{}: runbook_url {}", a.name, a.runbook);
        assert!(
            anchors.contains(anchor),
            "{}: {RUNBOOK} has no heading with anchor #{anchor}",
            a.name
        );
        assert_eq!(
            anchor,
            a.name.to_lowercase(),
            "{}: the entry is named after the alert",
            a.name
        );
    }
}

#[test]
fn dashboard_has_a_prometheus_datasource_variable_and_every_panel_uses_it() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().expect("name"));
    let mut ids = BTreeSet::new();
    let all = panels(&d);
    assert!(all.len() >= 10, "only {} panels", all.len());
    for p in all {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate panel id in {title}"
        );
        assert_eq!(
            p["datasource"]["uid"],
            ds_ref.as_str(),
            "{title}: datasource"
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: a target without expr"
            );
            assert_eq!(
                t["datasource"]["uid"],
                ds_ref.as_str(),
                "{title}: target datasource"
            );
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"],
            ds_ref.as_str(),
            "variable {}",
            v["name"]
        );
    }
    // What docs/observability.md promises is on it.
    for want in [
        "smpp_sessions_bound",
        "smpp_bind_failures_total",
        "smpp_messages_submitted_total",
        "smpp_submit_duration_seconds_bucket",
        "smpp_receipts_total",
        "smpp_callbacks_total",
        "smpp_forwards_total",
        "smpp_redis_errors_total",
        "smpp_config_db_errors_total",
        "smpp_operator_reconcile_errors_total",
    ] {
        assert!(
            dashboard_queries(&d)
                .iter()
                .any(|(_, e)| metric_names(e).contains(want)),
            "no panel shows {want}"
        );
    }
}

/// One source for the rules and the dashboard: the chart's copies are these files.
#[test]
fn the_charts_alert_rules_and_dashboard_are_these_files() {
    for (copy, source, what) in [
        (CHART_ALERTS, ALERTS, "PrometheusRule"),
        (CHART_DASHBOARD, DASHBOARD, "dashboard ConfigMap"),
    ] {
        assert!(
            std::fs::read_to_string(path(copy))
                .unwrap_or_else(|e| panic!("{copy} (the chart's {what} source): {e}"))
                == read(source),
            "{copy} differs from {source}: run `make crds`"
        );
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum by (le) (rate(smpp_a_bucket{x=\"y\"}[1m])) / xsmpp_no + smpp_b"),
        ["smpp_a_bucket", "smpp_b"].map(String::from).into()
    );
    assert_eq!(slug(" SmppVendorUnbound"), "smppvendorunbound");
    assert_eq!(slug("PostgreSQL unreachable"), "postgresql-unreachable");
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus.

/// Percent-encodes a query-string value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Target {
    job: &'static str,
    pod: String,
    port: u16,
}

/// Debian's prometheus on 127.0.0.1 with its own data dir under target/, scraping every second,
/// evaluating deploy/prometheus/alerts.yaml every second. Killed when dropped, and by
/// `timeout` after PROMETHEUS_LIFETIME_SECONDS at the latest.
struct Prometheus {
    guard: ChildGuard,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Prometheus {
    /// Stops it and removes its TSDB; the config and the log stay for a look after a failure.
    fn drop(&mut self) {
        self.guard.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

impl Prometheus {
    async fn start(namespace: &str, targets: &[Target]) -> Result<Self> {
        let dir = repo_root().join(format!(
            "target/observability/prometheus-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("data"))?;
        let mut jobs: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
        for t in targets {
            jobs.entry(t.job).or_default().push(t);
        }
        let mut cfg = String::from(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n",
        );
        cfg.push_str(&format!(
            "rule_files: [{:?}]\nscrape_configs:\n",
            path(ALERTS)
        ));
        for (job, ts) in jobs {
            cfg.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
            for t in ts {
                // The labels a ServiceMonitor scrape gives: namespace and pod.
                cfg.push_str(&format!(
                    "      - targets: ['127.0.0.1:{}']\n        labels: {{namespace: {namespace}, pod: {}}}\n",
                    t.port, t.pod
                ));
            }
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, cfg)?;
        let port = free_port();
        let log = dir.join("prometheus.log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new("timeout");
        cmd.args([
            "--kill-after=5",
            &PROMETHEUS_LIFETIME_SECONDS.to_string(),
            "prometheus",
        ])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=1h")
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
        let guard = ChildGuard::spawn("prometheus", cmd)?;
        let p = Self {
            guard,
            port,
            dir,
            log,
        };
        wait::until("prometheus /-/ready", SETTLE, || async {
            let (status, _) = get(p.port, "/-/ready").await?;
            Ok((status == 200).then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nprometheus log:\n{}", p.log_text()))?;
        Ok(p)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; its `data`, failing unless `status` is success.
    async fn api(&self, path_and_query: &str) -> Result<Value> {
        let (status, body) = get(self.port, path_and_query).await?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("{path_and_query}: {status} {body}: {e}"))?;
        anyhow::ensure!(
            status == 200 && v["status"] == "success",
            "{path_and_query}: {status} {body}"
        );
        Ok(v["data"].clone())
    }

    /// Instant query: the result vector.
    async fn query(&self, q: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", enc(q))).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    async fn series(&self, matcher: &str) -> Result<Vec<Value>> {
        let data = self
            .api(&format!("/api/v1/series?match%5B%5D={}", enc(matcher)))
            .await?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }
}

/// A callback receiver that answers 200 to everything.
async fn callback_server() -> Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the Content-Length body, then answer.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok(port)
}

fn vendor_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: {name}}}
spec:
  host: 127.0.0.1
  port: {port}
  bind:
    mode: Transceiver
    systemId: {SYSTEM_ID}
    passwordSecretRef: {{name: {name}-smpp, key: password}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-smpp}}
stringData: {{password: {PASSWORD}}}
"
    )
}

/// Label `label` of every series in `result`.
fn label_values(result: &[Value], label: &str) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_finds_series_for_every_dashboard_query_and_alert() -> Result {
    let env = Env::load()?;
    let smsc = Smsc::start(
        SmscConfig::new()
            .credential(SYSTEM_ID, PASSWORD)
            .plain("plain", Behaviour::default()),
    )
    .await?;
    let port = smsc.port("plain");
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let gw_env = m.env_with(&[("POD_IP", "127.0.0.1"), ("SUBMIT_TIMEOUT_SECONDS", "5")]);

    // Gateway A holds the one bind of obs-good (enquire_link every second, for its RTT).
    let a = Gateway::start_with(&db, "gw-obs-a", &gw_env).await?;
    db.wait_schema().await?;
    db.insert_legacy(
        "obs-good",
        port,
        SYSTEM_ID,
        PASSWORD,
        &[("enquire_link_interval_seconds", "1")],
    )
    .await?;
    a.wait_bound("obs-good", 1, SETTLE).await?;

    // PostgreSQL refuses what the test marks: the bind-slot claims of obs-dberr (gateway
    // config DB errors) and the operator's row for SmppVendor obs-broken (reconcile errors).
    let ns = format!("obs-{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let dberr_id = uuid::Uuid::new_v4();
    db.exec(
        "CREATE FUNCTION public.obs_refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the observability test'; END $$",
    )
    .await?;
    db.exec(&format!(
        "CREATE TRIGGER obs_refuse_slots BEFORE INSERT OR UPDATE ON vendor_mgmt.vendor_sessions \
         FOR EACH ROW WHEN (NEW.vendor_id = '{dberr_id}'::uuid) EXECUTE FUNCTION public.obs_refuse()"
    ))
    .await?;
    db.exec(&format!(
        "CREATE TRIGGER obs_refuse_row BEFORE INSERT OR UPDATE ON vendor_mgmt.service_providers \
         FOR EACH ROW WHEN (NEW.instance_name = '{ns}.obs-broken') EXECUTE FUNCTION public.obs_refuse()"
    ))
    .await?;
    db.insert_legacy("obs-badpw", port, SYSTEM_ID, WRONG, &[])
        .await?;
    db.insert_legacy(
        "obs-dberr",
        port,
        SYSTEM_ID,
        PASSWORD,
        &[("id", &format!("'{dberr_id}'"))],
    )
    .await?;

    // Gateway B has no bind for obs-good (A holds the budget of 1): it forwards to A.
    let b = Gateway::start_with(&db, "gw-obs-b", &gw_env).await?;
    // Gateway C's Redis is gone: its submits fail on Redis.
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let c_env: Vec<(&str, &str)> = gw_env
        .iter()
        .map(|&(k, v)| {
            if k == "REDIS_URL" {
                (k, dead_redis.as_str())
            } else {
                (k, v)
            }
        })
        .collect();
    let c = Gateway::start_with(&db, "gw-obs-c", &c_env).await?;

    // The operator, in a namespace of its own, with one SmppVendor whose row PostgreSQL refuses.
    operator::namespace_with_crd(&env, &ns).await?;
    let op = OperatorCmd::new(&env, &db.url, &ns)?;
    let _operator = op.spawn()?;
    let (ok, out) = operator::apply(&env, &ns, &vendor_yaml("obs-broken", port))?;
    anyhow::ensure!(ok, "kubectl apply: {out}");

    let targets = [
        Target {
            job: "smpp-gateway",
            pod: a.pod.clone(),
            port: a.http,
        },
        Target {
            job: "smpp-gateway",
            pod: b.pod.clone(),
            port: b.http,
        },
        Target {
            job: "smpp-gateway",
            pod: c.pod.clone(),
            port: c.http,
        },
        Target {
            job: "smpp-operator",
            pod: "smpp-operator-0".into(),
            port: op.http_port,
        },
    ];
    let prom = Prometheus::start(&ns, &targets).await?;
    wait::until("every target scraped and up", SETTLE, || async {
        let data = prom.api("/api/v1/targets").await?;
        let active = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = active.iter().filter(|t| t["health"] == "up").count();
        anyhow::ensure!(up == targets.len(), "{up}/{} up: {active:?}", targets.len());
        Ok(Some(()))
    })
    .await?;

    // Traffic: a message through A with a status callback (delivered, receipt), one through B
    // (forwarded to A), one to C (refused: Redis).
    let hook = callback_server().await?;
    let mut body = message("+15551234567", "observability test", Some("obs-good"));
    body["callback_url"] = json!(format!("http://127.0.0.1:{hook}/status"));
    let sent = a.submit(&m.token, &body).await?;
    anyhow::ensure!(
        sent.status == 201,
        "submit on A: {} {}",
        sent.status,
        sent.body
    );
    let id = sent.json["id"].as_str().unwrap_or_default().to_string();
    a.wait_status(&m.token, &id, "delivered", SETTLE).await?;
    let fwd = b
        .submit(
            &m.token,
            &message("+15551234567", "forwarded", Some("obs-good")),
        )
        .await?;
    anyhow::ensure!(
        fwd.status == 201,
        "submit on B (forwarded): {} {}",
        fwd.status,
        fwd.body
    );
    // Twice, the second once Prometheus has seen the first error: rate() needs an increase.
    for n in 0..2 {
        let refused = post_json(
            c.http,
            "/api/v1/messages",
            Some(&m.token),
            &[("Idempotency-Key", &format!("obs-redis-down-{n}"))],
            &message("+15551234567", "no redis", Some("obs-good")),
        )
        .await?;
        anyhow::ensure!(
            refused.status >= 500,
            "submit on C without Redis: {} {}",
            refused.status,
            refused.body
        );
        let q = format!("smpp_redis_errors_total{{pod=\"{}\"}} > {n}", c.pod);
        wait::until(&format!("Prometheus scraped {q}"), SETTLE, || async {
            Ok((!prom.query(&q).await?.is_empty()).then_some(()))
        })
        .await?;
    }

    // 1. Every dashboard query returns at least one series.
    let d = dashboard();
    let queries = dashboard_queries(&d);
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        let q = substitute(expr, &ns);
        let got = wait::until(
            &format!("series for panel {title:?}: {q}"),
            SETTLE,
            || async {
                let r = prom.query(&q).await?;
                Ok((!r.is_empty()).then_some(r))
            },
        )
        .await;
        if let Err(e) = got {
            missing.push(format!("{e:#}"));
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without series:\n{}",
        missing.join("\n")
    );

    // 2. Every metric a dashboard query or an alert names has series, in the test's namespace.
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (title, expr) in &queries {
        for n in metric_names(expr) {
            names.entry(n).or_default().push(format!("panel {title:?}"));
        }
    }
    let rules = alerts();
    for a in &rules {
        for n in metric_names(&a.expr) {
            names
                .entry(n)
                .or_default()
                .push(format!("alert {}", a.name));
        }
    }
    for (n, users) in &names {
        let s = prom.series(&format!("{n}{{namespace=\"{ns}\"}}")).await?;
        assert!(
            !s.is_empty(),
            "no series of {n} (used by {})",
            users.join(", ")
        );
    }

    // 3. The variables' queries (label_values(metric, label)) find values.
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
        else {
            continue;
        };
        let (selector, label) = args.rsplit_once(',').expect("label_values(metric, label)");
        let selector = substitute(selector.trim(), &ns);
        let data = prom
            .api(&format!(
                "/api/v1/label/{}/values?match%5B%5D={}",
                label.trim(),
                enc(&selector)
            ))
            .await?;
        assert!(
            data.as_array().is_some_and(|a| !a.is_empty()),
            "variable {}: {q} finds no value",
            v["name"]
        );
    }

    // 4. Every rule evaluates without error in the real Prometheus.
    wait::until("every rule evaluated with health ok", SETTLE, || async {
        let data = prom.api("/api/v1/rules").await?;
        let mut seen = BTreeSet::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                anyhow::ensure!(
                    r["health"] == "ok",
                    "rule {} health {}: {}",
                    r["name"],
                    r["health"],
                    r["lastError"]
                );
                seen.insert(r["name"].as_str().unwrap_or_default().to_string());
            }
        }
        let want: BTreeSet<String> = rules.iter().map(|a| a.name.clone()).collect();
        anyhow::ensure!(seen == want, "rules loaded {seen:?}, want {want:?}");
        Ok(Some(()))
    })
    .await?;

    // 5. The states driven above make their alerts pending (their `for` is minutes), with the
    //    labels a person needs, and not for the healthy vendor.
    let expect: [(&str, &str, &[&str]); 5] = [
        ("SmppVendorUnbound", "vendor", &["obs-badpw", "obs-dberr"]),
        ("SmppBindFailing", "vendor", &["obs-badpw"]),
        ("SmppConfigDbErrors", "op", &["claim"]),
        ("SmppRedisErrors", "op", &["idempotency"]),
        ("SmppOperatorReconcileErrors", "reason", &["DatabaseError"]),
    ];
    for (alert, label, values) in expect {
        let want: BTreeSet<String> = values.iter().map(|s| s.to_string()).collect();
        wait::until(
            &format!("{alert} pending for {label} {values:?}"),
            SETTLE,
            || async {
                let data = prom.api("/api/v1/alerts").await?;
                let got: BTreeSet<String> = data["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| {
                        a["labels"]["alertname"] == alert && a["labels"]["namespace"] == ns.as_str()
                    })
                    .filter_map(|a| a["labels"][label].as_str().map(String::from))
                    .collect();
                anyhow::ensure!(want.is_subset(&got), "{alert}: {label} {got:?}");
                Ok(Some(()))
            },
        )
        .await?;
    }
    let bind_failing = prom
        .query(&format!(
            "smpp_bind_failures_total{{namespace=\"{ns}\", vendor=\"obs-badpw\"}}"
        ))
        .await?;
    assert_eq!(
        label_values(&bind_failing, "reason"),
        ["bind_esme_rinvpaswd".to_string()].into(),
        "the wrong password's reason code"
    );
    let unbound = prom
        .query(
            &rules
                .iter()
                .find(|a| a.name == "SmppVendorUnbound")
                .unwrap()
                .expr,
        )
        .await?;
    assert!(
        !label_values(&unbound, "vendor").contains("obs-good"),
        "obs-good is bound: {unbound:?}"
    );
    Ok(())
}

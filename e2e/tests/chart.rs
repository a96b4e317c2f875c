//! charts/smpp-gateway on the real control plane (needs `make env-up`): `helm lint`,
//! `helm template | kubectl apply --dry-run=server`, a real install / upgrade / uninstall
//! (the CRD stays), what the rendered Deployments pass to the binaries, the operator's RBAC
//! as `kubectl auth can-i` answers it, values.schema.json refusals, and the one-source rules
//! (the chart's CRD is crds/smppvendor.yaml byte for byte; crds/rbac.yaml is rendered from
//! the chart), the opt-in dashboard ConfigMap and NetworkPolicy peers, the gateways' SMPP
//! server (listener flags, ports, the TLS Secret's mount, its own Service, its NetworkPolicy
//! rule, its values' refusals), and the real operator binary run with the rendered env under
//! the chart's RBAC.
//!
//! No kubelet runs here, so pods never start: these tests check objects, not pods.
//! Namespaces cannot be deleted (no controller-manager), so each test makes its own.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize as _;
use serde_yaml::Value;
use smpp_e2e::env::Env;
use smpp_e2e::operator::run;
use smpp_e2e::process::repo_root;

const CRD: &str = "customresourcedefinition/smppvendors.smpp.io";
/// Every CRD the chart installs.
const CRDS: [&str; 2] = [CRD, "customresourcedefinition/smppaccounts.smpp.io"];

fn env() -> Env {
    Env::load().expect("environment from target/env.sh (make env-up)")
}

fn chart() -> PathBuf {
    repo_root().join("charts/smpp-gateway")
}

fn example_values() -> PathBuf {
    repo_root().join("examples/helm-values.yaml")
}

/// A namespace of the test's own: `chart-<tag>-<random>`.
fn fresh_ns(env: &Env, tag: &str) -> String {
    let ns = format!("chart-{tag}-{:08x}", rand::random::<u32>());
    run(env.kubectl().args(["create", "namespace", &ns])).unwrap();
    ns
}

/// Runs `cmd` (with `stdin` piped in when given): whether it succeeded, and stdout+stderr.
fn output(cmd: &mut Command, stdin: Option<&str>) -> (bool, String) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (make env-up builds helm and kubectl)"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `helm template smpp <chart> -n <ns> <args>`: the rendered YAML.
fn render(env: &Env, ns: &str, args: &[&str]) -> String {
    run(env
        .helm()
        .args(["template", "smpp"])
        .arg(chart())
        .args(["--namespace", ns])
        .args(args))
    .unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

/// Rendering with only the required value set.
fn render_defaults(env: &Env, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["--set", "database.secretName=smpp-db"];
    all.extend_from_slice(args);
    render(env, ns, &all)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), name(o)))
        .collect()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], kind: &str, name_: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && name(o) == name_)
        .unwrap_or_else(|| panic!("no {kind}/{name_} in {:?}", kinds(objects)))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn env_var<'a>(c: &'a Value, var: &str) -> &'a Value {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("container {:?} has no env {var}", c["name"]))
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn kubectl_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let text = run(env.kubectl().args(args).args(["-o", "json"])).unwrap();
    serde_json::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------------------
// One source
// ---------------------------------------------------------------------------------------

#[test]
fn chart_crds_and_rbac_manifest_come_from_one_source() {
    let env = env();
    // Every CRD in crds/ has its byte-for-byte copy in the chart, and nothing else is there.
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "yaml")
            && text.contains("\nkind: CustomResourceDefinition")
        {
            let file = path.file_name().unwrap().to_owned();
            let copy = chart().join("files/crds").join(&file);
            let copied = std::fs::read_to_string(&copy).unwrap_or_default();
            assert!(
                copied == text,
                "{} differs from {}: run `make crds`",
                copy.display(),
                path.display()
            );
            expected.insert(file);
        }
    }
    let copies: BTreeSet<_> = std::fs::read_dir(chart().join("files/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        copies, expected,
        "charts/smpp-gateway/files/crds holds exactly the CRDs of crds/ (run `make crds`)"
    );
    assert!(expected.contains(std::ffi::OsStr::new("smppvendor.yaml")));

    // The rendered CRD is the file's, plus the keep policy and the chart's labels.
    let source = docs(&std::fs::read_to_string(repo_root().join("crds/smppvendor.yaml")).unwrap());
    let rendered = docs(&render_defaults(&env, "default", &[]));
    let crd = find(&rendered, "CustomResourceDefinition", "smppvendors.smpp.io");
    // Helm re-serialises the file (fromYaml | toYaml): same content, numbers as numbers
    // (3600.0 in the file becomes 3600).
    assert!(
        numbers_as_f64(&crd["spec"]) == numbers_as_f64(&source[0]["spec"]),
        "the rendered CRD's spec differs from crds/smppvendor.yaml"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let not_kept = docs(&render_defaults(
        &env,
        "default",
        &["--set", "crds.keep=false"],
    ));
    let crd = find(&not_kept, "CustomResourceDefinition", "smppvendors.smpp.io");
    assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let without = docs(&render_defaults(
        &env,
        "default",
        &["--set", "crds.enabled=false"],
    ));
    assert!(
        !without
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition"),
        "crds.enabled=false renders no CRD"
    );

    // crds/rbac.yaml is the chart's RBAC, rendered by `make crds`.
    let mut cmd = Command::new(repo_root().join("e2e/scripts/crds.sh"));
    cmd.arg("rbac").env("PATH", prepend_path(&env.bin_dir));
    let fresh = run(&mut cmd).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("crds/rbac.yaml")).unwrap();
    assert!(
        fresh == committed,
        "crds/rbac.yaml is stale: run `make crds`"
    );
}

/// `v` as JSON with every number an f64, so 3600 and 3600.0 compare equal.
fn numbers_as_f64(v: &Value) -> serde_json::Value {
    fn walk(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
            serde_json::Value::Array(a) => a.into_iter().map(walk).collect(),
            serde_json::Value::Object(o) => o.into_iter().map(|(k, v)| (k, walk(v))).collect(),
            other => other,
        }
    }
    walk(serde_json::to_value(v).unwrap())
}

fn prepend_path(dir: &std::path::Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

// ---------------------------------------------------------------------------------------
// Lint, server dry run, rendered contracts
// ---------------------------------------------------------------------------------------

#[test]
fn lint_and_server_side_dry_run_of_defaults_example_and_extras() {
    let env = env();
    let (ok, text) = output(
        env.helm()
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("-f")
            .arg(example_values()),
        None,
    );
    assert!(
        ok,
        "helm lint --strict -f examples/helm-values.yaml: {text}"
    );

    let ns = fresh_ns(&env, "dryrun");
    let example = example_values();
    let example = example.to_str().unwrap();
    for (what, args) in [
        ("defaults", vec!["--set", "database.secretName=smpp-db"]),
        ("examples/helm-values.yaml", vec!["-f", example]),
        (
            "example + NetworkPolicy, extra namespace, cluster-wide off",
            vec![
                "-f",
                example,
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "operator.watch.namespaces={default}",
            ],
        ),
        (
            "cluster-wide, one replica, no PDB",
            vec![
                "--set",
                "database.secretName=smpp-db",
                "--set",
                "operator.watch.clusterWide=true",
                "--set",
                "gateway.podDisruptionBudget.enabled=false",
            ],
        ),
    ] {
        let text = server_dry_run(&env, what, &render(&env, &ns, &args));
        assert!(
            text.contains("deployment.apps/smpp-gateway created (server dry run)"),
            "{what}: {text}"
        );
    }
}

/// `kubectl apply --dry-run=server` of rendered `yaml`: kubectl's answer, failing with the
/// apiserver's refusal.
fn server_dry_run(env: &Env, what: &str, yaml: &str) -> String {
    let (ok, text) = output(
        env.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
        Some(yaml),
    );
    assert!(
        ok,
        "{what}: the apiserver refused the rendered chart:\n{text}"
    );
    text
}

/// The settings each binary reads from the environment, from its source (clap `env = ".."`).
fn binary_envs(main_rs: &str) -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo_root().join(main_rs)).unwrap();
    src.split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn rendered_deployments_pass_what_the_binaries_take_and_are_hardened() {
    let env = env();
    let objects = docs(&render(
        &env,
        "messaging",
        &["-f", example_values().to_str().unwrap()],
    ));
    let gw = find(&objects, "Deployment", "smpp-gateway");
    let op = find(&objects, "Deployment", "smpp-operator");

    // Only env names the binaries read (a typo would be silently ignored otherwise).
    for (deployment, main_rs) in [(gw, "gateway/src/main.rs"), (op, "operator/src/main.rs")] {
        let known = binary_envs(main_rs);
        for var in env_names(container(deployment)) {
            assert!(
                known.contains(&var),
                "{} sets {var}, which {main_rs} does not read (it reads {known:?})",
                name(deployment)
            );
        }
    }

    // Gateway: 3 replicas, pod identity and address, Secrets, files, probes, graceful stop.
    assert_eq!(gw["spec"]["replicas"], 3);
    let c = container(gw);
    assert_eq!(
        env_var(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env_var(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(env_var(c, "HTTP_ADDR")["value"], "0.0.0.0:8080");
    let db = &env_var(c, "DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&db["name"], &db["key"]),
        (&"smpp-db".into(), &"url".into())
    );
    let redis = &env_var(c, "REDIS_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(redis["name"], "smpp-redis");
    assert_eq!(env_var(c, "DLR_TTL")["value"], "72h");
    let keys_file = env_var(c, "API_KEYS_FILE")["value"].as_str().unwrap();
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| keys_file.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("API_KEYS_FILE lies under a mount");
    assert!(
        mount["subPath"].is_null(),
        "no subPath, so rotations arrive"
    );
    let volume = gw["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "smpp-api-keys");
    assert_eq!(
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            volume["secret"]["items"][0]["path"].as_str().unwrap()
        ),
        keys_file
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let shutdown: u64 = env_var(c, "SHUTDOWN_TIMEOUT_SECONDS")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = gw["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > sleep + shutdown,
        "grace {grace}s covers preStop {sleep}s + unbind {shutdown}s"
    );
    let spread = gw["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_sequence()
        .unwrap();
    assert!(
        spread
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname")
    );
    let pdb = find(&objects, "PodDisruptionBudget", "smpp-gateway");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        gw["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        gw["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );

    // Operator: its port, the release namespace only, election with 2 replicas.
    let c = container(op);
    assert_eq!(env_var(c, "HTTP_ADDR")["value"], "0.0.0.0:8081");
    assert_eq!(env_var(c, "WATCH_NAMESPACE")["value"], "messaging");
    assert_eq!(env_var(c, "LEASE_NAMESPACE")["value"], "messaging");
    assert_eq!(env_var(c, "LEADER_ELECTION")["value"], "true");
    assert_eq!(
        op["spec"]["template"]["spec"]["serviceAccountName"],
        "smpp-operator"
    );

    // Both pods hardened, with requests and limits.
    for d in [gw, op] {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &container(d)["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", name(d));
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(sc["runAsUser"], 65532);
        let res = &container(d)["resources"];
        for k in ["requests", "limits"] {
            assert!(
                !res[k]["cpu"].is_null() && !res[k]["memory"].is_null(),
                "{k}"
            );
        }
    }

    // Services: the API, and metrics for both.
    for svc in [
        "smpp-gateway",
        "smpp-gateway-metrics",
        "smpp-operator-metrics",
    ] {
        find(&objects, "Service", svc);
    }

    // Defaults: 3 gateways, one operator without election (no Lease RBAC), no extras.
    let defaults = docs(&render_defaults(&env, "messaging", &[]));
    assert_eq!(
        find(&defaults, "Deployment", "smpp-gateway")["spec"]["replicas"],
        3
    );
    let op = find(&defaults, "Deployment", "smpp-operator");
    assert_eq!(env_var(container(op), "LEADER_ELECTION")["value"], "false");
    assert_eq!(op["spec"]["strategy"]["type"], "Recreate");
    let k = kinds(&defaults);
    assert!(!k.contains("Role/smpp-operator-leader-election"), "{k:?}");
    for extra in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(
            !defaults.iter().any(|o| o["kind"] == extra),
            "{extra} is opt-in"
        );
    }
    let gw = find(&defaults, "Deployment", "smpp-gateway");
    let names = env_names(container(gw));
    for absent in [
        "REDIS_URL",
        "API_KEYS_FILE",
        "CALLBACK_SECRET_FILE",
        "MO_URL",
    ] {
        assert!(
            !names.contains(&absent.to_string()),
            "{absent} only when set"
        );
    }

    // The extras, switched on.
    let extras = docs(&render_defaults(
        &env,
        "messaging",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "gateway.callbackSecret.secretName=cb",
            "--set",
            "gateway.moUrl=https://mo.example.net/in",
        ],
    ));
    let sm = find(&extras, "ServiceMonitor", "smpp");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    find(&extras, "NetworkPolicy", "smpp-gateway");
    find(&extras, "NetworkPolicy", "smpp-operator");
    let alerts = chart().join("files/alerts.yaml");
    assert_eq!(
        extras.iter().any(|o| o["kind"] == "PrometheusRule"),
        alerts.exists(),
        "PrometheusRule rendered exactly when {} exists",
        alerts.display()
    );
    let c = container(find(&extras, "Deployment", "smpp-gateway"));
    assert_eq!(env_var(c, "MO_URL")["value"], "https://mo.example.net/in");
    assert!(
        env_var(c, "CALLBACK_SECRET_FILE")["value"]
            .as_str()
            .unwrap()
            .starts_with("/etc/smpp-gateway/")
    );
}

// ---------------------------------------------------------------------------------------
// Opt-in extras: the dashboard ConfigMap, NetworkPolicy peers
// ---------------------------------------------------------------------------------------

/// deploy/grafana/smpp-gateway.json, the dashboard's one source.
fn dashboard_json() -> serde_json::Value {
    let path = repo_root().join("deploy/grafana/smpp-gateway.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn dashboard_configmap_holds_the_grafana_json_for_the_sidecar_when_enabled() {
    let env = env();
    let defaults = docs(&render_defaults(&env, "messaging", &[]));
    assert!(
        !defaults.iter().any(|o| o["kind"] == "ConfigMap"),
        "dashboards.enabled is off by default: {:?}",
        kinds(&defaults)
    );

    let ns = fresh_ns(&env, "dashboard");
    let yaml = render_defaults(&env, &ns, &["--set", "dashboards.enabled=true"]);
    let objects = docs(&yaml);
    let cm = find(&objects, "ConfigMap", "smpp-dashboard");
    assert_eq!(cm["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"], "1",
        "the label Grafana's sidecar looks for by default"
    );
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/instance"],
        "smpp"
    );
    let data = cm["data"].as_mapping().unwrap();
    let keys: Vec<_> = data.keys().collect();
    assert_eq!(keys.len(), 1, "one dashboard: {keys:?}");
    let text = cm["data"]["smpp-gateway.json"]
        .as_str()
        .expect("the dashboard under data.smpp-gateway.json");
    let shipped: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the ConfigMap's dashboard is not JSON: {e}"));
    assert!(
        shipped == dashboard_json(),
        "the ConfigMap's dashboard differs from deploy/grafana/smpp-gateway.json (`make crds`)"
    );
    let text = server_dry_run(&env, "dashboards.enabled=true", &yaml);
    assert!(
        text.contains("configmap/smpp-dashboard created (server dry run)"),
        "{text}"
    );

    // In Grafana's namespace, with a folder annotation and the user's label instead.
    let placed = docs(&render_defaults(
        &env,
        &ns,
        &[
            "--set",
            "dashboards.enabled=true",
            "--set",
            "dashboards.namespace=monitoring",
            "--set",
            "dashboards.annotations.grafana_folder=SMPP",
            "--set",
            "dashboards.labels.grafana_dashboard=null",
            "--set",
            "dashboards.labels.team=sms",
        ],
    ));
    let cm = find(&placed, "ConfigMap", "smpp-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "SMPP");
    assert_eq!(cm["metadata"]["labels"]["team"], "sms");
    assert!(cm["metadata"]["labels"]["grafana_dashboard"].is_null());
}

/// The peers of the one ingress rule of NetworkPolicy `name_` that opens port `port` (a
/// container port name); None: any source may connect.
fn ingress_from(objects: &[Value], name_: &str, port: &str) -> Option<Vec<Value>> {
    let rules: Vec<&Value> = find(objects, "NetworkPolicy", name_)["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|r| {
            r["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["port"] == port)
        })
        .collect();
    assert_eq!(rules.len(), 1, "{name_}: one ingress rule for port {port}");
    rules[0]["from"].as_sequence().cloned()
}

/// The container port names NetworkPolicy `name_` opens, over all its rules.
fn ingress_ports(objects: &[Value], name_: &str) -> BTreeSet<String> {
    find(objects, "NetworkPolicy", name_)["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter())
        .map(|p| p["port"].as_str().unwrap().to_string())
        .collect()
}

/// The gateway serves its API and /metrics on one port: restricting the scrapers must not
/// close the API (apiFrom empty means any client), and apiFrom keeps the gateways and the
/// scrapers in.
#[test]
fn network_policy_metrics_peers_never_close_the_gateway_api() {
    let env = env();
    let peer = |yaml: &str| -> Value { serde_yaml::from_str(yaml).unwrap() };
    let client = peer("podSelector: {matchLabels: {app: client}}");
    let prom = peer("podSelector: {matchLabels: {app: prom}}");
    let gateways = peer(
        "podSelector: {matchLabels: {app.kubernetes.io/name: smpp-gateway, app.kubernetes.io/instance: smpp}}",
    );
    let set_client = "networkPolicy.apiFrom[0].podSelector.matchLabels.app=client";
    let set_prom = "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prom";
    let cases = [
        (vec![], None, None),
        (vec![set_prom], None, Some(vec![prom.clone()])),
        (
            vec![set_client],
            Some(vec![gateways.clone(), client.clone()]),
            None,
        ),
        (
            vec![set_client, set_prom],
            Some(vec![gateways, client, prom.clone()]),
            Some(vec![prom]),
        ),
    ];
    let ns = fresh_ns(&env, "netpol");
    for (sets, gateway, operator) in cases {
        let mut args = vec!["--set", "networkPolicy.enabled=true"];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let yaml = render_defaults(&env, &ns, &args);
        let objects = docs(&yaml);
        assert_eq!(
            ingress_from(&objects, "smpp-gateway", "http"),
            gateway,
            "{sets:?}: who may reach the gateway port"
        );
        assert_eq!(
            ingress_from(&objects, "smpp-operator", "http"),
            operator,
            "{sets:?}: who may reach the operator port"
        );
        server_dry_run(&env, &format!("NetworkPolicy {sets:?}"), &yaml);
    }
}

// ---------------------------------------------------------------------------------------
// The SMPP server for customers (smppServer)
// ---------------------------------------------------------------------------------------

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The container's `--smpp-*` args (the chart writes them as `--flag=value`).
fn smpp_args(c: &Value) -> Vec<String> {
    strings(&c["args"])
        .into_iter()
        .filter(|a| a.starts_with("--smpp-"))
        .collect()
}

/// The value of `--flag=value` in the container's args.
fn arg_value(c: &Value, flag: &str) -> Option<String> {
    strings(&c["args"])
        .iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string))
}

fn container_ports(c: &Value) -> Vec<(String, u64)> {
    c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"], "TCP");
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A Service's ports: name, port, targetPort, nodePort (0: none).
fn service_ports(svc: &Value) -> Vec<(String, u64, String, u64)> {
    svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap().to_string(),
                p["nodePort"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn volume<'a>(d: &'a Value, name_: &str) -> Option<&'a Value> {
    d["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name_)
}

fn grace(d: &Value) -> u64 {
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap()
}

const SMPP_SVC: &str = "smpp-gateway-smpp";
const SET_TLS: [&str; 2] = ["--set", "smppServer.tls.secretName=smpp-tls"];

/// The gateway's SMPP server as the chart renders it: one flag per listener, the ports, the
/// TLS Secret mounted as a directory, its own Service whose target ports are the container's,
/// and a grace period that covers unbinding the customers and then the vendors.
#[test]
fn smpp_server_listens_plain_by_default_and_on_tls_from_a_mounted_tls_secret() {
    let env = env();
    let ns = fresh_ns(&env, "smpp");
    let every_target_is_a_container_port = |objects: &[Value]| {
        let c = container(find(objects, "Deployment", "smpp-gateway"));
        let names: Vec<String> = container_ports(c).into_iter().map(|p| p.0).collect();
        for (port, _, target, _) in service_ports(find(objects, "Service", SMPP_SVC)) {
            assert!(
                names.contains(&target),
                "{port} targets {target}: {names:?}"
            );
        }
    };

    // Defaults: plain SMPP on 2775, a ClusterIP Service of its own, no TLS.
    let yaml = render_defaults(&env, &ns, &[]);
    let objects = docs(&yaml);
    let gw = find(&objects, "Deployment", "smpp-gateway");
    let c = container(gw);
    assert_eq!(smpp_args(c), ["--smpp-addr=0.0.0.0:2775"]);
    assert_eq!(
        container_ports(c),
        [("http".to_string(), 8080), ("smpp".into(), 2775)]
    );
    assert!(volume(gw, "smpp-tls").is_none());
    let svc = find(&objects, "Service", SMPP_SVC);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(svc["spec"]["externalTrafficPolicy"].is_null());
    assert_eq!(
        svc["spec"]["selector"],
        gw["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        service_ports(svc),
        [("smpp".to_string(), 2775, "smpp".to_string(), 0)]
    );
    every_target_is_a_container_port(&objects);
    // The API's Service stays HTTP only, so exposing SMPP never exposes the API.
    let api = find(&objects, "Service", "smpp-gateway");
    assert_eq!(
        service_ports(api),
        [("http".to_string(), 8080, "http".to_string(), 0)]
    );
    // preStop 5 s, then customers (10 s at most), then vendors (10 s at most), plus 10.
    assert_eq!(grace(gw), 5 + 10 + 10 + 10);
    let text = server_dry_run(&env, "smppServer defaults", &yaml);
    assert!(
        text.contains("service/smpp-gateway-smpp created (server dry run)"),
        "{text}"
    );

    // A kubernetes.io/tls Secret: the TLS listener, its files from the Secret's directory
    // mount (no subPath, so a renewal reaches them), and a LoadBalancer that keeps the
    // customers' addresses.
    let mut args = SET_TLS.to_vec();
    args.extend([
        "--set",
        "smppServer.service.type=LoadBalancer",
        "--set",
        "smppServer.service.loadBalancerSourceRanges={203.0.113.0/24}",
        "--set",
        "smppServer.service.nodePorts.tls=31776",
    ]);
    let yaml = render_defaults(&env, &ns, &args);
    let objects = docs(&yaml);
    let gw = find(&objects, "Deployment", "smpp-gateway");
    let c = container(gw);
    assert_eq!(arg_value(c, "--smpp-addr").as_deref(), Some("0.0.0.0:2775"));
    assert_eq!(
        arg_value(c, "--smpp-tls-addr").as_deref(),
        Some("0.0.0.0:2776")
    );
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smpp-tls")
        .expect("the TLS Secret is mounted");
    assert_eq!(mount["readOnly"], true);
    assert!(mount["subPath"].is_null(), "no subPath, so renewals arrive");
    let dir = mount["mountPath"].as_str().unwrap();
    let secret = &volume(gw, "smpp-tls").expect("an smpp-tls volume")["secret"];
    assert_eq!(secret["secretName"], "smpp-tls");
    for (flag, key) in [
        ("--smpp-tls-cert-file", "tls.crt"),
        ("--smpp-tls-key-file", "tls.key"),
    ] {
        let item = secret["items"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|i| i["key"] == key)
            .unwrap_or_else(|| panic!("the volume projects {key}"));
        assert_eq!(
            arg_value(c, flag),
            Some(format!("{dir}/{}", item["path"].as_str().unwrap())),
            "{flag} names the mounted {key}"
        );
    }
    assert_eq!(
        container_ports(c),
        [
            ("http".to_string(), 8080),
            ("smpp".into(), 2775),
            ("smpp-tls".into(), 2776)
        ]
    );
    let svc = find(&objects, "Service", SMPP_SVC);
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        strings(&svc["spec"]["loadBalancerSourceRanges"]),
        ["203.0.113.0/24"]
    );
    assert_eq!(
        service_ports(svc),
        [
            ("smpp".to_string(), 2775, "smpp".to_string(), 0),
            ("smpp-tls".into(), 2776, "smpp-tls".into(), 31776)
        ]
    );
    every_target_is_a_container_port(&objects);
    server_dry_run(&env, "smppServer TLS, LoadBalancer", &yaml);

    // TLS only, on other ports, as a NodePort with Kubernetes' own policy.
    let mut args = SET_TLS.to_vec();
    args.extend([
        "--set",
        "smppServer.plain.enabled=false",
        "--set",
        "smppServer.tls.port=3776",
        "--set",
        "smppServer.service.tlsPort=3601",
        "--set",
        "smppServer.service.type=NodePort",
        "--set",
        "smppServer.service.externalTrafficPolicy=Cluster",
    ]);
    let yaml = render_defaults(&env, &ns, &args);
    let objects = docs(&yaml);
    let c = container(find(&objects, "Deployment", "smpp-gateway"));
    assert_eq!(arg_value(c, "--smpp-addr"), None);
    assert_eq!(
        arg_value(c, "--smpp-tls-addr").as_deref(),
        Some("0.0.0.0:3776")
    );
    assert_eq!(
        container_ports(c),
        [("http".to_string(), 8080), ("smpp-tls".into(), 3776)]
    );
    let svc = find(&objects, "Service", SMPP_SVC);
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(
        service_ports(svc),
        [("smpp-tls".to_string(), 3601, "smpp-tls".to_string(), 0)]
    );
    every_target_is_a_container_port(&objects);
    server_dry_run(&env, "smppServer TLS only, NodePort", &yaml);

    // Off: no listener, no port, no Service, and the grace period of vendors alone.
    let objects = docs(&render_defaults(
        &env,
        &ns,
        &["--set", "smppServer.enabled=false", SET_TLS[0], SET_TLS[1]],
    ));
    let gw = find(&objects, "Deployment", "smpp-gateway");
    assert!(
        container(gw)["args"].is_null(),
        "{:?}",
        container(gw)["args"]
    );
    assert_eq!(container_ports(container(gw)), [("http".to_string(), 8080)]);
    assert!(volume(gw, "smpp-tls").is_none());
    assert!(
        !kinds(&objects).contains(&format!("Service/{SMPP_SVC}")),
        "{:?}",
        kinds(&objects)
    );
    assert_eq!(grace(gw), 5 + 10 + 10);
}

/// The `--long` flags `smpp-gateway --help` lists.
fn gateway_flags() -> BTreeSet<String> {
    let bin = smpp_e2e::process::workspace_bin("smpp-gateway");
    let help = run(Command::new(bin).arg("--help")).unwrap();
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
                .next()
                .unwrap()
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Each limit value becomes its flag, and every flag the chart passes is one the gateway
/// binary has (a typo would stop the pods at start).
#[test]
fn smpp_server_limits_become_flags_the_gateway_binary_takes() {
    let env = env();
    let mut args = SET_TLS.to_vec();
    let sets = [
        ("maxConnections", "500", "--smpp-max-connections"),
        ("window", "20", "--smpp-window"),
        ("maxPduBytes", "4096", "--smpp-max-pdu-bytes"),
        ("idleTimeoutSeconds", "300", "--smpp-idle-timeout-seconds"),
        ("writerQueue", "256", "--smpp-writer-queue"),
        (
            "responseTimeoutSeconds",
            "5",
            "--smpp-response-timeout-seconds",
        ),
        (
            "failedBindsPerMinute",
            "0",
            "--smpp-failed-binds-per-minute",
        ),
    ];
    let values: Vec<String> = sets
        .iter()
        .map(|(k, v, _)| format!("smppServer.limits.{k}={v}"))
        .chain(["smppServer.systemId=acme-gw".to_string()])
        .collect();
    for v in &values {
        args.extend(["--set", v.as_str()]);
    }
    let objects = docs(&render_defaults(&env, "messaging", &args));
    let c = container(find(&objects, "Deployment", "smpp-gateway"));
    for (key, value, flag) in sets {
        assert_eq!(arg_value(c, flag).as_deref(), Some(value), "{key} → {flag}");
    }
    assert_eq!(arg_value(c, "--smpp-system-id").as_deref(), Some("acme-gw"));
    assert_eq!(smpp_args(c).len(), 4 + sets.len() + 1, "{:?}", smpp_args(c));

    let known = gateway_flags();
    assert!(known.contains("smpp-addr"), "--help parsed: {known:?}");
    for arg in strings(&c["args"]) {
        let flag = arg
            .strip_prefix("--")
            .and_then(|a| a.split('=').next())
            .unwrap_or_else(|| panic!("{arg} is not --flag=value"));
        assert!(
            known.contains(flag),
            "the chart passes --{flag}, which smpp-gateway --help does not list: {known:?}"
        );
    }
}

#[test]
fn smpp_server_values_are_refused_with_readable_messages() {
    let env = env();
    let db = ["--set", "database.secretName=db"];
    let case = |set: &'static str| -> Vec<&'static str> { vec![db[0], db[1], "--set", set] };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            case("smppServer.plain.port=70000"),
            "at '/smppServer/plain/port': maximum: got 70,000, want 65,535",
        ),
        (
            case("smppServer.tls.secretName=Smpp_TLS"),
            "at '/smppServer/tls/secretName': 'Smpp_TLS' does not match pattern",
        ),
        (
            case("smppServer.systemId=a-much-too-long-id"),
            "at '/smppServer/systemId': maxLength: got 18, want 15",
        ),
        (
            case("smppServer.limits.window=0"),
            "at '/smppServer/limits/window': minimum: got 0, want 1",
        ),
        (
            case("smppServer.limits.maxConnections=lots"),
            "at '/smppServer/limits/maxConnections': got string, want null or integer",
        ),
        (
            case("smppServer.limits.maxConection=5"),
            "at '/smppServer/limits': additional properties 'maxConection' not allowed",
        ),
        (
            case("smppServer.service.type=External"),
            "at '/smppServer/service/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'",
        ),
        (
            case("smppServer.service.externalTrafficPolicy=local"),
            "at '/smppServer/service/externalTrafficPolicy': value must be one of 'Cluster', 'Local'",
        ),
        (
            case("smppServer.service.loadBalancerSourceRanges={203.0.113.0}"),
            "at '/smppServer/service/loadBalancerSourceRanges/0': '203.0.113.0' does not match pattern",
        ),
        (
            case("networkPolicy.smppFrom=everyone"),
            "at '/networkPolicy/smppFrom': got string, want array",
        ),
        // Checked by the templates, where a rule spans values.
        (
            case("smppServer.plain.enabled=false"),
            "smppServer.plain.enabled is false and smppServer.tls.secretName is empty: the SMPP server would have no listener",
        ),
        (
            case("smppServer.plain.port=8080"),
            "smppServer.plain.port (8080) is gateway.httpPort: pick another port",
        ),
        (
            vec![
                db[0],
                db[1],
                SET_TLS[0],
                SET_TLS[1],
                "--set",
                "smppServer.tls.port=2775",
            ],
            "smppServer.tls.port (2775) is already gateway.httpPort or smppServer.plain.port",
        ),
    ];
    let cases: Vec<(&[&str], &str)> = cases.iter().map(|(a, m)| (a.as_slice(), *m)).collect();
    assert_refused(&env, &cases);
}

/// With networkPolicy.enabled, the SMPP ports are opened (from smppFrom, any source when
/// empty) in a rule of their own: restricting customers never touches the API's peers.
#[test]
fn network_policy_opens_the_smpp_ports_to_smpp_from() {
    let env = env();
    let ns = fresh_ns(&env, "netpolsmpp");
    let peer: Value = serde_yaml::from_str("ipBlock: {cidr: 203.0.113.0/24}").unwrap();
    let on = ["--set", "networkPolicy.enabled=true"];
    let set_peer = "networkPolicy.smppFrom[0].ipBlock.cidr=203.0.113.0/24";
    let set_api = "networkPolicy.apiFrom[0].podSelector.matchLabels.app=client";
    let ports = |p: &[&str]| -> BTreeSet<String> { p.iter().map(|s| s.to_string()).collect() };
    let cases = vec![
        (vec![], ports(&["http", "smpp"]), None),
        (
            vec![SET_TLS[1], set_peer],
            ports(&["http", "smpp", "smpp-tls"]),
            Some(vec![peer.clone()]),
        ),
        (
            vec![set_api, set_peer],
            ports(&["http", "smpp"]),
            Some(vec![peer]),
        ),
        (vec!["smppServer.enabled=false"], ports(&["http"]), None),
    ];
    for (sets, open, smpp_from) in cases {
        let mut args = on.to_vec();
        for set in &sets {
            args.extend(["--set", set]);
        }
        let yaml = render_defaults(&env, &ns, &args);
        let objects = docs(&yaml);
        assert_eq!(ingress_ports(&objects, "smpp-gateway"), open, "{sets:?}");
        if open.contains("smpp") {
            assert_eq!(
                ingress_from(&objects, "smpp-gateway", "smpp"),
                smpp_from,
                "{sets:?}: who may reach the SMPP ports"
            );
            if open.contains("smpp-tls") {
                assert_eq!(
                    ingress_from(&objects, "smpp-gateway", "smpp-tls"),
                    smpp_from
                );
            }
        }
        // The API's peers are apiFrom's (and the gateways), whatever smppFrom says.
        let api = ingress_from(&objects, "smpp-gateway", "http");
        assert_eq!(api.is_some(), sets.contains(&set_api), "{sets:?}: {api:?}");
        server_dry_run(&env, &format!("NetworkPolicy {sets:?}"), &yaml);
    }
}

// ---------------------------------------------------------------------------------------
// Install, upgrade, uninstall
// ---------------------------------------------------------------------------------------

#[test]
fn install_upgrade_uninstall_keeps_the_crd() {
    let env = env();
    let ns = fresh_ns(&env, "life");
    // Other tests apply the CRDs with kubectl; let this release adopt them (Helm's ownership
    // metadata), as a user would when moving a cluster to the chart.
    for crd in CRDS {
        if !output(env.kubectl().args(["get", crd]), None).0 {
            continue;
        }
        run(env.kubectl().args([
            "label",
            "--overwrite",
            crd,
            "app.kubernetes.io/managed-by=Helm",
        ]))
        .unwrap();
        run(env.kubectl().args([
            "annotate",
            "--overwrite",
            crd,
            "meta.helm.sh/release-name=smpp",
            &format!("meta.helm.sh/release-namespace={ns}"),
        ]))
        .unwrap();
    }

    run(env
        .helm()
        .args(["install", "smpp"])
        .arg(chart())
        .args(["--namespace", &ns, "-f"])
        .arg(example_values()))
    .unwrap_or_else(|e| panic!("helm install: {e}"));
    for object in [
        "deployment/smpp-gateway",
        "deployment/smpp-operator",
        "serviceaccount/smpp-operator",
        "serviceaccount/smpp-gateway",
        "service/smpp-gateway",
        "service/smpp-gateway-metrics",
        "service/smpp-gateway-smpp",
        "service/smpp-operator-metrics",
        "poddisruptionbudget/smpp-gateway",
        "role/smpp-operator",
        "rolebinding/smpp-operator",
        "role/smpp-operator-leader-election",
    ] {
        run(env.kubectl().args(["-n", &ns, "get", object]))
            .unwrap_or_else(|e| panic!("{object} after helm install: {e}"));
    }
    let crd = kubectl_json(&env, &["get", CRD]);
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"],
        ns.as_str()
    );

    // Upgrade with a changed value.
    run(env
        .helm()
        .args(["upgrade", "smpp"])
        .arg(chart())
        .args(["--namespace", &ns, "-f"])
        .arg(example_values())
        .args(["--set", "gateway.replicas=5", "--set", "gateway.dlrTtl=24h"])
        .args(["--set", "dashboards.enabled=true"]))
    .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let cm = kubectl_json(&env, &["-n", &ns, "get", "configmap/smpp-dashboard"]);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let gw = kubectl_json(&env, &["-n", &ns, "get", "deployment/smpp-gateway"]);
    assert_eq!(gw["spec"]["replicas"], 5);
    let dlr = gw["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DLR_TTL")
        .unwrap()["value"]
        .clone();
    assert_eq!(dlr, "24h");
    let history = run(env
        .helm()
        .args(["history", "smpp", "-n", &ns, "-o", "json"]))
    .unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");

    // Uninstall: the release's objects go, the CRD (and so every SmppVendor) stays.
    let (ok, text) = output(env.helm().args(["uninstall", "smpp", "-n", &ns]), None);
    assert!(ok, "helm uninstall: {text}");
    assert!(
        text.contains("smppvendors.smpp.io") || text.contains("kept"),
        "helm names the kept CRD: {text}"
    );
    let (gone, _) = output(
        env.kubectl()
            .args(["-n", &ns, "get", "deployment/smpp-gateway"]),
        None,
    );
    assert!(!gone, "the gateway Deployment is deleted by helm uninstall");
    assert!(
        !output(
            env.kubectl()
                .args(["-n", &ns, "get", "configmap/smpp-dashboard"]),
            None
        )
        .0,
        "the dashboard ConfigMap is deleted"
    );
    assert!(
        !output(
            env.kubectl().args(["-n", &ns, "get", "role/smpp-operator"]),
            None
        )
        .0,
        "the operator Role is deleted"
    );
    for crd in CRDS {
        let kept = kubectl_json(&env, &["get", crd]);
        assert_eq!(
            format!(
                "customresourcedefinition/{}",
                kept["metadata"]["name"].as_str().unwrap()
            ),
            crd,
            "CRD kept"
        );
        // Leave the shared CRD as kubectl-managed again.
        run(env.kubectl().args([
            "annotate",
            crd,
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
        ]))
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// RBAC: kubectl auth can-i as the operator's ServiceAccount
// ---------------------------------------------------------------------------------------

/// Where a check points: the release namespace, another namespace, or every namespace.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Own,
    Other,
    All,
    Cluster,
}

/// (verb, resource, subresource, scope), with what a default install answers and what the
/// cluster-wide opt-in answers.
const MATRIX: &[(&str, &str, &str, Scope, bool, bool)] = &[
    ("get", "smppvendors.smpp.io", "", Scope::Own, true, true),
    ("list", "smppvendors.smpp.io", "", Scope::Own, true, true),
    ("watch", "smppvendors.smpp.io", "", Scope::Own, true, true),
    ("patch", "smppvendors.smpp.io", "", Scope::Own, true, true),
    (
        "patch",
        "smppvendors.smpp.io",
        "status",
        Scope::Own,
        true,
        true,
    ),
    (
        "update",
        "smppvendors.smpp.io",
        "finalizers",
        Scope::Own,
        true,
        true,
    ),
    ("get", "smppaccounts.smpp.io", "", Scope::Own, true, true),
    ("list", "smppaccounts.smpp.io", "", Scope::Own, true, true),
    ("watch", "smppaccounts.smpp.io", "", Scope::Own, true, true),
    ("patch", "smppaccounts.smpp.io", "", Scope::Own, true, true),
    (
        "patch",
        "smppaccounts.smpp.io",
        "status",
        Scope::Own,
        true,
        true,
    ),
    (
        "update",
        "smppaccounts.smpp.io",
        "finalizers",
        Scope::Own,
        true,
        true,
    ),
    ("get", "secrets", "", Scope::Own, true, true),
    ("list", "secrets", "", Scope::Own, true, true),
    ("watch", "secrets", "", Scope::Own, true, true),
    ("create", "events.events.k8s.io", "", Scope::Own, true, true),
    // Never, in any mode.
    (
        "delete",
        "smppvendors.smpp.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    (
        "update",
        "smppvendors.smpp.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    (
        "delete",
        "smppaccounts.smpp.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    (
        "update",
        "smppaccounts.smpp.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    ("create", "secrets", "", Scope::Own, false, false),
    ("update", "secrets", "", Scope::Own, false, false),
    ("list", "pods", "", Scope::Own, false, false),
    (
        "create",
        "leases.coordination.k8s.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    (
        "delete",
        "customresourcedefinitions.apiextensions.k8s.io",
        "",
        Scope::Cluster,
        false,
        false,
    ),
    (
        "create",
        "roles.rbac.authorization.k8s.io",
        "",
        Scope::Own,
        false,
        false,
    ),
    // What only the cluster-wide opt-in grants.
    ("get", "secrets", "", Scope::Other, false, true),
    ("list", "secrets", "", Scope::All, false, true),
    ("get", "secrets", "", Scope::All, false, true),
    ("list", "smppvendors.smpp.io", "", Scope::Other, false, true),
    ("list", "smppvendors.smpp.io", "", Scope::All, false, true),
    (
        "list",
        "smppaccounts.smpp.io",
        "",
        Scope::Other,
        false,
        true,
    ),
    ("list", "smppaccounts.smpp.io", "", Scope::All, false, true),
    (
        "create",
        "events.events.k8s.io",
        "",
        Scope::Other,
        false,
        true,
    ),
];

fn can_i(env: &Env, sa_ns: &str, other_ns: &str, check: (&str, &str, &str, Scope)) -> bool {
    let (verb, resource, sub, scope) = check;
    let mut cmd = env.kubectl();
    cmd.args(["auth", "can-i", verb, resource])
        .arg(format!("--as=system:serviceaccount:{sa_ns}:smpp-operator"));
    if !sub.is_empty() {
        cmd.arg(format!("--subresource={sub}"));
    }
    match scope {
        Scope::Own => cmd.args(["-n", sa_ns]),
        Scope::Other => cmd.args(["-n", other_ns]),
        Scope::All => cmd.arg("--all-namespaces"),
        Scope::Cluster => &mut cmd,
    };
    let (yes, text) = output(&mut cmd, None);
    let answer = text.trim();
    assert!(
        answer.starts_with("yes") || answer.starts_with("no"),
        "{cmd:?}: {text}"
    );
    yes
}

fn install_rbac(env: &Env, ns: &str, args: &[&str]) {
    run(env
        .helm()
        .args(["install", "smpp"])
        .arg(chart())
        .args(["--namespace", ns])
        .args([
            "--set",
            "database.secretName=smpp-db",
            "--set",
            "crds.enabled=false",
        ])
        .args(args))
    .unwrap_or_else(|e| panic!("helm install {args:?}: {e}"));
}

#[test]
fn operator_rbac_is_least_privilege_and_cluster_wide_adds_exactly_the_cluster_reads() {
    let env = env();
    let other = format!("chart-unrelated-{:08x}", rand::random::<u32>());

    let default_ns = fresh_ns(&env, "rbac");
    install_rbac(&env, &default_ns, &[]);
    let wide_ns = fresh_ns(&env, "rbacwide");
    install_rbac(
        &env,
        &wide_ns,
        &["--set", "operator.watch.clusterWide=true"],
    );

    let mut changed = BTreeSet::new();
    let mut wrong = Vec::new();
    for (i, &(verb, res, sub, scope, default, wide)) in MATRIX.iter().enumerate() {
        let check = (verb, res, sub, scope);
        let d = can_i(&env, &default_ns, &other, check);
        let w = can_i(&env, &wide_ns, &other, check);
        if d != default {
            wrong.push(format!("default: {check:?} answered {d}, want {default}"));
        }
        if w != wide {
            wrong.push(format!("cluster-wide: {check:?} answered {w}, want {wide}"));
        }
        if d != w {
            changed.insert(i);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let expected: BTreeSet<usize> = MATRIX
        .iter()
        .enumerate()
        .filter(|(_, r)| r.4 != r.5)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        changed, expected,
        "the opt-in changes exactly the cluster reads"
    );
    assert_eq!(expected.len(), 8);

    // More namespaces by value (a Role and RoleBinding in each), and a Lease with 2 replicas.
    let extra = fresh_ns(&env, "rbacextra-watched");
    let multi_ns = fresh_ns(&env, "rbacmulti");
    install_rbac(
        &env,
        &multi_ns,
        &[
            "--set",
            &format!("operator.watch.namespaces={{{extra}}}"),
            "--set",
            "operator.replicas=2",
        ],
    );
    let ask = |check, target: &str| can_i(&env, &multi_ns, target, check);
    assert!(ask(("get", "secrets", "", Scope::Other), &extra));
    assert!(ask(
        ("list", "smppvendors.smpp.io", "", Scope::Other),
        &extra
    ));
    assert!(ask(
        ("patch", "smppvendors.smpp.io", "status", Scope::Other),
        &extra
    ));
    assert!(ask(
        ("list", "smppaccounts.smpp.io", "", Scope::Other),
        &extra
    ));
    assert!(ask(
        ("patch", "smppaccounts.smpp.io", "status", Scope::Other),
        &extra
    ));
    assert!(ask(
        ("create", "events.events.k8s.io", "", Scope::Other),
        &extra
    ));
    assert!(!ask(("get", "secrets", "", Scope::Other), &other));
    assert!(!ask(("get", "secrets", "", Scope::All), &other));
    assert!(ask(
        ("create", "leases.coordination.k8s.io", "", Scope::Own),
        &other
    ));
    assert!(ask(
        ("update", "leases.coordination.k8s.io", "", Scope::Own),
        &other
    ));
    assert!(!ask(
        ("create", "leases.coordination.k8s.io", "", Scope::Other),
        &extra
    ));
    let op = kubectl_json(&env, &["-n", &multi_ns, "get", "deployment/smpp-operator"]);
    let watch = op["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WATCH_NAMESPACE")
        .unwrap()["value"]
        .clone();
    assert_eq!(watch, format!("{multi_ns},{extra}").as_str());

    for ns in [&default_ns, &wide_ns, &multi_ns] {
        run(env.helm().args(["uninstall", "smpp", "-n", ns])).unwrap();
    }
    // The ClusterRole goes with the release.
    assert!(
        !output(
            env.kubectl()
                .args(["get", &format!("clusterrole/{wide_ns}-smpp-operator")]),
            None
        )
        .0
    );
}

// ---------------------------------------------------------------------------------------
// values.schema.json
// ---------------------------------------------------------------------------------------

#[test]
fn schema_rejects_bad_values_with_readable_messages() {
    let env = env();
    let cases: &[(&[&str], &str)] = &[
        (&[], "at '/database/secretName': minLength: got 0, want 1"),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "gateway.replicas=-1",
            ],
            "at '/gateway/replicas': minimum: got -1, want 0",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "operator.replicas=-2",
            ],
            "at '/operator/replicas': minimum: got -2, want 0",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "operator.image.pullPolicy=Sometimes",
            ],
            "at '/operator/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "gateway.image.pullPolicy=always",
            ],
            "at '/gateway/image/pullPolicy': value must be one of",
        ),
        (
            &["--set", "databse.secretName=db"],
            "additional properties 'databse' not allowed",
        ),
        (
            &["--set", "database.secretName=Smpp_DB"],
            "at '/database/secretName': 'Smpp_DB' does not match pattern",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "gateway.dlrTtl=3 days",
            ],
            "at '/gateway/dlrTtl': '3 days' does not match pattern",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "operator.watch.namespaces={Bad_NS}",
            ],
            "at '/operator/watch/namespaces/0': 'Bad_NS' does not match pattern",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "podSecurityContext.runAsNonRoot=false",
            ],
            "at '/podSecurityContext/runAsNonRoot': value must be true",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "gateway.service.port=70000",
            ],
            "at '/gateway/service/port': maximum: got 70,000, want 65,535",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "dashboards.enabled=yes",
            ],
            "at '/dashboards/enabled': got string, want boolean",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "dashboards.labels.grafana_dashboard=1",
            ],
            "at '/dashboards/labels/grafana_dashboard': got number, want string",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "metrics.serviceMonitor.enable=true",
            ],
            "at '/metrics/serviceMonitor': additional properties 'enable' not allowed",
        ),
        // Checked by the templates, where a rule spans values.
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "gateway.terminationGracePeriodSeconds=3",
            ],
            "gateway.terminationGracePeriodSeconds (3) must be at least preStopSleepSeconds + shutdownTimeoutSeconds x 2 (customers are unbound first, then vendors) (25)",
        ),
        (
            &[
                "--set",
                "database.secretName=db",
                "--set",
                "smppServer.enabled=false",
                "--set",
                "gateway.terminationGracePeriodSeconds=14",
            ],
            "gateway.terminationGracePeriodSeconds (14) must be at least preStopSleepSeconds + shutdownTimeoutSeconds (15)",
        ),
    ];
    assert_refused(&env, cases);

    // helm install refuses the same way, before creating anything.
    let ns = fresh_ns(&env, "schema");
    let (ok, text) = output(
        env.helm().args(["install", "smpp"]).arg(chart()).args([
            "-n",
            &ns,
            "--set",
            "database.secretName=db",
            "--set",
            "gateway.replicas=-1",
        ]),
        None,
    );
    assert!(!ok && text.contains("at '/gateway/replicas'"), "{text}");
    let (listed, text) = output(env.helm().args(["list", "-n", &ns, "-q"]), None);
    assert!(listed && text.trim().is_empty(), "no release: {text}");
}

/// `helm template` with each case's args fails, saying the case's message.
fn assert_refused(env: &Env, cases: &[(&[&str], &str)]) {
    let mut wrong = Vec::new();
    for (args, message) in cases {
        let (ok, text) = output(
            env.helm()
                .args(["template", "smpp"])
                .arg(chart())
                .args(*args),
            None,
        );
        if ok || !text.contains(message) {
            wrong.push(format!(
                "{args:?}: want a refusal saying {message:?}, got (ok={ok}):\n{text}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// The real operator under the chart's RBAC
// ---------------------------------------------------------------------------------------

/// A kubeconfig whose user is the admin impersonating `system:serviceaccount:<ns>:<sa>`.
fn impersonating_kubeconfig(env: &Env, ns: &str, sa: &str) -> PathBuf {
    let raw = run(env
        .kubectl()
        .args(["config", "view", "--raw", "--minify", "-o", "json"]))
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&raw).unwrap();
    config["users"][0]["user"]["as"] = format!("system:serviceaccount:{ns}:{sa}").into();
    let path = repo_root().join(format!("target/e2e-logs/kubeconfig-chart-{ns}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

fn vendor(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {name}-smpp}}
stringData: {{password: pw{name}}}
---
apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: {name}}}
spec:
  host: {name}.example.net
  port: 2775
  bind:
    systemId: sys-{name}
    passwordSecretRef: {{name: {name}-smpp}}
"
    )
}

/// The installed chart's operator Deployment, run as a local process with exactly its env
/// (DATABASE_URL from a database of the test's own, HTTP on a free loopback port) and its
/// ServiceAccount: it syncs vendors in the release namespace and in an extra watched one,
/// records Events, and removes its finalizer on delete - so the chart's Roles are enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_with_the_charts_namespaced_rbac_and_env() {
    let env = env();
    smpp_e2e::operator::install_crd(&env).await.unwrap();
    let ns = fresh_ns(&env, "live");
    let extra = fresh_ns(&env, "live-extra");
    install_rbac(
        &env,
        &ns,
        &["--set", &format!("operator.watch.namespaces={{{extra}}}")],
    );
    let db = env.fresh_db("chart_live").await.unwrap();

    let deployment = kubectl_json(&env, &["-n", &ns, "get", "deployment/smpp-operator"]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let http_port = smpp_e2e::sink::free_port().unwrap();
    let log = repo_root().join(format!("target/e2e-logs/operator-chart-{ns}.log"));
    let mut cmd = Command::new(smpp_e2e::process::workspace_bin("smpp-operator"));
    cmd.env_clear()
        .env("KUBECONFIG", impersonating_kubeconfig(&env, &ns, sa))
        .env("RUST_LOG", "info");
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match name {
            "DATABASE_URL" => db.url.clone(),
            "HTTP_ADDR" => format!("127.0.0.1:{http_port}"),
            "POD_NAME" => format!("chart-live-{http_port}"),
            _ => e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is neither a Secret nor a field: {e}"))
                .to_string(),
        };
        cmd.env(name, value);
    }
    cmd.args(
        container["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect::<Vec<String>>()
            })
            .unwrap_or_default(),
    );
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    let _operator = smpp_e2e::process::ChildGuard::spawn("smpp-operator", cmd).unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let ready = smpp_e2e::http::local(http_port, "/ready");
    smpp_e2e::wait::until(
        "operator /ready",
        std::time::Duration::from_secs(60),
        || async {
            let a = smpp_e2e::http::get(&ready, &[]).await?;
            anyhow::ensure!(a.status == 200, "HTTP {}: {}", a.status, a.body);
            Ok(Some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log_text()));

    for (namespace, name) in [(ns.as_str(), "a"), (extra.as_str(), "b")] {
        let (ok, text) = output(
            env.kubectl().args(["-n", namespace, "apply", "-f", "-"]),
            Some(&vendor(name)),
        );
        assert!(ok, "{text}");
        let (ok, text) = output(
            env.kubectl().args([
                "-n",
                namespace,
                "wait",
                "--for=condition=Synced",
                &format!("smppvendor/{name}"),
                "--timeout=60s",
            ]),
            None,
        );
        assert!(ok, "{namespace}/{name} Synced: {text}\n{}", log_text());
        let events = run(env.kubectl().args([
            "-n",
            namespace,
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
            "-o",
            "name",
        ]))
        .unwrap();
        assert!(
            !events.trim().is_empty(),
            "an Event about {namespace}/{name}"
        );
    }
    let row: (String,) = sqlx::query_as(
        "SELECT username FROM vendor_mgmt.service_providers WHERE instance_name = $1",
    )
    .bind(format!("{extra}.b"))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "sys-b");

    // Delete: the finalizer (patched away by the operator) lets it go, and the row with it.
    let (ok, text) = output(
        env.kubectl()
            .args(["-n", &extra, "delete", "smppvendor/b", "--timeout=60s"]),
        None,
    );
    assert!(ok, "delete: {text}\n{}", log_text());
    let left: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM vendor_mgmt.service_providers WHERE instance_name = $1",
    )
    .bind(format!("{extra}.b"))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left.0, 0, "row deleted with the resource");
    let log = log_text();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the operator was refused something under the chart's RBAC:\n{log}"
    );
    run(env.helm().args(["uninstall", "smpp", "-n", &ns])).unwrap();
}

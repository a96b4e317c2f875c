//! The container images, run for real the way the Helm chart runs them.
//!
//! deploy/images/build.sh (`make images`, run by `make test` before the tests) builds
//! `smpp-gateway` and `smpp-operator` FROM scratch with buildah into the vfs storage under
//! ~/.cache/smpp-gateway/containers (SMPP_CONTAINERS_DIR). This test renders the chart
//! (`helm template charts/smpp-gateway`), takes each Deployment's image, command, args, env,
//! volume mounts and security context, and runs the image with exactly those under podman
//! (runc, cgroupfs, vfs, host network): the chart's Secrets come from real Secrets in the
//! apiserver, emptyDirs become tmpfs mounts, and the operator gets what a kubelet would give
//! it, a token of the chart's ServiceAccount (bound by the chart's RBAC) mounted at
//! /var/run/secrets/kubernetes.io/serviceaccount with KUBERNETES_SERVICE_HOST/PORT. Then a
//! SmppVendor is applied: the operator image syncs it, the gateway image binds it over TLS to
//! a private simulator, `kubectl get smppvendors` shows BOUND 1/1 READY True, and the probes
//! the chart declares answer 200. It also checks, from the host, that each container runs as
//! the chart's user with no capabilities, no_new_privs, a seccomp filter, a read-only root
//! and no shell in the image. Then a customer: an SmppAccount the operator image syncs, binds
//! of the Rust ESME on the gateway image's SMPP listeners as the chart's args start them (plain,
//! and TLS from the mounted kubernetes.io/tls Secret), `kubectl get smppaccounts` BOUND 2/2,
//! and a submit whose DELIVRD receipt comes back as deliver_sm.
//!
//! Only the pod's own addresses differ from a cluster: POD_IP is 127.0.0.1 (host network)
//! and the HTTP and SMPP ports are free ports set through the chart's values.
//!
//! Run: make env-up; deploy/images/build.sh; cargo test -p smpp-e2e --test images

mod gateway_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use gateway_support::{Result, TestDb, free_port, get};
use serde_json::Value;
use smpp_e2e::env::Env;
use smpp_e2e::esme::{BindType, Esme, Receipt, Submit};
use smpp_e2e::operator;
use smpp_e2e::process::repo_root;
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig, client_tls_config};
use smpp_e2e::wait;

const SYSTEM_ID: &str = "imagetest";
const PASSWORD: &str = "Pq8vN3ks";
const T: Duration = Duration::from_secs(60);
/// Every podman command is bounded by this (a hung podman fails the test, not the run).
const PODMAN_TIMEOUT_S: &str = "120";
/// Containers of this test carry this label, and the test's pid in `smpp-e2e.pid`, so a run
/// killed before its guards dropped is cleaned up by the next one.
const LABEL: &str = "smpp-e2e.test=images";

// ---------------------------------------------------------------------------------------------
// podman

/// podman as the issue found it works here: runc (crun refused), cgroupfs, vfs storage shared
/// with deploy/images/build.sh, and a containers.conf of this test's own with
/// `default_ulimits = []`.
struct Podman {
    store: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Result<Self> {
        let store = match std::env::var_os("SMPP_CONTAINERS_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/smpp-gateway/containers"),
        };
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "# Written by e2e/tests/images.rs.\n[containers]\ndefault_ulimits = []\nlog_driver = \"k8s-file\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\nruntime = \"runc\"\n",
        )?;
        let podman = Self { store, conf };
        podman.run(&["--version"]).context(
            "podman is not usable: deploy/images/build.sh (`make images`) installs Debian's podman and runc and builds the images",
        )?;
        Ok(podman)
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", PODMAN_TIMEOUT_S, "podman"])
            .env("CONTAINERS_CONF", &self.conf)
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(["--storage-driver", "vfs", "--root"])
            .arg(self.store.join("storage"))
            .arg("--runroot")
            .arg(self.store.join("run"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `podman ARGS` (with `env` in podman's environment); its stdout, or an error with
    /// the command and what it printed.
    fn run_with(&self, args: &[&str], env: &[(String, String)]) -> Result<String> {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running podman {args:?}"))?;
        ensure!(
            out.status.success(),
            "podman {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with(args, &[])
    }

    /// Removes containers of earlier runs of this test whose process is gone.
    fn remove_stale(&self) -> Result<()> {
        let out = self.run(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            "{{.Names}} {{index .Labels \"smpp-e2e.pid\"}}",
        ])?;
        for line in out.lines() {
            let mut it = line.split_whitespace();
            let (Some(name), pid) = (it.next(), it.next()) else {
                continue;
            };
            let alive = pid
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                eprintln!("removing container {name} left by an earlier run");
                let _ = self.run(&["rm", "-f", "-t", "0", name]);
            }
        }
        Ok(())
    }
}

/// A container started with `podman run -d`; on drop its log is saved to
/// target/e2e-logs/<name>.log and the container is removed.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
    log: PathBuf,
}

impl Container<'_> {
    fn state(&self) -> Result<(bool, u32, String)> {
        let out = self.podman.run(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.Pid}} {{.State.Status}} exit={{.State.ExitCode}}",
            &self.name,
        ])?;
        let mut it = out.split_whitespace();
        let running = it.next() == Some("true");
        let pid = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok((running, pid, it.collect::<Vec<_>>().join(" ")))
    }

    /// The host pid of the container's process; fails (with its log) when it is not running.
    fn pid(&self) -> Result<u32> {
        let (running, pid, status) = self.state()?;
        ensure!(
            running && pid > 0,
            "container {} is not running ({status}); its log:\n{}",
            self.name,
            self.logs()
        );
        Ok(pid)
    }

    fn logs(&self) -> String {
        match self.podman.run(&["logs", &self.name]) {
            Ok(s) => last_lines(&s, 40),
            Err(e) => format!("(podman logs failed: {e:#})"),
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if let Ok(text) = self.podman.run(&["logs", &self.name]) {
            let _ = std::fs::write(&self.log, text);
        }
        if let Err(e) = self.podman.run(&["rm", "-f", "-t", "2", &self.name]) {
            eprintln!("could not remove container {}: {e:#}", self.name);
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The chart: rendered objects, and a Deployment's pod as podman arguments

/// `helm template` of charts/smpp-gateway with `values`: the YAML, and its objects as JSON.
fn render_chart(
    env: &Env,
    release: &str,
    ns: &str,
    values: &[(&str, String)],
) -> Result<(String, Vec<Value>)> {
    let chart = repo_root().join("charts/smpp-gateway");
    ensure!(
        chart.join("Chart.yaml").exists(),
        "{} is missing: this test runs the images with the chart's rendered pod specs",
        chart.display()
    );
    let mut cmd = env.helm();
    cmd.args(["template", release])
        .arg(&chart)
        .args(["--namespace", ns]);
    for (k, v) in values {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let yaml = operator::run(&mut cmd)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(serde_json::to_value(v)?);
        }
    }
    Ok((yaml, docs))
}

fn deployment<'a>(docs: &'a [Value], name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
        .with_context(|| format!("the rendered chart has no Deployment {name}"))
}

fn strings(v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(String::from).context("not a string"))
            .collect(),
        other => bail!("expected a list of strings, got {other}"),
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// A Secret's key, read from the apiserver as a kubelet would.
fn secret_value(env: &Env, ns: &str, name: &str, key: &str) -> Result<String> {
    let data = operator::run(env.kubectl().args([
        "-n",
        ns,
        "get",
        "secret",
        name,
        "-o",
        &format!("go-template={{{{index .data \"{key}\"}}}}"),
    ]))?;
    ensure!(
        !data.is_empty() && data != "<no value>",
        "Secret {ns}/{name} has no key {key}"
    );
    String::from_utf8(base64_decode(data.trim())?).context("secret value is not UTF-8")
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .with_context(|| format!("invalid base64 byte {c:#x}"))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// `defaultMode: 0440` as the apiserver reads it (YAML 1.1 octal); serde_yaml hands it over
/// as the string "0440".
fn file_mode(v: &Value) -> Result<u32> {
    Ok(match v {
        Value::Null => 0o644,
        Value::String(s) if s.starts_with('0') => u32::from_str_radix(s, 8)?,
        Value::String(s) => s.parse()?,
        other => other.as_u64().context("defaultMode")? as u32,
    })
}

/// What a kubelet would do with one Deployment's pod, done with podman.
struct PodRun<'a> {
    env: &'a Env,
    ns: &'a str,
    /// The pod name (metadata.name): `<deployment>-<random>`.
    pod_name: String,
    /// Directory for this pod's volumes and service-account files.
    dir: PathBuf,
}

/// The pod as `podman run` arguments, plus the environment values podman passes on
/// (`--env NAME` takes the value from podman's own environment: no secret in argv).
struct PodmanArgs {
    args: Vec<String>,
    env: Vec<(String, String)>,
    image: String,
    uid: i64,
    http_port: u16,
    /// Every named containerPort (with host networking, the ports the container listens on).
    ports: BTreeMap<String, u16>,
    liveness: String,
    readiness: String,
}

impl PodRun<'_> {
    fn podman_args(&self, deploy: &Value) -> Result<PodmanArgs> {
        let pod = &deploy["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().context("no containers")?;
        ensure!(
            containers.len() == 1,
            "expected one container, the chart renders {}",
            containers.len()
        );
        let c = &containers[0];
        let mut args: Vec<String> = vec![
            "--hostname".into(),
            self.pod_name.clone(),
            "--network".into(),
            "host".into(),
            "--pull".into(),
            "never".into(),
        ];
        let mut env = Vec::new();

        // Security context: the container's over the pod's, every key handled or refused.
        let mut sc = pod["securityContext"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Some(csc) = c["securityContext"].as_object() {
            sc.extend(csc.clone());
        }
        let mut uid = None;
        let mut gid = None;
        for (k, v) in &sc {
            match k.as_str() {
                "runAsUser" => uid = as_i64(v),
                "runAsGroup" => gid = as_i64(v),
                "runAsNonRoot" | "seccompProfile" | "capabilities" => {}
                "fsGroup" => {
                    args.push("--group-add".into());
                    args.push(as_i64(v).context("fsGroup")?.to_string());
                }
                "readOnlyRootFilesystem" => {
                    if v == true {
                        // Only the chart's own volumes are writable: no podman tmpfs on /tmp,
                        // /run, /var/tmp.
                        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
                    }
                }
                "allowPrivilegeEscalation" => {
                    if v == false {
                        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
                    }
                }
                other => bail!("securityContext.{other} is not mirrored by this test: add it"),
            }
        }
        match sc.get("seccompProfile").map(|p| &p["type"]) {
            None => {}
            Some(t) if t == "RuntimeDefault" => {} // podman's default profile
            Some(t) if t == "Unconfined" => {
                args.extend(["--security-opt".into(), "seccomp=unconfined".into()])
            }
            Some(t) => bail!("seccompProfile.type {t} is not mirrored by this test"),
        }
        if let Some(caps) = sc.get("capabilities") {
            for cap in strings(&caps["drop"])? {
                args.extend(["--cap-drop".into(), cap]);
            }
            for cap in strings(&caps["add"])? {
                args.extend(["--cap-add".into(), cap]);
            }
        }
        let uid = uid.context("the chart sets no runAsUser")?;
        if sc.get("runAsNonRoot") == Some(&Value::Bool(true)) {
            ensure!(uid != 0, "runAsNonRoot with runAsUser 0");
        }
        args.push("--user".into());
        args.push(match gid {
            Some(g) => format!("{uid}:{g}"),
            None => uid.to_string(),
        });
        if let Some(grace) = as_i64(&pod["terminationGracePeriodSeconds"]) {
            args.extend(["--stop-timeout".into(), grace.to_string()]);
        }

        // Environment.
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"]
                .as_str()
                .context("env without a name")?
                .to_string();
            let value = if let Some(v) = e.get("value") {
                v.as_str().context("env value not a string")?.to_string()
            } else if let Some(f) = e["valueFrom"].get("fieldRef") {
                match f["fieldPath"].as_str() {
                    Some("metadata.name") => self.pod_name.clone(),
                    Some("metadata.namespace") => self.ns.to_string(),
                    Some("status.podIP") => "127.0.0.1".into(),
                    other => bail!("env {name}: fieldRef {other:?} is not mirrored by this test"),
                }
            } else if let Some(s) = e["valueFrom"].get("secretKeyRef") {
                secret_value(
                    self.env,
                    self.ns,
                    s["name"].as_str().context("secretKeyRef.name")?,
                    s["key"].as_str().context("secretKeyRef.key")?,
                )?
            } else {
                bail!("env {name}: source {e} is not mirrored by this test");
            };
            args.extend(["--env".into(), name.clone()]);
            env.push((name, value));
        }
        ensure!(
            c["envFrom"].is_null(),
            "envFrom is not mirrored by this test"
        );

        // Volumes.
        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().context("volumeMount.name")?;
            let path = m["mountPath"].as_str().context("volumeMount.mountPath")?;
            ensure!(
                m["subPath"].is_null(),
                "subPath is not mirrored by this test"
            );
            let vol = volumes
                .get(vname)
                .with_context(|| format!("volumeMount {vname} has no volume"))?;
            if let Some(ed) = vol.get("emptyDir") {
                let mut opts = String::from("rw,mode=1777");
                if let Some(size) = ed["sizeLimit"].as_str() {
                    let size = size
                        .replace("Mi", "m")
                        .replace("Gi", "g")
                        .replace("Ki", "k");
                    opts.push_str(&format!(",size={size}"));
                }
                args.extend(["--tmpfs".into(), format!("{path}:{opts}")]);
            } else if let Some(sv) = vol.get("secret") {
                let secret = sv["secretName"].as_str().context("secret.secretName")?;
                let host = self.dir.join("volumes").join(vname);
                std::fs::create_dir_all(&host)?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
                let mode = file_mode(&sv["defaultMode"])?;
                let items = sv["items"].as_array().context(
                    "secret volume without items (all keys) is not mirrored by this test",
                )?;
                for item in items {
                    let key = item["key"].as_str().context("items.key")?;
                    let file = host.join(item["path"].as_str().context("items.path")?);
                    std::fs::write(&file, secret_value(self.env, self.ns, secret, key)?)?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
                    // Group-owned by fsGroup, as the kubelet does.
                    if let Some(fs_group) = sc.get("fsGroup").and_then(as_i64) {
                        std::os::unix::fs::chown(&file, None, Some(fs_group as u32))?;
                    }
                }
                args.extend(["-v".into(), format!("{}:{path}:ro", host.display())]);
            } else {
                bail!("volume {vname} ({vol}) is not mirrored by this test");
            }
        }

        // The service-account token, as the kubelet mounts it unless automount is off.
        if pod["automountServiceAccountToken"] != false {
            let sa = pod["serviceAccountName"]
                .as_str()
                .context("automounted token but no serviceAccountName")?;
            let dir = self.dir.join("serviceaccount");
            std::fs::create_dir_all(&dir)?;
            let token = operator::run(self.env.kubectl().args([
                "-n",
                self.ns,
                "create",
                "token",
                sa,
                "--duration=3600s",
            ]))?;
            let (server, ca) = apiserver(self.env)?;
            for (file, text) in [
                ("token", token.trim().as_bytes().to_vec()),
                ("ca.crt", ca),
                ("namespace", self.ns.as_bytes().to_vec()),
            ] {
                let p = dir.join(file);
                std::fs::write(&p, text)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
            }
            args.extend([
                "-v".into(),
                format!(
                    "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                    dir.display()
                ),
            ]);
            let hostport = server
                .strip_prefix("https://")
                .context("apiserver URL is not https")?;
            let (host, port) = hostport
                .trim_end_matches('/')
                .rsplit_once(':')
                .context("apiserver URL has no port")?;
            for (k, v) in [
                ("KUBERNETES_SERVICE_HOST", host),
                ("KUBERNETES_SERVICE_PORT", port),
            ] {
                args.extend(["--env".into(), k.into()]);
                env.push((k.into(), v.into()));
            }
        }

        // Resources: limits as podman limits.
        if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
            let mem = mem.replace("Mi", "m").replace("Gi", "g");
            args.extend(["--memory".into(), mem]);
        }
        let cpu = &c["resources"]["limits"]["cpu"];
        let cpus = match (cpu.as_str(), cpu.as_f64()) {
            (Some(s), _) => Some(match s.strip_suffix('m') {
                Some(milli) => format!("{:.3}", milli.parse::<f64>()? / 1000.0),
                None => s.to_string(),
            }),
            (None, Some(n)) => Some(n.to_string()),
            _ => None,
        };
        if let Some(cpus) = cpus {
            args.extend(["--cpus".into(), cpus]);
        }

        // Command and args: command replaces the image's ENTRYPOINT, args its CMD.
        let command = strings(&c["command"])?;
        if !command.is_empty() {
            args.extend(["--entrypoint".into(), serde_json::to_string(&command)?]);
        }
        let image = c["image"].as_str().context("container.image")?.to_string();

        let ports: BTreeMap<String, u16> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["containerPort"].as_u64()? as u16,
                ))
            })
            .collect();
        let port = *ports.get("http").context("no http containerPort")?;
        let probe = |p: &str| -> Result<String> {
            let get = &c[p]["httpGet"];
            ensure!(
                get["port"] == "http" || get["port"] == port,
                "{p} port {}",
                get["port"]
            );
            Ok(get["path"]
                .as_str()
                .with_context(|| format!("{p} path"))?
                .to_string())
        };
        Ok(PodmanArgs {
            args: args
                .into_iter()
                .chain(["--".into(), image.clone()])
                .chain(strings(&c["args"])?)
                .collect(),
            env,
            image,
            uid,
            http_port: port,
            ports,
            liveness: probe("livenessProbe")?,
            readiness: probe("readinessProbe")?,
        })
    }
}

/// The apiserver URL and CA certificate (PEM) from the environment's kubeconfig.
fn apiserver(env: &Env) -> Result<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(&env.kubeconfig)?;
    let kc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let cluster = &kc["clusters"][0]["cluster"];
    let server = cluster["server"]
        .as_str()
        .context("kubeconfig: no server")?
        .to_string();
    let ca = base64_decode(
        cluster["certificate-authority-data"]
            .as_str()
            .context("kubeconfig: no certificate-authority-data")?,
    )?;
    Ok((server, ca))
}

/// Starts the pod's container detached; the guard removes it.
fn start<'a>(podman: &'a Podman, spec: &PodmanArgs, name: &str) -> Result<Container<'a>> {
    let log_dir = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&log_dir)?;
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.into(),
        "--label".into(),
        LABEL.into(),
        "--label".into(),
        format!("smpp-e2e.pid={}", std::process::id()),
    ];
    args.extend(spec.args.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // The guard first, so a half-started container is removed too.
    let container = Container {
        podman,
        name: name.into(),
        log: log_dir.join(format!("{name}.log")),
    };
    podman.run_with(&argv, &spec.env)?;
    Ok(container)
}

/// Waits until GET `path` on the container's port answers 200; fails early, with the
/// container's log, when it stops.
async fn wait_http_ok(c: &Container<'_>, port: u16, path: &str, timeout: Duration) -> Result<()> {
    wait::until(&format!("{} GET {path} → 200", c.name), timeout, || async {
        c.pid()?;
        match get(port, path).await {
            Ok((200, _)) => Ok(Some(())),
            Ok((status, body)) => bail!("{status} {}", body.chars().take(200).collect::<String>()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// The running container as the kernel sees it: uid/gid, capabilities, no_new_privs,
/// seccomp, a read-only root and no shell.
fn check_confinement(c: &Container<'_>, uid: i64) -> Result<()> {
    let pid = c.pid()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<Vec<String>> {
        Ok(status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .with_context(|| format!("/proc/{pid}/status has no {name}"))?
            .split_whitespace()
            .map(String::from)
            .collect())
    };
    ensure!(
        field("Uid")?.iter().all(|u| *u == uid.to_string()),
        "{}: Uid {:?}, the chart says {uid}",
        c.name,
        field("Uid")?
    );
    ensure!(
        field("Gid")?.iter().all(|g| *g == "65532"),
        "{}: Gid {:?}",
        c.name,
        field("Gid")?
    );
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        ensure!(
            field(cap)? == ["0000000000000000"],
            "{}: {cap} {:?} (capabilities drop ALL)",
            c.name,
            field(cap)?
        );
    }
    ensure!(
        field("NoNewPrivs")? == ["1"],
        "{}: NoNewPrivs not set",
        c.name
    );
    ensure!(field("Seccomp")? == ["2"], "{}: no seccomp filter", c.name);
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    for shell in [
        "bin/sh",
        "bin/bash",
        "usr/bin/sh",
        "bin/busybox",
        "usr/bin/env",
    ] {
        ensure!(
            !root.join(shell).exists(),
            "{}: the image has /{shell}",
            c.name
        );
    }
    let probe = root.join("usr/local/bin/write-probe");
    match std::fs::write(&probe, b"x") {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        Err(e) => bail!("{}: writing to / failed, but not read-only: {e}", c.name),
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            bail!("{}: the root filesystem is writable", c.name)
        }
    }
    ensure!(
        std::fs::metadata(root.join("etc/ssl/certs/ca-certificates.crt"))?.len() > 0,
        "{}: no CA bundle",
        c.name
    );
    Ok(())
}

fn vendor_yaml(port: u16) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: sim}}
spec:
  host: 127.0.0.1
  port: {port}
  tls:
    enabled: true
    serverName: localhost
    caSecretRef: {{name: vendor-ca, key: ca.crt}}
  bind:
    mode: Transceiver
    systemId: {SYSTEM_ID}
    passwordSecretRef: {{name: sim-smpp, key: password}}
  maxBinds: 1
  reconnect: {{initialDelaySeconds: 1, maxDelaySeconds: 2}}
"
    )
}

fn apply(env: &Env, ns: &str, yaml: &str) -> Result<()> {
    let (ok, out) = operator::apply(env, ns, yaml)?;
    ensure!(ok, "kubectl apply: {out}");
    Ok(())
}

fn create_secret(env: &Env, ns: &str, name: &str, key: &str, value: &str) -> Result<()> {
    apply(
        env,
        ns,
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {key: value},
        })
        .to_string(),
    )
}

/// Deletes the namespace when the test ends, however it ends.
struct NamespaceGuard<'a>(&'a Env, String);

impl Drop for NamespaceGuard<'_> {
    fn drop(&mut self) {
        let _ =
            operator::run(
                self.0
                    .kubectl()
                    .args(["delete", "namespace", &self.1, "--wait=false"]),
            );
    }
}

const CUSTOMER: &str = "imgcust";
const CUSTOMER_PASSWORD: &str = "Cu5t0mer";

fn account_yaml() -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppAccount
metadata: {{name: cust}}
spec:
  systemId: {CUSTOMER}
  passwordSecretRef: {{name: cust-smpp, key: password}}
  allowedSourceCidrs: [127.0.0.0/8]
  maxBinds: 2
  forwardReceipts: true
"
    )
}

/// kubectl's row of SmppAccount `cust` once it shows BOUND `bound` and READY True.
async fn account_row(env: &Env, ns: &str, bound: &str, op: &Container<'_>) -> Result<Vec<String>> {
    wait::until(
        &format!("kubectl get smppaccounts: BOUND {bound}, READY True"),
        T,
        || async {
            op.pid()?;
            let out = operator::run(env.kubectl().args([
                "-n",
                ns,
                "get",
                "smppaccounts",
                "cust",
                "--no-headers",
            ]))?;
            // NAME SYSTEM-ID BOUND READY REASON AGE
            let row: Vec<String> = out.split_whitespace().map(String::from).collect();
            Ok((row.get(2).map(String::as_str) == Some(bound)
                && row.get(3).map(String::as_str) == Some("True"))
            .then_some(row))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", op.logs()))
}

/// A customer through the chart's SMPP listeners: the operator image syncs its SmppAccount,
/// the gateway image takes a TRX bind on the plain port and a TX bind over TLS (verified
/// against the test CA for "localhost", served from the mounted kubernetes.io/tls Secret), a
/// submit asking for a receipt, and delivers the receipt on the TRX session.
async fn customer_binds_submits_and_gets_its_receipt(
    env: &Env,
    ns: &str,
    gw: &Container<'_>,
    op: &Container<'_>,
    plain: u16,
    tls: u16,
) -> Result {
    create_secret(env, ns, "cust-smpp", "password", CUSTOMER_PASSWORD)?;
    apply(env, ns, &account_yaml())?;
    let row = account_row(env, ns, "0/2", op).await?;
    eprintln!("kubectl get smppaccounts: {row:?}");

    let logs = || format!("gateway log:\n{}", gw.logs());
    let mut trx = Esme::plain(plain).await.with_context(logs)?;
    trx.bind(BindType::Transceiver, CUSTOMER, CUSTOMER_PASSWORD)
        .await
        .with_context(logs)?;
    let roots = client_tls_config(&env.smsc.ca_file, None)?;
    let mut tx = Esme::tls(tls, roots, "localhost")
        .await
        .with_context(logs)?;
    tx.bind(BindType::Transmitter, CUSTOMER, CUSTOMER_PASSWORD)
        .await
        .with_context(logs)?;
    let row = account_row(env, ns, "2/2", op).await?;
    eprintln!("bound on both listeners: {row:?}");

    let id = tx
        .submit_ok(&Submit::text("from the image test").receipt(true))
        .await
        .with_context(logs)?;
    let deliver = trx
        .expect("the receipt on the TRX session")
        .await
        .with_context(logs)?;
    let receipt = Receipt::from_command(&deliver)?;
    trx.answer(&deliver).await?;
    eprintln!("submit_sm_resp {id}, receipt {:?}", receipt.text);
    ensure!(
        receipt.receipted_id.as_deref() == Some(id.as_str())
            && receipt.stat.as_deref() == Some("DELIVRD"),
        "receipt for {id}: {receipt:?}"
    );
    tx.unbind().await?;
    trx.unbind().await?;
    account_row(env, ns, "0/2", op).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_run_with_the_charts_pod_specs_sync_and_bind_a_vendor() -> Result {
    let env = Env::load()?;
    let id = format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let dir = repo_root().join(format!("target/images-test/{id}"));
    std::fs::create_dir_all(&dir)?;
    let podman = Podman::new(&dir)?;
    podman.remove_stale()?;

    let smsc = Smsc::start(
        SmscConfig::new()
            .credential(SYSTEM_ID, PASSWORD)
            .tls("tls", Behaviour::default()),
    )
    .await?;
    let db = TestDb::new().await?;

    let ns = format!("images-{id}");
    operator::namespace_with_crd(&env, &ns).await?;
    let _ns_guard = NamespaceGuard(&env, ns.clone());

    // The Secrets the chart's values name, in the release namespace.
    let token = format!("tok{:016x}", rand::random::<u64>());
    create_secret(&env, &ns, "smpp-db", "url", &db.url)?;
    create_secret(&env, &ns, "smpp-redis", "url", &env.redis_url)?;
    create_secret(
        &env,
        &ns,
        "smpp-api-keys",
        "api-keys",
        &format!("images:{token}\n"),
    )?;

    // The SMPP listener's certificate as a kubernetes.io/tls Secret: the test PKI's
    // "localhost" pair, signed by the CA the customer verifies against.
    let pki = env
        .smsc
        .ca_file
        .parent()
        .context("the test PKI directory")?
        .to_path_buf();
    operator::run(
        env.kubectl()
            .args(["-n", &ns, "create", "secret", "tls", "smpp-tls"])
            .arg(format!("--cert={}", pki.join("server.crt").display()))
            .arg(format!("--key={}", pki.join("server.key").display())),
    )?;

    // The chart, rendered for this namespace without the CRD (installed above), applied for
    // real, so the operator's token is bound by the chart's own RBAC.
    let release = format!("img{id}");
    let (gw_port, op_port) = (free_port(), free_port());
    let (smpp_port, smpp_tls_port) = (free_port(), free_port());
    let (yaml, docs) = render_chart(
        &env,
        &release,
        &ns,
        &[
            ("crds.enabled", "false".into()),
            ("database.secretName", "smpp-db".into()),
            ("redis.secretName", "smpp-redis".into()),
            ("gateway.apiKeys.secretName", "smpp-api-keys".into()),
            ("gateway.httpPort", gw_port.to_string()),
            ("operator.httpPort", op_port.to_string()),
            ("smppServer.plain.port", smpp_port.to_string()),
            ("smppServer.tls.secretName", "smpp-tls".into()),
            ("smppServer.tls.port", smpp_tls_port.to_string()),
            ("smppServer.limits.maxConnections", "50".into()),
        ],
    )?;
    ensure!(
        docs.iter().all(|d| d["kind"] != "CustomResourceDefinition"),
        "crds.enabled=false still renders the CRD"
    );
    apply(&env, &ns, &yaml)?;

    let gw_deploy = deployment(&docs, &format!("{release}-gateway"))?;
    let op_deploy = deployment(&docs, &format!("{release}-operator"))?;
    let pod = |deploy: &Value| PodRun {
        env: &env,
        ns: &ns,
        pod_name: format!(
            "{}-{:05x}",
            deploy["metadata"]["name"].as_str().unwrap_or("pod"),
            rand::random::<u32>() & 0xF_FFFF
        ),
        dir: dir.join(deploy["metadata"]["name"].as_str().unwrap_or("pod")),
    };
    let gw_pod = pod(gw_deploy);
    let op_pod = pod(op_deploy);
    let gw_args = gw_pod.podman_args(gw_deploy)?;
    let op_args = op_pod.podman_args(op_deploy)?;
    assert_eq!(
        gw_args.http_port, gw_port,
        "gateway containerPort = gateway.httpPort"
    );
    assert_eq!(
        op_args.http_port, op_port,
        "operator containerPort = operator.httpPort"
    );
    assert_eq!(
        (gw_args.ports.get("smpp"), gw_args.ports.get("smpp-tls")),
        (Some(&smpp_port), Some(&smpp_tls_port)),
        "gateway SMPP containerPorts = smppServer.plain.port, smppServer.tls.port"
    );

    // The images the chart names must be the ones deploy/images/build.sh built.
    for a in [&gw_args, &op_args] {
        podman.run(&["image", "exists", &a.image]).with_context(|| {
            format!(
                "image {} (as the chart names it) is not in {}: build it with deploy/images/build.sh (`make images`)",
                a.image,
                podman.store.display()
            )
        })?;
        let info = podman.run(&[
            "image",
            "inspect",
            "--format",
            "{{.Size}} {{.Created}} user={{.Config.User}}",
            &a.image,
        ])?;
        eprintln!("image {}: {}", a.image, info.trim());
    }

    // The gateway first (it migrates the schema), then the operator.
    let gw = start(&podman, &gw_args, &format!("images-{id}-gateway"))?;
    wait_http_ok(&gw, gw_port, &gw_args.liveness, T).await?;
    db.wait_schema().await?;
    let op = start(&podman, &op_args, &format!("images-{id}-operator"))?;
    wait_http_ok(&op, op_port, &op_args.liveness, T).await?;

    // A vendor: the operator image syncs it, the gateway image binds it over TLS.
    operator::run(
        env.kubectl()
            .args(["-n", &ns, "create", "secret", "generic", "vendor-ca"])
            .arg(format!("--from-file=ca.crt={}", smsc.ca_file().display())),
    )?;
    create_secret(&env, &ns, "sim-smpp", "password", PASSWORD)?;
    apply(&env, &ns, &vendor_yaml(smsc.port("tls")))?;

    let vendor_name = format!("{ns}.sim");
    let bound = wait::until(
        "GET /api/v1/vendors on the gateway container: sim bound",
        T,
        || async {
            gw.pid()?;
            op.pid()?;
            let (status, body) = get(gw_port, "/api/v1/vendors").await?;
            ensure!(status == 200, "GET /api/v1/vendors: {status}");
            let v: Value = serde_json::from_str(&body)?;
            let vendor = v["vendors"]
                .as_object()
                .and_then(|m| {
                    m.values()
                        .find(|x| x["vendor_name"] == vendor_name.as_str())
                })
                .cloned();
            Ok(vendor.filter(|v| v["sessions_bound"].as_u64() == Some(1)))
        },
    )
    .await
    .with_context(|| format!("gateway log:\n{}\noperator log:\n{}", gw.logs(), op.logs()))?;
    eprintln!("bound: {bound}");
    assert_eq!(bound["tls"], true, "{bound}");

    let row = wait::until(
        "kubectl get smppvendors: BOUND 1/1, READY True",
        T,
        || async {
            let out = operator::run(env.kubectl().args([
                "-n",
                &ns,
                "get",
                "smppvendors",
                "sim",
                "--no-headers",
            ]))?;
            let row: Vec<String> = out.split_whitespace().map(String::from).collect();
            Ok((row.get(5).map(String::as_str) == Some("1/1")
                && row.get(6).map(String::as_str) == Some("True"))
            .then_some(row))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", op.logs()))?;
    eprintln!("kubectl get smppvendors: {row:?}");
    assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).total, 1);

    // The probes the chart declares.
    wait_http_ok(&gw, gw_port, &gw_args.readiness, T).await?;
    wait_http_ok(&op, op_port, &op_args.readiness, T).await?;
    for (c, a) in [(&gw, &gw_args), (&op, &op_args)] {
        let (status, _) = get(a.http_port, &a.liveness).await?;
        assert_eq!(status, 200, "{} {}", c.name, a.liveness);
        check_confinement(c, a.uid)?;
    }
    // The gateway needs no Kubernetes access: nothing mounted.
    let gw_root = PathBuf::from(format!("/proc/{}/root", gw.pid()?));
    assert!(
        !gw_root
            .join("var/run/secrets/kubernetes.io/serviceaccount")
            .exists(),
        "the gateway container has a service-account token"
    );

    customer_binds_submits_and_gets_its_receipt(&env, &ns, &gw, &op, smpp_port, smpp_tls_port)
        .await?;

    drop(op);
    drop(gw);
    let left = podman.run(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=images-{id}"),
        "--format",
        "{{.Names}}",
    ])?;
    assert!(left.trim().is_empty(), "containers left behind: {left}");
    // The token and secret files written for the pods.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

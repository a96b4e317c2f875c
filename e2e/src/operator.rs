//! Running smpp-operator against the environment's apiserver, shared by the operator tests and
//! the gateway+operator test: kubectl commands, the CRD, a namespace of the test's own, and
//! the operator process (own namespace, own Lease) logging to a file.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio::sync::OnceCell;

use crate::env::Env;
use crate::process::{ChildGuard, repo_root, workspace_bin};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("could not run {cmd} (is it built? `make env-up` builds kubectl): {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {output}")]
    Failed { cmd: String, output: String },
    #[error("operator log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    /// ChildGuard reports with anyhow; kept as text.
    #[error("starting smpp-operator (run `cargo build --workspace --bins`): {0:#}")]
    Start(anyhow::Error),
}

fn spawn_error(cmd: &Command) -> impl FnOnce(std::io::Error) -> OperatorError + '_ {
    move |source| OperatorError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    }
}

/// Runs a command; its stdout on success, an error carrying stderr and stdout otherwise.
pub fn run(cmd: &mut Command) -> Result<String, OperatorError> {
    let out = cmd.output().map_err(spawn_error(cmd))?;
    if !out.status.success() {
        return Err(OperatorError::Failed {
            cmd: format!("{cmd:?}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl -n <ns> apply -f -` of `yaml`: whether it was accepted, and stdout+stderr (the
/// refusal message when it was not).
pub fn apply(env: &Env, ns: &str, yaml: &str) -> Result<(bool, String), OperatorError> {
    let mut cmd = env.kubectl();
    cmd.args(["-n", ns, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error(&cmd))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(yaml.as_bytes())
            .map_err(spawn_error(&cmd))?;
    }
    let out = child.wait_with_output().map_err(spawn_error(&cmd))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

static CRD: OnceCell<()> = OnceCell::const_new();

/// The CRDs smpp-operator expects (the chart installs both): file under crds/, and name.
pub const CRDS: &[(&str, &str)] = &[
    ("smppvendor.yaml", "smppvendors.smpp.io"),
    ("smppaccount.yaml", "smppaccounts.smpp.io"),
];

/// Applies crds/smppvendor.yaml and crds/smppaccount.yaml (server-side, so it is idempotent)
/// once per test binary and waits until the apiserver serves them.
pub async fn install_crd(env: &Env) -> Result<(), OperatorError> {
    CRD.get_or_try_init(|| async {
        for (file, _) in CRDS {
            run(env
                .kubectl()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(repo_root().join("crds").join(file)))?;
        }
        for (_, name) in CRDS {
            run(env.kubectl().args([
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=60s",
            ]))?;
        }
        Ok(())
    })
    .await
    .map(|_| ())
}

/// The CRD, then a new namespace `ns` for one test.
pub async fn namespace_with_crd(env: &Env, ns: &str) -> Result<(), OperatorError> {
    install_crd(env).await?;
    run(env.kubectl().args(["create", "namespace", ns]))?;
    Ok(())
}

/// How to start one smpp-operator: it watches only `namespace`, leads through the Lease
/// `smpp-operator-<namespace>` in `lease_namespace`, and appends its output to `log`.
#[derive(Clone, Debug)]
pub struct OperatorCmd {
    pub kubeconfig: PathBuf,
    pub database_url: String,
    pub namespace: String,
    pub lease_namespace: String,
    pub http_port: u16,
    /// Short by default so drift repair shows quickly.
    pub resync_seconds: u64,
    /// `--lease-duration-seconds`: 5 by default, so a killed leader is replaced quickly.
    pub lease_duration_seconds: u64,
    pub log: PathBuf,
}

impl OperatorCmd {
    /// The tests' defaults: admin kubeconfig, Lease in the watched namespace, resync every
    /// 2 s, a free HTTP port, log in target/e2e-logs/operator-<namespace>.log.
    pub fn new(env: &Env, database_url: &str, namespace: &str) -> Result<Self, OperatorError> {
        Ok(OperatorCmd {
            kubeconfig: env.kubeconfig.clone(),
            database_url: database_url.into(),
            namespace: namespace.into(),
            lease_namespace: namespace.into(),
            http_port: crate::sink::free_port().map_err(OperatorError::Port)?,
            resync_seconds: 2,
            lease_duration_seconds: 5,
            log: repo_root().join(format!("target/e2e-logs/operator-{namespace}.log")),
        })
    }

    /// Starts the operator; it is killed when the guard drops.
    pub fn spawn(&self) -> Result<ChildGuard, OperatorError> {
        let log_error = |source| OperatorError::Log {
            path: self.log.clone(),
            source,
        };
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(log_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(log_error)?;
        let stderr = file.try_clone().map_err(log_error)?;
        let ns = &self.namespace;
        let mut cmd = Command::new(workspace_bin("smpp-operator"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info,smpp_operator=debug")
            .args(["--watch-namespace", ns])
            .args(["--lease-namespace", &self.lease_namespace])
            .args(["--lease-name", &format!("smpp-operator-{ns}")])
            .args(["--pod-name", &format!("operator-{ns}-{}", self.http_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--resync-seconds", &self.resync_seconds.to_string()])
            .args([
                "--lease-duration-seconds",
                &self.lease_duration_seconds.to_string(),
            ])
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr));
        ChildGuard::spawn("smpp-operator", cmd).map_err(OperatorError::Start)
    }

    /// What the operator logged so far (empty if nothing yet), for failure messages. Checks
    /// of the log's content use [`OperatorCmd::assert_no_secret_in_log`], which fails on a
    /// missing or empty log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if any of `secrets` is in the operator log, and if the log is missing or empty
    /// (a check of nothing would pass).
    pub fn assert_no_secret_in_log(&self, secrets: &[&str]) {
        let text = crate::leak::read_log(&self.log);
        crate::leak::assert_no_secret(
            &format!("the operator log {}", self.log.display()),
            &text,
            secrets,
        );
    }
}

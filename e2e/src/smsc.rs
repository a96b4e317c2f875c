//! Private SMSC simulator instances for tests (the node program in e2e/smsc/).
//!
//! A test describes the listeners and their behaviour, `Smsc::start` writes the config under
//! target/smsc-private/, spawns node in its own process group (killed on drop, and the
//! simulator also exits when the test process dies) and waits for the ready-file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smpp_e2e::smsc::SmscError> {
//! use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
//! let smsc = Smsc::start(SmscConfig::standard().tls("slow", Behaviour {
//!     response_delay_ms: Some(500),
//!     ..Default::default()
//! }))
//! .await?;
//! let port = smsc.port("slow");
//! let open = smsc.stats().await?.open_binds("smppclient1");
//! # let _ = (port, open); Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http;
use crate::process::{ChildGuard, repo_root};
use crate::wait;

/// Credentials every standard config provisions.
pub const SYSTEM_ID: &str = "smppclient1";
pub const PASSWORD: &str = "password";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum SmscError {
    #[error("smsc prepare: {0}")]
    Prepare(String),
    #[error("smsc start: {0}")]
    Start(String),
    #[error("smsc: no listener named {0:?} in this simulator's config")]
    UnknownListener(String),
    #[error("smsc stats ({url}): {reason}")]
    Stats { url: String, reason: String },
    #[error("smsc stats: {0}")]
    Http(#[from] crate::http::HttpError),
    #[error("smsc tls: {0}")]
    Tls(String),
    #[error("smsc io at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SmscError + '_ {
    move |source| SmscError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bind types as the simulator's config names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindType {
    Transmitter,
    Receiver,
    Transceiver,
}

/// Per-listener misbehaviour; `Default` is a well-behaved SMSC. Field meanings: e2e/smsc/README.md.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Behaviour {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub close_after_handshake: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_types: Option<Vec<BindType>>,
    /// "3.3" | "3.4" | "5.0".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_versions: Option<Vec<String>>,
    /// "close" or an ESME_R* name, for binds the two filters above refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_binds_per_system_id: Option<u32>,
    /// "close" or an ESME_R* name (default ESME_RALYBND).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_binds_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_every: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub never_answer_submits: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_after_pdus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hex_message_ids: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub receipt_before_resp: bool,
}

#[derive(Debug, Clone, Serialize)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_version: Option<TlsVersion>,
}

/// A TLS protocol version, as the simulator's `tls.max_version` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// How a TLS listener is set up.
#[derive(Debug, Clone, Copy)]
struct TlsSpec {
    cert: ServerCert,
    require_client_cert: bool,
    max_version: Option<TlsVersion>,
}

/// Which certificate a TLS listener presents (all from the shared test PKI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// localhost + 127.0.0.1, signed by the test CA.
    Valid,
    /// SAN wrong.example only, signed by the test CA.
    WrongName,
}

#[derive(Debug, Clone)]
struct ListenerSpec {
    name: String,
    port: u16,
    tls: Option<TlsSpec>,
    behaviour: Behaviour,
}

/// Receipt re-delivery settings (milliseconds; see README).
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptSettings {
    pub resp_timeout_ms: u64,
    pub retry_delay_ms: u64,
    pub max_attempts: u32,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Self {
            resp_timeout_ms: 2000,
            retry_delay_ms: 100,
            max_attempts: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmscConfig {
    credentials: Vec<(String, String)>,
    dlr_delay_ms: u64,
    receipts: ReceiptSettings,
    listeners: Vec<ListenerSpec>,
    log_pdus: bool,
    message_id_start: Option<u64>,
}

impl SmscConfig {
    /// No listeners yet; credentials [`SYSTEM_ID`]/[`PASSWORD`]; receipts after 100 ms.
    pub fn new() -> Self {
        Self {
            credentials: vec![(SYSTEM_ID.into(), PASSWORD.into())],
            dlr_delay_ms: 100,
            receipts: ReceiptSettings::default(),
            listeners: Vec::new(),
            log_pdus: false,
            message_id_start: None,
        }
    }

    /// A well-behaved "plain" and "tls" listener, as `make env-up` runs it.
    pub fn standard() -> Self {
        Self::new()
            .plain("plain", Behaviour::default())
            .tls("tls", Behaviour::default())
    }

    pub fn plain(mut self, name: &str, behaviour: Behaviour) -> Self {
        self.listeners.push(ListenerSpec {
            name: name.into(),
            port: 0,
            tls: None,
            behaviour,
        });
        self
    }

    pub fn tls(self, name: &str, behaviour: Behaviour) -> Self {
        self.tls_with(name, ServerCert::Valid, false, behaviour)
    }

    /// TLS listener presenting `cert`; `require_client_cert` demands a client certificate signed
    /// by the test CA (client.crt in the PKI directory).
    pub fn tls_with(
        self,
        name: &str,
        cert: ServerCert,
        require_client_cert: bool,
        behaviour: Behaviour,
    ) -> Self {
        self.tls_spec(
            name,
            TlsSpec {
                cert,
                require_client_cert,
                max_version: None,
            },
            behaviour,
        )
    }

    /// TLS listener (valid certificate) that speaks no TLS version newer than `max`: a
    /// vendor without TLS 1.3, for `Tls12`.
    pub fn tls_up_to(self, name: &str, max: TlsVersion, behaviour: Behaviour) -> Self {
        self.tls_spec(
            name,
            TlsSpec {
                cert: ServerCert::Valid,
                require_client_cert: false,
                max_version: Some(max),
            },
            behaviour,
        )
    }

    fn tls_spec(mut self, name: &str, tls: TlsSpec, behaviour: Behaviour) -> Self {
        self.listeners.push(ListenerSpec {
            name: name.into(),
            port: 0,
            tls: Some(tls),
            behaviour,
        });
        self
    }

    /// Adds a credential (the default one stays).
    pub fn credential(mut self, system_id: &str, password: &str) -> Self {
        self.credentials.push((system_id.into(), password.into()));
        self
    }

    pub fn dlr_delay(mut self, delay: Duration) -> Self {
        self.dlr_delay_ms = delay.as_millis() as u64;
        self
    }

    pub fn receipts(mut self, receipts: ReceiptSettings) -> Self {
        self.receipts = receipts;
        self
    }

    /// The first message id the simulator gives (then counting up by one; the default starts
    /// from the clock, so that runs do not reuse ids).
    pub fn message_id_start(mut self, first: u64) -> Self {
        self.message_id_start = Some(first);
        self
    }

    /// Logs every received PDU to the simulator log (smsc.log in its directory).
    pub fn log_pdus(mut self) -> Self {
        self.log_pdus = true;
        self
    }

    fn to_json(&self, pki: &Path, ports: &HashMap<String, u16>) -> serde_json::Value {
        let listeners: Vec<_> = self
            .listeners
            .iter()
            .map(|l| {
                let tls = l.tls.map(|t| {
                    let stem = match t.cert {
                        ServerCert::Valid => "server",
                        ServerCert::WrongName => "wrong-name",
                    };
                    TlsFiles {
                        cert: pki.join(format!("{stem}.crt")),
                        key: pki.join(format!("{stem}.key")),
                        client_ca: t.require_client_cert.then(|| pki.join("ca.crt")),
                        max_version: t.max_version,
                    }
                });
                serde_json::json!({
                    "name": l.name,
                    "port": ports.get(&l.name).copied().unwrap_or(l.port),
                    "tls": tls,
                    "behaviour": l.behaviour,
                })
            })
            .collect();
        let credentials: Vec<_> = self
            .credentials
            .iter()
            .map(|(id, pw)| serde_json::json!({"system_id": id, "password": pw}))
            .collect();
        serde_json::json!({
            "credentials": credentials,
            "dlr_delay_ms": self.dlr_delay_ms,
            "receipts": self.receipts,
            "stats_port": ports.get(STATS_KEY).copied().unwrap_or(0),
            "log_pdus": self.log_pdus,
            "message_id_start": self.message_id_start,
            "listeners": listeners,
        })
    }
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self::standard()
    }
}

const STATS_KEY: &str = "\0stats";

#[derive(Debug, Deserialize)]
struct ReadyFile {
    stats_port: u16,
    listeners: HashMap<String, ReadyListener>,
}

#[derive(Debug, Deserialize)]
struct ReadyListener {
    port: u16,
}

/// Open binds of one system_id, by bind type.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct BindCounts {
    pub transmitter: u64,
    pub receiver: u64,
    pub transceiver: u64,
    pub total: u64,
}

/// High- and low-water marks of concurrently open binds since the last reset, recorded by the
/// simulator at each bind and close (not sampled). `low` counts from the first bind since the
/// reset, or from the binds open at the reset (see e2e/smsc/README.md).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct BindMarks {
    pub high: u64,
    pub low: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListenerStats {
    pub port: u16,
    pub tls: bool,
    pub connections_open: u64,
}

/// GET /stats of the simulator.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub binds: HashMap<String, BindCounts>,
    /// Per system_id, since the last reset; absent for a system_id that has not bound since.
    pub bind_marks: HashMap<String, BindMarks>,
    /// Over all system_ids together; `None` before any bind since the last reset.
    pub bind_marks_all: Option<BindMarks>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub binds_total: u64,
    pub bind_rejects: u64,
    pub submits: u64,
    pub submits_answered: u64,
    pub submits_throttled: u64,
    pub submits_unanswered: u64,
    pub enquire_links: u64,
    pub receipts_sent: u64,
    pub receipts_acked: u64,
    pub receipts_retried: u64,
    pub receipts_failed: u64,
    pub receipts_expired: u64,
    pub receipts_pending: u64,
    pub errors: u64,
    pub listeners: HashMap<String, ListenerStats>,
}

impl Stats {
    /// Binds currently open for `system_id` (0 when it has none).
    pub fn open_binds(&self, system_id: &str) -> BindCounts {
        self.binds.get(system_id).cloned().unwrap_or_default()
    }

    /// Marks of `system_id` since the last reset; `None` when it has not bound since.
    pub fn marks(&self, system_id: &str) -> Option<BindMarks> {
        self.bind_marks.get(system_id).copied()
    }
}

/// A running private simulator. Killed (process group) on drop.
pub struct Smsc {
    config: SmscConfig,
    dir: PathBuf,
    pki: PathBuf,
    child: Option<ChildGuard>,
    ports: HashMap<String, u16>,
    stats_port: u16,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl Smsc {
    /// Starts a simulator with `config` on free ports and waits until it listens.
    pub async fn start(config: SmscConfig) -> Result<Self, SmscError> {
        let pki = prepare().await?;
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = private_root().join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut smsc = Smsc {
            config,
            dir,
            pki,
            child: None,
            ports: HashMap::new(),
            stats_port: 0,
        };
        smsc.spawn().await?;
        Ok(smsc)
    }

    async fn spawn(&mut self) -> Result<(), SmscError> {
        let mut wanted = self.ports.clone();
        if self.stats_port != 0 {
            wanted.insert(STATS_KEY.into(), self.stats_port);
        }
        let config_path = self.dir.join("config.json");
        let ready_path = self.dir.join("ready.json");
        let log_path = self.dir.join("smsc.log");
        let json = self.config.to_json(&self.pki, &wanted);
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&json).expect("json"),
        )
        .map_err(io_err(&config_path))?;
        let _ = std::fs::remove_file(&ready_path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut cmd = Command::new("node");
        cmd.arg(smsc_dir().join("smsc.js"))
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready_path)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn("smsc simulator", cmd)
            .map_err(|e| SmscError::Start(format!("{e:#} (is Node.js installed?)")))?;
        let ready = wait::until("the simulator's ready-file", READY_TIMEOUT, || {
            let exited = child.has_exited();
            let ready_path = ready_path.clone();
            async move {
                if exited {
                    return Ok(Some(None));
                }
                match std::fs::read(&ready_path) {
                    Ok(bytes) => Ok(Some(Some(serde_json::from_slice::<ReadyFile>(&bytes)?))),
                    Err(_) => Ok(None),
                }
            }
        })
        .await
        .map_err(|e| SmscError::Start(format!("{e:#}; log: {}", self.log_tail())))?;
        let Some(ready) = ready else {
            return Err(SmscError::Start(format!(
                "the simulator exited during start-up: {}",
                self.log_tail()
            )));
        };
        self.ports = ready
            .listeners
            .into_iter()
            .map(|(k, v)| (k, v.port))
            .collect();
        self.stats_port = ready.stats_port;
        self.child = Some(child);
        Ok(())
    }

    /// Port of listener `name`. Panics on an unknown name (a test bug).
    pub fn port(&self, name: &str) -> u16 {
        self.try_port(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_port(&self, name: &str) -> Result<u16, SmscError> {
        self.ports
            .get(name)
            .copied()
            .ok_or_else(|| SmscError::UnknownListener(name.into()))
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The test CA the TLS listeners' certificates chain to.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.join("ca.crt")
    }

    /// The shared test PKI (ca, server, wrong-name, wrong-ca, client certificates and keys).
    pub fn pki_dir(&self) -> &Path {
        &self.pki
    }

    pub fn stats_url(&self) -> String {
        http::local(self.stats_port, "/stats")
    }

    pub async fn stats(&self) -> Result<Stats, SmscError> {
        let json = http::get_json(&self.stats_url(), &[]).await?;
        serde_json::from_value(json).map_err(|e| SmscError::Stats {
            url: self.stats_url(),
            reason: format!("unexpected JSON: {e}"),
        })
    }

    /// Zeroes the counters and restarts the bind marks from the binds open now (open binds are
    /// state and stay).
    pub async fn reset_stats(&self) -> Result<(), SmscError> {
        let url = http::local(self.stats_port, "/reset");
        http::expect_json(
            "POST",
            &url,
            200,
            http::request("POST", &url, &[], b"").await?,
        )?;
        Ok(())
    }

    /// Kills the simulator (SIGKILL to its process group): peers see their connections reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| !c.has_exited())
    }

    /// Kills (if running) and starts it again with the same config on the same ports.
    pub async fn restart(&mut self) -> Result<(), SmscError> {
        self.kill();
        self.spawn().await
    }

    /// The simulator's log so far (stderr, one line per event).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("smsc.log")).unwrap_or_default()
    }

    /// Last lines of the simulator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<_> = text.lines().rev().take(8).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.kill();
        // Kept after a failing test for its log; cleaned when the test passed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn smsc_dir() -> PathBuf {
    repo_root().join("e2e").join("smsc")
}

fn private_root() -> PathBuf {
    repo_root().join("target").join("smsc-private")
}

/// npm packages and the test PKI, once per test process (the scripts also lock across processes).
async fn prepare() -> Result<PathBuf, SmscError> {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    tokio::task::spawn_blocking(|| {
        let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = done.as_ref() {
            return Ok(p.clone());
        }
        remove_stale_dirs();
        run_script("ensure-deps.sh", &[])?;
        let pki = private_root().join("pki");
        run_script("gen-pki.sh", &[pki.as_os_str()])?;
        *done = Some(pki.clone());
        Ok(pki)
    })
    .await
    .map_err(|e| SmscError::Prepare(format!("prepare task failed: {e}")))?
}

/// Directories of test processes that are gone (kept for a failed test's log): cleared on the
/// next run so they do not pile up.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(private_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .map(|(p, _)| p)
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn run_script(name: &str, args: &[&std::ffi::OsStr]) -> Result<(), SmscError> {
    let out = Command::new(smsc_dir().join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SmscError::Prepare(format!("cannot run {name}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SmscError::Prepare(format!(
            "{name} failed ({}): {}",
            out.status,
            err.trim()
        )));
    }
    Ok(())
}

/// A rustls client config that trusts only `ca_file` (ring provider, no global state), with an
/// optional client certificate (`cert`, `key` PEM files) for mutual TLS.
pub fn client_tls_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, SmscError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what: &str, e: &dyn std::fmt::Display| SmscError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| tls("reading CA file", &e))? {
        let cert = cert.map_err(|e| tls("parsing CA file", &e))?;
        roots.add(cert).map_err(|e| tls("adding CA", &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls("protocol versions", &e))?
    .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls("reading client cert", &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls("parsing client cert", &e))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| tls("reading client key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls("client certificate", &e))?
        }
    };
    Ok(Arc::new(config))
}

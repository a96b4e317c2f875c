use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use smpp_db::Secret;
use smpp_gateway::api::auth::ApiKeys;
use smpp_gateway::api::forward::Forwarder;
use smpp_gateway::api::http;
use smpp_gateway::api::messages::MessagesApi;
use smpp_gateway::api::smpp::limits::Settings;
use smpp_gateway::api::smpp::slots::PgSlots;
use smpp_gateway::api::smpp::tls::ReloadingTls;
use smpp_gateway::api::smpp::{Deps, OutboxFeed, ReceiptFeed, Server as SmppServer};
use smpp_gateway::fleet::accounts::AccountRegistry;
use smpp_gateway::fleet::budget::Fleet;
use smpp_gateway::fleet::manager::{Ctx, Manager};
use smpp_gateway::fleet::peers::Peers;
use smpp_gateway::fleet::sessions::{AckAll, Inbound, SessionIndex};
use smpp_gateway::fleet::state::Registry;
use smpp_gateway::fleet::{account_watcher, watcher};
use smpp_gateway::messaging::callbacks::{Callbacks, RetryPolicy};
use smpp_gateway::messaging::outbox::Outbox;
use smpp_gateway::messaging::receipts::ReceiptHandler;
use smpp_gateway::messaging::store::{self, RedisStore, Store};
use smpp_gateway::messaging::submit::{Limits, Messenger};
use smpp_gateway::metrics::Metrics;
use smpp_gateway::smpp::endpoint::{BindMode, Connection};
use smpp_gateway::smpp::pdu::Version;
use smpp_gateway::smpp::probe;
use smpp_gateway::smpp::session::Timeouts;
use smpp_gateway::smpp::tls::{MinVersion, TlsSettings};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// SMPP gateway: binds to the vendors in vendor_mgmt.service_providers, re-binds on change.
#[derive(Parser, Debug)]
// The version names the checkout it was built from: the e2e harness refuses a binary built
// from another clone that shares the cargo target dir (cargo does not rebuild for that).
#[command(
    name = "smpp-gateway",
    version = concat!(env!("CARGO_PKG_VERSION"), " (built from ", env!("CARGO_MANIFEST_DIR"), ")")
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Try every bind mode × interface version × system_type against a vendor and print a table.
    Probe(ProbeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address of the HTTP listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// PostgreSQL holding vendor_mgmt.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This pod's name in vendor_sessions (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Redis for messages, receipts and idempotency keys: redis://… or
    /// redis+cluster://host:port,host:port. Without it the gateway binds but sends nothing.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// API keys, one `name:token` per line; reloaded on change. None: submit is refused.
    #[arg(long, env = "API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// host:port other pods use to forward submits here (default: $POD_IP and the HTTP port).
    #[arg(long, env = "ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    #[arg(long, env = "POD_IP", hide = true)]
    pod_ip: Option<String>,
    /// How long receipts are correlated and messages kept in Redis (e.g. 72h, 30m, 3600s).
    #[arg(long, env = "DLR_TTL", default_value = "72h", value_parser = parse_duration)]
    dlr_ttl: Duration,
    /// POST mobile-originated messages here (signed like callbacks).
    #[arg(long, env = "MO_URL")]
    mo_url: Option<String>,
    /// File holding the HMAC key that signs callbacks and MO posts.
    #[arg(long, env = "CALLBACK_SECRET_FILE")]
    callback_secret_file: Option<PathBuf>,
    /// How long a submit waits for each submit_sm_resp.
    #[arg(long, env = "SUBMIT_TIMEOUT_SECONDS", default_value_t = 10)]
    submit_timeout_seconds: u64,
    /// Submits in flight on this pod before new ones get 429.
    #[arg(long, env = "MAX_INFLIGHT_SUBMITS", default_value_t = 20000)]
    max_inflight_submits: usize,
    /// Parts a message may be split into.
    #[arg(long, env = "MAX_PARTS", default_value_t = 10)]
    max_parts: usize,
    /// Per-attempt limit for DNS, TCP connect and the TLS handshake (each).
    #[arg(long, env = "CONNECT_TIMEOUT_SECONDS", default_value_t = 5)]
    connect_timeout_seconds: u64,
    /// How long a bind waits for bind_resp.
    #[arg(long, env = "BIND_TIMEOUT_SECONDS", default_value_t = 10)]
    bind_timeout_seconds: u64,
    /// How long shutdown waits for sessions to unbind.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    shutdown_timeout_seconds: u64,
    #[command(flatten)]
    smpp: SmppArgs,
}

/// The customer-facing SMPP server (docs/customers.md). No address: no listener.
#[derive(Args, Debug)]
struct SmppArgs {
    /// Plain SMPP listener for customers, e.g. 0.0.0.0:2775.
    #[arg(long, env = "SMPP_ADDR")]
    smpp_addr: Option<String>,
    /// SMPP over TLS for customers, e.g. 0.0.0.0:2776 (needs the cert and key files).
    #[arg(long, env = "SMPP_TLS_ADDR")]
    smpp_tls_addr: Option<String>,
    /// PEM certificate chain of the TLS listener; reloaded when it changes.
    #[arg(long, env = "SMPP_TLS_CERT_FILE")]
    smpp_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener; reloaded when it changes.
    #[arg(long, env = "SMPP_TLS_KEY_FILE")]
    smpp_tls_key_file: Option<PathBuf>,
    /// Customer connections open at once (plain and TLS together).
    #[arg(long, env = "SMPP_MAX_CONNECTIONS", default_value_t = 2000)]
    smpp_max_connections: usize,
    /// Requests of one customer session in flight; more get ESME_RMSGQFUL. Also the
    /// deliver_sm sent to it before their deliver_sm_resp.
    #[arg(long, env = "SMPP_WINDOW", default_value_t = 100)]
    smpp_window: usize,
    /// Largest customer PDU (command_length); a larger one closes that session.
    #[arg(long, env = "SMPP_MAX_PDU_BYTES", default_value_t = 71680)]
    smpp_max_pdu_bytes: usize,
    /// A customer session with no PDU (enquire_link included) for this long is unbound.
    #[arg(long, env = "SMPP_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    smpp_idle_timeout_seconds: u64,
    /// PDUs queued for one customer's writer; a customer that does not read and fills it is
    /// disconnected.
    #[arg(long, env = "SMPP_WRITER_QUEUE", default_value_t = 1024)]
    smpp_writer_queue: usize,
    /// How long a deliver_sm to a customer waits for its deliver_sm_resp.
    #[arg(long, env = "SMPP_RESPONSE_TIMEOUT_SECONDS", default_value_t = 10)]
    smpp_response_timeout_seconds: u64,
    /// Failed binds per minute one source address may make before its binds are refused.
    #[arg(long, env = "SMPP_FAILED_BINDS_PER_MINUTE", default_value_t = 10)]
    smpp_failed_binds_per_minute: u32,
    /// system_id in our bind_resp (at most 15 characters).
    #[arg(long, env = "SMPP_SYSTEM_ID", default_value = "smpp-gateway")]
    smpp_system_id: String,
}

impl SmppArgs {
    fn settings(&self) -> Settings {
        Settings {
            max_connections: self.smpp_max_connections,
            window: self.smpp_window.max(1),
            max_pdu: self.smpp_max_pdu_bytes,
            idle_timeout: Duration::from_secs(self.smpp_idle_timeout_seconds.max(1)),
            writer_queue: self.smpp_writer_queue,
            response_timeout: Duration::from_secs(self.smpp_response_timeout_seconds.max(1)),
            failed_binds_per_minute: self.smpp_failed_binds_per_minute,
            system_id: self.smpp_system_id.clone(),
            ..Settings::default()
        }
    }
}

/// Binds an SMPP listener address given as a flag.
async fn smpp_listener(flag: &str, addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let a: SocketAddr = addr
        .parse()
        .with_context(|| format!("{flag} {addr:?} is not host:port (e.g. 0.0.0.0:2775)"))?;
    tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {a} ({flag})"))
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Read host, port, TLS and credentials from this row (instance_name); needs DATABASE_URL.
    #[arg(long)]
    vendor: Option<String>,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    tls: bool,
    /// CA bundle (PEM) to verify the vendor; system roots otherwise.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Name for SNI and verification (default: host).
    #[arg(long)]
    server_name: Option<String>,
    #[arg(long)]
    insecure_skip_verify: bool,
    #[arg(long)]
    system_id: Option<String>,
    /// File holding the password (so it is not in the shell history or `ps`).
    #[arg(long)]
    password_file: Option<PathBuf>,
    #[arg(long, default_value = "")]
    system_type: String,
    /// Total time budget in seconds.
    #[arg(long, default_value_t = 25)]
    budget_seconds: u64,
}

/// "72h", "30m", "45s" or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit h, m or s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use h, m or s)")),
    };
    Ok(Duration::from_secs(secs))
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    match cli.cmd {
        Some(Cmd::Probe(p)) => run_probe(p).await,
        None => serve(cli.serve).await,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "smpp-gateway".into())
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    // An empty variable (REDIS_URL= in a manifest) means unset, not an invalid value.
    let unset_empty = |v: &mut Option<String>| {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *v = None;
        }
    };
    unset_empty(&mut args.redis_url);
    unset_empty(&mut args.mo_url);
    unset_empty(&mut args.advertise_addr);
    unset_empty(&mut args.pod_ip);
    unset_empty(&mut args.smpp.smpp_addr);
    unset_empty(&mut args.smpp.smpp_tls_addr);
    for p in [
        &mut args.api_keys_file,
        &mut args.callback_secret_file,
        &mut args.smpp.smpp_tls_cert_file,
        &mut args.smpp.smpp_tls_key_file,
    ] {
        if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            *p = None;
        }
    }
    let url = args
        .database_url
        .clone()
        .context("DATABASE_URL (or --database-url) is required")?;
    let pod = args.pod_name.clone().unwrap_or_else(hostname);
    // Lazy: the gateway starts (and serves /health) even while PostgreSQL is down.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::default());
    let accounts = AccountRegistry::new();
    let advertise = args.advertise_addr.clone().or_else(|| {
        args.pod_ip
            .as_ref()
            .map(|ip| format!("{ip}:{}", args.http_addr.port()))
    });
    let fleet = Fleet::new(pool.clone(), pod.clone(), advertise.clone());
    let sessions = Arc::new(SessionIndex::default());
    let keys = match &args.api_keys_file {
        Some(p) => ApiKeys::watch(p.clone()),
        None => {
            tracing::warn!("no --api-keys-file: message submit is refused (fail closed)");
            ApiKeys::default()
        }
    };
    let peers_stop = CancellationToken::new();
    let peers = Peers::start(
        pool.clone(),
        pod.clone(),
        metrics.clone(),
        Duration::from_secs(1),
        peers_stop.clone(),
    );
    let messaging = match &args.redis_url {
        None => {
            tracing::warn!("no REDIS_URL: vendors bind, but messages are refused (503)");
            None
        }
        Some(url) => Some(
            build_messaging(&args, url, &pod, &metrics, &registry, &sessions, &accounts).await?,
        ),
    };
    let inbound: Arc<dyn Inbound> = match &messaging {
        Some((_, h, _)) => Arc::new(h.clone()),
        None => Arc::new(AckAll),
    };
    let outbox = messaging.as_ref().map(|(_, _, o)| o.clone());
    let messages_api = messaging.map(|(m, _, _)| {
        Arc::new(MessagesApi {
            keys: keys.clone(),
            messenger: m,
            peers: peers.clone(),
            forwarder: Forwarder::new(
                pod.clone(),
                metrics.clone(),
                Duration::from_secs(args.submit_timeout_seconds + 5),
            ),
            pod: pod.clone(),
        })
    });
    // The SMPP listeners are bound now (a port in use fails the start) and accept once the
    // schema exists and this pod has its gateway_pods row (bind slots need it).
    let smpp_plain = match &args.smpp.smpp_addr {
        Some(a) => Some(smpp_listener("--smpp-addr", a).await?),
        None => None,
    };
    let smpp_tls = match &args.smpp.smpp_tls_addr {
        None => None,
        Some(a) => {
            let (Some(cert), Some(key)) = (
                args.smpp.smpp_tls_cert_file.clone(),
                args.smpp.smpp_tls_key_file.clone(),
            ) else {
                bail!("--smpp-tls-addr needs --smpp-tls-cert-file and --smpp-tls-key-file");
            };
            let tls = ReloadingTls::new(cert, key).context("the SMPP TLS certificate")?;
            Some((smpp_listener("--smpp-tls-addr", a).await?, tls))
        }
    };
    let smpp = SmppServer::new(Deps {
        settings: args.smpp.settings(),
        accounts: accounts.clone(),
        slots: Arc::new(PgSlots {
            fleet: fleet.clone(),
            ttl: smpp_db::sessions::SLOT_TTL,
        }),
        messages: messages_api.clone(),
        receipts: outbox.map(|o| Arc::new(OutboxFeed(o)) as Arc<dyn ReceiptFeed>),
        metrics: metrics.clone(),
        pod: pod.clone(),
    })?;
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    tracing::info!(pod = %pod, http = %args.http_addr, advertise = ?advertise, redis = args.redis_url.is_some(), api_keys = keys.len(), smpp = ?args.smpp.smpp_addr, smpp_tls = ?args.smpp.smpp_tls_addr, "smpp-gateway starting");

    let http_stop = CancellationToken::new();
    let server = warp::serve(http::routes(
        registry.clone(),
        metrics.clone(),
        keys.clone(),
        messages_api,
    ))
    .incoming(listener)
    .graceful({
        let s = http_stop.clone();
        async move { s.cancelled().await }
    })
    .run();
    let http_task = tokio::spawn(server);

    let beat_stop = CancellationToken::new();
    let schema_ready = CancellationToken::new();
    let beat = tokio::spawn(fleet.clone().run(
        metrics.clone(),
        schema_ready.clone(),
        beat_stop.clone(),
    ));
    let ctx = Arc::new(Ctx {
        claims: smpp_gateway::fleet::claims::Claims::start(
            pool.clone(),
            pod.clone(),
            smpp_db::sessions::SLOT_TTL,
        ),
        dials: smpp_gateway::fleet::dial_gate::DialGate::new(
            smpp_gateway::fleet::dial_gate::PER_ADDRESS,
        ),
        reporter: smpp_gateway::fleet::reporter::Reporter::start(
            pool.clone(),
            pod.clone(),
            metrics.clone(),
        ),
        fleet: fleet.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        timeouts: Timeouts {
            bind: Duration::from_secs(args.bind_timeout_seconds),
            ..Timeouts::default()
        },
        connect_timeout: Duration::from_secs(args.connect_timeout_seconds),
        sessions: sessions.clone(),
        inbound,
    });
    let account_watch = tokio::spawn(account_watcher::run(
        pool.clone(),
        accounts.clone(),
        Arc::new(smpp.clone()),
        metrics.clone(),
        schema_ready.clone(),
        stop.clone(),
    ));
    if smpp_plain.is_some() || smpp_tls.is_some() {
        tokio::spawn(start_smpp(
            smpp.clone(),
            smpp_plain,
            smpp_tls,
            pool.clone(),
            pod.clone(),
            advertise.clone(),
            schema_ready.clone(),
            stop.clone(),
        ));
    }
    let watch = tokio::spawn(watcher::run(
        pool.clone(),
        Manager::new(ctx),
        metrics.clone(),
        schema_ready,
        stop.clone(),
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: unbinding every customer, then every vendor session");
    // Customers first: their submits in flight still have the vendor sessions.
    smpp.shutdown(Duration::from_secs(args.shutdown_timeout_seconds))
        .await;
    stop.cancel();
    let _ = account_watch.await;
    let manager = watch.await.context("config watcher task")?;
    manager
        .shutdown(Duration::from_secs(args.shutdown_timeout_seconds))
        .await;
    beat_stop.cancel();
    peers_stop.cancel();
    let _ = beat.await;
    if let Err(e) = smpp_db::sessions::remove_pod(&pool, &pod).await {
        tracing::warn!(error = %e, "cannot remove this pod's rows; they expire after the TTL");
    }
    http_stop.cancel();
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts accepting customers once the schema exists and this pod has its gateway_pods row
/// (a bind slot row refers to it); until then connections wait in the listen backlog.
#[allow(clippy::too_many_arguments)]
async fn start_smpp(
    server: SmppServer,
    plain: Option<tokio::net::TcpListener>,
    tls: Option<(tokio::net::TcpListener, Arc<ReloadingTls>)>,
    pool: sqlx::PgPool,
    pod: String,
    advertise: Option<String>,
    schema_ready: CancellationToken,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = schema_ready.cancelled() => {}
    }
    let mut delay = Duration::from_millis(200);
    while let Err(e) = smpp_db::sessions::heartbeat_pod(&pool, &pod, advertise.as_deref()).await {
        tracing::warn!(error = %e, "SMPP server waits for PostgreSQL (this pod's gateway_pods row)");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    if let Some(l) = plain {
        tracing::info!(addr = ?l.local_addr().ok(), "SMPP server accepting customers");
        server.serve(l, None);
    }
    if let Some((l, t)) = tls {
        tracing::info!(addr = ?l.local_addr().ok(), "SMPP TLS server accepting customers");
        t.watch(smpp_gateway::api::smpp::tls::RELOAD_EVERY, stop.clone());
        server.serve(l, Some(t));
    }
}

/// The Redis store, the receipt handler, the submit path and the customers' outbox.
async fn build_messaging(
    args: &ServeArgs,
    url: &str,
    pod: &str,
    metrics: &Arc<Metrics>,
    registry: &Arc<Registry>,
    sessions: &Arc<SessionIndex>,
    accounts: &Arc<AccountRegistry>,
) -> anyhow::Result<(Arc<Messenger>, Arc<ReceiptHandler>, Arc<Outbox>)> {
    let conn = store::connect(url)
        .await
        .context("REDIS_URL is not a valid Redis URL")?;
    // Customer receipts share the store's connection and TTL.
    let outbox = Outbox::new(conn.clone(), args.dlr_ttl, metrics.clone());
    let redis = RedisStore::new(conn, args.dlr_ttl);
    redis.watch_health(Duration::from_secs(1));
    let store: Store = Arc::new(redis);
    let secret: Option<Arc<[u8]>> = match &args.callback_secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the callback secret {}", f.display()))?
                .trim()
                .as_bytes()
                .into(),
        ),
        None => None,
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("smpp-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("HTTP client for callbacks")?;
    let callbacks = Callbacks::start(
        client,
        secret,
        RetryPolicy::default(),
        metrics.clone(),
        10_000,
        64,
    );
    let receipts = Arc::new(ReceiptHandler {
        store: store.clone(),
        metrics: metrics.clone(),
        registry: registry.clone(),
        callbacks,
        mo_url: args.mo_url.clone(),
        accounts: accounts.clone(),
        outbox: outbox.clone(),
        exact_grace: smpp_gateway::messaging::receipts::EXACT_MATCH_GRACE,
    });
    let limits = Limits {
        max_parts: args.max_parts,
        response_timeout: Duration::from_secs(args.submit_timeout_seconds),
        ..Limits::default()
    };
    tracing::info!(pod = %pod, dlr_ttl = ?args.dlr_ttl, "messaging enabled");
    let messenger = Arc::new(Messenger::new(
        store,
        receipts.clone(),
        sessions.clone(),
        metrics.clone(),
        limits,
        args.max_inflight_submits,
    ));
    Ok((messenger, receipts, outbox))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn probe_connection(p: &ProbeArgs) -> anyhow::Result<Connection> {
    if let Some(name) = &p.vendor {
        let url = p
            .database_url
            .as_deref()
            .context("--vendor needs DATABASE_URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        let row = smpp_db::providers::get_by_instance_name(&pool, name)
            .await?
            .with_context(|| format!("no row with instance_name {name:?}"))?;
        let entry = smpp_gateway::fleet::config::parse(&row);
        return entry
            .config
            .map(|c| c.conn)
            .map_err(|e| anyhow::anyhow!("row {name:?} is invalid: {e}"));
    }
    let (Some(host), Some(port), Some(system_id)) = (&p.host, p.port, &p.system_id) else {
        bail!("give --vendor, or --host, --port and --system-id (with --password-file)");
    };
    let password = match &p.password_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        None => String::new(),
    };
    let tls = if p.tls {
        let ca_pem = match &p.ca_file {
            Some(f) => Some(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            None => None,
        };
        Some(TlsSettings {
            server_name: p.server_name.clone().unwrap_or_else(|| host.clone()),
            ca_pem,
            client_cert_pem: None,
            client_key_pem: None,
            insecure_skip_verify: p.insecure_skip_verify,
            min_version: MinVersion::Tls12,
        })
    } else {
        None
    };
    Ok(Connection {
        host: host.clone(),
        port,
        tls,
        mode: BindMode::Transceiver,
        system_id: system_id.clone(),
        password: Secret::new(password),
        system_type: p.system_type.clone(),
        version: Version::V34,
        address_range: String::new(),
    })
}

async fn run_probe(p: ProbeArgs) -> anyhow::Result<()> {
    let conn = probe_connection(&p).await?;
    println!(
        "probing {}:{} ({}) as system_id {:?}",
        conn.host,
        conn.port,
        if conn.tls.is_some() { "TLS" } else { "plain" },
        conn.system_id
    );
    let rows = probe::run(&conn, Duration::from_secs(p.budget_seconds)).await;
    print!("{}", probe::render(&rows));
    Ok(())
}

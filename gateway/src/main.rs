use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use smpp_db::Secret;
use smpp_gateway::api::http;
use smpp_gateway::fleet::budget::Fleet;
use smpp_gateway::fleet::manager::{Ctx, Manager};
use smpp_gateway::fleet::state::Registry;
use smpp_gateway::fleet::watcher;
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
#[command(name = "smpp-gateway", version)]
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
    /// Redis for DLR correlation (not used yet).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Per-attempt limit for DNS, TCP connect and the TLS handshake (each).
    #[arg(long, env = "CONNECT_TIMEOUT_SECONDS", default_value_t = 5)]
    connect_timeout_seconds: u64,
    /// How long a bind waits for bind_resp.
    #[arg(long, env = "BIND_TIMEOUT_SECONDS", default_value_t = 10)]
    bind_timeout_seconds: u64,
    /// How long shutdown waits for sessions to unbind.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    shutdown_timeout_seconds: u64,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = args
        .database_url
        .context("DATABASE_URL (or --database-url) is required")?;
    let pod = args.pod_name.unwrap_or_else(hostname);
    // Lazy: the gateway starts (and serves /health) even while PostgreSQL is down.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::default());
    // TODO(--advertise-addr): pass the flag's value once it exists.
    let fleet = Fleet::new(pool.clone(), pod.clone(), None);
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    tracing::info!(pod = %pod, http = %args.http_addr, redis = args.redis_url.is_some(), "smpp-gateway starting");

    let http_stop = CancellationToken::new();
    let server = warp::serve(http::routes(registry.clone(), metrics.clone()))
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
    });
    let watch = tokio::spawn(watcher::run(
        pool.clone(),
        Manager::new(ctx),
        metrics.clone(),
        schema_ready,
        stop.clone(),
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: unbinding every session");
    stop.cancel();
    let manager = watch.await.context("config watcher task")?;
    manager
        .shutdown(Duration::from_secs(args.shutdown_timeout_seconds))
        .await;
    beat_stop.cancel();
    let _ = beat.await;
    if let Err(e) = smpp_db::sessions::remove_pod(&pool, &pod).await {
        tracing::warn!(error = %e, "cannot remove this pod's rows; they expire after the TTL");
    }
    http_stop.cancel();
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
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

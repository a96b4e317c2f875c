//! smpp-operator: reconciles SmppVendor resources into vendor_mgmt.service_providers and
//! SmppAccount resources into vendor_mgmt.customer_accounts, and reports the gateways' binds
//! back in their status.

mod account;
mod account_status;
mod controller;
mod credentials;
mod events;
mod leader;
mod metrics;
mod row;
mod session_events;
mod status;
mod vendor;

use anyhow::Context as _;
use clap::Parser;
use smpp_crds::{SmppAccount, SmppVendor};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// SmppVendor and SmppAccount operator.
#[derive(Parser, Debug)]
// The version names the checkout it was built from: the e2e harness refuses a binary built
// from another clone that shares the cargo target dir (cargo does not rebuild for that).
#[command(
    name = "smpp-operator",
    version = concat!(env!("CARGO_PKG_VERSION"), " (built from ", env!("CARGO_MANIFEST_DIR"), ")")
)]
struct Args {
    /// Address of the /health, /ready and /metrics listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    http_addr: SocketAddr,
    /// PostgreSQL holding vendor_mgmt (postgres://user:pass@host:port/db).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// This replica's identity in the leader Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pod_name: String,
    /// Namespaces to watch, comma-separated (or the flag repeated); all namespaces when
    /// absent. Each needs the RBAC for SmppVendors, SmppAccounts and Secrets (the chart's
    /// Roles).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
    /// Elect a leader through the Lease before reconciling. `false` for a single replica:
    /// it reconciles at once and needs no Lease permissions.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "smpp-operator")]
    lease_name: String,
    /// Seconds after which a silent leader loses the Lease.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds between status refreshes / drift checks of each vendor and account.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 5)]
    resync_seconds: u64,
    /// Reconciles run at once per kind (SmppVendor, SmppAccount). Each holds a database
    /// connection while it writes, and the pool has 8, so more only queue there.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 16)]
    reconcile_concurrency: u16,
    /// Gateway sessions with an older heartbeat are ignored; the gateways give up a slot
    /// whose holder has been silent this long (their slot TTL), hence the shared default.
    #[arg(long, env = "SESSION_TTL_SECONDS", default_value_t = smpp_db::sessions::SLOT_TTL.as_secs() as i64)]
    session_ttl_seconds: i64,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("smpp-operator-{}", std::process::id()))
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,sqlx=warn".into());
    // Plain text when logging to a file or a collector, colours only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;

    let metrics = Arc::new(metrics::Metrics::new().context("registering metrics")?);
    let http = tokio::spawn(metrics::serve(args.http_addr, metrics.clone()));

    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(&args.database_url)
        .context("parsing DATABASE_URL")?;

    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        pool,
        events::Publisher::new(client.clone(), "smpp-operator", &args.pod_name),
        metrics.clone(),
        controller::Settings {
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            session_ttl: chrono::Duration::seconds(args.session_ttl_seconds),
            concurrency: args.reconcile_concurrency.max(1),
        },
    ));
    let scopes = watch_scopes(&args.watch_namespace);
    tokio::spawn(initialise(ctx.clone(), scopes.clone()));

    let lease = leader::LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: args.pod_name.clone(),
        duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
        renew_every: Duration::from_secs((args.lease_duration_seconds / 5).max(1)),
    };
    let (tx, mut leading) = tokio::sync::watch::channel(false);
    // Without election this replica leads for good; the sender stays alive with it.
    let _always_leading = if args.leader_election {
        tokio::spawn(leader::run(client.clone(), lease.clone(), tx));
        tracing::info!(identity = %args.pod_name, lease = %format!("{}/{}", lease.namespace, lease.name), "waiting for leadership");
        None
    } else {
        tx.send_replace(true);
        Some(tx)
    };

    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => { r.context("leader election stopped")?; }
            _ = &mut shutdown => break,
        }
        tracing::info!(identity = %args.pod_name, "leading: reconciling SmppVendors and SmppAccounts");
        metrics.leader.set(1);
        tokio::select! {
            _ = futures::future::join_all(scopes.iter().map(|ns| controller::run(ctx.clone(), ns.clone()))) => {
                tracing::info!("controller stopped");
                metrics.leader.set(0);
                break;
            }
            _ = leading.wait_for(|l| !*l) => {
                tracing::warn!("lost the leader Lease: stopped reconciling, waiting to lead again");
            }
            _ = &mut shutdown => {
                metrics.leader.set(0);
                break;
            }
        }
        metrics.leader.set(0);
    }
    if args.leader_election {
        leader::release(client, &lease).await;
    }
    http.abort();
    tracing::info!("stopped");
    Ok(())
}

/// What one controller each watches: the named namespaces (blanks and repeats dropped), or
/// None (all namespaces) when none is named.
fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let mut scopes: Vec<Option<String>> = Vec::new();
    for ns in namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        if !scopes.iter().any(|s| s.as_deref() == Some(ns)) {
            scopes.push(Some(ns.to_string()));
        }
    }
    if scopes.is_empty() {
        scopes.push(None);
    }
    scopes
}

/// Migrates the schema and checks the SmppVendor and SmppAccount APIs in every watched scope,
/// retrying until all work; /ready turns 200 then. Reconciles run meanwhile and report what
/// is missing in status.
async fn initialise(ctx: Arc<controller::Context>, scopes: Vec<Option<String>>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let crds = check_apis(&ctx.client, &scopes).await;
        let schema = ctx.ensure_schema().await;
        match (crds, schema) {
            (Ok(()), Ok(())) => {
                ctx.metrics.ready.store(true, Ordering::Relaxed);
                tracing::info!("ready");
                return;
            }
            (Err((plural, file, e)), _) => {
                tracing::error!(error = %e, "cannot list {plural}; is the CRD installed (kubectl apply -f crds/{file}; the chart installs both) and may this service account list them?")
            }
            (_, Err(e)) => tracing::error!(error = %e, "migrating the vendor_mgmt schema failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Lists each kind once per scope; the first failure names the kind and its CRD file.
async fn check_apis(
    client: &kube::Client,
    scopes: &[Option<String>],
) -> Result<(), (&'static str, &'static str, kube::Error)> {
    for scope in scopes {
        list_one::<SmppVendor>(client, scope)
            .await
            .map_err(|e| ("SmppVendors", "smppvendor.yaml", e))?;
        list_one::<SmppAccount>(client, scope)
            .await
            .map_err(|e| ("SmppAccounts", "smppaccount.yaml", e))?;
    }
    Ok(())
}

async fn list_one<K>(client: &kube::Client, scope: &Option<String>) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: kube::Api<K> = match scope {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .map(|_| ())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_scopes_from_the_flag() {
        assert_eq!(watch_scopes(&[]), vec![None]);
        assert_eq!(watch_scopes(&["".into()]), vec![None]);
        assert_eq!(
            watch_scopes(&["a".into(), " b".into(), "a".into(), "".into()]),
            vec![Some("a".to_string()), Some("b".to_string())]
        );
    }

    #[test]
    fn flags_take_a_namespace_list_and_election_off() {
        let a = Args::try_parse_from([
            "smpp-operator",
            "--database-url",
            "postgres://x",
            "--watch-namespace",
            "a,b",
            "--leader-election=false",
        ])
        .unwrap();
        assert_eq!(a.watch_namespace, vec!["a", "b"]);
        assert!(!a.leader_election);
        let a = Args::try_parse_from(["smpp-operator", "--database-url", "postgres://x"]).unwrap();
        assert!(a.leader_election && a.watch_namespace.is_empty());
    }
}

//! The environment written by `make env-up` to target/env.sh: typed addresses of the real
//! parts and clients for them (kube, kubectl, PostgreSQL, Redis).
//!
//! Tests call [`Env::load`]; it reads `SMPP_ENV_FILE` when set, else `<repo>/target/env.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::repo_root;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("cannot read {path}: {source} (is the environment up? run `make env-up`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no {name} (stale file? run `make env-down && make env-up`)")]
    Missing { path: PathBuf, name: &'static str },
    #[error("{path}: {name}={value:?} is not a valid {what}")]
    Invalid {
        path: PathBuf,
        name: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kube client for {path}: {source}")]
    Kube { path: PathBuf, source: kube::Error },
    #[error("PostgreSQL at 127.0.0.1 (DATABASE_URL from env.sh) refused the connection: {0}")]
    Postgres(#[source] sqlx::Error),
    #[error("CREATE DATABASE {name} on the environment's PostgreSQL failed: {source}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("Redis (REDIS_URL from env.sh) refused the connection: {0}")]
    Redis(#[source] redis::RedisError),
}

/// Where the SMSC simulator of the environment listens, and how to bind to it.
#[derive(Debug, Clone)]
pub struct SmscEndpoint {
    pub host: String,
    /// Plain SMPP.
    pub port: u16,
    /// SMPP over TLS; the certificate is signed by `ca_file`.
    pub tls_port: u16,
    pub ca_file: PathBuf,
    pub system_id: String,
    pub password: String,
    /// HTTP JSON counters (binds, submits, receipts, errors).
    pub stats_url: String,
}

/// The running environment, as target/env.sh describes it.
#[derive(Debug, Clone)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub smsc: SmscEndpoint,
    /// Directory with the built kubectl, helm, kube-apiserver and etcd.
    pub bin_dir: PathBuf,
}

impl Env {
    /// Loads `SMPP_ENV_FILE`, or target/env.sh in the repository.
    pub fn load() -> Result<Self, EnvError> {
        let path = std::env::var_os("SMPP_ENV_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/env.sh"));
        Self::from_file(&path)
    }

    pub fn from_file(path: &Path) -> Result<Self, EnvError> {
        let text = std::fs::read_to_string(path).map_err(|source| EnvError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_vars(path, &parse_env_sh(&text))
    }

    fn from_vars(path: &Path, vars: &HashMap<String, String>) -> Result<Self, EnvError> {
        let get = |name: &'static str| {
            vars.get(name).cloned().ok_or_else(|| EnvError::Missing {
                path: path.to_path_buf(),
                name,
            })
        };
        let port = |name: &'static str| {
            let value = get(name)?;
            value.parse::<u16>().map_err(|_| EnvError::Invalid {
                path: path.to_path_buf(),
                name,
                value,
                what: "port",
            })
        };
        Ok(Self {
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            database_url: get("DATABASE_URL")?,
            redis_url: get("REDIS_URL")?,
            smsc: SmscEndpoint {
                host: get("SMSC_HOST")?,
                port: port("SMSC_PORT")?,
                tls_port: port("SMSC_TLS_PORT")?,
                ca_file: PathBuf::from(get("SMSC_CA_FILE")?),
                system_id: get("SMSC_SYSTEM_ID")?,
                password: get("SMSC_PASSWORD")?,
                stats_url: get("SMSC_STATS_URL")?,
            },
            bin_dir: repo_root().join("e2e/.bin"),
        })
    }

    /// A kube client with the admin certificate from the environment's kubeconfig.
    pub async fn kube_client(&self) -> Result<kube::Client, EnvError> {
        install_crypto_provider();
        let kubeconfig_err = |source| EnvError::Kubeconfig {
            path: self.kubeconfig.clone(),
            source,
        };
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(kubeconfig_err)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(kubeconfig_err)?;
        kube::Client::try_from(config).map_err(|source| EnvError::Kube {
            path: self.kubeconfig.clone(),
            source,
        })
    }

    /// The built kubectl, talking to this environment's apiserver.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// The built helm, talking to this environment's apiserver.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// A small pool on the environment's `smpp` database.
    pub async fn pg_pool(&self) -> Result<sqlx::PgPool, EnvError> {
        pg_pool(&self.database_url).await
    }

    /// A new, empty database `<prefix>_<random>` on the environment's PostgreSQL, so a test
    /// never sees another's rows.
    pub async fn fresh_db(&self, prefix: &str) -> Result<FreshDb, EnvError> {
        use sqlx::Executor as _;
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        self.pg_pool()
            .await?
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(|source| EnvError::CreateDatabase {
                name: name.clone(),
                source,
            })?;
        let url = with_database(&self.database_url, &name);
        let pool = pg_pool(&url).await?;
        Ok(FreshDb { name, url, pool })
    }

    /// A multiplexed connection to the environment's Redis.
    pub async fn redis(&self) -> Result<redis::aio::MultiplexedConnection, EnvError> {
        let client = redis::Client::open(self.redis_url.as_str()).map_err(EnvError::Redis)?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(EnvError::Redis)
    }
}

/// A database of a test's own (see [`Env::fresh_db`]).
#[derive(Debug, Clone)]
pub struct FreshDb {
    pub name: String,
    pub url: String,
    pub pool: sqlx::PgPool,
}

/// `url` naming database `db` instead of its own; the query string stays.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    format!("{prefix}/{db}{query}")
}

pub(crate) async fn pg_pool(url: &str) -> Result<sqlx::PgPool, EnvError> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(EnvError::Postgres)
}

/// rustls needs one process-wide crypto provider; the workspace uses ring only.
pub fn install_crypto_provider() {
    // Err means another test of this process installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses `export NAME=value` lines as env-up writes them: values plain, single-quoted
/// (`'it'\''s'`) or double-quoted. Other lines (comments, blanks) are ignored.
pub fn parse_env_sh(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), unquote(value.trim())))
        .collect()
}

/// Undoes POSIX shell quoting of one word: '...' literally, "..." with \-escapes, bare text.
fn unquote(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => out.extend(chars.next()),
                        c => out.push(c),
                    }
                }
            }
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_swaps_only_the_path() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/smpp", "t_1"),
            "postgres://u:p@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/smpp?sslmode=disable", "t_2"),
            "postgres://u:p@h:1/t_2?sslmode=disable"
        );
    }

    const SAMPLE: &str = r#"# Written by e2e/scripts/env-up.sh
export KUBECONFIG=/r/target/env/kubeconfig
export DATABASE_URL=postgres://smpp:smpp@127.0.0.1:21116/smpp
export REDIS_URL=redis://127.0.0.1:25866/0
export SMSC_HOST=127.0.0.1
export SMSC_PORT=34327
export SMSC_TLS_PORT=35437
export SMSC_CA_FILE='/r/with space/ca.crt'
export SMSC_SYSTEM_ID=smppclient1
export SMSC_PASSWORD='it'\''s secret'
export SMSC_STATS_URL=http://127.0.0.1:34825/stats
export PATH="/r/e2e/.bin:$PATH"
"#;

    #[test]
    fn parses_plain_and_quoted_values() {
        let vars = parse_env_sh(SAMPLE);
        assert_eq!(vars["SMSC_CA_FILE"], "/r/with space/ca.crt");
        assert_eq!(vars["SMSC_PASSWORD"], "it's secret");
        assert_eq!(vars["PATH"], "/r/e2e/.bin:$PATH");
        assert_eq!(vars["SMSC_PORT"], "34327");
        assert!(!vars.contains_key("# Written by e2e/scripts/env-up.sh"));
    }

    #[test]
    fn builds_typed_env() {
        let env = Env::from_vars(Path::new("env.sh"), &parse_env_sh(SAMPLE)).unwrap();
        assert_eq!(env.smsc.tls_port, 35437);
        assert_eq!(env.kubeconfig, PathBuf::from("/r/target/env/kubeconfig"));
        assert_eq!(env.redis_url, "redis://127.0.0.1:25866/0");
    }

    #[test]
    fn names_the_missing_or_bad_variable() {
        let without_redis = SAMPLE.replace("export REDIS_URL", "export X");
        let err = Env::from_vars(Path::new("env.sh"), &parse_env_sh(&without_redis)).unwrap_err();
        assert!(
            matches!(
                err,
                EnvError::Missing {
                    name: "REDIS_URL",
                    ..
                }
            ),
            "{err}"
        );

        let bad_port = SAMPLE.replace("SMSC_PORT=34327", "SMSC_PORT=70000");
        let err = Env::from_vars(Path::new("env.sh"), &parse_env_sh(&bad_port)).unwrap_err();
        assert!(
            matches!(
                err,
                EnvError::Invalid {
                    name: "SMSC_PORT",
                    ..
                }
            ),
            "{err}"
        );
    }
}

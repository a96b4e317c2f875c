//! Throwaway PostgreSQL and Redis servers for tests that must stop or break a part
//! ("PostgreSQL down -> reported, recovers"). They use the same scripts as `make env-up`
//! (e2e/scripts/postgres.sh, redis.sh), each in its own directory under target/env, and are
//! destroyed on drop. `make env-down` also removes any that a killed test process left.
//!
//! The methods block while the script runs (a few seconds); call them from tests directly.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::EnvError;
use crate::process::repo_root;

#[derive(Debug, thiserror::Error)]
pub enum PrivateServerError {
    #[error("could not run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    /// The script's one-line reason (port taken, package missing, not up in time, ...).
    #[error("{script} {verb} failed: {reason}")]
    Script {
        script: PathBuf,
        verb: &'static str,
        reason: String,
    },
    #[error("{script} up printed no `export {var}=` line")]
    NoAddress { script: PathBuf, var: &'static str },
}

/// One server driven by an e2e/scripts/<kind>.sh with up/down verbs on a private directory.
#[derive(Debug)]
struct ScriptedServer {
    script: PathBuf,
    dir: PathBuf,
    var: &'static str,
    url: String,
    destroy_verb: &'static str,
    /// Extra environment of every script run (up, down, start_again).
    env: Vec<(&'static str, &'static str)>,
}

impl ScriptedServer {
    fn start<K: ServerKind>(
        env: Vec<(&'static str, &'static str)>,
    ) -> Result<Self, PrivateServerError> {
        let dir = env_root().join(format!("private-{}-{:016x}", K::DIR, rand::random::<u64>()));
        let mut server = Self {
            script: repo_root().join(format!("e2e/scripts/{}.sh", K::SCRIPT)),
            dir,
            var: K::VAR,
            url: String::new(),
            destroy_verb: K::DESTROY_VERB,
            env,
        };
        server.up()?;
        Ok(server)
    }

    fn up(&mut self) -> Result<(), PrivateServerError> {
        let stdout = self.run("up")?;
        self.url =
            export_value(&stdout, self.var).ok_or_else(|| PrivateServerError::NoAddress {
                script: self.script.clone(),
                var: self.var,
            })?;
        Ok(())
    }

    fn run(&self, verb: &'static str) -> Result<String, PrivateServerError> {
        let out = Command::new(&self.script)
            .arg(verb)
            .arg(&self.dir)
            .envs(self.env.iter().copied())
            .output()
            .map_err(|source| PrivateServerError::Spawn {
                script: self.script.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(PrivateServerError::Script {
                script: self.script.clone(),
                verb,
                reason: last_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Err(e) = self.run(self.destroy_verb) {
            eprintln!("cleanup of {}: {e}", self.dir.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What tells the private servers apart: their script and what it prints and needs.
pub trait ServerKind {
    /// e2e/scripts/<SCRIPT>.sh
    const SCRIPT: &'static str;
    /// Directory prefix under target/env (`private-<DIR>-*`, what `make env-down` sweeps).
    const DIR: &'static str;
    /// The `export VAR=url` line `up` prints.
    const VAR: &'static str;
    /// The verb that removes the server for good on drop.
    const DESTROY_VERB: &'static str;
}

/// PostgreSQL with database `smpp` and user `smpp` (password `smpp`); `stop` is a fast
/// shutdown (connected clients are disconnected).
#[derive(Debug)]
pub struct Postgres;

impl ServerKind for Postgres {
    const SCRIPT: &'static str = "postgres";
    const DIR: &'static str = "pg";
    const VAR: &'static str = "DATABASE_URL";
    const DESTROY_VERB: &'static str = "destroy";
}

/// Redis without persistence (a restart empties it), unless started with
/// [`PrivateRedis::start_persistent`].
#[derive(Debug)]
pub struct Redis;

impl ServerKind for Redis {
    const SCRIPT: &'static str = "redis";
    const DIR: &'static str = "redis";
    const VAR: &'static str = "REDIS_URL";
    const DESTROY_VERB: &'static str = "down";
}

/// A server of its own, destroyed on drop.
#[derive(Debug)]
pub struct PrivateServer<K: ServerKind>(ScriptedServer, PhantomData<K>);

pub type PrivatePostgres = PrivateServer<Postgres>;
pub type PrivateRedis = PrivateServer<Redis>;

impl<K: ServerKind> PrivateServer<K> {
    pub fn start() -> Result<Self, PrivateServerError> {
        ScriptedServer::start::<K>(Vec::new()).map(|s| Self(s, PhantomData))
    }

    /// `postgres://smpp:smpp@127.0.0.1:PORT/smpp` or `redis://127.0.0.1:PORT/0`; stays the
    /// same across stop/start_again.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    pub fn port(&self) -> u16 {
        port_of(&self.0.url)
    }

    pub fn stop(&self) -> Result<(), PrivateServerError> {
        self.0.run("down").map(drop)
    }

    /// Starts again on the same data directory and port.
    pub fn start_again(&mut self) -> Result<(), PrivateServerError> {
        self.0.up()
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }
}

impl PrivateRedis {
    /// Redis with an append-only file (fsynced on stop): what it held before `stop` is there
    /// again after `start_again`.
    pub fn start_persistent() -> Result<Self, PrivateServerError> {
        ScriptedServer::start::<Redis>(vec![("REDIS_APPENDONLY", "yes")])
            .map(|s| Self(s, PhantomData))
    }
}

impl PrivatePostgres {
    pub async fn pool(&self) -> Result<sqlx::PgPool, EnvError> {
        crate::env::pg_pool(self.url()).await
    }
}

fn env_root() -> PathBuf {
    std::env::var_os("SMPP_ENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/env"))
}

/// The value of `export VAR=value` in a script's stdout.
fn export_value(stdout: &str, var: &str) -> Option<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|a| a.split_once('='))
        .find(|(name, _)| *name == var)
        .map(|(_, value)| value.to_string())
}

/// The port of `scheme://user:pass@host:PORT/path`.
fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the scripts print URLs with an explicit port")
}

fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_line() {
        let out = "noise\nexport DATABASE_URL=postgres://smpp:smpp@127.0.0.1:21116/smpp\n";
        let url = export_value(out, "DATABASE_URL").unwrap();
        assert_eq!(port_of(&url), 21116);
        assert_eq!(export_value(out, "REDIS_URL"), None);
        assert_eq!(port_of("redis://127.0.0.1:25866/0"), 25866);
    }

    #[test]
    fn failure_reason_is_the_last_line() {
        assert_eq!(
            last_line("postgres: starting\npostgres: FAILED: port 5 taken\n\n"),
            "postgres: FAILED: port 5 taken"
        );
    }
}

//! The TLS listener's certificate: a PEM chain and key from files (a mounted Secret), read
//! again when either file changes, with no restart. A new pair that does not load (half
//! written, key not matching) is reported and the last good one stays in use; connections
//! already open keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{path} is not a PEM certificate chain: {reason}")]
    CertPem { path: PathBuf, reason: String },
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1 expected)")]
    KeyPem(PathBuf),
    #[error("the certificate and key were refused (does the key belong to the certificate?): {0}")]
    Refused(rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A server config from the two files.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::CertPem {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|_| TlsError::KeyPem(key.to_path_buf()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Refused)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Refused)?;
    Ok(Arc::new(config))
}

/// What a file looks like now: a change in either means reload.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The current certificate, replaced in place when its files change.
pub struct ReloadingTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadingTls {
    /// Loads the pair now: a server that cannot serve TLS at start should not start.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let config = load(&cert, &key)?;
        Ok(Arc::new(Self {
            cert,
            key,
            current: RwLock::new(config),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls config").clone())
    }

    /// Loads the files again; keeps the last good pair when they do not load.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.cert, &self.key)?;
        *self.current.write().expect("tls config") = config;
        Ok(())
    }

    /// Watches the files every `every` until `stop`.
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let look = || (stamp(&me.cert), stamp(&me.key));
            let mut seen = look();
            // Reported once per change, not every tick.
            let mut failing = false;
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = look();
                if now == seen && !failing {
                    continue;
                }
                let changed = now != seen;
                seen = now;
                match me.reload() {
                    Ok(()) => {
                        failing = false;
                        tracing::info!(cert = %me.cert.display(), "SMPP TLS certificate reloaded");
                    }
                    Err(e) => {
                        if changed {
                            tracing::warn!(error = %e, "SMPP TLS certificate files changed but do not load; keeping the previous certificate");
                        }
                        failing = true;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_pair_is_named() {
        let dir = std::env::temp_dir().join(format!("smpp-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        assert!(matches!(load(&cert, &key), Err(TlsError::Read { .. })));
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        assert!(matches!(load(&cert, &key), Err(TlsError::NoCertificate(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

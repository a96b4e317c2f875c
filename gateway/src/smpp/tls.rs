//! rustls client configuration for one vendor. Verification is on unless the row explicitly
//! asks to skip it; the roots are the vendor's CA bundle when given, else the system roots.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// TLS settings of one vendor, as validated from its row.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// SNI and the name verified.
    pub server_name: String,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: MinVersion,
}

impl std::fmt::Debug for TlsSettings {
    // The client key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("min_version", &self.min_version)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls_server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("the CA bundle holds no PEM certificate")]
    EmptyCa,
    #[error("the CA bundle is not valid PEM: {0}")]
    CaPem(String),
    #[error("a CA certificate was refused: {0}")]
    CaCert(rustls::Error),
    #[error("client certificate and key must be given together")]
    ClientPairIncomplete,
    #[error("the client certificate is not valid PEM: {0}")]
    ClientCertPem(String),
    #[error("the client key is not valid PEM (PKCS#8, PKCS#1 or SEC1 expected)")]
    ClientKeyPem,
    #[error("the client certificate and key were refused: {0}")]
    ClientAuth(rustls::Error),
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
    #[error("no system root certificates could be loaded; give the vendor's CA instead")]
    NoSystemRoots,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// System roots are read once per process: loading them parses hundreds of certificates.
fn system_roots() -> Result<Arc<RootCertStore>, TlsConfigError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(r) = ROOTS.get() {
        return Ok(r.clone());
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if store.is_empty() {
        return Err(TlsConfigError::NoSystemRoots);
    }
    Ok(ROOTS.get_or_init(|| Arc::new(store)).clone())
}

fn ca_roots(pem: &str) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsConfigError::CaPem(e.to_string()))?;
        store.add(cert).map_err(TlsConfigError::CaCert)?;
    }
    if store.is_empty() {
        return Err(TlsConfigError::EmptyCa);
    }
    Ok(Arc::new(store))
}

/// The name to send as SNI and to verify.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsConfigError::ServerName(name.to_string()))
}

pub fn client_config(s: &TlsSettings) -> Result<Arc<ClientConfig>, TlsConfigError> {
    server_name(&s.server_name)?;
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(TlsConfigError::Versions)?;
    let builder = if s.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let roots = match &s.ca_pem {
            Some(pem) if !pem.trim().is_empty() => ca_roots(pem)?,
            _ => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&s.client_cert_pem, &s.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsConfigError::ClientCertPem(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| TlsConfigError::ClientKeyPem)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsConfigError::ClientAuth)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsConfigError::ClientPairIncomplete),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (insecure_skip_verify). Signatures are still checked so the
/// handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsSettings {
        TlsSettings {
            server_name: "smpp.example.net".into(),
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            insecure_skip_verify: false,
            min_version: MinVersion::Tls12,
        }
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut s = settings();
        s.ca_pem = Some("not a pem".into());
        assert!(matches!(client_config(&s), Err(TlsConfigError::EmptyCa)));
        let mut s = settings();
        s.server_name = "bad name!".into();
        assert!(matches!(
            client_config(&s),
            Err(TlsConfigError::ServerName(_))
        ));
        let mut s = settings();
        s.insecure_skip_verify = true;
        s.client_cert_pem = Some("x".into());
        assert!(matches!(
            client_config(&s),
            Err(TlsConfigError::ClientPairIncomplete)
        ));
    }

    #[test]
    fn insecure_and_tls13_build() {
        let mut s = settings();
        s.insecure_skip_verify = true;
        s.min_version = MinVersion::Tls13;
        client_config(&s).unwrap();
    }

    #[test]
    fn debug_hides_key() {
        let mut s = settings();
        s.client_key_pem = Some("-----BEGIN PRIVATE KEY-----SECRETKEY".into());
        assert!(!format!("{s:?}").contains("SECRETKEY"));
    }
}

//! Reading the password, CA and client certificate from the Secrets a vendor references, and
//! the password an account references. Messages name the Secret and key and say what to do,
//! never the value.

use crate::row::Credentials;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use smpp_crds::{MAX_PASSWORD_LEN_V34, PasswordSecretRef, SmppVendor, reason};
use smpp_db::Secret;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Why the credentials of a vendor or account could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "Secret {namespace}/{name} not found: create it with key {key:?} (kubectl -n {namespace} create secret generic {name} --from-literal={key}=...)"
    )]
    SecretNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "Secret {namespace}/{name} has no key {key:?} (keys present: {present}); add it, or fix the key the resource's secret reference names"
    )]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
        present: String,
    },
    #[error(
        "the password in Secret {namespace}/{name} key {key:?} is longer than {max} characters, which SMPP 3.4 bind_* does not allow; {hint}"
    )]
    PasswordTooLong {
        namespace: String,
        name: String,
        key: String,
        max: usize,
        /// What to store instead: a vendor's password is issued, a customer's chosen.
        hint: &'static str,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not usable: {why}")]
    Invalid {
        namespace: String,
        name: String,
        key: String,
        why: String,
    },
    #[error(
        "Secret {namespace}/{name} key {key:?} is not a usable CA certificate: {why}; store the vendor's CA certificate(s) there in PEM (kubectl -n {namespace} create secret generic {name} --from-file={key}=vendor-ca.pem)"
    )]
    InvalidCaCertificate {
        namespace: String,
        name: String,
        key: String,
        why: String,
    },
    #[error(
        "Secret {namespace}/{name} key {key:?} is not a usable client certificate: {why}; store the PEM certificate issued for this client with its own key (kubectl -n {namespace} create secret tls {name} --cert=client.crt --key=client.key)"
    )]
    InvalidClientCertificate {
        namespace: String,
        name: String,
        key: String,
        why: String,
    },
    /// The apiserver did not answer; transient, retried.
    #[error("reading Secret {namespace}/{name} failed: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl CredentialError {
    /// The CredentialsResolved reason.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::SecretNotFound { .. } => reason::SECRET_NOT_FOUND,
            CredentialError::KeyMissing { .. } => reason::SECRET_KEY_MISSING,
            CredentialError::PasswordTooLong { .. } => reason::PASSWORD_TOO_LONG,
            CredentialError::InvalidCaCertificate { .. } => reason::INVALID_CA_CERTIFICATE,
            CredentialError::InvalidClientCertificate { .. } => reason::INVALID_CLIENT_CERTIFICATE,
            CredentialError::Invalid { .. } | CredentialError::Api { .. } => reason::INVALID_SECRET,
        }
    }

    /// Whether retrying may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, CredentialError::Api { .. })
    }
}

/// Which part of a TLS/credential Secret a key holds, for validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Material {
    /// A vendor's bind password (we send it).
    Password,
    /// A customer account's bind password (customers send it; only its hash is stored).
    CustomerPassword,
    CaBundle,
    Certificate,
    PrivateKey,
}

/// Extracts and checks one key of a Secret (`None`: the Secret does not exist).
pub fn extract(
    secret: Option<&KubeSecret>,
    namespace: &str,
    name: &str,
    key: &str,
    material: Material,
) -> Result<String, CredentialError> {
    let ids = || (namespace.to_string(), name.to_string(), key.to_string());
    let Some(secret) = secret else {
        let (namespace, name, key) = ids();
        return Err(CredentialError::SecretNotFound {
            namespace,
            name,
            key,
        });
    };
    let data = secret.data.as_ref();
    let Some(bytes) = data.and_then(|d| d.get(key)) else {
        let (namespace, name, key) = ids();
        let present = data.map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "));
        let present = present
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "none".into());
        return Err(CredentialError::KeyMissing {
            namespace,
            name,
            key,
            present,
        });
    };
    let invalid = |why: &str| {
        let (namespace, name, key) = ids();
        let why = why.to_string();
        match material {
            Material::Password | Material::CustomerPassword => CredentialError::Invalid {
                namespace,
                name,
                key,
                why,
            },
            Material::CaBundle => CredentialError::InvalidCaCertificate {
                namespace,
                name,
                key,
                why,
            },
            Material::Certificate | Material::PrivateKey => {
                CredentialError::InvalidClientCertificate {
                    namespace,
                    name,
                    key,
                    why,
                }
            }
        }
    };
    let text = String::from_utf8(bytes.0.clone()).map_err(|_| invalid("not UTF-8 text"))?;
    match material {
        Material::Password | Material::CustomerPassword => {
            // `kubectl create secret --from-file` keeps the file's final newline.
            let pw = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t));
            let pw = pw.unwrap_or(&text).to_string();
            if pw.is_empty() {
                return Err(invalid("the password is empty"));
            }
            if pw.chars().count() > MAX_PASSWORD_LEN_V34 {
                let (namespace, name, key) = ids();
                let hint = if material == Material::CustomerPassword {
                    "choose one of at most 8 characters (customers cannot send a longer one)"
                } else {
                    "store the password the vendor issued (vendors truncate or refuse longer ones)"
                };
                return Err(CredentialError::PasswordTooLong {
                    namespace,
                    name,
                    key,
                    max: MAX_PASSWORD_LEN_V34,
                    hint,
                });
            }
            Ok(pw)
        }
        Material::CaBundle => {
            check_ca_bundle(&text).map_err(|why| invalid(&why))?;
            Ok(text)
        }
        // Checked as a pair by `check_client_pair`: a key is only usable with its certificate.
        Material::Certificate | Material::PrivateKey => Ok(text),
    }
}

/// The keys of a kubernetes.io/tls Secret.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

const NO_CERTIFICATE: &str = "no PEM certificate (-----BEGIN CERTIFICATE-----) in it";

/// What is wrong with a PEM block, without quoting any of it (a key's lines are secret).
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM block has no matching -----END line (truncated when copied?)"
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM -----BEGIN line is malformed",
        pem::Error::Base64Decode(_) => {
            "a PEM block's body is not valid base64 (damaged when copied?)"
        }
        _ => "it cannot be read as PEM",
    }
}

/// Checks a CA bundle the way the gateways load it: every PEM certificate in it must parse
/// into a trust anchor, and there must be at least one. Returns how many there are.
pub fn check_ca_bundle(pem_text: &str) -> Result<usize, String> {
    let mut store = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem_text.as_bytes()).enumerate() {
        let n = i + 1;
        let cert = cert.map_err(|e| format!("certificate #{n}: {}", pem_problem(&e)))?;
        store.add(cert).map_err(|_| {
            format!("certificate #{n} is not a valid X.509 certificate (its DER does not parse)")
        })?;
    }
    if store.is_empty() {
        return Err(NO_CERTIFICATE.into());
    }
    Ok(store.len())
}

/// Checks a client certificate and key the way the gateways load them: a parsable
/// certificate chain, a private key rustls can sign with, and the key belonging to the first
/// certificate. The error names the Secret key at fault.
pub fn check_client_pair(cert_pem: &str, key_pem: &str) -> Result<(), (&'static str, String)> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (TLS_CRT, pem_problem(&e).to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err((TLS_CRT, NO_CERTIFICATE.into()));
    };
    if ParsedCertificate::try_from(leaf).is_err() {
        return Err((
            TLS_CRT,
            "the certificate is not a valid X.509 certificate (its DER does not parse)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
            e => pem_problem(&e),
        };
        (TLS_KEY, why.to_string())
    })?;
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            TLS_KEY,
            format!(
                "the key does not belong to the certificate in {TLS_CRT} (their public keys differ)"
            ),
        )),
        Err(_) => Err((
            TLS_KEY,
            "the key is not an RSA, ECDSA or Ed25519 private key rustls can sign with".into(),
        )),
    }
}

/// A password read from a Secret, with the Secret's resourceVersion: a new version may hold
/// a new password, the same version holds the same one.
#[derive(Clone, Debug)]
pub struct Password {
    pub value: Secret,
    pub version: String,
}

/// Where Secrets are read from: a GET, or a copy kept from an earlier GET while the
/// Secret's resourceVersion (from the metadata-only watch) has not moved. Only Secrets a
/// vendor or account references are ever fetched, so only those are kept.
pub struct SecretSource {
    client: Client,
    /// Metadata of the watched Secrets, updated before the watch event triggers a reconcile;
    /// one store per watched scope (a namespace, or None for all of them).
    index: RwLock<HashMap<Option<String>, Store<PartialObjectMeta<KubeSecret>>>>,
    cache: Mutex<HashMap<(String, String), (String, KubeSecret)>>,
}

impl SecretSource {
    pub fn new(client: Client) -> Self {
        SecretSource {
            client,
            index: RwLock::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Installs the metadata store of a (re)started controller watching `scope` (a
    /// namespace, or None for all namespaces).
    pub fn set_index(&self, scope: Option<&str>, store: Store<PartialObjectMeta<KubeSecret>>) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.map(str::to_string), store);
    }

    fn current_version(&self, namespace: &str, name: &str) -> Option<String> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let key = ObjectRef::new(name).within(namespace);
        let store = index
            .get(&Some(namespace.to_string()))
            .or_else(|| index.get(&None))?;
        store.get(&key)?.resource_version()
    }

    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<KubeSecret>, CredentialError> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(rv) = self.current_version(namespace, name) {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((cached_rv, secret)) = cache.get(&key)
                && *cached_rv == rv
            {
                return Ok(Some(secret.clone()));
            }
        }
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), namespace);
        let mut secret = api
            .get_opt(name)
            .await
            .map_err(|source| CredentialError::Api {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            })?;
        if let Some(s) = secret.as_mut() {
            crate::controller::prune(s);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match &secret {
            Some(s) => {
                cache.insert(key, (s.resource_version().unwrap_or_default(), s.clone()));
            }
            None => {
                cache.remove(&key);
            }
        }
        Ok(secret)
    }

    /// The password `r` points at in `namespace`, checked as `material`.
    pub async fn password(
        &self,
        namespace: &str,
        r: &PasswordSecretRef,
        material: Material,
    ) -> Result<Password, CredentialError> {
        let secret = self.get(namespace, &r.name).await?;
        let value = extract(secret.as_ref(), namespace, &r.name, &r.key, material)?;
        Ok(Password {
            value: Secret::new(value),
            version: secret
                .and_then(|s| s.resource_version())
                .unwrap_or_default(),
        })
    }

    /// Reads everything `vendor` references from its namespace.
    pub async fn resolve(&self, vendor: &SmppVendor) -> Result<Credentials, CredentialError> {
        let namespace = vendor.namespace().unwrap_or_default();
        let ns = namespace.as_str();
        let pw_ref = &vendor.spec.bind.password_secret_ref;
        let password = self.password(ns, pw_ref, Material::Password).await?;
        let mut creds = Credentials {
            password: password.value,
            ..Default::default()
        };
        if let Some(ca) = &vendor.spec.tls.ca_secret_ref {
            let s = self.get(ns, &ca.name).await?;
            creds.ca_pem = Some(extract(
                s.as_ref(),
                ns,
                &ca.name,
                &ca.key,
                Material::CaBundle,
            )?);
        }
        if let Some(cc) = &vendor.spec.tls.client_cert_secret_ref {
            let s = self.get(ns, &cc.name).await?;
            let cert = extract(s.as_ref(), ns, &cc.name, TLS_CRT, Material::Certificate)?;
            let key = extract(s.as_ref(), ns, &cc.name, TLS_KEY, Material::PrivateKey)?;
            check_client_pair(&cert, &key).map_err(|(key, why)| {
                CredentialError::InvalidClientCertificate {
                    namespace: namespace.clone(),
                    name: cc.name.clone(),
                    key: key.to_string(),
                    why,
                }
            })?;
            creds.client_cert_pem = Some(cert);
            creds.client_key_pem = Some(Secret::new(key));
        }
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> KubeSecret {
        let data: BTreeMap<String, ByteString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        KubeSecret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn password_ok_and_trailing_newline_dropped() {
        let s = secret(&[("password", "abcd1234\n")]);
        assert_eq!(
            extract(Some(&s), "ns", "s", "password", Material::Password).unwrap(),
            "abcd1234"
        );
    }

    #[test]
    fn missing_secret_and_key_say_what_to_do() {
        let e = extract(None, "ns", "vendor-smpp", "password", Material::Password).unwrap_err();
        assert_eq!(e.reason(), "SecretNotFound");
        assert!(
            e.to_string()
                .contains("kubectl -n ns create secret generic vendor-smpp"),
            "{e}"
        );
        let s = secret(&[("pass", "x")]);
        let e = extract(Some(&s), "ns", "s", "password", Material::Password).unwrap_err();
        assert_eq!(e.reason(), "SecretKeyMissing");
        assert!(e.to_string().contains("keys present: pass"), "{e}");
    }

    #[test]
    fn long_password_is_a_violation_that_never_shows_the_value() {
        let s = secret(&[("password", "waytoolongpassword")]);
        let e = extract(Some(&s), "ns", "s", "password", Material::Password).unwrap_err();
        assert_eq!(e.reason(), "PasswordTooLong");
        assert!(!e.to_string().contains("waytoolong"), "{e}");
        assert!(!format!("{e:?}").contains("waytoolong"));
        assert!(!e.is_transient());
    }

    #[test]
    fn a_customer_password_too_long_says_to_choose_a_shorter_one() {
        let s = secret(&[("password", "ninechars")]);
        let e = extract(
            Some(&s),
            "ns",
            "acme-smpp",
            "password",
            Material::CustomerPassword,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "PasswordTooLong");
        let msg = e.to_string();
        assert!(msg.contains("at most 8 characters (customers"), "{msg}");
        assert!(!msg.contains("ninechars") && !format!("{e:?}").contains("ninechars"));
        let ok = secret(&[("password", "eight888\n")]);
        assert_eq!(
            extract(Some(&ok), "ns", "s", "password", Material::CustomerPassword).unwrap(),
            "eight888"
        );
        let e = extract(
            Some(&secret(&[("password", "")])),
            "ns",
            "s",
            "password",
            Material::CustomerPassword,
        );
        assert_eq!(e.unwrap_err().reason(), "InvalidSecret");
    }

    // Throwaway PKI made for these tests only (openssl, EC P-256): a CA, a client certificate
    // it signed with its key, and an unrelated key.
    const CA: &str = include_str!("testdata/ca.crt");
    const CLIENT_CRT: &str = include_str!("testdata/client.crt");
    const CLIENT_KEY: &str = include_str!("testdata/client.key");
    const OTHER_KEY: &str = include_str!("testdata/other.key");

    /// A PEM CERTIFICATE block whose base64 is fine but whose DER is not a certificate.
    const NOT_DER: &str =
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";

    #[test]
    fn empty_password_is_refused() {
        let e = extract(
            Some(&secret(&[("p", "")])),
            "ns",
            "s",
            "p",
            Material::Password,
        );
        assert!(e.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn ca_bundle_must_parse_as_certificates() {
        assert_eq!(check_ca_bundle(CA), Ok(1));
        assert_eq!(check_ca_bundle(&format!("{CA}{CA}")), Ok(2));
        let no_pem = check_ca_bundle("junk").unwrap_err();
        assert!(no_pem.contains("no PEM certificate"), "{no_pem}");
        let truncated = &CA[..CA.len() / 2];
        let e = check_ca_bundle(truncated).unwrap_err();
        assert!(e.contains("no matching -----END"), "{e}");
        let e = check_ca_bundle(&CA.replacen("MII", "M!I", 1)).unwrap_err();
        assert!(e.contains("base64"), "{e}");
        let e = check_ca_bundle(&format!("{CA}{NOT_DER}")).unwrap_err();
        assert!(e.contains("certificate #2 is not a valid X.509"), "{e}");
        // A private key is no CA: nothing in it is a certificate.
        assert!(check_ca_bundle(CLIENT_KEY).is_err());
    }

    #[test]
    fn bad_ca_secret_is_invalid_ca_certificate_naming_secret_and_key() {
        let s = secret(&[("ca.crt", NOT_DER)]);
        let e = extract(Some(&s), "ns", "vendor-ca", "ca.crt", Material::CaBundle).unwrap_err();
        assert_eq!(e.reason(), "InvalidCACertificate");
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.contains("Secret ns/vendor-ca key \"ca.crt\"") && msg.contains("not a valid X.509"),
            "{msg}"
        );
        assert!(
            !msg.contains("aGVsbG8"),
            "no Secret content in the message: {msg}"
        );
        let s = secret(&[("ca.crt", CA)]);
        assert_eq!(
            extract(Some(&s), "ns", "vendor-ca", "ca.crt", Material::CaBundle).unwrap(),
            CA
        );
    }

    #[test]
    fn client_pair_must_parse_and_belong_together() {
        assert_eq!(check_client_pair(CLIENT_CRT, CLIENT_KEY), Ok(()));
        let (key, why) = check_client_pair(CLIENT_CRT, OTHER_KEY).unwrap_err();
        assert_eq!(key, TLS_KEY);
        assert!(why.contains("does not belong to the certificate"), "{why}");
        let (key, why) = check_client_pair("junk", CLIENT_KEY).unwrap_err();
        assert_eq!(
            (key, why.contains("no PEM certificate")),
            (TLS_CRT, true),
            "{why}"
        );
        let (key, why) = check_client_pair(NOT_DER, CLIENT_KEY).unwrap_err();
        assert_eq!(
            (key, why.contains("not a valid X.509")),
            (TLS_CRT, true),
            "{why}"
        );
        let (key, why) = check_client_pair(CLIENT_CRT, CLIENT_CRT).unwrap_err();
        assert_eq!(
            (key, why.contains("no PEM private key")),
            (TLS_KEY, true),
            "{why}"
        );
        // A key block whose DER is no key: refused, and its lines never quoted.
        let bad_key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n";
        let (key, why) = check_client_pair(CLIENT_CRT, bad_key).unwrap_err();
        assert_eq!(key, TLS_KEY);
        assert!(!why.contains("c2VjcmV0"), "{why}");
        let garbled = CLIENT_KEY.replacen("\n", "\n!!", 1);
        let (key, why) = check_client_pair(CLIENT_CRT, &garbled).unwrap_err();
        assert_eq!(key, TLS_KEY);
        assert!(
            !why.contains("MIG"),
            "no key material in the message: {why}"
        );
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher;
    use std::collections::BTreeMap;

    /// A client whose every request fails: any use of it shows up as an Api error.
    fn dead_client() -> Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    fn meta(rv: &str) -> PartialObjectMeta<KubeSecret> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some("pw".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn secret(rv: &str) -> KubeSecret {
        let mut data = BTreeMap::new();
        data.insert(
            "password".to_string(),
            k8s_openapi::ByteString(b"pw".to_vec()),
        );
        KubeSecret {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn cached_copy_is_used_only_while_the_resource_version_holds() {
        let source = SecretSource::new(dead_client());
        let (index, mut writer) = kube::runtime::reflector::store();
        source.set_index(None, index);
        writer.apply_watcher_event(&watcher::Event::Apply(meta("1")));
        source
            .cache
            .lock()
            .unwrap()
            .insert(("ns".into(), "pw".into()), ("1".into(), secret("1")));
        let hit = source
            .get("ns", "pw")
            .await
            .expect("served from the cache, no request");
        assert_eq!(hit.unwrap().resource_version().as_deref(), Some("1"));

        // Rotated: the watch moved the version, so the stale copy must not be served.
        writer.apply_watcher_event(&watcher::Event::Apply(meta("2")));
        let miss = source.get("ns", "pw").await.unwrap_err();
        assert!(miss.is_transient(), "went to the apiserver: {miss}");

        // Unknown to the index (not watched yet, or deleted): always asks the apiserver.
        assert!(source.get("ns", "other").await.is_err());
    }
}

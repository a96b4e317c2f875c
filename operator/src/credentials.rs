//! Reading the password, CA and client certificate from the Secrets a vendor references.
//! Messages name the Secret and key and say what to do, never the value.

use crate::row::Credentials;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use smpp_crds::{MAX_PASSWORD_LEN_V34, SmppVendor, reason};
use smpp_db::Secret;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Why the credentials of a vendor could not be resolved.
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
        "Secret {namespace}/{name} has no key {key:?} (keys present: {present}); add it or fix the key in the SmppVendor"
    )]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
        present: String,
    },
    #[error(
        "the password in Secret {namespace}/{name} key {key:?} is longer than {max} characters, which SMPP 3.4 bind_* does not allow; store the password the vendor issued (vendors truncate or refuse longer ones)"
    )]
    PasswordTooLong {
        namespace: String,
        name: String,
        key: String,
        max: usize,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not usable: {why}")]
    Invalid {
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
    Password,
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
        CredentialError::Invalid {
            namespace,
            name,
            key,
            why: why.into(),
        }
    };
    let text = String::from_utf8(bytes.0.clone()).map_err(|_| invalid("not UTF-8 text"))?;
    match material {
        Material::Password => {
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
                return Err(CredentialError::PasswordTooLong {
                    namespace,
                    name,
                    key,
                    max: MAX_PASSWORD_LEN_V34,
                });
            }
            Ok(pw)
        }
        Material::CaBundle | Material::Certificate => {
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                ));
            }
            Ok(text)
        }
        Material::PrivateKey => {
            if !(text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----")) {
                return Err(invalid("no PEM private key in it"));
            }
            Ok(text)
        }
    }
}

/// Where Secrets are read from: a GET, or a copy kept from an earlier GET while the
/// Secret's resourceVersion (from the metadata-only watch) has not moved. Only Secrets a
/// vendor references are ever fetched, so only those are kept.
pub struct SecretSource {
    client: Client,
    /// Metadata of the watched Secrets, updated before the watch event triggers a reconcile.
    index: RwLock<Option<Store<PartialObjectMeta<KubeSecret>>>>,
    cache: Mutex<HashMap<(String, String), (String, KubeSecret)>>,
}

impl SecretSource {
    pub fn new(client: Client) -> Self {
        SecretSource {
            client,
            index: RwLock::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Installs the metadata store of a (re)started controller.
    pub fn set_index(&self, store: Store<PartialObjectMeta<KubeSecret>>) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    fn current_version(&self, namespace: &str, name: &str) -> Option<String> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let key = ObjectRef::new(name).within(namespace);
        index.as_ref()?.get(&key)?.resource_version()
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
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| CredentialError::Api {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            })?;
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

    /// Reads everything `vendor` references from its namespace.
    pub async fn resolve(&self, vendor: &SmppVendor) -> Result<Credentials, CredentialError> {
        let namespace = vendor.namespace().unwrap_or_default();
        let ns = namespace.as_str();
        let pw_ref = &vendor.spec.bind.password_secret_ref;
        let pw_secret = self.get(ns, &pw_ref.name).await?;
        let password = extract(
            pw_secret.as_ref(),
            ns,
            &pw_ref.name,
            &pw_ref.key,
            Material::Password,
        )?;
        let mut creds = Credentials {
            password: Secret::new(password),
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
            let cert = extract(s.as_ref(), ns, &cc.name, "tls.crt", Material::Certificate)?;
            let key = extract(s.as_ref(), ns, &cc.name, "tls.key", Material::PrivateKey)?;
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
    fn pem_material_is_checked() {
        let s = secret(&[("ca.crt", "junk")]);
        let e = extract(Some(&s), "ns", "s", "ca.crt", Material::CaBundle).unwrap_err();
        assert_eq!(e.reason(), "InvalidSecret");
        let s = secret(&[(
            "tls.key",
            "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
        )]);
        assert!(extract(Some(&s), "ns", "s", "tls.key", Material::PrivateKey).is_ok());
        let e = extract(
            Some(&secret(&[("p", "")])),
            "ns",
            "s",
            "p",
            Material::Password,
        );
        assert!(e.unwrap_err().to_string().contains("empty"));
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
        source.set_index(index);
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
